// The whole LoftQ call, rank 64, NF4, T = 5, on Gaussian matrices (std 0.02): the default
// (randomized block Krylov) path at 1024 x 1024, 4096 x 4096 and 4096 x 11008, and the exact-SVD
// path with the error ratio of the default path to it. The exact path takes about 100 s at
// 4096 x 4096 and 330 s at 4096 x 11008: those sizes run only when LOFTQ_BENCH_EXACT is set.
// BM_LoftqAccuracy is the accuracy table on Gaussian and heavy-tailed matrices (1024 x 1024, or
// 4096 x 4096 when LOFTQ_BENCH_EXACT is set).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <loftq/loftq.hpp>
#include <map>
#include <random>
#include <string>
#include <utility>

#include "test_helpers.hpp"

namespace {

/// A rows x cols Gaussian matrix (std 0.02), the same on every call, built once.
const Eigen::MatrixXf& gaussian_weight(Eigen::Index rows, Eigen::Index cols) {
  static std::map<std::pair<Eigen::Index, Eigen::Index>, Eigen::MatrixXf> cache;
  auto it = cache.find({rows, cols});
  if (it == cache.end()) {
    std::mt19937 gen(1);
    std::normal_distribution<float> normal(0.0f, 0.02f);
    Eigen::MatrixXf w(rows, cols);
    for (Eigen::Index i = 0; i < w.size(); ++i) w.data()[i] = normal(gen);
    it = cache.emplace(std::pair{rows, cols}, std::move(w)).first;
  }
  return it->second;
}

/// Krylov passes over E (rounded to bfloat16) that the truncated SVDs of `r` made: 2 d - 1 for
/// a step of Krylov depth d.
int passes_of(const loftq::Result& r) {
  int passes = 0;
  for (int depth : r.krylov_depths) passes += 2 * depth - 1;
  return passes;
}

/// Counters of a LoftQ call on a rows x cols W with rank-64 adapters: Krylov `passes` over E
/// and `GFLOP/s`, the flops of its big products (each Krylov pass 2 m n 68, and each step's
/// A B^T, 2 m n 64, formed by the pass that measures the step's error) over the wall time.
void count_products(benchmark::State& state, const loftq::Result& r, Eigen::Index rows, Eigen::Index cols) {
  const double mn = static_cast<double>(rows) * static_cast<double>(cols);
  const double steps = static_cast<double>(r.krylov_depths.size());
  state.counters["passes"] = passes_of(r);
  state.counters["GFLOP/s"] = benchmark::Counter((passes_of(r) * 2.0 * mn * 68 + steps * 2.0 * mn * 64) * 1e-9,
                                                 benchmark::Counter::kIsIterationInvariantRate);
}

/// loftq::loftq(W, 64, 4, iters) on the Gaussian W of the state's shape, with counters error,
/// passes and GFLOP/s; with one loftq::Workspace for every call when `reuse` is set, sized by an
/// untimed call first. LOFTQ_BENCH_KRYLOV_DEPTH=d sets the cold Krylov depth to d.
void time_loftq(benchmark::State& state, int iters, bool reuse = false) {
  const Eigen::MatrixXf& w = gaussian_weight(state.range(0), state.range(1));
  loftq::Options options;
  options.rank = 64;
  options.iters = iters;
  if (const char* depth = std::getenv("LOFTQ_BENCH_KRYLOV_DEPTH")) options.krylov_depth = std::atoi(depth);
  loftq::Workspace workspace;
  loftq::Result r;
  if (reuse) r = loftq::loftq(w, options, workspace);  // untimed: the call that sizes the workspace
  for (auto _ : state) r = reuse ? loftq::loftq(w, options, workspace) : loftq::loftq(w, options);
  state.counters["error"] = r.error();
  count_products(state, r, w.rows(), w.cols());
}

/// The call the README times: loftq::loftq(W, 64, 4, 5) on a column-major Eigen::MatrixXf.
void BM_Loftq(benchmark::State& state) { time_loftq(state, 5); }

/// loftq::loftq(W, 64, 4, 1): the cold step alone (its passes over E and one quantize pass).
void BM_LoftqOneStep(benchmark::State& state) { time_loftq(state, 1); }

/// loftq::loftq(W, options, workspace) with T = range(2), every call in the same
/// loftq::Workspace: the calls of a program that runs many matrices of one size.
void BM_LoftqReused(benchmark::State& state) {
  time_loftq(state, static_cast<int>(state.range(2)), true);
}

/// The same with the exact SVD (Eigen::BDCSVD); counter krylov_over_exact is the final error of
/// the default path over this one's.
void BM_LoftqExactSvd(benchmark::State& state) {
  const Eigen::MatrixXf& w = gaussian_weight(state.range(0), state.range(1));
  loftq::Options options;
  options.rank = 64;
  options.iters = 5;
  options.svd = loftq::SvdMethod::exact;
  double error = 0;
  for (auto _ : state) {
    const loftq::Result r = loftq::loftq(w, options);
    error = r.error();
  }
  state.counters["error"] = error;
  state.counters["krylov_over_exact"] = loftq::loftq(w, 64, 4, 5).error() / error;
}

enum class Kind { gaussian, heavy_tailed_moderate, heavy_tailed_extreme };

/// The accuracy table: the default path against the exact-SVD path on one matrix (Gaussian, or
/// heavy-tailed with kurtosis about 60 or about 1000 at 4096; tests/test_helpers.hpp makes them),
/// codebook NF`bits` and rank `rank`. Counter T<t> is the error of the default path's returned
/// iterate over the exact path's best error, both over the same t steps (prefixes of one 5-step
/// run of each); kurtosis is the matrix's. With LOFTQ_BENCH_SEEDS=k, the default path also runs
/// with the seeds 0..k-1: counter seeds_worst is the largest of their 5 k ratios, and
/// seeds_above_1_002 how many of them are at least 1.002. LOFTQ_BENCH_KRYLOV_DEPTH=d sets the
/// default path's cold Krylov depth (Options::krylov_depth) to d.
void BM_LoftqAccuracy(benchmark::State& state) {
  const auto kind = static_cast<Kind>(state.range(0));
  const Eigen::Index n = state.range(3);
  const Eigen::MatrixXf w = kind == Kind::gaussian ? loftq_test::gaussian(n, n, 0.02f, 5)
                            : kind == Kind::heavy_tailed_moderate ? loftq_test::heavy_tailed(n, n, {5.0f, 10.0f}, 1)
                                                                  : loftq_test::heavy_tailed(n, n, {5.0f, 24.0f}, 1);
  loftq::Options o;
  o.rank = state.range(2);
  o.iters = 5;
  o.codebook = loftq::codebook_for_bits(static_cast<int>(state.range(1)));
  if (const char* depth = std::getenv("LOFTQ_BENCH_KRYLOV_DEPTH")) o.krylov_depth = std::atoi(depth);
  loftq::Result fast, exact;
  for (auto _ : state) {
    fast = loftq::loftq(w, o);
    loftq::Options e = o;
    e.svd = loftq::SvdMethod::exact;
    exact = loftq::loftq(w, e);
  }
  for (int t = 1; t <= 5; ++t) {
    state.counters["T" + std::to_string(t)] = *std::min_element(fast.errors.begin(), fast.errors.begin() + t) /
                                             *std::min_element(exact.errors.begin(), exact.errors.begin() + t);
  }
  state.counters["kurtosis"] = loftq_test::kurtosis(w);
  state.counters["passes"] = passes_of(fast);
  const char* seeds = std::getenv("LOFTQ_BENCH_SEEDS");
  if (seeds == nullptr) return;
  double worst = 0.0;
  int above = 0;
  for (int seed = 0; seed < std::atoi(seeds); ++seed) {
    loftq::Options s = o;
    s.seed = static_cast<std::uint64_t>(seed);
    const loftq::Result r = loftq::loftq(w, s);
    for (int t = 1; t <= 5; ++t) {
      const double ratio = *std::min_element(r.errors.begin(), r.errors.begin() + t) /
                           *std::min_element(exact.errors.begin(), exact.errors.begin() + t);
      worst = std::max(worst, ratio);
      above += ratio >= 1.002 ? 1 : 0;
    }
  }
  state.counters["seeds_worst"] = worst;
  state.counters["seeds_above_1_002"] = above;
}

bool register_solver_benchmarks() {
  const int accuracy_size = std::getenv("LOFTQ_BENCH_EXACT") != nullptr ? 4096 : 1024;
  for (int kind = 0; kind < 3; ++kind) {
    for (int bits : {4, 2}) {
      for (int rank : {16, 64}) {
        benchmark::RegisterBenchmark("BM_LoftqAccuracy", BM_LoftqAccuracy)
            ->Args({kind, bits, rank, accuracy_size})
            ->ArgNames({"kind", "bits", "rank", "n"})
            ->Iterations(1)
            ->Unit(benchmark::kMillisecond);
      }
    }
  }
  for (auto [rows, cols] : {std::pair{1024, 1024}, std::pair{4096, 4096}, std::pair{4096, 11008}}) {
    benchmark::RegisterBenchmark("BM_Loftq", BM_Loftq)->Args({rows, cols})->UseRealTime()->Unit(benchmark::kMillisecond);
    if (rows == 4096 && cols == 4096) {
      benchmark::RegisterBenchmark("BM_LoftqOneStep", BM_LoftqOneStep)
          ->Args({rows, cols})
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
    }
    if (rows == 4096) {
      for (int iters : {5, 1}) {
        if (cols == 11008 && iters == 1) continue;
        benchmark::RegisterBenchmark("BM_LoftqReused", BM_LoftqReused)
            ->Args({rows, cols, iters})
            ->UseRealTime()
            ->Unit(benchmark::kMillisecond);
      }
    }
    if (rows == 1024 || std::getenv("LOFTQ_BENCH_EXACT") != nullptr) {
      benchmark::RegisterBenchmark("BM_LoftqExactSvd", BM_LoftqExactSvd)
          ->Args({rows, cols})
          ->Iterations(1)
          ->Unit(benchmark::kMillisecond);
    }
  }
  return true;
}

const bool solver_benchmarks_registered = register_solver_benchmarks();

}  // namespace
