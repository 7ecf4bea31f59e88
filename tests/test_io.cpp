// JSON, safetensors reader and writer, sharded checkpoints and PEFT adapters.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <loftq/io/checkpoint.hpp>
#include <loftq/io/json.hpp>
#include <loftq/io/peft.hpp>
#include <loftq/io/safetensors.hpp>
#include <string>
#include <vector>

#include "io_helpers.hpp"

namespace {

using loftq::io::Dtype;
using loftq::io::FormatError;
using loftq::io::Json;
using loftq::io::parse_json;
using loftq::io::SafetensorsReader;
using loftq_test::file_bytes;
using loftq_test::ScratchDir;
using loftq_test::write_bytes;

TEST(Json, ParsesAndDumpsLikePython) {
  const Json j = parse_json(R"( {"a": [1, -2.5e3, 0, "x\u00e9\n"], "b": {"c": null, "d": true}} )");
  EXPECT_EQ(j.dump(), R"({"a": [1, -2.5e3, 0, "xé\n"], "b": {"c": null, "d": true}})");
  EXPECT_EQ(j.at("a").elements()[0].as_u64(), 1u);
  EXPECT_DOUBLE_EQ(j.at("a").elements()[1].as_double(), -2500.0);
  EXPECT_TRUE(j.at("b").at("d").as_bool());
  EXPECT_EQ(parse_json(j.dump(2)).dump(), j.dump());
}

TEST(Json, KeepsSixtyFourBitIntegersExact) {
  const Json j = parse_json("[18446744073709551615, 9007199254740993]");
  EXPECT_EQ(j.elements()[0].as_u64(), 18446744073709551615ull);
  EXPECT_EQ(j.elements()[1].as_u64(), 9007199254740993ull);
  EXPECT_THROW(parse_json("18446744073709551616").as_u64(), FormatError);
  EXPECT_THROW(parse_json("-1").as_u64(), FormatError);
  EXPECT_THROW(parse_json("1.5").as_u64(), FormatError);
}

TEST(Json, RejectsMalformedDocuments) {
  for (const char* bad : {"", "{", "[1,]", "{\"a\" 1}", "{\"a\": 1,}", "01", "1.", "-", "tru", "\"abc",
                          "\"\\x\"", "\"\\ud800\"", "\"a\x01\"", "{\"a\": 1, \"a\": 2}", "[1] 2", "\"\xff\"",
                          "\"\xc0\x80\"", "\"\xed\xa0\x80\""}) {
    EXPECT_THROW(parse_json(bad), FormatError) << bad;
  }
  std::string deep(65, '[');
  deep += std::string(65, ']');
  EXPECT_THROW(parse_json(deep), FormatError);
  std::string fine(64, '[');
  fine += std::string(64, ']');
  EXPECT_NO_THROW(parse_json(fine));
  EXPECT_THROW(Json(std::nan("")), std::invalid_argument);
  std::string many = "[0";
  for (std::size_t i = 2; i < loftq::io::JsonParser::max_values; ++i) many += ",0";
  EXPECT_NO_THROW(parse_json(many + "]"));  // the array and max_values - 1 zeros
  EXPECT_THROW(parse_json(many + ",0]"), FormatError);
}

TEST(Json, EscapesControlCharactersAndQuotes) {
  const Json j(std::string("a\"b\\c\x01"));
  EXPECT_EQ(j.dump(), "\"a\\\"b\\\\c\\u0001\"");
  EXPECT_EQ(parse_json(j.dump()).as_string(), j.as_string());
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
  EXPECT_THROW(r.read_floats(r.at("d.u8")), std::invalid_argument);
  EXPECT_THROW(r.at("missing"), std::invalid_argument);
  EXPECT_EQ(r.find("missing"), nullptr);
}

TEST(Safetensors, WriterRefusesBadTensorsAndLeavesNoFile) {
  ScratchDir dir;
  std::vector<loftq::io::TensorSource> twins;
  twins.push_back(source_of(loftq::io::TensorData{"x", Dtype::u8, {1}, {1}}));
  twins.push_back(source_of(loftq::io::TensorData{"x", Dtype::u8, {1}, {2}}));
  EXPECT_THROW(loftq::io::write_safetensors(dir / "a.safetensors", std::move(twins)), std::invalid_argument);
  std::vector<loftq::io::TensorSource> short_one;
  short_one.push_back(source_of(loftq::io::TensorData{"x", Dtype::f32, {2}, {1, 2, 3}}));
  EXPECT_THROW(loftq::io::write_safetensors(dir / "b.safetensors", std::move(short_one)), std::runtime_error);
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
  EXPECT_THROW(SafetensorsReader(dir / "does-not-exist"), std::system_error);
  EXPECT_THROW(SafetensorsReader(dir.path()), std::invalid_argument);  // a directory
}

TEST(Safetensors, ReaderReportsTruncationWhenReadingData) {
  ScratchDir dir;
  write_sample(dir / "x.safetensors");
  const SafetensorsReader r(dir / "x.safetensors");
  std::filesystem::resize_file(dir / "x.safetensors", std::filesystem::file_size(dir / "x.safetensors") - 2);
  EXPECT_THROW(r.read_raw(r.at("d.u8")), std::runtime_error);
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
  EXPECT_EQ(c.index_metadata().at("total_size").as_u64(), 24u);
  EXPECT_THROW(c.at("z"), std::invalid_argument);
}

TEST(Checkpoint, RejectsInconsistentIndexes) {
  for (const char* index : {R"({"weight_map": {"x": "m-1.safetensors", "y": "m-1.safetensors"}})",  // y elsewhere
                            R"({"weight_map": {"x": "../m-1.safetensors", "y": "m-2.safetensors"}})",
                            R"({"weight_map": {"x": "m-1.safetensors", "y": "m-3.safetensors"}})",
                            R"({"weight_map": {}})", R"({"weights": {}})", R"([1])"}) {
    ScratchDir dir;
    write_sharded(dir.path());
    loftq::io::write_file_atomically(dir / "model.safetensors.index.json", index);
    EXPECT_ANY_THROW(loftq::io::Checkpoint{dir.path()}) << index;
  }
  ScratchDir empty;
  EXPECT_THROW(loftq::io::Checkpoint{empty.path()}, std::invalid_argument);
}

TEST(Peft, AdapterUndoesTheLoraScaling) {
  loftq::io::AdapterConfig config;
  config.rank = 2;
  config.lora_alpha = 8.0;  // scaling 4
  config.target_modules = {"q_proj"};
  loftq::io::AdapterFactors f{"model.layers.0.self_attn.q_proj", Eigen::MatrixXf::Random(5, 2), Eigen::MatrixXf::Random(3, 2)};
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
  EXPECT_EQ(json.at("peft_type").as_string(), "LORA");
  EXPECT_EQ(json.at("r").as_u64(), 2u);
  EXPECT_EQ(json.at("lora_alpha").as_double(), 8.0);
  EXPECT_EQ(json.at("target_modules").elements()[0].as_string(), "q_proj");
  EXPECT_EQ(json.at("bias").as_string(), "none");
  EXPECT_TRUE(json.at("init_lora_weights").as_bool());

  config.lora_alpha = 0.0;  // means r: scaling 1
  EXPECT_EQ(parse_json(loftq::io::adapter_config_json(config)).at("lora_alpha").as_double(), 2.0);
  f.B = Eigen::MatrixXf::Random(3, 1);
  EXPECT_THROW(loftq::io::adapter_tensors(config, f), std::invalid_argument);
}

TEST(Peft, WritesTheAdapterDirectory) {
  ScratchDir dir;
  loftq::io::AdapterConfig config;
  config.rank = 1;
  config.target_modules = {"all-linear"};
  loftq::io::write_adapter(dir / "adapter", config, {{"m.q", Eigen::MatrixXf::Ones(2, 1), Eigen::MatrixXf::Ones(3, 1)}});
  const SafetensorsReader r(dir / "adapter" / "adapter_model.safetensors");
  EXPECT_EQ(r.tensors().size(), 2u);
  EXPECT_EQ(parse_json(file_bytes(dir / "adapter" / "adapter_config.json")).at("target_modules").as_string(), "all-linear");
}

}  // namespace
