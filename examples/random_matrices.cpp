// LoftQ on random matrices: how much closer to W than plain quantization (QLoRA, T = 0) the
// initialization Q + A B^T gets after T = 1 and T = 5 steps, for NF2, NF4 and Int8.
//
// Usage: random_matrices [rows cols rank]   (default 768 768 16)
#include <loftq/loftq.hpp>

#include <Eigen/SVD>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>

namespace {

/// rows x cols entries drawn from N(0, stddev^2).
Eigen::MatrixXf gaussian(Eigen::Index rows, Eigen::Index cols, float stddev, std::mt19937_64& gen) {
  std::normal_distribution<float> normal(0.0f, stddev);
  Eigen::MatrixXf m(rows, cols);
  for (Eigen::Index k = 0; k < m.size(); ++k) m.data()[k] = normal(gen);
  return m;
}

/// Like a pre-trained LLM weight: a low-rank part with decaying spectrum, a Gaussian bulk of
/// std 0.02 and a few input channels (columns) with 10x larger weights.
Eigen::MatrixXf llm_like(Eigen::Index rows, Eigen::Index cols, std::mt19937_64& gen) {
  Eigen::MatrixXf w = gaussian(rows, cols, 0.02f, gen);
  const Eigen::Index spikes = 32;
  const Eigen::MatrixXf u = gaussian(rows, spikes, 1.0f, gen).householderQr().householderQ() *
                            Eigen::MatrixXf::Identity(rows, spikes);
  const Eigen::MatrixXf v = gaussian(cols, spikes, 1.0f, gen).householderQr().householderQ() *
                            Eigen::MatrixXf::Identity(cols, spikes);
  Eigen::VectorXf s(spikes);
  for (Eigen::Index k = 0; k < spikes; ++k) s(k) = 2.0f / static_cast<float>(1 + k);
  w += u * s.asDiagonal() * v.transpose();
  std::uniform_int_distribution<Eigen::Index> column(0, cols - 1);
  for (int k = 0; k < 4; ++k) w.col(column(gen)) *= 10.0f;
  return w;
}

/// Largest singular value.
double spectral_norm(const Eigen::MatrixXf& m) {
  return Eigen::BDCSVD<Eigen::MatrixXd>(m.cast<double>()).singularValues()(0);
}

void report(const char* matrix, loftq::Codebook codebook, int iters, const Eigen::MatrixXf& w,
            const Eigen::MatrixXf& approx, double seconds) {
  const double frobenius = (w - approx).cast<double>().norm() / w.cast<double>().norm();
  const double spectral = spectral_norm(w - approx) / spectral_norm(w);
  std::printf("| %-9s | %-8s | %d | %10.5f | %10.5f | %9.1f |\n", matrix,
              std::string(loftq::name_of(codebook)).c_str(), iters, frobenius, spectral, seconds * 1e3);
}

}  // namespace

int main(int argc, char** argv) {
  const Eigen::Index rows = argc > 1 ? std::atol(argv[1]) : 768;
  const Eigen::Index cols = argc > 2 ? std::atol(argv[2]) : 768;
  const Eigen::Index rank = argc > 3 ? std::atol(argv[3]) : 16;
  std::mt19937_64 gen(2024);
  const Eigen::MatrixXf gaussian_w = gaussian(rows, cols, 0.02f, gen);
  const Eigen::MatrixXf llm_w = llm_like(rows, cols, gen);

  std::printf("LoftQ initialization of %ld x %ld matrices, rank %ld, block 64 (T = 0 is QLoRA)\n\n",
              static_cast<long>(rows), static_cast<long>(cols), static_cast<long>(rank));
  std::printf("| matrix    | codebook | T | Frobenius  | spectral   | time (ms) |\n");
  std::printf("|-----------|----------|---|------------|------------|-----------|\n");
  using clock = std::chrono::steady_clock;
  for (const auto& [name, w] : {std::pair<const char*, const Eigen::MatrixXf&>{"gaussian", gaussian_w},
                                std::pair<const char*, const Eigen::MatrixXf&>{"llm-like", llm_w}}) {
    for (loftq::Codebook codebook : {loftq::Codebook::nf2, loftq::Codebook::nf4, loftq::Codebook::int8}) {
      auto start = clock::now();
      const loftq::QuantizedMatrix q = loftq::quantize(w, codebook, 64);
      const double quantize_seconds = std::chrono::duration<double>(clock::now() - start).count();
      report(name, codebook, 0, w, q.dequantize(), quantize_seconds);
      for (int iters : {1, 5}) {
        loftq::Options options;
        options.rank = rank;
        options.iters = iters;
        options.codebook = codebook;
        start = clock::now();
        const loftq::Result r = loftq::loftq(w, options);
        const double seconds = std::chrono::duration<double>(clock::now() - start).count();
        report(name, codebook, iters, w, r.Q.dequantize() + r.A * r.B.transpose(), seconds);
      }
    }
  }
  return 0;
}
