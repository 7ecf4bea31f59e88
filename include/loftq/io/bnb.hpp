/// @file io/bnb.hpp
/// The bitsandbytes checkpoint layouts of one weight, as transformers saves a Linear4bit
/// (bitsandbytes' QuantState.as_dict(packed=True)) or a Linear8bitLt (int8 weight, SCB,
/// weight_format): the tensors of a QuantizedMatrix, their layout without the data, and strict
/// readers that return what bitsandbytes dequantizes.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "../codebook.hpp"
#include "../double_quant.hpp"
#include "../kernels/passes.hpp"
#include "../load_path.hpp"
#include "../quantized.hpp"
#include "error.hpp"
#include "json.hpp"
#include "safetensors.hpp"

namespace loftq::io {

/// Block sizes of bitsandbytes' 4-bit quantization: 64 to 4096, and 32 since bitsandbytes PR
/// #1854 (2026; earlier releases reject 32).
inline constexpr std::array<int, 8> bnb_block_sizes{32, 64, 128, 256, 512, 1024, 2048, 4096};

/// Block sizes of bitsandbytes' 8-bit blockwise kernels, which a file's nested_blocksize may use.
inline constexpr std::array<int, 7> bnb_nested_block_sizes{64, 128, 256, 512, 1024, 2048, 4096};

/// How bnb_tensors() writes a 4-bit weight.
struct BnbOptions {
  /// Double quantization (bnb_4bit_use_double_quant): the absmax as 8-bit codes.
  bool double_quant = false;
  /// The dtype bitsandbytes dequantizes the weight to: "bfloat16", "float16" or "float32".
  std::string dtype = "bfloat16";
};

/// The BnbOptions that store a matrix of load path `path` as it is: its double quantization and
/// its dequantized_to as the dtype.
inline BnbOptions bnb_options_of(const LoadPath& path) {
  return {path.double_quant, std::string(name_of(path.dequantized_to))};
}

/// Finds a tensor by name: the tensor, or nullptr when there is none.
using BnbLookup = std::function<const TensorData*(const std::string& name)>;

namespace detail {

/// a / b rounded up, without overflow; b >= 1.
constexpr std::uint64_t bnb_ceil_div(std::uint64_t a, std::uint64_t b) {
  return a / b + (a % b != 0 ? 1 : 0);
}

/// True when `value` is one of `sizes`.
template <std::size_t N>
bool bnb_is_one_of(std::uint64_t value, const std::array<int, N>& sizes) {
  return std::any_of(sizes.begin(), sizes.end(),
                     [&](int size) { return static_cast<std::uint64_t>(size) == value; });
}

/// "[a, b, ...]".
inline std::string bnb_shape_text(const std::vector<std::uint64_t>& shape) {
  std::string text = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    text += (i > 0 ? ", " : "") + std::to_string(shape[i]);
  }
  return text + "]";
}

/// True for the dtypes a quant state may name.
inline bool bnb_dtype_supported(std::string_view dtype) {
  return dtype == "bfloat16" || dtype == "float16" || dtype == "float32";
}

/// Throws ArgumentError("loftq: <message>").
[[noreturn]] inline void bnb_fail(const std::string& message) { throw ArgumentError("loftq: " + message); }

/// Throws ArgumentError unless bitsandbytes can write this weight.
inline void bnb_check_arguments(const std::string& weight_name, Eigen::Index rows,
                                Eigen::Index cols, Codebook codebook, int block_size,
                                const BnbOptions& options) {
  if (weight_name.empty()) bnb_fail("weight_name is empty");
  if (rows <= 0 || cols <= 0) {
    bnb_fail("bitsandbytes weight is empty (" + std::to_string(rows) + " x " + std::to_string(cols) + ")");
  }
  if (codebook != Codebook::nf4 && codebook != Codebook::fp4) {
    bnb_fail("codebook = " + std::string(name_of(codebook)) + " has no bitsandbytes 4-bit layout (nf4 or fp4)");
  }
  if (block_size < 1 || !bnb_is_one_of(static_cast<std::uint64_t>(block_size), bnb_block_sizes)) {
    bnb_fail("block_size = " + std::to_string(block_size) +
             " is not supported by bitsandbytes (32, 64, 128, ..., 4096)");
  }
  if (!bnb_dtype_supported(options.dtype)) {
    bnb_fail("dtype = \"" + options.dtype + "\" is not supported (bfloat16, float16 or float32)");
  }
}

/// The little-endian bytes of n floats.
inline std::vector<std::uint8_t> bnb_float_bytes(const float* values, std::size_t n) {
  std::vector<std::uint8_t> bytes(n * sizeof(float));
  if (n > 0) std::memcpy(bytes.data(), values, bytes.size());  // little-endian host
  return bytes;
}

/// The floats of a tensor's little-endian bytes.
inline std::vector<float> bnb_load_floats(const TensorData& tensor) {
  std::vector<float> values(tensor.bytes.size() / sizeof(float));
  if (!values.empty()) {
    std::memcpy(values.data(), tensor.bytes.data(), values.size() * sizeof(float));
  }
  return values;
}

/// The name of the quant-state tensor.
inline std::string bnb_quant_state_name(const std::string& weight_name, Codebook codebook) {
  return weight_name + ".quant_state.bitsandbytes__" + std::string(name_of(codebook));
}

/// `value` as Python's json.dumps writes it, with ", " and ": " separators (bitsandbytes'
/// quant state is written so); strings and numbers as nlohmann/json writes them.
inline std::string bnb_python_dumps(const OrderedJson& value) {
  if (!value.is_structured()) return dump_json(value);
  const bool object = value.is_object();
  std::string text(1, object ? '{' : '[');
  for (auto it = value.begin(); it != value.end(); ++it) {
    if (it != value.begin()) text += ", ";
    if (object) text += dump_json(OrderedJson(it.key())) + ": ";
    text += bnb_python_dumps(*it);
  }
  return text + (object ? '}' : ']');
}

/// The quant state's JSON: bitsandbytes' keys in its order (QuantState.as_dict), Python
/// json.dumps separators.
inline std::string bnb_quant_state_text(Eigen::Index rows, Eigen::Index cols, Codebook codebook,
                                        int block_size, const BnbOptions& options, float offset) {
  OrderedJson state = {{"quant_type", std::string(name_of(codebook))},
                       {"blocksize", block_size},
                       {"dtype", options.dtype},
                       {"shape", {rows, cols}}};
  if (options.double_quant) {
    state["nested_blocksize"] = double_quant_block_size;
    state["nested_dtype"] = "float32";
  }
  std::string text = bnb_python_dumps(state);
  if (options.double_quant) {
    // nested_offset, last, in fixed width unlike Python's repr: "%.9e" (to_chars, so no locale)
    // of an offset >= 0 (a mean of absmax) is always d.ddddddddde±XX, 15 characters, so the
    // tensor's length depends only on the shape and a caller can write a file's header before
    // the data. 10 significant digits read back the same float32.
    char number[32];
    const std::to_chars_result end = std::to_chars(
        number, number + sizeof number, static_cast<double>(offset), std::chars_format::scientific, 9);
    text.insert(text.size() - 1, ", \"nested_offset\": " + std::string(number, end.ptr));
  }
  return text;
}

/// Throws FormatError unless `tensor` exists with this dtype and shape and holds exactly the
/// bytes they need.
inline void bnb_check_tensor(const TensorData* tensor, const std::string& name, Dtype dtype,
                             const std::vector<std::uint64_t>& shape, const std::string& what) {
  if (tensor == nullptr) throw FormatError(what + ": missing tensor \"" + name + "\"");
  const std::string where = what + ": tensor \"" + name + "\"";
  if (tensor->dtype != dtype) {
    throw FormatError(where + " has dtype " + std::string(dtype_name(tensor->dtype)) +
                      ", expected " + std::string(dtype_name(dtype)));
  }
  if (tensor->shape != shape) {
    throw FormatError(where + " has shape " + bnb_shape_text(tensor->shape) + ", expected " +
                      bnb_shape_text(shape));
  }
  std::uint64_t bytes = dtype_size(dtype);
  for (std::uint64_t d : shape) {
    if (!multiply_checked(bytes, d, bytes)) throw FormatError(where + ": byte count overflows");
  }
  if (tensor->bytes.size() != bytes) {
    throw FormatError(where + " holds " + std::to_string(tensor->bytes.size()) +
                      " bytes, its shape needs " + std::to_string(bytes));
  }
}

/// What a quant state says.
struct BnbQuantState {
  std::uint64_t rows = 0;          ///< shape[0].
  std::uint64_t cols = 0;          ///< shape[1].
  std::uint64_t block_size = 0;    ///< blocksize.
  bool nested = false;             ///< Double quantization.
  std::uint64_t nested_block = 0;  ///< nested_blocksize.
  FloatType dtype = FloatType::float32;  ///< dtype.
  float offset = 0.0f;             ///< nested_offset.
};

/// The fields of a quant state of `codebook`; throws FormatError for anything bitsandbytes would
/// not have written.
inline BnbQuantState bnb_parse_quant_state(const Json& state, Codebook codebook,
                                           const std::string& what) {
  if (!state.is_object()) throw FormatError(what + ": quant state is not a JSON object");
  static constexpr std::string_view known[] = {"quant_type",   "blocksize",        "dtype",
                                               "shape",        "nested_blocksize", "nested_dtype",
                                               "nested_offset"};
  for (const auto& entry : state.items()) {
    if (std::find(std::begin(known), std::end(known), entry.key()) == std::end(known)) {
      throw FormatError(what + ": quant state has an unknown key \"" + entry.key() + "\"");
    }
  }
  const auto member = [&](const std::string& key) -> const Json& {
    const auto value = state.find(key);
    if (value == state.end()) throw FormatError(what + ": quant state has no \"" + key + "\"");
    return *value;
  };
  const std::string where = what + ": quant state ";
  const std::string& quant_type = json_string(member("quant_type"), where + "quant_type");
  if (quant_type != name_of(codebook)) {
    throw FormatError(where + "quant_type \"" + quant_type + "\" does not match its tensor's __" +
                      std::string(name_of(codebook)));
  }
  BnbQuantState s;
  s.block_size = json_u64(member("blocksize"), where + "blocksize");
  if (!bnb_is_one_of(s.block_size, bnb_block_sizes)) {
    throw FormatError(where + "blocksize " + std::to_string(s.block_size) +
                      " is not a bitsandbytes block size");
  }
  const std::string& dtype = json_string(member("dtype"), where + "dtype");
  if (!bnb_dtype_supported(dtype)) {
    throw FormatError(where + "dtype \"" + dtype + "\" is not bfloat16, float16 or float32");
  }
  s.dtype = float_type_from_name(dtype);
  const Json& shape = member("shape");
  if (!shape.is_array() || shape.size() != 2) throw FormatError(where + "shape is not [rows, cols]");
  s.rows = json_u64(shape[0], where + "shape[0]");
  s.cols = json_u64(shape[1], where + "shape[1]");
  constexpr auto max_index = static_cast<std::uint64_t>(std::numeric_limits<Eigen::Index>::max());
  if (s.rows == 0 || s.cols == 0 || s.rows > max_index || s.cols > max_index) {
    throw FormatError(where + "shape [" + std::to_string(s.rows) + ", " + std::to_string(s.cols) +
                      "] is not a non-empty matrix");
  }
  const auto nested_keys = state.count("nested_blocksize") + state.count("nested_dtype") + state.count("nested_offset");
  if (nested_keys != 0 && nested_keys != 3) {
    throw FormatError(where +
                      "has some but not all of nested_blocksize, nested_dtype and nested_offset");
  }
  s.nested = nested_keys == 3;
  if (!s.nested) return s;
  s.nested_block = json_u64(member("nested_blocksize"), where + "nested_blocksize");
  if (!bnb_is_one_of(s.nested_block, bnb_nested_block_sizes)) {
    throw FormatError(where + "nested_blocksize " + std::to_string(s.nested_block) +
                      " is not a bitsandbytes 8-bit block size");
  }
  const std::string& nested_dtype = json_string(member("nested_dtype"), where + "nested_dtype");
  if (nested_dtype != "float32") {
    throw FormatError(where + "nested_dtype \"" + nested_dtype + "\" is not float32");
  }
  const Json& offset = member("nested_offset");
  const double value = json_number(offset, where + "nested_offset");
  if (!(std::fabs(value) <= static_cast<double>(std::numeric_limits<float>::max()))) {
    throw FormatError(where + "nested_offset " + dump_json(offset) + " is not a finite float32");
  }
  s.offset = static_cast<float>(value);
  return s;
}

}  // namespace detail

/// The tensors bnb_tensors() writes for a rows x cols matrix, in its order, with their names,
/// dtypes and shapes and empty bytes; a tensor's size is dtype_size(dtype) times the product of
/// its shape. None depends on the matrix's values, so a caller can write a file's header before
/// the data exist. Throws ArgumentError for an empty name or shape, a codebook other than NF4
/// and FP4, a block size not in bnb_block_sizes, or an unsupported options.dtype.
inline std::vector<TensorData> bnb_tensor_layout(const std::string& weight_name, Eigen::Index rows,
                                                 Eigen::Index cols, Codebook codebook,
                                                 int block_size, const BnbOptions& options = {}) {
  detail::bnb_check_arguments(weight_name, rows, cols, codebook, block_size, options);
  std::uint64_t n = 0;
  if (!detail::multiply_checked(static_cast<std::uint64_t>(rows), static_cast<std::uint64_t>(cols),
                                n)) {
    detail::bnb_fail("bitsandbytes weight has too many elements (" + std::to_string(rows) + " x " +
                     std::to_string(cols) + ")");
  }
  const std::uint64_t blocks = detail::bnb_ceil_div(n, static_cast<std::uint64_t>(block_size));
  std::vector<TensorData> tensors;
  tensors.push_back({weight_name, Dtype::u8, {detail::bnb_ceil_div(n, 2), 1}, {}});
  tensors.push_back(
      {weight_name + ".absmax", options.double_quant ? Dtype::u8 : Dtype::f32, {blocks}, {}});
  tensors.push_back({weight_name + ".quant_map", Dtype::f32, {16}, {}});
  if (options.double_quant) {
    tensors.push_back({weight_name + ".nested_absmax",
                       Dtype::f32,
                       {detail::bnb_ceil_div(blocks, double_quant_block_size)},
                       {}});
    tensors.push_back({weight_name + ".nested_quant_map", Dtype::f32, {256}, {}});
  }
  const std::string state =
      detail::bnb_quant_state_text(rows, cols, codebook, block_size, options, 0.0f);
  tensors.push_back(
      {detail::bnb_quant_state_name(weight_name, codebook), Dtype::u8, {state.size()}, {}});
  return tensors;
}

/// The code bitsandbytes' quantize_4bit gives the pad element of an odd count (a 0.0): the code
/// of 0.0 in `codebook` (7 for NF4, 0 for FP4).
inline std::uint8_t bnb_pad_code(Codebook codebook) {
  const float zero = 0.0f;
  std::uint8_t packed = 0;
  float scale = 0.0f;
  loftq::detail::quantize_array(&zero, 1, 1, codebook, &packed, &scale);
  return static_cast<std::uint8_t>(packed >> 4);
}

/// The bitsandbytes tensors of q under weight_name (e.g. "model.layers.0.mlp.up_proj.weight"),
/// stored with `options`, in bnb_tensor_layout() order:
/// - weight_name: U8 [ceil(rows cols / 2), 1], q.codes() (first element in the high nibble; the
///   pad nibble of an odd count is bnb_pad_code(), as bitsandbytes writes it);
/// - .absmax: F32 [blocks], q.scales(); with double_quant U8 [blocks], double_quantize() codes;
/// - .quant_map: F32 [16], the codebook's table, FP4's -0 written as 0 as bitsandbytes has it;
/// - with double_quant, .nested_absmax: F32 [ceil(blocks / 256)] and .nested_quant_map: F32
///   [256], dynamic_map();
/// - .quant_state.bitsandbytes__nf4 (or __fp4): U8 [length], the JSON text
///   {"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": [rows, cols]}, with
///   double_quant followed by "nested_blocksize": 256, "nested_dtype": "float32" and
///   "nested_offset": 1.234567890e-02 (fixed width).
/// bitsandbytes loads from them QuantizedMatrix(q's arrays, LoadPath{q.load_path().quantized_from,
/// options.double_quant, options.dtype}); bnb_tensors(weight_name, q) stores q as it is. Throws
/// as bnb_tensor_layout().
inline std::vector<TensorData> bnb_tensors(const std::string& weight_name, const QuantizedMatrix& q,
                                           const BnbOptions& options) {
  std::vector<TensorData> tensors =
      bnb_tensor_layout(weight_name, q.rows(), q.cols(), q.codebook(), q.block_size(), options);
  tensors[0].bytes = q.codes();
  if (q.size() % 2 != 0) tensors[0].bytes.back() |= bnb_pad_code(q.codebook());
  const CodebookTable table = table_of(q.codebook());
  std::array<float, 16> quant_map{};
  for (std::size_t k = 0; k < quant_map.size(); ++k) {
    quant_map[k] = table.values[k] == 0.0f ? 0.0f : table.values[k];
  }
  tensors[2].bytes = detail::bnb_float_bytes(quant_map.data(), quant_map.size());
  float offset = 0.0f;
  if (options.double_quant) {
    DoubleQuantizedScales nested = double_quantize(q.scales());
    tensors[1].bytes = std::move(nested.codes);
    tensors[3].bytes = detail::bnb_float_bytes(nested.absmax.data(), nested.absmax.size());
    tensors[4].bytes = detail::bnb_float_bytes(dynamic_map().data(), dynamic_map().size());
    offset = nested.offset;
  } else {
    tensors[1].bytes = detail::bnb_float_bytes(q.scales().data(), q.scales().size());
  }
  const std::string state = detail::bnb_quant_state_text(q.rows(), q.cols(), q.codebook(),
                                                         q.block_size(), options, offset);
  tensors.back().bytes.assign(state.begin(), state.end());
  return tensors;
}

/// bnb_tensors() of q stored as its load path says: bnb_options_of(q.load_path()), so that
/// bitsandbytes dequantizes exactly q.dequantize().
inline std::vector<TensorData> bnb_tensors(const std::string& weight_name, const QuantizedMatrix& q) {
  return bnb_tensors(weight_name, q, bnb_options_of(q.load_path()));
}

/// Reads the bitsandbytes tensors of weight_name, found through `find`, back into a
/// QuantizedMatrix whose dequantize() is what bitsandbytes' dequantize_4bit returns for them:
/// its load path dequantizes to the quant state's dtype. Takes the nested block size and map
/// from the file (any 8-bit block size of bitsandbytes) and restores each absmax as bitsandbytes
/// does, restored_scale() (map[code] * absmax2 + offset in float32), kept as it is where it is
/// below 0 (within the 8-bit error of 0), as bitsandbytes keeps it; the matrix holds the
/// restored scales and no double quantization. The pad nibble of an odd count is set to 0, as
/// QuantizedMatrix holds it. Throws
/// ArgumentError for an empty weight_name and FormatError, naming the weight, tensor and
/// fault, for: a missing tensor, or quant states for both nf4 and fp4; a quant state that is not
/// UTF-8 JSON, or has an unknown, missing or mistyped key, a quant_type other than its name's,
/// an unsupported blocksize, dtype, nested_blocksize or nested_dtype, or a shape that is not two
/// positive integers; nested tensors without nested keys; a tensor whose dtype, shape or byte
/// count differs from the layout; a quant_map other than the codebook's table; a negative or
/// non-finite absmax or nested absmax, a non-finite nested map value or restored absmax.
inline QuantizedMatrix read_bnb(const std::string& weight_name, const BnbLookup& find) {
  if (weight_name.empty()) detail::bnb_fail("weight_name is empty");
  const std::string what = "bitsandbytes weight \"" + weight_name + "\"";
  const std::string nf4_name = detail::bnb_quant_state_name(weight_name, Codebook::nf4);
  const std::string fp4_name = detail::bnb_quant_state_name(weight_name, Codebook::fp4);
  const TensorData* nf4_state = find(nf4_name);
  const TensorData* fp4_state = find(fp4_name);
  if (nf4_state != nullptr && fp4_state != nullptr) {
    throw FormatError(what + " has quant states for both nf4 and fp4");
  }
  if (nf4_state == nullptr && fp4_state == nullptr) {
    throw FormatError(what + ": missing tensor \"" + nf4_name + "\" (or __fp4)");
  }
  const Codebook codebook = nf4_state != nullptr ? Codebook::nf4 : Codebook::fp4;
  const TensorData* state_tensor = nf4_state != nullptr ? nf4_state : fp4_state;
  const std::string state_name = nf4_state != nullptr ? nf4_name : fp4_name;
  const std::vector<std::uint64_t> state_shape =
      state_tensor->shape.size() == 1 ? state_tensor->shape
                                      : std::vector<std::uint64_t>{state_tensor->bytes.size()};
  detail::bnb_check_tensor(state_tensor, state_name, Dtype::u8, state_shape, what);
  const std::string_view text(reinterpret_cast<const char*>(state_tensor->bytes.data()),
                              state_tensor->bytes.size());
  const detail::BnbQuantState s =
      detail::bnb_parse_quant_state(parse_json(text, what + ": quant state"), codebook, what);

  std::uint64_t n = 0;
  if (!detail::multiply_checked(s.rows, s.cols, n) || n > std::numeric_limits<std::size_t>::max()) {
    throw FormatError(what + ": quant state shape [" + std::to_string(s.rows) + ", " +
                      std::to_string(s.cols) + "] has too many elements");
  }
  const std::uint64_t blocks = detail::bnb_ceil_div(n, s.block_size);
  const TensorData* weight = find(weight_name);
  const TensorData* absmax = find(weight_name + ".absmax");
  const TensorData* quant_map = find(weight_name + ".quant_map");
  const TensorData* nested_absmax = find(weight_name + ".nested_absmax");
  const TensorData* nested_map = find(weight_name + ".nested_quant_map");
  detail::bnb_check_tensor(weight, weight_name, Dtype::u8, {detail::bnb_ceil_div(n, 2), 1}, what);
  detail::bnb_check_tensor(absmax, weight_name + ".absmax", s.nested ? Dtype::u8 : Dtype::f32,
                           {blocks}, what);
  detail::bnb_check_tensor(quant_map, weight_name + ".quant_map", Dtype::f32, {16}, what);
  if (!s.nested && (nested_absmax != nullptr || nested_map != nullptr)) {
    throw FormatError(what + " has nested tensors but its quant state has no nested keys");
  }

  const std::vector<float> map = detail::bnb_load_floats(*quant_map);
  const CodebookTable table = table_of(codebook);
  for (std::size_t k = 0; k < map.size(); ++k) {
    if (!(map[k] == table.values[k])) {
      throw FormatError(what + ": quant_map[" + std::to_string(k) +
                        "] = " + std::to_string(map[k]) + " differs from bitsandbytes' " +
                        std::string(name_of(codebook)) + " value " +
                        std::to_string(table.values[k]));
    }
  }

  const auto check_absmax = [&](float value, const std::string& name, std::size_t b) {
    if (!std::isfinite(value) || value < 0.0f) {
      throw FormatError(what + ": " + name + "[" + std::to_string(b) +
                        "] = " + std::to_string(value) + " is not a finite value >= 0");
    }
  };
  std::vector<float> scales;
  if (!s.nested) {
    scales = detail::bnb_load_floats(*absmax);
    for (std::size_t b = 0; b < scales.size(); ++b) check_absmax(scales[b], "absmax", b);
  } else {
    detail::bnb_check_tensor(nested_absmax, weight_name + ".nested_absmax", Dtype::f32,
                             {detail::bnb_ceil_div(blocks, s.nested_block)}, what);
    detail::bnb_check_tensor(nested_map, weight_name + ".nested_quant_map", Dtype::f32, {256},
                             what);
    const std::vector<float> absmax2 = detail::bnb_load_floats(*nested_absmax);
    const std::vector<float> code_map = detail::bnb_load_floats(*nested_map);
    for (std::size_t k = 0; k < absmax2.size(); ++k) check_absmax(absmax2[k], "nested_absmax", k);
    for (std::size_t k = 0; k < code_map.size(); ++k) {
      if (!std::isfinite(code_map[k])) {
        throw FormatError(what + ": nested_quant_map[" + std::to_string(k) +
                          "] = " + std::to_string(code_map[k]) + " is not finite");
      }
    }
    scales.resize(absmax->bytes.size());
    for (std::size_t b = 0; b < scales.size(); ++b) {
      const float value = restored_scale(code_map[absmax->bytes[b]], absmax2[b / s.nested_block], s.offset);
      if (!std::isfinite(value)) {
        throw FormatError(what + ": restored absmax[" + std::to_string(b) +
                          "] = " + std::to_string(value) + " is not finite");
      }
      scales[b] = value;
    }
  }

  std::vector<std::uint8_t> codes = weight->bytes;
  if (n % 2 != 0) codes.back() = static_cast<std::uint8_t>(codes.back() & 0xF0u);
  try {
    return QuantizedMatrix(static_cast<Eigen::Index>(s.rows), static_cast<Eigen::Index>(s.cols),
                           static_cast<int>(s.block_size), codebook, std::move(codes),
                           std::move(scales), LoadPath{FloatType::float32, false, s.dtype});
  } catch (const std::invalid_argument& e) {  // the core's own checks, which those above cover
    throw FormatError(what + ": " + e.what());
  }
}

/// read_bnb() with the tensors of `tensors`, looked up by name (the first of a name).
inline QuantizedMatrix read_bnb(const std::string& weight_name,
                                const std::vector<TensorData>& tensors) {
  return read_bnb(weight_name, [&](const std::string& name) -> const TensorData* {
    const auto it = std::find_if(tensors.begin(), tensors.end(),
                                 [&](const TensorData& t) { return t.name == name; });
    return it == tensors.end() ? nullptr : &*it;
  });
}

/// The module prefix of a Linear8bitLt weight name: "a.b.weight" gives "a.b."; throws
/// ArgumentError for a name that does not end in ".weight".
inline std::string bnb_int8_prefix(const std::string& weight_name) {
  const std::string suffix = ".weight";
  if (weight_name.size() <= suffix.size() ||
      weight_name.compare(weight_name.size() - suffix.size(), suffix.size(), suffix) != 0) {
    detail::bnb_fail("weight_name = \"" + weight_name + "\" does not end in \".weight\" (a Linear8bitLt weight)");
  }
  return weight_name.substr(0, weight_name.size() - suffix.size() + 1);
}

/// The tensors bnb_int8_tensors() writes for a rows x cols weight, in its order, with empty bytes.
/// Throws ArgumentError for a weight_name not ending in ".weight" or an empty shape.
inline std::vector<TensorData> bnb_int8_tensor_layout(const std::string& weight_name, Eigen::Index rows,
                                                      Eigen::Index cols) {
  const std::string prefix = bnb_int8_prefix(weight_name);
  if (rows < 1 || cols < 1) {
    detail::bnb_fail("shape = [" + std::to_string(rows) + ", " + std::to_string(cols) + "] is empty");
  }
  const auto r = static_cast<std::uint64_t>(rows);
  return {{weight_name, Dtype::i8, {r, static_cast<std::uint64_t>(cols)}, {}},
          {prefix + "SCB", Dtype::f32, {r}, {}},
          {prefix + "weight_format", Dtype::u8, {}, {}}};
}

/// The tensors transformers saves for a bitsandbytes Linear8bitLt holding q (has_fp16_weights
/// False, LLM.int8), which q must be: Codebook::llm_int8, one row per block (block_size = cols),
/// no double quantization, dequantized to float32 (int8_vectorwise_dequant's type):
/// - weight_name: I8 [rows, cols], the codes (q);
/// - <module>.SCB: F32 [rows], q.scales(), the row absmax;
/// - <module>.weight_format: U8 [] (a scalar), 0: row-major, the only format bitsandbytes saves.
/// bitsandbytes then dequantizes exactly q.dequantize(). Throws ArgumentError for a q that is not
/// such a matrix or a weight_name not ending in ".weight".
inline std::vector<TensorData> bnb_int8_tensors(const std::string& weight_name, const QuantizedMatrix& q) {
  if (q.codebook() != Codebook::llm_int8 || q.block_size() != q.cols()) {
    detail::bnb_fail("a Linear8bitLt weight needs codebook llm_int8 with one row per block, not " +
                     std::string(name_of(q.codebook())) + " in blocks of " + std::to_string(q.block_size()) +
                     " for " + std::to_string(q.cols()) + " columns");
  }
  if (q.load_path().double_quant || q.load_path().dequantized_to != FloatType::float32) {
    detail::bnb_fail("a Linear8bitLt weight dequantizes to float32 without double quantization, not to " +
                     std::string(name_of(q.load_path().dequantized_to)) +
                     (q.load_path().double_quant ? " with double quantization" : ""));
  }
  std::vector<TensorData> tensors = bnb_int8_tensor_layout(weight_name, q.rows(), q.cols());
  tensors[0].bytes = q.codes();
  tensors[1].bytes = detail::bnb_float_bytes(q.scales().data(), q.scales().size());
  tensors[2].bytes = {0};
  return tensors;
}

/// Reads the Linear8bitLt tensors of weight_name (bnb_int8_tensors()), found through `find`,
/// into the row-wise LLMInt8 QuantizedMatrix whose dequantize() is bitsandbytes'
/// int8_vectorwise_dequant of them. Throws ArgumentError for a weight_name not ending in
/// ".weight", FormatError, naming the weight and tensor, for a missing tensor, a dtype or shape
/// other than the layout's, a weight_format other than 0, or an SCB that is not finite and >= 0.
inline QuantizedMatrix read_bnb_int8(const std::string& weight_name, const BnbLookup& find) {
  const std::string prefix = bnb_int8_prefix(weight_name);
  const std::string what = "bitsandbytes int8 weight \"" + weight_name + "\"";
  const TensorData* weight = find(weight_name);
  if (weight == nullptr) throw FormatError(what + ": missing tensor \"" + weight_name + "\"");
  if (weight->shape.size() != 2 || weight->shape[0] == 0 || weight->shape[1] == 0) {
    throw FormatError(what + " has shape " + detail::bnb_shape_text(weight->shape) + ", expected [rows, cols]");
  }
  const std::uint64_t rows = weight->shape[0];
  const std::uint64_t cols = weight->shape[1];
  constexpr auto max_index = static_cast<std::uint64_t>(std::numeric_limits<Eigen::Index>::max());
  if (rows > max_index || cols > max_index || cols > static_cast<std::uint64_t>(std::numeric_limits<int>::max())) {
    throw FormatError(what + " has shape " + detail::bnb_shape_text(weight->shape) + ", too large");
  }
  detail::bnb_check_tensor(weight, weight_name, Dtype::i8, {rows, cols}, what);
  const TensorData* scb = find(prefix + "SCB");
  detail::bnb_check_tensor(scb, prefix + "SCB", Dtype::f32, {rows}, what);
  const TensorData* format = find(prefix + "weight_format");
  detail::bnb_check_tensor(format, prefix + "weight_format", Dtype::u8, {}, what);
  if (format->bytes[0] != 0) {
    throw FormatError(what + ": weight_format = " + std::to_string(format->bytes[0]) +
                      " is not 0 (row-major, the only format bitsandbytes saves)");
  }
  std::vector<float> scales = detail::bnb_load_floats(*scb);
  for (std::size_t r = 0; r < scales.size(); ++r) {
    if (!std::isfinite(scales[r]) || scales[r] < 0.0f) {
      throw FormatError(what + ": SCB[" + std::to_string(r) + "] = " + std::to_string(scales[r]) +
                        " is not a finite value >= 0");
    }
  }
  return QuantizedMatrix(static_cast<Eigen::Index>(rows), static_cast<Eigen::Index>(cols), static_cast<int>(cols),
                         Codebook::llm_int8, weight->bytes, std::move(scales));
}

/// read_bnb_int8() with the tensors of `tensors`, looked up by name (the first of a name).
inline QuantizedMatrix read_bnb_int8(const std::string& weight_name, const std::vector<TensorData>& tensors) {
  return read_bnb_int8(weight_name, [&](const std::string& name) -> const TensorData* {
    const auto it = std::find_if(tensors.begin(), tensors.end(), [&](const TensorData& t) { return t.name == name; });
    return it == tensors.end() ? nullptr : &*it;
  });
}

}  // namespace loftq::io
