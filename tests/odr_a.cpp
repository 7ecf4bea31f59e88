// With odr_b.cpp: every public header in two translation units of one program.
#include <loftq/blockwise.hpp>
#include <loftq/codebook.hpp>
#include <loftq/io/bnb.hpp>
#include <loftq/io/checkpoint.hpp>
#include <loftq/io/error.hpp>
#include <loftq/io/file.hpp>
#include <loftq/io/json.hpp>
#include <loftq/io/peft.hpp>
#include <loftq/io/safetensors.hpp>
#include <loftq/isa.hpp>
#include <loftq/loftq.hpp>
#include <loftq/lowrank.hpp>
#include <loftq/matrix.hpp>
#include <loftq/threads.hpp>
#include <loftq/quantized.hpp>
#include <loftq/solver.hpp>
#include <loftq/version.hpp>

int odr_b();

int odr_a() {
  const Eigen::MatrixXf w = Eigen::MatrixXf::Ones(4, 4);
  return loftq::loftq(w, 1, 4, 1).iteration;
}

int main() { return odr_a() == 1 && odr_b() == 1 ? 0 : 1; }
