/// @file kernels/passes.hpp
/// The whole-array passes of blockwise quantization: quantize, dequantize and the fused
/// quantize-residual over an array, cut in chunks run in parallel on the kernels of active_isa();
/// and the sums of squares in double that measure errors on the kernels of an Isa.
/// Not API: the public entry points are in blockwise.hpp, quantized.hpp and solver.hpp.
///
/// Every instruction set gives the same bits, and the passes cut arrays into the same chunks
/// whatever the thread count, so results depend on neither.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <stdexcept>

#include "../codebook.hpp"
#include "../detail/cpu.hpp"
#include "../detail/packing.hpp"
#include "../isa.hpp"
#include "../load_path.hpp"
#include "../threads.hpp"
#include "avx2.hpp"
#include "avx512.hpp"
#include "scalar.hpp"

namespace loftq {
namespace detail {

/// About how many elements a chunk of the whole-array passes holds.
inline constexpr std::size_t chunk_elements = 16384;

/// Outputs of dequantize_array() of at least this many bytes are written with non-temporal
/// stores: they do not fit the caches, and such stores do not read the lines they fill.
inline constexpr std::size_t nontemporal_bytes = std::size_t{8} << 20;

/// Blocks per chunk of the whole-array passes: about chunk_elements elements, a multiple of 4
/// blocks so that every chunk starts a byte of 2-, 4- and 8-bit codes. It depends on the block
/// size only, so the chunks are the same whatever the thread count.
inline std::size_t chunk_blocks(int block_size) {
  const std::size_t blocks =
      std::max<std::size_t>(1, chunk_elements / static_cast<std::size_t>(block_size));
  return (blocks + 3) / 4 * 4;
}

/// Throws std::invalid_argument unless codebook is one of the Codebook values.
inline void check_codebook(Codebook codebook) { static_cast<void>(table_of(codebook)); }

/// The LookupQuantizer of `codebook`, built once (empty for Int8 and LLMInt8). Throws std::invalid_argument
/// when codebook is not a Codebook.
inline const kernels::LookupQuantizer& lookup_quantizer(Codebook codebook) {
  static const std::array<kernels::LookupQuantizer, 8> quantizers = [] {
    std::array<kernels::LookupQuantizer, 8> q{};
    for (Codebook c : {Codebook::nf2, Codebook::nf4, Codebook::fp4, Codebook::uniform2,
                       Codebook::uniform4, Codebook::uniform8}) {
      q[static_cast<std::size_t>(c)] = kernels::make_lookup_quantizer(table_of(c));
    }
    return q;
  }();
  check_codebook(codebook);
  return quantizers[static_cast<std::size_t>(codebook)];
}

/// Runs chunk(first_block, first_element, elements) for every chunk of an array of n elements
/// in blocks of block_size, spread over threads().
template <class Chunk>
void for_each_chunk(std::size_t n, int block_size, Chunk&& chunk) {
  const auto block = static_cast<std::size_t>(block_size);
  const std::size_t per_chunk = chunk_blocks(block_size);
  const std::size_t blocks = (n + block - 1) / block;
  const std::size_t chunks = (blocks + per_chunk - 1) / per_chunk;
  parallel_for(static_cast<std::ptrdiff_t>(chunks), [&](std::ptrdiff_t c) {
    const std::size_t first_block = static_cast<std::size_t>(c) * per_chunk;
    const std::size_t first = first_block * block;
    chunk(first_block, first, std::min(per_chunk * block, n - first));
  });
}

/// Quantizes one run x[0..n) that starts a block and a byte of codes, on the calling thread with
/// the kernels of `isa`: scales gets one absmax per block, packed the codes. lookup is
/// lookup_quantizer(codebook).
inline void quantize_run(Isa isa, const float* x, std::size_t n, int block_size, Codebook codebook,
                         const kernels::LookupQuantizer& lookup, std::uint8_t* packed, float* scales) {
  switch (isa) {
#if LOFTQ_X86_KERNELS
    case Isa::avx512:
      return kernels::avx512::quantize(x, n, block_size, codebook, lookup, packed, scales);
    case Isa::avx2:
      return kernels::avx2::quantize(x, n, block_size, codebook, lookup, packed, scales);
#endif
    default:
      return kernels::scalar::quantize(x, n, block_size, codebook, lookup, packed, scales);
  }
}

/// Quantizes x[0..n) in blocks of block_size with `codebook` on the active Isa: scales gets one
/// absmax per block, packed all packed_bytes(n, bits) bytes of codes. block_size >= 1. x is
/// taken as it is (LLMInt8's rounding to float16 is the caller's: round_target()). Throws
/// std::invalid_argument when codebook is not a Codebook.
inline void quantize_array(const float* x, std::size_t n, int block_size, Codebook codebook,
                           std::uint8_t* packed, float* scales) {
  const kernels::LookupQuantizer& lookup = lookup_quantizer(codebook);
  const Isa isa = active_isa();
  const auto bits = static_cast<std::size_t>(bits_of(codebook));
  for_each_chunk(n, block_size, [&](std::size_t first_block, std::size_t first, std::size_t count) {
    quantize_run(isa, x + first, count, block_size, codebook, lookup, packed + first * bits / 8,
                 scales + first_block);
  });
}

/// What LLMInt8's dequantization multiplies q * absmax by: bitsandbytes' 7.874015718698502e-3,
/// which PyTorch applies as a float32.
inline constexpr float llm_int8_reciprocal = static_cast<float>(7.874015718698502e-3);

/// LLMInt8's dequantized value of code q (a two's-complement byte) in a block of scale absmax:
/// (q * absmax) * llm_int8_reciprocal in float32, rounded after each product.
inline float llm_int8_value(std::uint8_t code, float absmax) {
  return kernels::unfused(static_cast<float>(static_cast<std::int8_t>(code)) * absmax) * llm_int8_reciprocal;
}

/// Dequantizes one run of n elements that starts a block and a byte of codes into out, on the
/// calling thread with the kernels of `isa` (LLMInt8: llm_int8_value(), one portable body).
inline void dequantize_run(Isa isa, const std::uint8_t* packed, const float* scales, std::size_t n,
                           int block_size, Codebook codebook, bool nontemporal, float* out) {
  if (codebook == Codebook::llm_int8) {
    const auto block = static_cast<std::size_t>(block_size);
    for (std::size_t i = 0; i < n; ++i) out[i] = llm_int8_value(packed[i], scales[i / block]);
    return;
  }
  switch (isa) {
#if LOFTQ_X86_KERNELS
    case Isa::avx512:
      if (nontemporal) return kernels::avx512::dequantize_nontemporal(packed, scales, n, block_size, codebook, out);
      return kernels::avx512::dequantize(packed, scales, n, block_size, codebook, out);
    case Isa::avx2:
      if (nontemporal) return kernels::avx2::dequantize_nontemporal(packed, scales, n, block_size, codebook, out);
      return kernels::avx2::dequantize(packed, scales, n, block_size, codebook, out);
#endif
    default:
      static_cast<void>(nontemporal);
      return kernels::scalar::dequantize(packed, scales, n, block_size, codebook, out);
  }
}

/// Dequantizes n elements in blocks of block_size from packed codes and per-block scales into
/// out[0..n) on the active Isa. block_size >= 1. Throws std::invalid_argument when codebook is
/// not a Codebook.
inline void dequantize_array(const std::uint8_t* packed, const float* scales, std::size_t n,
                             int block_size, Codebook codebook, float* out) {
  check_codebook(codebook);
  const Isa isa = active_isa();
  const bool nontemporal = n * sizeof(float) >= nontemporal_bytes;
  const auto bits = static_cast<std::size_t>(bits_of(codebook));
  for_each_chunk(n, block_size, [&](std::size_t first_block, std::size_t first, std::size_t count) {
    dequantize_run(isa, packed + first * bits / 8, scales + first_block, count, block_size, codebook,
                   nontemporal, out + first);
  });
}

/// Rounds a target x[0..n) as `path` and `codebook` have it before quantization: to
/// path.quantized_from, then to float16 for LLMInt8 (bitsandbytes' Int8Params casts to half).
inline void round_target(const LoadPath& path, Codebook codebook, float* x, std::size_t n) {
  round_to(path.quantized_from, x, n);
  if (codebook == Codebook::llm_int8) round_to(FloatType::float16, x, n);
}

/// True when `path` and `codebook` quantize and dequantize as the fused kernels do: a plain path
/// and a codebook other than LLMInt8.
inline bool is_kernel_path(const LoadPath& path, Codebook codebook) {
  return path.is_plain() && codebook != Codebook::llm_int8;
}

/// quantize_residual_array() of one run of n elements that starts a block and a byte of codes,
/// on the calling thread with the kernels of `isa`; lookup is lookup_quantizer(codebook).
inline void quantize_residual_run(Isa isa, const float* w, const float* low_rank, std::size_t n,
                                  int block_size, Codebook codebook,
                                  const kernels::LookupQuantizer& lookup, std::uint8_t* packed,
                                  float* scales, float* residual) {
  switch (isa) {
#if LOFTQ_X86_KERNELS
    case Isa::avx512:
      return kernels::avx512::quantize_residual(w, low_rank, n, block_size, codebook, lookup,
                                                packed, scales, residual);
    case Isa::avx2:
      return kernels::avx2::quantize_residual(w, low_rank, n, block_size, codebook, lookup, packed,
                                              scales, residual);
#endif
    default:
      return kernels::scalar::quantize_residual(w, low_rank, n, block_size, codebook, lookup,
                                                packed, scales, residual);
  }
}

/// Quantizes target = w - low_rank (n elements, blocks of block_size) as quantize_array() does
/// and writes residual[i] = w[i] - (dequantized target)[i], in one pass on the active Isa that
/// reads w and low_rank once. block_size >= 1. Throws std::invalid_argument when codebook is
/// not a Codebook.
inline void quantize_residual_array(const float* w, const float* low_rank, std::size_t n,
                                    int block_size, Codebook codebook, std::uint8_t* packed,
                                    float* scales, float* residual) {
  const kernels::LookupQuantizer& lookup = lookup_quantizer(codebook);
  const Isa isa = active_isa();
  const auto bits = static_cast<std::size_t>(bits_of(codebook));
  for_each_chunk(n, block_size, [&](std::size_t first_block, std::size_t first, std::size_t count) {
    quantize_residual_run(isa, w + first, low_rank + first, count, block_size, codebook, lookup,
                          packed + first * bits / 8, scales + first_block, residual + first);
  });
}

/// Adds the terms (x[i] - y[i])^2, or x[i]^2 when y is null, of n more elements to `sum`, on
/// the kernels of `isa` (the same bits on each).
inline void add_squares(Isa isa, kernels::SquareSum& sum, const float* x, const float* y,
                        std::size_t n) {
  switch (isa) {
#if LOFTQ_X86_KERNELS
    case Isa::avx512:
      return kernels::avx512::add_squares(sum, x, y, n);
    case Isa::avx2:
      return kernels::avx2::add_squares(sum, x, y, n);
#endif
    default:
      return kernels::scalar::add_squares(sum, x, y, n);
  }
}

/// Adds the terms ((w[i] - q[i]) - low_rank[i])^2 of n more elements to `sum`, q the values
/// dequantized from `packed` and `scales`, a run that starts a block and a byte of codes, on the
/// kernels of `isa`: the same bits as dequantize_run(), w - q in float and add_squares() of that
/// and low_rank, without writing q. Throws std::logic_error for LLMInt8, whose values the fused
/// kernels do not model.
inline void add_error_squares(Isa isa, kernels::SquareSum& sum, const float* w,
                              const std::uint8_t* packed, const float* scales,
                              const float* low_rank, std::size_t n, int block_size,
                              Codebook codebook) {
  if (codebook == Codebook::llm_int8) throw std::logic_error("add_error_squares: LLMInt8 codes");
  switch (isa) {
#if LOFTQ_X86_KERNELS
    case Isa::avx512:
      return kernels::avx512::add_error_squares(sum, w, packed, scales, low_rank, n, block_size,
                                                codebook);
    case Isa::avx2:
      return kernels::avx2::add_error_squares(sum, w, packed, scales, low_rank, n, block_size,
                                              codebook);
#endif
    default:
      return kernels::scalar::add_error_squares(sum, w, packed, scales, low_rank, n, block_size,
                                                codebook);
  }
}

/// Sum over i < n of (x[i] - y[i])^2, or of x[i]^2 when y is null, in double: one SquareSum, on
/// the kernels of `isa` (the same bits on each).
inline double squared_sum(Isa isa, const float* x, const float* y, std::size_t n) {
  kernels::SquareSum sum;
  add_squares(isa, sum, x, y, n);
  return sum.total();
}

}  // namespace detail
}  // namespace loftq
