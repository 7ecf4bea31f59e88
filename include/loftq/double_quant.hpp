/// @file double_quant.hpp
/// bitsandbytes' double quantization of block scales (QLoRA's `bnb_4bit_use_double_quant`):
/// the absmax of a 4-bit matrix, less their mean, quantized with the signed 8-bit dynamic map in
/// blocks of 256, and restored at load time.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "detail/checks.hpp"
#include "kernels/scalar.hpp"

namespace loftq {

/// Scales per nested block of bitsandbytes' double quantization.
inline constexpr int double_quant_block_size = 256;

/// Block scales after double quantization: what bitsandbytes stores for them.
struct DoubleQuantizedScales {
  float offset = 0.0f;              ///< mean(absmax), subtracted before quantizing.
  std::vector<std::uint8_t> codes;  ///< One dynamic_map() code per scale.
  std::vector<float> absmax;        ///< max |scale - offset| of each nested block of 256 scales.
};

namespace detail {

/// torch.linspace(start, end, steps) in float32 as PyTorch's CPU kernel computes it: step =
/// (end - start) / (steps - 1); element i is start + step * i in the first half and
/// end - step * (steps - 1 - i) in the second, each one fused multiply-add (see dynamic_map()).
inline std::vector<float> torch_linspace(float start, float end, int steps) {
  const float step = (end - start) / static_cast<float>(steps - 1);
  std::vector<float> values(static_cast<std::size_t>(steps));
  for (int i = 0; i < steps; ++i) {
    values[static_cast<std::size_t>(i)] =
        i < steps / 2 ? std::fma(step, static_cast<float>(i), start)
                      : std::fma(-step, static_cast<float>(steps - 1 - i), end);
  }
  return values;
}

}  // namespace detail

/// bitsandbytes' signed 8-bit dynamic map, create_dynamic_map(signed=True): for i = 0..6, the
/// 2^i midpoints (b[j] + b[j+1]) / 2 of b = torch.linspace(0.1, 1, 2^i + 1), times 10^(i-6) and
/// times -10^(i-6), then 0 and 1, sorted: 256 ascending float32 values from -0.99296874 to 1 (1
/// has no negative twin), with 0 at index 127.
///
/// Built with bitsandbytes' float32 arithmetic: PyTorch's linspace, a float32 sum halved, and
/// float32(10^(i-6)) times it. One doubt: PyTorch's x86 (AVX2, AVX-512) and aarch64 builds
/// contract linspace's start + step * i into a fused multiply-add, which this follows; a build
/// without FMA gives 42 entries one ulp away (index 196: 0x1.6b3334p-3 here, 0x1.6b3332p-3
/// there). A bitsandbytes file carries its map (nested_quant_map), and io::read_bnb() uses it.
inline const std::array<float, 256>& dynamic_map() {
  static const std::array<float, 256> map = [] {
    constexpr float decades[7] = {1e-6f, 1e-5f, 1e-4f, 1e-3f, 1e-2f, 1e-1f, 1.0f};
    std::array<float, 256> values{};
    std::size_t count = 0;
    for (int i = 0; i < 7; ++i) {
      const std::vector<float> bounds = detail::torch_linspace(0.1f, 1.0f, (1 << i) + 1);
      for (std::size_t j = 0; j + 1 < bounds.size(); ++j) {
        const float value = decades[i] * ((bounds[j] + bounds[j + 1]) / 2.0f);
        values[count++] = value;
        values[count++] = -value;
      }
    }
    values[count++] = 0.0f;
    values[count] = 1.0f;
    std::sort(values.begin(), values.end());
    return values;
  }();
  return map;
}

/// The code of a normalized value x in dynamic_map(), as bitsandbytes' 8-bit blockwise kernel
/// picks it: of the two map values around x, the one on x's side of their float32 midpoint
/// (a + b) * 0.5, the even code at the midpoint itself; 0 at or below the lowest value and for
/// NaN, 255 above 1.
inline std::uint8_t dynamic_code(float x) {
  const std::array<float, 256>& map = dynamic_map();
  const auto upper = static_cast<std::size_t>(std::lower_bound(map.begin(), map.end(), x) - map.begin());
  if (upper == 0) return 0;
  if (upper == map.size()) return 255;
  const std::size_t lower = upper - 1;
  const float midpoint = (map[lower] + map[upper]) * 0.5f;
  const std::size_t code = x > midpoint ? upper : (x < midpoint ? lower : (lower % 2 == 0 ? lower : upper));
  return static_cast<std::uint8_t>(code);
}

/// Double-quantizes the block scales `absmax` as bitsandbytes' quantize_4bit does with
/// compress_statistics=True: offset = the mean of absmax, summed in double and rounded once to
/// float32 (bitsandbytes takes PyTorch's float32 mean, which may differ in the last bit; see the
/// README); x = absmax - offset in float32; in blocks of 256, absmax2 = max |x| and
/// code = dynamic_code(x * (1 / absmax2)), or 0 when absmax2 = 0 (0 times 1/0 is NaN; every
/// code restores the same value there). Throws std::invalid_argument for an empty absmax or a
/// value that is not finite and >= 0.
inline DoubleQuantizedScales double_quantize(const std::vector<float>& absmax) {
  if (absmax.empty()) detail::fail("absmax is empty");
  double sum = 0.0;
  for (std::size_t b = 0; b < absmax.size(); ++b) {
    if (!std::isfinite(absmax[b]) || absmax[b] < 0.0f) {
      detail::fail("absmax[" + std::to_string(b) + "] = " + std::to_string(absmax[b]) +
                   " is not a finite value >= 0");
    }
    sum += static_cast<double>(absmax[b]);
  }
  DoubleQuantizedScales q;
  q.offset = static_cast<float>(sum / static_cast<double>(absmax.size()));
  q.codes.resize(absmax.size());
  const auto nested = static_cast<std::size_t>(double_quant_block_size);
  for (std::size_t first = 0; first < absmax.size(); first += nested) {
    const std::size_t last = std::min(absmax.size(), first + nested);
    float absmax2 = 0.0f;
    for (std::size_t b = first; b < last; ++b) absmax2 = std::max(absmax2, std::fabs(absmax[b] - q.offset));
    if (absmax2 > 0.0f) {
      const float inverse = 1.0f / absmax2;
      for (std::size_t b = first; b < last; ++b) q.codes[b] = dynamic_code((absmax[b] - q.offset) * inverse);
    }
    q.absmax.push_back(absmax2);
  }
  return q;
}

/// The scale bitsandbytes restores from a double-quantized one: map_value * absmax2 + offset in
/// float32, rounded after each operation (dequantize_blockwise, then `absmax += offset`).
inline float restored_scale(float map_value, float absmax2, float offset) {
  return detail::kernels::unfused(map_value * absmax2) + offset;
}

/// The scales bitsandbytes' dequantize_4bit multiplies by: restored_scale() of each code with
/// `map` (the nested quant map; bitsandbytes builds it as dynamic_map() does, whose last bits
/// depend on the PyTorch build) and its nested block of 256. May be below 0 where a scale is
/// within the 8-bit error of 0 (a zero block, a tiny block beside a large one), as in
/// bitsandbytes, which multiplies by it.
inline std::vector<float> restored_scales(const DoubleQuantizedScales& q,
                                          const std::array<float, 256>& map = dynamic_map()) {
  std::vector<float> scales(q.codes.size());
  const auto nested = static_cast<std::size_t>(double_quant_block_size);
  for (std::size_t b = 0; b < scales.size(); ++b) {
    scales[b] = restored_scale(map[q.codes[b]], q.absmax[b / nested], q.offset);
  }
  return scales;
}

}  // namespace loftq
