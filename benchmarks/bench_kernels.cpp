// The quantize and dequantize kernels of each instruction set this CPU supports, on one thread:
// quantize of a 4096 x 4096 matrix, dequantize of a 4096 x 11008 one into a 64-byte-aligned
// output, and a memcpy of that output for comparison; and the squared error of a 4096 x 4096
// iterate whose Q is codes, fused (add_error_squares()) and by dequantizing each run into
// scratch first. Block size 64.
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

/// Elements per run of the error benchmarks: the solver's runs (pass_run_rows()).
const std::size_t error_run =
    static_cast<std::size_t>(loftq::detail::pass_run_rows(quantize_cols, block_size)) *
    quantize_cols;

/// The inputs of the error benchmarks, built once: W, its codes in `codebook` and a second
/// matrix standing for A B^T.
struct ErrorInput {
  std::vector<float> w;
  std::vector<float> low_rank;
  loftq::QuantizedMatrix q;
};

const ErrorInput& error_input(loftq::Codebook codebook) {
  static std::map<loftq::Codebook, ErrorInput> inputs;
  auto it = inputs.find(codebook);
  if (it == inputs.end()) {
    const std::vector<float>& w = quantize_input();
    std::vector<float> low_rank(w.size());
    std::transform(w.begin(), w.end(), low_rank.begin(), [](float x) { return 0.1f * x; });
    const auto rows = static_cast<Eigen::Index>(quantize_rows);
    const auto cols = static_cast<Eigen::Index>(quantize_cols);
    it = inputs
             .emplace(codebook, ErrorInput{w, std::move(low_rank),
                                           loftq::quantize_row_major(w.data(), rows, cols, codebook,
                                                                     block_size)})
             .first;
  }
  return it->second;
}

/// ||W - Q - L||^2 run by run with add_error_squares(), which writes nothing.
void BM_ErrorSquaresKernel(benchmark::State& state, loftq::Isa isa, loftq::Codebook codebook) {
  const ErrorInput& in = error_input(codebook);
  const std::size_t n = in.w.size();
  const auto bits = static_cast<std::size_t>(loftq::bits_of(codebook));
  const OneThreadOn scope(isa);
  for (auto _ : state) {
    loftq::detail::kernels::SquareSum sum;
    for (std::size_t first = 0; first < n; first += error_run) {
      loftq::detail::add_error_squares(isa, sum, in.w.data() + first,
                                       in.q.codes().data() + first * bits / 8,
                                       in.q.scales().data() + first / block_size,
                                       in.low_rank.data() + first, error_run, block_size, codebook);
    }
    benchmark::DoNotOptimize(sum.total());
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(n * sizeof(float)));
}

/// The same sum with each run dequantized into scratch, subtracted from W there and then summed
/// with add_squares(): the yardstick for BM_ErrorSquaresKernel.
void BM_ErrorSquaresDequantized(benchmark::State& state, loftq::Isa isa, loftq::Codebook codebook) {
  const ErrorInput& in = error_input(codebook);
  const std::size_t n = in.w.size();
  const auto bits = static_cast<std::size_t>(loftq::bits_of(codebook));
  std::vector<float> scratch(error_run);
  const OneThreadOn scope(isa);
  for (auto _ : state) {
    loftq::detail::kernels::SquareSum sum;
    for (std::size_t first = 0; first < n; first += error_run) {
      loftq::detail::dequantize_run(isa, in.q.codes().data() + first * bits / 8,
                                    in.q.scales().data() + first / block_size, error_run,
                                    block_size, codebook, false, scratch.data());
      for (std::size_t i = 0; i < error_run; ++i) scratch[i] = in.w[first + i] - scratch[i];
      loftq::detail::add_squares(isa, sum, scratch.data(), in.low_rank.data() + first, error_run);
    }
    benchmark::DoNotOptimize(sum.total());
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(n * sizeof(float)));
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
      benchmark::RegisterBenchmark(("BM_ErrorSquaresKernel" + suffix).c_str(),
                                   BM_ErrorSquaresKernel, isa, codebook)
          ->Unit(benchmark::kMillisecond);
      benchmark::RegisterBenchmark(("BM_ErrorSquaresDequantized" + suffix).c_str(),
                                   BM_ErrorSquaresDequantized, isa, codebook)
          ->Unit(benchmark::kMillisecond);
    }
  }
  benchmark::RegisterBenchmark("BM_Memcpy", BM_Memcpy)->Unit(benchmark::kMillisecond);
  return true;
}

const bool kernel_benchmarks_registered = register_kernel_benchmarks();

}  // namespace
