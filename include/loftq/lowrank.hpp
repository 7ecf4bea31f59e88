/// @file lowrank.hpp
/// Rank-r truncated SVD in LoftQ's factor form: E ~ A B^T with A = U_r sqrt(S_r),
/// B = V_r sqrt(S_r); exact, or randomized (block Krylov, subspace iteration).
#pragma once

#include <Eigen/Core>
#include <Eigen/Eigenvalues>
#include <Eigen/SVD>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <type_traits>
#include <vector>

#include "detail/checks.hpp"
#include "detail/huge_pages.hpp"
#include "detail/largest_eigenpairs.hpp"
#include "detail/orthonormalization.hpp"
#include "detail/pieced_products.hpp"
#include "detail/random.hpp"
#include "detail/row_major.hpp"
#include "kernels/products.hpp"
#include "matrix.hpp"
#include "threads.hpp"

namespace loftq {

/// How the truncated SVD is computed.
enum class SvdMethod : std::uint8_t {
  /// Full thin SVD (Eigen::BDCSVD), then the leading rank triplets: the reference.
  exact,
  /// Randomized block Krylov (Musco and Musco, 2015): up to `depth` blocks of rank +
  /// oversampling columns spanning E^T E's Krylov space from a Gaussian (or given) sketch, 2 d - 1
  /// passes over E for d blocks, then a Rayleigh-Ritz step. The default.
  block_krylov,
  /// Randomized subspace iteration with power_iters >= 1 applications of E^T E, 2 power_iters
  /// + 1 passes over E: cheaper per pass and less accurate than block_krylov.
  subspace_iteration,
};

/// Settings of truncated_svd().
struct SvdOptions {
  SvdMethod method = SvdMethod::block_krylov;  ///< The method.
  int oversampling = 4;    ///< Columns of a sketch block beyond the rank, >= 0.
  int depth = 5;           ///< Krylov blocks of block_krylov, >= 1: all of them, or the most with a tolerance.
  /// block_krylov: stop adding blocks once the captured energy (the sum of the rank largest
  /// squared Ritz values) has converged: when what further blocks would add, extrapolated from
  /// the last two blocks' gains as a geometric series, is at most tolerance times the energy
  /// left, ||E||_F^2 minus the captured energy. >= 0; 0 always takes `depth` blocks.
  double tolerance = 0.0;
  int power_iters = 1;     ///< Applications of E E^T in subspace_iteration, >= 1.
  std::uint64_t seed = 0;  ///< Seed of the Gaussian sketch; results depend only on it.
  /// Randomized methods: run the passes that build the basis over E rounded to bfloat16 (1.7 to
  /// 2 times as fast as float where the CPU's AVX-512 BF16 dot product is fast, as on AMD's Zen 4;
  /// 1.0 to 1.3 times on Intel's AVX-512 cores, which run it on float FMAs), then find the
  /// factors in one float pass over E. The basis then resolves E's singular vectors to about bfloat16's precision
  /// (1e-3 relative), enough where the energy E's rank-`rank` approximation leaves is far above
  /// that (loftq()'s residuals, whose spectrum is flat); false keeps every pass in float, for
  /// matrices close to rank `rank`.
  bool bfloat16_passes = false;
};

/// The leading `rank` singular triplets of a rows x cols matrix E, as LoftQ's factors.
struct LowRankFactors {
  Eigen::MatrixXf A;                ///< rows x rank, U_r sqrt(S_r).
  Eigen::MatrixXf B;                ///< cols x rank, V_r sqrt(S_r).
  Eigen::VectorXf singular_values;  ///< S_r, non-increasing.
  int krylov_depth = 0;             ///< Krylov blocks block_krylov took; 0 for the other methods.
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
  check_tolerance("tolerance", options.tolerance);
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

/// The exact rank-`rank` factors of E, by BDCSVD of its column-major copy.
template <class Scalar>
LowRankFactors exact_svd(const RowMatrix<Scalar>& E, Eigen::Index rank) {
  static_assert(std::is_same_v<Scalar, float>, "LowRankFactors hold float");
  const Eigen::BDCSVD<Eigen::MatrixXf> svd(Eigen::MatrixXf(E), Eigen::ComputeThinU | Eigen::ComputeThinV);
  LowRankFactors f;
  f.singular_values = svd.singularValues().head(rank);
  const Eigen::VectorXf root = f.singular_values.cwiseSqrt();
  f.A = svd.matrixU().leftCols(rank) * root.asDiagonal();
  f.B = svd.matrixV().leftCols(rank) * root.asDiagonal();
  return f;
}

/// Rayleigh-Ritz on the right: the best rank-`rank` factors of E P P^T, given P (orthonormal
/// columns), EP = E P (matrices or blocks of columns) and its Gram matrix (EP)^T EP =
/// P^T E^T E P, whose `rank` largest eigenpairs are computed in double (recording their
/// rotations in `rotations`).
template <class Scalar = float>
LowRankFactors rayleigh_ritz(MatrixView<Scalar> P, MatrixView<Scalar> EP,
                             const Eigen::MatrixXd& gram, Eigen::Index rank,
                             std::vector<PlaneRotation>& rotations) {
  static_assert(std::is_same_v<Scalar, float>, "LowRankFactors hold float");
  const LargestEigenpairs eigen = largest_eigenpairs(gram, rank, rotations);
  const Eigen::Index l = P.cols();
  Eigen::MatrixXd to_a(l, rank);  // W_r S_r^(-1/2)
  Eigen::MatrixXd to_b(l, rank);  // W_r S_r^(1/2)
  LowRankFactors f;
  f.singular_values.resize(rank);
  for (Eigen::Index k = 0; k < rank; ++k) {
    const double sigma = std::sqrt(std::max(eigen.values(k), 0.0));
    const double root = std::sqrt(sigma);
    f.singular_values(k) = static_cast<float>(sigma);
    to_b.col(k) = eigen.vectors.col(k) * root;
    to_a.col(k) =
        root > 0.0 ? Eigen::VectorXd(eigen.vectors.col(k) / root) : Eigen::VectorXd::Zero(l);
  }
  multiply_small(EP, Matrix<Scalar>(to_a.cast<Scalar>()), f.A);
  multiply_small(P, Matrix<Scalar>(to_b.cast<Scalar>()), f.B);
  return f;
}

/// The rank-`rank` Ritz vectors V = P W_r: W_r the eigenvectors of the `rank` largest
/// eigenvalues of the Gram matrix (EP)^T EP = P^T E^T E P, computed in double (recording their
/// rotations in `rotations`); P orthonormal (a matrix or a block of columns).
template <class Scalar = float>
Matrix<Scalar> ritz_vectors(MatrixView<Scalar> P, const Eigen::MatrixXd& gram, Eigen::Index rank,
                            std::vector<PlaneRotation>& rotations) {
  const LargestEigenpairs eigen = largest_eigenpairs(gram, rank, rotations);
  Matrix<Scalar> V;
  multiply_small(P, Matrix<Scalar>(eigen.vectors.cast<Scalar>()), V);
  return V;
}

/// The best rank-`rank` factors of E V V^T, for V (E.cols() x at least rank) with orthonormal
/// columns: Rayleigh-Ritz on V, with E V from one float pass over E (`operand` holds V's
/// row-major copy, `rotations` the eigensolver's). So A B^T = E V_r V_r^T for the best rank-`rank`
/// basis V_r within V, and ||E - A B^T||^2 = ||E||^2 - sum S^2.
template <class Scalar>
LowRankFactors projected_factors(const RowMatrix<Scalar>& E, const Matrix<Scalar>& V,
                                 Eigen::Index rank, std::vector<float>& operand,
                                 std::vector<PlaneRotation>& rotations) {
  Matrix<Scalar> EV(E.rows(), V.cols());
  multiply(E, V, EV, operand);
  return rayleigh_ritz(V, EV, cross_product(EV, EV), rank, rotations);
}

/// The first sketch into `sketch`, resized to cols x block: the columns of `start` (at most
/// `block`), then Gaussian columns.
template <class Scalar>
void initial_sketch(Eigen::Index cols, Eigen::Index block, const Matrix<Scalar>* start,
                    std::uint64_t seed, Matrix<Scalar>& sketch) {
  const Eigen::Index given = start != nullptr ? std::min(start->cols(), block) : 0;
  sketch.resize(cols, block);
  if (given == 0) return fill_gaussian(sketch, seed, 0);
  Eigen::MatrixXf gaussian(cols, block - given);
  fill_gaussian(gaussian, seed, 0);
  sketch.leftCols(given) = start->leftCols(given);
  sketch.rightCols(block - given) = gaussian;
}

/// Extends `gram`, the Gram matrix of EP's first gram.cols() columns, to all of EP's columns (EP:
/// a matrix or a block of columns).
template <class Scalar = float>
void extend_gram(MatrixView<Scalar> EP, Eigen::MatrixXd& gram) {
  const Eigen::Index old = gram.cols();
  const Eigen::Index added = EP.cols() - old;
  const Eigen::MatrixXd new_columns = cross_product(EP, EP.rightCols(added));
  gram.conservativeResize(EP.cols(), EP.cols());
  gram.rightCols(added) = new_columns;
  gram.bottomLeftCorner(added, old) = new_columns.topRows(old).transpose();
}

/// The energy of E P P^T's best rank-`rank` approximation: the sum of the `rank` largest
/// eigenvalues of the Gram matrix of E P (an Eigen::MatrixXd), computed in double. A template, so
/// that only a program that calls it compiles the eigensolver.
template <class Gram>
double captured_energy(const Gram& gram, Eigen::Index rank) {
  const Eigen::SelfAdjointEigenSolver<Gram> eigen(gram, Eigen::EigenvaluesOnly);
  const Eigen::Index k = std::min(rank, gram.cols());
  return eigen.eigenvalues().tail(k).cwiseMax(0.0).sum();  // eigenvalues ascend
}

/// Relative size below which a gain of captured energy is float rounding of the products.
inline constexpr double captured_energy_rounding = 1e-5;

/// Whether block Krylov may stop, given the captured energy each block added so far (gains[j] for
/// block j + 1), the energy captured and the energy left, ||E||^2 minus the captured: when the
/// last gain is within float rounding of the captured energy, or when what further blocks would
/// add, extrapolated as a geometric series (gain rho / (1 - rho)) from the last gain and the
/// larger of the last two gain ratios rho, is at most tolerance times the energy left.
inline bool converged(const std::vector<double>& gains, double captured, double left, double tolerance) {
  const std::size_t j = gains.size();
  if (j < 2) return false;
  const double gain = gains[j - 1];
  if (gain <= captured_energy_rounding * captured) return true;
  double rho = gain / gains[j - 2];
  if (j >= 3) rho = std::max(rho, gains[j - 2] / gains[j - 3]);
  if (!(rho < 1.0)) return false;
  return gain * rho <= tolerance * std::max(0.0, left) * (1.0 - rho);
}

/// Records the captured energy `now` of the blocks kept so far (its gain in `gains`, the total in
/// `captured`) and returns whether block Krylov may stop there (converged(); `energy` is
/// ||E||_F^2).
inline bool decide(std::vector<double>& gains, double& captured, double now, double energy,
                   double tolerance) {
  gains.push_back(now - captured);
  captured += gains.back();
  return converged(gains, captured, energy - captured, tolerance);
}

/// Passes E X, or passes E^T Y, over E rounded to bfloat16 from which randomized_svd() keeps
/// their tiles packed (PackedTiles, or E's own strips for E^T Y): the first pass E X then takes
/// about 1.25 times as long, as it writes them (the first E^T Y about as long as before), and
/// each later one about 0.8 times (4096 x 4096, 68 columns, on a Zen 4), so two passes E X do
/// not gain. E X's count is the larger, so E X's tiles are kept whenever E^T Y's are: E's
/// strips are no longer rows once E^T Y kept its tiles there.
inline constexpr int keep_tiles_from_passes = 3;

/// The memory of randomized_svd(): E rounded to bfloat16, its kept blocks P and E P, in the
/// leading columns of two buffers, the blocks on their way (E P's newest block and E^T of it),
/// each product's thin operand (row-major, or as bfloat16 pairs), and the rotations of
/// Rayleigh-Ritz's eigensolver. loftq() keeps them from step to step (and a Workspace from call
/// to call): allocating them afresh for every truncated SVD would map fresh memory and fault its
/// pages in every time.
struct KrylovBuffers {
  Bfloat16Matrix rounded;            ///< E rounded to bfloat16, for the Krylov passes.
  Eigen::MatrixXf P;                 ///< E.cols() x at least as many columns as the basis.
  Eigen::MatrixXf EP;                ///< E.rows() x as many columns as P.
  Eigen::MatrixXf Y;                 ///< E P's newest block, conditioned: the operand of E^T Y.
  Eigen::MatrixXf Z;  ///< E^T Y (or the sketch), the next block before it is orthonormalized.
  std::vector<float> operand;        ///< The thin operand of a float product over E, row-major.
  std::vector<std::uint32_t> pairs;  ///< The thin operand of a bfloat16 product, as pairs.
  PackedTiles packed;                ///< E B's tiles of `rounded`, kept from pass to pass.
  /// E^T B's tiles of `rounded`, kept from pass to pass where `rounded`'s own strips do not keep
  /// them (kernels whose tile is not a strip, or an odd number of rows: bfloat16_product_of()).
  PackedTiles packed_transposed;
  std::vector<PlaneRotation> rotations;  ///< The rotations largest_eigenpairs() records.

  /// Makes room for a basis of `width` columns for a rows x cols E, on huge pages; keeps the
  /// memory when there is room already.
  void reserve(Eigen::Index rows, Eigen::Index cols, Eigen::Index width) {
    if (P.rows() != cols || P.cols() < width) resize_on_huge_pages(P, cols, width);
    if (EP.rows() != rows || EP.cols() < width) resize_on_huge_pages(EP, rows, width);
  }

  /// Makes room in the operands for a block of `block` columns, as for E^T: a matrix and its
  /// transpose keep the same memory.
  void reserve_operands(Eigen::Index rows, Eigen::Index cols, Eigen::Index block) {
    const auto longer = static_cast<std::size_t>(std::max(rows, cols));
    operand.reserve(longer * static_cast<std::size_t>(block));
    pairs.reserve((longer + 1) / 2 * static_cast<std::size_t>(block));
  }
};

/// Randomized truncated SVD of E (block_krylov or subspace_iteration); `start` (cols x k) or
/// nullptr seeds the sketch; `energy` is ||E||_F^2; `rounded` tells that buffers.rounded holds
/// E rounded to bfloat16 already (made by the pass that wrote E). Both methods work on the
/// right: from an orthonormal block P_0 of the sketch, each next block is
/// P_{j+1} = orth(E^T orth(E P_j)), orthogonal to the blocks before it. block_krylov keeps all its
/// blocks (2 d - 1 passes over E for d blocks), and with a tolerance stops adding them once the
/// captured energy has converged; subspace iteration keeps only the last of power_iters + 1
/// (2 power_iters + 1 passes). Rayleigh-Ritz on the kept blocks P then needs E P, which the passes
/// have made already. With bfloat16_passes, the passes read E rounded to bfloat16
/// (Bfloat16Matrix), and the factors come from Rayleigh-Ritz again on the block's worth of
/// leading Ritz vectors V, with E V from one float pass over E itself (projected_factors()):
/// the float step picks the best rank-`rank` basis within V, which makes up for part of what
/// bfloat16 blurred. Without `float_step`, they come from Rayleigh-Ritz on the passes' E P
/// instead, one pass fewer: A B^T = E' V V^T for E' the rounded E, whose error the caller
/// measures (||E - A B^T||^2 = ||E||^2 - sum S^2 no longer holds). P and E P are kept in
/// `buffers`, and, from keep_tiles_from_passes passes E X (or E^T Y) on, the rounded E's tiles
/// of those passes packed for the bfloat16 kernels (the same bits).
template <class Scalar>
LowRankFactors randomized_svd(const RowMatrix<Scalar>& E, Eigen::Index rank, const SvdOptions& options,
                              const Matrix<Scalar>* start, double energy, KrylovBuffers& buffers, bool rounded,
                              bool float_step) {
  const Eigen::Index block = std::min<Eigen::Index>(rank + options.oversampling, std::min(E.rows(), E.cols()));
  const bool krylov = options.method == SvdMethod::block_krylov;
  const int blocks = krylov ? options.depth : options.power_iters + 1;
  const bool adaptive = krylov && options.tolerance > 0.0;
  const Matrix<Scalar> none;
  // The kept blocks P and E P, in the leading `kept` columns of the buffers.
  buffers.reserve(E.rows(), E.cols(), krylov ? block * blocks : block);
  buffers.reserve_operands(E.rows(), E.cols(), block);
  Matrix<Scalar>& P = buffers.P;
  Matrix<Scalar>& EP = buffers.EP;
  if (options.bfloat16_passes && !rounded) {
    round_to_bfloat16(E, bfloat16_exponent(std::sqrt(std::max(energy, 0.0))), buffers.rounded);
  }
  // E is new: its tiles are packed by the first pass that keeps them (E^T B's, on kernels whose
  // tile is a strip, in E's strips, after the first pass E X has kept E B's)
  buffers.packed.forget();
  buffers.packed_transposed.forget();
  PackedTiles* const packed = blocks >= keep_tiles_from_passes ? &buffers.packed : nullptr;
  PackedTiles* const packed_transposed =
      blocks - 1 >= keep_tiles_from_passes ? &buffers.packed_transposed : nullptr;
  // out = E X and out = E^T Y, the passes over E (or E rounded to bfloat16).
  const auto pass = [&](const auto& X, auto&& out) {
    if (options.bfloat16_passes) return multiply(buffers.rounded, X, out, buffers.pairs, packed);
    multiply(E, X, out, buffers.operand);
  };
  // `beside`, when set, runs beside the bfloat16 pass (on one of its threads), else before it.
  const auto transposed_pass = [&](const auto& Y, auto&& out, const std::function<void()>& beside) {
    if (options.bfloat16_passes)
      return multiply_transposed(buffers.rounded, Y, out, buffers.pairs, beside, packed_transposed);
    if (beside) beside();
    multiply_transposed(E, Y, out, buffers.operand);
  };
  Matrix<Scalar>& Y = buffers.Y;
  Matrix<Scalar>& Z = buffers.Z;
  initial_sketch(E.cols(), block, start, options.seed, Z);  // the first block, in Z's place
  orthonormalize(none, Z);
  P.leftCols(block) = Z;
  pass(P.leftCols(block), EP.leftCols(block));
  Eigen::Index kept = block;
  Eigen::MatrixXd gram;  // (EP)^T EP: grown block by block by block_krylov
  if (krylov) gram = cross_product(EP.leftCols(block), EP.leftCols(block));
  double captured = adaptive ? captured_energy(gram, rank) : 0.0;
  std::vector<double> gains = {captured};  // captured energy each block added
  // Whether the blocks kept so far wait for the decision to stop. From the second decision on,
  // once a decision went on, their captured energy is taken beside the next block's transposed
  // pass, whose block is dropped if they stop; the first decision is taken before that pass, as
  // the warm steps, which mostly stop there, would waste it.
  bool deciding = false;
  for (int j = 1; j < blocks; ++j) {
    double now = 0.0;
    const auto measure = [&] { now = captured_energy(gram, rank); };
    const bool beside = deciding && gains.size() > 1;
    if (deciding && !beside) {
      measure();
      if (decide(gains, captured, now, energy, options.tolerance)) break;
    }
    // Only the span of Y reaches E^T Y's orthonormalized block: a Krylov block whose Gram
    // matrix (in `gram`) says that it is well conditioned goes as it is.
    Y = EP.middleCols(kept - block, block);
    if (!krylov || !well_conditioned(gram.bottomRightCorner(block, block), rounding_condition)) {
      condition_basis(Y);
    }
    transposed_pass(Y, Z, beside ? std::function<void()>(measure) : std::function<void()>());
    if (beside && decide(gains, captured, now, energy, options.tolerance)) break;
    if (krylov) {
      orthonormalize(P.leftCols(kept), Z);
      P.middleCols(kept, block) = Z;
      pass(Z, EP.middleCols(kept, block));
      kept += block;
      extend_gram(EP.leftCols(kept), gram);
      deciding = adaptive && j + 1 < blocks;  // after the last block there is nothing to decide
    } else {
      orthonormalize(none, Z);
      P.leftCols(block) = Z;
      pass(P.leftCols(block), EP.leftCols(block));
    }
  }
  if (!krylov) gram = cross_product(EP.leftCols(block), EP.leftCols(block));
  LowRankFactors factors =
      options.bfloat16_passes && float_step
          ? projected_factors(E, ritz_vectors(P.leftCols(kept), gram, block, buffers.rotations),
                              rank, buffers.operand, buffers.rotations)
          : rayleigh_ritz(P.leftCols(kept), EP.leftCols(kept), gram, rank, buffers.rotations);
  factors.krylov_depth = krylov ? static_cast<int>(kept / block) : 0;
  return factors;
}

/// Columns the randomized method's basis would have.
inline Eigen::Index sketch_columns(Eigen::Index rank, const SvdOptions& options) {
  const Eigen::Index block = rank + options.oversampling;
  return options.method == SvdMethod::block_krylov ? block * options.depth : block;
}

/// Whether truncated_svd() of a rows x cols matrix runs a randomized method: rank > 0, and a
/// randomized method whose sketch is narrower than min(rows, cols) (a wider one holds no saving,
/// and the exact SVD runs instead).
inline bool runs_randomized(Eigen::Index rows, Eigen::Index cols, Eigen::Index rank, const SvdOptions& options) {
  return rank > 0 && options.method != SvdMethod::exact && sketch_columns(rank, options) < std::min(rows, cols);
}

/// truncated_svd() on a row-major matrix, inside the caller's ThreadScope; `energy` is
/// ||E||_F^2, or negative to have it computed; a randomized method keeps its basis in
/// `buffers`, `rounded` tells that buffers.rounded holds E rounded to bfloat16 already, and
/// `float_step` is randomized_svd()'s.
template <class Scalar>
LowRankFactors truncated_svd_row_major(const RowMatrix<Scalar>& E, Eigen::Index rank, const SvdOptions& options,
                                       const Matrix<Scalar>* start, double energy, KrylovBuffers& buffers,
                                       bool rounded, bool float_step) {
  if (rank == 0) return empty_factors(E.rows(), E.cols());
  if (!runs_randomized(E.rows(), E.cols(), rank, options)) return exact_svd(E, rank);
  if (energy < 0.0) energy = E.template cast<double>().squaredNorm();
  return randomized_svd(E, rank, options, start, energy, buffers, rounded, float_step);
}

#ifdef LOFTQ_SEPARATE_COMPILATION
// Instantiated once, in the source that includes <loftq/src.hpp>.
extern template LowRankFactors truncated_svd_row_major<float>(const RowMatrix<float>& E, Eigen::Index rank,
                                                              const SvdOptions& options, const Matrix<float>* start,
                                                              double energy, KrylovBuffers& buffers, bool rounded,
                                                              bool float_step);
#endif

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
    KrylovBuffers buffers;
    return truncated_svd_row_major(row_major, rank, options, start, -1.0, buffers, false, true);
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
