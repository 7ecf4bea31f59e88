/// @file kernels/product-inl.hpp
/// The float products of the solver's passes over a row-major matrix E, written once for every
/// instruction set: one tile of rows of C = E B or of C = E^T B, with B row-major and C
/// column-major. Every element of C is one chain of FMAs over its sum in index order, starting
/// from 0, so each instruction set, tile size and thread count gives the same bits.
///
/// This file has no include guard, on purpose: kernels/avx2.hpp, kernels/avx512.hpp and
/// kernels/products.hpp (the scalar set) include it inside their namespaces, once each, after
/// they have included <algorithm> and <cstddef> and defined
/// - LOFTQ_TARGET, the `__attribute__((target(...)))` of every function here (empty for scalar);
/// - `Vec` (float lanes), `lanes`, zero, set1, load, store and fmadd (a * b + c, one rounding);
/// - transpose8(src, lds, dst, ldd), which writes dst[i * ldd + j] = src[j * lds + i] for an
///   8 x 8 block;
/// - transpose16_streaming(src, lds, dst, ldd), the same for a 16 x 16 block whose rows of dst
///   are 64-byte lines, written non-temporally by the vector sets, and stream_fence(), which
///   orders those stores before the thread's later ones;
/// - `tile_vectors` and `tile_columns`: a tile of C holds tile_vectors * lanes rows and is
///   computed tile_columns columns at a time, as many accumulators as the set has registers for.
/// Include nothing here: whatever this file includes would land in those namespaces.

#ifndef LOFTQ_TARGET
#error "kernels/product-inl.hpp is included by kernels/avx2.hpp, kernels/avx512.hpp and kernels/products.hpp only"
#endif

/// Rows of a tile of C.
inline constexpr std::size_t tile_rows = tile_vectors * lanes;

/// Terms of each sum taken per chunk: a chunk of E's tile is packed (or read) once and used for
/// every column of B. It changes the speed only, never the bits.
inline constexpr std::size_t depth_chunk = 256;

/// c[r + j ldc] = (accumulate ? c[r + j ldc] : 0) + sum over p < depth of a[p lda + r] b[p ldb + j],
/// for r < tile_rows and j < Columns, each sum one chain of FMAs in p order.
template <std::size_t Columns>
LOFTQ_TARGET inline void tile_product(const float* a, std::size_t lda, const float* b, std::size_t ldb,
                                      std::size_t depth, bool accumulate, float* c, std::size_t ldc) {
  Vec sum[Columns][tile_vectors];
#pragma GCC unroll 8
  for (std::size_t j = 0; j < Columns; ++j) {
#pragma GCC unroll 8
    for (std::size_t u = 0; u < tile_vectors; ++u) sum[j][u] = accumulate ? load(c + j * ldc + u * lanes) : zero();
  }
#pragma GCC unroll 2
  for (std::size_t p = 0; p < depth; ++p) {
    Vec column[tile_vectors];
#pragma GCC unroll 8
    for (std::size_t u = 0; u < tile_vectors; ++u) column[u] = load(a + p * lda + u * lanes);
#pragma GCC unroll 8
    for (std::size_t j = 0; j < Columns; ++j) {
      const Vec factor = set1(b[p * ldb + j]);
#pragma GCC unroll 8
      for (std::size_t u = 0; u < tile_vectors; ++u) sum[j][u] = fmadd(column[u], factor, sum[j][u]);
    }
  }
#pragma GCC unroll 8
  for (std::size_t j = 0; j < Columns; ++j) {
#pragma GCC unroll 8
    for (std::size_t u = 0; u < tile_vectors; ++u) store(c + j * ldc + u * lanes, sum[j][u]);
  }
}

/// tile_product() over `columns` (1 <= columns <= Columns) columns of B and C.
template <std::size_t Columns>
LOFTQ_TARGET inline void tile_product_of_width(const float* a, std::size_t lda, const float* b, std::size_t ldb,
                                               std::size_t depth, std::size_t columns, bool accumulate, float* c,
                                               std::size_t ldc) {
  if constexpr (Columns > 1) {
    if (columns < Columns) return tile_product_of_width<Columns - 1>(a, lda, b, ldb, depth, columns, accumulate, c, ldc);
  }
  tile_product<Columns>(a, lda, b, ldb, depth, accumulate, c, ldc);
}

/// tile_product() over all `columns` columns of B and C, in as few steps of at most
/// tile_columns columns as there can be, of widths that differ by at most one (68 columns: 8
/// steps of 6 and 4 of 5), so that no step is left with few accumulators.
LOFTQ_TARGET inline void tile_product_all(const float* a, std::size_t lda, const float* b, std::size_t ldb,
                                          std::size_t depth, std::size_t columns, bool accumulate, float* c,
                                          std::size_t ldc) {
  const std::size_t steps = (columns + tile_columns - 1) / tile_columns;
  std::size_t j = 0;
  for (std::size_t step = 0; step < steps; ++step) {
    const std::size_t width = columns / steps + (step < columns % steps ? 1 : 0);
    tile_product_of_width<tile_columns>(a, lda, b + j, ldb, depth, width, accumulate, c + j * ldc, ldc);
    j += width;
  }
}

/// dst[j ldd + i] = src[i lds + j] for i < 16 and j < cols, where dst is 64-byte aligned and ldd
/// a multiple of 16: 16 x 16 blocks by transpose16_streaming(), the last cols % 16 rows of dst
/// one element at a time, then stream_fence().
LOFTQ_TARGET inline void transpose_strip_streaming(const float* src, std::size_t lds,
                                                   std::size_t cols, float* dst, std::size_t ldd) {
  std::size_t j = 0;
  for (; j + 16 <= cols; j += 16) transpose16_streaming(src + j, lds, dst + j * ldd, ldd);
  for (; j < cols; ++j) {
    for (std::size_t i = 0; i < 16; ++i) dst[j * ldd + i] = src[i * lds + j];
  }
  stream_fence();
}

/// dst[j ldd + i] = src[i lds + j] for i < rows and j < cols: 8 x 8 blocks by transpose8(), the
/// edges one element at a time.
LOFTQ_TARGET inline void transpose_block(const float* src, std::size_t lds, std::size_t rows, std::size_t cols,
                                         float* dst, std::size_t ldd) {
  std::size_t i = 0;
  for (; i + 8 <= rows; i += 8) {
    std::size_t j = 0;
    for (; j + 8 <= cols; j += 8) transpose8(src + i * lds + j, lds, dst + j * ldd + i, ldd);
    for (; j < cols; ++j) {
      for (std::size_t k = i; k < i + 8; ++k) dst[j * ldd + k] = src[k * lds + j];
    }
  }
  for (; i < rows; ++i) {
    for (std::size_t j = 0; j < cols; ++j) dst[j * ldd + i] = src[i * lds + j];
  }
}

/// panel[p tile_rows + r] = e[r lde + p] for r < rows (<= tile_rows) and p < depth; rows past
/// `rows` are 0.
LOFTQ_TARGET inline void pack_transposed(const float* e, std::size_t lde, std::size_t rows, std::size_t depth,
                                         float* panel) {
  transpose_block(e, lde, rows, depth, panel, tile_rows);
  if (rows == tile_rows) return;
  for (std::size_t p = 0; p < depth; ++p) std::fill(panel + p * tile_rows + rows, panel + (p + 1) * tile_rows, 0.0f);
}

/// One tile of C = E B: c[r + j ldc] = sum over p < depth of e[r lde + p] b[p ldb + j] for
/// r < rows (<= tile_rows; C has room for tile_rows rows) and j < columns. panel: depth_chunk *
/// tile_rows floats of scratch.
LOFTQ_TARGET inline void product_tile(const float* e, std::size_t lde, std::size_t rows, std::size_t depth,
                                      const float* b, std::size_t ldb, std::size_t columns, float* c,
                                      std::size_t ldc, float* panel) {
  for (std::size_t p = 0; p < depth; p += depth_chunk) {
    const std::size_t chunk = std::min(depth_chunk, depth - p);
    pack_transposed(e + p, lde, rows, chunk, panel);
    tile_product_all(panel, tile_rows, b + p * ldb, ldb, chunk, columns, p > 0, c, ldc);
  }
}

/// Whether rows of E `lde` floats apart lie an odd number of whole 64-byte lines apart, so that
/// a chunk of a tile's rows falls in every set of the L1 cache (low_rank_stride() of
/// kernels/products.hpp lays copies out so). Rows an even number of lines apart share fewer
/// sets (one set at 4096 floats, four at 11008), and a chunk read in place for every column
/// step evicts its own lines.
constexpr bool spreads_over_cache_sets(std::size_t lde) {
  return lde % 16 == 0 && lde / 16 % 2 == 1;
}

/// One tile of C = E^T B: c[r + j ldc] = sum over p < depth of e[p lde + r] b[p ldb + j] for
/// r < rows (<= tile_rows; C has room for tile_rows rows) and j < columns. A full tile reads E
/// where it is when its rows spread over the cache's sets (spreads_over_cache_sets()); otherwise
/// each chunk is copied into `panel` (depth_chunk * tile_rows floats) first, a partial tile's
/// padded with 0, so that no read passes the end of E. The same bits either way.
LOFTQ_TARGET inline void transposed_product_tile(const float* e, std::size_t lde, std::size_t rows, std::size_t depth,
                                                 const float* b, std::size_t ldb, std::size_t columns, float* c,
                                                 std::size_t ldc, float* panel) {
  const bool full = rows == tile_rows;
  const bool in_place = full && spreads_over_cache_sets(lde);
  for (std::size_t p = 0; p < depth; p += depth_chunk) {
    const std::size_t chunk = std::min(depth_chunk, depth - p);
    for (std::size_t q = 0; q < chunk && !in_place; ++q) {
      const float* row = e + (p + q) * lde;
      float* copy = panel + q * tile_rows;
      if (full) {
        for (std::size_t u = 0; u < tile_rows; u += lanes) store(copy + u, load(row + u));
      } else {
        for (std::size_t r = 0; r < tile_rows; ++r) copy[r] = r < rows ? row[r] : 0.0f;
      }
    }
    tile_product_all(in_place ? e + p * lde : panel, in_place ? lde : tile_rows, b + p * ldb, ldb,
                     chunk, columns, p > 0, c, ldc);
  }
}
