/// @file run_target.hpp
/// LoftQ on one target: the solver options it gets and the call.
#pragma once

#include <algorithm>
#include <chrono>
#include <loftq/io/checkpoint.hpp>
#include <loftq/solver.hpp>
#include <string>

#include "options.hpp"
#include "report.hpp"
#include "targets.hpp"
#include "weight_layout.hpp"

namespace loftq_convert {

/// The loftq::Options of a target with `target_codebook`, rows x cols weights and the load path
/// `target_load_path` (load_path_of()): every field comes from `options` (its rank is
/// min(options.rank, rows, cols); LLM.int8's block is a row).
inline loftq::Options solver_options(const ConvertOptions& options, loftq::Codebook target_codebook,
                                     Eigen::Index rows, Eigen::Index cols, const loftq::LoadPath& target_load_path) {
  loftq::Options result;
  // One binding per field: a field added to loftq::Options stops the build here until it is set
  // below (and, when it changes the output, recorded in the shard manifest).
  auto& [rank, iters, codebook, block_size, svd, oversampling, krylov_depth, warm_krylov_depth, krylov_tolerance,
         power_iters, warm_start, seed, threads, keep_best, load_path] = result;
  rank = std::min<Eigen::Index>(options.rank, std::min(rows, cols));
  iters = options.iters;
  codebook = target_codebook;
  block_size = target_codebook == loftq::Codebook::llm_int8 ? static_cast<int>(cols) : options.block_size;
  svd = options.solver.svd;
  oversampling = options.solver.oversampling;
  krylov_depth = options.solver.krylov_depth;
  warm_krylov_depth = options.solver.warm_krylov_depth;
  krylov_tolerance = options.solver.krylov_tolerance;
  power_iters = options.solver.power_iters;
  warm_start = options.solver.warm_start;
  seed = options.solver.seed;
  threads = options.threads;
  keep_best = options.solver.keep_best;
  load_path = target_load_path;
  return result;
}

/// Runs LoftQ on `target`'s matrix W (its weight through swap_layout(): transposed for a Conv1D
/// layer, a convolution reshaped) with `codebook`, fills `report` (all but the backbone and
/// adapter bytes); puts ||W||_F^2 in *weight_norm2 when not null. Throws as the checkpoint's
/// reads and loftq::loftq().
inline loftq::Result run_target(const loftq::io::Checkpoint& checkpoint, const Target& target,
                                const ConvertOptions& options, loftq::Codebook codebook, TargetReport& report,
                                double* weight_norm2 = nullptr) {
  const loftq::io::Checkpoint::Entry entry = checkpoint.at(target.name);
  const loftq::RowMatrixXf w = swap_layout(entry.file->read_matrix(*entry.info), target.layout);
  if (weight_norm2 != nullptr) *weight_norm2 = w.cast<double>().squaredNorm();
  const auto start = std::chrono::steady_clock::now();
  const loftq::LoadPath path = load_path_of(options, codebook, target.info.dtype, target.info.shape.size());
  loftq::Result r = loftq::loftq(w, solver_options(options, codebook, w.rows(), w.cols(), path));
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  report.name = target.name;
  report.shape = target.info.shape;
  report.bits = loftq::bits_of(codebook);
  report.rank = static_cast<int>(r.A.cols());
  report.codebook = std::string(loftq::name_of(codebook));
  report.qlora_error = r.quantization_error;
  report.loftq_errors = r.errors;
  report.iteration = r.iteration;
  report.krylov_depths = r.krylov_depths;
  report.bytes.original = target.info.bytes();
  return r;
}

}  // namespace loftq_convert
