// The pinned public API, compiled from outside the project against the core alone.
#include <loftq/loftq.hpp>

#ifdef NLOHMANN_JSON_VERSION_MAJOR
#error "the core pulled in nlohmann/json"
#endif
#if defined(LOFTQ_CONSUMER_CORE_ONLY) && __has_include(<loftq/io/error.hpp>)
#error "an I/O header is on the include path of a core-only consumer"
#endif

#include <cstdio>

int main() {
  const Eigen::MatrixXf W = Eigen::MatrixXf::Random(96, 80) * 0.02f;
  auto r = loftq::loftq(W, /*rank=*/16, /*bits=*/4, /*iters=*/5);
  Eigen::MatrixXf Qd = r.Q.dequantize();
  Eigen::MatrixXf A = r.A;
  Eigen::MatrixXf B = r.B;
  auto q = loftq::quantize<loftq::NF4>(W, /*block_size=*/64);
  Eigen::MatrixXf D = q.dequantize();
  const float lofq = (W - Qd - A * B.transpose()).norm();
  const float plain = (W - D).norm();
  std::printf("loftq %d.%d.%d: LoftQ error %g, plain NF4 error %g\n", LOFTQ_VERSION_MAJOR,
              LOFTQ_VERSION_MINOR, LOFTQ_VERSION_PATCH, lofq, plain);
  return (A.cols() == 16 && B.rows() == 80 && lofq < plain) ? 0 : 1;
}
