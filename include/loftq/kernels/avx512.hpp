/// @file kernels/avx512.hpp
/// AVX-512 kernels of blockwise quantization, equal bit for bit to kernels/scalar.hpp. They are
/// compiled for AVX-512 F, BW, DQ and VL whatever the build flags, and run only on CPUs that
/// have them (see isa.hpp). They walk an array in groups of 16 elements, one
/// vector each, as the AVX2 kernels do (see kernels/avx2.hpp).
#pragma once

#include "../detail/cpu.hpp"

#if LOFTQ_X86_KERNELS

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>

#include "../codebook.hpp"
#include "avx2.hpp"
#include "scalar.hpp"

/// Compiles a function for AVX-512 F, BW, DQ and VL. AVX2 and FMA are named too, so that the
/// AVX2 helpers inline into these functions.
#define LOFTQ_TARGET_AVX512 __attribute__((target("avx2,fma,avx512f,avx512bw,avx512dq,avx512vl")))

// GCC 12 reports the undefined pass-through operand of its own AVX-512 intrinsics as
// uninitialized once they are inlined.
#if !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace loftq::detail::kernels::avx512 {

using avx2::group;
using avx2::span;

/// Mask of the first `count` lanes, count < 16.
inline __mmask16 first_lanes(std::size_t count) {
  return static_cast<__mmask16>((1u << count) - 1u);
}

/// w[i .. i + 16) - v[i .. i + 16), or w[i .. i + 16) when v is null.
LOFTQ_TARGET_AVX512 inline __m512 load_target(const float* w, const float* v, std::size_t i) {
  const __m512 x = _mm512_loadu_ps(w + i);
  return v != nullptr ? _mm512_sub_ps(x, _mm512_loadu_ps(v + i)) : x;
}

/// load_target() of the lanes in `mask`; the other lanes are 0 and read no memory.
LOFTQ_TARGET_AVX512 inline __m512 load_target(const float* w, const float* v, std::size_t i,
                                              __mmask16 mask) {
  const __m512 x = _mm512_maskz_loadu_ps(mask, w + i);
  return v != nullptr ? _mm512_sub_ps(x, _mm512_maskz_loadu_ps(mask, v + i)) : x;
}

/// max(m, |x|) lane by lane; a NaN x leaves m, as std::max(m, std::fabs(x)) does.
LOFTQ_TARGET_AVX512 inline __m512 max_magnitude(__m512 m, __m512 x) {
  return _mm512_max_ps(_mm512_abs_ps(x), m);
}

/// Largest |w[i] - v[i]| over n values, or |w[i]| when v is null: as scalar::absmax() and
/// scalar::absmax_of_difference() (the maximum is exact, so the order does not matter).
LOFTQ_TARGET_AVX512 inline float absmax_of(const float* w, const float* v, std::size_t n) {
  __m512 m0 = _mm512_setzero_ps(), m1 = m0, m2 = m0, m3 = m0;
  std::size_t i = 0;
  for (; i + 64 <= n; i += 64) {
    m0 = max_magnitude(m0, load_target(w, v, i));
    m1 = max_magnitude(m1, load_target(w, v, i + 16));
    m2 = max_magnitude(m2, load_target(w, v, i + 32));
    m3 = max_magnitude(m3, load_target(w, v, i + 48));
  }
  for (; i + 16 <= n; i += 16) m0 = max_magnitude(m0, load_target(w, v, i));
  if (i < n) m1 = max_magnitude(m1, load_target(w, v, i, first_lanes(n - i)));
  return _mm512_reduce_max_ps(_mm512_max_ps(_mm512_max_ps(m0, m1), _mm512_max_ps(m2, m3)));
}

/// x, which the compiler may not fuse with a following addition or subtraction into an FMA.
LOFTQ_TARGET_AVX512 inline __m512 unfused(__m512 x) {
  __asm__("" : "+v"(x));
  return x;
}

/// Codes of a 4- or 16-level lookup codebook: the level is the number of midpoints below s,
/// found by a branch-free binary search; the code is that level's code. The first step compares
/// with one midpoint, the second picks one of two by a blend, the last two (16 levels) permute a
/// table of midpoints by the level found so far. Midpoints lie in (-1, 1), so the count below s
/// is the same as below clamp(s, -1, 1) and the search skips the clamp; NaN compares false and
/// counts 0.
template <int Levels>
class SmallLookup {
  static_assert(Levels == 4 || Levels == 16, "SmallLookup: 4 or 16 levels");

 public:
  /// The search tables of `lookup`, whose values are table[code].
  LOFTQ_TARGET_AVX512 SmallLookup(const LookupQuantizer& lookup, const float* table) {
    float mid[16];
    std::fill(mid, mid + 16, std::numeric_limits<float>::infinity());
    std::copy(lookup.midpoints.begin(), lookup.midpoints.begin() + (Levels - 1), mid);
    const int half = Levels / 2;
    mid_top_ = _mm512_set1_ps(mid[half - 1]);
    mid_low_ = _mm512_set1_ps(mid[half / 2 - 1]);
    mid_high_ = _mm512_set1_ps(mid[half + half / 2 - 1]);
    float next[16];
    for (int i = 0; i < 16; ++i) next[i] = mid[std::min(i + 1, 15)];
    next_ = _mm512_loadu_ps(next);
    mid_ = _mm512_loadu_ps(mid);
    alignas(16) std::uint8_t code[16] = {};
    float value[16] = {};
    for (int i = 0; i < Levels; ++i) {
      code[i] = lookup.codes[static_cast<std::size_t>(i)];
      value[i] = table[code[i]];
    }
    codes_ = _mm_load_si128(reinterpret_cast<const __m128i*>(code));
    values_ = _mm512_loadu_ps(value);
  }

  /// The block multiplier, lookup_multiplier().
  static float multiplier(float absmax) { return lookup_multiplier(absmax); }

  /// Sorted level of each lane of s = x * multiplier: the number of midpoints below s.
  LOFTQ_TARGET_AVX512 __m512i level(__m512 s) const {
    const __mmask16 above_top = _mm512_cmp_ps_mask(mid_top_, s, _CMP_LT_OQ);
    const __mmask16 above =
        _mm512_cmp_ps_mask(_mm512_mask_blend_ps(above_top, mid_low_, mid_high_), s, _CMP_LT_OQ);
    const int half = Levels / 2;
    __m512i idx = _mm512_maskz_mov_epi32(above_top, _mm512_set1_epi32(half));
    idx = _mm512_mask_add_epi32(idx, above, idx, _mm512_set1_epi32(half / 2));
    if constexpr (Levels == 16) {
      // Third step: mid[level + 1]; fourth: mid[level].
      idx = _mm512_mask_add_epi32(
          idx, _mm512_cmp_ps_mask(_mm512_permutexvar_ps(idx, next_), s, _CMP_LT_OQ), idx,
          _mm512_set1_epi32(2));
      idx = _mm512_mask_add_epi32(
          idx, _mm512_cmp_ps_mask(_mm512_permutexvar_ps(idx, mid_), s, _CMP_LT_OQ), idx,
          _mm512_set1_epi32(1));
    }
    return idx;
  }

  /// The codes of 16 levels, one byte each.
  LOFTQ_TARGET_AVX512 __m128i codes(__m512i level) const {
    return _mm_shuffle_epi8(codes_, _mm512_cvtepi32_epi8(level));
  }

  /// The table value of each level.
  LOFTQ_TARGET_AVX512 __m512 value(__m512i level) const {
    return _mm512_permutexvar_ps(level, values_);
  }

 private:
  __m512 mid_top_;  // midpoint of the first step
  __m512 mid_low_;  // midpoints of the second step
  __m512 mid_high_;
  __m512 next_;    // next_[i] = mid[i + 1]
  __m512 mid_;     // the midpoints, padded with +inf
  __m128i codes_;  // code of each level
  __m512 values_;  // table value of each level
};

/// Codes of a 256-level lookup codebook (Uniform<8>): the same branch-free binary search as
/// SmallLookup over 255 midpoints (padded with +inf to 256). The first two steps compare with
/// broadcast midpoints, the next three permute 16-entry tables by level / 16, the last three
/// read 32-, 64- and 128-entry tables (two-table permutes and blends) at level / 8, / 4 and / 2.
class LargeLookup {
 public:
  /// The search tables of `lookup`, whose values are table[code].
  LOFTQ_TARGET_AVX512 LargeLookup(const LookupQuantizer& lookup, const float* table) {
    float mid[256];
    std::copy(lookup.midpoints.begin(), lookup.midpoints.end(), mid);
    mid[255] = std::numeric_limits<float>::infinity();
    first_ = _mm512_set1_ps(mid[127]);
    second_low_ = _mm512_set1_ps(mid[63]);
    second_high_ = _mm512_set1_ps(mid[191]);
    float t[128];
    for (int k = 0; k < 3; ++k) {  // steps 32, 16 and 8 at level 16g: mid[16g + step - 1]
      const int step = 32 >> k;
      for (int g = 0; g < 16; ++g) t[g] = mid[std::min(16 * g + step - 1, 255)];
      by_sixteen_[k] = _mm512_loadu_ps(t);
    }
    for (int j = 0; j < 32; ++j) t[j] = mid[8 * j + 3];  // step 4 at level 8j
    for (int k = 0; k < 2; ++k) by_eight_[k] = _mm512_loadu_ps(t + 16 * k);
    for (int j = 0; j < 64; ++j) t[j] = mid[4 * j + 1];  // step 2 at level 4j
    for (int k = 0; k < 4; ++k) by_four_[k] = _mm512_loadu_ps(t + 16 * k);
    for (int j = 0; j < 128; ++j) t[j] = mid[2 * j];  // step 1 at level 2j
    for (int k = 0; k < 8; ++k) by_two_[k] = _mm512_loadu_ps(t + 16 * k);
    for (std::size_t i = 0; i < 256; ++i) {
      codes_[i] = lookup.codes[i];
      values_[i] = table[lookup.codes[i]];
      identity_ = identity_ && lookup.codes[i] == i;
    }
  }

  /// The block multiplier, lookup_multiplier().
  static float multiplier(float absmax) { return lookup_multiplier(absmax); }

  /// Sorted level of each lane of s = x * multiplier: the number of midpoints below s.
  LOFTQ_TARGET_AVX512 __m512i level(__m512 s) const {
    const __m512i one = _mm512_set1_epi32(1);
    __mmask16 above = _mm512_cmp_ps_mask(first_, s, _CMP_LT_OQ);
    __m512i g = _mm512_maskz_mov_epi32(above, _mm512_set1_epi32(8));  // level / 16
    above =
        _mm512_cmp_ps_mask(_mm512_mask_blend_ps(above, second_low_, second_high_), s, _CMP_LT_OQ);
    g = _mm512_mask_add_epi32(g, above, g, _mm512_set1_epi32(4));
    above = _mm512_cmp_ps_mask(_mm512_permutexvar_ps(g, by_sixteen_[0]), s, _CMP_LT_OQ);
    g = _mm512_mask_add_epi32(g, above, g, _mm512_set1_epi32(2));
    above = _mm512_cmp_ps_mask(_mm512_permutexvar_ps(g, by_sixteen_[1]), s, _CMP_LT_OQ);
    g = _mm512_mask_add_epi32(g, above, g, one);
    above = _mm512_cmp_ps_mask(_mm512_permutexvar_ps(g, by_sixteen_[2]), s, _CMP_LT_OQ);
    __m512i j = _mm512_mask_add_epi32(_mm512_add_epi32(g, g), above, _mm512_add_epi32(g, g), one);
    above =
        _mm512_cmp_ps_mask(_mm512_permutex2var_ps(by_eight_[0], j, by_eight_[1]), s, _CMP_LT_OQ);
    j = _mm512_mask_add_epi32(_mm512_add_epi32(j, j), above, _mm512_add_epi32(j, j), one);
    above = _mm512_cmp_ps_mask(pick64(by_four_, j), s, _CMP_LT_OQ);
    j = _mm512_mask_add_epi32(_mm512_add_epi32(j, j), above, _mm512_add_epi32(j, j), one);
    const __m512 mid = _mm512_mask_blend_ps(_mm512_test_epi32_mask(j, _mm512_set1_epi32(64)),
                                            pick64(by_two_, j), pick64(by_two_ + 4, j));
    above = _mm512_cmp_ps_mask(mid, s, _CMP_LT_OQ);
    return _mm512_mask_add_epi32(_mm512_add_epi32(j, j), above, _mm512_add_epi32(j, j), one);
  }

  /// The codes of 16 levels, one byte each.
  LOFTQ_TARGET_AVX512 __m128i codes(__m512i level) const {
    return _mm512_cvtepi32_epi8(identity_ ? level : _mm512_i32gather_epi32(level, codes_, 4));
  }

  /// The table value of each level.
  LOFTQ_TARGET_AVX512 __m512 value(__m512i level) const {
    return _mm512_i32gather_ps(level, values_, 4);
  }

 private:
  /// Entry j % 64 of the 64-entry table held in four vectors.
  LOFTQ_TARGET_AVX512 static __m512 pick64(const __m512* table, __m512i j) {
    const __m512 low = _mm512_permutex2var_ps(table[0], j, table[1]);
    const __m512 high = _mm512_permutex2var_ps(table[2], j, table[3]);
    return _mm512_mask_blend_ps(_mm512_test_epi32_mask(j, _mm512_set1_epi32(32)), low, high);
  }

  __m512 first_;       // mid[127], the first step
  __m512 second_low_;  // mid[63] and mid[191], the second step
  __m512 second_high_;
  __m512 by_sixteen_[3];  // steps 32, 16 and 8, by level / 16
  __m512 by_eight_[2];    // step 4, by level / 8
  __m512 by_four_[4];     // step 2, by level / 4
  __m512 by_two_[8];      // step 1, by level / 2
  bool identity_ = true;  // every code equals its level
  std::int32_t codes_[256];
  float values_[256];
};

/// Int8 codes: round-half-even(s) of s = x * multiplier clamped to [-127, 127], NaN to 0; the
/// level is the int32 q, its code the low byte.
class Int8Levels {
 public:
  /// The block multiplier, int8_multiplier().
  static float multiplier(float absmax) { return int8_multiplier(absmax); }

  /// q of each lane.
  LOFTQ_TARGET_AVX512 __m512i level(__m512 s) const {
    const __m512 v = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(s, s, _CMP_ORD_Q), s);
    const __m512 clamped =
        _mm512_min_ps(_mm512_max_ps(v, _mm512_set1_ps(-127.0f)), _mm512_set1_ps(127.0f));
    return _mm512_cvtps_epi32(clamped);  // rounds half to even, as std::nearbyint does
  }

  /// The two's-complement bytes of 16 q.
  LOFTQ_TARGET_AVX512 __m128i codes(__m512i level) const { return _mm512_cvtepi32_epi8(level); }

  /// q as a float, int8_table[code].
  LOFTQ_TARGET_AVX512 __m512 value(__m512i level) const { return _mm512_cvtepi32_ps(level); }
};

/// Quantizes the group at element e of w (Residual: of w - low_rank) with the multiplier and
/// the dequantization factor of each lane: writes its codes and (Residual) its residual.
template <int Bits, bool Residual, class Levels>
LOFTQ_TARGET_AVX512 inline void quantize_group(const Levels& levels, const float* w,
                                               const float* low_rank, std::size_t e, __m512 mul,
                                               __m512 factor, std::uint8_t* packed,
                                               float* residual) {
  const __m512 x = _mm512_loadu_ps(w + e);
  const __m512 target = Residual ? _mm512_sub_ps(x, _mm512_loadu_ps(low_rank + e)) : x;
  const __m512i level = levels.level(_mm512_mul_ps(target, mul));
  avx2::store_codes<Bits>(levels.codes(level), packed + e * Bits / 8);
  if constexpr (Residual) {
    const __m512 dequantized = unfused(_mm512_mul_ps(levels.value(level), factor));
    _mm512_storeu_ps(residual + e, _mm512_sub_ps(x, dequantized));
  }
}

/// Quantizes w (Residual: w - low_rank) as scalar::quantize() (scalar::quantize_residual())
/// does, with the levels of `levels`; Bits is the code width.
template <int Bits, bool Residual, class Levels>
LOFTQ_TARGET_AVX512 void quantize_groups(const Levels& book_levels, const float* w,
                                         const float* low_rank, std::size_t n, std::size_t block,
                                         Codebook book, const LookupQuantizer& lookup,
                                         std::uint8_t* packed, float* scales, float* residual) {
  const Levels levels = book_levels;  // a local copy: stores through packed cannot change it
  BlockCursor cursor(n, block);
  std::size_t scaled = 0;  // blocks whose absmax is in scales
  std::size_t e = 0;
  for (std::size_t start = 0; start < n; start += span) {
    const std::size_t stop = std::min(n, start + span);
    for (; scaled * block < stop; ++scaled) {
      const std::size_t first = scaled * block;
      scales[scaled] =
          absmax_of(w + first, Residual ? low_rank + first : nullptr, std::min(block, n - first));
    }
    while (e + group <= stop) {
      cursor.seek(e);
      if (cursor.holds(e, group)) {  // a run of groups inside one block
        const float absmax = scales[cursor.index()];
        const __m512 mul = _mm512_set1_ps(Levels::multiplier(absmax));
        const __m512 factor = _mm512_set1_ps(dequantize_factor(book, absmax));
        const std::size_t end = std::min(stop, cursor.end());
        for (; e + group <= end; e += group) {
          avx2::prefetch_next_span<Residual>(w, low_rank, e, n);
          quantize_group<Bits, Residual>(levels, w, low_rank, e, mul, factor, packed, residual);
        }
      } else {  // a group across blocks: each lane takes its own block's numbers
        float lanes[group];
        cursor.fill(
            e, group, [scales](std::size_t b) { return Levels::multiplier(scales[b]); }, lanes);
        const __m512 mul = _mm512_loadu_ps(lanes);
        cursor.fill(
            e, group, [scales, book](std::size_t b) { return dequantize_factor(book, scales[b]); },
            lanes);
        quantize_group<Bits, Residual>(levels, w, low_rank, e, mul, _mm512_loadu_ps(lanes), packed,
                                       residual);
        e += group;
      }
    }
  }
  if (e < n) {
    scalar::quantize_tail(w, Residual ? low_rank : nullptr, e, n, block, book, lookup, scales,
                          packed, Residual ? residual : nullptr);
  }
}

/// quantize_groups() with the levels and code width of `book`.
template <bool Residual>
LOFTQ_TARGET_AVX512 void quantize_book(const float* w, const float* low_rank, std::size_t n,
                                       int block_size, Codebook book, const LookupQuantizer& lookup,
                                       std::uint8_t* packed, float* scales, float* residual) {
  const auto block = static_cast<std::size_t>(block_size);
  const float* table = table_of(book).values;
  if (is_linear(book)) {
    quantize_groups<8, Residual>(Int8Levels{}, w, low_rank, n, block, book, lookup, packed, scales,
                                 residual);
  } else if (lookup.levels == 4) {
    quantize_groups<2, Residual>(SmallLookup<4>(lookup, table), w, low_rank, n, block, book, lookup,
                                 packed, scales, residual);
  } else if (lookup.levels == 16) {
    quantize_groups<4, Residual>(SmallLookup<16>(lookup, table), w, low_rank, n, block, book,
                                 lookup, packed, scales, residual);
  } else {
    quantize_groups<8, Residual>(LargeLookup(lookup, table), w, low_rank, n, block, book, lookup,
                                 packed, scales, residual);
  }
}

/// Table values of 16 4-bit codes, 8 bytes, high nibble first.
class NibbleDecoder {
 public:
  /// Decodes to table[code], 16 entries.
  LOFTQ_TARGET_AVX512 explicit NibbleDecoder(const float* table) : table_(_mm512_loadu_ps(table)) {}

  /// The 16 values.
  LOFTQ_TARGET_AVX512 __m512 values(const std::uint8_t* packed) const {
    const __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(packed));
    const __m128i doubled = _mm_unpacklo_epi8(bytes, bytes);  // each byte twice
    // Lane 2i holds byte i >> 4, lane 2i + 1 byte i; the permute reads the low 4 bits.
    const __m512i shifts = _mm512_set4_epi32(0, 4, 0, 4);
    return _mm512_permutexvar_ps(_mm512_srlv_epi32(_mm512_cvtepu8_epi32(doubled), shifts), table_);
  }

 private:
  __m512 table_;
};

/// Table values of 16 2-bit codes, 4 bytes, highest bits first.
class CrumbDecoder {
 public:
  /// Decodes to table[code], 4 entries.
  LOFTQ_TARGET_AVX512 explicit CrumbDecoder(const float* table)
      : table_(_mm512_set4_ps(table[3], table[2], table[1], table[0])) {}

  /// The 16 values.
  LOFTQ_TARGET_AVX512 __m512 values(const std::uint8_t* packed) const {
    int word = 0;
    std::memcpy(&word, packed, 4);
    const __m128i bytes = _mm_cvtsi32_si128(word);
    const __m128i doubled = _mm_unpacklo_epi8(bytes, bytes);
    const __m128i quadrupled = _mm_unpacklo_epi16(doubled, doubled);  // each byte four times
    // The table repeats every 4 entries, so the bits above each code do not matter.
    const __m512i shifts = _mm512_set4_epi32(0, 2, 4, 6);
    return _mm512_permutexvar_ps(_mm512_srlv_epi32(_mm512_cvtepu8_epi32(quadrupled), shifts),
                                 table_);
  }

 private:
  __m512 table_;
};

/// Table values of 16 8-bit codes of a 256-entry lookup table, by a gather.
class ByteDecoder {
 public:
  /// Decodes to table[code], 256 entries.
  explicit ByteDecoder(const float* table) : table_(table) {}

  /// The 16 values.
  LOFTQ_TARGET_AVX512 __m512 values(const std::uint8_t* packed) const {
    const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(packed));
    return _mm512_i32gather_ps(_mm512_cvtepu8_epi32(bytes), table_, 4);
  }

 private:
  const float* table_;
};

/// Int8 values of 16 codes: the signed bytes as floats.
class Int8Decoder {
 public:
  /// The 16 values.
  LOFTQ_TARGET_AVX512 __m512 values(const std::uint8_t* packed) const {
    const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(packed));
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(bytes));
  }
};

/// Writes the 16 dequantized values of the group at element e: decoded values times factor.
/// Stream uses a non-temporal store, for out aligned to 64 bytes.
template <int Bits, bool Stream, class Decoder>
LOFTQ_TARGET_AVX512 inline void dequantize_group(const Decoder& decoder, const std::uint8_t* packed,
                                                 std::size_t e, __m512 factor, float* out) {
  const __m512 result = _mm512_mul_ps(decoder.values(packed + e * Bits / 8), factor);
  if constexpr (Stream) {
    _mm512_stream_ps(out + e, result);
  } else {
    _mm512_storeu_ps(out + e, result);
  }
}

/// Dequantizes as scalar::dequantize() does, with the values of `decoder`; Bits is the code
/// width. Stream writes out with non-temporal stores and needs out aligned to 64 bytes.
template <int Bits, bool Stream, class Decoder>
LOFTQ_TARGET_AVX512 void dequantize_groups(const Decoder& decoder, const std::uint8_t* packed,
                                           const float* scales, std::size_t n, std::size_t block,
                                           Codebook book, float* out) {
  BlockCursor cursor(n, block);
  std::size_t e = 0;
  while (e + group <= n) {
    cursor.seek(e);
    if (cursor.holds(e, group)) {  // a run of groups inside one block
      const __m512 factor = _mm512_set1_ps(dequantize_factor(book, scales[cursor.index()]));
      for (; e + group <= cursor.end(); e += group)
        dequantize_group<Bits, Stream>(decoder, packed, e, factor, out);
    } else {  // a group across blocks: each lane takes its own block's factor
      float lanes[group];
      cursor.fill(
          e, group, [scales, book](std::size_t b) { return dequantize_factor(book, scales[b]); },
          lanes);
      dequantize_group<Bits, Stream>(decoder, packed, e, _mm512_loadu_ps(lanes), out);
      e += group;
    }
  }
  if (e < n) scalar::dequantize_tail(packed, scales, e, n, block, book, out);
  if constexpr (Stream) _mm_sfence();
}

/// dequantize_groups() with the decoder and code width of `book`.
template <bool Stream>
LOFTQ_TARGET_AVX512 void dequantize_book(const std::uint8_t* packed, const float* scales,
                                         std::size_t n, int block_size, Codebook book, float* out) {
  const auto block = static_cast<std::size_t>(block_size);
  const CodebookTable table = table_of(book);
  if (is_linear(book)) {
    dequantize_groups<8, Stream>(Int8Decoder{}, packed, scales, n, block, book, out);
  } else if (table.size == 4) {
    dequantize_groups<2, Stream>(CrumbDecoder(table.values), packed, scales, n, block, book, out);
  } else if (table.size == 16) {
    dequantize_groups<4, Stream>(NibbleDecoder(table.values), packed, scales, n, block, book, out);
  } else {
    dequantize_groups<8, Stream>(ByteDecoder(table.values), packed, scales, n, block, book, out);
  }
}

/// scalar::quantize() with AVX-512.
LOFTQ_TARGET_AVX512 inline void quantize(const float* x, std::size_t n, int block_size,
                                         Codebook book, const LookupQuantizer& lookup,
                                         std::uint8_t* packed, float* scales) {
  quantize_book<false>(x, nullptr, n, block_size, book, lookup, packed, scales, nullptr);
}

/// scalar::dequantize() (the whole-array overload) with AVX-512.
LOFTQ_TARGET_AVX512 inline void dequantize(const std::uint8_t* packed, const float* scales,
                                           std::size_t n, int block_size, Codebook book,
                                           float* out) {
  dequantize_book<false>(packed, scales, n, block_size, book, out);
}

/// dequantize(), with non-temporal stores when out is aligned to 64 bytes: for outputs larger
/// than the caches.
LOFTQ_TARGET_AVX512 inline void dequantize_nontemporal(const std::uint8_t* packed,
                                                       const float* scales, std::size_t n,
                                                       int block_size, Codebook book, float* out) {
  if (reinterpret_cast<std::uintptr_t>(out) % 64 == 0) {
    dequantize_book<true>(packed, scales, n, block_size, book, out);
  } else {
    dequantize_book<false>(packed, scales, n, block_size, book, out);
  }
}

/// scalar::quantize_residual() with AVX-512.
LOFTQ_TARGET_AVX512 inline void quantize_residual(const float* w, const float* low_rank,
                                                  std::size_t n, int block_size, Codebook book,
                                                  const LookupQuantizer& lookup,
                                                  std::uint8_t* packed, float* scales,
                                                  float* residual) {
  quantize_book<true>(w, low_rank, n, block_size, book, lookup, packed, scales, residual);
}

}  // namespace loftq::detail::kernels::avx512

#if !defined(__clang__)
#pragma GCC diagnostic pop
#endif

#endif  // LOFTQ_X86_KERNELS
