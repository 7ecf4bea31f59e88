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

/// Rows of a tile of the split products: register tiles of tile_rows rows (one on AVX-512, four
/// on AVX2), which take each chunk in turn, so that B's rows of the chunk (2 x 32 x 68 floats,
/// 17 KB for a sketch of 68 columns) are read from the L1 cache by all of them. Speed only,
/// never the bits.
inline constexpr std::size_t split_tile_rows = 64;

static_assert(split_tile_rows % tile_rows == 0, "whole register tiles");

/// Floats of scratch a tile of the split products needs: the panel, then the register tiles of
/// C, one after another (columns tile_rows apart: C's own, a power of two apart, would share
/// cache sets).
inline constexpr std::size_t split_scratch_floats(std::size_t columns) {
  return 2 * split_chunk * tile_rows + split_tile_rows * columns;
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

/// The chunk of pairs [p, p + chunk) of one register tile of C = E B (split product): a chunk,
/// one strip, is transposed by 8 x 8 blocks into the panel's even rows, one per pair (rows of E
/// past `rows` as 0); then each pair's words are split in place, the second terms staying in
/// row 2q and the first going to row 2q + 1, and the tile (column-major, tile_rows apart) takes
/// them. e points at the register tile's first row in the first strip.
LOFTQ_TARGET inline void split_product_chunk(const std::uint32_t* e, std::size_t strip_words,
                                             std::size_t rows, std::size_t pairs, std::size_t p,
                                             const float* b, std::size_t ldb, std::size_t columns,
                                             float* tile, float* panel) {
  static_assert(split_chunk == strip_pairs, "a chunk is a strip");
  const std::size_t whole_rows = rows / 8 * 8;
  const std::size_t chunk = std::min(split_chunk, pairs - p);
  const std::size_t whole_pairs = chunk / 8 * 8;
  const std::uint32_t* strip = e + p / strip_pairs * strip_words;
  const float* words = reinterpret_cast<const float*>(strip);  // moved as float bits only
  if (p + split_chunk < pairs)
    prefetch_words(strip + strip_words, rows * strip_pairs);  // the next strip's rows
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

/// The chunk of pairs [p, p + chunk) of one register tile of C = E^T B (split product): for
/// each pair q of the chunk, E's rows 2q + 1 and 2q (the tile's columns, from the word at e of
/// row 0) become the panel's rows 2q and 2q + 1, columns past `rows` 0; the tile (column-major,
/// tile_rows apart) takes them. Only the first register tile of a tile (`first`) asks for the
/// next chunk's rows of E ahead, whole (ldw words each), for all of them: when each asked for
/// the half line it reads, its loads of E stalled about half as long again (AVX2, Zen 3).
LOFTQ_TARGET inline void split_transposed_chunk(const std::uint32_t* e, std::size_t ldw,
                                                std::size_t rows, std::size_t pairs, std::size_t p,
                                                const float* b, std::size_t ldb,
                                                std::size_t columns, float* tile, float* panel,
                                                bool first) {
  const std::size_t whole = rows / lanes * lanes;
  const std::size_t chunk = std::min(split_chunk, pairs - p);
  const std::size_t next =
      first ? std::min(split_chunk, pairs - std::min(pairs, p + split_chunk)) : 0;
  for (std::size_t t = 0; t < 2 * next; ++t) prefetch_words(e + (2 * (p + chunk) + t) * ldw, ldw);
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

/// The order of work of a tile of `rows` (<= split_tile_rows) rows of C over `pairs` pairs:
/// chunk by chunk, each register tile in turn, chunk(first, count, p, tile) for the register
/// tile's first row and rows, the chunk's first pair and the register tile's sums (column-major,
/// tile_rows apart, in the scratch after the panel); then the register tiles go to c.
template <class Chunk>
LOFTQ_TARGET inline void split_tile_by_chunks(std::size_t rows, std::size_t pairs,
                                              std::size_t columns, float* c, std::size_t ldc,
                                              float* panel, const Chunk& chunk) {
  float* const tiles = panel + 2 * split_chunk * tile_rows;
  const std::size_t count = (rows + tile_rows - 1) / tile_rows;  // register tiles
  for (std::size_t p = 0; p < pairs; p += split_chunk) {
    for (std::size_t first = 0; first < rows; first += tile_rows)
      chunk(first, std::min(tile_rows, rows - first), p, tiles + first * columns);
  }
  for (std::size_t t = 0; t < count; ++t)
    store_tile(tiles + t * tile_rows * columns, columns, c + t * tile_rows, ldc);
}

/// One tile of C = E B as bfloat16_product_tile() computes it, B split (2 pairs x columns
/// floats, row-major, ldb apart), in `panel` (split_scratch_floats(columns)): E's words lie in
/// strips (Bfloat16Matrix; e points at the tile's first row in the first strip, rows strip_pairs
/// words apart, strips strip_words apart). rows <= split_tile_rows; C has room for
/// split_tile_rows rows. Chunk by chunk, each register tile in turn (split_tile_by_chunks(),
/// split_product_chunk()).
LOFTQ_TARGET inline void bfloat16_split_product_tile(const std::uint32_t* e,
                                                     std::size_t strip_words, std::size_t rows,
                                                     std::size_t pairs, const float* b,
                                                     std::size_t ldb, std::size_t columns, float* c,
                                                     std::size_t ldc, float* panel) {
  split_tile_by_chunks(rows, pairs, columns, c, ldc, panel,
                       [&](std::size_t first, std::size_t count, std::size_t p, float* tile) {
                         split_product_chunk(e + first * strip_pairs, strip_words, count, pairs, p,
                                             b, ldb, columns, tile, panel);
                       });
}

/// One tile of C = E^T B as bfloat16_transposed_product_tile() computes it, B split, for the
/// columns first..first + rows of E (first a multiple of split_tile_rows; rows <=
/// split_tile_rows, C has room for split_tile_rows rows): e points at word first / 2 of E's row
/// 0, rows ldw words apart. Chunk by chunk, each register tile in turn (split_tile_by_chunks(),
/// split_transposed_chunk()).
LOFTQ_TARGET inline void bfloat16_split_transposed_product_tile(
    const std::uint32_t* e, std::size_t ldw, std::size_t rows, std::size_t pairs, const float* b,
    std::size_t ldb, std::size_t columns, float* c, std::size_t ldc, float* panel) {
  split_tile_by_chunks(rows, pairs, columns, c, ldc, panel,
                       [&](std::size_t first, std::size_t count, std::size_t p, float* tile) {
                         split_transposed_chunk(e + first / 2, ldw, count, pairs, p, b, ldb,
                                                columns, tile, panel, first == 0);
                       });
}
