/// @file codebook.hpp
/// Codebooks: the lookup tables that blockwise quantization maps each scaled value to.
///
/// A dequantized value is `table(codebook)[code] * factor`, where `factor` is the block's
/// absmax for the lookup codebooks (NF2, NF4, FP4, Uniform<N>) and absmax / 127 for Int8;
/// LLMInt8 computes `(code * absmax) * 7.874015718698502e-3` instead, as bitsandbytes does.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>

#include "detail/checks.hpp"

namespace loftq {

/// The built-in codebooks, as a run-time value.
enum class Codebook : std::uint8_t {
  nf2,       ///< PEFT's 2-bit normal map: -1, 0, 0.3379..., 1.
  nf4,       ///< bitsandbytes' and PEFT's 4-bit NormalFloat.
  fp4,       ///< bitsandbytes' 4-bit float, in bit-pattern order (bit 3 is the sign).
  uniform2,  ///< 4 evenly spaced levels on [-1, 1].
  uniform4,  ///< 16 evenly spaced levels on [-1, 1].
  uniform8,  ///< 256 evenly spaced levels on [-1, 1].
  int8,      ///< Symmetric linear int8: round-half-even(x * 127 / absmax) in [-127, 127].
  /// bitsandbytes' LLM.int8 weight quantization (int8_vectorwise_quant / _dequant): values
  /// rounded to float16, q = round-half-even(x * ((1 / absmax) * 127)), value
  /// (q * absmax) * 7.874015718698502e-3, each operation in float32. With one row per block
  /// (block_size = cols) it is bitsandbytes' row-wise quantization, absmax its SCB.
  llm_int8,
};

namespace detail {

inline constexpr std::array<float, 4> nf2_table{-0x1.000000p+0f, 0x0.0p+0f, 0x1.5a0674p-2f,
                                                0x1.000000p+0f};

inline constexpr std::array<float, 16> nf4_table{
    -0x1.000000p+0f, -0x1.647362p-1f, -0x1.0cd660p-1f, -0x1.946540p-2f,
    -0x1.23449ap-2f, -0x1.7a6a7ep-3f, -0x1.74f0e2p-4f, 0x0.0p+0f,
    0x1.45f5fep-4f,  0x1.4995c6p-3f,  0x1.f809bap-3f,  0x1.5a0674p-2f,
    0x1.c34970p-2f,  0x1.200f56p-1f,  0x1.722766p-1f,  0x1.000000p+0f};

inline constexpr std::array<float, 16> fp4_table{
    0x0.0p+0f,       0x1.555556p-8f,  0x1.555556p-1f,  0x1.000000p+0f,
    0x1.555556p-2f,  0x1.000000p-1f,  0x1.555556p-3f,  0x1.000000p-2f,
    -0x0.0p+0f,      -0x1.555556p-8f, -0x1.555556p-1f, -0x1.000000p+0f,
    -0x1.555556p-2f, -0x1.000000p-1f, -0x1.555556p-3f, -0x1.000000p-2f};

/// Levels (2i - (2^Bits - 1)) / (2^Bits - 1), each the correctly rounded float32 quotient, so
/// the table is exactly symmetric.
template <int Bits>
constexpr std::array<float, (1 << Bits)> make_uniform_table() {
  constexpr int levels = 1 << Bits;
  std::array<float, levels> table{};
  for (int i = 0; i < levels; ++i) {
    table[static_cast<std::size_t>(i)] =
        static_cast<float>(2 * i - (levels - 1)) / static_cast<float>(levels - 1);
  }
  return table;
}

/// Int8 codes are the two's-complement bytes of q; the table gives q as a float.
constexpr std::array<float, 256> make_int8_table() {
  std::array<float, 256> table{};
  for (int code = 0; code < 256; ++code) {
    table[static_cast<std::size_t>(code)] = static_cast<float>(code < 128 ? code : code - 256);
  }
  return table;
}

inline constexpr std::array<float, 4> uniform2_table = make_uniform_table<2>();
inline constexpr std::array<float, 16> uniform4_table = make_uniform_table<4>();
inline constexpr std::array<float, 256> uniform8_table = make_uniform_table<8>();
inline constexpr std::array<float, 256> int8_table = make_int8_table();

}  // namespace detail

/// Bits per code: 2, 4 or 8.
constexpr int bits_of(Codebook codebook) {
  switch (codebook) {
    case Codebook::nf2:
    case Codebook::uniform2:
      return 2;
    case Codebook::nf4:
    case Codebook::fp4:
    case Codebook::uniform4:
      return 4;
    case Codebook::uniform8:
    case Codebook::int8:
    case Codebook::llm_int8:
      return 8;
  }
  return 0;
}

/// Lower-case name: "nf2", "nf4", "fp4", "uniform2", "uniform4", "uniform8", "int8" or
/// "llm_int8".
constexpr std::string_view name_of(Codebook codebook) {
  switch (codebook) {
    case Codebook::nf2:
      return "nf2";
    case Codebook::nf4:
      return "nf4";
    case Codebook::fp4:
      return "fp4";
    case Codebook::uniform2:
      return "uniform2";
    case Codebook::uniform4:
      return "uniform4";
    case Codebook::uniform8:
      return "uniform8";
    case Codebook::int8:
      return "int8";
    case Codebook::llm_int8:
      return "llm_int8";
  }
  return "";
}

/// True for Int8 and LLMInt8, whose codes are rounded, not looked up.
constexpr bool is_linear(Codebook codebook) {
  return codebook == Codebook::int8 || codebook == Codebook::llm_int8;
}

/// The dequantization table of a codebook: 2^bits floats in code order.
struct CodebookTable {
  const float* values;  ///< values[code] for code in [0, size).
  int size;             ///< 2^bits.
};

/// The dequantization table of `codebook`.
inline CodebookTable table_of(Codebook codebook) {
  switch (codebook) {
    case Codebook::nf2:
      return {detail::nf2_table.data(), 4};
    case Codebook::nf4:
      return {detail::nf4_table.data(), 16};
    case Codebook::fp4:
      return {detail::fp4_table.data(), 16};
    case Codebook::uniform2:
      return {detail::uniform2_table.data(), 4};
    case Codebook::uniform4:
      return {detail::uniform4_table.data(), 16};
    case Codebook::uniform8:
      return {detail::uniform8_table.data(), 256};
    case Codebook::int8:
    case Codebook::llm_int8:
      return {detail::int8_table.data(), 256};
  }
  detail::fail("codebook = " + std::to_string(static_cast<int>(codebook)) + " is not a Codebook");
}

/// The codebook named `name` (as name_of() spells it); throws std::invalid_argument otherwise.
inline Codebook codebook_from_name(std::string_view name) {
  for (Codebook c : {Codebook::nf2, Codebook::nf4, Codebook::fp4, Codebook::uniform2,
                     Codebook::uniform4, Codebook::uniform8, Codebook::int8, Codebook::llm_int8}) {
    if (name_of(c) == name) return c;
  }
  detail::fail("codebook = \"" + std::string(name) +
               "\" is not supported (nf2, nf4, fp4, uniform2, uniform4, uniform8, int8, llm_int8)");
}

/// The default codebook for a bit width, as loftq(W, rank, bits, iters) uses it:
/// 2 -> NF2, 4 -> NF4, 8 -> Int8; throws std::invalid_argument for other bits.
inline Codebook codebook_for_bits(int bits) {
  switch (bits) {
    case 2:
      return Codebook::nf2;
    case 4:
      return Codebook::nf4;
    case 8:
      return Codebook::int8;
    default:
      detail::fail("bits = " + std::to_string(bits) + " is not supported (2, 4 or 8)");
  }
}

/// Codebook policy types for `quantize<Book>(W, block_size)`. A policy gives `id` (a
/// Codebook), `bits` and `name`; is_codebook_v checks that contract.
struct NF2 {
  static constexpr Codebook id = Codebook::nf2;     ///< Run-time codebook.
  static constexpr int bits = 2;                    ///< Bits per code.
  static constexpr std::string_view name = "nf2";  ///< Lower-case name.
};

/// bitsandbytes' 4-bit NormalFloat.
struct NF4 {
  static constexpr Codebook id = Codebook::nf4;     ///< Run-time codebook.
  static constexpr int bits = 4;                    ///< Bits per code.
  static constexpr std::string_view name = "nf4";  ///< Lower-case name.
};

/// bitsandbytes' 4-bit float.
struct FP4 {
  static constexpr Codebook id = Codebook::fp4;     ///< Run-time codebook.
  static constexpr int bits = 4;                    ///< Bits per code.
  static constexpr std::string_view name = "fp4";  ///< Lower-case name.
};

/// Symmetric linear int8.
struct Int8 {
  static constexpr Codebook id = Codebook::int8;     ///< Run-time codebook.
  static constexpr int bits = 8;                     ///< Bits per code.
  static constexpr std::string_view name = "int8";  ///< Lower-case name.
};

/// bitsandbytes' LLM.int8 weight quantization (Codebook::llm_int8).
struct LLMInt8 {
  static constexpr Codebook id = Codebook::llm_int8;     ///< Run-time codebook.
  static constexpr int bits = 8;                         ///< Bits per code.
  static constexpr std::string_view name = "llm_int8";  ///< Lower-case name.
};

/// 2^Bits evenly spaced levels on [-1, 1]; Bits is 2, 4 or 8.
template <int Bits>
struct Uniform {
  static_assert(Bits == 2 || Bits == 4 || Bits == 8, "loftq::Uniform<Bits>: Bits must be 2, 4 or 8");
  /// Run-time codebook.
  static constexpr Codebook id =
      Bits == 2 ? Codebook::uniform2 : (Bits == 4 ? Codebook::uniform4 : Codebook::uniform8);
  static constexpr int bits = Bits;              ///< Bits per code.
  static constexpr std::string_view name = name_of(id);  ///< Lower-case name.
};

/// True when Book is a codebook policy: it has `id` of type Codebook and a matching `bits`.
template <class Book, class = void>
struct is_codebook : std::false_type {};

/// Specialization for types that give `id` and `bits`.
template <class Book>
struct is_codebook<Book, std::void_t<decltype(Book::id), decltype(Book::bits)>>
    : std::bool_constant<std::is_same_v<std::remove_cv_t<decltype(Book::id)>, Codebook> &&
                         Book::bits == bits_of(Book::id)> {};

/// is_codebook<Book>::value.
template <class Book>
inline constexpr bool is_codebook_v = is_codebook<Book>::value;

}  // namespace loftq
