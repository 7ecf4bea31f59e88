// One call of loftq(): what a file that uses the library compiles.
#include <loftq/loftq.hpp>

int main() {
  const Eigen::MatrixXf W = Eigen::MatrixXf::Random(64, 64);
  return loftq::loftq(W, 4, 4, 2).iteration == 0;
}
