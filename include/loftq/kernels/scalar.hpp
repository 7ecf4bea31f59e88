/// @file kernels/scalar.hpp
/// Portable kernels for one block of blockwise quantization; every other path must equal these
/// bit for bit. No expression here can be contracted into an FMA: each result is one rounding.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numeric>

#include "../codebook.hpp"
#include "../detail/packing.hpp"

namespace loftq::kernels {

/// What quantizing to a lookup codebook needs: the float32 midpoints of the sorted table and
/// the code of each interval between them.
struct LookupQuantizer {
  std::array<float, 255> midpoints{};  ///< (s[k] + s[k+1]) / 2 of the sorted values s.
  std::array<std::uint8_t, 256> codes{};  ///< codes[k]: code of s[k].
  int levels = 0;                          ///< Table size, 2^bits.
};

/// Builds the LookupQuantizer of a table. Equal values (0 and -0 in FP4) keep their code order,
/// so 0 maps to the first of them and a tiny positive value past their midpoint to the second.
inline LookupQuantizer make_lookup_quantizer(CodebookTable table) {
  LookupQuantizer q;
  q.levels = table.size;
  std::array<int, 256> order{};
  std::iota(order.begin(), order.begin() + table.size, 0);
  std::stable_sort(order.begin(), order.begin() + table.size,
                   [&](int a, int b) { return table.values[a] < table.values[b]; });
  for (int k = 0; k < table.size; ++k) q.codes[k] = static_cast<std::uint8_t>(order[k]);
  for (int k = 0; k + 1 < table.size; ++k) {
    q.midpoints[k] = (table.values[order[k]] + table.values[order[k + 1]]) / 2.0f;
  }
  return q;
}

namespace scalar {

/// Largest |x[i]| over n values (0 for n = 0).
inline float absmax(const float* x, std::size_t n) {
  float m = 0.0f;
  for (std::size_t i = 0; i < n; ++i) m = std::max(m, std::fabs(x[i]));
  return m;
}

/// Codes of one block for a lookup codebook, one byte per element: x * (1 / max(absmax, 1e-38))
/// clamped to [-1, 1], then the number of midpoints strictly below it, mapped to its code.
inline void quantize_lookup(const float* x, std::size_t n, float absmax, const LookupQuantizer& q,
                            std::uint8_t* codes) {
  const float inv = 1.0f / std::max(absmax, 1e-38f);
  const float* mid_begin = q.midpoints.data();
  const float* mid_end = mid_begin + (q.levels - 1);
  for (std::size_t i = 0; i < n; ++i) {
    const float s = std::clamp(x[i] * inv, -1.0f, 1.0f);
    const auto k = std::lower_bound(mid_begin, mid_end, s) - mid_begin;
    codes[i] = q.codes[static_cast<std::size_t>(k)];
  }
}

/// Int8 codes of one block, one byte per element: round-half-even(x * (127 / absmax)) clamped to
/// [-127, 127], stored as its two's-complement byte; 0 where absmax is 0.
inline void quantize_int8(const float* x, std::size_t n, float absmax, std::uint8_t* codes) {
  const float f = 127.0f / absmax;
  for (std::size_t i = 0; i < n; ++i) {
    float v = x[i] * f;        // 0 * inf (absmax 0) is NaN:
    if (std::isnan(v)) v = 0;  // such an element is 0.
    const float q = std::nearbyint(std::clamp(v, -127.0f, 127.0f));
    codes[i] = static_cast<std::uint8_t>(static_cast<std::int8_t>(q));
  }
}

/// Dequantizes elements [first, first + n) of a packed code array into out[0..n):
/// out[i] = table[code] * factor.
inline void dequantize(const std::uint8_t* packed, std::size_t first, std::size_t n, int bits,
                       const float* table, float factor, float* out) {
  for (std::size_t i = 0; i < n; ++i) {
    out[i] = table[detail::get_code(packed, first + i, bits)] * factor;
  }
}

}  // namespace scalar
}  // namespace loftq::kernels
