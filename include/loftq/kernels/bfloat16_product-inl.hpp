/// @file kernels/bfloat16_product-inl.hpp
/// The products of the randomized SVD's passes over E rounded to bfloat16 (a Bfloat16Matrix of
/// kernels/products.hpp), written once for every instruction set: one tile of rows of C = E B or
/// of C = E^T B, with E and B held as pairs of bfloat16 in 32-bit words (the first term of a
/// pair in the low half) and C column-major float. Every element of C is one chain over its
/// sum in pairs of terms, from 0: for each pair in order, sum = fma(second terms, sum), then
/// sum = fma(first terms, sum). That is AVX-512 BF16's dot product (vdpbf16ps) when no input,
/// product or sum is a denormal, which the rounding to bfloat16 ensures; so each instruction
/// set, tile size and thread count gives the same bits.
///
/// The AVX2 set, and the AVX-512 set on CPUs whose vdpbf16ps is slow, compute the same chains on
/// float FMAs instead (kernels/bfloat16_split_product-inl.hpp).
///
/// This file has no include guard, on purpose: kernels/avx512.hpp (the AVX-512 BF16 set) and
/// kernels/products.hpp (the scalar set) include it inside their namespaces, once each, after
/// they have included <algorithm>, <cstddef> and <cstdint> and defined
/// - LOFTQ_TARGET, the `__attribute__((target(...)))` of every function here (empty for scalar);
/// - `Vec` (float lanes), `lanes`, zero, load and store;
/// - `Pairs` (lanes of one word each), load_pairs(p), set1_pairs(word) and dot_pairs(sum, a, b),
///   which per lane gives fma(high(a), high(b), sum) and then fma(low(a), low(b), that), each
///   half read as the float whose high 16 bits it is;
/// - transpose8_words(src, lds, dst, ldd), which writes dst[i * ldd + j] = src[j * lds + i] for
///   an 8 x 8 block of words;
/// - `pair_tile_vectors` and `pair_tile_columns`: a tile of C holds pair_tile_vectors * lanes
///   rows and is computed pair_tile_columns columns at a time.
/// It reads strip_pairs, of kernels/scalar.hpp.
/// Include nothing here: whatever this file includes would land in those namespaces.

#ifndef LOFTQ_TARGET
#error \
    "kernels/bfloat16_product-inl.hpp is included by kernels/avx512.hpp and kernels/products.hpp only"
#endif

/// Rows of a tile of C.
inline constexpr std::size_t pair_tile_rows = pair_tile_vectors * lanes;

/// Pairs of terms of each sum taken per chunk: a chunk of E's tile is packed once and used for
/// every column of B. It changes the speed only, never the bits.
inline constexpr std::size_t pair_chunk = 256;

/// Words of scratch a tile needs.
inline constexpr std::size_t pair_panel_words = pair_chunk * pair_tile_rows;

/// Pairs of E's rows ahead of the one it interleaves that the transposed tile prefetches: its
/// reads are a few lines a row, a row apart, which the hardware prefetchers follow poorly (4
/// made the pass about 1.15 times as fast on a Zen 4, against none, 2 and 8). Speed only.
inline constexpr std::size_t prefetch_pairs = 4;

/// c[r + j ldc] = (accumulate ? c[r + j ldc] : 0) + the pairs p < pairs of a[p pair_tile_rows + r]
/// and b[p ldb + j], for r < pair_tile_rows and j < Columns.
template <std::size_t Columns>
LOFTQ_TARGET inline void pair_tile_product(const std::uint32_t* a, const std::uint32_t* b,
                                           std::size_t ldb, std::size_t pairs, bool accumulate,
                                           float* c, std::size_t ldc) {
  Vec sum[Columns][pair_tile_vectors];
#pragma GCC unroll 8
  for (std::size_t j = 0; j < Columns; ++j) {
#pragma GCC unroll 8
    for (std::size_t u = 0; u < pair_tile_vectors; ++u)
      sum[j][u] = accumulate ? load(c + j * ldc + u * lanes) : zero();
  }
#pragma GCC unroll 2
  for (std::size_t p = 0; p < pairs; ++p) {
    Pairs column[pair_tile_vectors];
#pragma GCC unroll 8
    for (std::size_t u = 0; u < pair_tile_vectors; ++u)
      column[u] = load_pairs(a + p * pair_tile_rows + u * lanes);
#pragma GCC unroll 8
    for (std::size_t j = 0; j < Columns; ++j) {
      const Pairs factor = set1_pairs(b[p * ldb + j]);
#pragma GCC unroll 8
      for (std::size_t u = 0; u < pair_tile_vectors; ++u)
        sum[j][u] = dot_pairs(sum[j][u], column[u], factor);
    }
  }
#pragma GCC unroll 8
  for (std::size_t j = 0; j < Columns; ++j) {
#pragma GCC unroll 8
    for (std::size_t u = 0; u < pair_tile_vectors; ++u) store(c + j * ldc + u * lanes, sum[j][u]);
  }
}

/// pair_tile_product() over `columns` (1 <= columns <= Columns) columns of B and C.
template <std::size_t Columns>
LOFTQ_TARGET inline void pair_tile_product_of_width(const std::uint32_t* a, const std::uint32_t* b,
                                                    std::size_t ldb, std::size_t pairs,
                                                    std::size_t columns, bool accumulate, float* c,
                                                    std::size_t ldc) {
  if constexpr (Columns > 1) {
    if (columns < Columns)
      return pair_tile_product_of_width<Columns - 1>(a, b, ldb, pairs, columns, accumulate, c, ldc);
  }
  pair_tile_product<Columns>(a, b, ldb, pairs, accumulate, c, ldc);
}

/// pair_tile_product() over all `columns` columns of B and C, in steps of at most
/// pair_tile_columns columns whose widths differ by at most one.
LOFTQ_TARGET inline void pair_tile_product_all(const std::uint32_t* a, const std::uint32_t* b,
                                               std::size_t ldb, std::size_t pairs,
                                               std::size_t columns, bool accumulate, float* c,
                                               std::size_t ldc) {
  const std::size_t steps = (columns + pair_tile_columns - 1) / pair_tile_columns;
  std::size_t j = 0;
  for (std::size_t step = 0; step < steps; ++step) {
    const std::size_t width = columns / steps + (step < columns % steps ? 1 : 0);
    pair_tile_product_of_width<pair_tile_columns>(a, b + j, ldb, pairs, width, accumulate,
                                                  c + j * ldc, ldc);
    j += width;
  }
}

/// One tile of C = E B: c[r + j ldc] = the sum over the pairs p < pairs of E's word of row r and
/// pair p and b[p ldb + j], for r < rows (<= pair_tile_rows; C has room for pair_tile_rows
/// rows) and j < columns. E's words lie in strips (Bfloat16Matrix): e points at the tile's first
/// row in the first strip, rows strip_pairs words apart, strips strip_words apart. The kernel
/// reads them packed in `panel`, pair after pair, pair_tile_rows words each (rows past `rows` as
/// 0), packed by 8 x 8 transposes as `use` says (PanelUse).
LOFTQ_TARGET inline void bfloat16_product_tile(const std::uint32_t* e, std::size_t strip_words,
                                               std::size_t rows, std::size_t pairs,
                                               const std::uint32_t* b, std::size_t ldb,
                                               std::size_t columns, float* c, std::size_t ldc,
                                               std::uint32_t* panel, PanelUse use) {
  static_assert(strip_pairs % 8 == 0 && pair_chunk % strip_pairs == 0, "chunks of whole strips");
  // The words of row r from pair p on, to the end of p's strip.
  const auto words = [&](std::size_t r, std::size_t p) {
    return e + p / strip_pairs * strip_words + r * strip_pairs + p % strip_pairs;
  };
  const std::size_t whole_rows = rows / 8 * 8;
  for (std::size_t p = 0; p < pairs; p += pair_chunk) {
    const std::size_t chunk = std::min(pair_chunk, pairs - p);
    std::uint32_t* const packed = use == PanelUse::scratch ? panel : panel + p * pair_tile_rows;
    if (use != PanelUse::packed) {
      const std::size_t whole_pairs = chunk / 8 * 8;
      // Strip by strip, each read down its rows in one stretch while the next one's rows are
      // fetched: the hardware prefetchers find a new stretch late.
      for (std::size_t s = 0; s < whole_pairs; s += strip_pairs) {
        const std::size_t end = std::min(whole_pairs, s + strip_pairs);
        const bool more = p + end < pairs;
        for (std::size_t r = 0; r < whole_rows; r += 8) {
          if (more) {
            const std::uint32_t* next = words(r, p + end);
            for (std::size_t line = 0; line < 8 * strip_pairs; line += 16)
              __builtin_prefetch(next + line);
          }
          for (std::size_t q = s; q < end; q += 8)
            transpose8_words(words(r, p + q), strip_pairs, packed + q * pair_tile_rows + r,
                             pair_tile_rows);
        }
      }
      for (std::size_t q = whole_pairs; q < chunk; ++q) {
        for (std::size_t k = 0; k < whole_rows; ++k)
          packed[q * pair_tile_rows + k] = *words(k, p + q);
      }
      for (std::size_t q = 0; q < chunk; ++q) {
        for (std::size_t k = whole_rows; k < pair_tile_rows; ++k)
          packed[q * pair_tile_rows + k] = k < rows ? *words(k, p + q) : 0u;
      }
    }
    pair_tile_product_all(packed, b + p * ldb, ldb, chunk, columns, p > 0, c, ldc);
  }
}

/// One tile of C = E^T B, for the columns first..first + rows of E (first even; rows <=
/// pair_tile_rows, C has room for pair_tile_rows rows): c[r + j ldc] = the sum over the pairs p
/// < pairs of (E(2p, first + r), E(2p + 1, first + r)) and b[p ldb + j]. e points at word
/// first / 2 of E's row 0, rows ldw words apart (in a strip of a Bfloat16Matrix, strip_pairs).
/// The kernel reads them packed in `panel`, pair after pair, pair_tile_rows words each (columns
/// past `rows` as 0), each pair of E's rows interleaved as `use` says (PanelUse). A panel to
/// keep may be E's own words (a strip of 2 ldw = pair_tile_rows words a pair): each pair is read
/// whole before it is written.
LOFTQ_TARGET inline void bfloat16_transposed_product_tile(const std::uint32_t* e, std::size_t ldw,
                                                          std::size_t rows, std::size_t pairs,
                                                          const std::uint32_t* b, std::size_t ldb,
                                                          std::size_t columns, float* c,
                                                          std::size_t ldc, std::uint32_t* panel,
                                                          PanelUse use) {
  const std::size_t words = (rows + 1) / 2;
  std::uint32_t even[pair_tile_rows / 2], odd[pair_tile_rows / 2];  // a pair of E's rows
  for (std::size_t p = 0; p < pairs; p += pair_chunk) {
    const std::size_t chunk = std::min(pair_chunk, pairs - p);
    std::uint32_t* const packed = use == PanelUse::scratch ? panel : panel + p * pair_tile_rows;
    for (std::size_t q = 0; q < chunk && use != PanelUse::packed; ++q) {
      const std::uint32_t* first = e + 2 * (p + q) * ldw;  // E's row 2 (p + q): the first terms
      if (p + q + prefetch_pairs < pairs) {
        for (std::size_t line = 0; line < words; line += 16) {  // 16 words, a 64-byte line
          __builtin_prefetch(first + 2 * prefetch_pairs * ldw + line);
          __builtin_prefetch(first + (2 * prefetch_pairs + 1) * ldw + line);
        }
      }
      std::copy(first, first + words, even);
      std::copy(first + ldw, first + ldw + words, odd);
      std::uint32_t* out = packed + q * pair_tile_rows;
      for (std::size_t k = 0; k < words; ++k) {
        out[2 * k] = (even[k] & 0xffffu) | (odd[k] << 16);
        out[2 * k + 1] = (even[k] >> 16) | (odd[k] & 0xffff0000u);
      }
      for (std::size_t r = rows; r < pair_tile_rows; ++r) out[r] = 0u;
    }
    pair_tile_product_all(packed, b + p * ldb, ldb, chunk, columns, p > 0, c, ldc);
  }
}
