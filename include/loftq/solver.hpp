/// @file solver.hpp
/// The LoftQ alternating loop (Algorithm 1 of Li et al., ICLR 2024): Options, Result, loftq().
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "blockwise.hpp"
#include "codebook.hpp"
#include "detail/checks.hpp"
#include "detail/huge_pages.hpp"
#include "detail/packing.hpp"
#include "detail/pieced_products.hpp"
#include "detail/row_major.hpp"
#include "kernels/passes.hpp"
#include "load_path.hpp"
#include "lowrank.hpp"
#include "quantized.hpp"
#include "threads.hpp"

namespace loftq {

/// What loftq() computes.
struct Options {
  Eigen::Index rank = 16;              ///< Adapter rank r, in [0, min(rows, cols)].
  int iters = 5;                       ///< Alternating steps T, >= 1.
  Codebook codebook = Codebook::nf4;   ///< Codebook of Q.
  int block_size = 64;                 ///< Elements per quantization block, >= 1.
  SvdMethod svd = SvdMethod::block_krylov;  ///< Truncated-SVD method.
  int oversampling = 4;                ///< Randomized SVD: sketch columns beyond the rank, >= 0.
  int krylov_depth = 6;                ///< block_krylov: most Krylov blocks of a cold step, >= 1.
  int warm_krylov_depth = 3;           ///< block_krylov: most Krylov blocks of a warm-started step, >= 1.
  /// block_krylov: a step stops adding Krylov blocks once what more blocks would lower its
  /// squared error by, extrapolated from the blocks so far, is at most krylov_tolerance times
  /// what is left of it (SvdOptions::tolerance), >= 0; 0 always takes the most.
  double krylov_tolerance = 5e-4;
  int power_iters = 1;                 ///< subspace_iteration: applications of E E^T, >= 1.
  bool warm_start = true;              ///< Randomized SVD: begin step t > 1's sketch with B_{t-1}.
  std::uint64_t seed = 0;              ///< Seed of the randomized SVD; exact ignores it.
  int threads = 0;                     ///< Threads for this call, >= 0; 0: loftq::threads().
  bool keep_best = true;               ///< Return the iterate of least error, else the last.
  /// How the backbone is stored and loaded: every Q_t, residual and error is that of the
  /// matrix the loader hands to the matmul (load_path.hpp). The default changes nothing.
  LoadPath load_path;
};

/// The LoftQ initialization of one weight matrix W: W ~ Q.dequantize() + A * B^T.
struct Result {
  QuantizedMatrix Q;   ///< Quantized backbone, with options.load_path: Q.dequantize() is what the loader gives.
  Eigen::MatrixXf A;   ///< rows x rank, U_r sqrt(S_r) (PEFT's lora_B).
  Eigen::MatrixXf B;   ///< cols x rank, V_r sqrt(S_r) (PEFT's lora_A is B^T).
  /// errors[t - 1] = ||W - Q_t - A_t B_t^T||_F / ||W||_F after step t (absolute when W = 0),
  /// measured over W - Q_t (for t < iters by step t + 1's quantize pass, which reads it anyway).
  std::vector<double> errors;
  /// ||W - q(W)||_F / ||W||_F: plain quantization, the QLoRA starting point (with a load path,
  /// what the loader gives for W stored in load_path.quantized_from).
  double quantization_error = 0.0;
  /// The step (1-based) whose Q, A, B are returned.
  int iteration = 0;
  /// krylov_depths[t - 1] = Krylov blocks step t's block_krylov SVD took (0 for another method,
  /// or when it fell back to the exact SVD).
  std::vector<int> krylov_depths;
  /// The relative error of the returned Q, A, B: errors[iteration - 1].
  double error() const { return errors.at(static_cast<std::size_t>(iteration - 1)); }
};

namespace detail {

/// Codes and block scales of a quantized matrix under construction.
struct QuantizedArrays {
  std::vector<std::uint8_t> codes;  ///< Packed codes.
  std::vector<float> scales;        ///< One absmax per block.
};

/// The memory of one member of a pass's team (over_low_rank_pieces()), kept from pass to pass.
struct PassMemory {
  std::vector<float> low_rank;  ///< A row piece of A B^T.
  std::vector<float> scratch;   ///< The floats of one run (for_pass_runs()).
  std::vector<float> tiles;     ///< low_rank_rows()'s scratch.
  std::vector<float> right;     ///< B^T, as low_rank_rows() reads it (transposed_factor()).
  std::vector<float> left;      ///< A piece's rows of A, transposed by low_rank_rows().
};

/// The memory of loftq()'s passes, kept from call to call in a Workspace: each team member's
/// PassMemory, and the arrays of the Q_t that a call made but did not return, which the next
/// call quantizes into instead of mapping fresh memory.
struct PassBuffers {
  std::vector<PassMemory> members;     ///< One per member of a pass's team.
  std::vector<QuantizedArrays> spare;  ///< Arrays for a Q_t.
};

}  // namespace detail

/// Memory that loftq() calls can share: W's row-major copy (made for a W that is not a
/// RowMatrixXf), the residual W - Q_t in float (the size of W, but written only for an exact SVD
/// or on a load path the fused kernels do not model: otherwise its pages are never touched), and
/// the randomized SVD's residual rounded to bfloat16 (half the size of W, its columns padded to a
/// multiple of 64), its tiles as the bfloat16 kernels of E X read them (one more array of that
/// size, for a step of three or more passes E X; those of E^T Y are kept in the residual's own
/// strips, or, where its rows are odd or the kernels' tile is not a strip, in a third array; on
/// kernels that split the thin operand into floats instead, each pass's split operand, about
/// 1 MB at 4096 rows and 68 columns), basis P and E P, blocks on their way, and the rotations of
/// its eigensolver (4 MB at rank 64 and a cold Krylov depth of 6); each thread's row piece of A B^T
/// in the quantize and error passes (about 1 MB), and the codes and scales of the Q_t a call did
/// not return (up to two, each an eighth of W's size at 4 bits). A call resizes them, which keeps
/// their memory when the element count is unchanged: a workspace reused for matrices of one size
/// spares every call after the first the mapping of that memory and the page faults of its first
/// touch (see the README's performance section). Results are the same bits with any workspace. One
/// call at a time may use a workspace.
class Workspace {
 public:
  /// Bytes held.
  std::size_t bytes() const {
    return sizeof(float) *
               (static_cast<std::size_t>(residual_.size() + row_major_.size() + krylov_.P.size() +
                                         krylov_.EP.size() + krylov_.Y.size() + krylov_.Z.size()) +
                krylov_.operand.capacity() + krylov_.packed.split.capacity() +
                krylov_.packed_transposed.split.capacity()) +
           sizeof(std::uint32_t) * (static_cast<std::size_t>(
                                        krylov_.rounded.words.size() + krylov_.packed.words.size() +
                                        krylov_.packed_transposed.words.size()) +
                                    krylov_.pairs.capacity()) +
           sizeof(detail::PlaneRotation) * krylov_.rotations.capacity() + pass_bytes();
  }

  /// Frees everything held.
  void release() {
    residual_ = RowMatrixXf();
    row_major_ = RowMatrixXf();
    krylov_ = detail::KrylovBuffers();
    passes_ = detail::PassBuffers();
  }

 private:
  // Bytes the passes' memory holds.
  std::size_t pass_bytes() const {
    std::size_t floats = 0, code_bytes = 0;
    for (const detail::PassMemory& member : passes_.members)
      floats += member.low_rank.capacity() + member.scratch.capacity() + member.tiles.capacity() +
                member.right.capacity() + member.left.capacity();
    for (const detail::QuantizedArrays& spare : passes_.spare) {
      floats += spare.scales.capacity();
      code_bytes += spare.codes.capacity();
    }
    return sizeof(float) * floats + code_bytes;
  }

  template <class Derived>
  friend Result loftq(const Eigen::MatrixBase<Derived>& W, const Options& options,
                      Workspace& workspace);

  RowMatrixXf residual_;          // W - Q_t
  RowMatrixXf row_major_;         // W's row-major copy
  detail::KrylovBuffers krylov_;  // P, E P and the products' operand copy
  detail::PassBuffers passes_;    // the passes' pieces of A B^T, spare arrays of Q_t
};

namespace detail {

/// The truncated-SVD settings of step `step`, warm-started or not: each step draws its own
/// Gaussian columns.
inline SvdOptions svd_options_of(const Options& options, int step, bool warm) {
  SvdOptions svd;
  svd.method = options.svd;
  svd.oversampling = options.oversampling;
  svd.depth = warm ? options.warm_krylov_depth : options.krylov_depth;
  svd.power_iters = options.power_iters;
  svd.tolerance = options.krylov_tolerance;
  svd.seed = mix64(options.seed) + static_cast<std::uint64_t>(step);
  svd.bfloat16_passes = true;  // E is a quantization residual: its spectrum is flat
  return svd;
}

/// Throws unless the options are valid for a rows x cols W.
inline void check_options(const Options& options, Eigen::Index rows, Eigen::Index cols) {
  check_rank(options.rank, rows, cols);
  if (options.iters < 1) fail("iters = " + std::to_string(options.iters) + " must be >= 1");
  check_block_size(options.block_size);
  check_codebook(options.codebook);
  check_load_path(options.load_path, options.codebook);
  check_tolerance("krylov_tolerance", options.krylov_tolerance);
  check_svd_options(svd_options_of(options, 0, false));
  if (options.warm_krylov_depth < 1) {
    fail("warm_krylov_depth = " + std::to_string(options.warm_krylov_depth) + " must be >= 1");
  }
  if (options.threads < 0) fail("threads = " + std::to_string(options.threads) + " must be >= 0");
}

/// Rows of about `elements` elements (at least one row) that are a multiple of the fewest rows
/// whose elements fill whole bytes of codes of whole blocks, so that row ranges of such counts
/// share neither.
inline Eigen::Index whole_block_rows(Eigen::Index cols, int block_size, long long elements) {
  const auto unit = 4LL * block_size;  // 4 blocks end on a byte boundary at any code width
  const long long step = unit / std::gcd(static_cast<long long>(cols), unit);
  const long long target = std::max(1LL, elements / static_cast<long long>(cols));
  return static_cast<Eigen::Index>(step * std::max(1LL, target / step));
}

/// Rows per piece of over_low_rank_pieces(): whole_block_rows() of about 2^18 elements.
inline Eigen::Index pass_piece_rows(Eigen::Index cols, int block_size) {
  return whole_block_rows(cols, block_size, 1LL << 18);
}

/// Rows per run of a quantize or error pass inside a piece: whole_block_rows() of about 2^13
/// elements, so that a run's operands and results stay in the caches between its steps.
inline Eigen::Index pass_run_rows(Eigen::Index cols, int block_size) {
  return whole_block_rows(cols, block_size, 1LL << 13);
}

/// Calls run(offset, count) for the consecutive runs [offset, offset + count) of a piece of n
/// elements of a matrix with `cols` columns, pass_run_rows() rows each (the last may be
/// shorter).
template <class Run>
void for_pass_runs(std::size_t n, Eigen::Index cols, int block_size, Run&& run) {
  const std::size_t run_elements =
      static_cast<std::size_t>(pass_run_rows(cols, block_size)) * static_cast<std::size_t>(cols);
  for (std::size_t offset = 0; offset < n; offset += run_elements)
    run(offset, std::min(run_elements, n - offset));
}

/// Runs piece(first, n, l, scratch) over W's fixed row pieces in parallel, where the piece holds
/// elements [first, first + n) of the row-major matrix, l holds the same elements of A B^T (A
/// with no columns stands for 0), formed piece by piece and never whole by low_rank_rows() on
/// the kernels of active_isa() (the same bits on each), and scratch is room for the floats of
/// one of the piece's runs (for_pass_runs()), its own. Each member of the team works in its own
/// element of `memory` (grown to the team's size), whose memory later passes reuse. Returns the
/// sum, in piece order, of what piece returns.
template <class Scalar, class Piece>
double over_low_rank_pieces(const Matrix<Scalar>& A, const Matrix<Scalar>& B, Eigen::Index rows,
                            Eigen::Index cols, int block_size, std::vector<PassMemory>& memory,
                            Piece&& piece) {
  static_assert(std::is_same_v<Scalar, float>, "PassMemory holds float");
  const Eigen::Index piece_rows = std::min(rows, pass_piece_rows(cols, block_size));
  const Eigen::Index pieces = (rows + piece_rows - 1) / piece_rows;
  std::vector<double> partial(static_cast<std::size_t>(pieces));
  const std::ptrdiff_t team = std::min<std::ptrdiff_t>(threads(), pieces);
  if (memory.size() < static_cast<std::size_t>(team)) memory.resize(static_cast<std::size_t>(team));
  // Each member of the team takes the next free piece when it is done with one.
  const Isa isa = active_isa();
  std::atomic<std::ptrdiff_t> next_piece{0};
  parallel_for(team, [&](std::ptrdiff_t member) {
    PassMemory& own = memory[static_cast<std::size_t>(member)];
    own.low_rank.resize(static_cast<std::size_t>(piece_rows * cols));
    own.scratch.resize(
        static_cast<std::size_t>(std::min(piece_rows, pass_run_rows(cols, block_size)) * cols));
    if (A.cols() == 0) {
      std::fill(own.low_rank.begin(), own.low_rank.end(), 0.0f);  // every piece's A B^T
    } else {
      transposed_factor(B, own.right);
    }
    for (std::ptrdiff_t p = next_piece++; p < pieces; p = next_piece++) {
      const Eigen::Index first_row = p * piece_rows;
      const Eigen::Index count = std::min(piece_rows, rows - first_row);
      if (A.cols() > 0) {
        low_rank_rows(isa, A, own.right, cols, first_row, count, own.low_rank.data(), own.left,
                      own.tiles);
      }
      partial[static_cast<std::size_t>(p)] =
          piece(static_cast<std::size_t>(first_row) * static_cast<std::size_t>(cols),
                static_cast<std::size_t>(count) * static_cast<std::size_t>(cols),
                own.low_rank.data(), own.scratch.data());
    }
  });
  double total = 0.0;
  for (double p : partial) total += p;
  return total;
}

/// Rows [first / cols, (first + n) / cols) of `rounded` (when not null) from `piece`, the
/// residual's elements [first, first + n), whole rows.
inline void round_rows(const float* piece, std::size_t first, std::size_t n,
                       Bfloat16Matrix* rounded) {
  if (rounded == nullptr) return;
  const auto cols = static_cast<std::size_t>(rounded->cols);
  for (std::size_t i = first / cols; i < (first + n) / cols; ++i) {
    round_row_to_bfloat16(piece + (i * cols - first), static_cast<Eigen::Index>(i), *rounded);
  }
  stream_words_fence();
}

/// Adds the terms ((w[first + i] - q[first + i]) - l[i])^2, i < n, to `sum`: q the dequantized Q
/// whose codes and scales are in `q` (quantized by the fused kernels), so w - q is the residual
/// W - Q the quantize pass that made Q wrote, the same bits; on the kernels of `isa`
/// (add_error_squares()), which write neither.
inline void add_error_squares_of(Isa isa, kernels::SquareSum& sum, const float* w,
                                 const QuantizedArrays& q, const Options& options,
                                 std::size_t first, std::size_t n, const float* l) {
  const auto bits = static_cast<std::size_t>(bits_of(options.codebook));
  add_error_squares(isa, sum, w + first, q.codes.data() + first * bits / 8,
                    q.scales.data() + first / static_cast<std::size_t>(options.block_size), l, n,
                    options.block_size, options.codebook);
}

/// Quantizes W - A B^T into `q` and, in one pass over W, forms the residual W - Q: written into
/// `residual` when keep_residual is set (or the load path is not the fused kernels'), and
/// rounded to bfloat16 into *rounded (prepared by prepare_bfloat16()) when that is not null.
/// Returns ||W - Q||_F^2; adds ||W||_F^2 to *w_norm2 when it is not null, and sets
/// *replaced_error2 to ||E - A B^T||_F^2 for the residual E = W - Q_previous the pass replaces
/// when that is not null: the squared error of the step whose factors A, B are, measured on the
/// way. E is read from `residual`, or, when `previous` is not null, from Q_previous's codes
/// (add_error_squares_of(), the same bits), for a residual that was not kept; a load path
/// the fused kernels do not model always keeps it, and takes no `previous`. The team works in
/// `memory` (over_low_rank_pieces()).
template <class Scalar>
double quantize_pass(const Scalar* w, const Matrix<Scalar>& A, const Matrix<Scalar>& B,
                     const Options& options, QuantizedArrays& q, RowMatrix<Scalar>& residual,
                     std::vector<PassMemory>& memory, Bfloat16Matrix* rounded,
                     double* w_norm2 = nullptr, double* replaced_error2 = nullptr,
                     const QuantizedArrays* previous = nullptr, bool keep_residual = true) {
  if (!is_kernel_path(options.load_path, options.codebook)) {
    if (w_norm2 != nullptr) {
      *w_norm2 += over_pieces(residual.rows(), residual.cols(), options.block_size,
                              [&](std::size_t first, std::size_t n) {
                                return squared_sum(active_isa(), w + first, nullptr, n);
                              });
    }
    return quantize_loaded_pass(w, A, B, options, q, residual, memory, rounded, replaced_error2);
  }
  const std::size_t piece_elements =
      static_cast<std::size_t>(std::min(residual.rows(), pass_piece_rows(residual.cols(), options.block_size))) *
      static_cast<std::size_t>(residual.cols());
  const std::size_t pieces = (static_cast<std::size_t>(residual.size()) + piece_elements - 1) / piece_elements;
  // ||W||^2 and the replaced error of each piece, by first element
  std::vector<double> w_partial(w_norm2 != nullptr ? pieces : 0);
  std::vector<double> error_partial(replaced_error2 != nullptr ? pieces : 0);
  const auto block = static_cast<std::size_t>(options.block_size);
  const auto bits = static_cast<std::size_t>(bits_of(options.codebook));
  const kernels::LookupQuantizer& lookup = lookup_quantizer(options.codebook);
  const Isa isa = active_isa();
  const double total = over_low_rank_pieces(
      A, B, residual.rows(), residual.cols(), options.block_size, memory,
      [&](std::size_t first, std::size_t n, const float* l, float* scratch) {
        kernels::SquareSum replaced_sum, w_sum, e_sum;
        // run by run, each run's steps on data still in the caches; a run's scratch is reused
        for_pass_runs(
            n, residual.cols(), options.block_size, [&](std::size_t offset, std::size_t count) {
              const std::size_t at = first + offset;
              if (replaced_error2 != nullptr && previous != nullptr) {
                add_error_squares_of(isa, replaced_sum, w, *previous, options, at, count,
                                     l + offset);
              } else if (replaced_error2 != nullptr) {
                add_squares(isa, replaced_sum, residual.data() + at, l + offset, count);
              }
              Scalar* e = keep_residual ? residual.data() + at : scratch;
              quantize_residual_run(isa, w + at, l + offset, count, options.block_size,
                                    options.codebook, lookup, q.codes.data() + at * bits / 8,
                                    q.scales.data() + at / block, e);
              round_rows(e, at, count, rounded);
              if (w_norm2 != nullptr) add_squares(isa, w_sum, w + at, nullptr, count);
              add_squares(isa, e_sum, e, nullptr, count);
            });
        if (replaced_error2 != nullptr)
          error_partial[first / piece_elements] = replaced_sum.total();
        if (w_norm2 != nullptr) w_partial[first / piece_elements] = w_sum.total();
        return e_sum.total();
      });
  for (double p : w_partial) *w_norm2 += p;
  if (replaced_error2 != nullptr) *replaced_error2 = std::accumulate(error_partial.begin(), error_partial.end(), 0.0);
  return total;
}

/// Runs piece(first, n) over W's fixed row pieces (those of over_low_rank_pieces()) in parallel;
/// returns the sum, in piece order, of what piece returns.
template <class Piece>
double over_pieces(Eigen::Index rows, Eigen::Index cols, int block_size, Piece&& piece) {
  const Eigen::Index piece_rows = std::min(rows, pass_piece_rows(cols, block_size));
  const Eigen::Index pieces = (rows + piece_rows - 1) / piece_rows;
  std::vector<double> partial(static_cast<std::size_t>(pieces));
  parallel_for(pieces, [&](std::ptrdiff_t p) {
    const Eigen::Index first_row = p * piece_rows;
    const Eigen::Index count = std::min(piece_rows, rows - first_row);
    partial[static_cast<std::size_t>(p)] =
        piece(static_cast<std::size_t>(first_row) * static_cast<std::size_t>(cols),
              static_cast<std::size_t>(count) * static_cast<std::size_t>(cols));
  });
  double total = 0.0;
  for (double p : partial) total += p;
  return total;
}

/// quantize_pass() for a load path the fused kernels do not model (options.load_path not plain,
/// or LLMInt8), in two passes: the target W - A B^T rounded as round_target() says and quantized
/// (its codes and absmax), then, with the scales the loader restores, residual = W - the
/// dequantized values rounded to load_path.dequantized_to (and into *rounded, rounded to
/// bfloat16, when it is not null), and *replaced_error2 as quantize_pass() sets it. Throws
/// std::invalid_argument for a target beyond float16's range on a float16 path. The team works in
/// `memory`.
template <class Scalar>
double quantize_loaded_pass(const Scalar* w, const Matrix<Scalar>& A, const Matrix<Scalar>& B,
                            const Options& options, QuantizedArrays& q, RowMatrix<Scalar>& residual,
                            std::vector<PassMemory>& memory, Bfloat16Matrix* rounded,
                            double* replaced_error2) {
  const auto block = static_cast<std::size_t>(options.block_size);
  const auto bits = static_cast<std::size_t>(bits_of(options.codebook));
  const kernels::LookupQuantizer& lookup = lookup_quantizer(options.codebook);
  const Isa isa = active_isa();
  const double replaced = over_low_rank_pieces(
      A, B, residual.rows(), residual.cols(), options.block_size, memory,
      [&](std::size_t first, std::size_t n, const float* l, float*) {
        Scalar* target = residual.data() + first;
        const double error2 = replaced_error2 != nullptr ? squared_sum(isa, target, l, n) : 0.0;
        for (std::size_t i = 0; i < n; ++i) target[i] = w[first + i] - l[i];
        round_target(options.load_path, options.codebook, target, n);
        quantize_run(isa, target, n, options.block_size, options.codebook, lookup,
                     q.codes.data() + first * bits / 8, q.scales.data() + first / block);
        return error2;
      });
  if (replaced_error2 != nullptr) *replaced_error2 = replaced;
  check_scales_finite("W - A B^T", q.scales, options.block_size, residual.cols());
  const std::vector<float> loaded = loaded_scales(q.scales, options.load_path);
  return over_pieces(residual.rows(), residual.cols(), options.block_size, [&](std::size_t first, std::size_t n) {
    Scalar* e = residual.data() + first;
    dequantize_run(isa, q.codes.data() + first * bits / 8, loaded.data() + first / block, n, options.block_size,
                   options.codebook, false, e);
    round_to(options.load_path.dequantized_to, e, n);
    for (std::size_t i = 0; i < n; ++i) e[i] = w[first + i] - e[i];
    round_rows(e, first, n, rounded);
    return squared_sum(isa, e, nullptr, n);
  });
}

/// ||E - A B^T||_F^2 for the rows x cols residual E = W - Q, in one pass: E read from
/// `residual`, or from Q's codes in `q` when that is not null (add_error_squares_of(), the same
/// bits). The team works in `memory`.
template <class Scalar>
double squared_error(const Matrix<Scalar>& A, const Matrix<Scalar>& B, const Options& options,
                     const RowMatrix<Scalar>& residual, std::vector<PassMemory>& memory,
                     const Scalar* w = nullptr, const QuantizedArrays* q = nullptr) {
  const Isa isa = active_isa();
  return over_low_rank_pieces(A, B, residual.rows(), residual.cols(), options.block_size, memory,
                              [&](std::size_t first, std::size_t n, const float* l, float*) {
                                if (q == nullptr)
                                  return squared_sum(isa, residual.data() + first, l, n);
                                kernels::SquareSum sum;
                                add_error_squares_of(isa, sum, w, *q, options, first, n, l);
                                return sum.total();
                              });
}

/// LoftQ on the row-major, finite W (rows x cols) whose largest magnitude is `largest`, inside
/// the caller's ThreadScope; `residual` is resized to hold W - Q_t, and every step's truncated
/// SVD keeps its basis in `krylov`. A quantize pass followed by a randomized SVD writes the
/// residual rounded to bfloat16 for it (krylov.rounded, scaled by bfloat16_exponent(largest)),
/// which is all that SVD reads; the residual in float is written only for an exact SVD or on a
/// load path the fused kernels do not model, and `residual`'s memory is otherwise left
/// untouched. Every error is measured: a step's before the last by the quantize pass of the
/// next, the last step's by squared_error(), with the same pieces and sums, each reading the
/// residual W - Q_t where it was kept and otherwise forming it again from Q_t's codes (Q_t waits
/// in an array of its own until then). So no SVD needs the error identity, and none takes
/// randomized_svd()'s float step. The passes work in `passes`, whose spare arrays hold Q_t when
/// they are large enough, and receive the arrays not returned.
template <class Scalar>
Result loftq_row_major(const Scalar* w, Eigen::Index rows, Eigen::Index cols, Scalar largest,
                       const Options& options, RowMatrix<Scalar>& residual, KrylovBuffers& krylov,
                       PassBuffers& passes) {
  static_assert(std::is_same_v<Scalar, float>, "loftq::Result holds float");
  const std::size_t n = static_cast<std::size_t>(rows) * static_cast<std::size_t>(cols);
  const std::size_t blocks = (n + static_cast<std::size_t>(options.block_size) - 1) /
                             static_cast<std::size_t>(options.block_size);
  const std::size_t code_bytes = packed_bytes(n, bits_of(options.codebook));
  // Arrays for a Q_t: spare ones of this size as they are, since a quantize pass writes every
  // byte of its codes and every scale (any other size is freed, so that a returned Q never holds
  // more memory than it needs), or new ones.
  const auto arrays = [&] {
    if (!passes.spare.empty()) {
      QuantizedArrays spare = std::move(passes.spare.back());
      passes.spare.pop_back();
      if (spare.codes.capacity() == code_bytes && spare.scales.capacity() == blocks) {
        spare.codes.resize(code_bytes);
        spare.scales.resize(blocks);
        return spare;
      }
    }
    return QuantizedArrays{zeros_on_huge_pages<std::uint8_t>(code_bytes),
                           std::vector<float>(blocks)};
  };
  QuantizedArrays current = arrays();  // Q_t
  QuantizedArrays best;                // the Q of least error so far; given arrays by the first swap
  QuantizedArrays next;                // Q_{t+1}, while Q_t waits for its error
  resize_on_huge_pages(residual, rows, cols);  // W - Q_t
  // The residual rounded to bfloat16 for the SVD of step t, or nullptr when that SVD is exact.
  const auto rounded_for = [&](int t, bool warm) -> Bfloat16Matrix* {
    if (!runs_randomized(rows, cols, options.rank, svd_options_of(options, t, warm))) return nullptr;
    prepare_bfloat16(rows, cols, bfloat16_exponent(largest), krylov.rounded);
    return &krylov.rounded;
  };

  // Whether a pass keeps the residual in `residual`, given what it rounds for the next SVD.
  const bool kernel_path = is_kernel_path(options.load_path, options.codebook);
  const auto keeps = [&](const Bfloat16Matrix* for_svd) {
    return for_svd == nullptr || !kernel_path;
  };

  double w_norm2 = 0.0;
  // Q_1 = q(W)
  Bfloat16Matrix* rounded = rounded_for(1, false);
  bool kept = keeps(rounded);  // whether `residual` holds W - Q_t
  double residual_norm2 =
      quantize_pass(w, Matrix<Scalar>(rows, 0), Matrix<Scalar>(cols, 0), options, current, residual,
                    passes.members, rounded, &w_norm2, nullptr, nullptr, kept);
  const double to_relative = w_norm2 > 0.0 ? 1.0 / std::sqrt(w_norm2) : 1.0;
  Result result;
  result.quantization_error = std::sqrt(residual_norm2) * to_relative;
  result.errors.reserve(static_cast<std::size_t>(options.iters));
  result.krylov_depths.reserve(static_cast<std::size_t>(options.iters));
  double least = std::numeric_limits<double>::infinity();
  // Step t's iterate, Q_t in q, with its error: kept in `best` and the result when it is the best.
  const auto conclude = [&](int t, double error, QuantizedArrays& q, const LowRankFactors& factors) {
    result.errors.push_back(error);
    if (!options.keep_best || error < least || result.iteration == 0) {
      least = error;
      std::swap(q, best);
      result.A = factors.A;
      result.B = factors.B;
      result.iteration = t;
    }
  };
  Matrix<Scalar> previous_b;
  for (int t = 1;; ++t) {
    const bool warm = options.warm_start && previous_b.cols() > 0;
    const bool last = t == options.iters;
    LowRankFactors factors = truncated_svd_row_major(residual, options.rank, svd_options_of(options, t, warm),
                                                     warm ? &previous_b : nullptr, residual_norm2, krylov,
                                                     rounded != nullptr, false);
    result.krylov_depths.push_back(factors.krylov_depth);
    if (last) {
      const double error2 = squared_error(factors.A, factors.B, options, residual, passes.members,
                                          w, kept ? nullptr : &current);
      conclude(t, std::sqrt(error2) * to_relative, current, factors);
      break;
    }
    // Q_{t+1} into `next`, and step t's error measured on the way
    if (next.codes.empty()) next = arrays();  // made only when a third Q is computed
    rounded = rounded_for(t + 1, options.warm_start && factors.B.cols() > 0);
    double error2 = 0.0;
    const bool keep = keeps(rounded);
    residual_norm2 = quantize_pass(w, factors.A, factors.B, options, next, residual, passes.members,
                                   rounded, nullptr, &error2, kept ? nullptr : &current, keep);
    kept = keep;
    conclude(t, std::sqrt(error2) * to_relative, current, factors);
    std::swap(current, next);  // Q_{t+1}; `next` keeps Q_t's arrays, or the old best's, for reuse
    previous_b = std::move(factors.B);
  }
  result.Q = QuantizedMatrix(rows, cols, options.block_size, options.codebook, std::move(best.codes),
                             std::move(best.scales), options.load_path);
  for (QuantizedArrays* spare : {&current, &next}) {
    if (!spare->codes.empty()) passes.spare.push_back(std::move(*spare));
  }
  return result;
}

/// The largest |element| of the row-major W, given `bits`, largest_magnitude_bits() of W's
/// elements. Throws std::invalid_argument, naming the first non-finite element, when bits say
/// there is one.
inline float largest_magnitude(std::uint32_t bits, const RowMatrixXf& W) {
  if (bits >= 0x7f800000u) {
    check_finite("W", W.data(), W.rows(), W.cols());  // throws, naming the element
  }
  float magnitude;
  std::memcpy(&magnitude, &bits, sizeof magnitude);
  return magnitude;
}

/// Largest |element| of the row-major W, in one parallel pass that also checks that W is
/// finite (largest_magnitude()).
inline float checked_max_abs(const RowMatrixXf& W) {
  std::vector<std::uint32_t> partial(
      static_cast<std::size_t>((W.rows() + product_piece_rows - 1) / product_piece_rows));
  for_row_pieces(W.rows(), [&](Eigen::Index first, Eigen::Index count) {
    partial[static_cast<std::size_t>(first / product_piece_rows)] = largest_magnitude_bits(
        W.data() + first * W.cols(), static_cast<std::size_t>(count * W.cols()));
  });
  return largest_magnitude(*std::max_element(partial.begin(), partial.end()), W);
}

/// loftq_row_major() on W, given `largest`, its largest magnitude (checked_max_abs() or
/// largest_magnitude(), which have checked that W is finite), scaled by a power of two when that is
/// outside [2^-60, 2^60]: a W near float's limits would overflow the products of the truncated SVD
/// (or lose digits in denormals), and scaling by 2^k is exact, so W is brought to magnitude about
/// 1, and Q's scales and A B^T are scaled back by 2^-k (A and B by 2^(-k/2) each, k even). A scale
/// that then exceeds float's range is clamped just below its largest value, so that every
/// dequantized value stays finite. A W with a load path that is not plain, or LLMInt8, is never
/// scaled: rounding to 16 bits does not commute with scaling near the ends of their range, and the
/// loader does not scale either.
template <class Scalar>
Result loftq_in_range(const RowMatrix<Scalar>& W, Scalar largest, const Options& options,
                      RowMatrix<Scalar>& residual, KrylovBuffers& krylov, PassBuffers& passes) {
  int exponent = 0;
  std::frexp(largest, &exponent);
  if (largest == 0.0f || (exponent >= -60 && exponent <= 60) || !is_kernel_path(options.load_path, options.codebook)) {
    return loftq_row_major(W.data(), W.rows(), W.cols(), largest, options, residual, krylov,
                           passes);
  }
  const int k = -(exponent & ~1);  // even, so that 2^(-k/2) is exact
  const RowMatrix<Scalar> scaled = (W.template cast<double>() * std::ldexp(1.0, k)).template cast<Scalar>();  // 2^k may not fit a float
  Result r = loftq_row_major(scaled.data(), scaled.rows(), scaled.cols(), std::ldexp(largest, k),
                             options, residual, krylov, passes);
  // 3 ulps below float's largest value: Int8 dequantizes 127 * (scale / 127), up to 2 ulps above scale.
  constexpr float largest_scale = 0x1.fffff8p127f;
  std::vector<float> scales = r.Q.scales();
  for (float& scale : scales) scale = std::min(std::ldexp(scale, -k), largest_scale);
  std::vector<std::uint8_t> codes = r.Q.codes();
  r.Q = QuantizedMatrix(r.Q.rows(), r.Q.cols(), r.Q.block_size(), r.Q.codebook(), std::move(codes), std::move(scales));
  r.A *= std::ldexp(1.0f, -k / 2);
  r.B *= std::ldexp(1.0f, -k / 2);
  return r;
}

#ifdef LOFTQ_SEPARATE_COMPILATION
// Instantiated once, in the source that includes <loftq/src.hpp>.
extern template Result loftq_in_range<float>(const RowMatrix<float>& W, float largest,
                                             const Options& options, RowMatrix<float>& residual,
                                             KrylovBuffers& krylov, PassBuffers& passes);
#endif

}  // namespace detail

/// LoftQ with every choice in `options`, in the memory of `workspace`. W is any Eigen expression
/// of floats, out x in. The result depends on W and the options only, never on the thread count
/// or the workspace. Throws std::invalid_argument (naming the argument and value) for an empty
/// W, a non-finite element, or an option out of range.
template <class Derived>
Result loftq(const Eigen::MatrixBase<Derived>& W, const Options& options, Workspace& workspace) {
  static_assert(std::is_same_v<typename Derived::Scalar, float>, "loftq::loftq: W must hold float");
  detail::check_not_empty("W", W.rows(), W.cols());
  detail::check_options(options, W.rows(), W.cols());
  const detail::ThreadScope scope(options.threads);
  if constexpr (std::is_same_v<Derived, Eigen::MatrixXf>) {
    // The row-major copy measures W's largest magnitude on the way: no pass of its own over W.
    const std::uint32_t bits = detail::row_major_copy(W.derived(), workspace.row_major_);
    const float largest = detail::largest_magnitude(bits, workspace.row_major_);
    return detail::loftq_in_range(workspace.row_major_, largest, options, workspace.residual_,
                                  workspace.krylov_, workspace.passes_);
  } else {
    return detail::with_row_major(W, workspace.row_major_, [&](const RowMatrixXf& row_major) {
      return detail::loftq_in_range(row_major, detail::checked_max_abs(row_major), options,
                                    workspace.residual_, workspace.krylov_, workspace.passes_);
    });
  }
}

/// loftq() with a workspace of its own, freed on return.
template <class Derived>
Result loftq(const Eigen::MatrixBase<Derived>& W, const Options& options) {
  Workspace workspace;
  return loftq(W, options, workspace);
}

/// LoftQ with `bits` 2 (NF2), 4 (NF4) or 8 (Int8) and the other Options at their defaults
/// (block size 64, block Krylov SVD, warm start, best iterate).
template <class Derived>
Result loftq(const Eigen::MatrixBase<Derived>& W, Eigen::Index rank, int bits, int iters) {
  Options options;
  options.rank = rank;
  options.codebook = codebook_for_bits(bits);
  options.iters = iters;
  return loftq(W, options);
}

}  // namespace loftq
