// The thread setting and the parallel loop.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>
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

// Waits, for at most 20 s, until `done` reaches `count`, and returns `done`: called by a thread
// that holds an index of a parallel loop, it returns `count` when the loop's other threads ran
// every other index meanwhile.
int wait_for_the_others(const std::atomic<int>& done, int count) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (done.load() < count && std::chrono::steady_clock::now() < deadline)
    std::this_thread::yield();
  return done.load();
}

#ifdef _OPENMP
TEST(Parallel, ParallelForGivesABusyThreadsIndicesToTheOthers) {
  // Index 0 waits for every other index: with fixed shares of the indices (static scheduling),
  // the rest of its thread's share would never run.
  for (int threads : {2, 3}) {
    loftq::set_threads(threads);
    constexpr int count = 1000;
    std::atomic<int> done{0}, seen{0};
    loftq::detail::parallel_for(count, [&](std::ptrdiff_t i) {
      if (i == 0) {
        seen = wait_for_the_others(done, count - 1);
      } else {
        ++done;
      }
    });
    EXPECT_EQ(seen.load(), count - 1) << threads << " threads";
  }
  loftq::set_threads(0);
}

TEST(Parallel, PassPiecesGoToTheThreadsThatAreFree) {
  // The first piece of a pass waits for all the others, as above.
  loftq::set_threads(2);
  const Eigen::Index rows = 2048, cols = 512;  // 4 pieces of 512 rows (2^18 elements)
  const Eigen::Index piece_rows = loftq::detail::pass_piece_rows(cols, 64);
  const int pieces = static_cast<int>(rows / piece_rows);
  ASSERT_EQ(pieces, 4);
  const Eigen::MatrixXf A(rows, 0), B(cols, 0);
  std::vector<loftq::detail::PassMemory> memory;
  std::atomic<int> done{0}, seen{0};
  const double total = loftq::detail::over_low_rank_pieces(
      A, B, rows, cols, 64, memory, [&](std::size_t first, std::size_t n, const float* l, float*) {
        EXPECT_EQ(l[0], 0.0f);
        if (first == 0) {
          seen = wait_for_the_others(done, pieces - 1);
        } else {
          ++done;
        }
        return static_cast<double>(n);
      });
  EXPECT_EQ(seen.load(), pieces - 1);
  EXPECT_EQ(total, static_cast<double>(rows * cols));
  loftq::set_threads(0);
}
#endif

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
