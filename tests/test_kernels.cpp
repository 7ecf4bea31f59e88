// The kernels of every instruction set against the scalar kernels, bit for bit, and the run-time
// choice of instruction set. Tests of an instruction set this CPU lacks are skipped, and say so.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "test_helpers.hpp"

namespace {

using loftq::Codebook;
using loftq::Isa;

constexpr Codebook all_codebooks[] = {Codebook::nf2,      Codebook::nf4,      Codebook::fp4,
                                      Codebook::uniform2, Codebook::uniform4, Codebook::uniform8,
                                      Codebook::int8};
constexpr int block_sizes[] = {1, 3, 8, 16, 17, 32, 64, 100, 128, 256, 2049, 4096};

struct Shape {
  Eigen::Index rows;
  Eigen::Index cols;
  std::size_t size() const { return static_cast<std::size_t>(rows * cols); }
};
constexpr Shape shapes[] = {{1, 1}, {1, 7}, {5, 13}, {33, 65}, {64, 64}, {3, 683}, {257, 300}};

/// The instruction sets this CPU supports, scalar first.
std::vector<Isa> supported_isas() {
  std::vector<Isa> isas;
  for (Isa isa : {Isa::scalar, Isa::avx2, Isa::avx512}) {
    if (loftq::isa_supported(isa)) isas.push_back(isa);
  }
  return isas;
}

/// Restores the default instruction set and thread count after each test.
class Kernels : public ::testing::Test {
 protected:
  void TearDown() override {
    loftq::reset_isa();
    loftq::set_threads(0);
  }
};

/// The test's name suffix of an instruction set: "scalar", "avx2" or "avx512".
std::string isa_name(const ::testing::TestParamInfo<Isa>& info) {
  return std::string(loftq::name_of(info.param));
}

/// Tests of the instruction set GetParam(), against the scalar kernels: skipped, with the
/// reason, when this CPU lacks it. Restores the default instruction set and thread count.
class IsaKernels : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (!loftq::isa_supported(GetParam())) {
      GTEST_SKIP() << "this CPU lacks " << loftq::name_of(GetParam());
    }
  }
  void TearDown() override {
    loftq::reset_isa();
    loftq::set_threads(0);
  }
};

INSTANTIATE_TEST_SUITE_P(EveryIsa, IsaKernels,
                         ::testing::Values(Isa::scalar, Isa::avx2, Isa::avx512), isa_name);

/// Choosing the instruction set GetParam(), which this CPU may lack: the tests check that an
/// unsupported one is refused. Restores the default instruction set.
class IsaSelection : public ::testing::TestWithParam<Isa> {
 protected:
  void TearDown() override { loftq::reset_isa(); }
};

INSTANTIATE_TEST_SUITE_P(EveryIsa, IsaSelection,
                         ::testing::Values(Isa::scalar, Isa::avx2, Isa::avx512), isa_name);

/// True when a and b hold the same bytes.
template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

/// True when a and b have the same shape and bits.
bool same_bits(const Eigen::MatrixXf& a, const Eigen::MatrixXf& b) {
  return a.rows() == b.rows() && a.cols() == b.cols() &&
         std::memcmp(a.data(), b.data(), static_cast<std::size_t>(a.size()) * sizeof(float)) == 0;
}

/// True when a and b have the same shape and bits.
bool same_bits(const Eigen::MatrixXd& a, const Eigen::MatrixXd& b) {
  return a.rows() == b.rows() && a.cols() == b.cols() &&
         std::memcmp(a.data(), b.data(), static_cast<std::size_t>(a.size()) * sizeof(double)) == 0;
}

/// The index of the first element where a and b differ in bits, or a.size().
template <class T>
std::size_t first_difference(const T* a, const T* b, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) {
    if (std::memcmp(a + i, b + i, sizeof(T)) != 0) return i;
  }
  return n;
}

/// n values in blocks of block_size, each block of one kind: Gaussian; values exactly on the
/// midpoints of `codebook` (power-of-two absmax, so x * (1 / absmax) is the midpoint); Int8
/// half-way values; all zeros (with -0.0); denormals; values near the float32 maximum; zeros,
/// -0.0 and a few others. Every value is finite.
std::vector<float> tricky_input(std::size_t n, int block_size, Codebook codebook, unsigned seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> kind_of(0, 6);
  std::uniform_int_distribution<int> exponent(-20, 20);
  std::uniform_real_distribution<float> unit(-1.0f, 1.0f);
  const auto quantizer = loftq::detail::kernels::make_lookup_quantizer(loftq::table_of(codebook));
  const int midpoints = std::max(1, quantizer.levels - 1);
  std::vector<float> x(n);
  const auto block = static_cast<std::size_t>(block_size);
  for (std::size_t first = 0; first < n; first += block) {
    const std::size_t len = std::min(block, n - first);
    const int kind = kind_of(gen);
    const float scale = std::ldexp(1.0f, exponent(gen));
    for (std::size_t i = first; i < first + len; ++i) {
      const int pick = static_cast<int>(gen() % 8);
      switch (kind) {
        case 0:
          x[i] = normal(gen) * 0.02f;
          break;
        case 1: {  // ties at midpoints; absmax = scale from the first element
          const float mid = quantizer.levels > 0
                                ? quantizer.midpoints[gen() % static_cast<unsigned>(midpoints)]
                                : 0.5f;
          x[i] = i == first ? scale : (pick == 0 ? std::nextafter(mid * scale, 0.0f) : mid * scale);
          break;
        }
        case 2: {  // Int8 ties: absmax 127 * scale, values (k + 1/2) * scale
          const int k = static_cast<int>(gen() % 254) - 127;
          x[i] = i == first ? -127.0f * scale : (static_cast<float>(k) + 0.5f) * scale;
          break;
        }
        case 3:
          x[i] = pick < 4 ? 0.0f : -0.0f;
          break;
        case 4:  // denormals and values below 1e-38
          x[i] = unit(gen) * (pick < 4 ? 1e-39f : 1e-44f);
          break;
        case 5:  // near the float32 maximum
          x[i] = pick == 0 ? std::numeric_limits<float>::max() : unit(gen) * 3e38f;
          break;
        default:
          x[i] = pick < 3 ? 0.0f : (pick < 5 ? -0.0f : (pick == 5 ? 1e38f : normal(gen)));
          break;
      }
    }
  }
  return x;
}

/// A low-rank-like second input for quantize_residual: per block 0, equal to w (a zero
/// target), or small Gaussian values.
std::vector<float> tricky_low_rank(const std::vector<float>& w, int block_size, unsigned seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> normal(0.0f, 0.01f);
  std::vector<float> v(w.size());
  const auto block = static_cast<std::size_t>(block_size);
  for (std::size_t first = 0; first < w.size(); first += block) {
    const auto kind = gen() % 3;
    for (std::size_t i = first; i < std::min(w.size(), first + block); ++i) {
      v[i] = kind == 0 ? 0.0f : (kind == 1 ? w[i] : normal(gen));
    }
  }
  return v;
}

/// Codes and scales of one quantization.
struct Quantized {
  std::vector<std::uint8_t> codes;
  std::vector<float> scales;
};

Quantized quantized(const std::vector<float>& x, int block_size, Codebook codebook) {
  const std::size_t n = x.size();
  const auto block = static_cast<std::size_t>(block_size);
  Quantized q{
      std::vector<std::uint8_t>(loftq::detail::packed_bytes(n, loftq::bits_of(codebook)), 0xA5),
      std::vector<float>((n + block - 1) / block)};
  loftq::detail::quantize_array(x.data(), n, block_size, codebook, q.codes.data(), q.scales.data());
  return q;
}

std::vector<float> dequantized(const Quantized& q, std::size_t n, int block_size,
                               Codebook codebook) {
  std::vector<float> out(n);
  loftq::detail::dequantize_array(q.codes.data(), q.scales.data(), n, block_size, codebook,
                                  out.data());
  return out;
}

/// Fused quantize_residual: codes and scales of w - low_rank, and the residual.
struct Residual {
  Quantized q;
  std::vector<float> residual;
};

Residual fused_residual(const std::vector<float>& w, const std::vector<float>& low_rank,
                        int block_size, Codebook codebook) {
  const std::size_t n = w.size();
  const auto block = static_cast<std::size_t>(block_size);
  Residual r{
      {std::vector<std::uint8_t>(loftq::detail::packed_bytes(n, loftq::bits_of(codebook)), 0x5A),
       std::vector<float>((n + block - 1) / block)},
      std::vector<float>(n)};
  loftq::detail::quantize_residual_array(w.data(), low_rank.data(), n, block_size, codebook,
                                         r.q.codes.data(), r.q.scales.data(), r.residual.data());
  return r;
}

/// The same as quantize_residual, unfused: target into a buffer, quantize, dequantize, subtract.
Residual unfused_residual(const std::vector<float>& w, const std::vector<float>& low_rank,
                          int block_size, Codebook codebook) {
  std::vector<float> target(w.size());
  for (std::size_t i = 0; i < w.size(); ++i) target[i] = w[i] - low_rank[i];
  Residual r{quantized(target, block_size, codebook), {}};
  const std::vector<float> d = dequantized(r.q, w.size(), block_size, codebook);
  r.residual.resize(w.size());
  for (std::size_t i = 0; i < w.size(); ++i) r.residual[i] = w[i] - d[i];
  return r;
}

/// n floats at a 64-byte-aligned address.
std::unique_ptr<float[], decltype(&std::free)> aligned_floats(std::size_t n) {
  const std::size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
  return {static_cast<float*>(std::aligned_alloc(64, bytes)), &std::free};
}

std::string label(Isa isa, Codebook codebook, int block_size, std::size_t n) {
  return std::string(loftq::name_of(isa)) + " " + std::string(loftq::name_of(codebook)) +
         " block " + std::to_string(block_size) + " n " + std::to_string(n);
}

TEST_F(Kernels, ScalarIsAlwaysSupportedAndTheDetectedIsaIsTheBestSupported) {
  ASSERT_TRUE(loftq::isa_supported(Isa::scalar));
  const std::vector<Isa> isas = supported_isas();
  ASSERT_FALSE(isas.empty());
  EXPECT_EQ(isas.front(), Isa::scalar);
  EXPECT_EQ(loftq::detected_isa(), isas.back());
  EXPECT_TRUE(!loftq::isa_supported(Isa::avx512) || loftq::isa_supported(Isa::avx2));
}

TEST_P(IsaKernels, QuantizesDequantizesAndFusesLikeTheScalarKernels) {
  const Isa isa = GetParam();
  for (Codebook codebook : all_codebooks) {
    for (int block_size : block_sizes) {
      for (const Shape& shape : shapes) {
        const std::size_t n = shape.size();
        const unsigned seed = static_cast<unsigned>(n) * 31u + static_cast<unsigned>(block_size);
        const std::vector<float> w = tricky_input(n, block_size, codebook, seed);
        const std::vector<float> low_rank = tricky_low_rank(w, block_size, seed + 1);
        loftq::force_isa(Isa::scalar);
        const Quantized ref = quantized(w, block_size, codebook);
        const std::vector<float> ref_out = dequantized(ref, n, block_size, codebook);
        const Residual ref_residual = fused_residual(w, low_rank, block_size, codebook);
        SCOPED_TRACE(label(isa, codebook, block_size, n));
        loftq::force_isa(isa);
        const Quantized q = quantized(w, block_size, codebook);
        ASSERT_TRUE(same_bits(q.codes, ref.codes))
            << "byte " << first_difference(q.codes.data(), ref.codes.data(), q.codes.size());
        ASSERT_TRUE(same_bits(q.scales, ref.scales));
        const std::vector<float> out = dequantized(ref, n, block_size, codebook);
        ASSERT_TRUE(same_bits(out, ref_out))
            << "element " << first_difference(out.data(), ref_out.data(), n);
        std::vector<float> shifted(n + 1);  // out at 4 bytes past a 16-byte boundary
        loftq::detail::dequantize_array(ref.codes.data(), ref.scales.data(), n, block_size,
                                        codebook, shifted.data() + 1);
        ASSERT_EQ(std::memcmp(shifted.data() + 1, ref_out.data(), n * sizeof(float)), 0);
        const Residual fused = fused_residual(w, low_rank, block_size, codebook);
        const Residual unfused = unfused_residual(w, low_rank, block_size, codebook);
        for (const Residual* r : {&fused, &unfused}) {
          ASSERT_TRUE(same_bits(r->q.codes, ref_residual.q.codes))
              << "byte "
              << first_difference(r->q.codes.data(), ref_residual.q.codes.data(),
                                  r->q.codes.size());
          ASSERT_TRUE(same_bits(r->q.scales, ref_residual.q.scales));
          ASSERT_TRUE(same_bits(r->residual, ref_residual.residual))
              << "element "
              << first_difference(r->residual.data(), ref_residual.residual.data(), n);
        }
        // The residual's own codes dequantize to w - residual, on this Isa too.
        ASSERT_TRUE(same_bits(dequantized(fused.q, n, block_size, codebook),
                              dequantized(unfused.q, n, block_size, codebook)));
      }
    }
  }
}

TEST_P(IsaKernels, PublicEntryPointsMatchTheScalarKernels) {
  const Isa isa = GetParam();
  const Eigen::MatrixXf col = loftq_test::gaussian(45, 77, 0.02f, 11);
  for (Codebook codebook : all_codebooks) {
    loftq::force_isa(Isa::scalar);
    const loftq::QuantizedMatrix ref = loftq::quantize(col, codebook, 32);
    const Eigen::MatrixXf ref_out = ref.dequantize();
    SCOPED_TRACE(std::string(loftq::name_of(isa)) + " " + std::string(loftq::name_of(codebook)));
    loftq::force_isa(isa);
    const loftq::QuantizedMatrix q = loftq::quantize(col, codebook, 32);
    EXPECT_EQ(q.codes(), ref.codes());
    EXPECT_TRUE(same_bits(q.scales(), ref.scales()));
    const Eigen::MatrixXf out = ref.dequantize();
    EXPECT_EQ(std::memcmp(out.data(), ref_out.data(), ref.size() * sizeof(float)), 0);
  }
}

TEST_P(IsaKernels, GoldenFilesMatch) {
  const Isa isa = GetParam();
  const loftq::RowMatrixXf w = loftq_test::golden_input();
  const std::pair<const char*, Codebook> files[] = {{"nf4", Codebook::nf4},
                                                    {"nf2", Codebook::nf2},
                                                    {"fp4", Codebook::fp4},
                                                    {"int8", Codebook::int8}};
  loftq::force_isa(isa);
  for (const auto& [file, codebook] : files) {
    SCOPED_TRACE(std::string(loftq::name_of(isa)) + " " + file);
    const auto g = loftq_test::golden(file);
    const auto q = loftq::quantize(w, codebook, static_cast<int>(g.block));
    for (std::size_t k = 0; k < q.size(); ++k) {
      const long code =
          codebook == Codebook::int8 ? static_cast<std::int8_t>(q.code(k)) : q.code(k);
      ASSERT_EQ(code, g.codes[k]) << "element " << k;
    }
    ASSERT_TRUE(same_bits(q.scales(), g.absmax));
    std::vector<float> out(q.size());
    q.dequantize(out.data());
    ASSERT_TRUE(same_bits(out, g.dequantized));
  }
}

TEST_P(IsaKernels, LargeDequantizeMatchesOnTheNonTemporalPathAndOffIt) {
  const Isa isa = GetParam();
  const std::size_t n = 2048 * 2048;  // 16 MiB of output
  ASSERT_GE(n * sizeof(float), loftq::detail::nontemporal_bytes);
  std::mt19937 gen(5);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<float> w(n);
  for (float& x : w) x = normal(gen);
  const auto out = aligned_floats(n + 1);
  for (Codebook codebook : all_codebooks) {
    for (int block_size : {64, 100}) {
      const Quantized q = quantized(w, block_size, codebook);
      loftq::force_isa(Isa::scalar);
      const std::vector<float> ref = dequantized(q, n, block_size, codebook);
      SCOPED_TRACE(label(isa, codebook, block_size, n));
      loftq::force_isa(isa);
      // Aligned: non-temporal stores; 4 bytes past: the vector kernels fall back to plain ones.
      for (float* to : {out.get(), out.get() + 1}) {
        loftq::detail::dequantize_array(q.codes.data(), q.scales.data(), n, block_size, codebook,
                                        to);
        ASSERT_EQ(first_difference(to, ref.data(), n), n);
      }
    }
  }
}

TEST_P(IsaKernels, ResultsDoNotDependOnTheThreadCount) {
  const Isa isa = GetParam();
  const std::size_t n = 300 * 1000;  // many chunks
  loftq::force_isa(isa);
  for (Codebook codebook : {Codebook::nf4, Codebook::nf2, Codebook::uniform8, Codebook::int8}) {
    for (int block_size : {17, 64, 20000}) {
      SCOPED_TRACE(label(isa, codebook, block_size, n));
      const std::vector<float> w = tricky_input(n, block_size, codebook, 3);
      const std::vector<float> low_rank = tricky_low_rank(w, block_size, 4);
      loftq::set_threads(1);
      const Quantized one = quantized(w, block_size, codebook);
      const std::vector<float> one_out = dequantized(one, n, block_size, codebook);
      const Residual one_residual = fused_residual(w, low_rank, block_size, codebook);
      loftq::set_threads(2);
      const Quantized two = quantized(w, block_size, codebook);
      EXPECT_TRUE(same_bits(two.codes, one.codes));
      EXPECT_TRUE(same_bits(two.scales, one.scales));
      EXPECT_TRUE(same_bits(dequantized(one, n, block_size, codebook), one_out));
      const Residual two_residual = fused_residual(w, low_rank, block_size, codebook);
      EXPECT_TRUE(same_bits(two_residual.q.codes, one_residual.q.codes));
      EXPECT_TRUE(same_bits(two_residual.q.scales, one_residual.q.scales));
      EXPECT_TRUE(same_bits(two_residual.residual, one_residual.residual));
    }
  }
}

TEST_F(Kernels, ChunksStartOnBlockAndByteBoundaries) {
  for (int block_size : block_sizes) {
    const std::size_t blocks = loftq::detail::chunk_blocks(block_size);
    EXPECT_EQ(blocks % 4, 0u) << block_size;
    EXPECT_GE(blocks * static_cast<std::size_t>(block_size), loftq::detail::chunk_elements / 2)
        << block_size;
  }
  EXPECT_EQ(loftq::detail::chunk_blocks(1000000), 4u);
}

TEST_F(Kernels, IsaNamesRoundTripAndUnknownNamesThrow) {
  for (Isa isa : {Isa::scalar, Isa::avx2, Isa::avx512})
    EXPECT_EQ(loftq::isa_from_name(loftq::name_of(isa)), isa);
  EXPECT_EQ(loftq::name_of(Isa::avx512), "avx512");
  EXPECT_EQ(loftq_test::invalid_argument_message([] { loftq::isa_from_name("sse"); }),
            "loftq: isa = \"sse\" is not supported (scalar, avx2, avx512)");
  EXPECT_NE(
      loftq_test::invalid_argument_message([] { loftq::isa_from_name("AVX2"); }).find("\"AVX2\""),
      std::string::npos);
}

TEST_P(IsaSelection, ForceIsaSelectsItWhenSupportedAndRejectsItOtherwise) {
  const Isa isa = GetParam();
  if (loftq::isa_supported(isa)) {
    loftq::force_isa(isa);
    EXPECT_EQ(loftq::active_isa(), isa);
  } else {
    const Isa before = loftq::active_isa();
    const std::string message =
        loftq_test::invalid_argument_message([isa] { loftq::force_isa(isa); });
    EXPECT_NE(
        message.find("\"" + std::string(loftq::name_of(isa)) + "\" is not supported by this CPU"),
        std::string::npos)
        << message;
    EXPECT_EQ(loftq::active_isa(), before);
  }
}

TEST_F(Kernels, ForceIsaRejectsAValueOutsideTheEnumAndResetIsaRestoresTheDefault) {
  EXPECT_NE(loftq_test::invalid_argument_message([] {
              loftq::force_isa(static_cast<Isa>(7));
            }).find("\"7\""),
            std::string::npos);
  loftq::reset_isa();
  EXPECT_EQ(loftq::active_isa(),
            loftq::detail::isa_from_environment(std::getenv("LOFTQ_FORCE_ISA")));
}

TEST_F(Kernels, TheEnvironmentVariableDefaultsToTheDetectedIsaAndRejectsUnknownNames) {
  EXPECT_EQ(loftq::detail::isa_from_environment(nullptr), loftq::detected_isa());
  EXPECT_EQ(loftq::detail::isa_from_environment(""), loftq::detected_isa());
  EXPECT_EQ(
      loftq_test::invalid_argument_message([] { loftq::detail::isa_from_environment("avx9"); }),
      "loftq: LOFTQ_FORCE_ISA = \"avx9\" is not supported (scalar, avx2, avx512)");
}

TEST_P(IsaSelection, TheEnvironmentVariableSelectsItWhenSupportedAndRejectsItOtherwise) {
  const std::string name(loftq::name_of(GetParam()));
  if (loftq::isa_supported(GetParam())) {
    EXPECT_EQ(loftq::detail::isa_from_environment(name.c_str()), GetParam());
  } else {
    const std::string message = loftq_test::invalid_argument_message(
        [&name] { loftq::detail::isa_from_environment(name.c_str()); });
    EXPECT_EQ(message, "loftq: LOFTQ_FORCE_ISA = \"" + name + "\" is not supported by this CPU");
  }
}

TEST_P(IsaKernels, QuantizeResidualEqualsQuantizingTheDifferenceAndSubtracting) {
  const Isa isa = GetParam();
  const loftq::RowMatrixXf w = loftq_test::gaussian(37, 70, 0.02f, 8);
  const loftq::RowMatrixXf low_rank = loftq_test::gaussian(37, 70, 0.005f, 9);
  const loftq::RowMatrixXf target = w - low_rank;
  for (Codebook codebook : all_codebooks) {
    SCOPED_TRACE(std::string(loftq::name_of(isa)) + " " + std::string(loftq::name_of(codebook)));
    loftq::force_isa(Isa::scalar);
    loftq::RowMatrixXf ref_residual(w.rows(), w.cols());
    const loftq::QuantizedMatrix ref = loftq::quantize_residual(
        w.data(), low_rank.data(), w.rows(), w.cols(), codebook, 64, ref_residual.data());
    loftq::force_isa(isa);
    loftq::RowMatrixXf residual(w.rows(), w.cols());
    const loftq::QuantizedMatrix q = loftq::quantize_residual(
        w.data(), low_rank.data(), w.rows(), w.cols(), codebook, 64, residual.data());
    const loftq::QuantizedMatrix expected = loftq::quantize(target, codebook, 64);
    EXPECT_EQ(q.codes(), expected.codes());
    EXPECT_TRUE(same_bits(q.scales(), expected.scales()));
    const loftq::RowMatrixXf expected_out = expected.dequantize();
    const loftq::RowMatrixXf expected_residual = w - expected_out;
    EXPECT_EQ(std::memcmp(residual.data(), expected_residual.data(), q.size() * sizeof(float)), 0);
    EXPECT_EQ(q.codes(), ref.codes());
    EXPECT_TRUE(same_bits(q.scales(), ref.scales()));
    EXPECT_EQ(std::memcmp(residual.data(), ref_residual.data(), q.size() * sizeof(float)), 0);
  }
}

TEST_F(Kernels, QuantizeResidualRejectsBadShapesBlockSizesAndInfiniteTargets) {
  using loftq_test::invalid_argument_message;
  std::vector<float> w(12, 1.0f), low_rank(12, 0.0f), residual(12);
  EXPECT_NE(invalid_argument_message([&] {
              loftq::quantize_residual(w.data(), low_rank.data(), 0, 4, Codebook::nf4, 64,
                                       residual.data());
            }).find("w is empty (0 x 4)"),
            std::string::npos);
  EXPECT_NE(invalid_argument_message([&] {
              loftq::quantize_residual(w.data(), low_rank.data(), 3, 4, Codebook::nf4, 0,
                                       residual.data());
            }).find("block_size = 0"),
            std::string::npos);
  w[9] = 3e38f;
  low_rank[9] = -3e38f;  // the difference overflows to inf
  EXPECT_NE(invalid_argument_message([&] {
              loftq::quantize_residual(w.data(), low_rank.data(), 3, 4, Codebook::nf4, 4,
                                       residual.data());
            }).find("infinite value in block 2 (from row 2, col 0)"),
            std::string::npos);
}


/// C = E B (transposed false) or E^T B, each element one std::fma chain over its sum in index
/// order from 0: what the product kernels of every instruction set must give, bit for bit.
Eigen::MatrixXf fma_chain_product(const loftq::RowMatrixXf& e, bool transposed, const Eigen::MatrixXf& b) {
  const Eigen::Index rows = transposed ? e.cols() : e.rows();
  const Eigen::Index depth = transposed ? e.rows() : e.cols();
  Eigen::MatrixXf c(rows, b.cols());
  for (Eigen::Index i = 0; i < rows; ++i) {
    for (Eigen::Index j = 0; j < b.cols(); ++j) {
      float sum = 0.0f;
      for (Eigen::Index p = 0; p < depth; ++p) sum = std::fma(transposed ? e(p, i) : e(i, p), b(p, j), sum);
      c(i, j) = sum;
    }
  }
  return c;
}

TEST_P(IsaKernels, ProductsAreOneFmaChainPerElementOnEveryShapeAndThreadCount) {
  // Shapes around the tiles (4, 16 and 64 rows), the 8 x 8 transposes, the 256-term chunks and
  // the column steps (68 columns: 8 steps of 6 and 4 of 5 on AVX-512).
  struct Case {
    Eigen::Index rows, cols, k;
  };
  // E^T Y's full tiles are read in place at 80 columns (rows five 64-byte lines apart) and
  // copied first at the others.
  const Case cases[] = {{1, 1, 1},      {5, 13, 3},   {63, 65, 7}, {64, 64, 68}, {65, 300, 68},
                        {257, 513, 13}, {3, 700, 68}, {130, 9, 6}, {300, 80, 68}};
  loftq::force_isa(GetParam());
  for (const Case& c : cases) {
    SCOPED_TRACE(std::to_string(c.rows) + " x " + std::to_string(c.cols) + ", k = " + std::to_string(c.k));
    const loftq::RowMatrixXf e = loftq_test::gaussian(c.rows, c.cols, 1.0f, static_cast<unsigned>(c.rows + c.cols));
    const Eigen::MatrixXf x = loftq_test::gaussian(c.cols, c.k, 1.0f, 7);
    const Eigen::MatrixXf y = loftq_test::gaussian(c.rows, c.k, 1.0f, 8);
    const Eigen::MatrixXf ex = fma_chain_product(e, false, x);
    const Eigen::MatrixXf ety = fma_chain_product(e, true, y);
    // The reference is the product: the same sums in double agree to float rounding.
    const Eigen::MatrixXd exact = e.cast<double>() * x.cast<double>();
    ASSERT_LT((ex.cast<double>() - exact).norm(), 1e-5 * exact.norm() * std::sqrt(static_cast<double>(c.cols)));
    for (int threads : {1, 2}) {
      loftq::set_threads(threads);
      const loftq::detail::ThreadScope scope;
      Eigen::MatrixXf out;
      loftq::detail::multiply(e, x, out);
      ASSERT_EQ(out.rows(), c.rows);
      ASSERT_TRUE(same_bits(out, ex)) << "E X, threads " << threads;
      loftq::detail::multiply_transposed(e, y, out);
      ASSERT_EQ(out.rows(), c.cols);
      ASSERT_TRUE(same_bits(out, ety)) << "E^T Y, threads " << threads;
    }
  }
}

/// The sum of (x[i] - y[i])^2 (or x[i]^2, for y null) the solver's errors are made of, written
/// out as kernels::SquareSum promises it: the term of element i added by std::fma to lane i % 32
/// in double, then t[j] = (lane[j] + lane[j + 8]) + (lane[j + 16] + lane[j + 24]) and
/// ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7])).
double lane_sum_of_squares(const float* x, const float* y, std::size_t n) {
  double lane[32] = {};
  for (std::size_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(x[i]) - (y != nullptr ? static_cast<double>(y[i]) : 0.0);
    lane[i % 32] = std::fma(d, d, lane[i % 32]);
  }
  double t[8];
  for (std::size_t j = 0; j < 8; ++j)
    t[j] = (lane[j] + lane[j + 8]) + (lane[j + 16] + lane[j + 24]);
  return ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]));
}

// Lengths around the 32 lanes and the vectors of 4 and 8 doubles, unaligned starts, and the
// sequence cut into calls at points that leave a call mid-round: every cut gives the same bits.
TEST_P(IsaKernels, SquareSumsAreFmaChainsInFixedLanesHoweverTheSequenceIsCut) {
  const Isa isa = GetParam();
  const Eigen::MatrixXf x = loftq_test::gaussian(5000, 1, 0.02f, 71);
  const Eigen::MatrixXf y = loftq_test::gaussian(5000, 1, 0.02f, 72);
  for (std::size_t n : {0, 1, 7, 8, 9, 31, 32, 33, 63, 64, 65, 100, 4093}) {
    for (std::size_t offset : {0, 1, 3}) {
      for (const float* ys : {static_cast<const float*>(nullptr), y.data() + offset}) {
        SCOPED_TRACE("n = " + std::to_string(n) + ", offset = " + std::to_string(offset) +
                     (ys == nullptr ? ", squares" : ", squared differences"));
        const float* xs = x.data() + offset;
        const double expected = lane_sum_of_squares(xs, ys, n);
        EXPECT_EQ(loftq::detail::squared_sum(isa, xs, ys, n), expected);
        for (std::size_t cut : {1, 5, 31, 33, 70}) {
          loftq::detail::kernels::SquareSum sum;
          for (std::size_t first = 0; first < n; first += cut) {
            const std::size_t count = std::min(cut, n - first);
            loftq::detail::add_squares(isa, sum, xs + first, ys != nullptr ? ys + first : nullptr,
                                       count);
          }
          EXPECT_EQ(sum.count, n);
          EXPECT_EQ(sum.total(), expected) << "cut every " << cut;
        }
        long double exact = 0.0L;
        for (std::size_t i = 0; i < n; ++i) {
          const long double d = static_cast<long double>(xs[i]) -
                                (ys != nullptr ? static_cast<long double>(ys[i]) : 0.0L);
          exact += d * d;
        }
        EXPECT_NEAR(expected, static_cast<double>(exact), 1e-14 * static_cast<double>(exact));
      }
    }
  }
}

// The squared error of an iterate whose Q is codes, fused (add_error_squares()): on every
// codebook, block size and shape, after a prefix that leaves the sum mid-round (and at an odd
// count, where the vectors cannot take it), the same bits as dequantizing Q, w - Q in float and
// adding its squared differences with low_rank term by term; LLMInt8 is refused.
TEST_P(IsaKernels, ErrorSquaresOfCodesEqualDequantizingSubtractingAndAddingTheSquares) {
  const Isa isa = GetParam();
  for (Codebook codebook : all_codebooks) {
    for (int block_size : block_sizes) {
      for (const Shape& shape : shapes) {
        const std::size_t n = shape.size();
        const unsigned seed = static_cast<unsigned>(n) * 37u + static_cast<unsigned>(block_size);
        const std::vector<float> w = tricky_input(n, block_size, codebook, seed);
        const std::vector<float> low_rank = tricky_low_rank(w, block_size, seed + 1);
        const Quantized q = quantized(w, block_size, codebook);
        const std::vector<float> values = dequantized(q, n, block_size, codebook);
        for (std::size_t prefix : {0, 4, 9, 24}) {
          SCOPED_TRACE(label(isa, codebook, block_size, n) + ", prefix " + std::to_string(prefix));
          loftq::detail::kernels::SquareSum expected, sum;
          for (std::size_t i = 0; i < prefix; ++i) {
            expected.add(1.0f + static_cast<float>(i), 0.5f);
            sum.add(1.0f + static_cast<float>(i), 0.5f);
          }
          for (std::size_t i = 0; i < n; ++i) expected.add(w[i] - values[i], low_rank[i]);
          loftq::detail::add_error_squares(isa, sum, w.data(), q.codes.data(), q.scales.data(),
                                           low_rank.data(), n, block_size, codebook);
          EXPECT_EQ(sum.count, prefix + n);
          ASSERT_EQ(std::memcmp(sum.lane.data(), expected.lane.data(), sizeof sum.lane), 0)
              << "total " << sum.total() << " against " << expected.total();
        }
      }
    }
  }
  loftq::detail::kernels::SquareSum sum;
  const std::vector<float> w(64, 1.0f);
  const Quantized q = quantized(w, 64, Codebook::int8);
  EXPECT_THROW(loftq::detail::add_error_squares(isa, sum, w.data(), q.codes.data(), q.scales.data(),
                                                w.data(), 64, 64, Codebook::llm_int8),
               std::logic_error);
}

TEST(LowRank, CopiedRowsAreAnOddNumberOfWholeCacheLinesApart) {
  // 64 rows an odd number of 64-byte lines apart fall in 64 different sets of a 64-set L1.
  for (std::size_t length : {1u, 15u, 16u, 17u, 64u, 100u, 4096u, 11008u, 14336u}) {
    const std::size_t stride = loftq::detail::low_rank_stride(length);
    EXPECT_GE(stride, length);
    EXPECT_LT(stride, length + 32);
    EXPECT_EQ(stride % 16, 0u) << length;
    EXPECT_EQ(stride / 16 % 2, 1u) << length;
    // so the tile kernels read such rows in place
    EXPECT_TRUE(loftq::detail::kernels::scalar::spreads_over_cache_sets(stride)) << length;
  }
  EXPECT_EQ(loftq::detail::low_rank_stride(4096), 4112u);
  // Rows an even number of lines apart, or not whole lines apart, are copied first.
  for (std::size_t lde : {1u, 13u, 32u, 64u, 4096u, 11008u})
    EXPECT_FALSE(loftq::detail::kernels::scalar::spreads_over_cache_sets(lde)) << lde;
  // B^T's rows lie that far apart, B's columns in order.
  const Eigen::MatrixXf b = loftq_test::gaussian(40, 3, 1.0f, 4);
  std::vector<float> bt;
  loftq::detail::transposed_factor(b, bt);
  ASSERT_EQ(bt.size(), 3u * 48u);
  for (Eigen::Index p = 0; p < 3; ++p) {
    for (Eigen::Index i = 0; i < 40; ++i)
      EXPECT_EQ(bt[static_cast<std::size_t>(p * 48 + i)], b(i, p));
  }
}

TEST_P(IsaKernels, LowRankRowsAreOneFmaChainPerElementOnEveryShape) {
  // Widths around the tiles (4, 16 and 64 rows of the kernels' C are columns of A B^T here,
  // so narrower last tiles go through the scratch), ranks around the column steps and the
  // 256-term chunks, and row ranges that start inside A.
  struct Case {
    Eigen::Index rows, cols, k, first, count;
  };
  const Case cases[] = {{1, 1, 1, 0, 1},     {7, 5, 3, 2, 4},      {40, 64, 64, 8, 23},
                        {64, 65, 68, 0, 64}, {30, 130, 5, 29, 1},  {100, 300, 300, 3, 97},
                        {9, 37, 16, 0, 9},   {50, 128, 64, 10, 40}};
  loftq::force_isa(GetParam());
  for (const Case& c : cases) {
    SCOPED_TRACE(std::to_string(c.rows) + " x " + std::to_string(c.cols) +
                 ", k = " + std::to_string(c.k) + ", rows " + std::to_string(c.first) + " + " +
                 std::to_string(c.count));
    const Eigen::MatrixXf a =
        loftq_test::gaussian(c.rows, c.k, 1.0f, static_cast<unsigned>(c.rows + c.k));
    const Eigen::MatrixXf b =
        loftq_test::gaussian(c.cols, c.k, 1.0f, static_cast<unsigned>(c.cols + 3));
    // Rows first.. of A B^T as E^T X for E = B^T, X = A^T: one std::fma chain over k per element.
    const loftq::RowMatrixXf bt = b.transpose();
    const Eigen::MatrixXf expected =
        fma_chain_product(bt, true, a.middleRows(c.first, c.count).transpose()).transpose();
    const Eigen::MatrixXd exact =
        a.middleRows(c.first, c.count).cast<double>() * b.transpose().cast<double>();
    ASSERT_LT((expected.cast<double>() - exact).norm(),
              1e-5 * exact.norm() * std::sqrt(static_cast<double>(c.k)));
    // Written into the middle of a buffer whose ends are NaN: no write outside the rows.
    const auto size = static_cast<std::size_t>(c.count * c.cols);
    std::vector<float> buffer(size + 128, std::numeric_limits<float>::quiet_NaN());
    std::vector<float> right, rows_t, scratch;
    loftq::detail::transposed_factor(b, right);
    loftq::detail::low_rank_rows(loftq::active_isa(), a, right, c.cols, c.first, c.count,
                                 buffer.data() + 64, rows_t, scratch);
    const Eigen::Map<const loftq::RowMatrixXf> out(buffer.data() + 64, c.count, c.cols);
    ASSERT_TRUE(same_bits(Eigen::MatrixXf(out), expected));
    for (std::size_t i = 0; i < 64; ++i) {
      ASSERT_TRUE(std::isnan(buffer[i]) && std::isnan(buffer[64 + size + i]))
          << "written outside, at " << i;
    }
  }
}

TEST_P(IsaKernels, SmallProductsOfTheBasisAreOneFmaChainPerElementOnEveryShapeAndThreadCount) {
  // X C for X a block of columns (rows around the 64-row tiles and 256-row pieces) and C small,
  // as multiply_small(), subtract_product() and multiply_in_place() run them.
  struct Case {
    Eigen::Index rows, k, j;
  };
  const Case cases[] = {{1, 1, 1}, {63, 5, 7}, {300, 68, 68}, {513, 300, 4}, {256, 64, 68}};
  loftq::force_isa(GetParam());
  for (const Case& c : cases) {
    SCOPED_TRACE(std::to_string(c.rows) + " x " + std::to_string(c.k) +
                 ", j = " + std::to_string(c.j));
    const Eigen::MatrixXf whole =
        loftq_test::gaussian(c.rows, c.k + 3, 1.0f, static_cast<unsigned>(c.rows + c.k));
    const Eigen::MatrixXf x = whole.middleCols(2, c.k);
    const Eigen::MatrixXf small = loftq_test::gaussian(c.k, c.j, 1.0f, 5);
    const Eigen::MatrixXf square = loftq_test::gaussian(c.k, c.k, 1.0f, 6);
    const Eigen::MatrixXf y = loftq_test::gaussian(c.rows, c.j, 1.0f, 9);
    // X C as (C^T X^T)^T: fma_chain_product() of E = X^T row-major, transposed.
    const loftq::RowMatrixXf xt = x.transpose();
    const Eigen::MatrixXf product = fma_chain_product(xt, true, small);
    const Eigen::MatrixXf rotated = fma_chain_product(xt, true, square);
    const Eigen::MatrixXd exact = x.cast<double>() * small.cast<double>();
    ASSERT_LT((product.cast<double>() - exact).norm(),
              1e-5 * exact.norm() * std::sqrt(static_cast<double>(c.k)));
    for (int threads : {1, 2}) {
      loftq::set_threads(threads);
      const loftq::detail::ThreadScope scope;
      Eigen::MatrixXf out;
      loftq::detail::multiply_small(whole.middleCols(2, c.k), small, out);
      ASSERT_TRUE(same_bits(out, product)) << "X C, threads " << threads;
      Eigen::MatrixXf reduced = y;
      loftq::detail::subtract_product(whole.middleCols(2, c.k), small, reduced);
      ASSERT_TRUE(same_bits(reduced, Eigen::MatrixXf(y - product)))
          << "Y - X C, threads " << threads;
      Eigen::MatrixXf in_place = x;
      loftq::detail::multiply_in_place(in_place, square);
      ASSERT_TRUE(same_bits(in_place, rotated)) << "X C in place, threads " << threads;
    }
  }
}

TEST_P(IsaKernels, CrossProductsAreFmaChainsPerPieceAddedInDoubleOnEveryShapeAndThreadCount) {
  // X^T Y for X a block of columns: rows around the 256-row pieces, X's columns around the
  // 64-row tiles of the kernels' C (a narrower last tile goes through the scratch), Y's columns
  // around the column steps. Each piece's element is one float FMA chain over its rows in order;
  // the pieces are added in double, in order.
  struct Case {
    Eigen::Index rows, k, j;
  };
  const Case cases[] = {{1, 1, 1}, {63, 5, 7}, {300, 68, 68}, {513, 130, 4}, {256, 64, 68}};
  loftq::force_isa(GetParam());
  for (const Case& c : cases) {
    SCOPED_TRACE(std::to_string(c.rows) + " x " + std::to_string(c.k) +
                 ", j = " + std::to_string(c.j));
    const Eigen::MatrixXf whole =
        loftq_test::gaussian(c.rows, c.k + 3, 1.0f, static_cast<unsigned>(c.rows + c.k));
    const Eigen::MatrixXf y = loftq_test::gaussian(c.rows, c.j, 1.0f, 9);
    Eigen::MatrixXd expected = Eigen::MatrixXd::Zero(c.k, c.j);
    const Eigen::Index piece = loftq::detail::product_piece_rows;
    for (Eigen::Index first = 0; first < c.rows; first += piece) {
      Eigen::MatrixXd part(c.k, c.j);
      for (Eigen::Index i = 0; i < c.k; ++i) {
        for (Eigen::Index j = 0; j < c.j; ++j) {
          float sum = 0.0f;
          for (Eigen::Index p = first; p < std::min(first + piece, c.rows); ++p) {
            sum = std::fma(whole(p, 2 + i), y(p, j), sum);
          }
          part(i, j) = sum;
        }
      }
      expected += part;
    }
    const Eigen::MatrixXd exact =
        whole.middleCols(2, c.k).cast<double>().transpose() * y.cast<double>();
    ASSERT_LT((expected - exact).norm(),
              1e-5 * exact.norm() * std::sqrt(static_cast<double>(c.rows)));
    for (int threads : {1, 2}) {
      loftq::set_threads(threads);
      const loftq::detail::ThreadScope scope;
      const Eigen::MatrixXd out = loftq::detail::cross_product(whole.middleCols(2, c.k), y);
      ASSERT_TRUE(same_bits(out, expected)) << "threads " << threads;
    }
  }
}

TEST_P(IsaKernels, GramsInDoubleAreFmaChainsInFixedLanesOnEveryShapeAndThreadCount) {
  // X^T X's lower triangle in double: rows around the 8 lanes and the 256-row pieces, columns
  // around the blocks (1, 2 or 4 columns). Each piece's element sums its terms in lanes of rows
  // p % 8, each an FMA chain, added as ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)); the
  // pieces are added in order.
  struct Case {
    Eigen::Index rows, columns;
  };
  const Case cases[] = {{1, 1}, {7, 3}, {9, 5}, {300, 68}, {513, 13}, {256, 4}};
  loftq::force_isa(GetParam());
  for (const Case& c : cases) {
    SCOPED_TRACE(std::to_string(c.rows) + " x " + std::to_string(c.columns));
    const Eigen::MatrixXf whole = loftq_test::gaussian(c.rows, c.columns + 3, 1.0f,
                                                       static_cast<unsigned>(c.rows + c.columns));
    const Eigen::MatrixXf x = whole.middleCols(2, c.columns);
    Eigen::MatrixXd expected = Eigen::MatrixXd::Zero(c.columns, c.columns);
    const Eigen::Index piece = loftq::detail::product_piece_rows;
    for (Eigen::Index first = 0; first < c.rows; first += piece) {
      Eigen::MatrixXd part = Eigen::MatrixXd::Zero(c.columns, c.columns);
      for (Eigen::Index j = 0; j < c.columns; ++j) {
        for (Eigen::Index i = j; i < c.columns; ++i) {
          double lane[8] = {};
          for (Eigen::Index p = first; p < std::min(first + piece, c.rows); ++p) {
            double& l = lane[(p - first) % 8];
            l = std::fma(static_cast<double>(x(p, i)), static_cast<double>(x(p, j)), l);
          }
          part(i, j) = ((lane[0] + lane[1]) + (lane[2] + lane[3])) +
                       ((lane[4] + lane[5]) + (lane[6] + lane[7]));
        }
      }
      expected += part;
    }
    const Eigen::MatrixXd exact = x.cast<double>().transpose() * x.cast<double>();
    ASSERT_LT((Eigen::MatrixXd(expected.triangularView<Eigen::Lower>()) -
               Eigen::MatrixXd(exact.triangularView<Eigen::Lower>()))
                  .norm(),
              1e-13 * exact.norm());
    for (int threads : {1, 2}) {
      loftq::set_threads(threads);
      const loftq::detail::ThreadScope scope;
      ASSERT_TRUE(same_bits(loftq::detail::gram_in_double(x), expected)) << "threads " << threads;
    }
  }
}

/// The float whose high 16 bits are the bfloat16 `half`.
float bfloat16_value(std::uint32_t half) {
  const std::uint32_t bits = half << 16;
  float x;
  std::memcpy(&x, &bits, sizeof x);
  return x;
}

/// C = E B (transposed false) or E^T B for E rounded to bfloat16 and B (depth x k) given as
/// pairs: each element one chain over its pairs of terms from 0, sum = fma(second terms, sum)
/// then fma(first terms, sum), times 2^-exponent: what the bfloat16 kernels of every
/// instruction set must give, bit for bit.
Eigen::MatrixXf paired_fma_product(const loftq::detail::Bfloat16Matrix& e, bool transposed,
                                   const std::vector<std::uint32_t>& b, Eigen::Index k) {
  const Eigen::Index rows = transposed ? e.cols : e.rows;
  const Eigen::Index pairs = transposed ? e.padded_rows() / 2 : e.pairs();
  // Element (i, j) of E as a bfloat16, 0 in the padding.
  const auto element = [&](Eigen::Index i, Eigen::Index j) {
    const std::uint32_t word = e.word(i, j / 2);
    return bfloat16_value(j % 2 == 0 ? word & 0xffffu : word >> 16);
  };
  Eigen::MatrixXf c(rows, k);
  for (Eigen::Index i = 0; i < rows; ++i) {
    for (Eigen::Index j = 0; j < k; ++j) {
      float sum = 0.0f;
      for (Eigen::Index p = 0; p < pairs; ++p) {
        const std::uint32_t factor = b[static_cast<std::size_t>(p * k + j)];
        const float first = transposed ? element(2 * p, i) : element(i, 2 * p);
        const float second = transposed ? element(2 * p + 1, i) : element(i, 2 * p + 1);
        sum = std::fma(second, bfloat16_value(factor >> 16), sum);
        sum = std::fma(first, bfloat16_value(factor & 0xffffu), sum);
      }
      c(i, j) = sum * std::ldexp(1.0f, -e.exponent);
    }
  }
  return c;
}

TEST(Bfloat16, RoundingIsToNearestEvenAndFlushesBelowTwoToTheMinus50) {
  using loftq::detail::bfloat16_bits;
  EXPECT_EQ(bfloat16_bits(1.0f), 0x3f80u);
  EXPECT_EQ(bfloat16_bits(-2.5f), 0xc020u);
  EXPECT_EQ(bfloat16_bits(1.0f + 0x1p-8f), 0x3f80u);             // a tie: to the even 1
  EXPECT_EQ(bfloat16_bits(1.0f + 3 * 0x1p-8f), 0x3f82u);         // a tie: to the even 1 + 2^-6
  EXPECT_EQ(bfloat16_bits(1.0f + 0x1p-8f + 0x1p-20f), 0x3f81u);  // above the tie
  EXPECT_EQ(bfloat16_bits(0x1p-50f), 0x2680u);
  EXPECT_EQ(bfloat16_bits(-0x1p-50f), 0xa680u);
  EXPECT_EQ(bfloat16_bits(std::nextafter(0x1p-50f, 0.0f)), 0u);
  EXPECT_EQ(bfloat16_bits(-1e-30f), 0u);
  EXPECT_EQ(bfloat16_bits(0.0f), 0u);
  EXPECT_EQ(bfloat16_bits(std::nextafter(0x1p127f * 1.9921875f, 0.0f)), 0x7f7fu);
}

TEST(Bfloat16, AMatrixIsScaledByAPowerOfTwoAndPaddedWithZeros) {
  // 3 x 5: a padding row and a padding column; ||E|| = 16.2.
  loftq::RowMatrixXf e(3, 5);
  e << 12, -8, 4, 0, 1, 2, 3, 1e-30f, 0, 5, 0, 0, 0, 0, 0;
  const double energy = e.cast<double>().squaredNorm();
  loftq::detail::Bfloat16Matrix rounded;
  rounded.words.setConstant(4, 32, 0xdeadbeefu);  // memory kept from an earlier matrix
  loftq::detail::round_to_bfloat16(e, loftq::detail::bfloat16_exponent(std::sqrt(energy)), rounded);
  ASSERT_EQ(rounded.words.rows(), 4);  // one strip of 4 rows
  ASSERT_EQ(rounded.words.cols(), 32);
  EXPECT_EQ(rounded.exponent, -4);  // ||E|| 2^-4 = 1.01...
  EXPECT_EQ(rounded.word(0, 0), loftq::detail::bfloat16_pair(0.75f, -0.5f));
  EXPECT_EQ(rounded.word(0, 2),
            loftq::detail::bfloat16_pair(1.0f / 16, 0.0f));  // the padding column
  EXPECT_EQ(rounded.word(1, 0), loftq::detail::bfloat16_pair(2.0f / 16, 3.0f / 16));
  EXPECT_EQ(rounded.word(1, 1), 0u);                                       // 1e-30 2^-4 is flushed
  for (Eigen::Index j = 0; j < 3; ++j) EXPECT_EQ(rounded.word(3, j), 0u);  // the padding row
  EXPECT_TRUE((rounded.words.rightCols(29).array() == 0u).all());  // the strip past the pairs
}

TEST(Bfloat16, AMatrixLiesInStripsOf64Columns) {
  // 5 x 131: 66 pairs in three strips (32, 32 and 2 pairs), each 6 rows (a padding row).
  const loftq::RowMatrixXf e = loftq_test::gaussian(5, 131, 1.0f, 21);
  loftq::detail::Bfloat16Matrix rounded;
  loftq::detail::round_to_bfloat16(e, 0, rounded);
  ASSERT_EQ(rounded.words.rows(), 18);
  ASSERT_EQ(rounded.words.cols(), 32);
  EXPECT_EQ(rounded.strip_words(), 6u * 32u);
  for (Eigen::Index i = 0; i < 6; ++i) {
    for (Eigen::Index k = 0; k < 66; ++k) {
      const std::uint32_t expected =
          i == 5
              ? 0u
              : loftq::detail::bfloat16_pair(e(i, 2 * k), 2 * k + 1 < 131 ? e(i, 2 * k + 1) : 0.0f);
      EXPECT_EQ(rounded.words(k / 32 * 6 + i, k % 32), expected) << i << ", " << k;
      EXPECT_EQ(rounded.word(i, k), expected) << i << ", " << k;
    }
  }
  EXPECT_TRUE((rounded.words.bottomRows(6).rightCols(30).array() == 0u).all());
}

TEST(Bfloat16, TheExponentBringsAMagnitudeIntoOneToTwo) {
  using loftq::detail::bfloat16_exponent;
  EXPECT_EQ(bfloat16_exponent(1.0), 0);
  EXPECT_EQ(bfloat16_exponent(1.99), 0);
  EXPECT_EQ(bfloat16_exponent(2.0), -1);
  EXPECT_EQ(bfloat16_exponent(0.5), 1);
  EXPECT_EQ(bfloat16_exponent(16.2), -4);
  EXPECT_EQ(bfloat16_exponent(0x1p-90), 90);
  EXPECT_EQ(bfloat16_exponent(1e-300), 100);  // clamped
  EXPECT_EQ(bfloat16_exponent(1e300), -100);
  EXPECT_EQ(bfloat16_exponent(0.0), 0);  // nothing to scale
}

TEST_P(IsaKernels, Bfloat16ProductsArePairedFmaChainsOnEveryShapeAndThreadCount) {
  // Odd and even shapes around the tiles (4, 16 and 64 rows), the 8 x 8 transposes and the
  // 256-pair and 32-pair chunks; E with zeros, tiny values (flushed) and a wide range of magnitudes.
  struct Case {
    Eigen::Index rows, cols, k;
  };
  const Case cases[] = {{1, 1, 1},     {5, 13, 3},      {63, 65, 7},  {64, 64, 68},
                        {65, 300, 68}, {257, 1031, 13}, {3, 700, 68}, {1100, 9, 6}};
  loftq::force_isa(GetParam());
  for (const Case& c : cases) {
    SCOPED_TRACE(std::to_string(c.rows) + " x " + std::to_string(c.cols) +
                 ", k = " + std::to_string(c.k));
    loftq::RowMatrixXf e =
        loftq_test::gaussian(c.rows, c.cols, 1.0f, static_cast<unsigned>(c.rows + c.cols));
    for (Eigen::Index i = 0; i < e.size(); i += 7) {
      e.data()[i] *= i % 3 == 0 ? 0.0f : std::ldexp(1.0f, -static_cast<int>(i % 90));
    }
    const Eigen::MatrixXf x = loftq_test::gaussian(c.cols, c.k, 1.0f, 7);
    const Eigen::MatrixXf y = loftq_test::gaussian(c.rows, c.k, 1.0f, 8);
    loftq::detail::Bfloat16Matrix rounded;
    loftq::detail::round_to_bfloat16(e, loftq::detail::bfloat16_exponent(e.cast<double>().norm()), rounded);
    std::vector<std::uint32_t> x_pairs, y_pairs;
    loftq::detail::bfloat16_operand(x, x_pairs);
    loftq::detail::bfloat16_operand(y, y_pairs);
    const Eigen::MatrixXf ex = paired_fma_product(rounded, false, x_pairs, c.k);
    const Eigen::MatrixXf ety = paired_fma_product(rounded, true, y_pairs, c.k);
    // The reference is the product, to bfloat16's rounding of both factors.
    const Eigen::MatrixXd exact = e.cast<double>() * x.cast<double>();
    ASSERT_LE((ex.cast<double>() - exact).norm(), 1e-2 * exact.norm());
    const Eigen::MatrixXd exact_t = e.cast<double>().transpose() * y.cast<double>();
    ASSERT_LE((ety.cast<double>() - exact_t).norm(), 1e-2 * exact_t.norm());
    for (int threads : {1, 2}) {
      loftq::set_threads(threads);
      const loftq::detail::ThreadScope scope;
      std::vector<std::uint32_t> pairs;
      Eigen::MatrixXf out(c.rows, c.k);
      loftq::detail::multiply(rounded, x, out, pairs);
      ASSERT_TRUE(same_bits(out, ex)) << "E X, threads " << threads;
      out.resize(c.cols, c.k);
      loftq::detail::multiply_transposed(rounded, y, out, pairs);
      ASSERT_TRUE(same_bits(out, ety)) << "E^T Y, threads " << threads;
      // Every set this CPU runs, whichever the instruction set's dispatch picks.
      for (const auto& [name, set] : loftq::detail::runnable_bfloat16_kernels()) {
        Eigen::MatrixXf set_out(c.rows, c.k);
        loftq::detail::bfloat16_product_of(set, rounded, false, x_pairs, c.k, set_out);
        ASSERT_TRUE(same_bits(set_out, ex)) << "E X, kernels " << name << ", threads " << threads;
        // E's tiles packed and kept by one pass, then read back by the next.
        loftq::detail::PackedTiles packed;
        for (const char* pass : {"packing", "reading"}) {
          set_out.setZero();
          loftq::detail::bfloat16_product_of(set, rounded, false, x_pairs, c.k, set_out, {},
                                             &packed);
          ASSERT_TRUE(same_bits(set_out, ex))
              << "E X, kernels " << name << ", threads " << threads << ", " << pass << " tiles";
        }
        set_out.resize(c.cols, c.k);
        loftq::detail::bfloat16_product_of(set, rounded, true, y_pairs, c.k, set_out);
        ASSERT_TRUE(same_bits(set_out, ety)) << "E^T Y, kernels " << name << ", threads " << threads;
        // E^T's tiles kept, in E's own strips on kernels whose tile is a strip when E's rows
        // are even, else in a PackedTiles; then read back, by a pass given the PackedTiles and
        // by one given none (which packs again, or reads the strips).
        loftq::detail::Bfloat16Matrix strips = rounded;
        loftq::detail::PackedTiles packed_transposed;
        const std::pair<const char*, loftq::detail::PackedTiles*> passes[] = {
            {"packing", &packed_transposed},
            {"reading", &packed_transposed},
            {"reading without a PackedTiles", nullptr}};
        for (const auto& [pass, kept] : passes) {
          set_out.setZero();
          loftq::detail::bfloat16_product_of(set, strips, true, y_pairs, c.k, set_out, {}, kept);
          ASSERT_TRUE(same_bits(set_out, ety))
              << "E^T Y, kernels " << name << ", threads " << threads << ", " << pass << " tiles";
        }
        const bool in_strips = set.transposed != nullptr &&
                               set.tile_rows == 2 * loftq::detail::kernels::strip_pairs &&
                               c.rows % 2 == 0;
        ASSERT_EQ(strips.interleaved, in_strips) << name;
        EXPECT_EQ(packed_transposed.words.size() == 0, in_strips || set.transposed == nullptr)
            << name;
        if (in_strips) {
          // The strips no longer hold E's rows: E X reads the tiles kept before, or refuses.
          set_out.resize(c.rows, c.k);
          loftq::detail::bfloat16_product_of(set, strips, false, x_pairs, c.k, set_out, {},
                                             &packed);
          ASSERT_TRUE(same_bits(set_out, ex)) << "E X after E^T Y, kernels " << name;
          loftq::detail::PackedTiles none;
          EXPECT_THROW(loftq::detail::bfloat16_product_of(set, strips, false, x_pairs, c.k, set_out,
                                                          {}, &none),
                       std::logic_error);
          EXPECT_THROW(
              loftq::detail::bfloat16_product_of(set, strips, false, x_pairs, c.k, set_out),
              std::logic_error);
        }
      }
    }
  }
}

TEST(Bfloat16, KeptTilesAreReadInsteadOfEUntilForgottenInBothDirections) {
  const loftq::RowMatrixXf e = loftq_test::gaussian(130, 300, 1.0f, 3);
  const loftq::RowMatrixXf other = loftq_test::gaussian(130, 300, 1.0f, 4);
  const Eigen::MatrixXf x = loftq_test::gaussian(300, 68, 1.0f, 5);
  const int exponent = loftq::detail::bfloat16_exponent(e.cast<double>().norm());
  loftq::detail::Bfloat16Matrix rounded, rounded_other;
  loftq::detail::round_to_bfloat16(e, exponent, rounded);
  loftq::detail::round_to_bfloat16(other, exponent, rounded_other);
  std::vector<std::uint32_t> pairs;
  loftq::detail::bfloat16_operand(x, pairs);
  const loftq::detail::ThreadScope scope;
  for (const auto& [name, set] : loftq::detail::runnable_bfloat16_kernels()) {
    SCOPED_TRACE(name);
    Eigen::MatrixXf of_e(130, 68), of_other(130, 68), out(130, 68);
    loftq::detail::bfloat16_product_of(set, rounded, false, pairs, 68, of_e);
    loftq::detail::bfloat16_product_of(set, rounded_other, false, pairs, 68, of_other);
    ASSERT_FALSE(same_bits(of_e, of_other));
    loftq::detail::PackedTiles packed;
    loftq::detail::bfloat16_product_of(set, rounded, false, pairs, 68, out, {}, &packed);
    EXPECT_TRUE(same_bits(out, of_e));
    const bool kept = set.product != nullptr;  // the split kernels keep nothing
    EXPECT_EQ(packed.ready, kept);
    // A ready cache stands for E: the other matrix's words are not read.
    loftq::detail::bfloat16_product_of(set, rounded_other, false, pairs, 68, out, {}, &packed);
    EXPECT_TRUE(same_bits(out, kept ? of_e : of_other));
    packed.forget();
    loftq::detail::bfloat16_product_of(set, rounded_other, false, pairs, 68, out, {}, &packed);
    EXPECT_TRUE(same_bits(out, of_other));
    // Tiles of another shape are packed again, ready or not.
    const Eigen::MatrixXf narrow = x.topRows(200);
    std::vector<std::uint32_t> narrow_pairs;
    loftq::detail::bfloat16_operand(narrow, narrow_pairs);
    loftq::detail::Bfloat16Matrix left;
    loftq::detail::round_to_bfloat16(e.leftCols(200), exponent, left);
    Eigen::MatrixXf expected(130, 68);
    loftq::detail::bfloat16_product_of(set, left, false, narrow_pairs, 68, expected);
    loftq::detail::bfloat16_product_of(set, left, false, narrow_pairs, 68, out, {}, &packed);
    EXPECT_TRUE(same_bits(out, expected));
    // A square E's tiles of E B are not taken for E^T B's, nor the reverse.
    const loftq::RowMatrixXf square = e.leftCols(130);
    loftq::detail::Bfloat16Matrix rounded_square;
    loftq::detail::round_to_bfloat16(square, exponent, rounded_square);
    const Eigen::MatrixXf z = x.topRows(130);
    std::vector<std::uint32_t> z_pairs;
    loftq::detail::bfloat16_operand(z, z_pairs);
    Eigen::MatrixXf ez(130, 68), etz(130, 68), out_square(130, 68);
    loftq::detail::bfloat16_product_of(set, rounded_square, false, z_pairs, 68, ez);
    loftq::detail::bfloat16_product_of(set, rounded_square, true, z_pairs, 68, etz);
    ASSERT_FALSE(same_bits(ez, etz));
    loftq::detail::PackedTiles shared;
    for (bool transposed : {false, true, false}) {
      loftq::detail::bfloat16_product_of(set, rounded_square, transposed, z_pairs, 68, out_square,
                                         {}, &shared);
      EXPECT_TRUE(same_bits(out_square, transposed ? etz : ez)) << "transposed " << transposed;
    }
    // E^T Y the same way, in a PackedTiles of its own: with 129 rows, as an E of even rows keeps
    // them in its strips on kernels whose tile is a strip (the next test).
    const loftq::RowMatrixXf e_odd = e.topRows(129), other_odd = other.topRows(129);
    loftq::detail::Bfloat16Matrix rounded_odd, rounded_other_odd;
    loftq::detail::round_to_bfloat16(e_odd, exponent, rounded_odd);
    loftq::detail::round_to_bfloat16(other_odd, exponent, rounded_other_odd);
    const Eigen::MatrixXf y = loftq_test::gaussian(129, 68, 1.0f, 6);
    std::vector<std::uint32_t> y_pairs;
    loftq::detail::bfloat16_operand(y, y_pairs);
    Eigen::MatrixXf of_e_t(300, 68), of_other_t(300, 68), out_t(300, 68);
    loftq::detail::bfloat16_product_of(set, rounded_odd, true, y_pairs, 68, of_e_t);
    loftq::detail::bfloat16_product_of(set, rounded_other_odd, true, y_pairs, 68, of_other_t);
    loftq::detail::PackedTiles packed_transposed;
    loftq::detail::bfloat16_product_of(set, rounded_odd, true, y_pairs, 68, out_t, {},
                                       &packed_transposed);
    EXPECT_TRUE(same_bits(out_t, of_e_t));
    EXPECT_FALSE(rounded_odd.interleaved);
    loftq::detail::bfloat16_product_of(set, rounded_other_odd, true, y_pairs, 68, out_t, {},
                                       &packed_transposed);
    EXPECT_TRUE(same_bits(out_t, kept ? of_e_t : of_other_t));
    packed_transposed.forget();
    loftq::detail::bfloat16_product_of(set, rounded_other_odd, true, y_pairs, 68, out_t, {},
                                       &packed_transposed);
    EXPECT_TRUE(same_bits(out_t, of_other_t));
  }
}

TEST(Bfloat16, TransposedTilesAreKeptInTheStripsUntilTheyAreRowsAgain) {
  // 130 x 300: five strips, the last with 44 of its 64 columns; E's pairs of rows interleaved in
  // place by the first pass E^T Y that keeps its tiles, on the kernels whose tile is a strip.
  const loftq::RowMatrixXf e = loftq_test::gaussian(130, 300, 1.0f, 3);
  const loftq::RowMatrixXf other = loftq_test::gaussian(130, 300, 1.0f, 4);
  const Eigen::MatrixXf x = loftq_test::gaussian(300, 68, 1.0f, 5);
  const Eigen::MatrixXf y = loftq_test::gaussian(130, 68, 1.0f, 6);
  const int exponent = loftq::detail::bfloat16_exponent(e.cast<double>().norm());
  std::vector<std::uint32_t> x_pairs, y_pairs;
  loftq::detail::bfloat16_operand(x, x_pairs);
  loftq::detail::bfloat16_operand(y, y_pairs);
  const loftq::detail::ThreadScope scope;
  int sets_in_strips = 0;
  for (const auto& [name, set] : loftq::detail::runnable_bfloat16_kernels()) {
    if (set.transposed == nullptr || set.tile_rows != 2 * loftq::detail::kernels::strip_pairs) {
      continue;
    }
    SCOPED_TRACE(name);
    ++sets_in_strips;
    loftq::detail::Bfloat16Matrix rounded, rounded_other;
    loftq::detail::round_to_bfloat16(e, exponent, rounded);
    loftq::detail::round_to_bfloat16(other, exponent, rounded_other);
    const loftq::detail::Bfloat16Matrix rows = rounded;
    Eigen::MatrixXf ex(130, 68), ety(300, 68), other_ety(300, 68), out(300, 68);
    loftq::detail::bfloat16_product_of(set, rounded, false, x_pairs, 68, ex);
    loftq::detail::bfloat16_product_of(set, rounded, true, y_pairs, 68, ety);
    loftq::detail::bfloat16_product_of(set, rounded_other, true, y_pairs, 68, other_ety);
    EXPECT_FALSE(rounded.interleaved);  // passes without a PackedTiles leave E as it was
    EXPECT_EQ(rounded.words, rows.words);
    loftq::detail::PackedTiles packed, packed_transposed;
    Eigen::MatrixXf out_x(130, 68);
    loftq::detail::bfloat16_product_of(set, rounded, false, x_pairs, 68, out_x, {}, &packed);
    loftq::detail::bfloat16_product_of(set, rounded, true, y_pairs, 68, out, {},
                                       &packed_transposed);
    EXPECT_TRUE(same_bits(out, ety));
    EXPECT_TRUE(rounded.interleaved);
    EXPECT_EQ(packed_transposed.words.size(), 0);  // no memory of its own
    EXPECT_FALSE(packed_transposed.ready);
    // A pair of rows is 64 adjacent words of a strip: E(2p, c) and E(2p + 1, c) now share the
    // word 64 p + c % 64 of strip c / 64, in its low and high half.
    const std::size_t strip_words = rounded.strip_words();
    for (Eigen::Index r : {0, 1, 64, 129}) {
      for (Eigen::Index c : {0, 1, 63, 64, 255, 298, 299}) {
        const std::uint32_t word = rows.word(r, c / 2) >> (c % 2 == 0 ? 0 : 16) & 0xffffu;
        const std::uint32_t kept =
            rounded.words.data()[static_cast<std::size_t>(c / 64) * strip_words +
                                 static_cast<std::size_t>(r / 2 * 64 + c % 64)] >>
                (r % 2 == 0 ? 0 : 16) &
            0xffffu;
        EXPECT_EQ(kept, word) << r << ", " << c;
      }
    }
    // The strips stand for E in every later pass E^T Y, with or without a PackedTiles, and
    // whatever the PackedTiles holds; E X reads its own kept tiles.
    loftq::detail::bfloat16_product_of(set, rounded, true, y_pairs, 68, out);
    EXPECT_TRUE(same_bits(out, ety));
    packed_transposed.forget();
    loftq::detail::bfloat16_product_of(set, rounded, true, y_pairs, 68, out, {},
                                       &packed_transposed);
    EXPECT_TRUE(same_bits(out, ety));
    loftq::detail::bfloat16_product_of(set, rounded, false, x_pairs, 68, out_x, {}, &packed);
    EXPECT_TRUE(same_bits(out_x, ex));
    // Another E in the same PackedTiles is interleaved in its own strips.
    loftq::detail::bfloat16_product_of(set, rounded_other, true, y_pairs, 68, out, {},
                                       &packed_transposed);
    EXPECT_TRUE(same_bits(out, other_ety));
    EXPECT_TRUE(rounded_other.interleaved);
    // Rounded again, the strips are rows: every pass reads them as before.
    loftq::detail::round_to_bfloat16(e, exponent, rounded);
    EXPECT_FALSE(rounded.interleaved);
    EXPECT_EQ(rounded.words, rows.words);
    loftq::detail::bfloat16_product_of(set, rounded, false, x_pairs, 68, out_x);
    EXPECT_TRUE(same_bits(out_x, ex));
  }
  if (sets_in_strips == 0) GTEST_SKIP() << "no kernels of this CPU have a strip as their tile";
}

TEST(Bfloat16, EveryKernelSetTheCpuRunsIsListed) {
  const auto sets = loftq::detail::runnable_bfloat16_kernels();
  std::vector<std::string> names;
  for (const auto& set : sets) names.emplace_back(set.first);
  EXPECT_EQ(names.front(), "scalar");
  const loftq::detail::CpuFeatures& cpu = loftq::detail::cpu_features();
  EXPECT_EQ(std::count(names.begin(), names.end(), "avx2_split"), cpu.avx2 ? 1 : 0);
  EXPECT_EQ(std::count(names.begin(), names.end(), "avx512_split"), cpu.avx512 ? 1 : 0);
  EXPECT_EQ(std::count(names.begin(), names.end(), "avx512_dot"), cpu.avx512_bf16 ? 1 : 0);
  EXPECT_TRUE(!cpu.fast_bfloat16_dot || cpu.avx512_bf16);
}

TEST_P(IsaKernels, RowMajorCopiesEqualEigensOnEveryShape) {
  loftq::force_isa(GetParam());
  for (const Shape& shape : shapes) {
    for (const Shape& s : {shape, Shape{shape.cols, shape.rows}, Shape{40, 70}, Shape{8, 8}}) {
      const Eigen::MatrixXf w = loftq_test::gaussian(s.rows, s.cols, 1.0f, static_cast<unsigned>(s.size()));
      const loftq::RowMatrixXf expected = w;
      const loftq::RowMatrixXf copy = loftq::detail::row_major_copy(w);
      ASSERT_EQ(copy.rows(), s.rows);
      ASSERT_EQ(copy.cols(), s.cols);
      ASSERT_EQ(std::memcmp(copy.data(), expected.data(), s.size() * sizeof(float)), 0) << s.rows << " x " << s.cols;
    }
  }
}

TEST_P(IsaKernels, RowMajorCopiesMeasureTheLargestMagnitudeOnTheWay) {
  // Each piece of the copy measures what it copied: the largest magnitude (its bits, sign
  // cleared) is found in the first columns, a middle strip or the last column, on the streamed
  // path (1024 x 1024, out aligned or 5 floats past a line, whose first and last columns take
  // the 8 x 8 path) and on the 8 x 8 path (1030 columns, 40 x 70); negative, inf or NaN.
  loftq::force_isa(GetParam());
  const float values[] = {-1e3f, 7e2f, std::numeric_limits<float>::infinity(),
                          -std::numeric_limits<float>::quiet_NaN()};
  for (const Shape& s : {Shape{1024, 1024}, Shape{1024, 1030}, Shape{40, 70}}) {
    const Eigen::MatrixXf base =
        loftq_test::gaussian(s.rows, s.cols, 1.0f, static_cast<unsigned>(s.size()));
    std::vector<float> buffer(base.size() + 32);
    const std::size_t aligned =
        (64 - reinterpret_cast<std::uintptr_t>(buffer.data()) % 64) % 64 / sizeof(float);
    for (Eigen::Index col : {Eigen::Index{0}, Eigen::Index{2}, s.cols / 2 + 3, s.cols - 1}) {
      for (float value : values) {
        Eigen::MatrixXf w = base;
        w(s.rows / 3, col) = value;
        std::uint32_t expected;
        std::memcpy(&expected, &value, sizeof expected);
        expected &= 0x7fffffffu;
        for (std::size_t offset : {std::size_t{0}, std::size_t{5}}) {
          Eigen::Map<loftq::RowMatrixXf> out(buffer.data() + aligned + offset, s.rows, s.cols);
          EXPECT_EQ(loftq::detail::row_major_copy(w, out), expected)
              << s.rows << " x " << s.cols << ", column " << col << ", value " << value
              << ", offset " << offset;
        }
      }
    }
    Eigen::Map<loftq::RowMatrixXf> out(buffer.data() + aligned, s.rows, s.cols);
    EXPECT_EQ(
        loftq::detail::row_major_copy(base, out),
        loftq::detail::largest_magnitude_bits(base.data(), static_cast<std::size_t>(base.size())));
  }
}

// Copies of 2^20 floats and more with rows a multiple of 16 floats long are written by the 16 x 16
// non-temporal transposes between the first and last 64-byte line boundaries of out's rows:
// 1030 rows leave a strip's last 6 rows to the element loop, 1030 columns send the copy to the
// 8 x 8 path, and out starting 1 to 15 floats past a line boundary puts the columns before the
// first boundary and after the last one on the 8 x 8 path.
TEST_P(IsaKernels, LargeRowMajorCopiesEqualEigens) {
  loftq::force_isa(GetParam());
  for (const Shape& s :
       {Shape{1024, 1024}, Shape{1030, 1024}, Shape{1024, 1030}, Shape{64, 16384}}) {
    ASSERT_GE(s.size(), loftq::detail::streaming_copy_floats);
    const Eigen::MatrixXf w =
        loftq_test::gaussian(s.rows, s.cols, 1.0f, static_cast<unsigned>(s.size()));
    const loftq::RowMatrixXf expected = w;
    const loftq::RowMatrixXf copy = loftq::detail::row_major_copy(w);
    ASSERT_EQ(std::memcmp(copy.data(), expected.data(), s.size() * sizeof(float)), 0)
        << s.rows << " x " << s.cols;
  }
  const Eigen::MatrixXf w = loftq_test::gaussian(1024, 1024, 1.0f, 7);
  const loftq::RowMatrixXf expected = w;
  std::vector<float> buffer(expected.size() + 32);
  const std::size_t aligned =
      (64 - reinterpret_cast<std::uintptr_t>(buffer.data()) % 64) % 64 / sizeof(float);
  for (std::size_t offset = 0; offset < 16; ++offset) {
    std::fill(buffer.begin(), buffer.end(), 0.0f);
    Eigen::Map<loftq::RowMatrixXf> out(buffer.data() + aligned + offset, 1024, 1024);
    loftq::detail::row_major_copy(w, out);
    ASSERT_EQ(std::memcmp(out.data(), expected.data(), expected.size() * sizeof(float)), 0)
        << "offset " << offset;
  }
}

}  // namespace
