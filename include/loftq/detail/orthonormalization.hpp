/// @file detail/orthonormalization.hpp
/// Orthonormal bases of the randomized SVD: Gram-Schmidt against a basis, CholeskyQR (one step
/// or two), and a Householder QR in double when CholeskyQR is unsafe; and one CholeskyQR step for
/// a block whose span is all that is used.
#pragma once

#include <Eigen/Cholesky>
#include <Eigen/Core>
#include <Eigen/Eigenvalues>
#include <Eigen/QR>
#include <cmath>
#include <optional>

#include "pieced_products.hpp"

namespace loftq::detail {

/// Y -= P (P^T Y) in place: one pass of classical Gram-Schmidt; P (a matrix or a block of
/// columns) has orthonormal columns.
template <class Scalar>
void project_out(MatrixView<Scalar> P, Matrix<Scalar>& Y) {
  const Matrix<Scalar> C = cross_product(P, Y).template cast<Scalar>();
  subtract_product(P, C, Y);
}

/// The inverse R^-1 of the CholeskyQR factor of Y (R^T R = Y^T Y, in double), with the
/// Frobenius norms of Y and R^-1; not found when the Cholesky factor fails or its diagonal spreads
/// by more than max_spread.
template <class Scalar>
struct CholeskyInverse {
  bool found = false;      ///< Whether the factor passed; the members below are set only then.
  Matrix<Scalar> inverse;  ///< R^-1, upper triangular.
  double norm = 0.0;       ///< ||R^-1||_F, at least 1 / the smallest singular value of Y.
  double y_norm = 0.0;     ///< ||Y||_F = ||R||_F, at least Y's largest singular value.

  /// Factors Y's Gram matrix.
  CholeskyInverse(const Matrix<Scalar>& Y, double max_spread) {
    const Eigen::MatrixXd gram = gram_in_double(Y);
    const Eigen::LLT<Eigen::MatrixXd> llt(gram);
    if (llt.info() != Eigen::Success) return;
    const Eigen::VectorXd diagonal = llt.matrixL().toDenseMatrix().diagonal();
    const double smallest = diagonal.minCoeff();
    if (!(smallest > 0.0) || diagonal.maxCoeff() > max_spread * smallest) return;
    const Eigen::Index k = Y.cols();
    const Eigen::MatrixXd r_inverse =
        llt.matrixU().solve(Eigen::MatrixXd::Identity(k, k));  // U^-1 = L^-T
    found = true;
    inverse = r_inverse.template cast<Scalar>();
    norm = r_inverse.norm();
    y_norm = std::sqrt(gram.trace());
  }
};

/// One CholeskyQR step, Y <- Y R^-1 with R^T R = Y^T Y (in double); false, leaving Y alone, when
/// the Cholesky factor fails or its diagonal spreads by more than max_spread.
template <class Scalar>
bool cholesky_qr_step(Matrix<Scalar>& Y, double max_spread) {
  const CholeskyInverse<Scalar> factor(Y, max_spread);
  if (factor.found) multiply_in_place(Y, factor.inverse);
  return factor.found;
}

/// Bound on the loss of orthogonality that one Gram-Schmidt pass or one CholeskyQR step may
/// leave in orthonormalize(). Both are estimated as float's unit roundoff 2^-24 times
/// ||Y||_F ||R^-1||_F, for R the CholeskyQR factor of the block after the pass, and Y the block
/// before the pass (the loss to P) or the block R factors (the loss within the block, as the
/// factor is formed in double): about the largest |P^T Q| and |Q^T Q - I| left in the
/// orthonormalized Q = Y R^-1 (as measured on the randomized SVD's blocks). Above it, a second
/// pass, or a second step, runs.
inline constexpr double single_pass_loss = 0x1p-12;

/// Makes Y's columns orthonormal and orthogonal to P's (orthonormal) columns, in place, up to a
/// loss of orthogonality of about single_pass_loss: Gram-Schmidt against P (a matrix or a block
/// of columns), once when the loss it leaves is at most single_pass_loss, else twice, then one
/// CholeskyQR step, or two (CholeskyQR2) when one leaves more; when Y is too ill-conditioned for
/// it, a Householder QR of [P, Y] in double, whose trailing columns are orthogonal to P whatever
/// Y is.
template <class Scalar>
void orthonormalize(MatrixView<Scalar> P, Matrix<Scalar>& Y) {
  const auto loss = [](double y_norm, const CholeskyInverse<Scalar>& factor) {
    return 0x1p-24 * y_norm * factor.norm;
  };
  std::optional<CholeskyInverse<Scalar>> factor;
  if (P.cols() == 0) {
    factor.emplace(Y, 1e5);
  } else {
    const double norm = Y.template cast<double>().norm();
    project_out(P, Y);
    factor.emplace(Y, 1e5);
    if (!factor->found || loss(norm, *factor) > single_pass_loss) {
      project_out(P, Y);
      factor.emplace(Y, 1e5);
    }
  }
  if (factor->found) {
    multiply_in_place(Y, factor->inverse);
    if (loss(factor->y_norm, *factor) <= single_pass_loss || cholesky_qr_step(Y, 10.0)) return;
  }
  Eigen::MatrixXd joined(Y.rows(), P.cols() + Y.cols());
  if (P.cols() > 0) joined.leftCols(P.cols()) = P.template cast<double>();  // P may be an empty 0 x 0 matrix
  joined.rightCols(Y.cols()) = Y.template cast<double>();
  const Eigen::HouseholderQR<Eigen::MatrixXd> qr(joined);
  const Eigen::MatrixXd thin = qr.householderQ() * Eigen::MatrixXd::Identity(joined.rows(), joined.cols());
  Y = thin.rightCols(Y.cols()).template cast<Scalar>();
}

/// Condition number of a block up to which its span survives the rounding of its elements to
/// bfloat16 well enough without condition_basis(): the rounding (2^-9 of the block's largest
/// direction at most) moves the weakest direction by at most about 4 * 2^-9 of its own length,
/// 0.8 %, which costs the Krylov space about the square of that in relative energy.
inline constexpr double rounding_condition = 4.0;

/// Whether the block whose Gram matrix (in double; its lower triangle is read) is `gram` has a
/// condition number of at most `limit`: sqrt(largest / smallest eigenvalue of gram). An empty
/// block is not. A template, so that only a program that calls it compiles the eigensolver.
template <class Gram>
bool well_conditioned(const Gram& gram, double limit) {
  if (gram.rows() == 0) return false;
  const Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> eigen(gram, Eigen::EigenvaluesOnly);
  const Eigen::VectorXd& values = eigen.eigenvalues();  // ascending
  return values(0) > 0.0 && values(values.size() - 1) <= limit * limit * values(0);
}

/// Makes Y's columns a well-conditioned basis of their span, in place: one CholeskyQR step, which
/// leaves them orthonormal up to about eps * cond(Y)^2, or orthonormalize() when that step is
/// unsafe. For a block whose span is all that is used.
template <class Scalar>
void condition_basis(Matrix<Scalar>& Y) {
  if (!cholesky_qr_step(Y, 1e5)) orthonormalize(Matrix<Scalar>(), Y);
}

}  // namespace loftq::detail
