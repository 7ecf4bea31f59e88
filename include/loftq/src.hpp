/// @file src.hpp
/// The compiled part of loftq under LOFTQ_SEPARATE_COMPILATION: include this header in exactly
/// one source file of a program whose every file is compiled with LOFTQ_SEPARATE_COMPILATION
/// defined (the loftq::compiled CMake target does both). The other files then compile the
/// solver and the truncated SVD as declarations only, which makes them several times faster
/// to compile; results are the same bits.
#pragma once

#ifndef LOFTQ_SEPARATE_COMPILATION
#error "<loftq/src.hpp> is for builds with LOFTQ_SEPARATE_COMPILATION defined"
#endif

#include "loftq.hpp"

namespace loftq::detail {

template Result loftq_in_range<float>(const RowMatrix<float>& W, float largest,
                                      const Options& options, RowMatrix<float>& residual,
                                      KrylovBuffers& krylov, PassBuffers& passes);
template LowRankFactors truncated_svd_row_major<float>(const RowMatrix<float>& E, Eigen::Index rank,
                                                       const SvdOptions& options, const Matrix<float>* start,
                                                       double energy, KrylovBuffers& buffers, bool rounded,
                                                       bool float_step);

}  // namespace loftq::detail
