// Shared test helpers: golden files, bit comparison, random matrices.
#pragma once

#include <loftq/loftq.hpp>

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

/// The golden input matrix (tests/data/golden_input.txt), row-major.
inline loftq::RowMatrixXf golden_input() {
  const auto lines = data_lines("golden_input.txt");
  const auto shape = parse_ints(lines.at(0));
  const auto values = parse_hex_floats(lines.at(1));
  loftq::RowMatrixXf w(shape.at(0), shape.at(1));
  if (values.size() != static_cast<std::size_t>(w.size())) throw std::runtime_error("bad golden_input.txt");
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
