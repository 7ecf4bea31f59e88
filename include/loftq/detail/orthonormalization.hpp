/// @file detail/orthonormalization.hpp
/// Orthonormal bases of the randomized SVD: Gram-Schmidt against a basis, CholeskyQR2, and a
/// Householder QR in double when CholeskyQR2 is unsafe; and one CholeskyQR step for a block
/// whose span is all that is used.
#pragma once

#include <Eigen/Cholesky>
#include <Eigen/Core>
#include <Eigen/QR>

#include "pieced_products.hpp"

namespace loftq::detail {

/// Y -= P (P^T Y), twice (classical Gram-Schmidt with reorthogonalization), in place; P (a
/// matrix or a block of columns) has orthonormal columns.
template <class Scalar>
void project_out(MatrixView<Scalar> P, Matrix<Scalar>& Y) {
  if (P.cols() == 0) return;
  for (int pass = 0; pass < 2; ++pass) {
    const Matrix<Scalar> C = cross_product<Scalar>(P, Y).template cast<Scalar>();
    subtract_product(P, C, Y);
  }
}

/// One CholeskyQR step, Y <- Y L^-T with L L^T = Y^T Y (in double); false, leaving Y alone, when
/// the Cholesky factor fails or its diagonal spreads by more than max_spread.
template <class Scalar>
bool cholesky_qr_step(Matrix<Scalar>& Y, double max_spread) {
  const Eigen::LLT<Eigen::MatrixXd> llt(gram_in_double(Y));
  if (llt.info() != Eigen::Success) return false;
  const Eigen::VectorXd diagonal = llt.matrixL().toDenseMatrix().diagonal();
  const double smallest = diagonal.minCoeff();
  if (!(smallest > 0.0) || diagonal.maxCoeff() > max_spread * smallest) return false;
  const Eigen::Index k = Y.cols();
  const Matrix<Scalar> inverse_transpose =
      llt.matrixU().solve(Eigen::MatrixXd::Identity(k, k)).template cast<Scalar>();  // U^-1 = L^-T
  multiply_in_place(Y, inverse_transpose);
  return true;
}

/// Makes Y's columns orthonormal and orthogonal to P's (orthonormal) columns, in place:
/// Gram-Schmidt against P (a matrix or a block of columns), then CholeskyQR2; when Y is too
/// ill-conditioned for it, a Householder QR of [P, Y] in double, whose trailing columns are
/// orthogonal to P whatever Y is.
template <class Scalar>
void orthonormalize(MatrixView<Scalar> P, Matrix<Scalar>& Y) {
  project_out(P, Y);
  if (cholesky_qr_step(Y, 1e5) && cholesky_qr_step(Y, 10.0)) return;
  Eigen::MatrixXd joined(Y.rows(), P.cols() + Y.cols());
  if (P.cols() > 0) joined.leftCols(P.cols()) = P.template cast<double>();  // P may be an empty 0 x 0 matrix
  joined.rightCols(Y.cols()) = Y.template cast<double>();
  const Eigen::HouseholderQR<Eigen::MatrixXd> qr(joined);
  const Eigen::MatrixXd thin = qr.householderQ() * Eigen::MatrixXd::Identity(joined.rows(), joined.cols());
  Y = thin.rightCols(Y.cols()).template cast<Scalar>();
}

/// Makes Y's columns a well-conditioned basis of their span, in place: one CholeskyQR step, which
/// leaves them orthonormal up to about eps * cond(Y)^2, or orthonormalize() when that step is
/// unsafe. For a block whose span is all that is used.
template <class Scalar>
void condition_basis(Matrix<Scalar>& Y) {
  if (!cholesky_qr_step(Y, 1e5)) orthonormalize(Matrix<Scalar>(), Y);
}

}  // namespace loftq::detail
