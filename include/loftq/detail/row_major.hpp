/// @file detail/row_major.hpp
/// The row-major view of a matrix argument: the layout quantization blocks are taken from.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <type_traits>

#include "../matrix.hpp"
#include "../threads.hpp"

namespace loftq::detail {

/// W in row-major order, copied in parallel pieces of 32 rows, tile by 32 x 32 tile: a tile
/// reads 32 whole cache lines of W's columns and writes 32 of the copy's rows, so the copy
/// neither strides across pages element by element nor leaves cache lines half used.
template <class Scalar>
Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> row_major_copy(
    const Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>& W) {
  Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> out(W.rows(), W.cols());
  constexpr Eigen::Index tile = 32;
  parallel_for((W.rows() + tile - 1) / tile, [&](std::ptrdiff_t p) {
    const Eigen::Index first = p * tile;
    const Eigen::Index count = std::min(tile, W.rows() - first);
    for (Eigen::Index col = 0; col < W.cols(); col += tile) {
      const Eigen::Index width = std::min(tile, W.cols() - col);
      out.block(first, col, count, width) = W.block(first, col, count, width);
    }
  });
  return out;
}

/// use(M as a row-major float matrix): M itself when it is one, else a copy (made in parallel
/// pieces for a column-major Eigen::MatrixXf).
template <class Derived, class Use>
decltype(auto) with_row_major(const Eigen::MatrixBase<Derived>& M, Use&& use) {
  if constexpr (std::is_same_v<Derived, RowMatrixXf>) {
    return use(M.derived());
  } else if constexpr (std::is_same_v<Derived, Eigen::MatrixXf>) {
    const RowMatrixXf copy = row_major_copy(M.derived());
    return use(copy);
  } else {
    const RowMatrixXf copy = M;
    return use(copy);
  }
}

}  // namespace loftq::detail
