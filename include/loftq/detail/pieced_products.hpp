/// @file detail/pieced_products.hpp
/// The small products of the randomized SVD (Gram matrices, cross products, products with a
/// small matrix), split into fixed row pieces run by parallel_for: each piece is one
/// single-threaded product of the same shape whatever the thread count, on the kernels of
/// kernels/products.hpp (the tile kernels, and lower_gram() for Gram matrices in double), and
/// sums over pieces are added in piece order, so every result is independent of the thread
/// count and of the instruction set. The big products E X and E^T Y are in kernels/products.hpp.
/// Call them inside a ThreadScope, as the rest of the randomized SVD.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cstddef>
#include <type_traits>
#include <vector>

#include "../kernels/products.hpp"
#include "../threads.hpp"

namespace loftq::detail {

/// Column-major dynamic matrix of Scalar.
template <class Scalar>
using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;

/// Row-major dynamic matrix of Scalar.
template <class Scalar>
using RowMatrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// A read-only view of a column-major Scalar matrix or of a block of its columns, without a
/// copy. As a parameter its Scalar is not deduced, so that any such block converts to it and the
/// function is compiled once for all of them.
template <class Scalar>
using MatrixView = const Eigen::Ref<const typename std::common_type<Matrix<Scalar>>::type>&;

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

/// Sum in double, in piece order, of the `shape_rows` x `shape_cols` matrices of PieceScalar
/// that product(first, count, out) writes into `out` over the fixed row pieces of `rows` rows.
/// The pieces' matrices stay in PieceScalar until they are added: a float piece takes half the
/// memory of its double copy, and the sum is the same bits.
template <class PieceScalar, class Product>
Eigen::MatrixXd sum_over_pieces(Eigen::Index rows, Eigen::Index shape_rows, Eigen::Index shape_cols,
                                Product&& product) {
  const Eigen::Index pieces = (rows + product_piece_rows - 1) / product_piece_rows;
  std::vector<Matrix<PieceScalar>> partial(static_cast<std::size_t>(pieces));
  parallel_for(pieces, [&](std::ptrdiff_t p) {
    const Eigen::Index first = p * product_piece_rows;
    Matrix<PieceScalar>& out = partial[static_cast<std::size_t>(p)];
    out.resize(shape_rows, shape_cols);
    product(first, std::min(product_piece_rows, rows - first), out);
  });
  Eigen::MatrixXd sum = Eigen::MatrixXd::Zero(shape_rows, shape_cols);
  for (const Matrix<PieceScalar>& piece : partial) sum += piece.template cast<double>();
  return sum;
}

/// X^T * Y for X, Y with equal row counts (matrices or blocks of columns): float products of
/// row pieces on the kernels of active_isa() (product_tiles(): X's column-major data is a
/// row-major X^T, and each piece of Y is copied row-major), added in double. A template, so
/// that only a program that calls it compiles it.
template <class Scalar = float>
Eigen::MatrixXd cross_product(MatrixView<Scalar> X, MatrixView<Scalar> Y) {
  static_assert(std::is_same_v<Scalar, float>, "the kernels multiply float");
  const Isa isa = active_isa();
  const auto columns = static_cast<std::size_t>(Y.cols());
  return sum_over_pieces<float>(
      X.rows(), X.cols(), Y.cols(),
      [&](Eigen::Index first, Eigen::Index count, Matrix<float>& out) {
        if (X.cols() == 0 || Y.cols() == 0) return;
        const auto depth = static_cast<std::size_t>(count);
        std::vector<float> y(depth * columns), scratch;  // the piece of Y, row-major
        transpose_block(isa, Y.data() + first, static_cast<std::size_t>(Y.outerStride()), columns,
                        depth, y.data(), columns);
        product_tiles(isa, X.data() + first, static_cast<std::size_t>(X.outerStride()),
                      static_cast<std::size_t>(X.cols()), depth, y.data(), columns, columns,
                      out.data(), static_cast<std::size_t>(out.rows()), scratch);
      });
}

/// The lower triangle of X^T * X, computed in double throughout (half the flops of the
/// product), on the kernels of active_isa() (lower_gram()); the strict upper triangle is 0. The
/// Gram matrix of a Cholesky factorization, which reads the lower triangle only. A template, so
/// that only a program that calls it compiles it.
template <class Scalar>
Eigen::MatrixXd gram_in_double(const Matrix<Scalar>& X) {
  static_assert(std::is_same_v<Scalar, float>, "the kernels read float");
  const Isa isa = active_isa();
  return sum_over_pieces<double>(
      X.rows(), X.cols(), X.cols(),
      [&](Eigen::Index first, Eigen::Index count, Eigen::MatrixXd& gram) {
        gram.setZero();
        lower_gram(isa, X.data() + first, static_cast<std::size_t>(X.outerStride()),
                   static_cast<std::size_t>(count), static_cast<std::size_t>(X.cols()), gram.data(),
                   static_cast<std::size_t>(gram.rows()));
      });
}

/// out = X * C for the rows [first, first + count) of X (rows x k, a matrix or a block of
/// columns; k >= 1) and a small k x j matrix C given row-major: X's column-major data is a
/// row-major X^T, so these rows are transposed_tiles() of it on the kernels of active_isa(), one
/// FMA chain over k per element. out: count x j, column-major with `ldo` floats between columns.
inline void rows_times_small(MatrixView<float> X, const RowMatrix<float>& C, Eigen::Index first,
                             Eigen::Index count, float* out, std::size_t ldo) {
  std::vector<float> scratch;
  transposed_tiles(active_isa(), X.data() + first, static_cast<std::size_t>(X.outerStride()),
                   static_cast<std::size_t>(count), static_cast<std::size_t>(X.cols()), C.data(),
                   static_cast<std::size_t>(C.cols()), static_cast<std::size_t>(C.cols()), out, ldo,
                   scratch);
}

/// out = X * C for X rows x k (a matrix or a block of columns) and a small k x j matrix C; out
/// is resized.
inline void multiply_small(MatrixView<float> X, const Matrix<float>& C, Matrix<float>& out) {
  out.resize(X.rows(), C.cols());
  if (X.cols() == 0) {
    out.setZero();
    return;
  }
  const RowMatrix<float> c = C;
  for_row_pieces(X.rows(), [&](Eigen::Index first, Eigen::Index count) {
    rows_times_small(X, c, first, count, out.data() + first, static_cast<std::size_t>(out.rows()));
  });
}

/// Y -= X * C for X rows x k (a matrix or a block of columns) and a small k x j matrix C, in
/// place.
inline void subtract_product(MatrixView<float> X, const Matrix<float>& C, Matrix<float>& Y) {
  if (X.cols() == 0) return;
  const RowMatrix<float> c = C;
  for_row_pieces(X.rows(), [&](Eigen::Index first, Eigen::Index count) {
    Matrix<float> piece(count, C.cols());
    rows_times_small(X, c, first, count, piece.data(), static_cast<std::size_t>(count));
    Y.middleRows(first, count) -= piece;
  });
}

/// Y = Y * C for a small square C, in place, one row piece at a time.
inline void multiply_in_place(Matrix<float>& Y, const Matrix<float>& C) {
  const RowMatrix<float> c = C;
  for_row_pieces(Y.rows(), [&](Eigen::Index first, Eigen::Index count) {
    Matrix<float> piece(count, C.cols());
    rows_times_small(Y, c, first, count, piece.data(), static_cast<std::size_t>(count));
    Y.middleRows(first, count) = piece;
  });
}

}  // namespace loftq::detail
