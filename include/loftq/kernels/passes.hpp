/// @file kernels/passes.hpp
/// The whole-array passes of blockwise quantization: quantize, dequantize and the fused
/// quantize-residual over an array, cut in chunks run in parallel on the kernels of active_isa().
/// Not API: the public entry points are in blockwise.hpp, quantized.hpp and solver.hpp.
///
/// Every instruction set gives the same bits, and the passes cut arrays into the same chunks
/// whatever the thread count, so results depend on neither.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>

#include "../codebook.hpp"
#include "../detail/cpu.hpp"
#include "../isa.hpp"
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

/// The LookupQuantizer of `codebook`, built once (empty for Int8). Throws std::invalid_argument
/// when codebook is not a Codebook.
inline const kernels::LookupQuantizer& lookup_quantizer(Codebook codebook) {
  static const std::array<kernels::LookupQuantizer, 7> quantizers = [] {
    std::array<kernels::LookupQuantizer, 7> q{};
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

/// Quantizes x[0..n) in blocks of block_size with `codebook` on the active Isa: scales gets one
/// absmax per block, packed all packed_bytes(n, bits) bytes of codes. block_size >= 1. Throws
/// std::invalid_argument when codebook is not a Codebook.
inline void quantize_array(const float* x, std::size_t n, int block_size, Codebook codebook,
                           std::uint8_t* packed, float* scales) {
  const kernels::LookupQuantizer& lookup = lookup_quantizer(codebook);
  const Isa isa = active_isa();
  const auto bits = static_cast<std::size_t>(bits_of(codebook));
  for_each_chunk(n, block_size, [&](std::size_t first_block, std::size_t first, std::size_t count) {
    const float* in = x + first;
    std::uint8_t* codes = packed + first * bits / 8;
    float* block_scales = scales + first_block;
    switch (isa) {
#if LOFTQ_X86_KERNELS
      case Isa::avx512:
        return kernels::avx512::quantize(in, count, block_size, codebook, lookup, codes,
                                         block_scales);
      case Isa::avx2:
        return kernels::avx2::quantize(in, count, block_size, codebook, lookup, codes,
                                       block_scales);
#endif
      default:
        return kernels::scalar::quantize(in, count, block_size, codebook, lookup, codes,
                                         block_scales);
    }
  });
}

/// Dequantizes n elements in blocks of block_size from packed codes and per-block scales into
/// out[0..n) on the active Isa. block_size >= 1. Throws std::invalid_argument when codebook is
/// not a Codebook.
inline void dequantize_array(const std::uint8_t* packed, const float* scales, std::size_t n,
                             int block_size, Codebook codebook, float* out) {
  check_codebook(codebook);
  const Isa isa = active_isa();
  [[maybe_unused]] const bool nontemporal = n * sizeof(float) >= nontemporal_bytes;
  const auto bits = static_cast<std::size_t>(bits_of(codebook));
  for_each_chunk(n, block_size, [&](std::size_t first_block, std::size_t first, std::size_t count) {
    const std::uint8_t* codes = packed + first * bits / 8;
    const float* block_scales = scales + first_block;
    float* to = out + first;
    switch (isa) {
#if LOFTQ_X86_KERNELS
      case Isa::avx512:
        if (nontemporal)
          return kernels::avx512::dequantize_nontemporal(codes, block_scales, count, block_size,
                                                         codebook, to);
        return kernels::avx512::dequantize(codes, block_scales, count, block_size, codebook, to);
      case Isa::avx2:
        if (nontemporal)
          return kernels::avx2::dequantize_nontemporal(codes, block_scales, count, block_size,
                                                       codebook, to);
        return kernels::avx2::dequantize(codes, block_scales, count, block_size, codebook, to);
#endif
      default:
        return kernels::scalar::dequantize(codes, block_scales, count, block_size, codebook, to);
    }
  });
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

}  // namespace detail
}  // namespace loftq
