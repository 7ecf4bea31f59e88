// The quantize and dequantize kernels of each instruction set this CPU supports, on one thread:
// quantize of a 4096 x 4096 matrix, dequantize of a 4096 x 11008 one into a 64-byte-aligned
// output, and a memcpy of that output for comparison. Block size 64.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <loftq/loftq.hpp>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace {

constexpr std::size_t quantize_rows = 4096;
constexpr std::size_t quantize_cols = 4096;
constexpr std::size_t dequantize_rows = 4096;
constexpr std::size_t dequantize_cols = 11008;
constexpr int block_size = 64;

/// n floats at a 64-byte-aligned address.
using AlignedFloats = std::unique_ptr<float[], decltype(&std::free)>;

AlignedFloats aligned_floats(std::size_t n) {
  const std::size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
  return AlignedFloats(static_cast<float*>(std::aligned_alloc(64, bytes)), &std::free);
}

/// n weights drawn from N(0, 0.02^2), the same on every call.
std::vector<float> weights(std::size_t n) {
  std::mt19937 gen(7);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<float> w(n);
  for (float& x : w) x = normal(gen);
  return w;
}

/// The quantize input, built once.
const std::vector<float>& quantize_input() {
  static const std::vector<float> w = weights(quantize_rows * quantize_cols);
  return w;
}

/// The dequantize input of `codebook`, built once.
const loftq::QuantizedMatrix& dequantize_input(loftq::Codebook codebook) {
  static std::map<loftq::Codebook, loftq::QuantizedMatrix> inputs;
  auto it = inputs.find(codebook);
  if (it == inputs.end()) {
    const std::vector<float> w = weights(dequantize_rows * dequantize_cols);
    const auto rows = static_cast<Eigen::Index>(dequantize_rows);
    const auto cols = static_cast<Eigen::Index>(dequantize_cols);
    it = inputs
             .emplace(codebook,
                      loftq::quantize_row_major(w.data(), rows, cols, codebook, block_size))
             .first;
  }
  return it->second;
}

/// Forces an instruction set and one thread for the lifetime of a benchmark run.
class OneThreadOn {
 public:
  explicit OneThreadOn(loftq::Isa isa) {
    loftq::force_isa(isa);
    loftq::set_threads(1);
  }
  OneThreadOn(const OneThreadOn&) = delete;
  OneThreadOn& operator=(const OneThreadOn&) = delete;
  ~OneThreadOn() {
    loftq::reset_isa();
    loftq::set_threads(0);
  }
};

void BM_QuantizeKernel(benchmark::State& state, loftq::Isa isa, loftq::Codebook codebook) {
  const std::vector<float>& w = quantize_input();
  const std::size_t n = w.size();
  std::vector<std::uint8_t> codes(loftq::detail::packed_bytes(n, loftq::bits_of(codebook)));
  std::vector<float> scales(n / block_size);
  const OneThreadOn scope(isa);
  for (auto _ : state) {
    loftq::detail::quantize_array(w.data(), n, block_size, codebook, codes.data(), scales.data());
    benchmark::DoNotOptimize(codes.data());
    benchmark::DoNotOptimize(scales.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(n * sizeof(float)));
}

void BM_DequantizeKernel(benchmark::State& state, loftq::Isa isa, loftq::Codebook codebook) {
  const loftq::QuantizedMatrix& q = dequantize_input(codebook);
  const AlignedFloats out = aligned_floats(q.size());
  std::fill(out.get(), out.get() + q.size(), 0.0f);  // maps the pages before the timing
  const OneThreadOn scope(isa);
  for (auto _ : state) {
    q.dequantize(out.get());
    benchmark::DoNotOptimize(out.get());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(q.size() * sizeof(float)));
}

/// The yardstick for dequantize: copying a float32 array of its output's size.
void BM_Memcpy(benchmark::State& state) {
  const std::size_t n = dequantize_rows * dequantize_cols;
  const std::vector<float> in(n, 1.0f);
  std::vector<float> out(n);
  for (auto _ : state) {
    std::memcpy(out.data(), in.data(), n * sizeof(float));
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(n * sizeof(float)));
}

/// Registers the kernel benchmarks of every instruction set this CPU supports.
bool register_kernel_benchmarks() {
  for (loftq::Isa isa : {loftq::Isa::scalar, loftq::Isa::avx2, loftq::Isa::avx512}) {
    if (!loftq::isa_supported(isa)) continue;
    for (loftq::Codebook codebook : {loftq::Codebook::nf4, loftq::Codebook::nf2,
                                     loftq::Codebook::fp4, loftq::Codebook::int8}) {
      const std::string suffix =
          "/" + std::string(loftq::name_of(isa)) + "/" + std::string(loftq::name_of(codebook));
      benchmark::RegisterBenchmark(("BM_QuantizeKernel" + suffix).c_str(), BM_QuantizeKernel, isa,
                                   codebook)
          ->Unit(benchmark::kMillisecond);
      benchmark::RegisterBenchmark(("BM_DequantizeKernel" + suffix).c_str(), BM_DequantizeKernel,
                                   isa, codebook)
          ->Unit(benchmark::kMillisecond);
    }
  }
  benchmark::RegisterBenchmark("BM_Memcpy", BM_Memcpy)->Unit(benchmark::kMillisecond);
  return true;
}

const bool kernel_benchmarks_registered = register_kernel_benchmarks();

}  // namespace
