// The library's load paths against bitsandbytes' own output: tests/data/golden_load*.txt, made by
// tests/data/make_load_golden.py with bitsandbytes' code (provenance in tests/data/README.md).
#include <gtest/gtest.h>

#include <loftq/io/bnb.hpp>
#include <loftq/io/safetensors.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "test_helpers.hpp"

namespace {

using loftq::Codebook;
using loftq::FloatType;
using loftq::LoadPath;
using loftq::QuantizedMatrix;
using loftq_test::bits_of_float;
using loftq_test::data_lines;
using loftq_test::parse_hex_floats;
using loftq_test::parse_ints;

/// The `key: tokens` lines of a golden_load file.
std::map<std::string, std::string> golden_fields(const std::string& file) {
  std::map<std::string, std::string> fields;
  for (const std::string& line : data_lines(file)) {
    const auto colon = line.find(": ");
    if (colon == std::string::npos) throw std::runtime_error(file + ": bad line " + line.substr(0, 40));
    fields[line.substr(0, colon)] = line.substr(colon + 2);
  }
  return fields;
}

/// The value of `key`; throws when it is missing.
const std::string& field(const std::map<std::string, std::string>& fields, const std::string& key) {
  const auto it = fields.find(key);
  if (it == fields.end()) throw std::runtime_error("golden file has no " + key);
  return it->second;
}

/// Whitespace-separated words.
std::vector<std::string> words(const std::string& text) {
  std::istringstream in(text);
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

/// Two-hex-digit bytes.
std::vector<std::uint8_t> hex_bytes(const std::string& text) {
  std::vector<std::uint8_t> out;
  for (const std::string& w : words(text)) out.push_back(static_cast<std::uint8_t>(std::stoul(w, nullptr, 16)));
  return out;
}

/// The golden input named by the file's `input` key, row-major.
Eigen::MatrixXf input_of(const std::map<std::string, std::string>& fields) {
  return loftq_test::golden_input(field(fields, "input"));
}

/// Counts the elements of `ours` (row-major of m) whose bits differ from `theirs`, a zero of
/// either sign matching a zero of either sign (FP4's code 8 is -0.0 here and +0.0 in
/// bitsandbytes' pure-PyTorch table; its CUDA kernel gives -0.0 too).
int differing(const Eigen::MatrixXf& m, const std::vector<float>& theirs) {
  const loftq::RowMatrixXf ours = m;
  if (static_cast<std::size_t>(ours.size()) != theirs.size()) return -1;
  int count = 0;
  for (std::size_t k = 0; k < theirs.size(); ++k) {
    const float a = ours.data()[k];
    if (!(a == 0.0f && theirs[k] == 0.0f) && bits_of_float(a) != bits_of_float(theirs[k])) ++count;
  }
  return count;
}

/// The packed codes with the pad nibble of an odd count cleared, as QuantizedMatrix holds them.
std::vector<std::uint8_t> without_pad(std::vector<std::uint8_t> packed, std::size_t n) {
  if (n % 2 != 0) packed.back() &= 0xF0;
  return packed;
}

/// Checks one 4-bit case: codes, scales (or their double quantization), the dequantized output,
/// and bitsandbytes' tensors of Q read back.
void check_four_bit(const std::map<std::string, std::string>& fields, const std::string& name, Codebook codebook,
                    const LoadPath& path, const std::string& out_key) {
  SCOPED_TRACE(name + " " + out_key);
  const Eigen::MatrixXf w = input_of(fields);
  const QuantizedMatrix q = loftq::quantize(w, codebook, 64, path);
  const std::vector<std::uint8_t> packed = hex_bytes(field(fields, name + ".packed"));
  EXPECT_EQ(q.codes(), without_pad(packed, q.size()));
  const std::vector<float> out = parse_hex_floats(field(fields, name + "." + out_key));
  const std::vector<loftq::io::TensorData> tensors = loftq::io::bnb_tensors("m.weight", q);
  EXPECT_EQ(tensors[0].bytes, packed);  // bitsandbytes' pad nibble: the code of 0.0
  const QuantizedMatrix back = loftq::io::read_bnb("m.weight", tensors);
  EXPECT_EQ(back.load_path().dequantized_to, path.dequantized_to);
  if (!path.double_quant) {
    EXPECT_EQ(q.scales(), parse_hex_floats(field(fields, name + ".absmax")));
    EXPECT_EQ(differing(q.dequantize(), out), 0);
    EXPECT_EQ(differing(back.dequantize(), out), 0);  // the tensors of Q read back
    return;
  }
  // Double quantization: the codes are bitsandbytes'. Two inputs of the restored scales depend
  // on how PyTorch computes in float32: the offset, a float32 mean (within 2 ulp of ours, the
  // mean rounded once; the nested absmax, max |absmax - offset|, follows it), and the nested
  // map, built with linspace (this bitsandbytes run used a PyTorch without fused multiply-add:
  // 42 entries 1 ulp from dynamic_map()). Given those, the restored scales and the output are
  // bitsandbytes', bit for bit; with ours, the output is within float32 rounding of it.
  const loftq::DoubleQuantizedScales dq = loftq::double_quantize(q.scales());
  const auto golden_codes = parse_ints(field(fields, name + ".absmax_codes"));
  EXPECT_EQ(std::vector<long>(dq.codes.begin(), dq.codes.end()), golden_codes);
  const float offset = parse_hex_floats(field(fields, name + ".offset")).at(0);
  const std::vector<float> nested_absmax = parse_hex_floats(field(fields, name + ".nested_absmax"));
  const long offset_ulps = std::abs(static_cast<long>(bits_of_float(dq.offset)) - static_cast<long>(bits_of_float(offset)));
  EXPECT_LE(offset_ulps, 2);
  if (offset_ulps == 0) {
    EXPECT_EQ(dq.absmax, nested_absmax);  // max |absmax - offset|
  }
  std::array<float, 256> map{};
  const std::vector<float> map_values = parse_hex_floats(field(fields, "dynamic_map"));
  std::copy(map_values.begin(), map_values.end(), map.begin());
  const std::vector<float> restored = parse_hex_floats(field(fields, name + ".absmax_restored"));
  const std::vector<std::uint8_t> codes(golden_codes.begin(), golden_codes.end());
  EXPECT_EQ(loftq::restored_scales({offset, codes, nested_absmax}, map), restored);
  const QuantizedMatrix theirs(q.rows(), q.cols(), 64, codebook, q.codes(), restored,
                               LoadPath{path.quantized_from, false, path.dequantized_to});
  EXPECT_EQ(differing(theirs.dequantize(), out), 0);
  const Eigen::Map<const Eigen::VectorXf> expected(out.data(), static_cast<Eigen::Index>(out.size()));
  const loftq::RowMatrixXf ours = q.dequantize();
  const Eigen::Map<const Eigen::VectorXf> got(ours.data(), ours.size());
  EXPECT_LT((got - expected).norm(), 1e-6 * expected.norm());
  EXPECT_TRUE(back.dequantize() == q.dequantize());  // the tensors of Q read back: Q, negative scales kept
}

/// The codebook of a case name's prefix, nf4 or fp4.
Codebook codebook_of_case(const std::string& name) { return name.rfind("nf4", 0) == 0 ? Codebook::nf4 : Codebook::fp4; }

TEST(LoadGolden, SixteenBitBackboneQuantizedAtLoad) {
  for (const std::string file : {"golden_load4_16bit_6x100.txt", "golden_load4_16bit_8x128.txt"}) {
    const auto fields = golden_fields(file);
    const auto cases = words(field(fields, "cases"));
    ASSERT_EQ(cases.size(), 8u);
    for (const std::string& name : cases) {
      const FloatType type = name.find("_bf16_") != std::string::npos ? FloatType::bfloat16 : FloatType::float16;
      const bool dq = name.substr(name.size() - 3) == "dq1";
      check_four_bit(fields, name, codebook_of_case(name), LoadPath{type, dq, type}, "out");
    }
  }
}

TEST(LoadGolden, BackboneStoredQuantizedFromFloat32) {
  for (const std::string file : {"golden_load4_32bit_6x100.txt", "golden_load4_32bit_8x128.txt"}) {
    const auto fields = golden_fields(file);
    const auto cases = words(field(fields, "cases"));
    ASSERT_EQ(cases.size(), 4u);
    for (const std::string& name : cases) {
      const bool dq = name.substr(name.size() - 3) == "dq1";
      check_four_bit(fields, name, codebook_of_case(name), LoadPath{FloatType::float32, dq, FloatType::bfloat16}, "out_bf16");
      check_four_bit(fields, name, codebook_of_case(name), LoadPath{FloatType::float32, dq, FloatType::float32}, "out_f32");
    }
  }
}

TEST(LoadGolden, LlmInt8) {
  for (const std::string file : {"golden_load8_6x100.txt", "golden_load8_8x128.txt"}) {
    const auto fields = golden_fields(file);
    const Eigen::MatrixXf w = input_of(fields);
    for (const std::string& name : words(field(fields, "cases"))) {
      SCOPED_TRACE(file + " " + name);
      const FloatType stored = name == "bf16_fp16" ? FloatType::bfloat16 : FloatType::float32;
      const QuantizedMatrix q =
          loftq::quantize(w, Codebook::llm_int8, static_cast<int>(w.cols()), LoadPath{stored, false, FloatType::float32});
      const auto codes = parse_ints(field(fields, name + ".codes"));
      std::vector<long> ours;
      for (std::uint8_t c : q.codes()) ours.push_back(static_cast<std::int8_t>(c));
      EXPECT_EQ(ours, codes);
      EXPECT_EQ(q.scales(), parse_hex_floats(field(fields, name + ".scb")));
      const std::vector<float> out = parse_hex_floats(field(fields, name + ".out"));
      EXPECT_EQ(differing(q.dequantize(), out), 0);
      // The Linear8bitLt tensors of Q read back give the same.
      const QuantizedMatrix back = loftq::io::read_bnb_int8("m.weight", loftq::io::bnb_int8_tensors("m.weight", q));
      EXPECT_EQ(differing(back.dequantize(), out), 0);
    }
  }
}

TEST(LoadGolden, BitsandbytesReadsOurFilesAsWeDo) {
  // tests/data/bnb_*.safetensors are the library's tensors of the golden inputs;
  // golden_bnb_reads_ours.txt is what bitsandbytes' QuantState.from_dict + dequantize_4bit (or
  // int8_vectorwise_dequant) makes of them: with the file's offset and nested map, bit for bit Q.
  const auto fields = golden_fields("golden_bnb_reads_ours.txt");
  struct Case {
    std::string file, input;
    Codebook codebook;
  };
  for (const Case& c : {Case{"bnb_nf4_dq_8x128", "golden_input_8x128.txt", Codebook::nf4},
                        Case{"bnb_fp4_dq_6x100", "golden_input.txt", Codebook::fp4},
                        Case{"bnb_int8_8x128", "golden_input_8x128.txt", Codebook::llm_int8}}) {
    SCOPED_TRACE(c.file);
    const Eigen::MatrixXf w = input_of({{"input", c.input}});
    const bool int8 = c.codebook == Codebook::llm_int8;
    const QuantizedMatrix q = int8 ? loftq::quantize(w, c.codebook, static_cast<int>(w.cols()), LoadPath{})
                                   : loftq::quantize(w, c.codebook, 64, LoadPath{FloatType::float32, true, FloatType::bfloat16});
    const std::vector<loftq::io::TensorData> ours = int8 ? loftq::io::bnb_int8_tensors("w.weight", q) : loftq::io::bnb_tensors("w.weight", q);
    const loftq::io::SafetensorsReader file(loftq_test::data_path(c.file + ".safetensors"));
    std::vector<loftq::io::TensorData> stored;
    for (const loftq::io::TensorInfo& info : file.tensors()) stored.push_back({info.name, info.dtype, info.shape, file.read_raw(info)});
    ASSERT_EQ(stored.size(), ours.size());
    for (const loftq::io::TensorData& t : ours) {
      const auto it = std::find_if(stored.begin(), stored.end(), [&](const loftq::io::TensorData& s) { return s.name == t.name; });
      ASSERT_NE(it, stored.end()) << t.name;
      EXPECT_EQ(it->dtype, t.dtype) << t.name;
      EXPECT_EQ(it->shape, t.shape) << t.name;
      EXPECT_EQ(it->bytes, t.bytes) << t.name;  // the library writes these files
    }
    const std::vector<float> theirs = parse_hex_floats(field(fields, c.file + ".out"));
    const QuantizedMatrix back = int8 ? loftq::io::read_bnb_int8("w.weight", stored) : loftq::io::read_bnb("w.weight", stored);
    EXPECT_EQ(differing(back.dequantize(), theirs), 0);
    EXPECT_EQ(differing(q.dequantize(), theirs), 0);  // what the solver optimized for
  }
}

}  // namespace
