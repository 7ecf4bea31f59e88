/// @file detail/row_major.hpp
/// The row-major view of a matrix argument: the layout quantization blocks are taken from.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "../isa.hpp"
#include "../kernels/products.hpp"
#include "../matrix.hpp"
#include "../threads.hpp"
#include "huge_pages.hpp"

namespace loftq::detail {

/// W's row-major copy, made by row_major_copy(W, out) of kernels/products.hpp, which returns the
/// largest magnitude's bits (largest_magnitude_bits()) of W's elements.
inline std::uint32_t row_major_copy(const Eigen::MatrixXf& W, RowMatrixXf& out) {
  resize_on_huge_pages(out, W.rows(), W.cols());
  return row_major_copy(W, Eigen::Ref<RowMatrixXf>(out));
}

/// W's row-major copy, made by row_major_copy(W, out) of kernels/products.hpp.
inline RowMatrixXf row_major_copy(const Eigen::MatrixXf& W) {
  RowMatrixXf out;
  row_major_copy(W, out);
  return out;
}

/// use(M as a row-major float matrix): M itself when it is one, else a copy in `buffer`
/// (resized on huge pages, which keeps its memory when the element count is unchanged; made in
/// parallel pieces for a column-major Eigen::MatrixXf).
template <class Derived, class Use>
decltype(auto) with_row_major(const Eigen::MatrixBase<Derived>& M, RowMatrixXf& buffer, Use&& use) {
  if constexpr (std::is_same_v<Derived, RowMatrixXf>) {
    return use(M.derived());
  } else if constexpr (std::is_same_v<Derived, Eigen::MatrixXf>) {
    row_major_copy(M.derived(), buffer);
    return use(std::as_const(buffer));
  } else {
    resize_on_huge_pages(buffer, M.rows(), M.cols());
    buffer = M;
    return use(std::as_const(buffer));
  }
}

/// with_row_major() with a copy of its own.
template <class Derived, class Use>
decltype(auto) with_row_major(const Eigen::MatrixBase<Derived>& M, Use&& use) {
  RowMatrixXf buffer;
  return with_row_major(M, buffer, std::forward<Use>(use));
}

}  // namespace loftq::detail
