/// @file detail/row_major.hpp
/// The row-major view of a matrix argument: the layout quantization blocks are taken from.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cstddef>
#include <type_traits>
#include <utility>

#include "../isa.hpp"
#include "../kernels/products.hpp"
#include "../matrix.hpp"
#include "../threads.hpp"

namespace loftq::detail {

/// W in row-major order, copied in parallel pieces of 32 rows, tile by 32 x 32 tile with the
/// 8 x 8 transposes of the active instruction set: a tile reads 32 whole cache lines of W's
/// columns and writes 32 of the copy's rows, so the copy neither strides across pages element by
/// element nor leaves cache lines half used.
inline void row_major_copy(const Eigen::MatrixXf& W, RowMatrixXf& out) {
  out.resize(W.rows(), W.cols());
  const Isa isa = active_isa();
  const auto rows = static_cast<std::size_t>(W.rows()), cols = static_cast<std::size_t>(W.cols());
  constexpr std::size_t tile = 32;
  parallel_for(static_cast<std::ptrdiff_t>((rows + tile - 1) / tile), [&](std::ptrdiff_t p) {
    const std::size_t first = static_cast<std::size_t>(p) * tile;
    const std::size_t count = std::min(tile, rows - first);
    for (std::size_t col = 0; col < cols; col += tile) {
      // W's columns col.. are rows of a row-major cols x rows array.
      transpose_block(isa, W.data() + col * rows + first, rows, std::min(tile, cols - col), count,
                      out.data() + first * cols + col, cols);
    }
  });
}

/// W's row-major copy, made by row_major_copy(W, out).
inline RowMatrixXf row_major_copy(const Eigen::MatrixXf& W) {
  RowMatrixXf out;
  row_major_copy(W, out);
  return out;
}

/// use(M as a row-major float matrix): M itself when it is one, else a copy in `buffer`
/// (resized, which keeps its memory when the element count is unchanged; made in parallel
/// pieces for a column-major Eigen::MatrixXf).
template <class Derived, class Use>
decltype(auto) with_row_major(const Eigen::MatrixBase<Derived>& M, RowMatrixXf& buffer, Use&& use) {
  if constexpr (std::is_same_v<Derived, RowMatrixXf>) {
    return use(M.derived());
  } else if constexpr (std::is_same_v<Derived, Eigen::MatrixXf>) {
    row_major_copy(M.derived(), buffer);
    return use(std::as_const(buffer));
  } else {
    buffer = M;
    return use(std::as_const(buffer));
  }
}

/// with_row_major() with a copy of its own.
template <class Derived, class Use>
decltype(auto) with_row_major(const Eigen::MatrixBase<Derived>& M, Use&& use) {
  RowMatrixXf buffer;
  return with_row_major(M, buffer, std::forward<Use>(use));
}

}  // namespace loftq::detail
