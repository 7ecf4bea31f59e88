/// @file kernels/avx2.hpp
/// AVX2 kernels of blockwise quantization, equal bit for bit to kernels/scalar.hpp. They are
/// compiled for AVX2 and FMA whatever the build flags, and run only on CPUs that have them
/// (see isa.hpp).
///
/// The kernels walk an array in groups of 16 elements from element 0, so every group starts a
/// byte of the packed codes for 2-, 4- and 8-bit codes; a group inside one block uses that
/// block's multiplier in every lane, one that crosses blocks gets each lane's own. The last
/// elements that do not fill a group go through scalar::quantize_tail() or
/// scalar::dequantize_tail().
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
#include "scalar.hpp"

/// Compiles a function for AVX2 and FMA.
#define LOFTQ_TARGET_AVX2 __attribute__((target("avx2,fma")))

namespace loftq::detail::kernels::avx2 {

/// Elements per group, the kernels' unit of work: 4, 8 or 16 whole bytes of codes.
inline constexpr std::size_t group = 16;

/// Elements per pass of quantize(): the maxima of the blocks of a pass are taken first, then
/// its codes, so the second read of the input comes from the cache.
inline constexpr std::size_t span = 2048;

/// Largest lane of v; no lane may be NaN.
LOFTQ_TARGET_AVX2 inline float reduce_max(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ps(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

/// max(m, |x|) lane by lane; a NaN x leaves m, as std::max(m, std::fabs(x)) does.
LOFTQ_TARGET_AVX2 inline __m256 max_magnitude(__m256 m, __m256 x) {
  const __m256 magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  return _mm256_max_ps(_mm256_and_ps(x, magnitude), m);
}

/// w[i .. i + 8) - v[i .. i + 8), or w[i .. i + 8) when v is null.
LOFTQ_TARGET_AVX2 inline __m256 load_target(const float* w, const float* v, std::size_t i) {
  const __m256 x = _mm256_loadu_ps(w + i);
  return v != nullptr ? _mm256_sub_ps(x, _mm256_loadu_ps(v + i)) : x;
}

/// Largest |w[i] - v[i]| over n values, or |w[i]| when v is null: as scalar::absmax() and
/// scalar::absmax_of_difference() (the maximum is exact, so the order does not matter).
LOFTQ_TARGET_AVX2 inline float absmax_of(const float* w, const float* v, std::size_t n) {
  __m256 m0 = _mm256_setzero_ps(), m1 = m0, m2 = m0, m3 = m0;
  std::size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    m0 = max_magnitude(m0, load_target(w, v, i));
    m1 = max_magnitude(m1, load_target(w, v, i + 8));
    m2 = max_magnitude(m2, load_target(w, v, i + 16));
    m3 = max_magnitude(m3, load_target(w, v, i + 24));
  }
  for (; i + 8 <= n; i += 8) m0 = max_magnitude(m0, load_target(w, v, i));
  float m = reduce_max(_mm256_max_ps(_mm256_max_ps(m0, m1), _mm256_max_ps(m2, m3)));
  for (; i < n; ++i) m = std::max(m, std::fabs(v != nullptr ? w[i] - v[i] : w[i]));
  return m;
}

/// Lanes of a 16-entry table (lo holds entries 0-7, hi 8-15) picked by the low 4 bits of idx.
LOFTQ_TARGET_AVX2 inline __m256 lookup16(__m256 lo, __m256 hi, __m256i idx) {
  const __m256 from_lo = _mm256_permutevar8x32_ps(lo, idx);
  const __m256 from_hi = _mm256_permutevar8x32_ps(hi, idx);
  return _mm256_blendv_ps(from_lo, from_hi, _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));
}

/// x, which the compiler may not fuse with a following addition or subtraction into an FMA.
LOFTQ_TARGET_AVX2 inline __m256 unfused(__m256 x) {
  __asm__("" : "+x"(x));
  return x;
}

/// 16 int32 lanes in [0, 255] (lo: lanes 0-7, hi: 8-15) as 16 bytes, in order.
LOFTQ_TARGET_AVX2 inline __m128i narrow(__m256i lo, __m256i hi) {
  const __m128i words_lo =
      _mm_packus_epi32(_mm256_castsi256_si128(lo), _mm256_extracti128_si256(lo, 1));
  const __m128i words_hi =
      _mm_packus_epi32(_mm256_castsi256_si128(hi), _mm256_extracti128_si256(hi, 1));
  return _mm_packus_epi16(words_lo, words_hi);
}

/// Packs 16 codes of Bits bits (one per byte of `codes`) into Bits * 2 bytes at out, the first
/// code in the highest bits.
template <int Bits>
LOFTQ_TARGET_AVX2 inline void store_codes(__m128i codes, std::uint8_t* out) {
  if constexpr (Bits == 8) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out), codes);
  } else if constexpr (Bits == 4) {
    const __m128i pairs = _mm_maddubs_epi16(codes, _mm_set1_epi16(0x0110));  // c0 * 16 + c1
    _mm_storel_epi64(reinterpret_cast<__m128i*>(out), _mm_packus_epi16(pairs, pairs));
  } else {
    const __m128i pairs = _mm_maddubs_epi16(codes, _mm_set1_epi16(0x0104));   // c0 * 4 + c1
    const __m128i quads = _mm_madd_epi16(pairs, _mm_set1_epi32(0x00010010));  // p0 * 16 + p1
    const __m128i words = _mm_packus_epi32(quads, quads);
    const int bytes = _mm_cvtsi128_si32(_mm_packus_epi16(words, words));
    std::memcpy(out, &bytes, 4);
  }
}

/// Codes of a 4- or 16-level lookup codebook: the level is the number of midpoints below s,
/// found by a branch-free binary search; the code is that level's code. The first step compares
/// with one midpoint, the second picks one of two by a blend, the last two (16 levels) read a
/// table of 8 midpoints at half the level found so far. Midpoints lie in (-1, 1), so the count
/// below s is the same as below clamp(s, -1, 1) and the search skips the clamp; NaN compares
/// false and counts 0.
template <int Levels>
class SmallLookup {
  static_assert(Levels == 4 || Levels == 16, "SmallLookup: 4 or 16 levels");

 public:
  /// The search tables of `lookup`, whose values are table[code].
  LOFTQ_TARGET_AVX2 SmallLookup(const LookupQuantizer& lookup, const float* table) {
    float mid[16];
    std::fill(mid, mid + 16, std::numeric_limits<float>::infinity());
    std::copy(lookup.midpoints.begin(), lookup.midpoints.begin() + (Levels - 1), mid);
    const int half = Levels / 2;
    mid_top_ = _mm256_set1_ps(mid[half - 1]);
    mid_low_ = _mm256_set1_ps(mid[half / 2 - 1]);
    mid_high_ = _mm256_set1_ps(mid[half + half / 2 - 1]);
    alignas(32) float odd[8];
    alignas(32) float even[8];
    for (int j = 0; j < 8; ++j) {
      odd[j] = mid[2 * j + 1];
      even[j] = mid[2 * j];
    }
    odd_ = _mm256_load_ps(odd);
    even_ = _mm256_load_ps(even);
    alignas(16) std::uint8_t code[16] = {};
    alignas(32) float value[16] = {};
    for (int i = 0; i < Levels; ++i) {
      code[i] = lookup.codes[static_cast<std::size_t>(i)];
      value[i] = table[code[i]];
    }
    codes_ = _mm_load_si128(reinterpret_cast<const __m128i*>(code));
    values_lo_ = _mm256_load_ps(value);
    values_hi_ = _mm256_load_ps(value + 8);
  }

  /// The block multiplier, lookup_multiplier().
  static float multiplier(float absmax) { return lookup_multiplier(absmax); }

  /// Sorted level of each lane of s = x * multiplier: the number of midpoints below s.
  LOFTQ_TARGET_AVX2 __m256i level(__m256 s) const {
    const __m256i above_top = _mm256_castps_si256(_mm256_cmp_ps(mid_top_, s, _CMP_LT_OQ));
    const __m256 mid = _mm256_blendv_ps(mid_low_, mid_high_, _mm256_castsi256_ps(above_top));
    const __m256i above = _mm256_castps_si256(_mm256_cmp_ps(mid, s, _CMP_LT_OQ));
    if constexpr (Levels == 4) {
      return _mm256_sub_epi32(_mm256_and_si256(above_top, _mm256_set1_epi32(2)), above);
    } else {
      // half_level = level / 2 so far: 4 and 2 for the first two steps, 1 for the third.
      __m256i half_level = _mm256_or_si256(_mm256_and_si256(above_top, _mm256_set1_epi32(4)),
                                           _mm256_and_si256(above, _mm256_set1_epi32(2)));
      half_level = _mm256_sub_epi32(
          half_level, _mm256_castps_si256(_mm256_cmp_ps(_mm256_permutevar8x32_ps(odd_, half_level),
                                                        s, _CMP_LT_OQ)));
      const __m256i last = _mm256_castps_si256(
          _mm256_cmp_ps(_mm256_permutevar8x32_ps(even_, half_level), s, _CMP_LT_OQ));
      return _mm256_sub_epi32(_mm256_add_epi32(half_level, half_level), last);
    }
  }

  /// The codes of 16 levels (lo: lanes 0-7, hi: 8-15), one byte each.
  LOFTQ_TARGET_AVX2 __m128i codes(__m256i lo, __m256i hi) const {
    return _mm_shuffle_epi8(codes_, narrow(lo, hi));
  }

  /// The table value of each level.
  LOFTQ_TARGET_AVX2 __m256 value(__m256i level) const {
    return Levels == 16 ? lookup16(values_lo_, values_hi_, level)
                        : _mm256_permutevar8x32_ps(values_lo_, level);
  }

 private:
  __m256 mid_top_;  // midpoint of the first step
  __m256 mid_low_;  // midpoints of the second step
  __m256 mid_high_;
  __m256 odd_;        // odd_[j] = mid[2j + 1], the third step at level 2j
  __m256 even_;       // even_[j] = mid[2j], the fourth step at level 2j
  __m128i codes_;     // code of each level
  __m256 values_lo_;  // table value of levels 0-7
  __m256 values_hi_;  // and 8-15
};

/// Codes of a 256-level lookup codebook (Uniform<8>): the same binary search as SmallLookup,
/// with gathers from the padded midpoints.
class LargeLookup {
 public:
  /// The search tables of `lookup`, whose values are table[code].
  LOFTQ_TARGET_AVX2 LargeLookup(const LookupQuantizer& lookup, const float* table) {
    std::copy(lookup.midpoints.begin(), lookup.midpoints.end(), mid_);
    mid_[255] = std::numeric_limits<float>::infinity();
    for (std::size_t i = 0; i < 256; ++i) {
      codes_[i] = lookup.codes[i];
      values_[i] = table[lookup.codes[i]];
    }
  }

  /// The block multiplier, lookup_multiplier().
  static float multiplier(float absmax) { return lookup_multiplier(absmax); }

  /// Sorted level of each lane of s = x * multiplier: the number of midpoints below s.
  LOFTQ_TARGET_AVX2 __m256i level(__m256 s) const {
    const __m256i below =
        _mm256_castps_si256(_mm256_cmp_ps(_mm256_set1_ps(mid_[127]), s, _CMP_LT_OQ));
    __m256i idx = _mm256_and_si256(below, _mm256_set1_epi32(128));
    for (int step = 64; step >= 1; step /= 2) {
      const __m256 mid =
          _mm256_i32gather_ps(mid_, _mm256_add_epi32(idx, _mm256_set1_epi32(step - 1)), 4);
      const __m256i step_below = _mm256_castps_si256(_mm256_cmp_ps(mid, s, _CMP_LT_OQ));
      idx = _mm256_add_epi32(idx, _mm256_and_si256(step_below, _mm256_set1_epi32(step)));
    }
    return idx;
  }

  /// The codes of 16 levels (lo: lanes 0-7, hi: 8-15), one byte each.
  LOFTQ_TARGET_AVX2 __m128i codes(__m256i lo, __m256i hi) const {
    return narrow(_mm256_i32gather_epi32(codes_, lo, 4), _mm256_i32gather_epi32(codes_, hi, 4));
  }

  /// The table value of each level.
  LOFTQ_TARGET_AVX2 __m256 value(__m256i level) const {
    return _mm256_i32gather_ps(values_, level, 4);
  }

 private:
  float mid_[256];
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
  LOFTQ_TARGET_AVX2 __m256i level(__m256 s) const {
    const __m256 v = _mm256_and_ps(s, _mm256_cmp_ps(s, s, _CMP_ORD_Q));
    const __m256 clamped =
        _mm256_min_ps(_mm256_max_ps(v, _mm256_set1_ps(-127.0f)), _mm256_set1_ps(127.0f));
    return _mm256_cvtps_epi32(clamped);  // rounds half to even, as std::nearbyint does
  }

  /// The two's-complement bytes of 16 q (lo: lanes 0-7, hi: 8-15).
  LOFTQ_TARGET_AVX2 __m128i codes(__m256i lo, __m256i hi) const {
    const __m256i low_byte = _mm256_set1_epi32(0xFF);
    return narrow(_mm256_and_si256(lo, low_byte), _mm256_and_si256(hi, low_byte));
  }

  /// q as a float, int8_table[code].
  LOFTQ_TARGET_AVX2 __m256 value(__m256i level) const { return _mm256_cvtepi32_ps(level); }
};

/// Prefetches w (Residual: and low_rank) one span past element e, so that the next pass's
/// input arrives while this pass computes.
template <bool Residual>
inline void prefetch_next_span(const float* w, const float* low_rank, std::size_t e,
                               std::size_t n) {
  if (e + span >= n) return;
  _mm_prefetch(reinterpret_cast<const char*>(w + e + span), _MM_HINT_T0);
  if constexpr (Residual) {
    _mm_prefetch(reinterpret_cast<const char*>(low_rank + e + span), _MM_HINT_T0);
  }
}

/// Quantizes the group at element e of w (Residual: of w - low_rank) with the multiplier and
/// the dequantization factor of each lane (lo: lanes 0-7, hi: 8-15): writes its codes and
/// (Residual) its residual.
template <int Bits, bool Residual, class Levels>
LOFTQ_TARGET_AVX2 inline void quantize_group(const Levels& levels, const float* w,
                                             const float* low_rank, std::size_t e,
                                             const __m256 (&mul)[2], const __m256 (&factor)[2],
                                             std::uint8_t* packed, float* residual) {
  __m256 x[2];
  __m256i level[2];
  for (int h = 0; h < 2; ++h) {
    const std::size_t at = e + 8 * static_cast<std::size_t>(h);
    x[h] = _mm256_loadu_ps(w + at);
    const __m256 target = Residual ? _mm256_sub_ps(x[h], _mm256_loadu_ps(low_rank + at)) : x[h];
    level[h] = levels.level(_mm256_mul_ps(target, mul[h]));
  }
  store_codes<Bits>(levels.codes(level[0], level[1]), packed + e * Bits / 8);
  if constexpr (Residual) {
    for (int h = 0; h < 2; ++h) {
      const __m256 dequantized = unfused(_mm256_mul_ps(levels.value(level[h]), factor[h]));
      _mm256_storeu_ps(residual + e + 8 * static_cast<std::size_t>(h),
                       _mm256_sub_ps(x[h], dequantized));
    }
  }
}

/// Quantizes w (Residual: w - low_rank) as scalar::quantize() (scalar::quantize_residual())
/// does, with the levels of `levels`; Bits is the code width.
template <int Bits, bool Residual, class Levels>
LOFTQ_TARGET_AVX2 void quantize_groups(const Levels& book_levels, const float* w,
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
        const __m256 mul_block = _mm256_set1_ps(Levels::multiplier(absmax));
        const __m256 factor_block = _mm256_set1_ps(dequantize_factor(book, absmax));
        const __m256 mul[2] = {mul_block, mul_block};
        const __m256 factor[2] = {factor_block, factor_block};
        const std::size_t end = std::min(stop, cursor.end());
        for (; e + group <= end; e += group) {
          prefetch_next_span<Residual>(w, low_rank, e, n);
          quantize_group<Bits, Residual>(levels, w, low_rank, e, mul, factor, packed, residual);
        }
      } else {  // a group across blocks: each lane takes its own block's numbers
        alignas(32) float lanes[group];
        cursor.fill(
            e, group, [scales](std::size_t b) { return Levels::multiplier(scales[b]); }, lanes);
        const __m256 mul[2] = {_mm256_load_ps(lanes), _mm256_load_ps(lanes + 8)};
        cursor.fill(
            e, group, [scales, book](std::size_t b) { return dequantize_factor(book, scales[b]); },
            lanes);
        const __m256 factor[2] = {_mm256_load_ps(lanes), _mm256_load_ps(lanes + 8)};
        quantize_group<Bits, Residual>(levels, w, low_rank, e, mul, factor, packed, residual);
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
LOFTQ_TARGET_AVX2 void quantize_book(const float* w, const float* low_rank, std::size_t n,
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
  LOFTQ_TARGET_AVX2 explicit NibbleDecoder(const float* table)
      : lo_(_mm256_loadu_ps(table)), hi_(_mm256_loadu_ps(table + 8)) {}

  /// out[0] gets the values of codes 0-7, out[1] of codes 8-15.
  LOFTQ_TARGET_AVX2 void values(const std::uint8_t* packed, __m256 (&out)[2]) const {
    const __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(packed));
    const __m128i doubled = _mm_unpacklo_epi8(bytes, bytes);  // each byte twice
    const __m256i shifts = _mm256_setr_epi32(4, 0, 4, 0, 4, 0, 4, 0);
    // Lane 2i holds byte i >> 4, lane 2i + 1 byte i; lookup16() reads the low 4 bits.
    const __m256i first = _mm256_srlv_epi32(_mm256_cvtepu8_epi32(doubled), shifts);
    const __m256i second =
        _mm256_srlv_epi32(_mm256_cvtepu8_epi32(_mm_unpackhi_epi64(doubled, doubled)), shifts);
    out[0] = lookup16(lo_, hi_, first);
    out[1] = lookup16(lo_, hi_, second);
  }

 private:
  __m256 lo_;
  __m256 hi_;
};

/// Table values of 16 2-bit codes, 4 bytes, highest bits first.
class CrumbDecoder {
 public:
  /// Decodes to table[code], 4 entries.
  LOFTQ_TARGET_AVX2 explicit CrumbDecoder(const float* table)
      : table_(_mm256_setr_ps(table[0], table[1], table[2], table[3], table[0], table[1], table[2],
                              table[3])) {}

  /// out[0] gets the values of codes 0-7, out[1] of codes 8-15.
  LOFTQ_TARGET_AVX2 void values(const std::uint8_t* packed, __m256 (&out)[2]) const {
    int word = 0;
    std::memcpy(&word, packed, 4);
    const __m128i bytes = _mm_cvtsi32_si128(word);
    const __m128i doubled = _mm_unpacklo_epi8(bytes, bytes);
    const __m128i quadrupled = _mm_unpacklo_epi16(doubled, doubled);  // each byte four times
    const __m256i shifts = _mm256_setr_epi32(6, 4, 2, 0, 6, 4, 2, 0);
    // The table repeats every 4 entries, so the bits above each code do not matter.
    const __m256i first = _mm256_srlv_epi32(_mm256_cvtepu8_epi32(quadrupled), shifts);
    const __m256i second =
        _mm256_srlv_epi32(_mm256_cvtepu8_epi32(_mm_unpackhi_epi64(quadrupled, quadrupled)), shifts);
    out[0] = _mm256_permutevar8x32_ps(table_, first);
    out[1] = _mm256_permutevar8x32_ps(table_, second);
  }

 private:
  __m256 table_;
};

/// Table values of 16 8-bit codes of a 256-entry lookup table, by gathers.
class ByteDecoder {
 public:
  /// Decodes to table[code], 256 entries.
  explicit ByteDecoder(const float* table) : table_(table) {}

  /// out[0] gets the values of codes 0-7, out[1] of codes 8-15.
  LOFTQ_TARGET_AVX2 void values(const std::uint8_t* packed, __m256 (&out)[2]) const {
    const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(packed));
    out[0] = _mm256_i32gather_ps(table_, _mm256_cvtepu8_epi32(bytes), 4);
    out[1] = _mm256_i32gather_ps(table_, _mm256_cvtepu8_epi32(_mm_unpackhi_epi64(bytes, bytes)), 4);
  }

 private:
  const float* table_;
};

/// Int8 values of 16 codes: the signed bytes as floats.
class Int8Decoder {
 public:
  /// out[0] gets the values of codes 0-7, out[1] of codes 8-15.
  LOFTQ_TARGET_AVX2 void values(const std::uint8_t* packed, __m256 (&out)[2]) const {
    const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(packed));
    out[0] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes));
    out[1] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_unpackhi_epi64(bytes, bytes)));
  }
};

/// Writes the 16 dequantized values of the group at element e: decoded values times factor
/// (lo: lanes 0-7, hi: 8-15). Stream uses non-temporal stores, for out aligned to 32 bytes.
template <int Bits, bool Stream, class Decoder>
LOFTQ_TARGET_AVX2 inline void dequantize_group(const Decoder& decoder, const std::uint8_t* packed,
                                               std::size_t e, __m256 factor_lo, __m256 factor_hi,
                                               float* out) {
  __m256 value[2];
  decoder.values(packed + e * Bits / 8, value);
  const __m256 lo = _mm256_mul_ps(value[0], factor_lo);
  const __m256 hi = _mm256_mul_ps(value[1], factor_hi);
  if constexpr (Stream) {
    _mm256_stream_ps(out + e, lo);
    _mm256_stream_ps(out + e + 8, hi);
  } else {
    _mm256_storeu_ps(out + e, lo);
    _mm256_storeu_ps(out + e + 8, hi);
  }
}

/// Dequantizes as scalar::dequantize() does, with the values of `decoder`; Bits is the code
/// width. Stream writes out with non-temporal stores and needs out aligned to 32 bytes.
template <int Bits, bool Stream, class Decoder>
LOFTQ_TARGET_AVX2 void dequantize_groups(const Decoder& decoder, const std::uint8_t* packed,
                                         const float* scales, std::size_t n, std::size_t block,
                                         Codebook book, float* out) {
  BlockCursor cursor(n, block);
  std::size_t e = 0;
  while (e + group <= n) {
    cursor.seek(e);
    if (cursor.holds(e, group)) {  // a run of groups inside one block
      const __m256 factor = _mm256_set1_ps(dequantize_factor(book, scales[cursor.index()]));
      for (; e + group <= cursor.end(); e += group) {
        dequantize_group<Bits, Stream>(decoder, packed, e, factor, factor, out);
      }
    } else {  // a group across blocks: each lane takes its own block's factor
      alignas(32) float lanes[group];
      cursor.fill(
          e, group, [scales, book](std::size_t b) { return dequantize_factor(book, scales[b]); },
          lanes);
      dequantize_group<Bits, Stream>(decoder, packed, e, _mm256_load_ps(lanes),
                                     _mm256_load_ps(lanes + 8), out);
      e += group;
    }
  }
  if (e < n) scalar::dequantize_tail(packed, scales, e, n, block, book, out);
  if constexpr (Stream) _mm_sfence();
}

/// dequantize_groups() with the decoder and code width of `book`.
template <bool Stream>
LOFTQ_TARGET_AVX2 void dequantize_book(const std::uint8_t* packed, const float* scales,
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

/// scalar::quantize() with AVX2.
LOFTQ_TARGET_AVX2 inline void quantize(const float* x, std::size_t n, int block_size, Codebook book,
                                       const LookupQuantizer& lookup, std::uint8_t* packed,
                                       float* scales) {
  quantize_book<false>(x, nullptr, n, block_size, book, lookup, packed, scales, nullptr);
}

/// scalar::dequantize() (the whole-array overload) with AVX2.
LOFTQ_TARGET_AVX2 inline void dequantize(const std::uint8_t* packed, const float* scales,
                                         std::size_t n, int block_size, Codebook book, float* out) {
  dequantize_book<false>(packed, scales, n, block_size, book, out);
}

/// dequantize(), with non-temporal stores when out is aligned to 32 bytes: for outputs larger
/// than the caches.
LOFTQ_TARGET_AVX2 inline void dequantize_nontemporal(const std::uint8_t* packed,
                                                     const float* scales, std::size_t n,
                                                     int block_size, Codebook book, float* out) {
  if (reinterpret_cast<std::uintptr_t>(out) % 32 == 0) {
    dequantize_book<true>(packed, scales, n, block_size, book, out);
  } else {
    dequantize_book<false>(packed, scales, n, block_size, book, out);
  }
}

/// scalar::quantize_residual() with AVX2.
LOFTQ_TARGET_AVX2 inline void quantize_residual(const float* w, const float* low_rank,
                                                std::size_t n, int block_size, Codebook book,
                                                const LookupQuantizer& lookup, std::uint8_t* packed,
                                                float* scales, float* residual) {
  quantize_book<true>(w, low_rank, n, block_size, book, lookup, packed, scales, residual);
}

}  // namespace loftq::detail::kernels::avx2

#endif  // LOFTQ_X86_KERNELS
