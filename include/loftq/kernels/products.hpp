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
#include <memory>
#include <stdexcept>
#include <vector>

#include "../detail/cpu.hpp"
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

/// Vectors (floats) per tile of the products' C.
inline constexpr std::size_t tile_vectors = 4;

/// Columns of C per step of the products.
inline constexpr std::size_t tile_columns = 4;

#define LOFTQ_TARGET
#include "product-inl.hpp"
#undef LOFTQ_TARGET

}  // namespace kernels::scalar

/// The rows of a product's C are padded to a multiple of this for the kernels, whose tiles
/// (4, 16 or 64 rows) divide it.
inline constexpr Eigen::Index product_row_padding = 64;

/// The tile kernels of one instruction set.
struct ProductKernels {
  std::size_t tile_rows;     ///< Rows of a tile of C.
  std::size_t panel_floats;  ///< Scratch a tile needs.
  /// One tile of C = E B (kernels' product_tile()).
  void (*product)(const float*, std::size_t, std::size_t, std::size_t, const float*, std::size_t, std::size_t,
                  float*, std::size_t, float*);
  /// One tile of C = E^T B (kernels' transposed_product_tile()).
  void (*transposed)(const float*, std::size_t, std::size_t, std::size_t, const float*, std::size_t, std::size_t,
                     float*, std::size_t, float*);
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

/// out = W in row-major order (W rows x cols, a matrix or a block of columns; out rows x cols),
/// copied in parallel pieces of 32 rows, tile by 32 x 32 tile with the 8 x 8 transposes of the
/// active instruction set: a tile reads 32 whole cache lines of W's columns and writes 32 of the
/// copy's rows, so the copy neither strides across pages element by element nor leaves cache
/// lines half used.
inline void row_major_copy(const Eigen::Ref<const Eigen::MatrixXf>& W, Eigen::Ref<RowMatrixXf> out) {
  const Isa isa = active_isa();
  const auto rows = static_cast<std::size_t>(W.rows()), cols = static_cast<std::size_t>(W.cols());
  const auto ld = static_cast<std::size_t>(W.outerStride());
  constexpr std::size_t tile = 32;
  parallel_for(static_cast<std::ptrdiff_t>((rows + tile - 1) / tile), [&](std::ptrdiff_t p) {
    const std::size_t first = static_cast<std::size_t>(p) * tile;
    const std::size_t count = std::min(tile, rows - first);
    for (std::size_t col = 0; col < cols; col += tile) {
      // W's columns col.. are rows of a row-major cols x ld array.
      transpose_block(isa, W.data() + col * ld + first, ld, std::min(tile, cols - col), count,
                      out.data() + first * cols + col, cols);
    }
  });
}

/// X's row-major copy in `operand`, resized (its memory is kept when it is large enough already).
inline Eigen::Map<const RowMatrixXf> row_major_operand(const Eigen::Ref<const Eigen::MatrixXf>& X,
                                                       std::vector<float>& operand) {
  operand.resize(static_cast<std::size_t>(X.size()));
  Eigen::Map<RowMatrixXf> copy(operand.data(), X.rows(), X.cols());
  row_major_copy(X, copy);
  return Eigen::Map<const RowMatrixXf>(operand.data(), X.rows(), X.cols());
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
