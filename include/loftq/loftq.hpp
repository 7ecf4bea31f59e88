/// @file loftq.hpp
/// loftq-cpp: LoftQ initialization (Li et al., ICLR 2024) for quantized LoRA fine-tuning.
///
/// One call per weight matrix:
/// @code
/// auto r = loftq::loftq(W, /*rank=*/16, /*bits=*/4, /*iters=*/5);
/// Eigen::MatrixXf approx = r.Q.dequantize() + r.A * r.B.transpose();
/// @endcode
#pragma once

#include "version.hpp"
#include "codebook.hpp"
#include "load_path.hpp"
#include "double_quant.hpp"
#include "matrix.hpp"
#include "quantized.hpp"
#include "blockwise.hpp"
#include "isa.hpp"
#include "lowrank.hpp"
#include "threads.hpp"
#include "solver.hpp"
