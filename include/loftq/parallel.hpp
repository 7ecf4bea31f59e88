/// @file parallel.hpp
/// Thread count of loftq's parallel passes, and the loop that runs them.
///
/// Work is always split into the same pieces whatever the thread count, and each piece is
/// computed the same way, so results do not depend on the number of threads.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <string>
#include <thread>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "detail/checks.hpp"

namespace loftq {

namespace detail {

/// The value set by set_threads(): 0 means every hardware thread.
inline std::atomic<int>& thread_setting() {
  static std::atomic<int> setting{0};
  return setting;
}

}  // namespace detail

/// Sets how many threads loftq's parallel passes use; 0 (the default) means all hardware
/// threads. Throws std::invalid_argument for a negative count. Without OpenMP loftq runs on one
/// thread whatever the setting.
inline void set_threads(int threads) {
  if (threads < 0) detail::fail("threads = " + std::to_string(threads) + " must be >= 0");
  detail::thread_setting().store(threads);
}

/// The number of threads loftq's parallel passes use now.
inline int threads() {
#ifdef _OPENMP
  const int setting = detail::thread_setting().load();
  return setting > 0 ? setting : std::max(1, omp_get_max_threads());
#else
  return 1;
#endif
}

namespace detail {

/// Runs body(i) for every i in [0, count), spread over threads(); body must not throw.
template <class Body>
void parallel_for(std::ptrdiff_t count, Body&& body) {
#ifdef _OPENMP
  const int team = static_cast<int>(std::min<std::ptrdiff_t>(threads(), count));
  if (team > 1) {
#pragma omp parallel for num_threads(team) schedule(static)
    for (std::ptrdiff_t i = 0; i < count; ++i) body(i);
    return;
  }
#endif
  for (std::ptrdiff_t i = 0; i < count; ++i) body(i);
}

}  // namespace detail
}  // namespace loftq
