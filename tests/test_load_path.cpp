// Load paths: 16-bit rounding, double quantization and LLM.int8, in blockwise quantization and in
// the solver, checked against the definitions written out element by element.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <cstdint>
#include <limits>
#include <vector>

#include "test_helpers.hpp"

namespace {

using loftq::Codebook;
using loftq::FloatType;
using loftq::Isa;
using loftq::LoadPath;
using loftq::QuantizedMatrix;
using loftq_test::bits_of_float;
using loftq_test::gaussian;
using loftq_test::invalid_argument_message;

/// Row-major copy of m.
loftq::RowMatrixXf row_major(const Eigen::MatrixXf& m) { return m; }

/// Heavy-tailed weights: Gaussian with a few large values, so blocks have distinct absmax.
Eigen::MatrixXf weights(Eigen::Index rows, Eigen::Index cols, unsigned seed) {
  Eigen::MatrixXf w = gaussian(rows, cols, 0.02f, seed);
  for (Eigen::Index k = 0; k < w.size(); k += 37) w.data()[k] *= 9.0f;
  return w;
}

TEST(FloatType, RoundsToNearestEvenLikeTorch) {
  EXPECT_EQ(loftq::round_to(FloatType::float32, 1.0f + 0x1p-20f), 1.0f + 0x1p-20f);
  // bfloat16 keeps 8 significant bits: 1 + 2^-8 is a tie between 1 and 1 + 2^-7.
  EXPECT_EQ(loftq::round_to(FloatType::bfloat16, 1.0f + 0x1p-8f), 1.0f);
  EXPECT_EQ(loftq::round_to(FloatType::bfloat16, 1.0f + 0x1p-8f + 0x1p-20f), 1.0f + 0x1p-7f);
  EXPECT_EQ(loftq::round_to(FloatType::bfloat16, 1.0f + 3 * 0x1p-8f), 1.0f + 0x1p-6f);  // tie to even
  // float16 keeps 11 bits and ends at 65504.
  EXPECT_EQ(loftq::round_to(FloatType::float16, 1.0f + 0x1p-11f), 1.0f);
  EXPECT_EQ(loftq::round_to(FloatType::float16, 65519.0f), 65504.0f);
  EXPECT_TRUE(std::isinf(loftq::round_to(FloatType::float16, 65520.0f)));
  EXPECT_EQ(loftq::round_to(FloatType::float16, 0x1p-25f), 0.0f);  // half the least subnormal: to even
  EXPECT_EQ(loftq::round_to(FloatType::float16, 0x1.8p-24f), 0x1p-23f);
  EXPECT_EQ(loftq::float_type_from_name("bfloat16"), FloatType::bfloat16);
  EXPECT_NE(invalid_argument_message([] { loftq::float_type_from_name("half"); }).find("\"half\""), std::string::npos);
}

TEST(LoadPath, PlainPathIsBlockwiseQuantization) {
  const Eigen::MatrixXf w = weights(12, 100, 1);
  for (Codebook c : {Codebook::nf4, Codebook::fp4, Codebook::int8, Codebook::nf2}) {
    const QuantizedMatrix a = loftq::quantize(w, c, 64);
    const QuantizedMatrix b = loftq::quantize(w, c, 64, LoadPath{});
    EXPECT_EQ(a.codes(), b.codes());
    EXPECT_EQ(a.scales(), b.scales());
    EXPECT_TRUE(a.dequantize() == b.dequantize());
    EXPECT_TRUE(b.load_path().is_plain());
  }
}

/// What a 4-bit load path dequantizes, element by element: W rounded to quantized_from,
/// quantized on the plain path; scales restored from double quantization; table[code] * scale
/// rounded to dequantized_to.
Eigen::MatrixXf four_bit_by_definition(const Eigen::MatrixXf& w, Codebook c, int block, const LoadPath& path) {
  Eigen::MatrixXf rounded = w;
  for (Eigen::Index k = 0; k < rounded.size(); ++k) rounded.data()[k] = loftq::round_to(path.quantized_from, rounded.data()[k]);
  const QuantizedMatrix plain = loftq::quantize(rounded, c, block);
  std::vector<float> scales = plain.scales();
  if (path.double_quant) {
    const loftq::DoubleQuantizedScales dq = loftq::double_quantize(scales);
    for (std::size_t b = 0; b < scales.size(); ++b) {
      const float product = loftq::dynamic_map()[dq.codes[b]] * dq.absmax[b / 256];
      volatile float kept = product;  // rounded before the addition
      scales[b] = kept + dq.offset;
    }
  }
  const loftq::CodebookTable table = loftq::table_of(c);
  loftq::RowMatrixXf out(w.rows(), w.cols());
  for (std::size_t k = 0; k < plain.size(); ++k) {
    const float value = table.values[plain.code(k)] * scales[k / static_cast<std::size_t>(block)];
    out.data()[k] = loftq::round_to(path.dequantized_to, value);
  }
  return out;
}

TEST(LoadPath, FourBitMatchesItsDefinitionOnEveryIsa) {
  // 3 x 1000: 47 blocks of 64 and a short one; 3 x 40000: 1875 blocks, 8 nested blocks.
  for (const auto& shape : {std::pair<int, int>{3, 1000}, std::pair<int, int>{3, 40000}}) {
    const Eigen::MatrixXf w = weights(shape.first, shape.second, 2);
    for (Codebook c : {Codebook::nf4, Codebook::fp4}) {
      for (FloatType from : {FloatType::float32, FloatType::bfloat16, FloatType::float16}) {
        for (bool dq : {false, true}) {
          for (FloatType to : {FloatType::float32, FloatType::bfloat16, FloatType::float16}) {
            const LoadPath path{from, dq, to};
            const Eigen::MatrixXf expected = four_bit_by_definition(w, c, 64, path);
            for (Isa isa : {Isa::scalar, Isa::avx2, Isa::avx512}) {
              if (!loftq::isa_supported(isa)) continue;
              loftq::force_isa(isa);
              const QuantizedMatrix q = loftq::quantize(w, c, 64, path);
              EXPECT_TRUE(q.dequantize() == expected)
                  << loftq::name_of(c) << " " << loftq::name_of(from) << " dq " << dq << " " << loftq::name_of(to)
                  << " " << loftq::name_of(isa);
            }
            loftq::reset_isa();
          }
        }
      }
    }
  }
}

/// bitsandbytes' LLM.int8 of one row-major matrix, element by element, as its default
/// int8_vectorwise_quant / _dequant compute it after a cast to float16.
struct LlmInt8 {
  std::vector<std::int8_t> codes;
  std::vector<float> scb;
  loftq::RowMatrixXf dequantized;
};
LlmInt8 llm_int8_by_definition(const Eigen::MatrixXf& w, FloatType stored) {
  LlmInt8 r;
  const loftq::RowMatrixXf m = w;
  r.dequantized.resize(m.rows(), m.cols());
  for (Eigen::Index i = 0; i < m.rows(); ++i) {
    std::vector<float> x(static_cast<std::size_t>(m.cols()));
    float absmax = 0.0f;
    for (Eigen::Index j = 0; j < m.cols(); ++j) {
      x[j] = loftq::round_to(FloatType::float16, loftq::round_to(stored, m(i, j)));
      absmax = std::max(absmax, std::fabs(x[j]));
    }
    volatile float reciprocal = 1.0f / absmax;
    const float multiplier = reciprocal * 127.0f;
    r.scb.push_back(absmax);
    for (Eigen::Index j = 0; j < m.cols(); ++j) {
      float product = x[j] * multiplier;
      if (std::isnan(product)) product = 0.0f;
      const auto q = static_cast<std::int8_t>(std::nearbyint(product));
      r.codes.push_back(q);
      volatile float qa = static_cast<float>(q) * absmax;
      r.dequantized(i, j) = qa * static_cast<float>(7.874015718698502e-3);
    }
  }
  return r;
}

TEST(LlmInt8, MatchesItsDefinitionOnEveryIsa) {
  Eigen::MatrixXf w = weights(9, 4099, 3);
  w.row(4).setZero();  // a zero row: SCB 0, codes 0
  w(6, 17) = 3.0f;     // an outlier
  for (FloatType from : {FloatType::float32, FloatType::bfloat16, FloatType::float16}) {
    const LlmInt8 expected = llm_int8_by_definition(w, from);
    for (Isa isa : {Isa::scalar, Isa::avx2, Isa::avx512}) {
      if (!loftq::isa_supported(isa)) continue;
      loftq::force_isa(isa);
      const QuantizedMatrix q = loftq::quantize(w, Codebook::llm_int8, static_cast<int>(w.cols()), LoadPath{from, false, FloatType::float32});
      ASSERT_EQ(q.codes().size(), expected.codes.size());
      EXPECT_EQ(0, std::memcmp(q.codes().data(), expected.codes.data(), expected.codes.size())) << loftq::name_of(isa);
      EXPECT_EQ(q.scales(), expected.scb) << loftq::name_of(isa);
      EXPECT_TRUE(q.dequantize() == Eigen::MatrixXf(expected.dequantized)) << loftq::name_of(isa);
    }
    loftq::reset_isa();
  }
  EXPECT_EQ(loftq::quantize<loftq::LLMInt8>(w, static_cast<int>(w.cols())).codes(),
            loftq::quantize(w, Codebook::llm_int8, static_cast<int>(w.cols()), LoadPath{}).codes());
}

TEST(LlmInt8, DiffersFromPerBlockInt8WhereBitsandbytesDoes) {
  // Int8 keeps its meaning: 127 / absmax and q * (absmax / 127), on the float32 values.
  const Eigen::MatrixXf w = weights(64, 256, 4);
  const QuantizedMatrix per_block = loftq::quantize(w, Codebook::int8, 256);
  const QuantizedMatrix llm = loftq::quantize(w, Codebook::llm_int8, 256);
  EXPECT_EQ(per_block.codebook(), Codebook::int8);
  EXPECT_FALSE(per_block.dequantize() == llm.dequantize());
  // Both are 8-bit quantizations of W with about the same error.
  const double per_block_error = (w - per_block.dequantize()).norm() / w.norm();
  const double llm_error = (w - llm.dequantize()).norm() / w.norm();
  EXPECT_NEAR(llm_error, per_block_error, 0.05 * per_block_error);
}

TEST(LlmInt8, QuantizeResidualTakesTheLoadPath) {
  const loftq::RowMatrixXf w = row_major(weights(8, 128, 5));
  const loftq::RowMatrixXf l = row_major(weights(8, 128, 6)) * 0.1f;
  loftq::RowMatrixXf residual(8, 128);
  const QuantizedMatrix q = loftq::quantize_residual(w.data(), l.data(), 8, 128, Codebook::llm_int8, 128, residual.data());
  const loftq::RowMatrixXf target = w - l;
  const QuantizedMatrix expected = loftq::quantize(target, Codebook::llm_int8, 128);
  EXPECT_EQ(q.codes(), expected.codes());
  EXPECT_TRUE(residual == loftq::RowMatrixXf(w - loftq::RowMatrixXf(expected.dequantize())));
}

/// Q.backbone_values(), as a matrix.
Eigen::MatrixXf backbone_values(const QuantizedMatrix& q) {
  loftq::RowMatrixXf out(q.rows(), q.cols());
  q.backbone_values(out.data());
  return out;
}

TEST(LoadPath, SixteenBitBackboneRequantizesToTheSameMatrix) {
  // A 16-bit backbone that stores Q.backbone_values() in its type is what bitsandbytes quantizes
  // at load time: the same absmax and values come back (FP4's two zeros may swap codes).
  const Eigen::MatrixXf w = weights(16, 5000, 7);
  for (FloatType type : {FloatType::bfloat16, FloatType::float16}) {
    for (Codebook c : {Codebook::nf4, Codebook::fp4}) {
      for (bool dq : {false, true}) {
        const LoadPath path{type, dq, type};
        const QuantizedMatrix q = loftq::quantize(w, c, 64, path);
        const Eigen::MatrixXf stored = backbone_values(q);
        const QuantizedMatrix again = loftq::quantize(stored, c, 64, path);
        EXPECT_EQ(again.scales(), q.scales());
        EXPECT_TRUE(again.dequantize() == q.dequantize()) << loftq::name_of(type) << " " << loftq::name_of(c) << " dq " << dq;
        if (c == Codebook::nf4) {
          EXPECT_EQ(again.codes(), q.codes());
        }
        if (dq) {
          EXPECT_FALSE(stored == q.dequantize());  // the stored values are not the loaded ones
        }
      }
    }
    const int cols = static_cast<int>(w.cols());
    const LoadPath int8_path{type, false, FloatType::float32};
    const QuantizedMatrix q = loftq::quantize(w, Codebook::llm_int8, cols, int8_path);
    Eigen::MatrixXf stored = backbone_values(q);
    for (Eigen::Index k = 0; k < stored.size(); ++k) stored.data()[k] = loftq::round_to(type, stored.data()[k]);
    const QuantizedMatrix again = loftq::quantize(stored, Codebook::llm_int8, cols, int8_path);
    EXPECT_EQ(again.codes(), q.codes()) << loftq::name_of(type);
    EXPECT_EQ(again.scales(), q.scales()) << loftq::name_of(type);
  }
}

TEST(LoadPath, RejectsWhatBitsandbytesCannotLoad) {
  const Eigen::MatrixXf w = weights(4, 64, 8);
  EXPECT_NE(invalid_argument_message([&] { loftq::quantize(w, Codebook::int8, 64, LoadPath{FloatType::float32, true, FloatType::float32}); })
                .find("double_quant = true needs a 4-bit codebook, not int8"),
            std::string::npos);
  Eigen::MatrixXf big = w;
  big(2, 5) = 70000.0f;
  const std::string message = invalid_argument_message([&] { loftq::quantize(big, Codebook::llm_int8, 64); });
  EXPECT_NE(message.find("float16: 65504"), std::string::npos) << message;
  EXPECT_NE(message.find("row 2, col 0"), std::string::npos) << message;
  EXPECT_NE(invalid_argument_message([&] { loftq::quantize(big, Codebook::nf4, 64, LoadPath{FloatType::float16, false, FloatType::float16}); }),
            "");
  EXPECT_EQ(invalid_argument_message([&] { loftq::quantize(big, Codebook::nf4, 64, LoadPath{FloatType::bfloat16, false, FloatType::bfloat16}); }),
            "");
}

TEST(QuantizedMatrix, KeepsNegativeRestoredScales) {
  // bitsandbytes restores a double-quantized absmax near 0 as a small negative number and keeps it.
  const QuantizedMatrix q(1, 2, 1, Codebook::nf4, {0xF0}, {-0.5f, 1.0f});
  const Eigen::MatrixXf d = q.dequantize();
  EXPECT_EQ(d(0, 0), -0.5f);  // code 15 is 1.0
  EXPECT_EQ(d(0, 1), -1.0f);  // code 0 is -1.0
  EXPECT_NE(invalid_argument_message([] { QuantizedMatrix(1, 2, 1, Codebook::nf4, {0xF0}, {-0.5f, 1.0f}, LoadPath{FloatType::float32, true, FloatType::float32}); })
                .find("absmax[0]"),
            std::string::npos);
  EXPECT_NE(invalid_argument_message([] { QuantizedMatrix(1, 2, 1, Codebook::nf4, {0xF0}, {std::nanf(""), 1.0f}); }).find("scales[0]"),
            std::string::npos);
}

TEST(DoubleQuant, LoadedScalesAreTheRestoredOnes) {
  const Eigen::MatrixXf w = weights(8, 4000, 9);
  const QuantizedMatrix q = loftq::quantize(w, Codebook::nf4, 64, LoadPath{FloatType::float32, true, FloatType::float32});
  const std::vector<float> restored = loftq::restored_scales(loftq::double_quantize(q.scales()));
  EXPECT_EQ(q.loaded_scales(), restored);
  EXPECT_NE(restored, q.scales());
  double worst = 0.0;  // the 8-bit nested error is small against the largest scale
  for (std::size_t b = 0; b < restored.size(); ++b) worst = std::max(worst, std::fabs(double(restored[b]) - q.scales()[b]));
  EXPECT_LT(worst, 0.01 * *std::max_element(q.scales().begin(), q.scales().end()));
}

/// ||W - Q.dequantize() - A B^T||_F / ||W||_F in double.
double reconstruction_error(const Eigen::MatrixXf& w, const loftq::Result& r) {
  const Eigen::MatrixXd e = w.cast<double>() - r.Q.dequantize().cast<double>() - r.A.cast<double>() * r.B.cast<double>().transpose();
  return e.norm() / w.cast<double>().norm();
}

TEST(Solver, ErrorsAreThoseOfTheLoadedBackbone) {
  const Eigen::MatrixXf w = weights(96, 160, 10);
  const std::vector<std::pair<Codebook, LoadPath>> cases = {
      {Codebook::nf4, LoadPath{FloatType::bfloat16, false, FloatType::bfloat16}},
      {Codebook::nf4, LoadPath{FloatType::bfloat16, true, FloatType::bfloat16}},
      {Codebook::fp4, LoadPath{FloatType::float16, true, FloatType::float16}},
      {Codebook::nf4, LoadPath{FloatType::float32, true, FloatType::bfloat16}},
      {Codebook::llm_int8, LoadPath{}},
      {Codebook::llm_int8, LoadPath{FloatType::bfloat16, false, FloatType::float32}}};
  for (const auto& [codebook, path] : cases) {
    loftq::Options options;
    options.rank = 8;
    options.iters = 4;
    options.codebook = codebook;
    options.block_size = codebook == Codebook::llm_int8 ? 160 : 64;
    options.load_path = path;
    const loftq::Result r = loftq::loftq(w, options);
    EXPECT_EQ(r.Q.load_path(), path);
    EXPECT_NEAR(reconstruction_error(w, r), r.error(), 1e-6 * r.error());
    // Q_1 is what the loader makes of W: the QLoRA error.
    const QuantizedMatrix plain = loftq::quantize(w, codebook, options.block_size, path);
    EXPECT_NEAR(r.quantization_error, (w - plain.dequantize()).norm() / w.norm(), 1e-6 * r.quantization_error);
    EXPECT_LT(r.error(), r.quantization_error);
    // The returned Q is what quantizing W - A B^T on the path gives, rounded as the path says.
    Eigen::MatrixXf target = w;
    if (r.iteration > 1) {
      options.iters = r.iteration - 1;
      options.keep_best = false;
      const loftq::Result previous = loftq::loftq(w, options);
      target = w - previous.A * previous.B.transpose();
    }
    EXPECT_TRUE(loftq::quantize(target, codebook, options.block_size, path).dequantize() == r.Q.dequantize());
  }
}

TEST(Solver, LoadPathDoesNotChangeTheDefault) {
  const Eigen::MatrixXf w = weights(64, 96, 11);
  loftq::Options options;
  options.rank = 4;
  const loftq::Result a = loftq::loftq(w, options);
  options.load_path = LoadPath{};
  const loftq::Result b = loftq::loftq(w, options);
  EXPECT_EQ(a.errors, b.errors);
  EXPECT_TRUE(a.A == b.A);
  EXPECT_EQ(a.Q.codes(), b.Q.codes());
  const loftq::Result pinned = loftq::loftq(w, 4, 4, 5);
  EXPECT_EQ(pinned.errors, a.errors);
}

TEST(Solver, LoadPathResultsDoNotDependOnThreads) {
  const Eigen::MatrixXf w = weights(600, 300, 12);
  loftq::Options options;
  options.rank = 8;
  options.iters = 2;
  options.load_path = LoadPath{FloatType::bfloat16, true, FloatType::bfloat16};
  options.threads = 1;
  const loftq::Result one = loftq::loftq(w, options);
  options.threads = 2;
  const loftq::Result two = loftq::loftq(w, options);
  EXPECT_EQ(one.errors, two.errors);
  EXPECT_EQ(one.Q.codes(), two.Q.codes());
  EXPECT_TRUE(one.A == two.A);
}

}  // namespace
