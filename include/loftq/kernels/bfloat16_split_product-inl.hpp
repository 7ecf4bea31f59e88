/// @file kernels/bfloat16_split_product-inl.hpp
/// The products of kernels/bfloat16_product-inl.hpp (C = E B and C = E^T B over E rounded to
/// bfloat16, held as pairs of bfloat16 in 32-bit words), run on the float tile kernels of
/// kernels/product-inl.hpp: each chunk of E's tile is unpacked into a float panel of twice as
/// many terms, each pair as its second term, then its first, and B comes split the same way
/// (split_bfloat16_operand() of kernels/products.hpp). A float FMA chain over the split terms in
/// order is the chain of the paired kernels, so the bits are theirs. On CPUs whose vdpbf16ps
/// issues at half the rate of float FMAs, two FMAs per pair run faster than one vdpbf16ps.
///
/// This file has no include guard, on purpose: kernels/avx512.hpp includes it inside its
/// namespace, after kernels/product-inl.hpp, having defined
/// - LOFTQ_TARGET, the `__attribute__((target(...)))` of every function here;
/// - what kernels/product-inl.hpp needs, and transpose8_words() (as in
///   kernels/bfloat16_product-inl.hpp);
/// - widen_bfloat16(words), the 16 bfloat16 halves at words (the low half of each word first)
///   as floats, and split_words(words, high, low), which writes the lanes' words' high halves
///   and low halves, each as the float whose high 16 bits it is.
/// Include nothing here: whatever this file includes would land in that namespace.

#ifndef LOFTQ_TARGET
#error "kernels/bfloat16_split_product-inl.hpp is included by kernels/avx512.hpp only"
#endif

/// Pairs of terms of each sum unpacked per chunk: the panel (2 split_chunk x tile_rows floats)
/// and B's rows of the chunk stay in the L1 cache while every column of B is taken. It changes
/// the speed only, never the bits.
inline constexpr std::size_t split_chunk = 32;

/// Floats of scratch a tile of the split products needs.
inline constexpr std::size_t split_panel_floats = 2 * split_chunk * tile_rows;

/// One tile of C = E B as bfloat16_product_tile() computes it, B split (2 pairs x columns
/// floats, row-major, ldb apart): E's rows are transposed into pairs by 8 x 8 blocks, then each
/// pair q of the chunk becomes the panel's rows 2q (second terms) and 2q + 1 (first terms), rows
/// past `rows` 0.
LOFTQ_TARGET inline void bfloat16_split_product_tile(const std::uint32_t* e, std::size_t ldw, std::size_t rows,
                                                     std::size_t pairs, const float* b, std::size_t ldb,
                                                     std::size_t columns, float* c, std::size_t ldc, float* panel) {
  alignas(64) std::uint32_t block[8 * 8];
  for (std::size_t p = 0; p < pairs; p += split_chunk) {
    const std::size_t chunk = std::min(split_chunk, pairs - p);
    for (std::size_t r = 0; r < tile_rows; r += 8) {
      for (std::size_t q = 0; q < chunk; q += 8) {
        const std::size_t height = rows > r ? std::min<std::size_t>(8, rows - r) : 0;
        const std::size_t width = std::min<std::size_t>(8, chunk - q);
        if (height == 8 && width == 8) {
          transpose8_words(e + r * ldw + p + q, ldw, block, 8);
        } else {
          for (std::size_t i = 0; i < 8; ++i) {
            for (std::size_t k = 0; k < 8; ++k) block[i * 8 + k] = i < width && k < height ? e[(r + k) * ldw + p + q + i] : 0u;
          }
        }
        for (std::size_t i = 0; i < width; ++i) {
          float* second = panel + 2 * (q + i) * tile_rows + r;
          split_words(block + i * 8, second, second + tile_rows);
        }
      }
    }
    tile_product_all(panel, tile_rows, b + 2 * p * ldb, ldb, 2 * chunk, columns, p > 0, c, ldc);
  }
}

/// One tile of C = E^T B as bfloat16_transposed_product_tile() computes it, B split: for each
/// pair q of the chunk, E's rows 2q + 1 and 2q (columns first..first + rows, from word first / 2
/// at e) become the panel's rows 2q and 2q + 1, columns past `rows` 0.
LOFTQ_TARGET inline void bfloat16_split_transposed_product_tile(const std::uint32_t* e, std::size_t ldw,
                                                                std::size_t rows, std::size_t pairs, const float* b,
                                                                std::size_t ldb, std::size_t columns, float* c,
                                                                std::size_t ldc, float* panel) {
  const std::size_t whole = rows / lanes * lanes;
  for (std::size_t p = 0; p < pairs; p += split_chunk) {
    const std::size_t chunk = std::min(split_chunk, pairs - p);
    for (std::size_t t = 0; t < 2 * chunk; ++t) {
      const std::uint32_t* words = e + (2 * p + (t ^ 1u)) * ldw;  // the odd row of each pair first
      float* out = panel + t * tile_rows;
      for (std::size_t r = 0; r < whole; r += lanes) store(out + r, widen_bfloat16(words + r / 2));
      for (std::size_t r = whole; r < tile_rows; ++r) {
        const std::uint32_t bits = r < rows ? (r % 2 == 0 ? words[r / 2] << 16 : words[r / 2] & 0xffff0000u) : 0u;
        std::memcpy(out + r, &bits, sizeof bits);
      }
    }
    tile_product_all(panel, tile_rows, b + 2 * p * ldb, ldb, 2 * chunk, columns, p > 0, c, ldc);
  }
}
