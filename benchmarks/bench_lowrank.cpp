// Rank-64 truncated SVD of a LoftQ residual E = W - q(W) (W Gaussian, std 0.02, NF4) by each
// method. Counter captured is sum S^2 / ||E||_F^2, the share of E's energy the factors hold:
// higher is better, and the exact SVD's is the ceiling. The exact SVD runs at 1024 only (about
// 20 s at 4096). BM_KrylovDepth is block Krylov at fixed depths 1..6 against the exact SVD.
#include <benchmark/benchmark.h>

#include <Eigen/SVD>
#include <cmath>
#include <cstdlib>
#include <loftq/loftq.hpp>
#include <map>
#include <random>

namespace {

/// E = W - q(W) for a Gaussian n x n W, built once per n.
const Eigen::MatrixXf& residual(Eigen::Index n) {
  static std::map<Eigen::Index, Eigen::MatrixXf> cache;
  auto it = cache.find(n);
  if (it == cache.end()) {
    std::mt19937 gen(2);
    std::normal_distribution<float> normal(0.0f, 0.02f);
    Eigen::MatrixXf w(n, n);
    for (Eigen::Index i = 0; i < w.size(); ++i) w.data()[i] = normal(gen);
    Eigen::MatrixXf e = w - loftq::quantize<loftq::NF4>(w).dequantize();
    it = cache.emplace(n, std::move(e)).first;
  }
  return it->second;
}

void BM_TruncatedSvd(benchmark::State& state, loftq::SvdMethod method) {
  const Eigen::MatrixXf& e = residual(state.range(0));
  double captured = 0;
  for (auto _ : state) {
    const loftq::LowRankFactors f = loftq::truncated_svd(e, 64, method);
    captured = f.singular_values.cast<double>().squaredNorm();
  }
  state.counters["captured"] = captured / e.cast<double>().squaredNorm();
}

/// Block Krylov of fixed depth (range 0) on the residual of an n x n W (range 1): counter
/// error_ratio = ||E - A B^T||_F over the exact rank-64 SVD's, the ratio a cold LoftQ step's
/// error has to the exact path's; `passes` = 2 depth - 1. n = 1024, and 4096 when
/// LOFTQ_BENCH_EXACT is set (the exact singular values, about 10 s, are computed once per n).
void BM_KrylovDepth(benchmark::State& state) {
  const Eigen::MatrixXf& e = residual(state.range(1));
  static std::map<Eigen::Index, double> exact_captured;
  const double energy = e.cast<double>().squaredNorm();
  if (exact_captured.count(e.rows()) == 0) {
    const Eigen::BDCSVD<Eigen::MatrixXf> svd(e);
    exact_captured[e.rows()] = svd.singularValues().head(64).cast<double>().squaredNorm();
  }
  loftq::SvdOptions options;
  options.depth = static_cast<int>(state.range(0));
  double captured = 0;
  for (auto _ : state) captured = loftq::truncated_svd(e, 64, options).singular_values.cast<double>().squaredNorm();
  state.counters["error_ratio"] = std::sqrt((energy - captured) / (energy - exact_captured[e.rows()]));
  state.counters["passes"] = 2 * options.depth - 1;
}

bool register_depth_benchmarks() {
  const int n = std::getenv("LOFTQ_BENCH_EXACT") != nullptr ? 4096 : 1024;
  for (int depth = 1; depth <= 6; ++depth) {
    benchmark::RegisterBenchmark("BM_KrylovDepth", BM_KrylovDepth)
        ->Args({depth, n})
        ->ArgNames({"depth", "n"})
        ->Unit(benchmark::kMillisecond);
  }
  return true;
}

const bool depth_benchmarks_registered = register_depth_benchmarks();

}  // namespace

BENCHMARK_CAPTURE(BM_TruncatedSvd, exact, loftq::SvdMethod::exact)->Arg(1024)->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_TruncatedSvd, block_krylov, loftq::SvdMethod::block_krylov)
    ->Arg(1024)
    ->Arg(4096)
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_TruncatedSvd, subspace_iteration, loftq::SvdMethod::subspace_iteration)
    ->Arg(1024)
    ->Arg(4096)
    ->Unit(benchmark::kMillisecond);
