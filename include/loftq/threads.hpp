/// @file threads.hpp
/// Thread count of loftq's parallel passes, and the loop that runs them.
///
/// Work is always split into the same pieces whatever the thread count, and each piece is
/// computed the same way, so results do not depend on the number of threads.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
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

/// The team fixed by the innermost ThreadScope of the calling thread, 0 outside any.
inline int& scoped_team() {
  static thread_local int team = 0;
  return team;
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
  if (detail::scoped_team() > 0) return detail::scoped_team();
  const int setting = detail::thread_setting().load();
  return setting > 0 ? setting : std::max(1, omp_get_max_threads());
#else
  return 1;
#endif
}

namespace detail {

/// For its lifetime, fixes the team of loftq's parallel passes on the calling thread (`team`
/// threads, or threads() when team is 0) and keeps Eigen's own products on one thread, so that
/// each product is computed the same way whatever the team. Eigen parallelizes a product from
/// OpenMP's thread setting and blocks it differently for each thread count; loftq instead splits
/// products into fixed pieces itself.
class ThreadScope {
 public:
  /// Enters the scope; throws std::invalid_argument for a negative team.
  explicit ThreadScope(int team = 0) {
    if (team < 0) fail("threads = " + std::to_string(team) + " must be >= 0");
    outer_team_ = scoped_team();
    const int resolved = team > 0 ? team : threads();
#ifdef _OPENMP
    outer_omp_threads_ = omp_get_max_threads();
    omp_set_num_threads(1);
#endif
    scoped_team() = resolved;
  }
  ThreadScope(const ThreadScope&) = delete;
  ThreadScope& operator=(const ThreadScope&) = delete;
  /// Restores the thread settings found on entry.
  ~ThreadScope() {
    scoped_team() = outer_team_;
#ifdef _OPENMP
    omp_set_num_threads(outer_omp_threads_);
#endif
  }

 private:
  int outer_team_ = 0;
#ifdef _OPENMP
  int outer_omp_threads_ = 1;
#endif
};

/// Runs body(i) for every i in [0, count), spread over threads(), each thread taking the next
/// free i when it is done with one: a thread the machine's other work slows takes fewer, instead
/// of keeping the others waiting. For work whose results do not depend on which thread runs it;
/// body must not throw.
template <class Body>
void parallel_for(std::ptrdiff_t count, Body&& body) {
#ifdef _OPENMP
  const int team = static_cast<int>(std::min<std::ptrdiff_t>(threads(), count));
  if (team > 1) {
#pragma omp parallel for num_threads(team) schedule(dynamic)
    for (std::ptrdiff_t i = 0; i < count; ++i) body(i);
    return;
  }
#endif
  for (std::ptrdiff_t i = 0; i < count; ++i) body(i);
}

/// Runs side() on one thread of the team while the others run body(i) for i < count, taking i
/// from the front, one after another; when side() is done, its thread takes i from the back, so
/// that each thread's i stay together. Without a team, side() and then the loop. For work whose
/// results do not depend on which thread runs it. An exception from side() is rethrown after the
/// loop, which runs whole all the same; body must not throw. count < 2^32.
template <class Side, class Body>
void parallel_for_beside(std::ptrdiff_t count, Side&& side, Body&& body) {
  std::exception_ptr failure;
  const auto run_side = [&] {
    try {
      side();
    } catch (...) {
      failure = std::current_exception();
    }
  };
#ifdef _OPENMP
  const int team = static_cast<int>(std::min<std::ptrdiff_t>(threads(), count + 1));
  if (team > 1) {
    // The next free i from the front in the low 32 bits, one past the last free i in the high 32.
    std::atomic<std::uint64_t> free{static_cast<std::uint64_t>(count) << 32};
    const auto take = [&](bool from_back) -> std::ptrdiff_t {
      std::uint64_t range = free.load();
      for (;;) {
        const std::uint64_t first = range & 0xffffffffu, end = range >> 32;
        if (first >= end) return -1;
        const std::uint64_t taken = from_back ? (end - 1) << 32 | first : end << 32 | (first + 1);
        if (free.compare_exchange_weak(range, taken))
          return static_cast<std::ptrdiff_t>(from_back ? end - 1 : first);
      }
    };
#pragma omp parallel num_threads(team)
    {
      const bool side_thread = omp_get_thread_num() == 0;
      if (side_thread) run_side();
      for (std::ptrdiff_t i = take(side_thread); i >= 0; i = take(side_thread)) body(i);
    }
    if (failure) std::rethrow_exception(failure);
    return;
  }
#endif
  run_side();
  for (std::ptrdiff_t i = 0; i < count; ++i) body(i);
  if (failure) std::rethrow_exception(failure);
}

}  // namespace detail
}  // namespace loftq
