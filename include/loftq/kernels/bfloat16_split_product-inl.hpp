/// @file kernels/bfloat16_split_product-inl.hpp
/// The products of kernels/bfloat16_product-inl.hpp (C = E B and C = E^T B over E rounded to
/// bfloat16, held as pairs of bfloat16 in 32-bit words), run on the float tile kernels of
/// kernels/product-inl.hpp: each chunk of E's tile is unpacked into a float panel of twice as
/// many terms, each pair as its second term, then its first, and B comes split the same way
/// (split_bfloat16_operand() of kernels/products.hpp). A float FMA chain over the split terms in
/// order is the chain of the paired kernels, so the bits are theirs. On CPUs whose vdpbf16ps
/// issues at half the rate of float FMAs, two FMAs per pair run faster than one vdpbf16ps.
///
/// This file has no include guard, on purpose: kernels/avx2.hpp and kernels/avx512.hpp include
/// it inside their namespaces, after kernels/product-inl.hpp, having defined
/// - LOFTQ_TARGET, the `__attribute__((target(...)))` of every function here;
/// - what kernels/product-inl.hpp needs;
/// - widen_bfloat16(words), the `lanes` bfloat16 halves at words (the low half of each word
///   first) as floats, and split_lanes(pairs, first), which reads a vector of pairs of bfloat16
///   (as float bits) at `pairs`, writes each lane's high half (its second term) back there and
///   its low half (its first term) at `first`, each as the float whose high 16 bits it is.
/// Include nothing here: whatever this file includes would land in those namespaces.

#ifndef LOFTQ_TARGET
#error \
    "kernels/bfloat16_split_product-inl.hpp is included by kernels/avx2.hpp and kernels/avx512.hpp only"
#endif

/// Pairs of terms of each sum unpacked per chunk: the panel (2 split_chunk x tile_rows floats)
/// and B's rows of the chunk stay in the L1 cache while every column of B is taken. It changes
/// the speed only, never the bits.
inline constexpr std::size_t split_chunk = 32;

/// Floats of scratch a tile of the split products needs: the panel, then the tile of C (its
/// columns tile_rows apart: C's own, a power of two apart, would share cache sets).
inline constexpr std::size_t split_scratch_floats(std::size_t columns) {
  return (2 * split_chunk + columns) * tile_rows;
}

/// Asks for the cache lines of words [0, count) at `words` ahead of their use: the rows of E a
/// tile of E^T B reads are thousands of bytes apart, beyond what the hardware prefetchers follow.
LOFTQ_TARGET inline void prefetch_words(const std::uint32_t* words, std::size_t count) {
  for (std::size_t i = 0; i < count; i += 16) __builtin_prefetch(words + i);
}

/// c[r + j ldc] = tile[r + j tile_rows] for r < tile_rows and j < columns.
LOFTQ_TARGET inline void store_tile(const float* tile, std::size_t columns, float* c,
                                    std::size_t ldc) {
  for (std::size_t j = 0; j < columns; ++j) {
    for (std::size_t u = 0; u < tile_rows; u += lanes)
      store(c + j * ldc + u, load(tile + j * tile_rows + u));
  }
}

/// panel[q tile_rows + k] = the word of E's row k and pair q, as float bits, for q in
/// [first_pair, last_pair) and k in [first_row, tile_rows) (0 for k >= rows); e points at the
/// chunk's first pair of row 0, rows ldw words apart.
LOFTQ_TARGET inline void copy_pair_words(const std::uint32_t* e, std::size_t ldw, std::size_t rows,
                                         std::size_t first_pair, std::size_t last_pair,
                                         std::size_t first_row, float* panel, std::size_t ldp) {
  for (std::size_t q = first_pair; q < last_pair; ++q) {
    for (std::size_t k = first_row; k < tile_rows; ++k) {
      const std::uint32_t word = k < rows ? e[k * ldw + q] : 0u;
      std::memcpy(panel + q * ldp + k, &word, sizeof word);
    }
  }
}

/// One tile of C = E B as bfloat16_product_tile() computes it, B split (2 pairs x columns
/// floats, row-major, ldb apart), in `panel` (split_scratch_floats(columns)): E's words lie in
/// strips (Bfloat16Matrix; e points at the tile's first row in the first strip, rows strip_pairs
/// words apart, strips strip_words apart), and a chunk, one strip, is transposed by 8 x 8 blocks
/// into the panel's even rows, one per pair (rows of E past `rows` as 0); then each pair's words
/// are split in place, the second terms staying in row 2q and the first going to row 2q + 1.
LOFTQ_TARGET inline void bfloat16_split_product_tile(const std::uint32_t* e,
                                                     std::size_t strip_words, std::size_t rows,
                                                     std::size_t pairs, const float* b,
                                                     std::size_t ldb, std::size_t columns, float* c,
                                                     std::size_t ldc, float* panel) {
  static_assert(split_chunk == strip_pairs, "a chunk is a strip");
  float* tile = panel + 2 * split_chunk * tile_rows;
  const std::size_t whole_rows = rows / 8 * 8;
  for (std::size_t p = 0; p < pairs; p += split_chunk) {
    const std::size_t chunk = std::min(split_chunk, pairs - p);
    const std::size_t whole_pairs = chunk / 8 * 8;
    const std::uint32_t* strip = e + p / strip_pairs * strip_words;
    const float* words = reinterpret_cast<const float*>(strip);  // moved as float bits only
    const std::size_t next = std::min(split_chunk, pairs - std::min(pairs, p + split_chunk));
    if (next > 0) prefetch_words(strip + strip_words, rows * strip_pairs);  // the next strip's rows
    for (std::size_t r = 0; r < whole_rows; r += 8) {
      for (std::size_t q = 0; q < whole_pairs; q += 8)
        transpose8(words + r * strip_pairs + q, strip_pairs, panel + 2 * q * tile_rows + r,
                   2 * tile_rows);
    }
    copy_pair_words(strip, strip_pairs, rows, whole_pairs, chunk, 0, panel, 2 * tile_rows);
    copy_pair_words(strip, strip_pairs, rows, 0, whole_pairs, whole_rows, panel, 2 * tile_rows);
    for (std::size_t q = 0; q < chunk; ++q) {
      float* second = panel + 2 * q * tile_rows;
      for (std::size_t u = 0; u < tile_rows; u += lanes)
        split_lanes(second + u, second + tile_rows + u);
    }
    tile_product_all(panel, tile_rows, b + 2 * p * ldb, ldb, 2 * chunk, columns, p > 0, tile,
                     tile_rows);
  }
  store_tile(tile, columns, c, ldc);
}

/// One tile of C = E^T B as bfloat16_transposed_product_tile() computes it, B split: for each
/// pair q of the chunk, E's rows 2q + 1 and 2q (columns first..first + rows, from word first / 2
/// at e) become the panel's rows 2q and 2q + 1, columns past `rows` 0.
LOFTQ_TARGET inline void bfloat16_split_transposed_product_tile(
    const std::uint32_t* e, std::size_t ldw, std::size_t rows, std::size_t pairs, const float* b,
    std::size_t ldb, std::size_t columns, float* c, std::size_t ldc, float* panel) {
  float* tile = panel + 2 * split_chunk * tile_rows;
  const std::size_t whole = rows / lanes * lanes;
  for (std::size_t p = 0; p < pairs; p += split_chunk) {
    const std::size_t chunk = std::min(split_chunk, pairs - p);
    const std::size_t next = std::min(split_chunk, pairs - std::min(pairs, p + split_chunk));
    for (std::size_t t = 0; t < 2 * next; ++t)
      prefetch_words(e + (2 * (p + chunk) + t) * ldw, (rows + 1) / 2);
    for (std::size_t t = 0; t < 2 * chunk; ++t) {
      const std::uint32_t* words = e + (2 * p + (t ^ 1u)) * ldw;  // the odd row of each pair first
      float* out = panel + t * tile_rows;
      for (std::size_t r = 0; r < whole; r += lanes) store(out + r, widen_bfloat16(words + r / 2));
      for (std::size_t r = whole; r < tile_rows; ++r) {
        const std::uint32_t bits =
            r < rows ? (r % 2 == 0 ? words[r / 2] << 16 : words[r / 2] & 0xffff0000u) : 0u;
        std::memcpy(out + r, &bits, sizeof bits);
      }
    }
    tile_product_all(panel, tile_rows, b + 2 * p * ldb, ldb, 2 * chunk, columns, p > 0, tile,
                     tile_rows);
  }
  store_tile(tile, columns, c, ldc);
}
