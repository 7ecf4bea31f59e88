// Rank-64 truncated SVD of a LoftQ residual E = W - q(W) (W Gaussian, std 0.02, NF4) by each
// method. Counter captured is sum S^2 / ||E||_F^2, the share of E's energy the factors hold:
// higher is better, and the exact SVD's is the ceiling. The exact SVD runs at 1024 only (about
// 20 s at 4096).
#include <benchmark/benchmark.h>

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
