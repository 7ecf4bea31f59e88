/// @file lowrank.hpp
/// Rank-r truncated SVD in LoftQ's factor form: E ~ A B^T with A = U_r sqrt(S_r),
/// B = V_r sqrt(S_r).
#pragma once

#include <Eigen/Core>
#include <Eigen/SVD>
#include <algorithm>
#include <cstdint>
#include <string>
#include <type_traits>

#include "detail/checks.hpp"

namespace loftq {

/// How the truncated SVD is computed.
enum class SvdMethod : std::uint8_t {
  exact,  ///< Full thin SVD (Eigen::BDCSVD), then the leading rank triplets.
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

}  // namespace detail

/// Rank-`rank` truncated SVD of E (any Eigen expression of floats). rank 0 gives factors with no
/// columns. Throws std::invalid_argument for an empty E or rank outside [0, min(rows, cols)].
template <class Derived>
LowRankFactors truncated_svd(const Eigen::MatrixBase<Derived>& E, Eigen::Index rank,
                             SvdMethod method = SvdMethod::exact) {
  static_assert(std::is_same_v<typename Derived::Scalar, float>,
                "loftq::truncated_svd: E must hold float");
  detail::check_not_empty("E", E.rows(), E.cols());
  detail::check_rank(rank, E.rows(), E.cols());
  LowRankFactors f;
  if (rank == 0) {
    f.A.resize(E.rows(), 0);
    f.B.resize(E.cols(), 0);
    return f;
  }
  switch (method) {
    case SvdMethod::exact: {
      const Eigen::BDCSVD<Eigen::MatrixXf> svd(E, Eigen::ComputeThinU | Eigen::ComputeThinV);
      f.singular_values = svd.singularValues().head(rank);
      const Eigen::VectorXf root = f.singular_values.cwiseSqrt();
      f.A = svd.matrixU().leftCols(rank) * root.asDiagonal();
      f.B = svd.matrixV().leftCols(rank) * root.asDiagonal();
      return f;
    }
  }
  detail::fail("method = " + std::to_string(static_cast<int>(method)) + " is not an SvdMethod");
}

}  // namespace loftq
