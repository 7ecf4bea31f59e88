/// @file detail/checks.hpp
/// Argument checks that throw std::invalid_argument with the argument's name and value.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

namespace loftq::detail {

/// Throws std::invalid_argument("loftq: <message>").
[[noreturn]] inline void fail(const std::string& message) {
  throw std::invalid_argument("loftq: " + message);
}

/// Throws unless the matrix `name` has at least one element.
inline void check_not_empty(const char* name, std::ptrdiff_t rows, std::ptrdiff_t cols) {
  if (rows <= 0 || cols <= 0) {
    fail(std::string(name) + " is empty (" + std::to_string(rows) + " x " + std::to_string(cols) +
         ")");
  }
}

/// Throws unless every element of the row-major array `data` (rows x cols) is finite; the
/// message names the first bad element by row and column.
inline void check_finite(const char* name, const float* data, std::ptrdiff_t rows,
                         std::ptrdiff_t cols) {
  const std::size_t n = static_cast<std::size_t>(rows) * static_cast<std::size_t>(cols);
  constexpr std::size_t chunk = 4096;
  for (std::size_t first = 0; first < n; first += chunk) {
    const std::size_t end = std::min(n, first + chunk);
    // An all-ones exponent is inf or NaN: tested on the bits, with no branch, a chunk at a time.
    std::uint32_t non_finite = 0;
    for (std::size_t i = first; i < end; ++i) {
      std::uint32_t bits;
      std::memcpy(&bits, data + i, sizeof bits);
      non_finite |= static_cast<std::uint32_t>((bits & 0x7f800000u) == 0x7f800000u);
    }
    if (non_finite == 0) continue;
    for (std::size_t i = first; i < end; ++i) {
      if (!std::isfinite(data[i])) {
        const auto row = static_cast<std::ptrdiff_t>(i / static_cast<std::size_t>(cols));
        const auto col = static_cast<std::ptrdiff_t>(i % static_cast<std::size_t>(cols));
        fail(std::string(name) + " has a non-finite value " + std::to_string(data[i]) + " at (row " +
             std::to_string(row) + ", col " + std::to_string(col) + ")");
      }
    }
  }
}

/// Throws unless the option `name` is finite and >= 0 (a tolerance).
inline void check_tolerance(const char* name, double value) {
  if (!(value >= 0.0 && std::isfinite(value))) {
    fail(std::string(name) + " = " + std::to_string(value) + " must be finite and >= 0");
  }
}

/// Throws unless block_size >= 1.
inline void check_block_size(int block_size) {
  if (block_size < 1) {
    fail("block_size = " + std::to_string(block_size) + " is not supported (must be >= 1)");
  }
}

}  // namespace loftq::detail
