// With odr_a.cpp: every public header in two translation units of one program.
#include <loftq/loftq.hpp>
#include <loftq/version.hpp>
#include <loftq/solver.hpp>
#include <loftq/quantized.hpp>
#include <loftq/lowrank.hpp>
#include <loftq/matrix.hpp>
#include <loftq/threads.hpp>
#include <loftq/codebook.hpp>
#include <loftq/io/bnb.hpp>
#include <loftq/io/checkpoint.hpp>
#include <loftq/io/error.hpp>
#include <loftq/io/file.hpp>
#include <loftq/io/json.hpp>
#include <loftq/io/peft.hpp>
#include <loftq/io/safetensors.hpp>
#include <loftq/isa.hpp>
#include <loftq/blockwise.hpp>

int odr_b() {
  const Eigen::MatrixXf w = Eigen::MatrixXf::Ones(4, 4);
  const loftq::LowRankFactors f = loftq::truncated_svd(w, 1);
  return f.A.cols() == 1 ? loftq::loftq(w, 1, 2, 1).iteration : 0;
}
