// The bitsandbytes 4-bit layout: names, dtypes and shapes, packing, quant-state text, the dynamic
// map, double quantization, round trips, and malformed input.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <loftq/blockwise.hpp>
#include <loftq/io/bnb.hpp>
#include <random>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "io_helpers.hpp"

namespace {

using loftq::Codebook;
using loftq::QuantizedMatrix;
using loftq::io::BnbOptions;
using loftq::io::Dtype;
using loftq::io::FormatError;
using loftq::io::TensorData;
using loftq_test::argument_error_message;

const std::string kName = "model.layers.0.self_attn.q_proj.weight";

std::uint32_t bits_of(float x) {
  std::uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
}

Eigen::MatrixXf gaussian(Eigen::Index rows, Eigen::Index cols, unsigned seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  Eigen::MatrixXf m(rows, cols);
  for (Eigen::Index j = 0; j < cols; ++j) {
    for (Eigen::Index i = 0; i < rows; ++i) m(i, j) = normal(gen);
  }
  return m;
}

/// A quantized Gaussian matrix whose load path dequantizes to bfloat16 (what bnb_tensors(name, q)
/// then writes as the quant state's dtype).
QuantizedMatrix quantized(Eigen::Index rows, Eigen::Index cols, Codebook codebook = Codebook::nf4,
                          int block = 64, unsigned seed = 1) {
  return loftq::quantize(gaussian(rows, cols, seed), codebook, block,
                         loftq::LoadPath{loftq::FloatType::float32, false, loftq::FloatType::bfloat16});
}

TensorData* find(std::vector<TensorData>& tensors, const std::string& name) {
  for (TensorData& t : tensors) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

const TensorData& at(const std::vector<TensorData>& tensors, const std::string& name) {
  for (const TensorData& t : tensors) {
    if (t.name == name) return t;
  }
  throw std::runtime_error("no tensor " + name);
}

std::vector<float> floats_of(const TensorData& t) {
  std::vector<float> values(t.bytes.size() / 4);
  std::memcpy(values.data(), t.bytes.data(), t.bytes.size());
  return values;
}

std::string text_of(const TensorData& t) { return std::string(t.bytes.begin(), t.bytes.end()); }

std::uint64_t byte_size(const TensorData& t) {
  std::uint64_t n = loftq::io::dtype_size(t.dtype);
  for (std::uint64_t d : t.shape) n *= d;
  return n;
}

std::string state_name(const std::string& quant_type = "nf4") {
  return kName + ".quant_state.bitsandbytes__" + quant_type;
}

/// Replaces the quant state's text, keeping its shape consistent.
void set_state(std::vector<TensorData>& tensors, const std::string& text,
               const std::string& quant_type = "nf4") {
  TensorData* t = find(tensors, state_name(quant_type));
  ASSERT_NE(t, nullptr);
  t->bytes.assign(text.begin(), text.end());
  t->shape = {text.size()};
}

/// "%.9e" of x, the reference for the writer's fixed-width nested_offset.
std::string offset_text(float x) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.9e", static_cast<double>(x));
  return buffer;
}

/// Runs read_bnb and reports what it threw: "" on success, "FormatError: ..." or "other: ...".
std::string read_outcome(const std::vector<TensorData>& tensors) {
  try {
    loftq::io::read_bnb(kName, tensors);
  } catch (const FormatError& e) {
    return std::string("FormatError: ") + e.what();
  } catch (const std::exception& e) {
    return std::string("other: ") + e.what();
  }
  return "";
}

void expect_format_error(const std::vector<TensorData>& tensors, const std::string& needle = "") {
  const std::string outcome = read_outcome(tensors);
  EXPECT_EQ(outcome.rfind("FormatError: ", 0), 0u) << outcome;
  EXPECT_NE(outcome.find(needle), std::string::npos) << outcome;
}

// ---- the dynamic map ----

TEST(BnbDynamicMap, Shape) {
  const auto& map = loftq::dynamic_map();
  ASSERT_EQ(map.size(), 256u);
  for (std::size_t k = 0; k + 1 < map.size(); ++k) EXPECT_LT(map[k], map[k + 1]) << k;
  EXPECT_EQ(bits_of(map[127]), 0u);  // +0, once
  EXPECT_EQ(map[255], 1.0f);
  EXPECT_GT(map[0], -1.0f);  // 1 has no negative twin
  for (std::size_t k = 0; k < 255; ++k) EXPECT_EQ(map[k], -map[254 - k]) << k;
}

TEST(BnbDynamicMap, GoldenValues) {
  const auto& map = loftq::dynamic_map();
  // Decade i = 0: linspace(0.1, 1, 2) = {0.1f, 1}; (0.1f + 1) / 2 = 0x1.19999ap-1 (the sum
  // 1.10000000149 rounds up); times float32(1e-6) = 0x1.0c6f7ap-20.
  EXPECT_EQ(map[128], 0x1.27476ep-21f);
  EXPECT_EQ(map[128], 1e-6f * ((0.1f + 1.0f) / 2.0f));
  // Decade 1: step = float32(1 - 0.1f) / 2 = 0x1.ccccccp-2; b = {0.1f, 1 - step, 1};
  // the lower mean is (0.1f + 0x1.19999ap-1) / 2, times 1e-5f.
  EXPECT_EQ(map[129], 0x1.b43528p-19f);
  // Decade 6 (scale 1, 65 bounds, step 0x1.ccccccp-7): first mean (0.1f + fma(step, 1, 0.1f)) / 2,
  // last mean (1 - step + 1) / 2 = 0.99296874.
  EXPECT_EQ(map[191], 0x1.b66668p-4f);
  EXPECT_EQ(map[254], 0x1.fc6666p-1f);
  EXPECT_EQ(map[0], -0x1.fc6666p-1f);
  EXPECT_EQ(map[253], 0x1.f53334p-1f);
  // The 6th mean of decade 6 uses b[6] = fma(step, 6, 0.1f) = 0x1.79999ap-3; without FMA it
  // would be 0x1.799998p-3 and this entry 0x1.6b3332p-3.
  EXPECT_EQ(map[196], 0x1.6b3334p-3f);
}

TEST(BnbDynamicMap, CodesAreNearestWithEvenTies) {
  const auto& map = loftq::dynamic_map();
  for (int k = 0; k < 256; ++k)
    EXPECT_EQ(loftq::dynamic_code(map[static_cast<std::size_t>(k)]), k);
  for (std::size_t k = 0; k + 1 < 256; ++k) {
    const float mid = (map[k] + map[k + 1]) * 0.5f;
    const auto even = static_cast<int>(k % 2 == 0 ? k : k + 1);
    EXPECT_EQ(loftq::dynamic_code(mid), even) << k;
    EXPECT_EQ(loftq::dynamic_code(std::nextafter(mid, 2.0f)), static_cast<int>(k + 1)) << k;
    EXPECT_EQ(loftq::dynamic_code(std::nextafter(mid, -2.0f)), static_cast<int>(k)) << k;
  }
  EXPECT_EQ(loftq::dynamic_code(0.0f), 127);
  EXPECT_EQ(loftq::dynamic_code(-0.0f), 127);
  EXPECT_EQ(loftq::dynamic_code(-1.0f), 0);
  EXPECT_EQ(loftq::dynamic_code(1.0f), 255);
  EXPECT_EQ(loftq::dynamic_code(1.0000001f), 255);
  EXPECT_EQ(loftq::dynamic_code(std::nanf("")), 0);
}

// ---- double quantization ----

TEST(BnbDoubleQuant, Golden) {
  // offset 2; x = -1, 0, 1; absmax2 1; -1 lies below the map's lowest value.
  const auto q = loftq::double_quantize({1.0f, 2.0f, 3.0f});
  EXPECT_EQ(q.offset, 2.0f);
  EXPECT_EQ(q.codes, (std::vector<std::uint8_t>{0, 127, 255}));
  EXPECT_EQ(q.absmax, (std::vector<float>{1.0f}));

  // Equal absmax: absmax2 = 0 and code 0, as bitsandbytes' kernel gives it.
  const auto flat = loftq::double_quantize({5.0f, 5.0f, 5.0f});
  EXPECT_EQ(flat.offset, 5.0f);
  EXPECT_EQ(flat.codes, (std::vector<std::uint8_t>{0, 0, 0}));
  EXPECT_EQ(flat.absmax, (std::vector<float>{0.0f}));

  // The mean is summed in double and rounded once: 7 / 3.
  EXPECT_EQ(loftq::double_quantize({1.0f, 2.0f, 4.0f}).offset,
            static_cast<float>(7.0 / 3.0));
}

TEST(BnbDoubleQuant, BlocksOf256) {
  std::vector<float> absmax(300);
  for (std::size_t b = 0; b < absmax.size(); ++b) absmax[b] = 0.01f * static_cast<float>(b % 17);
  const auto q = loftq::double_quantize(absmax);
  ASSERT_EQ(q.absmax.size(), 2u);
  ASSERT_EQ(q.codes.size(), 300u);
  for (std::size_t k = 0; k < 2; ++k) {
    float expected = 0.0f;
    for (std::size_t b = 256 * k; b < std::min<std::size_t>(300, 256 * (k + 1)); ++b) {
      expected = std::max(expected, std::fabs(absmax[b] - q.offset));
    }
    EXPECT_EQ(q.absmax[k], expected);
  }
}

TEST(BnbDoubleQuant, RejectsBadAbsmax) {
  const auto invalid_argument_message = [](auto&& f) -> std::string {
    try {
      f();
    } catch (const std::invalid_argument& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_NE(invalid_argument_message([] { loftq::double_quantize({}); }).find("empty"),
            std::string::npos);
  EXPECT_NE(invalid_argument_message([] {
              loftq::double_quantize({1.0f, -1.0f});
            }).find("absmax[1]"),
            std::string::npos);
  EXPECT_NE(invalid_argument_message([] {
              loftq::double_quantize({std::nanf("")});
            }).find("absmax[0]"),
            std::string::npos);
}

// ---- layout ----

struct LayoutCase {
  Eigen::Index rows, cols;
  int block;
  bool double_quant;
  std::vector<std::string> names;
  std::vector<Dtype> dtypes;
  std::vector<std::vector<std::uint64_t>> shapes;  // the quant state's shape is checked apart
};

void check_layout(const LayoutCase& c) {
  BnbOptions options;
  options.double_quant = c.double_quant;
  const auto layout =
      loftq::io::bnb_tensor_layout(kName, c.rows, c.cols, Codebook::nf4, c.block, options);
  const auto q = quantized(c.rows, c.cols, Codebook::nf4, c.block);
  const auto tensors = loftq::io::bnb_tensors(kName, q, options);
  ASSERT_EQ(layout.size(), c.names.size() + 1);
  ASSERT_EQ(tensors.size(), layout.size());
  for (std::size_t i = 0; i < layout.size(); ++i) {
    EXPECT_TRUE(layout[i].bytes.empty());
    EXPECT_EQ(tensors[i].name, layout[i].name);
    EXPECT_EQ(tensors[i].dtype, layout[i].dtype);
    EXPECT_EQ(tensors[i].shape, layout[i].shape);
    EXPECT_EQ(tensors[i].bytes.size(), byte_size(layout[i])) << layout[i].name;
    if (i < c.names.size()) {
      EXPECT_EQ(layout[i].name, c.names[i]);
      EXPECT_EQ(layout[i].dtype, c.dtypes[i]) << c.names[i];
      EXPECT_EQ(layout[i].shape, c.shapes[i]) << c.names[i];
    }
  }
  const TensorData& state = layout.back();
  EXPECT_EQ(state.name, state_name());
  EXPECT_EQ(state.dtype, Dtype::u8);
  ASSERT_EQ(state.shape.size(), 1u);
}

TEST(BnbLayout, OddCount5x7) {
  check_layout({5,
                7,
                64,
                false,
                {kName, kName + ".absmax", kName + ".quant_map"},
                {Dtype::u8, Dtype::f32, Dtype::f32},
                {{18, 1}, {1}, {16}}});
  check_layout({5,
                7,
                32,
                true,
                {kName, kName + ".absmax", kName + ".quant_map", kName + ".nested_absmax",
                 kName + ".nested_quant_map"},
                {Dtype::u8, Dtype::u8, Dtype::f32, Dtype::f32, Dtype::f32},
                {{18, 1}, {2}, {16}, {1}, {256}}});
}

TEST(BnbLayout, Matrix64x128) {
  check_layout({64,
                128,
                64,
                false,
                {kName, kName + ".absmax", kName + ".quant_map"},
                {Dtype::u8, Dtype::f32, Dtype::f32},
                {{4096, 1}, {128}, {16}}});
  check_layout({64,
                128,
                64,
                true,
                {kName, kName + ".absmax", kName + ".quant_map", kName + ".nested_absmax",
                 kName + ".nested_quant_map"},
                {Dtype::u8, Dtype::u8, Dtype::f32, Dtype::f32, Dtype::f32},
                {{4096, 1}, {128}, {16}, {1}, {256}}});
  // 512 blocks: two nested blocks of 256.
  check_layout({64,
                512,
                64,
                true,
                {kName, kName + ".absmax", kName + ".quant_map", kName + ".nested_absmax",
                 kName + ".nested_quant_map"},
                {Dtype::u8, Dtype::u8, Dtype::f32, Dtype::f32, Dtype::f32},
                {{16384, 1}, {512}, {16}, {2}, {256}}});
}

TEST(BnbLayout, SizesDoNotDependOnTheData) {
  BnbOptions options;
  options.double_quant = true;
  const auto layout = loftq::io::bnb_tensor_layout(kName, 48, 96, Codebook::fp4, 128, options);
  for (unsigned seed : {1u, 2u, 3u}) {
    Eigen::MatrixXf w =
        gaussian(48, 96, seed) * static_cast<float>(std::pow(10.0, 3.0 * seed - 6.0));
    const auto tensors =
        loftq::io::bnb_tensors(kName, loftq::quantize(w, Codebook::fp4, 128), options);
    ASSERT_EQ(tensors.size(), layout.size());
    for (std::size_t i = 0; i < layout.size(); ++i) {
      EXPECT_EQ(tensors[i].name, layout[i].name);
      EXPECT_EQ(tensors[i].shape, layout[i].shape);
      EXPECT_EQ(tensors[i].bytes.size(), byte_size(layout[i]));
    }
  }
}

TEST(BnbLayout, WeightBytesArePackedCodes) {
  const auto q = quantized(5, 7);
  const auto tensors = loftq::io::bnb_tensors(kName, q);
  const TensorData& weight = at(tensors, kName);
  std::vector<std::uint8_t> packed(18, 0);
  for (std::size_t k = 0; k < 35; ++k) {
    packed[k / 2] = static_cast<std::uint8_t>(packed[k / 2] | (q.code(k) << (k % 2 == 0 ? 4 : 0)));
  }
  packed.back() |= 7;  // the pad nibble: bitsandbytes pads with 0.0, NF4 code 7
  EXPECT_EQ(weight.bytes, packed);
  EXPECT_EQ(loftq::io::bnb_pad_code(Codebook::nf4), 7);
  EXPECT_EQ(loftq::table_of(Codebook::fp4).values[loftq::io::bnb_pad_code(Codebook::fp4)], 0.0f);
  EXPECT_EQ(loftq::io::read_bnb(kName, tensors).codes(), q.codes());  // read back with the pad cleared
}

TEST(BnbLayout, QuantMapIsTheCodebook) {
  for (Codebook c : {Codebook::nf4, Codebook::fp4}) {
    const auto map =
        floats_of(at(loftq::io::bnb_tensors(kName, quantized(4, 16, c)), kName + ".quant_map"));
    const auto table = loftq::table_of(c);
    ASSERT_EQ(map.size(), 16u);
    for (std::size_t k = 0; k < 16; ++k) {
      if (c == Codebook::fp4 && k == 8) {
        EXPECT_EQ(bits_of(table.values[k]), 0x80000000u);
        EXPECT_EQ(bits_of(map[k]), 0u);  // bitsandbytes builds FP4 from the Python int -0
      } else {
        EXPECT_EQ(bits_of(map[k]), bits_of(table.values[k])) << k;
      }
    }
  }
}

TEST(BnbLayout, QuantStateText) {
  const auto plain = loftq::io::bnb_tensors(kName, quantized(5, 7));
  EXPECT_EQ(text_of(at(plain, state_name())),
            R"({"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": [5, 7]})");
  EXPECT_EQ(at(plain, state_name()).shape, (std::vector<std::uint64_t>{76}));

  BnbOptions options;
  options.double_quant = true;
  options.dtype = "float16";
  const auto q = quantized(5, 7, Codebook::fp4, 64);
  const auto nested = loftq::io::bnb_tensors(kName, q, options);
  const float offset = loftq::double_quantize(q.scales()).offset;
  ASSERT_EQ(offset_text(offset).size(), 15u);
  EXPECT_EQ(text_of(at(nested, state_name("fp4"))),
            R"({"quant_type": "fp4", "blocksize": 64, "dtype": "float16", "shape": [5, 7], )"
            R"("nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": )" +
                offset_text(offset) + "}");
  EXPECT_EQ(text_of(at(nested, kName + ".nested_quant_map")).size(), 1024u);
  EXPECT_EQ(
      floats_of(at(nested, kName + ".nested_quant_map")),
      std::vector<float>(loftq::dynamic_map().begin(), loftq::dynamic_map().end()));

  options.dtype = "float32";
  const std::string wide =
      text_of(at(loftq::io::bnb_tensors(kName, quantized(3, 1000, Codebook::nf4, 4096), options),
                 state_name()));
  EXPECT_EQ(
      wide.rfind(
          R"({"quant_type": "nf4", "blocksize": 4096, "dtype": "float32", "shape": [3, 1000], )"
          R"("nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": )",
          0),
      0u)
      << wide;
}

TEST(BnbLayout, OffsetTextIsFixedWidthAndExact) {
  std::mt19937 gen(7);
  std::uniform_int_distribution<std::uint32_t> any(0, 0x7F7FFFFFu);  // finite floats >= 0
  for (int i = 0; i < 2000; ++i) {
    std::uint32_t u = any(gen);
    float x;
    std::memcpy(&x, &u, sizeof x);
    const std::string text = offset_text(x);
    EXPECT_EQ(text.size(), 15u) << text;
    EXPECT_EQ(static_cast<float>(std::strtod(text.c_str(), nullptr)), x) << text;
  }
}

// ---- round trips ----

TEST(BnbRoundTrip, ExactWithoutDoubleQuant) {
  for (Codebook c : {Codebook::nf4, Codebook::fp4}) {
    for (int block : {32, 64, 256, 4096}) {
      const std::vector<std::pair<Eigen::Index, Eigen::Index>> shapes = {
          {5, 7}, {64, 128}, {33, 65}};
      for (const auto& [rows, cols] : shapes) {
        const auto q = quantized(rows, cols, c, block, static_cast<unsigned>(rows + block));
        const QuantizedMatrix r = loftq::io::read_bnb(kName, loftq::io::bnb_tensors(kName, q));
        EXPECT_EQ(r.rows(), rows);
        EXPECT_EQ(r.cols(), cols);
        EXPECT_EQ(r.block_size(), block);
        EXPECT_EQ(r.codebook(), c);
        EXPECT_EQ(r.codes(), q.codes());
        ASSERT_EQ(r.scales().size(), q.scales().size());
        for (std::size_t b = 0; b < q.scales().size(); ++b)
          EXPECT_EQ(bits_of(r.scales()[b]), bits_of(q.scales()[b]));
      }
    }
  }
}

TEST(BnbRoundTrip, DoubleQuantWithinTheDynamicMapError) {
  // The largest error of a normalized value: half the widest gap of the map (top decade,
  // 0.9 / 64 / 2 = 0.00703125), or the gap from -1 to the lowest value, the same.
  const auto& map = loftq::dynamic_map();
  float half_gap = 1.0f + map[0];
  for (std::size_t k = 0; k + 1 < 256; ++k)
    half_gap = std::max(half_gap, (map[k + 1] - map[k]) / 2.0f);
  EXPECT_NEAR(half_gap, 0.00703125f, 1e-7f);

  BnbOptions options;
  options.double_quant = true;
  const std::vector<std::tuple<Eigen::Index, Eigen::Index, int>> cases = {
      {5, 7, 64}, {64, 512, 64}, {96, 700, 32}, {64, 128, 256}};
  for (const auto& [rows, cols, block] : cases) {
    const auto q = quantized(rows, cols, Codebook::nf4, block, static_cast<unsigned>(cols));
    const auto tensors = loftq::io::bnb_tensors(kName, q, options);
    const QuantizedMatrix r = loftq::io::read_bnb(kName, tensors);
    EXPECT_EQ(r.codes(), q.codes());
    const auto dq = loftq::double_quantize(q.scales());
    EXPECT_EQ(at(tensors, kName + ".absmax").bytes, dq.codes);
    EXPECT_EQ(floats_of(at(tensors, kName + ".nested_absmax")), dq.absmax);
    ASSERT_EQ(r.scales().size(), q.scales().size());
    for (std::size_t b = 0; b < q.scales().size(); ++b) {
      // Restored as bitsandbytes restores it: two float32 roundings.
      volatile float product = map[dq.codes[b]] * dq.absmax[b / 256];
      const float expected = std::max(product + dq.offset, 0.0f);
      EXPECT_EQ(bits_of(r.scales()[b]), bits_of(expected)) << b;
      const float bound = 0.00704f * dq.absmax[b / 256] + 1e-6f * (dq.offset + q.scales()[b]);
      EXPECT_LE(std::fabs(r.scales()[b] - q.scales()[b]), bound) << b;
    }
  }
}

TEST(BnbRoundTrip, ZeroBlockWithDoubleQuantStaysNonNegative) {
  Eigen::MatrixXf w = gaussian(8, 64, 5);
  w.row(0).setZero();  // block 0 (the first 64 elements) is zero
  BnbOptions options;
  options.double_quant = true;
  const auto q = loftq::quantize(w, Codebook::nf4, 64);
  ASSERT_EQ(q.scales()[0], 0.0f);
  const QuantizedMatrix r = loftq::io::read_bnb(kName, loftq::io::bnb_tensors(kName, q, options));
  const auto dq = loftq::double_quantize(q.scales());
  for (float s : r.scales()) EXPECT_GE(s, 0.0f);
  EXPECT_LE(r.scales()[0], 0.00704f * dq.absmax[0]);
}

TEST(BnbRoundTrip, EqualAbsmaxRestoreExactly) {
  // Every block has absmax 0.5: absmax2 = 0, code 0, restored map[0] * 0 + 0.5 = 0.5.
  const std::size_t n = 6 * 64;
  std::vector<std::uint8_t> codes(n / 2, 0x3C);
  const QuantizedMatrix q(6, 64, 64, Codebook::nf4, codes, std::vector<float>(6, 0.5f));
  BnbOptions options;
  options.double_quant = true;
  const QuantizedMatrix r = loftq::io::read_bnb(kName, loftq::io::bnb_tensors(kName, q, options));
  EXPECT_EQ(r.scales(), q.scales());
  EXPECT_EQ(r.codes(), q.codes());
}

TEST(BnbRoundTrip, AcceptsAnyBitsandbytesNestedBlockAndPadNibble) {
  BnbOptions options;
  options.double_quant = true;
  const auto q = quantized(5, 7, Codebook::nf4, 32);
  auto tensors = loftq::io::bnb_tensors(kName, q, options);
  const QuantizedMatrix expected = loftq::io::read_bnb(kName, tensors);
  // Two blocks fit one nested block of 64 as well as of 256.
  std::string text = text_of(at(tensors, state_name()));
  text.replace(text.find("256"), 3, "64");
  set_state(tensors, text);
  // bitsandbytes' kernel pads an odd count with the code of 0.0 (7 for NF4).
  find(tensors, kName)->bytes.back() |= 0x07;
  const QuantizedMatrix r = loftq::io::read_bnb(kName, tensors);
  EXPECT_EQ(r.codes(), q.codes());
  EXPECT_EQ(r.scales(), expected.scales());
}

// ---- errors ----

TEST(BnbErrors, WrongCodebookBlockSizeDtypeOrName) {
  const auto message = [](const QuantizedMatrix& q, BnbOptions options = {},
                          std::string name = kName) {
    return argument_error_message([&] { loftq::io::bnb_tensors(name, q, options); });
  };
  EXPECT_NE(message(quantized(4, 16, Codebook::int8)).find("int8"), std::string::npos);
  EXPECT_NE(message(quantized(4, 16, Codebook::nf2)).find("nf2"), std::string::npos);
  EXPECT_NE(message(quantized(4, 16, Codebook::uniform4)).find("uniform4"), std::string::npos);
  EXPECT_NE(message(quantized(4, 16, Codebook::nf4, 48)).find("block_size = 48"),
            std::string::npos);
  EXPECT_NE(message(quantized(4, 16, Codebook::nf4, 16)).find("block_size = 16"),
            std::string::npos);
  EXPECT_NE(message(quantized(4, 16, Codebook::nf4, 8192)).find("block_size = 8192"),
            std::string::npos);
  BnbOptions wide;
  wide.dtype = "float64";
  EXPECT_NE(message(quantized(4, 16), wide).find("float64"), std::string::npos);
  EXPECT_NE(message(quantized(4, 16), {}, "").find("weight_name"), std::string::npos);
  EXPECT_NE(message(QuantizedMatrix()).find("empty"), std::string::npos);
  EXPECT_NE(argument_error_message([] {
              loftq::io::bnb_tensor_layout(kName, 4, 16, Codebook::nf4, 0);
            }).find("block_size = 0"),
            std::string::npos);
  EXPECT_NE(argument_error_message([] {
              loftq::io::read_bnb("", std::vector<TensorData>{});
            }).find("weight_name"),
            std::string::npos);
}

TEST(BnbErrors, MissingTensor) {
  for (bool double_quant : {false, true}) {
    BnbOptions options;
    options.double_quant = double_quant;
    const auto tensors = loftq::io::bnb_tensors(kName, quantized(5, 7), options);
    for (std::size_t i = 0; i < tensors.size(); ++i) {
      auto missing = tensors;
      missing.erase(missing.begin() + static_cast<std::ptrdiff_t>(i));
      expect_format_error(missing, "missing tensor \"" + tensors[i].name + "\"");
    }
  }
}

TEST(BnbErrors, TruncatedOrMismatchedQuantState) {
  const auto tensors = loftq::io::bnb_tensors(kName, quantized(5, 7));
  const std::string text = text_of(at(tensors, state_name()));
  for (std::size_t length = 0; length < text.size(); ++length) {
    auto cut = tensors;
    set_state(cut, text.substr(0, length));
    expect_format_error(cut, "quant state");
  }
  auto short_bytes = tensors;
  find(short_bytes, state_name())->bytes.pop_back();
  expect_format_error(short_bytes, "holds 75 bytes");
  auto wide = tensors;
  find(wide, state_name())->shape = {76, 1};
  expect_format_error(wide, "shape [76, 1]");
}

TEST(BnbErrors, WrongQuantType) {
  auto tensors = loftq::io::bnb_tensors(kName, quantized(5, 7));
  auto renamed = tensors;
  find(renamed, state_name())->name = state_name("fp4");
  expect_format_error(renamed, "quant_type \"nf4\"");
  auto both = tensors;
  both.push_back(at(tensors, state_name()));
  both.back().name = state_name("fp4");
  expect_format_error(both, "both nf4 and fp4");
  set_state(tensors,
            R"({"quant_type": "int4", "blocksize": 64, "dtype": "bfloat16", "shape": [5, 7]})");
  expect_format_error(tensors, "int4");
}

TEST(BnbErrors, BadQuantStateFields) {
  const auto tensors = loftq::io::bnb_tensors(kName, quantized(5, 7));
  const std::string head = R"({"quant_type": "nf4", )";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"[]", "not a JSON object"},
      {"{}", "no \"quant_type\""},
      {head + R"("blocksize": 64, "dtype": "bfloat16"})", "no \"shape\""},
      {head + R"("blocksize": 64, "dtype": "bfloat16", "shape": [35]})", "shape"},
      {head + R"("blocksize": 64, "dtype": "bfloat16", "shape": [5, 7, 1]})", "shape"},
      {head + R"("blocksize": 64, "dtype": "bfloat16", "shape": [0, 7]})", "non-empty"},
      {head + R"("blocksize": 64, "dtype": "bfloat16", "shape": ["5", 7]})", "shape[0]"},
      {head + R"("blocksize": 64, "dtype": "bfloat16", "shape": [5.0, 7]})", "shape[0]"},
      {head + R"("blocksize": 64, "dtype": "bfloat16", "shape": [-5, 7]})", "shape[0]"},
      {head + R"("blocksize": 64, "dtype": "bfloat16", "shape": [5, 99999999999999999999]})",
       "shape[1]"},
      {head + R"("blocksize": 64, "dtype": "bfloat16", "shape": [4294967296, 4294967296]})",
       "too many"},
      {head + R"("blocksize": 64, "dtype": "bfloat16", "shape": [5, 8]})", "expected [20, 1]"},
      {head + R"("blocksize": 48, "dtype": "bfloat16", "shape": [5, 7]})", "blocksize 48"},
      {head + R"("blocksize": "64", "dtype": "bfloat16", "shape": [5, 7]})", "blocksize"},
      {head + R"("blocksize": 64, "dtype": "float64", "shape": [5, 7]})", "float64"},
      {head + R"("blocksize": 64, "dtype": 16, "shape": [5, 7]})", "dtype"},
      {head + R"("blocksize": 64, "dtype": "bfloat16", "shape": [5, 7], "foo": 1})",
       "unknown key \"foo\""},
      {head + R"("blocksize": 64, "blocksize": 64, "dtype": "bfloat16", "shape": [5, 7]})",
       "duplicate"},
      {head + R"("blocksize": 64, "dtype": "bfloat16", "shape": [5, 7], "nested_blocksize": 256})",
       "some but not all"},
      {head + "\"blocksize\": 64, \"dtype\": \"bfloat16\xff\", \"shape\": [5, 7]}", "UTF-8"},
      // Nested keys for tensors without double quantization: absmax is F32, not U8.
      {head + R"("blocksize": 64, "dtype": "bfloat16", "shape": [5, 7], "nested_blocksize": 256, )"
              R"("nested_dtype": "float32", "nested_offset": 0.5})",
       "dtype F32, expected U8"},
  };
  for (const auto& [text, needle] : cases) {
    auto bad = tensors;
    set_state(bad, text);
    SCOPED_TRACE(text);
    expect_format_error(bad, needle);
  }
}

TEST(BnbErrors, BadNestedFields) {
  BnbOptions options;
  options.double_quant = true;
  const auto tensors = loftq::io::bnb_tensors(kName, quantized(5, 7), options);
  const std::string head =
      R"({"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": [5, 7], "nested_blocksize": )";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {head + R"(256, "nested_dtype": "float16", "nested_offset": 0.5})",
       "nested_dtype \"float16\""},
      {head + R"(32, "nested_dtype": "float32", "nested_offset": 0.5})", "nested_blocksize 32"},
      {head + R"(256, "nested_dtype": "float32", "nested_offset": "0.5"})", "nested_offset"},
      {head + R"(256, "nested_dtype": "float32", "nested_offset": 1e39})", "not a finite float32"},
      {head + R"(256, "nested_dtype": "float32", "nested_offset": 1e999})", "number overflow"},
      // Without nested keys, the U8 absmax does not fit.
      {R"({"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": [5, 7]})",
       "dtype U8, expected F32"},
  };
  for (const auto& [text, needle] : cases) {
    auto bad = tensors;
    set_state(bad, text);
    SCOPED_TRACE(text);
    expect_format_error(bad, needle);
  }
  auto huge = tensors;
  set_state(huge, head + R"(256, "nested_dtype": "float32", "nested_offset": 3e38})");
  find(huge, kName + ".nested_quant_map")->bytes =
      loftq::io::float_tensor("", std::vector<float>(256, 1.0f).data(), {256}, Dtype::f32).bytes;
  find(huge, kName + ".nested_absmax")->bytes =
      loftq::io::float_tensor("", std::vector<float>{3e38f}.data(), {1}, Dtype::f32).bytes;
  expect_format_error(huge, "restored absmax[0]");
}

TEST(BnbErrors, WrongTensorSizesAndValues) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const auto set_float = [](TensorData* t, std::size_t k, float value) {
    std::memcpy(&t->bytes[4 * k], &value, 4);
  };
  const auto plain = loftq::io::bnb_tensors(kName, quantized(5, 7));
  BnbOptions options;
  options.double_quant = true;
  const auto nested = loftq::io::bnb_tensors(kName, quantized(5, 7), options);

  auto t = plain;
  find(t, kName)->bytes.pop_back();
  expect_format_error(t, "holds 17 bytes");
  t = plain;
  find(t, kName)->shape = {18};
  expect_format_error(t, "has shape [18], expected [18, 1]");
  t = plain;
  find(t, kName)->dtype = Dtype::i8;
  expect_format_error(t, "dtype I8, expected U8");
  t = plain;
  find(t, kName + ".absmax")->bytes.push_back(0);
  expect_format_error(t, "holds 5 bytes");
  t = plain;
  find(t, kName + ".absmax")->dtype = Dtype::bf16;
  expect_format_error(t, "dtype BF16");
  t = plain;
  set_float(find(t, kName + ".absmax"), 0, nan);
  expect_format_error(t, "absmax[0]");
  t = plain;
  set_float(find(t, kName + ".absmax"), 0, -1.0f);
  expect_format_error(t, "absmax[0]");
  t = plain;
  set_float(find(t, kName + ".quant_map"), 3, 0.25f);
  expect_format_error(t, "quant_map[3]");
  t = plain;
  t.push_back(at(nested, kName + ".nested_absmax"));
  expect_format_error(t, "nested tensors");

  t = nested;
  set_float(find(t, kName + ".nested_quant_map"), 200, nan);
  expect_format_error(t, "nested_quant_map[200]");
  t = nested;
  set_float(find(t, kName + ".nested_absmax"), 0, -1.0f);
  expect_format_error(t, "nested_absmax[0]");
  t = nested;
  find(t, kName + ".nested_absmax")->shape = {2};
  expect_format_error(t, "shape [2], expected [1]");
  t = nested;
  find(t, kName + ".nested_quant_map")->bytes.resize(16);
  expect_format_error(t, "nested_quant_map");
}

TEST(BnbErrors, MutatedInputNeverEscapesFormatError) {
  BnbOptions options;
  options.double_quant = true;
  const auto q = quantized(9, 40, Codebook::fp4, 32);
  const char alphabet[] = "{}[],:\"0123456789e-. ";
  std::mt19937 gen(11);
  for (bool double_quant : {false, true}) {
    options.double_quant = double_quant;
    const auto tensors = loftq::io::bnb_tensors(kName, q, options);
    for (int trial = 0; trial < 3000; ++trial) {
      auto mutated = tensors;
      TensorData& victim =
          mutated[std::uniform_int_distribution<std::size_t>(0, mutated.size() - 1)(gen)];
      const int edits = std::uniform_int_distribution<int>(1, 3)(gen);
      for (int e = 0; e < edits && !victim.bytes.empty(); ++e) {
        const std::size_t at_byte =
            std::uniform_int_distribution<std::size_t>(0, victim.bytes.size() - 1)(gen);
        switch (std::uniform_int_distribution<int>(0, 3)(gen)) {
          case 0:
            victim.bytes[at_byte] = static_cast<std::uint8_t>(gen());
            break;
          case 1:
            victim.bytes.resize(at_byte);
            break;
          case 2:
            victim.bytes.insert(victim.bytes.begin() + static_cast<std::ptrdiff_t>(at_byte),
                                static_cast<std::uint8_t>(gen()));
            break;
          default:
            victim.bytes[at_byte] =
                static_cast<std::uint8_t>(alphabet[gen() % (sizeof alphabet - 1)]);
            break;
        }
      }
      if (victim.dtype == Dtype::u8 && victim.shape.size() == 1 && gen() % 2 == 0) {
        victim.shape = {
            victim.bytes.size()};  // keep the quant state's shape consistent half the time
      }
      const std::string outcome = read_outcome(mutated);
      EXPECT_TRUE(outcome.empty() || outcome.rfind("FormatError: ", 0) == 0) << outcome;
    }
  }
}

}  // namespace
