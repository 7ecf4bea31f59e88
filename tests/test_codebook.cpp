// Codebooks: exact tables, names, policies, and the midpoint lookup built from them.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <iterator>

#include "test_helpers.hpp"

namespace {

using loftq::Codebook;

/// The little-endian float32 hex strings of `key` in tests/data/codebooks.json, as floats.
std::vector<float> reference_table(const std::string& key) {
  std::ifstream in(loftq_test::data_path("codebooks.json"));
  const std::string json((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::size_t key_at = json.find("\"" + key + "_hex\"");
  if (key_at == std::string::npos) throw std::runtime_error("no " + key + "_hex in codebooks.json");
  const std::size_t open = json.find('[', key_at);
  const std::size_t close = json.find(']', open);
  std::vector<float> values;
  // Each entry is "aabbccdd": 8 hex digits between quotes, least significant byte first.
  for (std::size_t quote = json.find('"', open); quote < close; quote = json.find('"', quote + 10)) {
    std::uint32_t u = 0;
    for (int byte = 3; byte >= 0; --byte) {
      u = (u << 8) | static_cast<std::uint32_t>(std::stoul(json.substr(quote + 1 + 2 * static_cast<std::size_t>(byte), 2), nullptr, 16));
    }
    values.push_back(loftq_test::float_of_bits(u));
  }
  return values;
}

void expect_table_bits(Codebook c, const std::vector<float>& want) {
  const auto table = loftq::table_of(c);
  ASSERT_EQ(static_cast<std::size_t>(table.size), want.size()) << loftq::name_of(c);
  for (int k = 0; k < table.size; ++k) {
    EXPECT_EQ(loftq_test::bits_of_float(table.values[k]), loftq_test::bits_of_float(want[static_cast<std::size_t>(k)]))
        << loftq::name_of(c) << " code " << k;
  }
}

TEST(Codebook, TablesEqualTheReferenceBitForBit) {
  expect_table_bits(Codebook::nf4, reference_table("nf4"));
  expect_table_bits(Codebook::nf2, reference_table("nf2"));
  expect_table_bits(Codebook::fp4, reference_table("fp4"));
}

TEST(Codebook, UniformTablesAreEvenSymmetricAndSpanMinusOneToOne) {
  for (Codebook c : {Codebook::uniform2, Codebook::uniform4, Codebook::uniform8}) {
    const auto t = loftq::table_of(c);
    const int n = t.size;
    ASSERT_EQ(n, 1 << loftq::bits_of(c));
    EXPECT_EQ(t.values[0], -1.0f);
    EXPECT_EQ(t.values[n - 1], 1.0f);
    for (int i = 0; i < n; ++i) {
      EXPECT_EQ(t.values[i], -t.values[n - 1 - i]);
      EXPECT_EQ(t.values[i], static_cast<float>(2 * i - (n - 1)) / static_cast<float>(n - 1));
    }
  }
  EXPECT_EQ(loftq::table_of(Codebook::uniform2).values[1], -1.0f / 3.0f);
}

TEST(Codebook, Int8TableIsTheSignedByte) {
  const auto t = loftq::table_of(Codebook::int8);
  ASSERT_EQ(t.size, 256);
  EXPECT_EQ(t.values[0], 0.0f);
  EXPECT_EQ(t.values[127], 127.0f);
  EXPECT_EQ(t.values[128], -128.0f);
  EXPECT_EQ(t.values[255], -1.0f);
  EXPECT_TRUE(loftq::is_linear(Codebook::int8));
  EXPECT_FALSE(loftq::is_linear(Codebook::nf4));
}

TEST(Codebook, NamesBitsAndPoliciesAgree) {
  static_assert(loftq::is_codebook_v<loftq::NF2> && loftq::is_codebook_v<loftq::NF4> &&
                loftq::is_codebook_v<loftq::FP4> && loftq::is_codebook_v<loftq::Int8> &&
                loftq::is_codebook_v<loftq::Uniform<2>> && loftq::is_codebook_v<loftq::Uniform<4>> &&
                loftq::is_codebook_v<loftq::Uniform<8>>);
  static_assert(!loftq::is_codebook_v<int> && !loftq::is_codebook_v<Eigen::MatrixXf>);
  static_assert(loftq::Uniform<8>::id == Codebook::uniform8 && loftq::Uniform<8>::name == "uniform8");
  static_assert(loftq::NF4::bits == 4 && loftq::NF2::bits == 2 && loftq::Int8::bits == 8);
  for (Codebook c : {Codebook::nf2, Codebook::nf4, Codebook::fp4, Codebook::uniform2, Codebook::uniform4,
                     Codebook::uniform8, Codebook::int8}) {
    EXPECT_EQ(loftq::codebook_from_name(loftq::name_of(c)), c);
    EXPECT_EQ(loftq::table_of(c).size, 1 << loftq::bits_of(c));
  }
  EXPECT_EQ(loftq::codebook_for_bits(2), Codebook::nf2);
  EXPECT_EQ(loftq::codebook_for_bits(4), Codebook::nf4);
  EXPECT_EQ(loftq::codebook_for_bits(8), Codebook::int8);
}

TEST(Codebook, BadNamesAndBitsThrow) {
  EXPECT_NE(loftq_test::invalid_argument_message([] { loftq::codebook_from_name("nf3"); }).find("\"nf3\""),
            std::string::npos);
  EXPECT_NE(loftq_test::invalid_argument_message([] { loftq::codebook_for_bits(3); }).find("bits = 3"),
            std::string::npos);
  EXPECT_NE(loftq_test::invalid_argument_message([] { loftq::table_of(static_cast<Codebook>(99)); }).find("99"),
            std::string::npos);
}

TEST(Codebook, LookupQuantizerSortsStablyAndTakesFloatMidpoints) {
  const auto fp4 = loftq::detail::kernels::make_lookup_quantizer(loftq::table_of(Codebook::fp4));
  ASSERT_EQ(fp4.levels, 16);
  // Sorted: -1 (11), -2/3 (10), -1/2 (13), -1/3 (12), -1/4 (15), -1/6 (14), -1/192 (9), +0 (0), -0 (8), ...
  const std::uint8_t order[16] = {11, 10, 13, 12, 15, 14, 9, 0, 8, 1, 6, 7, 4, 5, 2, 3};
  for (int k = 0; k < 16; ++k) EXPECT_EQ(fp4.codes[static_cast<std::size_t>(k)], order[k]) << k;
  const auto nf4 = loftq::detail::kernels::make_lookup_quantizer(loftq::table_of(Codebook::nf4));
  const float* v = loftq::table_of(Codebook::nf4).values;
  for (int k = 0; k < 15; ++k) {
    EXPECT_EQ(nf4.codes[static_cast<std::size_t>(k)], k);
    EXPECT_EQ(nf4.midpoints[static_cast<std::size_t>(k)], (v[k] + v[k + 1]) / 2.0f);
  }
}

}  // namespace
