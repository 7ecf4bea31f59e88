// The thread setting and the parallel loop.
#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
#include <vector>

#include "test_helpers.hpp"

namespace {

TEST(Parallel, SetThreadsTakesACountOrZeroForAll) {
  loftq::set_threads(2);
#ifdef _OPENMP
  EXPECT_EQ(loftq::threads(), 2);
#else
  EXPECT_EQ(loftq::threads(), 1);
#endif
  loftq::set_threads(0);
  EXPECT_GE(loftq::threads(), 1);
}

TEST(Parallel, AFailedSetThreadsKeepsTheSetting) {
  loftq::set_threads(3);
  EXPECT_NE(loftq_test::invalid_argument_message([] { loftq::set_threads(-1); }).find("threads = -1"),
            std::string::npos);
  EXPECT_EQ(loftq::detail::thread_setting().load(), 3);
#ifdef _OPENMP
  EXPECT_EQ(loftq::threads(), 3);
#endif
  loftq::set_threads(0);
}

TEST(Parallel, ParallelForRunsEveryIndexOnce) {
  for (int threads : {1, 2, 3}) {
    loftq::set_threads(threads);
    for (std::ptrdiff_t count : {0, 1, 7, 1000}) {
      std::vector<int> hits(static_cast<std::size_t>(count), 0);
      loftq::detail::parallel_for(count, [&](std::ptrdiff_t i) { ++hits[static_cast<std::size_t>(i)]; });
      for (int h : hits) ASSERT_EQ(h, 1);
    }
  }
  loftq::set_threads(0);
}

TEST(Parallel, ParallelForBesideRunsTheSideOnceAndEveryIndexOnce) {
  for (int threads : {1, 2, 3}) {
    loftq::set_threads(threads);
    for (std::ptrdiff_t count : {0, 1, 7, 1000}) {
      std::vector<std::atomic<int>> hits(static_cast<std::size_t>(count));
      std::atomic<int> sides{0};
      loftq::detail::parallel_for_beside(
          count, [&] { ++sides; }, [&](std::ptrdiff_t i) { ++hits[static_cast<std::size_t>(i)]; });
      EXPECT_EQ(sides.load(), 1) << threads << " threads, count " << count;
      for (const std::atomic<int>& h : hits)
        ASSERT_EQ(h.load(), 1) << threads << " threads, count " << count;
    }
    // An exception from the side comes out after the loop, which still ran every index.
    std::vector<std::atomic<int>> hits(100);
    EXPECT_THROW(loftq::detail::parallel_for_beside(
                     100, [] { throw std::runtime_error("side"); },
                     [&](std::ptrdiff_t i) { ++hits[static_cast<std::size_t>(i)]; }),
                 std::runtime_error);
    for (const std::atomic<int>& h : hits) ASSERT_EQ(h.load(), 1);
  }
  loftq::set_threads(0);
}

}  // namespace
