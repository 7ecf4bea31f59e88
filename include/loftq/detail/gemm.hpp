/// @file detail/gemm.hpp
/// Matrix products split into fixed row pieces, run by parallel_for: each piece is one
/// single-threaded Eigen product of the same shape whatever the thread count, and sums over
/// pieces are added in piece order, so every result is independent of the thread count.
/// Call them inside a ThreadScope, which keeps each piece's Eigen product on one thread.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cstddef>
#include <type_traits>
#include <vector>

#include "../matrix.hpp"
#include "../threads.hpp"

namespace loftq::detail {

/// Rows per piece of the products below.
inline constexpr Eigen::Index product_piece_rows = 256;

/// Calls piece(first, count) for consecutive row ranges of `rows`, product_piece_rows each.
template <class Piece>
void for_row_pieces(Eigen::Index rows, Piece&& piece) {
  const Eigen::Index pieces = (rows + product_piece_rows - 1) / product_piece_rows;
  parallel_for(pieces, [&](std::ptrdiff_t p) {
    const Eigen::Index first = p * product_piece_rows;
    piece(first, std::min(product_piece_rows, rows - first));
  });
}

/// out = E * X, E rows x cols row-major, X cols x k; out is resized. Each piece is formed as
/// X^T E_piece^T, so that Eigen reads E's rows as the columns of a column-major right-hand side
/// instead of repacking them as a row-major left-hand side.
inline void multiply(const RowMatrixXf& E, const Eigen::MatrixXf& X, Eigen::MatrixXf& out) {
  const Eigen::MatrixXf x_transposed = X.transpose();
  Eigen::MatrixXf out_transposed(X.cols(), E.rows());
  for_row_pieces(E.rows(), [&](Eigen::Index first, Eigen::Index count) {
    out_transposed.middleCols(first, count).noalias() = x_transposed * E.middleRows(first, count).transpose();
  });
  out = out_transposed.transpose();
}

/// out = E^T * Y, E rows x cols row-major, Y rows x k; out (cols x k) is resized.
inline void multiply_transposed(const RowMatrixXf& E, const Eigen::MatrixXf& Y, Eigen::MatrixXf& out) {
  out.resize(E.cols(), Y.cols());
  for_row_pieces(E.cols(), [&](Eigen::Index first, Eigen::Index count) {
    out.middleRows(first, count).noalias() = E.middleCols(first, count).transpose() * Y;
  });
}

/// out = A * B^T into a rows x cols row-major matrix that already has that shape.
inline void multiply_outer(const Eigen::MatrixXf& A, const Eigen::MatrixXf& B, RowMatrixXf& out) {
  for_row_pieces(A.rows(), [&](Eigen::Index first, Eigen::Index count) {
    out.middleRows(first, count).noalias() = A.middleRows(first, count) * B.transpose();
  });
}

/// Sum in double, in piece order, of product(first, count) (a double matrix of `shape_rows` x
/// `shape_cols`) over the fixed row pieces of `rows` rows.
template <class Product>
Eigen::MatrixXd sum_over_pieces(Eigen::Index rows, Eigen::Index shape_rows, Eigen::Index shape_cols,
                                Product&& product) {
  const Eigen::Index pieces = (rows + product_piece_rows - 1) / product_piece_rows;
  std::vector<Eigen::MatrixXd> partial(static_cast<std::size_t>(pieces));
  parallel_for(pieces, [&](std::ptrdiff_t p) {
    const Eigen::Index first = p * product_piece_rows;
    partial[static_cast<std::size_t>(p)] = product(first, std::min(product_piece_rows, rows - first));
  });
  Eigen::MatrixXd sum = Eigen::MatrixXd::Zero(shape_rows, shape_cols);
  for (const Eigen::MatrixXd& piece : partial) sum += piece;
  return sum;
}

/// X^T * Y for X, Y with equal row counts: float products of row pieces, added in double.
inline Eigen::MatrixXd cross_product(const Eigen::MatrixXf& X, const Eigen::MatrixXf& Y) {
  return sum_over_pieces(X.rows(), X.cols(), Y.cols(), [&](Eigen::Index first, Eigen::Index count) {
    const Eigen::MatrixXf piece = X.middleRows(first, count).transpose() * Y.middleRows(first, count);
    return Eigen::MatrixXd(piece.cast<double>());
  });
}

/// X^T * X computed in double throughout: the Gram matrix of a Cholesky factorization.
inline Eigen::MatrixXd gram_in_double(const Eigen::MatrixXf& X) {
  return sum_over_pieces(X.rows(), X.cols(), X.cols(), [&](Eigen::Index first, Eigen::Index count) {
    const Eigen::MatrixXd piece = X.middleRows(first, count).cast<double>();
    return Eigen::MatrixXd(piece.transpose() * piece);
  });
}

/// out = X * C for X rows x k and a small k x j matrix C; out is resized.
inline void multiply_small(const Eigen::MatrixXf& X, const Eigen::MatrixXf& C, Eigen::MatrixXf& out) {
  out.resize(X.rows(), C.cols());
  for_row_pieces(X.rows(), [&](Eigen::Index first, Eigen::Index count) {
    out.middleRows(first, count).noalias() = X.middleRows(first, count) * C;
  });
}

/// W in row-major order, copied in parallel pieces of 32 rows, tile by 32 x 32 tile: a tile
/// reads 32 whole cache lines of W's columns and writes 32 of the copy's rows, so the copy
/// neither strides across pages element by element nor leaves cache lines half used.
inline RowMatrixXf row_major_copy(const Eigen::MatrixXf& W) {
  RowMatrixXf out(W.rows(), W.cols());
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
