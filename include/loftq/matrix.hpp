/// @file matrix.hpp
/// The matrix type of loftq's row-major arrays.
#pragma once

#include <Eigen/Core>

namespace loftq {

/// Row-major float matrix: the layout quantization blocks are taken from, and the layout of the
/// matrices LoftQ streams.
using RowMatrixXf = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

}  // namespace loftq
