// Shared test helpers: golden files, bit comparison, random matrices.
#pragma once

#include <loftq/loftq.hpp>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace loftq_test {

/// Path of a file in tests/data.
inline std::string data_path(const std::string& name) { return std::string(LOFTQ_TEST_DATA_DIR) + "/" + name; }

/// The lines of a file that do not start with '#'.
inline std::vector<std::string> data_lines(const std::string& name) {
  std::ifstream in(data_path(name));
  if (!in) throw std::runtime_error("cannot open " + data_path(name));
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line[0] != '#') lines.push_back(line);
  }
  return lines;
}

/// Whitespace-separated hex floats ("0x1.8p-1") of a line, as float32.
inline std::vector<float> parse_hex_floats(const std::string& line) {
  std::istringstream in(line);
  std::vector<float> values;
  for (std::string token; in >> token;) values.push_back(static_cast<float>(std::strtod(token.c_str(), nullptr)));
  return values;
}

/// Whitespace-separated integers of a line.
inline std::vector<long> parse_ints(const std::string& line) {
  std::istringstream in(line);
  std::vector<long> values;
  for (long v; in >> v;) values.push_back(v);
  return values;
}

/// The bit pattern of a float.
inline std::uint32_t bits_of_float(float x) {
  std::uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
}

/// The float with bit pattern u.
inline float float_of_bits(std::uint32_t u) {
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
}

/// A golden input matrix (tests/data/golden_input.txt by default), row-major.
inline loftq::RowMatrixXf golden_input(const std::string& name = "golden_input.txt") {
  const auto lines = data_lines(name);
  const auto shape = parse_ints(lines.at(0));
  const auto values = parse_hex_floats(lines.at(1));
  loftq::RowMatrixXf w(shape.at(0), shape.at(1));
  if (values.size() != static_cast<std::size_t>(w.size())) throw std::runtime_error("bad " + name);
  std::memcpy(w.data(), values.data(), values.size() * sizeof(float));
  return w;
}

/// One golden quantization file: shape, block size, codes, absmax per block, dequantized values.
struct Golden {
  long rows = 0, cols = 0, block = 0;
  std::vector<long> codes;
  std::vector<float> absmax;
  std::vector<float> dequantized;
};

/// Reads tests/data/golden_<name>.txt.
inline Golden golden(const std::string& name) {
  const auto lines = data_lines("golden_" + name + ".txt");
  Golden g;
  const auto head = parse_ints(lines.at(0));
  g.rows = head.at(0);
  g.cols = head.at(1);
  g.block = head.at(2);
  g.codes = parse_ints(lines.at(1));
  g.absmax = parse_hex_floats(lines.at(2));
  g.dequantized = parse_hex_floats(lines.at(3));
  return g;
}

/// A rows x cols matrix of N(0, stddev^2) entries from a fixed seed.
inline Eigen::MatrixXf gaussian(Eigen::Index rows, Eigen::Index cols, float stddev, unsigned seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> normal(0.0f, stddev);
  Eigen::MatrixXf m(rows, cols);
  for (Eigen::Index j = 0; j < cols; ++j) {
    for (Eigen::Index i = 0; i < rows; ++i) m(i, j) = normal(gen);
  }
  return m;
}

/// How heavy the tails of heavy_tailed() are.
struct HeavyTail {
  float dof = 3.0f;             ///< Degrees of freedom of the Student-t bulk (low: heavier tails).
  float outlier_scale = 20.0f;  ///< Factor of the outlier columns; the outlier rows take half of it.
};

/// A heavy-tailed rows x cols weight from a fixed seed, like a trained LLM matrix: a Student-t
/// bulk (scaled to std about 0.02 for dof > 2), a decaying rank-8 part (scale 0.05 / (1 + k),
/// k = 0..7), three outlier input channels (columns) scaled by outlier_scale and two outlier
/// output channels (rows) scaled by outlier_scale / 2 (their crossings once). The kurtosis grows
/// with outlier_scale and with the size (kurtosis() measures it): at 384 x 512, HeavyTail{5, 6}
/// seed 1 has about 56 and HeavyTail{4.5, 64} seed 3 about 760; at 4096 x 4096 HeavyTail{5, 10}
/// seed 1 about 63 and HeavyTail{5, 24} seed 1 about 960.
inline Eigen::MatrixXf heavy_tailed(Eigen::Index rows, Eigen::Index cols, HeavyTail tail, unsigned seed) {
  std::mt19937 gen(seed);
  std::student_t_distribution<double> student(static_cast<double>(tail.dof));
  const double bulk = tail.dof > 2.0f ? 0.02 / std::sqrt(tail.dof / (tail.dof - 2.0)) : 0.02;
  Eigen::MatrixXf m(rows, cols);
  for (Eigen::Index j = 0; j < cols; ++j) {
    for (Eigen::Index i = 0; i < rows; ++i) m(i, j) = static_cast<float>(bulk * student(gen));
  }
  const Eigen::MatrixXf u = gaussian(rows, 8, 1.0f, seed + 1);
  const Eigen::MatrixXf v = gaussian(cols, 8, 1.0f, seed + 2);
  for (Eigen::Index k = 0; k < 8; ++k) {
    m += (0.05f / static_cast<float>(1 + k) / std::sqrt(static_cast<float>(rows))) * u.col(k) * v.col(k).transpose();
  }
  const Eigen::Index outlier_cols[] = {1, cols / 3, cols - 5};
  const Eigen::Index outlier_rows[] = {rows / 4, rows - 3};
  for (Eigen::Index i : outlier_rows) m.row(i) *= 0.5f * tail.outlier_scale;
  for (Eigen::Index j : outlier_cols) {
    for (Eigen::Index i : outlier_rows) m(i, j) /= 0.5f * tail.outlier_scale;  // scaled once, not twice
    m.col(j) *= tail.outlier_scale;
  }
  return m;
}

/// Kurtosis E[x^4] / E[x^2]^2 of the elements of m (3 for a Gaussian), in double.
inline double kurtosis(const Eigen::MatrixXf& m) {
  const Eigen::ArrayXd x = m.reshaped().cast<double>().array();
  const double second = x.square().mean();
  return x.square().square().mean() / (second * second);
}

/// The error message of what `f` throws as std::invalid_argument, or "" when it does not.
template <class F>
std::string invalid_argument_message(F&& f) {
  try {
    f();
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "";
}

}  // namespace loftq_test
