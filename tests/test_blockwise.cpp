// quantize<Book>(W, block) and dequantize(Q): golden files bit for bit, block layout, inputs.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "test_helpers.hpp"

namespace {

using loftq::Codebook;
using loftq::RowMatrixXf;
using loftq_test::bits_of_float;

struct GoldenCase {
  const char* file;
  Codebook codebook;
};

void PrintTo(const GoldenCase& c, std::ostream* os) { *os << c.file; }

class GoldenTest : public ::testing::TestWithParam<GoldenCase> {};

TEST_P(GoldenTest, CodesScalesAndDequantizedValuesMatchBitForBit) {
  const auto g = loftq_test::golden(GetParam().file);
  const RowMatrixXf w = loftq_test::golden_input();
  ASSERT_EQ(w.rows(), g.rows);
  ASSERT_EQ(w.cols(), g.cols);
  const auto q = loftq::quantize(w, GetParam().codebook, static_cast<int>(g.block));

  ASSERT_EQ(q.size(), g.codes.size());
  for (std::size_t k = 0; k < q.size(); ++k) {
    const long code = GetParam().codebook == Codebook::int8 ? static_cast<std::int8_t>(q.code(k)) : q.code(k);
    ASSERT_EQ(code, g.codes[k]) << "element " << k;
  }
  ASSERT_EQ(q.scales().size(), g.absmax.size());
  for (std::size_t b = 0; b < g.absmax.size(); ++b) {
    EXPECT_EQ(bits_of_float(q.scales()[b]), bits_of_float(g.absmax[b])) << "block " << b;
  }
  std::vector<float> out(q.size());
  q.dequantize(out.data());
  ASSERT_EQ(out.size(), g.dequantized.size());
  for (std::size_t k = 0; k < out.size(); ++k) {
    ASSERT_EQ(bits_of_float(out[k]), bits_of_float(g.dequantized[k])) << "element " << k;
  }
}

INSTANTIATE_TEST_SUITE_P(AllGoldenFiles, GoldenTest,
                         ::testing::Values(GoldenCase{"nf4", Codebook::nf4}, GoldenCase{"nf2", Codebook::nf2},
                                           GoldenCase{"fp4", Codebook::fp4}, GoldenCase{"int8", Codebook::int8}),
                         [](const auto& param_info) { return std::string(param_info.param.file); });

TEST(Blockwise, PolicyAndRunTimeCodebookGiveTheSameResult) {
  const RowMatrixXf w = loftq_test::golden_input();
  const auto a = loftq::quantize<loftq::NF2>(w, 64);
  const auto b = loftq::quantize(w, Codebook::nf2, 64);
  EXPECT_EQ(a.codes(), b.codes());
  EXPECT_EQ(a.scales(), b.scales());
  EXPECT_EQ(loftq::quantize<loftq::Uniform<4>>(w, 32).codebook(), Codebook::uniform4);
  EXPECT_EQ(loftq::quantize<loftq::Int8>(w).block_size(), 64);
}

TEST(Blockwise, RowAndColumnMajorInputsAndExpressionsAgree) {
  const Eigen::MatrixXf col = loftq_test::gaussian(37, 29, 0.02f, 1);
  const RowMatrixXf row = col;
  for (Codebook c : {Codebook::nf4, Codebook::fp4, Codebook::int8, Codebook::uniform8}) {
    const auto a = loftq::quantize(col, c, 64);
    const auto b = loftq::quantize(row, c, 64);
    EXPECT_EQ(a.codes(), b.codes());
    EXPECT_EQ(a.scales(), b.scales());
    const Eigen::MatrixXf twice = col * 2.0f;
    const auto e = loftq::quantize(col * 2.0f, c, 64);
    EXPECT_EQ(e.codes(), loftq::quantize(twice, c, 64).codes());
    const auto t = loftq::quantize(col.transpose(), c, 64);
    EXPECT_EQ(t.rows(), 29);
    EXPECT_EQ(t.cols(), 37);
  }
}

TEST(Blockwise, BlocksFollowTheRowMajorFlatteningWithAShortLastBlock) {
  // 7 x 9 = 63 elements in blocks of 8: 7 full blocks and one of 7.
  const Eigen::MatrixXf w = loftq_test::gaussian(7, 9, 1.0f, 2);
  const auto q = loftq::quantize<loftq::NF4>(w, 8);
  ASSERT_EQ(q.blocks(), 8u);
  const RowMatrixXf row = w;
  for (std::size_t b = 0; b < q.blocks(); ++b) {
    float m = 0;
    for (std::size_t k = b * 8; k < std::min<std::size_t>(63, b * 8 + 8); ++k) m = std::max(m, std::fabs(row.data()[k]));
    EXPECT_EQ(q.scales()[b], m) << "block " << b;
  }
  // The element of largest magnitude in each block maps to +-1 exactly.
  const RowMatrixXf d = q.dequantize();
  for (std::size_t b = 0; b < q.blocks(); ++b) {
    float m = 0;
    for (std::size_t k = b * 8; k < std::min<std::size_t>(63, b * 8 + 8); ++k) m = std::max(m, std::fabs(d.data()[k]));
    EXPECT_EQ(m, q.scales()[b]);
  }
}

TEST(Blockwise, ABlockLargerThanTheMatrixIsOneShortBlock) {
  const Eigen::MatrixXf w = loftq_test::gaussian(3, 5, 1.0f, 3);
  const auto q = loftq::quantize<loftq::NF4>(w, 4096);
  EXPECT_EQ(q.blocks(), 1u);
  EXPECT_EQ(q.scales()[0], w.cwiseAbs().maxCoeff());
  EXPECT_EQ(q.codes().size(), 8u);  // 15 codes: the 16th nibble is padding
  EXPECT_EQ(q.codes().back() & 0x0F, 0);
}

TEST(Blockwise, ExactMidpointsGoToTheLowerCode) {
  // A block [1, m] where m is the float32 midpoint of NF4 levels 8 and 9.
  const float lo = loftq::table_of(Codebook::nf4).values[8];
  const float hi = loftq::table_of(Codebook::nf4).values[9];
  const float mid = (lo + hi) / 2.0f;
  Eigen::MatrixXf w(1, 3);
  w << 1.0f, mid, std::nextafter(mid, 1.0f);
  const auto q = loftq::quantize<loftq::NF4>(w, 64);
  EXPECT_EQ(q.code(1), 8);
  EXPECT_EQ(q.code(2), 9);
}

TEST(Blockwise, Fp4MapsZeroToPositiveZeroAndTinyValuesToTheNearerSignedZero) {
  Eigen::MatrixXf w(1, 4);
  w << 1.0f, 0.0f, 1e-30f, -1e-30f;
  const auto q = loftq::quantize<loftq::FP4>(w, 64);
  EXPECT_EQ(q.code(1), 0);  // +0.0
  EXPECT_EQ(q.code(2), 8);  // -0.0, the second of the equal zeros in code order
  EXPECT_EQ(q.code(3), 0);
}

TEST(Blockwise, Int8RoundsHalfToEvenAndMapsAZeroBlockToZero) {
  Eigen::MatrixXf w(1, 4);
  w << 127.0f, 2.5f, -3.5f, 0.5f;  // f = 127 / 127 = 1
  const auto q = loftq::quantize<loftq::Int8>(w, 64);
  EXPECT_EQ(static_cast<std::int8_t>(q.code(1)), 2);
  EXPECT_EQ(static_cast<std::int8_t>(q.code(2)), -4);
  EXPECT_EQ(static_cast<std::int8_t>(q.code(3)), 0);
  const auto z = loftq::quantize<loftq::Int8>(Eigen::MatrixXf::Zero(2, 3), 64);
  EXPECT_EQ(z.scales()[0], 0.0f);
  EXPECT_TRUE(z.dequantize().isZero(0.0f));
}

TEST(Blockwise, AllZeroBlocksDequantizeToZeroForEveryCodebook) {
  for (Codebook c : {Codebook::nf2, Codebook::nf4, Codebook::fp4, Codebook::uniform2, Codebook::uniform4,
                     Codebook::uniform8, Codebook::int8}) {
    const auto q = loftq::quantize(Eigen::MatrixXf::Zero(4, 40), c, 16);
    const Eigen::MatrixXf d = q.dequantize();
    EXPECT_TRUE(d.isZero(0.0f)) << loftq::name_of(c);
  }
}

TEST(Blockwise, ErrorIsAtMostHalfTheLargestGapTimesAbsmax) {
  const Eigen::MatrixXf w = loftq_test::gaussian(33, 50, 0.02f, 4);
  const RowMatrixXf row = w;
  for (Codebook c : {Codebook::nf2, Codebook::nf4, Codebook::fp4, Codebook::uniform2, Codebook::uniform4,
                     Codebook::uniform8, Codebook::int8}) {
    const auto q = loftq::quantize(w, c, 64);
    const RowMatrixXf d = q.dequantize();
    std::vector<float> sorted(loftq::table_of(c).values, loftq::table_of(c).values + loftq::table_of(c).size);
    std::sort(sorted.begin(), sorted.end());
    float gap = 0;
    for (std::size_t k = 0; k + 1 < sorted.size(); ++k) gap = std::max(gap, sorted[k + 1] - sorted[k]);
    if (c == Codebook::int8) gap = 1.0f / 127.0f * 1.0001f;
    else gap *= 1.0001f;
    for (std::size_t k = 0; k < q.size(); ++k) {
      const float absmax = q.scales()[k / 64];
      ASSERT_LE(std::fabs(row.data()[k] - d.data()[k]), gap / 2 * absmax * 1.0001f + 1e-12f)
          << loftq::name_of(c) << " element " << k;
    }
  }
}

TEST(Blockwise, RequantizingTheDequantizedMatrixReproducesIt) {
  const Eigen::MatrixXf w = loftq_test::gaussian(16, 70, 0.02f, 5);
  for (Codebook c : {Codebook::nf2, Codebook::nf4, Codebook::fp4, Codebook::uniform2, Codebook::uniform4,
                     Codebook::uniform8, Codebook::int8}) {
    const auto q = loftq::quantize(w, c, 64);
    const Eigen::MatrixXf d = q.dequantize();
    const auto again = loftq::quantize(d, c, 64);
    EXPECT_EQ(again.dequantize(), d) << loftq::name_of(c);
    if (c != Codebook::fp4) {  // FP4: -0 becomes +0
      EXPECT_EQ(again.codes(), q.codes()) << loftq::name_of(c);
    }
  }
}

TEST(Blockwise, FreeDequantizeEqualsTheMember) {
  const auto q = loftq::quantize<loftq::NF4>(loftq_test::gaussian(5, 13, 1.0f, 6), 8);
  EXPECT_EQ(loftq::dequantize(q), q.dequantize());
}

TEST(Blockwise, BadInputThrowsNamingTheArgumentAndValue) {
  using loftq_test::invalid_argument_message;
  Eigen::MatrixXf w = Eigen::MatrixXf::Ones(3, 4);
  w(2, 1) = std::numeric_limits<float>::quiet_NaN();
  EXPECT_NE(invalid_argument_message([&] { loftq::quantize<loftq::NF4>(w); }).find("at (row 2, col 1)"),
            std::string::npos);
  w(2, 1) = -std::numeric_limits<float>::infinity();
  EXPECT_NE(invalid_argument_message([&] { loftq::quantize<loftq::NF4>(w); }).find("-inf"), std::string::npos);
  EXPECT_NE(invalid_argument_message([] { loftq::quantize<loftq::NF4>(Eigen::MatrixXf(0, 4)); }).find("W is empty (0 x 4)"),
            std::string::npos);
  EXPECT_NE(invalid_argument_message([] { loftq::quantize<loftq::NF4>(Eigen::MatrixXf::Ones(2, 2), 0); })
                .find("block_size = 0"),
            std::string::npos);
  EXPECT_NE(invalid_argument_message([] { loftq::quantize<loftq::NF4>(Eigen::MatrixXf::Ones(2, 2), -64); })
                .find("block_size = -64"),
            std::string::npos);
}

}  // namespace
