// Blockwise quantize and dequantize of one weight matrix, against a memcpy of the same output.
#include <benchmark/benchmark.h>
#include <loftq/loftq.hpp>

#include <cstring>
#include <vector>

namespace {

loftq::RowMatrixXf weight(Eigen::Index rows, Eigen::Index cols) {
  return loftq::RowMatrixXf::Random(rows, cols) * 0.02f;
}

void BM_Quantize(benchmark::State& state, loftq::Codebook codebook) {
  const Eigen::Index rows = state.range(0), cols = state.range(1);
  const loftq::RowMatrixXf w = weight(rows, cols);
  for (auto _ : state) {
    benchmark::DoNotOptimize(loftq::quantize_row_major(w.data(), rows, cols, codebook, 64));
  }
  state.SetBytesProcessed(state.iterations() * w.size() * static_cast<std::int64_t>(sizeof(float)));
}

void BM_Dequantize(benchmark::State& state, loftq::Codebook codebook) {
  const Eigen::Index rows = state.range(0), cols = state.range(1);
  const auto q = loftq::quantize_row_major(weight(rows, cols).data(), rows, cols, codebook, 64);
  std::vector<float> out(q.size());
  for (auto _ : state) {
    q.dequantize(out.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(out.size() * sizeof(float)));
}

/// The yardstick for dequantize: copying the float32 output it writes.
void BM_MemcpyOutput(benchmark::State& state) {
  const std::size_t n = static_cast<std::size_t>(state.range(0) * state.range(1));
  const std::vector<float> in(n, 1.0f);
  std::vector<float> out(n);
  for (auto _ : state) {
    std::memcpy(out.data(), in.data(), n * sizeof(float));
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(n * sizeof(float)));
}

}  // namespace

BENCHMARK_CAPTURE(BM_Quantize, nf4, loftq::Codebook::nf4)->Args({4096, 4096})->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Quantize, nf2, loftq::Codebook::nf2)->Args({4096, 4096})->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Quantize, int8, loftq::Codebook::int8)->Args({4096, 4096})->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Dequantize, nf4, loftq::Codebook::nf4)->Args({4096, 4096})->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Dequantize, nf2, loftq::Codebook::nf2)->Args({4096, 4096})->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Dequantize, int8, loftq::Codebook::int8)->Args({4096, 4096})->Unit(benchmark::kMillisecond);
BENCHMARK(BM_MemcpyOutput)->Args({4096, 4096})->Unit(benchmark::kMillisecond);
