/// @file detail/random.hpp
/// Counter-based Gaussian numbers: element i of a stream depends only on (seed, stream, i), so
/// a matrix is filled in parallel pieces with the same result whatever the thread count.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "../threads.hpp"

namespace loftq::detail {

/// SplitMix64's finalizer: a bijective 64-bit mix.
constexpr std::uint64_t mix64(std::uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

/// Fills out (rows x cols) with standard normal numbers of stream `stream` for `seed`, by the
/// Box-Muller transform of counter-based uniforms in (0, 1).
inline void fill_gaussian(Eigen::MatrixXf& out, std::uint64_t seed, std::uint64_t stream) {
  const std::uint64_t key = mix64(mix64(seed) ^ (stream * 0x9e3779b97f4a7c15ULL + 1));
  const std::ptrdiff_t n = out.size();
  constexpr std::ptrdiff_t piece = 4096;  // even: Box-Muller makes pairs
  const std::ptrdiff_t pieces = (n + piece - 1) / piece;
  float* data = out.data();
  parallel_for(pieces, [&](std::ptrdiff_t p) {
    const std::ptrdiff_t first = p * piece;
    const std::ptrdiff_t count = std::min(piece, n - first);
    for (std::ptrdiff_t k = 0; 2 * k < count; ++k) {
      const std::uint64_t bits = mix64(key + static_cast<std::uint64_t>(first / 2 + k));
      // Two 24-bit uniforms at cell centres, (j + 0.5) / 2^24: never 0, never 1.
      const double u1 = (static_cast<double>(bits >> 40) + 0.5) * 0x1p-24;
      const double u2 = (static_cast<double>((bits >> 16) & 0xffffffULL) + 0.5) * 0x1p-24;
      const double radius = std::sqrt(-2.0 * std::log(u1));
      const double angle = 6.28318530717958647692 * u2;
      data[first + 2 * k] = static_cast<float>(radius * std::cos(angle));
      if (2 * k + 1 < count) data[first + 2 * k + 1] = static_cast<float>(radius * std::sin(angle));
    }
  });
}

}  // namespace loftq::detail
