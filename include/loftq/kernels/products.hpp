/// @file kernels/products.hpp
/// The big products of the randomized SVD, E X and E^T Y for a row-major float E and a thin X or
/// Y, and the transposes of W's row-major copy, on the kernels of active_isa()
/// (kernels/product-inl.hpp; the portable set is here). Not API: lowrank.hpp and
/// detail/row_major.hpp use them.
///
/// Every element of a product is one chain of FMAs over its sum in index order, starting from 0.
/// So the result is the same bits on every instruction set and every thread count; the portable
/// set uses std::fma, which is slow only on CPUs without FMA.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <stdexcept>
#include <utility>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "../detail/cpu.hpp"
#include "../detail/huge_pages.hpp"
#include "../isa.hpp"
#include "../matrix.hpp"
#include "../threads.hpp"
#include "avx2.hpp"
#include "avx512.hpp"

namespace loftq::detail {

namespace kernels::scalar {

/// One float: the portable set's vector.
using Vec = float;

/// Lanes of a vector.
inline constexpr std::size_t lanes = 1;

/// 0.
inline Vec zero() { return 0.0f; }

/// x.
inline Vec set1(float x) { return x; }

/// *p.
inline Vec load(const float* p) { return *p; }

/// *p = v.
inline void store(float* p, Vec v) { *p = v; }

/// a * b + c with one rounding.
inline Vec fmadd(Vec a, Vec b, Vec c) { return std::fma(a, b, c); }

/// dst[i * ldd + j] = src[j * lds + i] for i, j < 8.
inline void transpose8(const float* src, std::size_t lds, float* dst, std::size_t ldd) {
  for (std::size_t i = 0; i < 8; ++i) {
    for (std::size_t j = 0; j < 8; ++j) dst[i * ldd + j] = src[j * lds + i];
  }
}

/// dst[i * ldd + j] = src[j * lds + i] for i, j < 16 (the vector sets store non-temporally).
inline void transpose16_streaming(const float* src, std::size_t lds, float* dst, std::size_t ldd) {
  for (std::size_t i = 0; i < 16; ++i) {
    for (std::size_t j = 0; j < 16; ++j) dst[i * ldd + j] = src[j * lds + i];
  }
}

/// Nothing: the portable set stores as usual.
inline void stream_fence() {}

/// Vectors (floats) per tile of the products' C.
inline constexpr std::size_t tile_vectors = 4;

/// Columns of C per step of the products.
inline constexpr std::size_t tile_columns = 4;

#define LOFTQ_TARGET
#include "product-inl.hpp"

/// Two bfloat16 in a word.
using Pairs = std::uint32_t;

/// *p.
inline Pairs load_pairs(const std::uint32_t* p) { return *p; }

/// word.
inline Pairs set1_pairs(std::uint32_t word) { return word; }

/// The float whose high 16 bits are `half`.
inline float from_bfloat16(std::uint32_t half) {
  const std::uint32_t bits = half << 16;
  float x;
  std::memcpy(&x, &bits, sizeof x);
  return x;
}

/// fma(high(a), high(b), sum), then fma(low(a), low(b), that): what vdpbf16ps does in a lane.
inline Vec dot_pairs(Vec sum, Pairs a, Pairs b) {
  sum = std::fma(from_bfloat16(a >> 16), from_bfloat16(b >> 16), sum);
  return std::fma(from_bfloat16(a & 0xffffu), from_bfloat16(b & 0xffffu), sum);
}

/// dst[i * ldd + j] = src[j * lds + i] for i, j < 8.
inline void transpose8_words(const std::uint32_t* src, std::size_t lds, std::uint32_t* dst,
                             std::size_t ldd) {
  for (std::size_t i = 0; i < 8; ++i) {
    for (std::size_t j = 0; j < 8; ++j) dst[i * ldd + j] = src[j * lds + i];
  }
}

/// Vectors (floats) per tile of the bfloat16 products' C.
inline constexpr std::size_t pair_tile_vectors = 4;

/// Columns of C per step of the bfloat16 products.
inline constexpr std::size_t pair_tile_columns = 4;

#include "bfloat16_product-inl.hpp"
#undef LOFTQ_TARGET

}  // namespace kernels::scalar

/// The rows of a product's C are padded to a multiple of this for the kernels, whose tiles
/// (4, 16 or 64 rows) divide it.
inline constexpr Eigen::Index product_row_padding = 64;

/// One tile kernel: (e, lde, rows of the tile, depth, b, ldb, columns, c, ldc, panel), C's tile
/// column-major into c (kernels' product_tile() and transposed_product_tile()).
using TileKernel = void (*)(const float*, std::size_t, std::size_t, std::size_t, const float*,
                            std::size_t, std::size_t, float*, std::size_t, float*);

/// The tile kernels of one instruction set.
struct ProductKernels {
  std::size_t tile_rows;     ///< Rows of a tile of C.
  std::size_t panel_floats;  ///< Scratch a tile needs.
  /// One tile of C = E B (kernels' product_tile()).
  TileKernel product;
  /// One tile of C = E^T B (kernels' transposed_product_tile()).
  TileKernel transposed;
};

/// The tile kernels of `isa`.
inline ProductKernels product_kernels(Isa isa) {
  switch (isa) {
#if LOFTQ_X86_KERNELS
    case Isa::avx512:
      return {kernels::avx512::tile_rows, kernels::avx512::depth_chunk * kernels::avx512::tile_rows,
              kernels::avx512::product_tile, kernels::avx512::transposed_product_tile};
    case Isa::avx2:
      return {kernels::avx2::tile_rows, kernels::avx2::depth_chunk * kernels::avx2::tile_rows,
              kernels::avx2::product_tile, kernels::avx2::transposed_product_tile};
#endif
    default:
      return {kernels::scalar::tile_rows, kernels::scalar::depth_chunk * kernels::scalar::tile_rows,
              kernels::scalar::product_tile, kernels::scalar::transposed_product_tile};
  }
}

/// out = E B (transposed false; E.rows() x B.cols()) or E^T B (true; E.cols() x B.cols()), B
/// given row-major with E.cols() or E.rows() rows; out must have that shape. Tiles of out's rows
/// run in parallel on the kernels of active_isa(), straight into out when its rows are a multiple
/// of product_row_padding, else into a padded copy.
inline void product_of(const RowMatrixXf& E, bool transposed, const Eigen::Ref<const RowMatrixXf>& B,
                       Eigen::Ref<Eigen::MatrixXf> out) {
  const ProductKernels set = product_kernels(active_isa());
  const auto rows = static_cast<std::size_t>(transposed ? E.cols() : E.rows());
  const auto depth = static_cast<std::size_t>(transposed ? E.rows() : E.cols());
  const auto lde = static_cast<std::size_t>(E.cols());
  const auto columns = static_cast<std::size_t>(B.cols());
  if (out.rows() != static_cast<Eigen::Index>(rows) || out.cols() != B.cols()) {
    throw std::logic_error("product_of: out has the wrong shape");
  }
  const bool direct = rows % static_cast<std::size_t>(product_row_padding) == 0;
  const Eigen::Index padded_rows = (static_cast<Eigen::Index>(rows) + product_row_padding - 1) /
                                   product_row_padding * product_row_padding;
  Eigen::MatrixXf padded;
  if (!direct) padded.resize(padded_rows, B.cols());
  float* c = direct ? out.data() : padded.data();
  const auto ldc = static_cast<std::size_t>(direct ? out.outerStride() : padded.rows());
  const std::size_t tiles = (rows + set.tile_rows - 1) / set.tile_rows;
  parallel_for(static_cast<std::ptrdiff_t>(tiles), [&](std::ptrdiff_t t) {
    const std::unique_ptr<float[]> panel(new float[set.panel_floats]);  // the kernels write before they read
    const std::size_t first = static_cast<std::size_t>(t) * set.tile_rows;
    const std::size_t count = std::min(set.tile_rows, rows - first);
    if (transposed) {
      set.transposed(E.data() + first, lde, count, depth, B.data(), columns, columns, c + first,
                     ldc, panel.get());
    } else {
      set.product(E.data() + first * lde, lde, count, depth, B.data(), columns, columns, c + first,
                  ldc, panel.get());
    }
  });
  if (!direct) out = padded.topRows(static_cast<Eigen::Index>(rows));
}

/// The lower triangle of X^T X in double into g (column-major, `ldg` doubles between its
/// columns; the strict upper triangle is not written), for X depth x columns, column-major with
/// `ldx` floats between its columns, on the kernels of `isa`: the same bits on each
/// (kernels/gram-inl.hpp).
inline void lower_gram(Isa isa, const float* x, std::size_t ldx, std::size_t depth,
                       std::size_t columns, double* g, std::size_t ldg) {
  switch (isa) {
#if LOFTQ_X86_KERNELS
    case Isa::avx512:
      return kernels::avx512::lower_gram(x, ldx, depth, columns, g, ldg);
    case Isa::avx2:
      return kernels::avx2::lower_gram(x, ldx, depth, columns, g, ldg);
#endif
    default:
      return kernels::scalar::lower_gram(x, ldx, depth, columns, g, ldg);
  }
}

/// Runs `tile` over rows x columns of c, tile after tile of `set.tile_rows` rows on the calling
/// thread, tile i reading E from e + i `row_step`; a last tile narrower than the kernels' goes
/// through `scratch` (which also holds a tile's panel), so that nothing past c's rows is written.
inline void tile_walk(const ProductKernels& set, TileKernel tile, const float* e, std::size_t lde,
                      std::size_t row_step, std::size_t rows, std::size_t depth, const float* b,
                      std::size_t ldb, std::size_t columns, float* c, std::size_t ldc,
                      std::vector<float>& scratch) {
  scratch.resize(set.panel_floats + set.tile_rows * columns);
  float* panel = scratch.data();
  float* edge = panel + set.panel_floats;  // a narrow last tile, column-major tile_rows x columns
  for (std::size_t i = 0; i < rows; i += set.tile_rows) {
    const std::size_t count = std::min(set.tile_rows, rows - i);
    const bool whole = count == set.tile_rows;
    tile(e + i * row_step, lde, count, depth, b, ldb, columns, whole ? c + i : edge,
         whole ? ldc : set.tile_rows, panel);
    if (whole) continue;
    for (std::size_t j = 0; j < columns; ++j) {
      std::copy(edge + j * set.tile_rows, edge + j * set.tile_rows + count, c + j * ldc + i);
    }
  }
}

/// c = E B, rows x columns, column-major with `ldc` floats between its columns, for E (rows x
/// depth) and B (depth x columns), row-major with `lde` and `ldb` floats between their rows,
/// depth >= 1, tile after tile on the calling thread on the kernels of `isa` (tile_walk()):
/// every element one chain of FMAs over depth in order, the same bits on every instruction set.
inline void product_tiles(Isa isa, const float* e, std::size_t lde, std::size_t rows,
                          std::size_t depth, const float* b, std::size_t ldb, std::size_t columns,
                          float* c, std::size_t ldc, std::vector<float>& scratch) {
  const ProductKernels set = product_kernels(isa);
  tile_walk(set, set.product, e, lde, lde, rows, depth, b, ldb, columns, c, ldc, scratch);
}

/// c = E^T B, rows x columns, column-major with `ldc` floats between its columns, for E (depth
/// x rows) and B (depth x columns), row-major with `lde` and `ldb` floats between their rows,
/// depth >= 1, tile after tile on the calling thread on the kernels of `isa` (tile_walk()):
/// every element one chain of FMAs over depth in order, the same bits on every instruction set.
inline void transposed_tiles(Isa isa, const float* e, std::size_t lde, std::size_t rows,
                             std::size_t depth, const float* b, std::size_t ldb,
                             std::size_t columns, float* c, std::size_t ldc,
                             std::vector<float>& scratch) {
  const ProductKernels set = product_kernels(isa);
  tile_walk(set, set.transposed, e, lde, 1, rows, depth, b, ldb, columns, c, ldc, scratch);
}

/// Floats from one row to the next of a copy of `length` floats a row that low_rank_rows()
/// reads: `length` rounded up to whole 64-byte lines, plus one line where that is an even
/// number of them. Rows an even number of lines apart (4096 floats, 16 KB) fall in the same
/// sets of the L1 cache, and a tile reading 64 of them evicted its own lines: at an odd number
/// the 64 rows take 64 different sets (the quantize pass's A B^T took 15.2 ms instead of 21.2 at
/// 4096 x 4096, on a Zen 3).
constexpr std::size_t low_rank_stride(std::size_t length) {
  const std::size_t lines = (length + 15) / 16;
  return 16 * (lines % 2 == 0 ? lines + 1 : lines);
}

/// B^T into `bt`, row-major (B.cols() x B.rows()), its rows low_rank_stride(B.rows()) floats
/// apart: the right factor of A B^T as low_rank_rows() reads it.
inline void transposed_factor(const Eigen::MatrixXf& B, std::vector<float>& bt) {
  const auto cols = static_cast<std::size_t>(B.rows());
  const std::size_t stride = low_rank_stride(cols);
  bt.reserve(stride * static_cast<std::size_t>(B.cols()));  // no more than it needs
  bt.resize(stride * static_cast<std::size_t>(B.cols()));
  for (Eigen::Index p = 0; p < B.cols(); ++p) {
    std::copy(B.col(p).data(), B.col(p).data() + cols,
              bt.data() + static_cast<std::size_t>(p) * stride);
  }
}

/// Rows [first, first + count) of A B^T into c, row-major with `cols` columns, for A (rows x k,
/// column-major, k >= 1) and B (cols x k) given by transposed_factor() in `bt`, on the kernels of
/// `isa`: the rows' transpose B A^T is E^T X for E = B^T and X the rows' A^T, copied row-major
/// (k x count) into `rows_t`, by transposed_tiles(), whatever `first` and `count`. `scratch`
/// holds the tiles' panels.
inline void low_rank_rows(Isa isa, const Eigen::MatrixXf& A, const std::vector<float>& bt,
                          Eigen::Index cols, Eigen::Index first, Eigen::Index count, float* c,
                          std::vector<float>& rows_t, std::vector<float>& scratch) {
  const auto k = static_cast<std::size_t>(A.cols());
  const auto n = static_cast<std::size_t>(count);
  rows_t.reserve(k * n);  // no more than it needs
  rows_t.resize(k * n);
  for (std::size_t p = 0; p < k; ++p) {
    const float* column = A.col(static_cast<Eigen::Index>(p)).data() + first;
    std::copy(column, column + n, rows_t.data() + p * n);
  }
  const auto length = static_cast<std::size_t>(cols);
  transposed_tiles(isa, bt.data(), low_rank_stride(length), length, k, rows_t.data(), n, n, c,
                   length, scratch);
}

/// dst[j ldd + i] = src[i lds + j] for i < rows and j < cols, on the kernels of `isa`.
inline void transpose_block(Isa isa, const float* src, std::size_t lds, std::size_t rows, std::size_t cols, float* dst,
                            std::size_t ldd) {
  switch (isa) {
#if LOFTQ_X86_KERNELS
    case Isa::avx512:
      return kernels::avx512::transpose_block(src, lds, rows, cols, dst, ldd);
    case Isa::avx2:
      return kernels::avx2::transpose_block(src, lds, rows, cols, dst, ldd);
#endif
    default:
      return kernels::scalar::transpose_block(src, lds, rows, cols, dst, ldd);
  }
}

/// dst[j ldd + i] = src[i lds + j] for i < 16 and j < cols, dst 64-byte aligned and ldd a
/// multiple of 16, with the non-temporal stores of `isa` (kernels' transpose_strip_streaming()).
inline void transpose_strip_streaming(Isa isa, const float* src, std::size_t lds, std::size_t cols,
                                      float* dst, std::size_t ldd) {
  switch (isa) {
#if LOFTQ_X86_KERNELS
    case Isa::avx512:
      return kernels::avx512::transpose_strip_streaming(src, lds, cols, dst, ldd);
    case Isa::avx2:
      return kernels::avx2::transpose_strip_streaming(src, lds, cols, dst, ldd);
#endif
    default:
      return kernels::scalar::transpose_strip_streaming(src, lds, cols, dst, ldd);
  }
}

/// The largest of the bits, sign cleared, of the n floats at `data`: an order of the floats by
/// magnitude that puts inf and NaN (above 0x7f7fffff, float's largest) above every finite one.
inline std::uint32_t largest_magnitude_bits(const float* data, std::size_t n) {
  std::uint32_t largest = 0;
  for (std::size_t i = 0; i < n; ++i) {
    std::uint32_t bits;
    std::memcpy(&bits, data + i, sizeof bits);
    largest = std::max(largest, bits & 0x7fffffffu);
  }
  return largest;
}

/// Copies of at least this many floats (4 MiB) whose rows are a multiple of 16 floats long
/// row_major_copy() writes in whole 64-byte lines with non-temporal stores: past the caches,
/// without reading the lines first.
inline constexpr std::size_t streaming_copy_floats = std::size_t{1} << 20;

/// out = W in row-major order (W rows x cols, a matrix or a block of columns; out rows x cols).
/// When cols is a multiple of 16 and the copy at least streaming_copy_floats: in parallel strips
/// of 16 of W's columns, each walked down in 16 x 16 blocks whose 16 rows of out are whole
/// 64-byte lines stored non-temporally (about 6 times faster on a 4096 x 4096 W than through
/// the caches, which a transpose of power-of-two strides thrashes); the columns before the first
/// line boundary of out's rows and after the last one go as below. Otherwise in parallel pieces of
/// 32 rows, tile by 32 x 32 tile with the 8 x 8 transposes of the active instruction set.
/// Returns largest_magnitude_bits() of W's elements, which each piece measures on what it has
/// just copied, still in the caches: it spares the caller a pass over W.
inline std::uint32_t row_major_copy(const Eigen::Ref<const Eigen::MatrixXf>& W,
                                    Eigen::Ref<RowMatrixXf> out) {
  const Isa isa = active_isa();
  const auto rows = static_cast<std::size_t>(W.rows()), cols = static_cast<std::size_t>(W.cols());
  const auto ld = static_cast<std::size_t>(W.outerStride());
  // largest_magnitude_bits() of W's columns [from, to), rows [first, first + count).
  const auto largest_in = [&](std::size_t from, std::size_t to, std::size_t first,
                              std::size_t count) {
    std::uint32_t largest = 0;
    for (std::size_t j = from; j < to; ++j)
      largest = std::max(largest, largest_magnitude_bits(W.data() + j * ld + first, count));
    return largest;
  };
  std::vector<std::uint32_t> partial;  // each piece's
  constexpr std::size_t strip = 16;
  if (cols % strip == 0 && rows * cols >= streaming_copy_floats) {
    // Every row of out starts `offset` floats past a line boundary: lines start at column `first`.
    const std::size_t offset = reinterpret_cast<std::uintptr_t>(out.data()) % 64 / sizeof(float);
    const std::size_t first = (strip - offset) % strip;
    const std::size_t strips = (cols - first) / strip;
    partial.assign(strips + 1, 0u);
    parallel_for(static_cast<std::ptrdiff_t>(strips + (first > 0 ? 1 : 0)), [&](std::ptrdiff_t s) {
      // The last piece: the columns before the first line boundary and after the last one.
      if (static_cast<std::size_t>(s) == strips) {
        transpose_block(isa, W.data(), ld, first, rows, out.data(), cols);
        const std::size_t last = first + strips * strip;
        transpose_block(isa, W.data() + last * ld, ld, cols - last, rows, out.data() + last, cols);
        partial[strips] = std::max(largest_in(0, first, 0, rows), largest_in(last, cols, 0, rows));
        return;
      }
      const std::size_t col = first + static_cast<std::size_t>(s) * strip;
      // W's columns col.. are 16 rows of a row-major cols x ld array.
      transpose_strip_streaming(isa, W.data() + col * ld, ld, rows, out.data() + col, cols);
      partial[static_cast<std::size_t>(s)] = largest_in(col, col + strip, 0, rows);
    });
  } else {
    constexpr std::size_t tile = 32;
    partial.assign((rows + tile - 1) / tile, 0u);
    parallel_for(static_cast<std::ptrdiff_t>(partial.size()), [&](std::ptrdiff_t p) {
      const std::size_t first = static_cast<std::size_t>(p) * tile;
      const std::size_t count = std::min(tile, rows - first);
      for (std::size_t col = 0; col < cols; col += tile) {
        // W's columns col.. are rows of a row-major cols x ld array.
        transpose_block(isa, W.data() + col * ld + first, ld, std::min(tile, cols - col), count,
                        out.data() + first * cols + col, cols);
      }
      partial[static_cast<std::size_t>(p)] = largest_in(0, cols, first, count);
    });
  }
  return partial.empty() ? 0u : *std::max_element(partial.begin(), partial.end());
}

/// X's row-major copy in `operand`, resized (its memory is kept when it is large enough already).
inline Eigen::Map<const RowMatrixXf> row_major_operand(const Eigen::Ref<const Eigen::MatrixXf>& X,
                                                       std::vector<float>& operand) {
  operand.resize(static_cast<std::size_t>(X.size()));
  Eigen::Map<RowMatrixXf> copy(operand.data(), X.rows(), X.cols());
  row_major_copy(X, copy);
  return Eigen::Map<const RowMatrixXf>(operand.data(), X.rows(), X.cols());
}

/// E rounded to bfloat16 for the passes of the randomized SVD: the elements of E 2^exponent,
/// each rounded to the nearest bfloat16 (ties to even) and magnitudes under 2^-50 to 0, two per
/// 32-bit word (the even column in the low half), rows and columns padded with 0 to even counts.
/// Every nonzero element and operand of the bfloat16 kernels is then a multiple of 2^-57 of at
/// least 2^-50, so every product and partial sum is 0 or a multiple of 2^-114: never a denormal.
/// The exponent (bfloat16_exponent()) brings E's norm or largest element to about 1, so that
/// the flushed magnitudes are far below anything that counts.
///
/// The words lie in strips of 64 columns (kernels::strip_pairs words a row), one strip after
/// another, each row-major: a tile of E^T B, 64 of E's columns, reads one stretch of memory, and
/// a tile of E B a stretch per strip. (Row-major words, a tile of E^T B read 128 bytes a row, two
/// rows 16 KB apart at 4096 columns, and its pass took 1.2 times as long as E B's; in strips,
/// no longer.)
///
/// A strip's two rows of a pair are 64 adjacent words, as many as a 64-row tile of E^T B packs
/// them: a pass E^T B that keeps its tiles on kernels of 64-row tiles interleaves each pair in
/// place (bfloat16_product_of()), and the strips are E^T B's packed tiles from then on
/// (`interleaved`), until prepare_bfloat16() makes them rows again.
struct Bfloat16Matrix {
  Eigen::Index rows = 0;  ///< Rows of E.
  Eigen::Index cols = 0;  ///< Columns of E.
  int exponent = 0;       ///< The elements are those of E 2^exponent.
  /// The strips, one after another, each (rows + 1) / 2 * 2 rows of kernels::strip_pairs words;
  /// the pairs past (cols + 1) / 2 in the last strip are 0.
  Eigen::Matrix<std::uint32_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> words;
  /// Whether each strip holds E^T B's packed tile of its columns instead of rows: the two rows of
  /// each pair interleaved, pair after pair (2 kernels::strip_pairs words each). word() and the
  /// passes E B then no longer read E.
  bool interleaved = false;

  /// Rows of a strip: rows padded to an even count.
  Eigen::Index padded_rows() const { return (rows + 1) / 2 * 2; }

  /// Pairs (words) of a row: cols padded to an even count, halved.
  Eigen::Index pairs() const { return (cols + 1) / 2; }

  /// Words from one strip to the next.
  std::size_t strip_words() const {
    return static_cast<std::size_t>(padded_rows()) * kernels::strip_pairs;
  }

  /// The word of row r (< padded_rows()) and pair k (< pairs()); the strips are rows.
  std::uint32_t& word(Eigen::Index r, Eigen::Index k) { return words.data()[word_index(r, k)]; }

  /// The word of row r (< padded_rows()) and pair k (< pairs()); the strips are rows.
  std::uint32_t word(Eigen::Index r, Eigen::Index k) const {
    return words.data()[word_index(r, k)];
  }

 private:
  // Index in `words` of the word of row r and pair k.
  std::size_t word_index(Eigen::Index r, Eigen::Index k) const {
    const auto pair = static_cast<std::size_t>(k);
    return pair / kernels::strip_pairs * strip_words() +
           static_cast<std::size_t>(r) * kernels::strip_pairs + pair % kernels::strip_pairs;
  }
};

/// The exponent k, clamped to [-100, 100], with magnitude 2^k in [1, 2); 0 when magnitude is 0.
inline int bfloat16_exponent(double magnitude) {
  if (!(magnitude > 0.0)) return 0;
  int exponent = 0;
  std::frexp(magnitude, &exponent);  // magnitude = m 2^exponent, m in [0.5, 1)
  return std::clamp(1 - exponent, -100, 100);
}

/// The 16 bits of the bfloat16 nearest x (ties to even), or 0 when |x| < 2^-50; x finite and
/// below bfloat16's largest value.
inline std::uint32_t bfloat16_bits(float x) {
  std::uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  if ((bits & 0x7fffffffu) < 0x26800000u) return 0u;  // 2^-50
  return (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
}

/// The word of the bfloat16 pair (first, second), first in the low half.
inline std::uint32_t bfloat16_pair(float first, float second) {
  return bfloat16_bits(first) | (bfloat16_bits(second) << 16);
}

/// Sizes out for a rows x cols E scaled by 2^exponent (keeping its memory when the size is
/// unchanged), makes its strips rows again (not `interleaved`) and zeroes its padding: the row
/// past an odd last row, and the last strip's pairs past the last pair; round_row_to_bfloat16()
/// then fills each row.
inline void prepare_bfloat16(Eigen::Index rows, Eigen::Index cols, int exponent, Bfloat16Matrix& out) {
  constexpr auto strip = static_cast<Eigen::Index>(kernels::strip_pairs);
  out.rows = rows;
  out.cols = cols;
  out.exponent = exponent;
  out.interleaved = false;
  const Eigen::Index strips = (out.pairs() + strip - 1) / strip;
  resize_on_huge_pages(out.words, strips * out.padded_rows(), strip);
  const Eigen::Index last = out.pairs() - (strips - 1) * strip;  // pairs of the last strip
  if (strips > 0 && last < strip) {
    out.words.bottomRows(out.padded_rows()).rightCols(strip - last).setZero();
  }
  if (rows % 2 != 0) {
    for (Eigen::Index k = 0; k < out.pairs(); ++k) out.word(rows, k) = 0u;
  }
}

/// Writes the kernels::strip_pairs words at `from` to `to`, 16-byte aligned, past the caches
/// where the CPU can (SSE2's non-temporal stores; then stream_words_fence() orders them before the
/// thread's later stores), else as usual.
inline void stream_strip_row(const std::uint32_t* from, std::uint32_t* to) {
#if defined(__SSE2__)
  for (std::size_t k = 0; k < kernels::strip_pairs; k += 4) {
    _mm_stream_si128(reinterpret_cast<__m128i*>(to + k),
                     _mm_loadu_si128(reinterpret_cast<const __m128i*>(from + k)));
  }
#else
  std::copy(from, from + kernels::strip_pairs, to);
#endif
}

/// Orders this thread's stores of stream_strip_row() before its later stores.
inline void stream_words_fence() {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

/// Row i of out (prepared by prepare_bfloat16()) from E's row i, the out.cols floats at e. Its
/// whole rows of a strip go past the caches (stream_strip_row(); call stream_words_fence() after
/// the last row): a row's part in each strip, 512 KB from the next at 4096 rows, makes too many
/// streams for the caches to fetch each line ahead of its store.
inline void round_row_to_bfloat16(const float* e, Eigen::Index i, Bfloat16Matrix& out) {
  const float scale = std::ldexp(1.0f, out.exponent);
  const auto full = static_cast<std::size_t>(out.cols / 2);
  const std::size_t strip_words = out.strip_words();
  std::uint32_t* row = out.words.data() + static_cast<std::size_t>(i) * kernels::strip_pairs;
  alignas(16) std::uint32_t staged[kernels::strip_pairs];
  for (std::size_t first = 0; first < full; first += kernels::strip_pairs) {
    std::uint32_t* word = row + first / kernels::strip_pairs * strip_words;
    const std::size_t count = std::min(full - first, kernels::strip_pairs);
    const float* pair = e + 2 * first;
    const bool whole =
        count == kernels::strip_pairs && reinterpret_cast<std::uintptr_t>(word) % 16 == 0;
    std::uint32_t* to = whole ? staged : word;
    for (std::size_t k = 0; k < count; ++k)
      to[k] = bfloat16_pair(pair[2 * k] * scale, pair[2 * k + 1] * scale);
    if (whole) stream_strip_row(staged, word);
  }
  if (out.cols % 2 != 0)
    out.word(i, static_cast<Eigen::Index>(full)) = bfloat16_pair(e[2 * full] * scale, 0.0f);
}

/// out = E rounded to bfloat16 with `exponent`, in parallel pieces of rows; out keeps its memory
/// when its size is unchanged.
inline void round_to_bfloat16(const RowMatrixXf& E, int exponent, Bfloat16Matrix& out) {
  prepare_bfloat16(E.rows(), E.cols(), exponent, out);
  parallel_for((E.rows() + 63) / 64, [&](std::ptrdiff_t piece) {
    const Eigen::Index first = piece * 64, last = std::min<Eigen::Index>(first + 64, E.rows());
    for (Eigen::Index i = first; i < last; ++i) round_row_to_bfloat16(E.data() + i * E.cols(), i, out);
    stream_words_fence();
  });
}

/// The tile kernels of the bfloat16 products of one instruction set: over B as pairs (product,
/// transposed), or, where those are null, over B split into floats (split_product,
/// split_transposed).
struct Bfloat16Kernels {
  std::size_t tile_rows;    ///< Rows of a tile of C.
  std::size_t panel_words;  ///< Scratch a tile of product or transposed needs, in words.
  /// One tile of C = E B (kernels' bfloat16_product_tile()), or null.
  void (*product)(const std::uint32_t*, std::size_t, std::size_t, std::size_t, const std::uint32_t*,
                  std::size_t, std::size_t, float*, std::size_t, std::uint32_t*, kernels::PanelUse);
  /// One tile of C = E^T B (kernels' bfloat16_transposed_product_tile()), or null.
  void (*transposed)(const std::uint32_t*, std::size_t, std::size_t, std::size_t,
                     const std::uint32_t*, std::size_t, std::size_t, float*, std::size_t,
                     std::uint32_t*, kernels::PanelUse);
  /// One tile of C = E B over B split (kernels' bfloat16_split_product_tile()), or null.
  void (*split_product)(const std::uint32_t*, std::size_t, std::size_t, std::size_t, const float*, std::size_t,
                        std::size_t, float*, std::size_t, float*) = nullptr;
  /// One tile of C = E^T B over B split (kernels' bfloat16_split_transposed_product_tile()), or null.
  void (*split_transposed)(const std::uint32_t*, std::size_t, std::size_t, std::size_t, const float*, std::size_t,
                           std::size_t, float*, std::size_t, float*) = nullptr;
  /// Floats of scratch a tile of split_product or split_transposed needs for `columns` columns
  /// of C, or null.
  std::size_t (*split_scratch)(std::size_t columns) = nullptr;
};

namespace kernels {

/// The portable set's bfloat16 tile kernels: two FMAs per pair, on the pairs.
inline Bfloat16Kernels scalar_bfloat16_kernels() {
  return {scalar::pair_tile_rows, scalar::pair_panel_words, scalar::bfloat16_product_tile,
          scalar::bfloat16_transposed_product_tile};
}

#if LOFTQ_X86_KERNELS
/// AVX2's bfloat16 tile kernels on the float FMAs: two per pair, over the split terms.
inline Bfloat16Kernels avx2_split_bfloat16_kernels() {
  return {avx2::split_tile_rows,
          0,
          nullptr,
          nullptr,
          avx2::bfloat16_split_product_tile,
          avx2::bfloat16_split_transposed_product_tile,
          avx2::split_scratch_floats};
}

/// AVX-512's bfloat16 tile kernels on the float FMAs: two per pair, over the split terms.
inline Bfloat16Kernels avx512_split_bfloat16_kernels() {
  return {avx512::split_tile_rows,
          0,
          nullptr,
          nullptr,
          avx512::bfloat16_split_product_tile,
          avx512::bfloat16_split_transposed_product_tile,
          avx512::split_scratch_floats};
}

/// AVX-512 BF16's bfloat16 tile kernels: one vdpbf16ps per pair.
inline Bfloat16Kernels avx512_dot_bfloat16_kernels() {
  return {avx512_bf16::pair_tile_rows, avx512_bf16::pair_panel_words, avx512_bf16::bfloat16_product_tile,
          avx512_bf16::bfloat16_transposed_product_tile};
}
#endif

}  // namespace kernels

/// The bfloat16 tile kernels of `isa`. On AVX-512: the dot product vdpbf16ps where the CPU has
/// AVX-512 BF16 and issues it as fast as a float FMA (CpuFeatures::fast_bfloat16_dot), else two
/// float FMAs per pair over the split terms, as on AVX2. All sets give the same bits.
inline Bfloat16Kernels bfloat16_kernels(Isa isa) {
  switch (isa) {
#if LOFTQ_X86_KERNELS
    case Isa::avx512:
      return cpu_features().fast_bfloat16_dot ? kernels::avx512_dot_bfloat16_kernels()
                                              : kernels::avx512_split_bfloat16_kernels();
    case Isa::avx2:
      return kernels::avx2_split_bfloat16_kernels();
#endif
    default:
      return kernels::scalar_bfloat16_kernels();
  }
}

/// Every set of bfloat16 tile kernels this CPU runs, named, the portable one first: what tests
/// compare bit for bit and benchmarks side by side, whichever bfloat16_kernels() picks.
inline std::vector<std::pair<const char*, Bfloat16Kernels>> runnable_bfloat16_kernels() {
  std::vector<std::pair<const char*, Bfloat16Kernels>> sets = {{"scalar", kernels::scalar_bfloat16_kernels()}};
#if LOFTQ_X86_KERNELS
  if (cpu_features().avx2) sets.emplace_back("avx2_split", kernels::avx2_split_bfloat16_kernels());
  if (cpu_features().avx512) sets.emplace_back("avx512_split", kernels::avx512_split_bfloat16_kernels());
  if (cpu_features().avx512_bf16) sets.emplace_back("avx512_dot", kernels::avx512_dot_bfloat16_kernels());
#endif
  return sets;
}

/// The bfloat16 pairs B (pairs x k, row-major) split for the split kernels: row 2p of `split`
/// holds the high halves (second terms) of B's row p, row 2p + 1 the low halves, each as the
/// float whose high 16 bits it is; in parallel pieces of rows. split keeps its memory when its
/// size is unchanged.
inline void split_bfloat16_operand(const std::vector<std::uint32_t>& B, std::size_t k, std::vector<float>& split) {
  const std::size_t pairs = k > 0 ? B.size() / k : 0;
  if (split.size() != 2 * B.size()) split = std::vector<float>(2 * B.size());
  constexpr std::size_t piece = 128;  // pairs
  parallel_for(static_cast<std::ptrdiff_t>((pairs + piece - 1) / piece), [&](std::ptrdiff_t i) {
    const std::size_t first = static_cast<std::size_t>(i) * piece;
    for (std::size_t p = first; p < std::min(pairs, first + piece); ++p) {
      for (std::size_t j = 0; j < k; ++j) {
        const std::uint32_t word = B[p * k + j];
        const std::uint32_t high = word & 0xffff0000u, low = word << 16;
        std::memcpy(&split[2 * p * k + j], &high, sizeof high);
        std::memcpy(&split[(2 * p + 1) * k + j], &low, sizeof low);
      }
    }
  });
}

/// `pairs` = X (depth x k) as bfloat16 pairs of rows, row-major: pairs[p k + j] holds X(2p, j)
/// and X(2p + 1, j) (0 past X's last row); X's elements finite and of magnitude under 2^100.
inline void bfloat16_operand(const Eigen::Ref<const Eigen::MatrixXf>& X,
                             std::vector<std::uint32_t>& pairs) {
  const Eigen::Index k = X.cols(), count = (X.rows() + 1) / 2;
  pairs.resize(static_cast<std::size_t>(count * k));
  parallel_for((count + 127) / 128, [&](std::ptrdiff_t piece) {
    const Eigen::Index first = piece * 128, last = std::min<Eigen::Index>(first + 128, count);
    for (Eigen::Index j = 0; j < k; ++j) {
      for (Eigen::Index p = first; p < last; ++p) {
        const float second = 2 * p + 1 < X.rows() ? X(2 * p + 1, j) : 0.0f;
        pairs[static_cast<std::size_t>(p * k + j)] = bfloat16_pair(X(2 * p, j), second);
      }
    }
  });
}

/// Whether a tile of `tile_rows` of E^T B's rows (E's columns) lies in one strip of a
/// Bfloat16Matrix, as bfloat16_product_of() needs.
constexpr bool fits_strips(std::size_t tile_rows) {
  return 2 * kernels::strip_pairs % tile_rows == 0;
}

static_assert(fits_strips(kernels::scalar::pair_tile_rows));
#if LOFTQ_X86_KERNELS
static_assert(fits_strips(kernels::avx2::split_tile_rows) &&
              fits_strips(kernels::avx512::split_tile_rows) &&
              fits_strips(kernels::avx512_bf16::pair_tile_rows));
#endif

/// The tiles of E B, or of E^T B, of a Bfloat16Matrix E as the bfloat16 tile kernels read them
/// (packed pair after pair), kept from one pass over E to the next: packing the tiles (8 x 8
/// transposes for E B, pairs of rows interleaved for E^T B) took about a fifth of a pass's time
/// (4096 x 4096, 68 columns, on a Zen 4).
struct PackedTiles {
  /// Tile after tile, one a row: every pair of the tile, tile_rows words each.
  Eigen::Matrix<std::uint32_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> words;
  std::size_t tile_rows = 0;  ///< Rows of a tile of the kernels that packed them.
  bool transposed = false;    ///< Whether they are E^T B's tiles rather than E B's.
  /// Whether `words` hold the tiles of the E that the passes read now; whoever writes a new E
  /// clears it (forget()).
  bool ready = false;
  /// The split kernels' copy of the thin operand (split_bfloat16_operand()), kept for its memory.
  std::vector<float> split;

  /// Marks the tiles stale: the next pass packs them again.
  void forget() { ready = false; }
};

/// out = E B (transposed false; E.rows x k) or E^T B (true; E.cols x k) for E rounded to
/// bfloat16, in E's own scale (the sums times 2^-exponent), B given as bfloat16 pairs by
/// bfloat16_operand() (k columns). Tiles of out's rows run in parallel on the kernels `set`
/// (bfloat16_kernels()), into a padded copy when out's rows are not a multiple of
/// product_row_padding. When `beside` is set, it runs on one thread of the team while the others
/// start the tiles (parallel_for_beside(); a tile's bits do not depend on its thread). The
/// tiles are read from `packed` when it is ready with this product's tiles (E B or E^T B) for
/// these kernels, and packed into it when it is not null and not ready or holds others (the split
/// kernels pack as before); the same bits either way. E^T B's tiles are kept in E's own strips
/// instead (interleaved in place; E.interleaved) when the kernels' tiles are a strip's 64
/// columns and E's rows are even, and read there from then on, `packed` or not. Throws
/// std::logic_error for E B of an interleaved E without its tiles ready in `packed`, or for an
/// interleaved E on kernels that do not read it so.
inline void bfloat16_product_of(const Bfloat16Kernels& set, Bfloat16Matrix& E, bool transposed,
                                const std::vector<std::uint32_t>& B, Eigen::Index k,
                                Eigen::Ref<Eigen::MatrixXf> out,
                                const std::function<void()>& beside = {},
                                PackedTiles* packed = nullptr) {
  const auto rows = static_cast<std::size_t>(transposed ? E.cols : E.rows);
  const auto pairs = static_cast<std::size_t>(transposed ? E.padded_rows() / 2 : E.pairs());
  const std::size_t strip_words = E.strip_words();
  const auto columns = static_cast<std::size_t>(k);
  if (out.rows() != static_cast<Eigen::Index>(rows) || out.cols() != k ||
      B.size() != pairs * columns) {
    throw std::logic_error("bfloat16_product_of: out or B has the wrong shape");
  }
  const bool direct = rows % static_cast<std::size_t>(product_row_padding) == 0;
  const Eigen::Index padded_rows = (static_cast<Eigen::Index>(rows) + product_row_padding - 1) /
                                   product_row_padding * product_row_padding;
  Eigen::MatrixXf padded;
  if (!direct) padded.resize(padded_rows, k);
  float* c = direct ? out.data() : padded.data();
  const auto ldc = static_cast<std::size_t>(direct ? out.outerStride() : padded.rows());
  const float unscale = std::ldexp(1.0f, -E.exponent);
  const std::size_t tiles = (rows + set.tile_rows - 1) / set.tile_rows;
  std::vector<float> own_split;
  std::vector<float>& split = packed != nullptr ? packed->split : own_split;
  if (set.split_product != nullptr) split_bfloat16_operand(B, columns, split);
  // A tile of E^T B reads its columns' words, all in one strip, kernels::strip_pairs words a row;
  // a tile of E B its rows' words, in every strip, strip_words words from one strip to the next.
  const auto tile_start = [&](std::size_t first) {
    return transposed ? E.words.data() + first / 2 / kernels::strip_pairs * strip_words +
                            first / 2 % kernels::strip_pairs
                      : E.words.data() + first * kernels::strip_pairs;
  };
  const std::size_t stride = transposed ? kernels::strip_pairs : strip_words;
  // The tiles kept in `packed`, and whether they are there already.
  PackedTiles* const kept = set.split_product == nullptr ? packed : nullptr;
  const auto tile_words = static_cast<Eigen::Index>(pairs * set.tile_rows);
  const bool reuse = kept != nullptr && kept->ready && kept->tile_rows == set.tile_rows &&
                     kept->transposed == transposed &&
                     kept->words.rows() == static_cast<Eigen::Index>(tiles) &&
                     kept->words.cols() == tile_words;
  // E^T B's tiles in E's strips: a tile is a strip, its pairs of rows 64 adjacent words.
  const bool strip_tiles =
      transposed && set.split_product == nullptr && set.tile_rows == 2 * kernels::strip_pairs;
  if (E.interleaved && (transposed ? !strip_tiles : !reuse)) {
    throw std::logic_error(
        "bfloat16_product_of: E's strips hold E^T B's tiles, which these kernels or this product "
        "do not read");
  }
  const bool interleave = strip_tiles && packed != nullptr && !E.interleaved && E.rows % 2 == 0;
  const bool in_strips = transposed && (E.interleaved || interleave);  // E^T B's tiles in E
  if (kept != nullptr && !reuse && !in_strips) {
    kept->ready = false;
    resize_on_huge_pages(kept->words, static_cast<Eigen::Index>(tiles), tile_words);
    kept->tile_rows = set.tile_rows;
    kept->transposed = transposed;
  }
  const auto run_tile = [&](std::ptrdiff_t t) {
    const std::size_t first = static_cast<std::size_t>(t) * set.tile_rows;
    const std::size_t count = std::min(set.tile_rows, rows - first);
    if (set.split_product != nullptr) {
      const std::unique_ptr<float[]> panel(new float[set.split_scratch(columns)]);  // written before read
      const auto tile = transposed ? set.split_transposed : set.split_product;
      tile(tile_start(first), stride, count, pairs, split.data(), columns, columns, c + first, ldc,
           panel.get());
    } else {
      const auto tile = transposed ? set.transposed : set.product;
      if (in_strips) {
        std::uint32_t* strip = E.words.data() + static_cast<std::size_t>(t) * strip_words;
        tile(strip, stride, count, pairs, B.data(), columns, columns, c + first, ldc, strip,
             E.interleaved ? kernels::PanelUse::packed : kernels::PanelUse::keep);
      } else if (kept != nullptr) {
        tile(tile_start(first), stride, count, pairs, B.data(), columns, columns, c + first, ldc,
             kept->words.row(t).data(),
             reuse ? kernels::PanelUse::packed : kernels::PanelUse::keep);
      } else {
        const std::unique_ptr<std::uint32_t[]> panel(
            new std::uint32_t[set.panel_words]);  // written before read
        tile(tile_start(first), stride, count, pairs, B.data(), columns, columns, c + first, ldc,
             panel.get(), kernels::PanelUse::scratch);
      }
    }
    for (std::size_t j = 0; j < columns; ++j) {
      for (std::size_t r = first; r < first + count; ++r) c[j * ldc + r] *= unscale;
    }
  };
  if (beside) {
    parallel_for_beside(static_cast<std::ptrdiff_t>(tiles), beside, run_tile);
  } else {
    parallel_for(static_cast<std::ptrdiff_t>(tiles), run_tile);
  }
  if (interleave) {
    E.interleaved = true;
  } else if (kept != nullptr && !in_strips) {
    kept->ready = true;
  }
  if (!direct) out = padded.topRows(static_cast<Eigen::Index>(rows));
}

/// out = E X for E rounded to bfloat16 (rows x cols) and X cols x k; out must be rows x k.
/// `pairs` holds X's bfloat16 pairs; E's tiles are kept in `packed` when it is not null
/// (bfloat16_product_of()).
inline void multiply(Bfloat16Matrix& E, const Eigen::Ref<const Eigen::MatrixXf>& X,
                     Eigen::Ref<Eigen::MatrixXf> out, std::vector<std::uint32_t>& pairs,
                     PackedTiles* packed = nullptr) {
  bfloat16_operand(X, pairs);
  bfloat16_product_of(bfloat16_kernels(active_isa()), E, false, pairs, X.cols(), out, {}, packed);
}

/// out = E^T Y for E rounded to bfloat16 (rows x cols) and Y rows x k; out must be cols x k.
/// `pairs` holds Y's bfloat16 pairs; `beside`, when set, runs beside the tiles, and E^T's tiles
/// are kept, in E's strips or in `packed`, when `packed` is not null (bfloat16_product_of()).
inline void multiply_transposed(Bfloat16Matrix& E, const Eigen::Ref<const Eigen::MatrixXf>& Y,
                                Eigen::Ref<Eigen::MatrixXf> out, std::vector<std::uint32_t>& pairs,
                                const std::function<void()>& beside = {},
                                PackedTiles* packed = nullptr) {
  bfloat16_operand(Y, pairs);
  bfloat16_product_of(bfloat16_kernels(active_isa()), E, true, pairs, Y.cols(), out, beside,
                      packed);
}

/// out = E X, E rows x cols row-major, X cols x k; out must be rows x k. `operand` holds X's
/// row-major copy.
inline void multiply(const RowMatrixXf& E, const Eigen::Ref<const Eigen::MatrixXf>& X,
                     Eigen::Ref<Eigen::MatrixXf> out, std::vector<float>& operand) {
  product_of(E, false, row_major_operand(X, operand), out);
}

/// out = E X, resized to rows x k.
inline void multiply(const RowMatrixXf& E, const Eigen::Ref<const Eigen::MatrixXf>& X,
                     Eigen::MatrixXf& out) {
  out.resize(E.rows(), X.cols());
  std::vector<float> operand;
  multiply(E, X, out, operand);
}

/// out = E^T Y, E rows x cols row-major, Y rows x k; out must be cols x k. `operand` holds Y's
/// row-major copy.
inline void multiply_transposed(const RowMatrixXf& E, const Eigen::Ref<const Eigen::MatrixXf>& Y,
                                Eigen::Ref<Eigen::MatrixXf> out, std::vector<float>& operand) {
  product_of(E, true, row_major_operand(Y, operand), out);
}

/// out = E^T Y, resized to cols x k.
inline void multiply_transposed(const RowMatrixXf& E, const Eigen::Ref<const Eigen::MatrixXf>& Y,
                                Eigen::MatrixXf& out) {
  out.resize(E.cols(), Y.cols());
  std::vector<float> operand;
  multiply_transposed(E, Y, out, operand);
}

}  // namespace loftq::detail
