// The whole LoftQ call on square Gaussian matrices (std 0.02), NF4, rank 16.
#include <benchmark/benchmark.h>
#include <loftq/loftq.hpp>

namespace {

void BM_Loftq(benchmark::State& state) {
  const Eigen::Index n = state.range(0);
  const int iters = static_cast<int>(state.range(1));
  const Eigen::MatrixXf w = Eigen::MatrixXf::Random(n, n) * 0.02f;
  double error = 0;
  for (auto _ : state) {
    const loftq::Result r = loftq::loftq(w, 16, 4, iters);
    error = r.error();
  }
  state.counters["error"] = error;
}

}  // namespace

BENCHMARK(BM_Loftq)->ArgsProduct({{256, 1024}, {1, 5}})->Unit(benchmark::kMillisecond);
