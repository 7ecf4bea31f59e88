/// @file solver.hpp
/// The LoftQ alternating loop (Algorithm 1 of Li et al., ICLR 2024): Options, Result, loftq().
#pragma once

#include <Eigen/Core>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "blockwise.hpp"
#include "codebook.hpp"
#include "detail/checks.hpp"
#include "lowrank.hpp"
#include "quantized.hpp"

namespace loftq {

/// What loftq() computes.
struct Options {
  Eigen::Index rank = 16;              ///< Adapter rank r, in [0, min(rows, cols)].
  int iters = 5;                       ///< Alternating steps T, >= 1.
  Codebook codebook = Codebook::nf4;   ///< Codebook of Q.
  int block_size = 64;                 ///< Elements per quantization block, >= 1.
  SvdMethod svd = SvdMethod::exact;    ///< Truncated-SVD method.
  std::uint64_t seed = 0;              ///< Seed of randomized SVD methods; exact ignores it.
  bool keep_best = true;               ///< Return the iterate of least error, else the last.
};

/// The LoftQ initialization of one weight matrix W: W ~ Q.dequantize() + A * B^T.
struct Result {
  QuantizedMatrix Q;   ///< Quantized backbone.
  Eigen::MatrixXf A;   ///< rows x rank, U_r sqrt(S_r) (PEFT's lora_B).
  Eigen::MatrixXf B;   ///< cols x rank, V_r sqrt(S_r) (PEFT's lora_A is B^T).
  /// errors[t - 1] = ||W - Q_t - A_t B_t^T||_F / ||W||_F after step t (absolute when W = 0).
  std::vector<double> errors;
  /// ||W - q(W)||_F / ||W||_F: plain quantization, the QLoRA starting point.
  double quantization_error = 0.0;
  /// The step (1-based) whose Q, A, B are returned.
  int iteration = 0;
  /// The relative error of the returned Q, A, B: errors[iteration - 1].
  double error() const { return errors.at(static_cast<std::size_t>(iteration - 1)); }
};

namespace detail {

/// Sum of x[i]^2, accumulated in double.
inline double squared_norm(const float* x, std::size_t n) {
  double sum = 0.0;
  for (std::size_t i = 0; i < n; ++i) sum += static_cast<double>(x[i]) * static_cast<double>(x[i]);
  return sum;
}

/// Sum of (x[i] - y[i])^2, accumulated in double.
inline double squared_distance(const float* x, const float* y, std::size_t n) {
  double sum = 0.0;
  for (std::size_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(x[i]) - static_cast<double>(y[i]);
    sum += d * d;
  }
  return sum;
}

/// Throws unless the options are valid for a rows x cols W.
inline void check_options(const Options& options, Eigen::Index rows, Eigen::Index cols) {
  check_rank(options.rank, rows, cols);
  if (options.iters < 1) fail("iters = " + std::to_string(options.iters) + " must be >= 1");
  check_block_size(options.block_size);
  table_of(options.codebook);  // throws for a value outside the enum
}

}  // namespace detail

/// LoftQ with every choice in `options`. W is any Eigen expression of floats, out x in.
/// Throws std::invalid_argument (naming the argument and value) for an empty W, a non-finite
/// element, or an option out of range.
template <class Derived>
Result loftq(const Eigen::MatrixBase<Derived>& W, const Options& options) {
  static_assert(std::is_same_v<typename Derived::Scalar, float>, "loftq::loftq: W must hold float");
  detail::check_not_empty("W", W.rows(), W.cols());
  detail::check_options(options, W.rows(), W.cols());
  const RowMatrixXf w = W;
  const Eigen::Index rows = w.rows();
  const Eigen::Index cols = w.cols();
  const std::size_t n = static_cast<std::size_t>(w.size());
  detail::check_finite("W", w.data(), rows, cols);

  const double w_norm = std::sqrt(detail::squared_norm(w.data(), n));
  const double to_relative = w_norm > 0.0 ? 1.0 / w_norm : 1.0;

  RowMatrixXf dequantized(rows, cols);
  RowMatrixXf residual(rows, cols);  // W - Q_t
  RowMatrixXf low_rank = RowMatrixXf::Zero(rows, cols);  // A_t B_t^T
  QuantizedMatrix q = quantize_row_major(w.data(), rows, cols, options.codebook, options.block_size);
  q.dequantize(dequantized.data());
  residual = w - dequantized;

  Result result;
  result.quantization_error = std::sqrt(detail::squared_norm(residual.data(), n)) * to_relative;
  result.errors.reserve(static_cast<std::size_t>(options.iters));
  double best = std::numeric_limits<double>::infinity();
  for (int t = 1; t <= options.iters; ++t) {
    if (t > 1 && options.rank > 0) {  // with rank 0, A B^T = 0 and Q_t = Q_1
      const RowMatrixXf target = w - low_rank;
      q = quantize_row_major(target.data(), rows, cols, options.codebook, options.block_size);
      q.dequantize(dequantized.data());
      residual = w - dequantized;
    }
    LowRankFactors factors = truncated_svd(residual, options.rank, options.svd);
    low_rank.noalias() = factors.A * factors.B.transpose();
    const double error =
        std::sqrt(detail::squared_distance(residual.data(), low_rank.data(), n)) * to_relative;
    result.errors.push_back(error);
    if (!options.keep_best || error < best) {
      best = error;
      result.Q = q;
      result.A = std::move(factors.A);
      result.B = std::move(factors.B);
      result.iteration = t;
    }
  }
  return result;
}

/// LoftQ with `bits` 2 (NF2), 4 (NF4) or 8 (Int8), block size 64, exact SVD, best iterate.
template <class Derived>
Result loftq(const Eigen::MatrixBase<Derived>& W, Eigen::Index rank, int bits, int iters) {
  Options options;
  options.rank = rank;
  options.codebook = codebook_for_bits(bits);
  options.iters = iters;
  return loftq(W, options);
}

}  // namespace loftq
