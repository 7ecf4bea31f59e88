/// @file detail/huge_pages.hpp
/// Transparent huge pages for the solver's arrays the size of W: on Linux, one page fault then
/// maps 2 MiB instead of 4 KiB.
#pragma once

#include <Eigen/Core>
#include <cstddef>
#include <cstdint>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

namespace loftq::detail {

/// Size of a transparent huge page on x86-64; smaller arrays are not advised.
inline constexpr std::size_t huge_page_bytes = std::size_t{2} << 20;

/// Asks Linux to back the whole pages inside [data, data + bytes) with transparent huge pages
/// (madvise MADV_HUGEPAGE), for memory not yet touched. Advice only: the system setting
/// /sys/kernel/mm/transparent_hugepage/enabled = never, a refusal, a range under
/// huge_page_bytes or another system leave the memory as it was, and no value changes.
inline void advise_huge_pages(const void* data, std::size_t bytes) noexcept {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (bytes < huge_page_bytes) return;
  const auto page = static_cast<std::uintptr_t>(sysconf(_SC_PAGESIZE));
  const auto first = reinterpret_cast<std::uintptr_t>(data);
  const std::uintptr_t begin = (first + page - 1) / page * page;
  const std::uintptr_t end = (first + bytes) / page * page;
  if (end > begin) static_cast<void>(madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE));
#else
  static_cast<void>(data);
  static_cast<void>(bytes);
#endif
}

/// m.resize(rows, cols), with its memory advised to huge pages (advise_huge_pages()); resizing
/// to the same element count keeps the memory, as Eigen's resize does.
template <class Matrix>
void resize_on_huge_pages(Matrix& m, Eigen::Index rows, Eigen::Index cols) {
  m.resize(rows, cols);
  advise_huge_pages(m.data(), sizeof(typename Matrix::Scalar) * static_cast<std::size_t>(m.size()));
}

/// A vector of `size` zeros, its memory advised to huge pages (advise_huge_pages()) before the
/// zeros are written.
template <class T>
std::vector<T> zeros_on_huge_pages(std::size_t size) {
  std::vector<T> v;
  v.reserve(size);
  advise_huge_pages(v.data(), sizeof(T) * size);
  v.resize(size);
  return v;
}

}  // namespace loftq::detail
