// QuantizedMatrix: packing layout, memory, construction from arrays, validation.
#include <gtest/gtest.h>

#include <limits>

#include "test_helpers.hpp"

namespace {

using loftq::Codebook;
using loftq::QuantizedMatrix;

TEST(QuantizedMatrix, FourBitCodesPackFirstElementInTheHighNibble) {
  // Codes 1, 2, 3 (padded with 0): bytes 0x12, 0x30.
  const QuantizedMatrix q(1, 3, 64, Codebook::nf4, {0x12, 0x30}, {1.0f});
  EXPECT_EQ(q.code(0), 1);
  EXPECT_EQ(q.code(1), 2);
  EXPECT_EQ(q.code(2), 3);
  const float* t = loftq::table_of(Codebook::nf4).values;
  EXPECT_EQ(q.dequantize(), (Eigen::MatrixXf(1, 3) << t[1], t[2], t[3]).finished());
}

TEST(QuantizedMatrix, TwoBitCodesPackFourPerByteFirstElementInTheHighestBits) {
  // Codes 3, 0, 1, 2 | 1: bytes 0b11000110, 0b01000000.
  const QuantizedMatrix q(5, 1, 2, Codebook::nf2, {0xC6, 0x40}, {2.0f, 4.0f, 8.0f});
  const std::uint8_t want[5] = {3, 0, 1, 2, 1};
  for (std::size_t k = 0; k < 5; ++k) EXPECT_EQ(q.code(k), want[k]) << k;
  const Eigen::MatrixXf d = q.dequantize();
  EXPECT_EQ(d(0, 0), 2.0f);   // 1 * 2
  EXPECT_EQ(d(1, 0), -2.0f);  // -1 * 2
  EXPECT_EQ(d(3, 0), loftq::table_of(Codebook::nf2).values[2] * 4.0f);
  EXPECT_EQ(d(4, 0), 0.0f);
}

TEST(QuantizedMatrix, QuantizePacksCodesAsTheLayoutSays) {
  const Eigen::MatrixXf w = loftq_test::gaussian(9, 7, 1.0f, 11);
  for (Codebook c : {Codebook::nf2, Codebook::nf4, Codebook::fp4, Codebook::int8, Codebook::uniform8}) {
    const auto q = loftq::quantize(w, c, 16);
    const int bits = loftq::bits_of(c);
    std::vector<std::uint8_t> packed((q.size() * static_cast<std::size_t>(bits) + 7) / 8, 0);
    for (std::size_t k = 0; k < q.size(); ++k) {
      const std::size_t per = static_cast<std::size_t>(8 / bits);
      packed[k / per] = static_cast<std::uint8_t>(packed[k / per] | (q.code(k) << (8 - bits * static_cast<int>(k % per + 1))));
    }
    EXPECT_EQ(q.codes(), packed) << loftq::name_of(c);
  }
}

TEST(QuantizedMatrix, MemoryIsPackedCodesPlusFourBytesPerBlockPlusAConstant) {
  for (Codebook c : {Codebook::nf2, Codebook::nf4, Codebook::int8}) {
    const auto q = loftq::quantize(loftq_test::gaussian(33, 35, 1.0f, 12), c, 64);  // 1155 elements
    const std::size_t want_codes = (1155 * static_cast<std::size_t>(loftq::bits_of(c)) + 7) / 8;
    EXPECT_EQ(q.codes().size(), want_codes);
    EXPECT_EQ(q.blocks(), 19u);
    EXPECT_EQ(q.memory_bytes(), want_codes + 4 * 19 + sizeof(QuantizedMatrix));
  }
}

TEST(QuantizedMatrix, RebuiltFromItsArraysItIsTheSame) {
  const auto q = loftq::quantize<loftq::FP4>(loftq_test::gaussian(10, 30, 0.5f, 13), 32);
  const QuantizedMatrix r(q.rows(), q.cols(), q.block_size(), q.codebook(), q.codes(), q.scales());
  EXPECT_EQ(r.dequantize(), q.dequantize());
  EXPECT_EQ(r.bits(), 4);
  EXPECT_EQ(r.codebook(), Codebook::fp4);
}

TEST(QuantizedMatrix, DequantizeToAPointerWritesRowMajor) {
  const auto q = loftq::quantize<loftq::Int8>(loftq_test::gaussian(4, 6, 1.0f, 14), 5);
  std::vector<float> out(24);
  q.dequantize(out.data());
  const Eigen::MatrixXf d = q.dequantize();
  for (Eigen::Index i = 0; i < 4; ++i) {
    for (Eigen::Index j = 0; j < 6; ++j) EXPECT_EQ(out[static_cast<std::size_t>(i * 6 + j)], d(i, j));
  }
}

TEST(QuantizedMatrix, DefaultIsEmpty) {
  const QuantizedMatrix q;
  EXPECT_EQ(q.size(), 0u);
  EXPECT_EQ(q.blocks(), 0u);
  EXPECT_EQ(q.dequantize().size(), 0);
}

TEST(QuantizedMatrix, InconsistentArraysThrowNamingTheArgument) {
  using loftq_test::invalid_argument_message;
  EXPECT_NE(invalid_argument_message([] { QuantizedMatrix(2, 3, 64, Codebook::nf4, {0, 0}, {1.0f}); })
                .find("codes.size() = 2"),
            std::string::npos);
  EXPECT_NE(invalid_argument_message([] { QuantizedMatrix(2, 3, 4, Codebook::nf4, {0, 0, 0}, {1.0f}); })
                .find("scales.size() = 1"),
            std::string::npos);
  // A negative scale is accepted (bitsandbytes restores some so); with double quantization not.
  EXPECT_EQ(invalid_argument_message([] { QuantizedMatrix(2, 3, 64, Codebook::nf4, {0, 0, 0}, {-1.0f}); }), "");
  EXPECT_NE(invalid_argument_message([] {
              QuantizedMatrix(2, 3, 64, Codebook::nf4, {0, 0, 0}, {-1.0f}, loftq::LoadPath{loftq::FloatType::float32, true});
            }).find("absmax[0] = -1"),
            std::string::npos);
  EXPECT_NE(invalid_argument_message([] {
              QuantizedMatrix(2, 3, 64, Codebook::nf4, {0, 0, 0}, {std::numeric_limits<float>::infinity()});
            }).find("scales[0] = inf"),
            std::string::npos);
  EXPECT_NE(invalid_argument_message([] { QuantizedMatrix(0, 3, 64, Codebook::nf4, {}, {}); }).find("(0 x 3)"),
            std::string::npos);
  EXPECT_NE(invalid_argument_message([] { QuantizedMatrix(1, 3, 0, Codebook::nf4, {0, 0}, {}); }).find("block_size = 0"),
            std::string::npos);
}

}  // namespace
