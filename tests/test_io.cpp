// JSON, errors, safetensors reader and writer, sharded checkpoints and PEFT adapters.
#include <gtest/gtest.h>

#include <clocale>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <loftq/blockwise.hpp>
#include <loftq/io/bnb.hpp>
#include <loftq/io/checkpoint.hpp>
#include <loftq/io/error.hpp>
#include <loftq/io/json.hpp>
#include <loftq/io/peft.hpp>
#include <loftq/io/safetensors.hpp>
#include <string>
#include <system_error>
#include <vector>

#include "io_helpers.hpp"

namespace {

using loftq::io::ArgumentError;
using loftq::io::Dtype;
using loftq::io::dump_json;
using loftq::io::FileError;
using loftq::io::FormatError;
using loftq::io::Json;
using loftq::io::json_at;
using loftq::io::json_number;
using loftq::io::json_string;
using loftq::io::json_u64;
using loftq::io::parse_json;
using loftq::io::SafetensorsReader;
using loftq_test::file_bytes;
using loftq_test::ScratchDir;
using loftq_test::write_bytes;

TEST(Json, ParsesAndDumps) {
  const Json j = parse_json(R"( {"b": {"d": true, "c": null}, "a": [1, -2.5e3, 0, "x\u00e9\n"]} )");
  EXPECT_EQ(dump_json(j), R"({"a":[1,-2500.0,0,"xé\n"],"b":{"c":null,"d":true}})");  // keys sorted
  EXPECT_EQ(json_u64(j["a"][0], "a[0]"), 1u);
  EXPECT_EQ(json_number(j["a"][1], "a[1]"), -2500.0);
  EXPECT_TRUE(j["b"]["d"].get<bool>());
  EXPECT_EQ(json_string(j["a"][3], "a[3]"), "x\xc3\xa9\n");
  EXPECT_EQ(parse_json(dump_json(j, 2)), j);
  EXPECT_EQ(dump_json(parse_json("[]"), 2), "[]");
  const loftq::io::OrderedJson ordered = {{"b", 1}, {"a", 2}};
  EXPECT_EQ(dump_json(ordered), R"({"b":1,"a":2})");
}

TEST(Json, KeepsSixtyFourBitIntegersExact) {
  const Json j = parse_json("[18446744073709551615, 9007199254740993, -9223372036854775808]");
  EXPECT_EQ(json_u64(j[0], "j[0]"), 18446744073709551615ull);
  EXPECT_EQ(json_u64(j[1], "j[1]"), 9007199254740993ull);
  EXPECT_EQ(j[2].get<std::int64_t>(), std::numeric_limits<std::int64_t>::min());
  EXPECT_EQ(dump_json(j), "[18446744073709551615,9007199254740993,-9223372036854775808]");
  // Beyond 64 bits a number parses (as a double), but no integer is read from it; nor from a
  // negative number, a fraction or an exponent, even one with an integer value.
  for (const char* text : {"18446744073709551616", "-1", "1.5", "1.0", "1e3", "\"1\"", "true", "null", "[1]"}) {
    const Json value = parse_json(text);
    try {
      json_u64(value, "offset");
      ADD_FAILURE() << text;
    } catch (const FormatError& e) {
      EXPECT_EQ(std::string(e.what()).rfind("offset is ", 0), 0u) << e.what();
      EXPECT_NE(std::string(e.what()).find("not an integer in [0, 2^64)"), std::string::npos) << e.what();
    }
  }
}

TEST(Json, RejectsMalformedDocuments) {
  for (const char* bad : {"", " ", "{", "[1,]", "{\"a\" 1}", "{\"a\": 1,}", "01", "1.", "-", "+1", ".5", "tru",
                          "\"abc", "\"\\x\"", "\"\\ud800\"", "\"\\udc00\"", "\"\\ud800\\u0041\"", "\"a\x01\"",
                          "{\"a\": 1, \"a\": 2}", "[{\"a\": {\"b\": 1, \"b\": 1}}]", "[1] 2", "\"\xff\"",
                          "\"\xc0\x80\"", "\"\xed\xa0\x80\"", "\"\xf4\x90\x80\x80\"", "\"\xe2\x82\"", "NaN",
                          "Infinity", "1e400", "-1e400", "[1] // comment", "/* c */ [1]", "\xEF\xBB\xBF[1]",
                          "{1: 2}", "[1\v]", "'a'"}) {
    EXPECT_THROW(parse_json(bad), FormatError) << bad;
  }
  EXPECT_THROW(parse_json(std::string("[1]\0", 4)), FormatError);
  EXPECT_THROW(parse_json(std::string("{}\0{", 4)), FormatError);
  EXPECT_THROW(parse_json(std::string("\"a\0\"", 4)), FormatError);
  EXPECT_EQ(json_string(parse_json("\"a\\u0000\""), "s"), std::string("a\0", 2));
  try {
    parse_json("{\"k\": 1, \"k\": 2}", "doc.json");
    ADD_FAILURE();
  } catch (const FormatError& e) {
    EXPECT_EQ(std::string(e.what()), "doc.json: invalid JSON: duplicate key \"k\"");
  }
  try {
    parse_json("[1, tru]", "doc.json");
    ADD_FAILURE();
  } catch (const FormatError& e) {
    EXPECT_EQ(std::string(e.what()).rfind("doc.json: invalid JSON: at byte ", 0), 0u) << e.what();
  }
  // 64 levels of nesting parse, 65 do not.
  EXPECT_EQ(loftq::io::json_max_depth, 64u);
  for (const char* open : {"[", "{\"k\": "}) {
    const std::string close = open[0] == '[' ? "]" : "}";
    std::string fine;
    for (int i = 0; i < 64; ++i) fine += open;
    fine += "0";
    for (int i = 0; i < 64; ++i) fine += close;
    EXPECT_NO_THROW(parse_json(fine));
    EXPECT_THROW(parse_json(open + fine + close), FormatError);
  }
  // At most json_max_values values: the array counts as one.
  std::string many = "[0";
  for (std::size_t i = 2; i < loftq::io::json_max_values; ++i) many += ",0";
  EXPECT_EQ(parse_json(many + "]").size(), loftq::io::json_max_values - 1);
  EXPECT_THROW(parse_json(many + ",0]"), FormatError);
  EXPECT_THROW(parse_json(many + ",[]]"), FormatError);
}

TEST(Json, WriterRefusesWhatJsonCannotHold) {
  EXPECT_THROW(dump_json(Json{{"a", {1.0, std::nan("")}}}), loftq::io::ArgumentError);
  EXPECT_THROW(dump_json(Json(std::numeric_limits<double>::infinity())), loftq::io::ArgumentError);
  try {
    dump_json(Json{{"a", {{"b", std::nan("")}}}});
    ADD_FAILURE();
  } catch (const loftq::io::ArgumentError& e) {
    EXPECT_NE(std::string(e.what()).find("/a/b"), std::string::npos) << e.what();
  }
  EXPECT_THROW(dump_json(Json("\xff")), loftq::io::ArgumentError);
  EXPECT_THROW(dump_json(loftq::io::OrderedJson{{"\xc0\x80", 1}}), loftq::io::ArgumentError);
}

TEST(Json, EscapesControlCharactersAndQuotes) {
  const Json j(std::string("a\"b\\c\x01"));
  EXPECT_EQ(dump_json(j), "\"a\\\"b\\\\c\\u0001\"");
  EXPECT_EQ(parse_json(dump_json(j)), j);
}

TEST(Json, AccessorsNameTheDocumentAndTheValue) {
  const Json j = parse_json(R"({"n": 1.5, "s": "x", "o": {}})");
  EXPECT_EQ(&json_at(j, "s", "doc"), &j["s"]);
  const auto message = [](auto&& f) {
    try {
      f();
    } catch (const FormatError& e) {
      return std::string(e.what());
    }
    return std::string("no FormatError");
  };
  EXPECT_EQ(message([&] { json_at(j, "m", "doc"); }), "doc has no member \"m\"");
  EXPECT_EQ(message([&] { json_at(j["s"], "m", "doc: s"); }), "doc: s is not a JSON object");
  EXPECT_EQ(message([&] { json_string(j["n"], "doc: n"); }), "doc: n is 1.5, not a string");
  EXPECT_EQ(message([&] { json_number(j["s"], "doc: s"); }), "doc: s is \"x\", not a number");
  EXPECT_EQ(message([&] { json_u64(j["o"], "doc: o"); }), "doc: o is {}, not an integer in [0, 2^64)");
  const Json wide = std::string(100, 'y');
  EXPECT_EQ(message([&] { json_u64(wide, "w"); }), "w is \"" + std::string(36, 'y') + "..., not an integer in [0, 2^64)");
}

/// Sets the C locale for the life of the object, then restores the previous one.
class CLocale {
 public:
  explicit CLocale(const char* name) : previous_(std::setlocale(LC_ALL, nullptr)) {
    ok_ = std::setlocale(LC_ALL, name) != nullptr;
  }
  CLocale(const CLocale&) = delete;
  CLocale& operator=(const CLocale&) = delete;
  ~CLocale() { std::setlocale(LC_ALL, previous_.c_str()); }
  bool ok() const { return ok_; }

 private:
  std::string previous_;
  bool ok_ = false;
};

TEST(Json, ParsesAndWritesTheSameUnderACommaDecimalLocale) {
  ScratchDir dir;
  {
    const CLocale german("de_DE.UTF-8");
    ASSERT_TRUE(german.ok()) << "the locale de_DE.UTF-8 is missing: ctest compiles it into the build "
                                "directory (test locale_de_DE, LOCPATH) from Debian's `locales` package; "
                                "by hand: localedef -i de_DE -f UTF-8 de_DE.UTF-8";
    ASSERT_STREQ(std::localeconv()->decimal_point, ",");
    const Json j = parse_json(R"({"x": 0.5, "y": [1234.25, -2.5e-3, 1E2]})");
    EXPECT_EQ(j["x"].get<double>(), 0.5);
    EXPECT_EQ(j["y"][0].get<double>(), 1234.25);
    EXPECT_EQ(j["y"][1].get<double>(), -2.5e-3);
    EXPECT_EQ(j["y"][2].get<double>(), 100.0);
    EXPECT_EQ(dump_json(j), R"({"x":0.5,"y":[1234.25,-0.0025,100.0]})");

    // A safetensors file with fractional metadata, a PEFT config with a fractional alpha and a
    // bitsandbytes quant state with its nested_offset, written and read back.
    const float w[2] = {0.5f, -1.25f};
    std::vector<loftq::io::TensorSource> tensors;
    tensors.push_back(source_of(loftq::io::float_tensor("w", w, {2}, Dtype::bf16)));
    loftq::io::write_safetensors(dir / "x.safetensors", std::move(tensors), {{"format", "pt"}, {"report", dump_json(j)}});
    const SafetensorsReader r(dir / "x.safetensors");
    EXPECT_EQ(r.read_floats(r.at("w")), (std::vector<float>{0.5f, -1.25f}));
    ASSERT_EQ(r.metadata().size(), 2u);
    EXPECT_EQ(parse_json(r.metadata()[1].second), j);

    loftq::io::AdapterConfig config;
    config.rank = 4;
    config.lora_alpha = 0.75;
    const std::string text = loftq::io::adapter_config_json(config);
    EXPECT_NE(text.find("\"lora_alpha\": 0.75"), std::string::npos) << text;
    EXPECT_EQ(parse_json(text)["lora_alpha"].get<double>(), 0.75);

    const Eigen::MatrixXf m = Eigen::MatrixXf::Random(8, 64) * 0.3f;
    const loftq::QuantizedMatrix q = loftq::quantize(m, loftq::Codebook::nf4, 64);
    loftq::io::BnbOptions options;
    options.double_quant = true;
    const std::vector<loftq::io::TensorData> bnb = loftq::io::bnb_tensors("m", q, options);
    const std::string state(bnb.back().bytes.begin(), bnb.back().bytes.end());
    EXPECT_NE(state.find("\"nested_offset\": "), std::string::npos) << state;
    EXPECT_EQ(state.find(','), state.find(", ")) << state;  // separators only, no decimal comma
    const loftq::QuantizedMatrix back = loftq::io::read_bnb("m", bnb);
    EXPECT_EQ(back.codes(), q.codes());
    const float offset = loftq::double_quantize(q.scales()).offset;
    EXPECT_EQ(static_cast<float>(json_number(parse_json(state)["nested_offset"], "offset")), offset);
  }
  EXPECT_STREQ(std::localeconv()->decimal_point, ".");
}

TEST(HalfFloats, ConvertEveryPatternExactlyAndRoundToNearestEven) {
  for (std::uint32_t h = 0; h < 65536; ++h) {
    const auto bits = static_cast<std::uint16_t>(h);
    const float f = loftq::io::f16_to_float(bits);
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(loftq::io::f16_to_float(loftq::io::float_to_f16(f))));
      continue;
    }
    EXPECT_EQ(loftq::io::float_to_f16(f), bits) << h;
    const float b = loftq::io::bf16_to_float(bits);
    if (!std::isnan(b)) {
      EXPECT_EQ(loftq::io::float_to_bf16(b), bits) << h;
    } else {
      EXPECT_TRUE(std::isnan(loftq::io::bf16_to_float(loftq::io::float_to_bf16(b)))) << h;
    }
  }
#ifdef __FLT16_MAX__
  std::uint32_t state = 12345;
  for (int i = 0; i < 200000; ++i) {
    state = state * 1664525u + 1013904223u;
    float x;
    std::uint32_t pattern = (state & 0x8FFFFFFFu) | 0x30000000u;  // magnitudes around f16's range
    std::memcpy(&x, &pattern, 4);
    const auto expected = static_cast<_Float16>(x);
    std::uint16_t expected_bits;
    std::memcpy(&expected_bits, &expected, 2);
    EXPECT_EQ(loftq::io::float_to_f16(x), expected_bits) << x;
  }
#endif
  // Ties go to even: 1 + 2^-8 is halfway between two bfloat16 values.
  EXPECT_EQ(loftq::io::float_to_bf16(1.0f + 1.0f / 256), 0x3F80);
  EXPECT_EQ(loftq::io::float_to_bf16(1.0f + 3.0f / 256), 0x3F82);
  EXPECT_EQ(loftq::io::float_to_f16(65520.0f), 0x7C00);  // rounds past the largest half
  EXPECT_EQ(loftq::io::float_to_f16(65504.0f), 0x7BFF);
  // Subnormal ties, as PyTorch 1.13 rounds them.
  const auto bf16_of_bits = [](std::uint32_t u) {
    float x;
    std::memcpy(&x, &u, 4);
    return loftq::io::float_to_bf16(x);
  };
  EXPECT_EQ(bf16_of_bits(0x00008000u), 0x0000);
  EXPECT_EQ(bf16_of_bits(0x00018000u), 0x0002);
  EXPECT_EQ(bf16_of_bits(0x80018001u), 0x8002);
  EXPECT_EQ(loftq::io::float_to_f16(std::ldexp(1.0f, -25)), 0x0000);      // half the least subnormal
  EXPECT_EQ(loftq::io::float_to_f16(std::ldexp(3.0f, -25)), 0x0002);      // 1.5 least subnormals
  EXPECT_EQ(loftq::io::float_to_f16(std::ldexp(1.0f, -24)), 0x0001);
  // NaN stays NaN (a quiet one, with its sign); infinity stays infinity.
  EXPECT_EQ(loftq::io::float_to_f16(-std::numeric_limits<float>::quiet_NaN()), 0xFE00);
  EXPECT_EQ(bf16_of_bits(0x7F810001u), 0x7FC0);
  EXPECT_EQ(bf16_of_bits(0xFFC00000u), 0xFFC0);
  EXPECT_EQ(loftq::io::float_to_bf16(-std::numeric_limits<float>::infinity()), 0xFF80);
  EXPECT_EQ(loftq::io::float_to_f16(std::numeric_limits<float>::infinity()), 0x7C00);
}

/// A file holding three tensors of different dtypes.
void write_sample(const std::filesystem::path& path) {
  std::vector<float> w(12);
  for (int i = 0; i < 12; ++i) w[static_cast<std::size_t>(i)] = 0.25f * static_cast<float>(i) - 1.0f;
  std::vector<loftq::io::TensorSource> tensors;
  tensors.push_back(source_of(loftq::io::float_tensor("b.bf16", w.data(), {3, 4}, Dtype::bf16)));
  tensors.push_back(source_of(loftq::io::float_tensor("a.f32", w.data(), {2, 2, 3}, Dtype::f32)));
  tensors.push_back(source_of(loftq::io::float_tensor("c.f16", w.data(), {12}, Dtype::f16)));
  tensors.push_back(source_of(loftq::io::TensorData{"d.u8", Dtype::u8, {3}, {1, 2, 3}}));
  loftq::io::write_safetensors(path, std::move(tensors));
}

TEST(Safetensors, WriterRoundTripsThroughTheReader) {
  ScratchDir dir;
  write_sample(dir / "x.safetensors");
  const SafetensorsReader r(dir / "x.safetensors");
  ASSERT_EQ(r.tensors().size(), 4u);
  // Larger elements first, then by name: every tensor starts at a multiple of its element size.
  EXPECT_EQ(r.tensors()[0].name, "a.f32");
  EXPECT_EQ(r.tensors()[1].name, "b.bf16");
  EXPECT_EQ(r.tensors()[2].name, "c.f16");
  EXPECT_EQ(r.tensors()[3].name, "d.u8");
  const std::string bytes = file_bytes(dir / "x.safetensors");
  std::uint64_t header = 0;
  std::memcpy(&header, bytes.data(), 8);
  EXPECT_EQ(header % 8, 0u);
  EXPECT_EQ(bytes[8], '{');
  for (const auto& t : r.tensors()) EXPECT_EQ(t.begin % loftq::io::dtype_size(t.dtype), 0u);
  ASSERT_EQ(r.metadata().size(), 1u);
  EXPECT_EQ(r.metadata()[0], (std::pair<std::string, std::string>{"format", "pt"}));
  for (const char* name : {"a.f32", "b.bf16", "c.f16"}) {
    const std::vector<float> v = r.read_floats(r.at(name));
    ASSERT_EQ(v.size(), 12u);
    for (int i = 0; i < 12; ++i) EXPECT_EQ(v[static_cast<std::size_t>(i)], 0.25f * static_cast<float>(i) - 1.0f);
  }
  const loftq::RowMatrixXf m = r.read_matrix(r.at("a.f32"));  // (2, 2, 3) reads as 2 x 6
  EXPECT_EQ(m.rows(), 2);
  EXPECT_EQ(m.cols(), 6);
  EXPECT_EQ(r.read_raw(r.at("d.u8")), (std::vector<std::uint8_t>{1, 2, 3}));
  EXPECT_THROW(r.read_floats(r.at("d.u8")), ArgumentError);
  EXPECT_THROW(r.at("missing"), ArgumentError);
  EXPECT_EQ(r.find("missing"), nullptr);
}

TEST(Safetensors, WriterRefusesBadTensorsAndLeavesNoFile) {
  ScratchDir dir;
  std::vector<loftq::io::TensorSource> twins;
  twins.push_back(source_of(loftq::io::TensorData{"x", Dtype::u8, {1}, {1}}));
  twins.push_back(source_of(loftq::io::TensorData{"x", Dtype::u8, {1}, {2}}));
  EXPECT_THROW(loftq::io::write_safetensors(dir / "a.safetensors", std::move(twins)), ArgumentError);
  std::vector<loftq::io::TensorSource> short_one;
  short_one.push_back(source_of(loftq::io::TensorData{"x", Dtype::f32, {2}, {1, 2, 3}}));
  EXPECT_THROW(loftq::io::write_safetensors(dir / "b.safetensors", std::move(short_one)), ArgumentError);
  std::vector<loftq::io::TensorSource> not_utf8;
  not_utf8.push_back(source_of(loftq::io::TensorData{"\xff", Dtype::u8, {1}, {1}}));
  EXPECT_THROW(loftq::io::write_safetensors(dir / "d.safetensors", std::move(not_utf8)), ArgumentError);
  std::vector<loftq::io::TensorSource> throwing;
  throwing.push_back({"x", Dtype::u8, {4}, [](const loftq::io::TensorSource::Emit&) { throw std::runtime_error("boom"); }});
  EXPECT_THROW(loftq::io::write_safetensors(dir / "c.safetensors", std::move(throwing)), std::runtime_error);
  EXPECT_TRUE(std::filesystem::is_empty(dir.path()));  // no file, no temporary
}

/// A file made of an 8-byte length and the given header, then `buffer` bytes of data.
std::string raw_file(const std::string& header, std::size_t buffer, std::uint64_t length = ~std::uint64_t{0}) {
  if (length == ~std::uint64_t{0}) length = header.size();
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[static_cast<std::size_t>(i)] = static_cast<char>(length >> (8 * i));
  return bytes + header + std::string(buffer, '\0');
}

TEST(Safetensors, ReaderRejectsMalformedFiles) {
  ScratchDir dir;
  const std::string ok = R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})";
  write_bytes(dir / "ok", raw_file(ok, 8));
  EXPECT_NO_THROW(SafetensorsReader(dir / "ok"));
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"short", std::string("\x01\x00\x00", 3)},
      {"huge header", raw_file(ok, 8, 200'000'000)},
      {"header past end", raw_file(ok, 8, 1000)},
      {"not an object start", raw_file(" " + ok, 8)},
      {"array", raw_file("[1, 2]", 0)},
      {"bad json", raw_file("{\"a\": ", 0)},
      {"unknown dtype", raw_file(R"({"a": {"dtype": "F33", "shape": [2], "data_offsets": [0, 8]}})", 8)},
      {"wrong size", raw_file(R"({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})", 8)},
      {"negative shape", raw_file(R"({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}})", 8)},
      {"overflowing shape",
       raw_file(R"({"a": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 8]}})", 8)},
      {"overflowing bytes", raw_file(R"({"a": {"dtype": "F64", "shape": [4611686018427387904], "data_offsets": [0, 8]}})", 8)},
      {"end before begin", raw_file(R"({"a": {"dtype": "U8", "shape": [0], "data_offsets": [8, 0]}})", 8)},
      {"hole", raw_file(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})", 12)},
      {"overlap", raw_file(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                              "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})", 12)},
      {"buffer too long", raw_file(ok, 9)},
      {"buffer too short", raw_file(ok, 7)},
      {"missing offsets", raw_file(R"({"a": {"dtype": "F32", "shape": [2]}})", 8)},
      {"bad metadata", raw_file(R"({"__metadata__": {"k": 1}})", 0)},
      {"duplicate key", raw_file(R"({"a": {"dtype": "U8", "shape": [0], "data_offsets": [0, 0]},
                                     "a": {"dtype": "U8", "shape": [0], "data_offsets": [0, 0]}})", 0)},
  };
  for (const auto& [name, bytes] : cases) {
    write_bytes(dir / "bad", bytes);
    EXPECT_THROW(SafetensorsReader(dir / "bad"), FormatError) << name;
  }
  EXPECT_THROW(SafetensorsReader(dir / "does-not-exist"), FileError);
  EXPECT_THROW(SafetensorsReader(dir.path()), FileError);  // a directory
}

TEST(Safetensors, ReaderReportsTruncationWhenReadingData) {
  ScratchDir dir;
  write_sample(dir / "x.safetensors");
  const SafetensorsReader r(dir / "x.safetensors");
  std::filesystem::resize_file(dir / "x.safetensors", std::filesystem::file_size(dir / "x.safetensors") - 2);
  EXPECT_THROW(r.read_raw(r.at("d.u8")), FormatError);
}

/// A two-shard checkpoint with an index.
void write_sharded(const std::filesystem::path& dir) {
  const float v[4] = {1, 2, 3, 4};
  std::vector<loftq::io::TensorSource> one, two;
  one.push_back(source_of(loftq::io::float_tensor("x", v, {2, 2}, Dtype::f32)));
  two.push_back(source_of(loftq::io::float_tensor("y", v, {4}, Dtype::bf16)));
  loftq::io::write_safetensors(dir / "m-1.safetensors", std::move(one));
  loftq::io::write_safetensors(dir / "m-2.safetensors", std::move(two));
  loftq::io::write_file_atomically(dir / "model.safetensors.index.json",
                                   R"({"metadata": {"total_size": 24}, "weight_map": {"x": "m-1.safetensors", "y": "m-2.safetensors"}})");
}

TEST(Checkpoint, ReadsShardsThroughTheIndex) {
  ScratchDir dir;
  write_sharded(dir.path());
  const loftq::io::Checkpoint c(dir.path());
  EXPECT_TRUE(c.sharded());
  EXPECT_EQ(c.file_names(), (std::vector<std::string>{"m-1.safetensors", "m-2.safetensors"}));
  ASSERT_EQ(c.tensors().size(), 2u);
  EXPECT_EQ(c.at("y").file->read_floats(*c.at("y").info), (std::vector<float>{1, 2, 3, 4}));
  EXPECT_EQ(json_u64(c.index_metadata()["total_size"], "total_size"), 24u);
  EXPECT_THROW(c.at("z"), ArgumentError);
}

TEST(Checkpoint, RejectsInconsistentIndexes) {
  for (const char* index : {R"({"weight_map": {"x": "m-1.safetensors", "y": "m-1.safetensors"}})",  // y elsewhere
                            R"({"weight_map": {"x": "../m-1.safetensors", "y": "m-2.safetensors"}})",
                            R"({"weight_map": {"x": "m-1.safetensors", "y": "m-3.safetensors"}})",
                            R"({"weight_map": {}})", R"({"weights": {}})", R"([1])"}) {
    ScratchDir dir;
    write_sharded(dir.path());
    loftq::io::write_file_atomically(dir / "model.safetensors.index.json", index);
    EXPECT_THROW(loftq::io::Checkpoint{dir.path()}, loftq::io::Error) << index;
  }
  ScratchDir empty;
  EXPECT_THROW(loftq::io::Checkpoint{empty.path()}, FormatError);
}

TEST(Peft, AdapterUndoesTheLoraScaling) {
  loftq::io::AdapterConfig config;
  config.rank = 2;
  config.lora_alpha = 8.0;  // scaling 4
  config.target_modules = {"q_proj"};
  loftq::io::AdapterFactors f{"model.layers.0.self_attn.q_proj", Eigen::MatrixXf::Random(5, 2), Eigen::MatrixXf::Random(3, 2), {}};
  const std::vector<loftq::io::TensorData> t = loftq::io::adapter_tensors(config, f);
  ASSERT_EQ(t.size(), 2u);
  EXPECT_EQ(t[0].name, "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight");
  EXPECT_EQ(t[0].shape, (std::vector<std::uint64_t>{2, 3}));
  EXPECT_EQ(t[1].name, "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight");
  EXPECT_EQ(t[1].shape, (std::vector<std::uint64_t>{5, 2}));
  Eigen::Matrix<float, 2, 3, Eigen::RowMajor> lora_a;
  Eigen::Matrix<float, 5, 2, Eigen::RowMajor> lora_b;
  std::memcpy(lora_a.data(), t[0].bytes.data(), t[0].bytes.size());
  std::memcpy(lora_b.data(), t[1].bytes.data(), t[1].bytes.size());
  const Eigen::MatrixXf product = 4.0f * lora_b * lora_a;
  EXPECT_LT((product - f.A * f.B.transpose()).norm(), 1e-5f);

  const Json json = parse_json(loftq::io::adapter_config_json(config));
  EXPECT_EQ(json.at("peft_type"), "LORA");
  EXPECT_EQ(json.at("r"), 2);
  EXPECT_EQ(json.at("lora_alpha"), 8.0);
  EXPECT_EQ(json.at("target_modules"), Json::array({"q_proj"}));
  EXPECT_EQ(json.at("bias"), "none");
  EXPECT_EQ(json.at("init_lora_weights"), true);

  config.lora_alpha = 0.0;  // means r: scaling 1
  EXPECT_EQ(parse_json(loftq::io::adapter_config_json(config)).at("lora_alpha"), 2.0);
  f.B = Eigen::MatrixXf::Random(3, 1);
  EXPECT_THROW(loftq::io::adapter_tensors(config, f), ArgumentError);
}

TEST(Peft, WritesTheAdapterDirectory) {
  ScratchDir dir;
  loftq::io::AdapterConfig config;
  config.rank = 1;
  config.target_modules = {"all-linear"};
  loftq::io::write_adapter(dir / "adapter", config, {{"m.q", Eigen::MatrixXf::Ones(2, 1), Eigen::MatrixXf::Ones(3, 1), {}}});
  const SafetensorsReader r(dir / "adapter" / "adapter_model.safetensors");
  EXPECT_EQ(r.tensors().size(), 2u);
  EXPECT_EQ(parse_json(file_bytes(dir / "adapter" / "adapter_config.json")).at("target_modules"), "all-linear");
}

TEST(Peft, RsloraScalingAndConvolutionShapes) {
  loftq::io::AdapterConfig config;
  config.rank = 4;
  config.lora_alpha = 8.0;
  EXPECT_EQ(config.scaling(), 2.0);
  Json json = parse_json(loftq::io::adapter_config_json(config));
  EXPECT_EQ(json.at("use_rslora"), false);
  EXPECT_EQ(json.at("fan_in_fan_out"), false);
  config.use_rslora = true;  // scaling 8 / sqrt(4) = 4
  config.fan_in_fan_out = true;
  EXPECT_EQ(config.scaling(), 4.0);
  json = parse_json(loftq::io::adapter_config_json(config));
  EXPECT_EQ(json.at("use_rslora"), true);
  EXPECT_EQ(json.at("fan_in_fan_out"), true);

  // A Conv2d weight (6, 3, 2, 2) as the matrix 6 x 12: PEFT's lora_A (r, 3, 2, 2), lora_B (6, r, 1, 1).
  loftq::io::AdapterFactors f{"model.conv", Eigen::MatrixXf::Random(6, 4), Eigen::MatrixXf::Random(12, 4), {3, 2, 2}};
  const std::vector<loftq::io::TensorData> t = loftq::io::adapter_tensors(config, f);
  ASSERT_EQ(t.size(), 2u);
  EXPECT_EQ(t[0].shape, (std::vector<std::uint64_t>{4, 3, 2, 2}));
  EXPECT_EQ(t[1].shape, (std::vector<std::uint64_t>{6, 4, 1, 1}));
  Eigen::Matrix<float, 4, 12, Eigen::RowMajor> lora_a;
  Eigen::Matrix<float, 6, 4, Eigen::RowMajor> lora_b;
  std::memcpy(lora_a.data(), t[0].bytes.data(), t[0].bytes.size());
  std::memcpy(lora_b.data(), t[1].bytes.data(), t[1].bytes.size());
  const Eigen::MatrixXf product = 4.0f * lora_b * lora_a;
  EXPECT_LT((product - f.A * f.B.transpose()).norm(), 1e-5f);

  for (const std::vector<std::uint64_t>& bad : {std::vector<std::uint64_t>{12}, std::vector<std::uint64_t>{5, 2},
                                                std::vector<std::uint64_t>{(std::uint64_t{1} << 62) + 3, 4}}) {  // 12 modulo 2^64
    f.input_shape = bad;
    const std::string message = loftq_test::argument_error_message([&] { loftq::io::adapter_tensors(config, f); });
    EXPECT_NE(message.find("model.conv: input_shape ("), std::string::npos) << message;
  }
}

/// The kind of io::Error that f() throws: "FormatError", "FileError", "ArgumentError", "Error", or
/// what went wrong instead.
template <class F>
std::string io_error_kind(F&& f) {
  try {
    f();
  } catch (const loftq::io::Error& e) {
    if (std::string(e.what()).empty()) return "empty message";
    if (dynamic_cast<const FormatError*>(&e) != nullptr) return "FormatError";
    if (dynamic_cast<const FileError*>(&e) != nullptr) return "FileError";
    if (dynamic_cast<const ArgumentError*>(&e) != nullptr) return "ArgumentError";
    return "Error";
  } catch (const std::exception& e) {
    return std::string("not an io::Error: ") + e.what();
  }
  return "nothing thrown";
}

TEST(IoErrors, EveryKindOfFailureIsAnIoError) {
  ScratchDir dir;
  write_sample(dir / "x.safetensors");
  const SafetensorsReader r(dir / "x.safetensors");
  write_bytes(dir / "bad.safetensors", raw_file("{\"a\": 1}", 0));
  write_bytes(dir / "file", "x");
  const float one = 1.0f;
  const std::vector<std::pair<std::string, std::function<void()>>> failures = {
      {"FormatError", [&] { SafetensorsReader{dir / "bad.safetensors"}; }},
      {"FormatError", [] { parse_json("{"); }},
      {"FormatError", [] { loftq::io::parse_safetensors_index("{\"weight_map\": {}}", "index"); }},
      {"FormatError", [] { json_u64(Json(-1), "n"); }},
      {"FormatError", [&] { loftq::io::read_small_file(dir / "x.safetensors", 10); }},
      {"FormatError", [&] { loftq::io::Checkpoint{dir.path()}; }},
      {"FormatError", [] { loftq::io::read_bnb("w", std::vector<loftq::io::TensorData>{}); }},
      {"FileError", [&] { SafetensorsReader{dir / "missing"}; }},
      {"FileError", [&] { SafetensorsReader{dir.path()}; }},
      {"FileError", [&] { loftq::io::write_file_atomically(dir / "no-such-dir" / "f", "x"); }},
      {"FileError", [&] { loftq::io::write_adapter(dir / "file" / "adapter", {}, {}); }},
      {"ArgumentError", [&] { r.at("missing"); }},
      {"ArgumentError", [&] { r.read_floats(r.at("d.u8")); }},
      {"ArgumentError", [&] { r.read_bytes(r.at("d.u8"), 2, nullptr, 2); }},
      {"ArgumentError", [&] { loftq::io::float_tensor("t", &one, {1}, Dtype::i8); }},
      {"ArgumentError", [] { dump_json(Json(std::nan(""))); }},
      {"ArgumentError", [] { loftq::io::bnb_int8_tensor_layout("w", 1, 4); }},
      {"ArgumentError", [] { loftq::io::bnb_tensor_layout("w", 0, 4, loftq::Codebook::nf4, 64); }},
      {"ArgumentError", [] { loftq::io::read_bnb("", std::vector<loftq::io::TensorData>{}); }},
  };
  for (std::size_t i = 0; i < failures.size(); ++i) EXPECT_EQ(io_error_kind(failures[i].second), failures[i].first) << "case " << i;
  try {
    SafetensorsReader{dir / "missing"};
  } catch (const FileError& e) {
    EXPECT_EQ(e.path(), dir / "missing");
    EXPECT_EQ(e.code(), std::errc::no_such_file_or_directory);
    EXPECT_NE(std::string(e.what()).find((dir / "missing").string()), std::string::npos) << e.what();
  }
}

TEST(Safetensors, LargeHeadersRoundTrip) {
  ScratchDir dir;
  std::vector<loftq::io::TensorSource> tensors;
  for (int i = 0; i < 50000; ++i) {
    tensors.push_back(source_of(loftq::io::TensorData{"t." + std::to_string(i), Dtype::u8, {1}, {static_cast<std::uint8_t>(i)}}));
  }
  loftq::io::write_safetensors(dir / "many.safetensors", std::move(tensors));
  const SafetensorsReader r(dir / "many.safetensors");
  ASSERT_EQ(r.tensors().size(), 50000u);
  EXPECT_EQ(r.read_raw(r.at("t.12345")), (std::vector<std::uint8_t>{static_cast<std::uint8_t>(12345)}));
}

}  // namespace
