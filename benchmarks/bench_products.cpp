// The rate of the solver's products next to one large Eigen SGEMM of the same shape, in the same
// run, so that the gap to the machine's GEMM rate is a number. Counter GFLOP/s counts 2 m n k
// flops per product over the wall time (UseRealTime: the products run on several threads). At
// 4096 x 4096 and 68 columns (rank 64 + oversampling 4):
//  - BM_SolverProduct/multiply: the Krylov pass E X (E row-major 4096 x 4096, X 4096 x 68), as
//    the randomized SVD runs it (detail::multiply: fixed row pieces, one thread each);
//  - BM_SolverProduct/multiply_transposed: the pass E^T Y (detail::multiply_transposed);
//  - BM_SolverProduct/bfloat16_multiply and bfloat16_multiply_transposed: the same passes over E
//    rounded to bfloat16, as loftq()'s randomized SVD runs them (the operand rounded inside the
//    timed call, as there); GFLOP/s counts the same flops;
//  - BM_SolverProduct/low_rank: the quantize pass's A B^T (A 4096 x 64, B 4096 x 64), formed
//    piece by piece as quantize_pass() forms it, without the quantization;
//  - BM_EigenSgemm: one Eigen product E X of a column-major E, parallelized by Eigen itself on
//    the same threads;
//  - BM_Bfloat16Kernels/<set>/transposed: one bfloat16 pass (E X, or E^T Y) on each set of
//    bfloat16 tile kernels this CPU runs (detail::runnable_bfloat16_kernels(): AVX2's, AVX-512's
//    split float FMAs, AVX-512 BF16's vdpbf16ps), whichever the dispatch picks: all give the
//    same bits, so the fastest should be the one picked;
//  - BM_ProductTile/transposed/tiles: the tile kernel of the active instruction set alone, on one
//    thread, over the whole depth 4096: `tiles` 1 repeats one tile, whose rows (columns for E^T)
//    of E stay in cache; 64 runs every tile once, a whole pass that streams E from memory. The
//    gap between the two is what a pass loses to fetching E.
//  - BM_RowMajorCopy/<copy>: W's row-major copy of a column-major 4096 x 4096 W (64 MiB), as
//    loftq() makes it for an Eigen::MatrixXf: detail::row_major_copy on the kernels of each
//    instruction set this CPU supports, beside Eigen's own assignment (one thread) and a memcpy
//    of the same bytes in the same parallel pieces, the floor; counter bytes_per_second counts
//    the bytes written.
// BM_Loftq (bench_solver.cpp) has the same counter for the whole loftq(W, 64, 4, 5): the flops of
// its big products over its whole time.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstring>
#include <loftq/loftq.hpp>
#include <map>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace {

constexpr Eigen::Index sketch_width = 68;  // rank 64 + oversampling 4

/// A rows x cols Gaussian matrix (std 0.02) from seed 3, built once.
const Eigen::MatrixXf& weight(Eigen::Index rows, Eigen::Index cols) {
  static std::map<std::pair<Eigen::Index, Eigen::Index>, Eigen::MatrixXf> cache;
  auto it = cache.find({rows, cols});
  if (it == cache.end()) {
    std::mt19937 gen(3);
    std::normal_distribution<float> normal(0.0f, 0.02f);
    Eigen::MatrixXf w(rows, cols);
    for (Eigen::Index i = 0; i < w.size(); ++i) w.data()[i] = normal(gen);
    it = cache.emplace(std::pair{rows, cols}, std::move(w)).first;
  }
  return it->second;
}

/// A rows x cols matrix of uniform values in [-1, 1] (Eigen's Random), seeded.
Eigen::MatrixXf block(Eigen::Index rows, Eigen::Index cols) {
  std::srand(4);
  return Eigen::MatrixXf::Random(rows, cols);
}

benchmark::Counter gflops(double flops) {
  return benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

enum class Product { multiply, multiply_transposed, bfloat16_multiply, bfloat16_multiply_transposed, low_rank };

void BM_SolverProduct(benchmark::State& state, Product product) {
  const Eigen::Index rows = state.range(0), cols = state.range(1);
  const loftq::RowMatrixXf e = weight(rows, cols);
  const loftq::detail::ThreadScope scope;
  const Eigen::MatrixXf x = block(cols, sketch_width), y = block(rows, sketch_width);
  const Eigen::MatrixXf a = block(rows, 64), b = block(cols, 64);
  Eigen::MatrixXf out;
  loftq::detail::Bfloat16Matrix rounded;
  loftq::detail::round_to_bfloat16(e, loftq::detail::bfloat16_exponent(e.cast<double>().norm()), rounded);
  std::vector<std::uint32_t> pairs;
  std::vector<loftq::detail::PassMemory> memory;  // kept from pass to pass, as loftq() keeps it
  Eigen::MatrixXf x_out(rows, sketch_width), y_out(cols, sketch_width);
  double flops = 2.0 * static_cast<double>(rows) * static_cast<double>(cols) * sketch_width;
  for (auto _ : state) {
    switch (product) {
      case Product::multiply:
        loftq::detail::multiply(e, x, out);
        break;
      case Product::multiply_transposed:
        loftq::detail::multiply_transposed(e, y, out);
        break;
      case Product::bfloat16_multiply:
        loftq::detail::multiply(rounded, x, x_out, pairs);
        benchmark::DoNotOptimize(x_out.data());
        break;
      case Product::bfloat16_multiply_transposed:
        loftq::detail::multiply_transposed(rounded, y, y_out, pairs);
        benchmark::DoNotOptimize(y_out.data());
        break;
      case Product::low_rank:
        loftq::detail::over_low_rank_pieces(a, b, rows, cols, 64, memory,
                                            [](std::size_t, std::size_t, const float* l, float*) {
                                              benchmark::DoNotOptimize(l);
                                              return 0.0;
                                            });
        break;
    }
    benchmark::DoNotOptimize(out.data());
  }
  if (product == Product::low_rank) flops = 2.0 * static_cast<double>(rows) * static_cast<double>(cols) * 64;
  state.counters["GFLOP/s"] = gflops(flops);
  state.counters["threads"] = loftq::threads();
}

void BM_EigenSgemm(benchmark::State& state) {
  const Eigen::Index rows = state.range(0), cols = state.range(1);
  const Eigen::MatrixXf& e = weight(rows, cols);
  const Eigen::MatrixXf x = block(cols, sketch_width);
  Eigen::setNbThreads(loftq::threads());
  Eigen::MatrixXf out(rows, sketch_width);
  for (auto _ : state) {
    out.noalias() = e * x;
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["GFLOP/s"] = gflops(2.0 * static_cast<double>(rows) * static_cast<double>(cols) * sketch_width);
  state.counters["threads"] = Eigen::nbThreads();
}

void BM_ProductTile(benchmark::State& state) {
  const bool transposed = state.range(0) != 0;
  const auto tiles = static_cast<std::size_t>(state.range(1));
  const loftq::RowMatrixXf e = weight(4096, 4096);
  const auto n = static_cast<std::size_t>(e.cols());
  const loftq::RowMatrixXf x = block(4096, sketch_width);
  const loftq::detail::ProductKernels set = loftq::detail::product_kernels(loftq::active_isa());
  std::vector<float> c(n * sketch_width), panel(set.panel_floats);
  for (auto _ : state) {
    for (std::size_t t = 0; t < tiles; ++t) {
      const std::size_t first = t * set.tile_rows;
      if (transposed) {
        set.transposed(e.data() + first, n, set.tile_rows, n, x.data(), sketch_width, sketch_width, c.data() + first, n,
                       panel.data());
      } else {
        set.product(e.data() + first * n, n, set.tile_rows, n, x.data(), sketch_width, sketch_width, c.data() + first,
                    n, panel.data());
      }
    }
    benchmark::DoNotOptimize(c.data());
  }
  state.counters["GFLOP/s"] = gflops(2.0 * static_cast<double>(tiles * set.tile_rows * n) * sketch_width);
}

/// One pass over E rounded to bfloat16 (E X, or E^T Y when range(0) is 1) on the bfloat16 tile
/// kernels `name` of runnable_bfloat16_kernels(), the operand's pairs made once.
void BM_Bfloat16Kernels(benchmark::State& state, const std::string& name) {
  const bool transposed = state.range(0) != 0;
  const loftq::RowMatrixXf e = weight(4096, 4096);
  const loftq::detail::ThreadScope scope;
  loftq::detail::Bfloat16Matrix rounded;
  loftq::detail::round_to_bfloat16(e, loftq::detail::bfloat16_exponent(e.cast<double>().norm()), rounded);
  std::vector<std::uint32_t> pairs;
  loftq::detail::bfloat16_operand(block(4096, sketch_width), pairs);
  loftq::detail::Bfloat16Kernels set{};
  for (const auto& [set_name, kernels] : loftq::detail::runnable_bfloat16_kernels()) {
    if (set_name == name) set = kernels;
  }
  Eigen::MatrixXf out(4096, sketch_width);
  for (auto _ : state) {
    loftq::detail::bfloat16_product_of(set, rounded, transposed, pairs, sketch_width, out);
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["GFLOP/s"] = gflops(2.0 * 4096.0 * 4096.0 * sketch_width);
}

/// BM_Bfloat16Kernels for every set but the portable one that this CPU runs.
bool register_bfloat16_kernel_benchmarks() {
  for (const auto& [name, kernels] : loftq::detail::runnable_bfloat16_kernels()) {
    if (std::string(name) == "scalar") continue;
    benchmark::RegisterBenchmark(("BM_Bfloat16Kernels/" + std::string(name)).c_str(), BM_Bfloat16Kernels,
                                 std::string(name))
        ->ArgName("transposed")
        ->DenseRange(0, 1)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
  }
  return true;
}

const bool bfloat16_kernel_benchmarks_registered = register_bfloat16_kernel_benchmarks();

/// How BM_RowMajorCopy copies: on an instruction set's kernels, by Eigen, or by memcpy.
enum class Copy { kernels, eigen, memcpy };

/// W's row-major copy at 4096 x 4096 by `copy`: detail::row_major_copy on the kernels of `isa`,
/// Eigen's assignment, or the column-major bytes copied as they are by memcpy in 2 parallel
/// pieces per thread.
void BM_RowMajorCopy(benchmark::State& state, Copy copy, loftq::Isa isa) {
  const Eigen::MatrixXf& w = weight(4096, 4096);
  const loftq::detail::ThreadScope scope;
  if (copy == Copy::kernels) loftq::force_isa(isa);
  loftq::RowMatrixXf out = loftq::detail::row_major_copy(w);
  const std::ptrdiff_t pieces = 2 * loftq::threads();
  const std::size_t piece = static_cast<std::size_t>(w.size() / pieces);
  for (auto _ : state) {
    if (copy == Copy::eigen) {
      out = w;
    } else if (copy == Copy::memcpy) {
      loftq::detail::parallel_for(pieces, [&](std::ptrdiff_t p) {
        const std::size_t first = static_cast<std::size_t>(p) * piece;
        std::memcpy(out.data() + first, w.data() + first, piece * sizeof(float));
      });
    } else {
      loftq::detail::row_major_copy(w, Eigen::Ref<loftq::RowMatrixXf>(out));
    }
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  loftq::reset_isa();
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(w.size() * sizeof(float)));
}

/// BM_RowMajorCopy on every instruction set this CPU supports, then by Eigen and by memcpy.
bool register_row_major_copy_benchmarks() {
  for (loftq::Isa isa : {loftq::Isa::scalar, loftq::Isa::avx2, loftq::Isa::avx512}) {
    if (!loftq::isa_supported(isa)) continue;
    benchmark::RegisterBenchmark(("BM_RowMajorCopy/" + std::string(loftq::name_of(isa))).c_str(),
                                 BM_RowMajorCopy, Copy::kernels, isa)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
  }
  for (const auto& [name, copy] :
       {std::pair{"eigen", Copy::eigen}, std::pair{"memcpy", Copy::memcpy}}) {
    benchmark::RegisterBenchmark((std::string("BM_RowMajorCopy/") + name).c_str(), BM_RowMajorCopy,
                                 copy, loftq::Isa::scalar)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
  }
  return true;
}

const bool row_major_copy_benchmarks_registered = register_row_major_copy_benchmarks();

}  // namespace

BENCHMARK_CAPTURE(BM_SolverProduct, multiply, Product::multiply)->Args({4096, 4096})->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_SolverProduct, multiply_transposed, Product::multiply_transposed)
    ->Args({4096, 4096})
    ->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_SolverProduct, bfloat16_multiply, Product::bfloat16_multiply)
    ->Args({4096, 4096})
    ->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_SolverProduct, bfloat16_multiply_transposed, Product::bfloat16_multiply_transposed)
    ->Args({4096, 4096})
    ->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_SolverProduct, low_rank, Product::low_rank)->Args({4096, 4096})->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_EigenSgemm)->Args({4096, 4096})->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ProductTile)->ArgsProduct({{0, 1}, {1, 64}})->ArgNames({"transposed", "tiles"})->Unit(benchmark::kMillisecond);
