/// @file load_path.hpp
/// LoadPath: how a quantized backbone is stored and what bitsandbytes dequantizes at load time,
/// so that the solver's Q is the matrix the loader hands to the matmul.
#pragma once

#include <Eigen/Core>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "codebook.hpp"
#include "detail/checks.hpp"

namespace loftq {

/// A floating-point type values pass through on their way to the matmul.
enum class FloatType : std::uint8_t {
  float32,   ///< IEEE binary32: values kept as they are.
  bfloat16,  ///< bfloat16 (8 significant bits), rounded to nearest even.
  float16,   ///< IEEE binary16 (11 significant bits, largest 65504), rounded to nearest even.
};

/// Lower-case name: "float32", "bfloat16" or "float16" (PyTorch's dtype names).
constexpr std::string_view name_of(FloatType type) {
  switch (type) {
    case FloatType::float32:
      return "float32";
    case FloatType::bfloat16:
      return "bfloat16";
    case FloatType::float16:
      return "float16";
  }
  return "";
}

/// The FloatType named `name` (as name_of() spells it); throws std::invalid_argument otherwise.
inline FloatType float_type_from_name(std::string_view name) {
  for (FloatType t : {FloatType::float32, FloatType::bfloat16, FloatType::float16}) {
    if (name_of(t) == name) return t;
  }
  detail::fail("float type = \"" + std::string(name) + "\" is not supported (float32, bfloat16, float16)");
}

/// x rounded to `type` and back to float, as PyTorch's `.to(dtype)` rounds: to nearest, ties to
/// even; beyond float16's range a value becomes infinite.
inline float round_to(FloatType type, float x) {
  switch (type) {
    case FloatType::bfloat16:
      return static_cast<float>(Eigen::bfloat16(x));
    case FloatType::float16:
      return static_cast<float>(Eigen::half(x));
    case FloatType::float32:
      break;
  }
  return x;
}

/// x[0 .. n) rounded to `type` in place (nothing for float32).
inline void round_to(FloatType type, float* x, std::size_t n) {
  if (type == FloatType::float32) return;
  for (std::size_t i = 0; i < n; ++i) x[i] = round_to(type, x[i]);
}

/// What happens to a blockwise-quantized backbone between quantization and the matmul, as
/// bitsandbytes does it. The default (float32 in, no double quantization, float32 out) is the
/// plain blockwise quantization of blockwise.hpp.
///
/// - A backbone stored quantized (bitsandbytes' Linear4bit or Linear8bitLt tensors) is quantized
///   from float32: quantized_from = float32.
/// - A 16-bit backbone that bitsandbytes quantizes when it loads it (`load_in_4bit`,
///   `load_in_8bit`) is quantized from its 16-bit values: quantized_from = its type. Each element
///   of the target is rounded to that type before its block absmax and code are taken, so both
///   are the ones bitsandbytes finds in the 16-bit file (Codebook::llm_int8 then rounds to
///   float16 as well, as bitsandbytes' Int8Params does).
/// - double_quant: the block absmax are double-quantized (`bnb_4bit_use_double_quant`) and the
///   loader multiplies by the restored ones (double_quant.hpp).
/// - dequantized_to: the type of the dequantized values bitsandbytes returns (a 4-bit quant
///   state's dtype, the weight's type); each value table[code] * scale is rounded to it.
struct LoadPath {
  FloatType quantized_from = FloatType::float32;  ///< Type the target is rounded to before quantization.
  bool double_quant = false;                      ///< Block absmax double-quantized (4-bit codebooks).
  FloatType dequantized_to = FloatType::float32;  ///< Type of the dequantized values.

  /// True for the default path, which changes nothing.
  bool is_plain() const {
    return quantized_from == FloatType::float32 && !double_quant && dequantized_to == FloatType::float32;
  }
  /// Equal when every field is.
  friend bool operator==(const LoadPath& a, const LoadPath& b) {
    return a.quantized_from == b.quantized_from && a.double_quant == b.double_quant &&
           a.dequantized_to == b.dequantized_to;
  }
  /// Not equal.
  friend bool operator!=(const LoadPath& a, const LoadPath& b) { return !(a == b); }
};

namespace detail {

/// Throws unless every field of `path` is a valid value and double quantization goes with a
/// 4-bit codebook (bitsandbytes double-quantizes 4-bit weights only).
inline void check_load_path(const LoadPath& path, Codebook codebook) {
  for (FloatType type : {path.quantized_from, path.dequantized_to}) {
    if (name_of(type).empty()) fail("load_path: float type " + std::to_string(static_cast<int>(type)) + " is not a FloatType");
  }
  if (path.double_quant && bits_of(codebook) != 4) {
    fail("load_path.double_quant = true needs a 4-bit codebook, not " + std::string(name_of(codebook)) +
         " (bitsandbytes double-quantizes 4-bit weights only)");
  }
}

}  // namespace detail

}  // namespace loftq
