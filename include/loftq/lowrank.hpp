/// @file lowrank.hpp
/// Rank-r truncated SVD in LoftQ's factor form: E ~ A B^T with A = U_r sqrt(S_r),
/// B = V_r sqrt(S_r); exact, or randomized (block Krylov, subspace iteration).
#pragma once

#include <Eigen/Cholesky>
#include <Eigen/Core>
#include <Eigen/Eigenvalues>
#include <Eigen/QR>
#include <Eigen/SVD>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "detail/checks.hpp"
#include "detail/gemm.hpp"
#include "detail/random.hpp"
#include "threads.hpp"

namespace loftq {

/// How the truncated SVD is computed.
enum class SvdMethod : std::uint8_t {
  /// Full thin SVD (Eigen::BDCSVD), then the leading rank triplets: the reference.
  exact,
  /// Randomized block Krylov (Musco and Musco, 2015): `depth` blocks of rank + oversampling
  /// columns spanning E^T E's Krylov space from a Gaussian (or given) sketch, 2 depth - 1
  /// passes over E, then a Rayleigh-Ritz step. The default.
  block_krylov,
  /// Randomized subspace iteration with power_iters >= 1 applications of E^T E, 2 power_iters
  /// + 1 passes over E: cheaper per pass and less accurate than block_krylov.
  subspace_iteration,
};

/// Settings of truncated_svd().
struct SvdOptions {
  SvdMethod method = SvdMethod::block_krylov;  ///< The method.
  int oversampling = 4;    ///< Columns of a sketch block beyond the rank, >= 0.
  int depth = 5;           ///< Krylov blocks of block_krylov, >= 1.
  int power_iters = 1;     ///< Applications of E E^T in subspace_iteration, >= 1.
  std::uint64_t seed = 0;  ///< Seed of the Gaussian sketch; results depend only on it.
};

/// The leading `rank` singular triplets of a rows x cols matrix E, as LoftQ's factors.
struct LowRankFactors {
  Eigen::MatrixXf A;                ///< rows x rank, U_r sqrt(S_r).
  Eigen::MatrixXf B;                ///< cols x rank, V_r sqrt(S_r).
  Eigen::VectorXf singular_values;  ///< S_r, non-increasing.
};

namespace detail {

/// Throws unless 0 <= rank <= min(rows, cols).
inline void check_rank(Eigen::Index rank, Eigen::Index rows, Eigen::Index cols) {
  const Eigen::Index most = std::min(rows, cols);
  if (rank < 0 || rank > most) {
    fail("rank = " + std::to_string(rank) + " is out of range [0, " + std::to_string(most) +
         "] for a " + std::to_string(rows) + " x " + std::to_string(cols) + " matrix");
  }
}

/// Throws unless the SVD options are in range.
inline void check_svd_options(const SvdOptions& options) {
  switch (options.method) {
    case SvdMethod::exact:
    case SvdMethod::block_krylov:
    case SvdMethod::subspace_iteration:
      break;
    default:
      fail("svd method = " + std::to_string(static_cast<int>(options.method)) +
           " is not an SvdMethod");
  }
  if (options.oversampling < 0) {
    fail("oversampling = " + std::to_string(options.oversampling) + " must be >= 0");
  }
  if (options.depth < 1) fail("depth = " + std::to_string(options.depth) + " must be >= 1");
  if (options.power_iters < 1) {
    fail("power_iters = " + std::to_string(options.power_iters) + " must be >= 1");
  }
}

/// Factors with no columns.
inline LowRankFactors empty_factors(Eigen::Index rows, Eigen::Index cols) {
  LowRankFactors f;
  f.A.resize(rows, 0);
  f.B.resize(cols, 0);
  return f;
}

/// The exact rank-`rank` factors of E, by BDCSVD.
inline LowRankFactors exact_svd(const Eigen::MatrixXf& E, Eigen::Index rank) {
  const Eigen::BDCSVD<Eigen::MatrixXf> svd(E, Eigen::ComputeThinU | Eigen::ComputeThinV);
  LowRankFactors f;
  f.singular_values = svd.singularValues().head(rank);
  const Eigen::VectorXf root = f.singular_values.cwiseSqrt();
  f.A = svd.matrixU().leftCols(rank) * root.asDiagonal();
  f.B = svd.matrixV().leftCols(rank) * root.asDiagonal();
  return f;
}

/// Y -= P (P^T Y), twice (classical Gram-Schmidt with reorthogonalization); P has orthonormal
/// columns.
inline void project_out(const Eigen::MatrixXf& P, Eigen::MatrixXf& Y) {
  if (P.cols() == 0) return;
  Eigen::MatrixXf correction;
  for (int pass = 0; pass < 2; ++pass) {
    const Eigen::MatrixXf C = cross_product(P, Y).cast<float>();
    multiply_small(P, C, correction);
    Y -= correction;
  }
}

/// One CholeskyQR step, Y <- Y L^-T with L L^T = Y^T Y (in double); false, leaving Y alone, when
/// the Cholesky factor fails or its diagonal spreads by more than max_spread.
inline bool cholesky_qr_step(Eigen::MatrixXf& Y, double max_spread) {
  const Eigen::LLT<Eigen::MatrixXd> llt(gram_in_double(Y));
  if (llt.info() != Eigen::Success) return false;
  const Eigen::VectorXd diagonal = llt.matrixL().toDenseMatrix().diagonal();
  const double smallest = diagonal.minCoeff();
  if (!(smallest > 0.0) || diagonal.maxCoeff() > max_spread * smallest) return false;
  const Eigen::Index k = Y.cols();
  const Eigen::MatrixXd inverse_transpose =
      llt.matrixU().solve(Eigen::MatrixXd::Identity(k, k));  // U^-1 = L^-T
  Eigen::MatrixXf orthonormal;
  multiply_small(Y, inverse_transpose.cast<float>(), orthonormal);
  Y = std::move(orthonormal);
  return true;
}

/// Makes Y's columns orthonormal and orthogonal to P's (orthonormal) columns: Gram-Schmidt
/// against P, then CholeskyQR2; when Y is too ill-conditioned for it, a Householder QR of [P, Y]
/// in double, whose trailing columns are orthogonal to P whatever Y is.
inline void orthonormalize(const Eigen::MatrixXf& P, Eigen::MatrixXf& Y) {
  project_out(P, Y);
  if (cholesky_qr_step(Y, 1e5) && cholesky_qr_step(Y, 10.0)) return;
  Eigen::MatrixXd joined(Y.rows(), P.cols() + Y.cols());
  if (P.cols() > 0) joined.leftCols(P.cols()) = P.cast<double>();  // P may be an empty 0 x 0 matrix
  joined.rightCols(Y.cols()) = Y.cast<double>();
  const Eigen::HouseholderQR<Eigen::MatrixXd> qr(joined);
  const Eigen::MatrixXd thin = qr.householderQ() * Eigen::MatrixXd::Identity(joined.rows(), joined.cols());
  Y = thin.rightCols(Y.cols()).cast<float>();
}

/// Appends the columns of `block` to `basis`.
inline void append_columns(Eigen::MatrixXf& basis, const Eigen::MatrixXf& block) {
  const Eigen::Index old = basis.cols();
  basis.conservativeResize(block.rows(), old + block.cols());
  basis.rightCols(block.cols()) = block;
}

/// Rayleigh-Ritz on the right: the best rank-`rank` factors of E P P^T, given P (orthonormal
/// columns) and EP = E P. The small eigenproblem of (EP)^T EP = P^T E^T E P is solved in double.
inline LowRankFactors rayleigh_ritz(const Eigen::MatrixXf& P, const Eigen::MatrixXf& EP, Eigen::Index rank) {
  const Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> eigen(cross_product(EP, EP));
  const Eigen::Index l = P.cols();
  Eigen::MatrixXd to_a(l, rank);  // W_r S_r^(-1/2)
  Eigen::MatrixXd to_b(l, rank);  // W_r S_r^(1/2)
  LowRankFactors f;
  f.singular_values.resize(rank);
  for (Eigen::Index k = 0; k < rank; ++k) {
    const Eigen::Index source = l - 1 - k;  // eigenvalues ascend
    const double sigma = std::sqrt(std::max(eigen.eigenvalues()(source), 0.0));
    const double root = std::sqrt(sigma);
    f.singular_values(k) = static_cast<float>(sigma);
    to_b.col(k) = eigen.eigenvectors().col(source) * root;
    to_a.col(k) = root > 0.0 ? Eigen::VectorXd(eigen.eigenvectors().col(source) / root)
                             : Eigen::VectorXd::Zero(l);
  }
  multiply_small(EP, to_a.cast<float>(), f.A);
  multiply_small(P, to_b.cast<float>(), f.B);
  return f;
}

/// The first sketch: the columns of `start` (at most `block`), then Gaussian columns.
inline Eigen::MatrixXf initial_sketch(Eigen::Index cols, Eigen::Index block, const Eigen::MatrixXf* start,
                                      std::uint64_t seed) {
  const Eigen::Index given = start != nullptr ? std::min(start->cols(), block) : 0;
  Eigen::MatrixXf gaussian(cols, block - given);
  fill_gaussian(gaussian, seed, 0);
  Eigen::MatrixXf sketch(cols, block);
  if (given > 0) sketch.leftCols(given) = start->leftCols(given);
  sketch.rightCols(block - given) = gaussian;
  return sketch;
}

/// Randomized truncated SVD of E (block_krylov or subspace_iteration); `start` (cols x k) or
/// nullptr seeds the sketch. Both methods work on the right: from an orthonormal block P_0 of
/// the sketch, each next block is P_{j+1} = orth(E^T orth(E P_j)), orthogonal to the blocks
/// before it. block_krylov keeps all `depth` blocks (2 depth - 1 passes over E), subspace
/// iteration only the last of power_iters + 1 (2 power_iters + 1 passes); Rayleigh-Ritz on the
/// kept blocks P then needs E P, which the passes have made already.
inline LowRankFactors randomized_svd(const RowMatrixXf& E, Eigen::Index rank, const SvdOptions& options,
                                     const Eigen::MatrixXf* start) {
  const Eigen::Index block = std::min<Eigen::Index>(rank + options.oversampling, std::min(E.rows(), E.cols()));
  const bool krylov = options.method == SvdMethod::block_krylov;
  const int blocks = krylov ? options.depth : options.power_iters + 1;
  const Eigen::MatrixXf none;
  Eigen::MatrixXf P = initial_sketch(E.cols(), block, start, options.seed);  // kept blocks
  orthonormalize(none, P);
  Eigen::MatrixXf EP;  // E P
  multiply(E, P, EP);
  Eigen::MatrixXf Y, Z;
  for (int j = 1; j < blocks; ++j) {
    Y = EP.rightCols(block);
    orthonormalize(none, Y);
    multiply_transposed(E, Y, Z);
    if (krylov) {
      orthonormalize(P, Z);
      append_columns(P, Z);
      multiply(E, Z, Y);
      append_columns(EP, Y);
    } else {
      orthonormalize(none, Z);
      P = std::move(Z);
      multiply(E, P, EP);
    }
  }
  return rayleigh_ritz(P, EP, rank);
}

/// Columns the randomized method's basis would have.
inline Eigen::Index sketch_columns(Eigen::Index rank, const SvdOptions& options) {
  const Eigen::Index block = rank + options.oversampling;
  return options.method == SvdMethod::block_krylov ? block * options.depth : block;
}

/// truncated_svd() on a row-major matrix, inside the caller's ThreadScope.
inline LowRankFactors truncated_svd_row_major(const RowMatrixXf& E, Eigen::Index rank, const SvdOptions& options,
                                              const Eigen::MatrixXf* start) {
  if (rank == 0) return empty_factors(E.rows(), E.cols());
  // A sketch as wide as E's smaller side holds no saving: compute the exact SVD.
  if (options.method == SvdMethod::exact || sketch_columns(rank, options) >= std::min(E.rows(), E.cols())) {
    return exact_svd(E, rank);
  }
  return randomized_svd(E, rank, options, start);
}

/// Checks the arguments of truncated_svd() and computes it.
template <class Derived>
LowRankFactors checked_truncated_svd(const Eigen::MatrixBase<Derived>& E, Eigen::Index rank,
                                     const SvdOptions& options, const Eigen::MatrixXf* start) {
  static_assert(std::is_same_v<typename Derived::Scalar, float>,
                "loftq::truncated_svd: E must hold float");
  check_not_empty("E", E.rows(), E.cols());
  check_rank(rank, E.rows(), E.cols());
  check_svd_options(options);
  if (start != nullptr && (start->rows() != E.cols() || start->cols() < 1)) {
    fail("start is " + std::to_string(start->rows()) + " x " + std::to_string(start->cols()) +
         ", needs E.cols() = " + std::to_string(E.cols()) + " rows and at least one column");
  }
  const ThreadScope scope;
  return with_row_major(E, [&](const RowMatrixXf& row_major) {
    check_finite("E", row_major.data(), row_major.rows(), row_major.cols());
    return truncated_svd_row_major(row_major, rank, options, start);
  });
}

}  // namespace detail

/// Rank-`rank` truncated SVD of E (any Eigen expression of floats). rank 0 gives factors with no
/// columns; a randomized method whose sketch would be as wide as min(rows, cols) computes the
/// exact SVD instead. Results depend on options.seed only, never on the thread count. Throws
/// std::invalid_argument for an empty or non-finite E, rank outside [0, min(rows, cols)] or an
/// option out of range.
template <class Derived>
LowRankFactors truncated_svd(const Eigen::MatrixBase<Derived>& E, Eigen::Index rank,
                             const SvdOptions& options = SvdOptions{}) {
  return detail::checked_truncated_svd(E, rank, options, nullptr);
}

/// truncated_svd() with `method` and the other options at their defaults.
template <class Derived>
LowRankFactors truncated_svd(const Eigen::MatrixBase<Derived>& E, Eigen::Index rank, SvdMethod method) {
  SvdOptions options;
  options.method = method;
  return detail::checked_truncated_svd(E, rank, options, nullptr);
}

/// truncated_svd() warm-started: the randomized sketch begins with the columns of `start`
/// (E.cols() x k, e.g. the B of a nearby matrix), then Gaussian columns up to its width.
/// Throws std::invalid_argument also when start.rows() != E.cols() or start has no column.
template <class Derived>
LowRankFactors truncated_svd(const Eigen::MatrixBase<Derived>& E, Eigen::Index rank, const SvdOptions& options,
                             const Eigen::MatrixXf& start) {
  return detail::checked_truncated_svd(E, rank, options, &start);
}

}  // namespace loftq
