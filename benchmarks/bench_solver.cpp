// The whole LoftQ call, rank 64, NF4, T = 5, on Gaussian matrices (std 0.02): the default
// (randomized block Krylov) path at 1024 x 1024, 4096 x 4096 and 4096 x 11008, and the exact-SVD
// path with the error ratio of the default path to it. The exact path takes about 100 s at
// 4096 x 4096 and 330 s at 4096 x 11008: those sizes run only when LOFTQ_BENCH_EXACT is set.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <loftq/loftq.hpp>
#include <map>
#include <random>
#include <utility>

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

/// The call the README times: loftq::loftq(W, 64, 4, 5) on a column-major Eigen::MatrixXf.
void BM_Loftq(benchmark::State& state) {
  const Eigen::MatrixXf& w = gaussian_weight(state.range(0), state.range(1));
  double error = 0;
  for (auto _ : state) {
    const loftq::Result r = loftq::loftq(w, 64, 4, 5);
    error = r.error();
  }
  state.counters["error"] = error;
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

bool register_solver_benchmarks() {
  for (auto [rows, cols] : {std::pair{1024, 1024}, std::pair{4096, 4096}, std::pair{4096, 11008}}) {
    benchmark::RegisterBenchmark("BM_Loftq", BM_Loftq)->Args({rows, cols})->Unit(benchmark::kMillisecond);
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
