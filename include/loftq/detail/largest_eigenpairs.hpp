/// @file detail/largest_eigenpairs.hpp
/// The largest eigenpairs of a small symmetric matrix, for Rayleigh-Ritz: Householder
/// tridiagonalization, the implicit QL algorithm on the tridiagonal matrix with its rotations
/// recorded instead of accumulated into all n eigenvectors, then only the wanted eigenvectors
/// formed from the recorded rotations and transformed back.
#pragma once

#include <Eigen/Core>
#include <Eigen/Eigenvalues>
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <vector>

#include "huge_pages.hpp"

namespace loftq::detail {

/// The k largest eigenvalues of a symmetric matrix and orthonormal eigenvectors for them.
struct LargestEigenpairs {
  Eigen::VectorXd values;   ///< The k largest eigenvalues, non-increasing.
  Eigen::MatrixXd vectors;  ///< n x k: column j is a unit eigenvector of values(j).
};

/// sqrt(a^2 + b^2) without overflow or underflow: the plain formula where the sum of squares is
/// safely inside double's range, else std::hypot (slower).
inline double norm2(double a, double b) {
  const double squares = a * a + b * b;
  return squares > 0x1p-900 && squares < 0x1p900 ? std::sqrt(squares) : std::hypot(a, b);
}

/// A plane rotation of the implicit QL algorithm, acting on coordinates `index` and index + 1.
struct PlaneRotation {
  Eigen::Index index;  ///< First of the two coordinates.
  double c;            ///< Cosine.
  double s;            ///< Sine.
};

/// Diagonalizes the symmetric tridiagonal matrix with diagonal `diagonal` (n) and off-diagonal
/// `off` (n - 1, destroyed) by the implicit QL algorithm with Wilkinson's shift: on return
/// `diagonal` holds the eigenvalues (unsorted) and rotations R_1, ..., R_m are appended to
/// `rotations`, such that column j of R_1 R_2 ... R_m is a unit eigenvector of diagonal(j).
/// Throws std::runtime_error if an eigenvalue takes more than 60 QL steps.
inline void tridiagonal_ql(Eigen::VectorXd& diagonal, Eigen::VectorXd& off,
                           std::vector<PlaneRotation>& rotations) {
  const Eigen::Index n = diagonal.size();
  Eigen::VectorXd e = Eigen::VectorXd::Zero(n);  // e(i) couples i and i + 1; e(n - 1) = 0
  if (n > 1) e.head(n - 1) = off;
  double* d = diagonal.data();
  constexpr double eps = std::numeric_limits<double>::epsilon();
  for (Eigen::Index l = 0; l < n; ++l) {
    for (int steps = 0;; ++steps) {
      Eigen::Index m = l;  // first negligible coupling at or after l
      while (m + 1 < n && std::abs(e(m)) > eps * (std::abs(d[m]) + std::abs(d[m + 1]))) ++m;
      if (m == l) break;
      if (steps == 60) {
        throw std::runtime_error("largest_eigenpairs: the QL algorithm did not converge");
      }
      // Wilkinson's shift from the leading 2 x 2 block, then a chase of rotations from m up to l.
      double g = (d[l + 1] - d[l]) / (2.0 * e(l));
      double r = norm2(g, 1.0);
      g = d[m] - d[l] + e(l) / (g + std::copysign(r, g));
      double s = 1.0, c = 1.0, p = 0.0;
      Eigen::Index i = m - 1;
      bool underflow = false;
      for (; i >= l; --i) {
        const double f = s * e(i);
        const double b = c * e(i);
        r = norm2(f, g);
        e(i + 1) = r;
        if (r == 0.0) {  // the chase split the block: restart on it
          d[i + 1] -= p;
          e(m) = 0.0;
          underflow = true;
          break;
        }
        s = f / r;
        c = g / r;
        g = d[i + 1] - p;
        r = (d[i] - g) * s + 2.0 * c * b;
        p = s * r;
        d[i + 1] = g + p;
        g = c * r - b;
        rotations.push_back({i, c, s});
      }
      if (underflow) continue;
      d[l] -= p;
      e(l) = g;
      e(m) = 0.0;
    }
  }
}

/// The k largest eigenpairs of the symmetric matrix G (an Eigen::MatrixXd; its lower triangle is
/// read), 0 <= k <= G.rows(). The eigenvalues are those of the full QL algorithm, and so are the
/// eigenvectors, up to rounding; forming only k of them from the recorded rotations costs
/// O(n^2 k) instead of the O(n^3) of all n. The rotations are recorded in `rotations` (about n^2
/// of them, 24 bytes each: 4 MB at n = 408), whose memory a caller may keep from call to call.
/// Throws std::runtime_error if the QL algorithm does not converge. A template, so that only a
/// program that calls it compiles the Householder reduction.
template <class Gram>
LargestEigenpairs largest_eigenpairs(const Gram& G, Eigen::Index k,
                                     std::vector<PlaneRotation>& rotations) {
  const Eigen::Index n = G.rows();
  LargestEigenpairs result;
  result.values.resize(k);
  result.vectors.resize(n, k);
  if (k == 0) return result;
  // Scaled to largest magnitude 1, as Eigen's own solver does, so that no square overflows.
  const double scale = G.cwiseAbs().maxCoeff();
  const double to_unit = scale > 0.0 ? 1.0 / scale : 1.0;
  const Gram unit = G * to_unit;
  const Eigen::Tridiagonalization<Gram> tridiagonal(unit);
  Eigen::VectorXd values = tridiagonal.diagonal();
  Eigen::VectorXd off = tridiagonal.subDiagonal();
  rotations.clear();
  rotations.reserve(static_cast<std::size_t>(3 * n * n / 2));  // about n^2 are taken
  advise_huge_pages(rotations.data(), sizeof(PlaneRotation) * rotations.capacity());
  tridiagonal_ql(values, off, rotations);
  // The k largest, ties in index order.
  std::vector<Eigen::Index> order(static_cast<std::size_t>(n));
  std::iota(order.begin(), order.end(), Eigen::Index{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](Eigen::Index a, Eigen::Index b) { return values(a) > values(b); });
  // Row-major n x k: X = R_m^T ... applied backwards, X = R_1 (R_2 (... (R_m E_k))), where E_k
  // holds the unit vectors of the chosen positions; each rotation mixes two rows of X.
  using RowMatrixXd = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  RowMatrixXd x = RowMatrixXd::Zero(n, k);
  for (Eigen::Index j = 0; j < k; ++j) {
    const Eigen::Index position = order[static_cast<std::size_t>(j)];
    x(position, j) = 1.0;
    result.values(j) = values(position) * scale;
  }
  for (auto rotation = rotations.rbegin(); rotation != rotations.rend(); ++rotation) {
    double* upper = x.data() + rotation->index * k;
    double* lower = upper + k;
    const double c = rotation->c, s = rotation->s;
    for (Eigen::Index j = 0; j < k; ++j) {
      const double a = upper[j], b = lower[j];
      upper[j] = c * a + s * b;
      lower[j] = c * b - s * a;
    }
  }
  result.vectors.noalias() = tridiagonal.matrixQ() * x;
  return result;
}

/// largest_eigenpairs() with rotations of its own.
template <class Gram>
LargestEigenpairs largest_eigenpairs(const Gram& G, Eigen::Index k) {
  std::vector<PlaneRotation> rotations;
  return largest_eigenpairs(G, k, rotations);
}

}  // namespace loftq::detail
