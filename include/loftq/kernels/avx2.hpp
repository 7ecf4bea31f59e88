/// @file kernels/avx2.hpp
/// AVX2 kernels of blockwise quantization, equal bit for bit to kernels/scalar.hpp: the vector
/// operations of kernels/quantize-inl.hpp on 8-lane vectors (two per group of 16), and that file
/// instantiated with them; the sums of squares of kernels/square_sum-inl.hpp and the Gram matrices
/// of kernels/gram-inl.hpp on 4-lane vectors of doubles; and the product kernels of
/// kernels/product-inl.hpp, equal bit for bit to the portable ones of kernels/products.hpp. They
/// are compiled for AVX2 and FMA whatever the build flags, and run only on CPUs that have them (see
/// isa.hpp).
#pragma once

#include "../detail/cpu.hpp"

#if LOFTQ_X86_KERNELS

#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "../codebook.hpp"
#include "scalar.hpp"

/// Compiles a function for AVX2 and FMA.
#define LOFTQ_TARGET_AVX2 __attribute__((target("avx2,fma")))

namespace loftq::detail::kernels::avx2 {

/// Float lanes of a vector.
using Vec = __m256;

/// Int32 lanes of a vector.
using VecI = __m256i;

#define LOFTQ_TARGET LOFTQ_TARGET_AVX2
#define LOFTQ_MM(name) _mm256_##name
#include "vector_ops-inl.hpp"

/// The first `count` lanes at p (count < lanes); the others are 0 and read no memory.
LOFTQ_TARGET_AVX2 inline Vec load_first(const float* p, std::size_t count) {
  const VecI index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const VecI mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(count)), index);
  return _mm256_maskload_ps(p, mask);
}

/// |x| lane by lane.
LOFTQ_TARGET_AVX2 inline Vec abs_of(Vec x) {
  return _mm256_and_ps(x, _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF)));
}

/// Largest lane of v; no lane may be NaN.
LOFTQ_TARGET_AVX2 inline float reduce_max(Vec v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ps(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

/// x, which the compiler may not fuse with a following addition or subtraction into an FMA.
LOFTQ_TARGET_AVX2 inline Vec unfused(Vec x) {
  __asm__("" : "+x"(x));
  return x;
}

/// x with its NaN lanes set to 0.
LOFTQ_TARGET_AVX2 inline Vec zero_nan(Vec x) {
  return _mm256_and_ps(x, _mm256_cmp_ps(x, x, _CMP_ORD_Q));
}

/// The int32 lanes of v as 8 int16 words, saturated to int16 (Signed) or uint16.
template <bool Signed>
LOFTQ_TARGET_AVX2 inline __m128i pack_words(VecI v) {
  const __m128i lo = _mm256_castsi256_si128(v);
  const __m128i hi = _mm256_extracti128_si256(v, 1);
  return Signed ? _mm_packs_epi32(lo, hi) : _mm_packus_epi32(lo, hi);
}

/// A group of int32 lanes in [0, 255] as 16 bytes, in order.
LOFTQ_TARGET_AVX2 inline __m128i narrow_unsigned(const VecI (&v)[vectors]) {
  return _mm_packus_epi16(pack_words<false>(v[0]), pack_words<false>(v[1]));
}

/// A group of int32 lanes in [-128, 127] as 16 two's-complement bytes, in order.
LOFTQ_TARGET_AVX2 inline __m128i narrow_signed(const VecI (&v)[vectors]) {
  return _mm_packs_epi16(pack_words<true>(v[0]), pack_words<true>(v[1]));
}

/// table[index] lane by lane.
LOFTQ_TARGET_AVX2 inline Vec gather(const float* table, VecI index) {
  return _mm256_i32gather_ps(table, index, 4);
}

/// table[index] lane by lane.
LOFTQ_TARGET_AVX2 inline VecI gather_codes(const std::int32_t* table, VecI index) {
  return _mm256_i32gather_epi32(reinterpret_cast<const int*>(table), index, 4);
}

/// a, b, c, d, a, b, c, d from the lowest lane.
LOFTQ_TARGET_AVX2 inline Vec repeat4(float a, float b, float c, float d) {
  return _mm256_setr_ps(a, b, c, d, a, b, c, d);
}

/// a, b, c, d, a, b, c, d from the lowest lane.
LOFTQ_TARGET_AVX2 inline VecI repeat4i(int a, int b, int c, int d) {
  return _mm256_setr_epi32(a, b, c, d, a, b, c, d);
}

/// Lane index % lanes of table, lane by lane.
LOFTQ_TARGET_AVX2 inline Vec permute(Vec table, VecI index) {
  return _mm256_permutevar8x32_ps(table, index);
}

/// Entry index % 16 of a 16-entry table (entries 0-7 in table[0], 8-15 in table[1]).
LOFTQ_TARGET_AVX2 inline Vec lookup16(const Vec (&table)[vectors], VecI index) {
  const Vec from_lo = _mm256_permutevar8x32_ps(table[0], index);
  const Vec from_hi = _mm256_permutevar8x32_ps(table[1], index);
  return _mm256_blendv_ps(from_lo, from_hi, _mm256_castsi256_ps(_mm256_slli_epi32(index, 28)));
}

/// The sorted level of each lane of s among 4 or 16 levels, the number of midpoints below s, by
/// a branch-free binary search: the first step compares with one midpoint, the second picks one
/// of two by a blend, the last two (16 levels) read a table of 8 midpoints at half the level
/// found so far. NaN compares false and counts 0.
template <int Levels>
class MidpointSearch {
 public:
  /// mid: the sorted midpoints, padded with +inf.
  LOFTQ_TARGET_AVX2 explicit MidpointSearch(const std::array<float, 16>& mid) {
    constexpr std::size_t half = Levels / 2;
    alignas(32) float odd[8];
    alignas(32) float even[8];
    for (std::size_t j = 0; j < 8; ++j) {
      odd[j] = mid[2 * j + 1];
      even[j] = mid[2 * j];
    }
    top_ = set1(mid[half - 1]);
    low_ = set1(mid[half / 2 - 1]);
    high_ = set1(mid[half + half / 2 - 1]);
    odd_ = _mm256_load_ps(odd);
    even_ = _mm256_load_ps(even);
  }

  /// The number of midpoints below each lane of s.
  LOFTQ_TARGET_AVX2 VecI level(Vec s) const {
    const VecI above_top = _mm256_castps_si256(_mm256_cmp_ps(top_, s, _CMP_LT_OQ));
    const Vec mid = _mm256_blendv_ps(low_, high_, _mm256_castsi256_ps(above_top));
    const VecI above = _mm256_castps_si256(_mm256_cmp_ps(mid, s, _CMP_LT_OQ));
    if constexpr (Levels == 4) {
      return _mm256_sub_epi32(_mm256_and_si256(above_top, _mm256_set1_epi32(2)), above);
    } else {
      // half_level = level / 2 so far: 4 and 2 for the first two steps, 1 for the third.
      VecI half_level = _mm256_or_si256(_mm256_and_si256(above_top, _mm256_set1_epi32(4)),
                                        _mm256_and_si256(above, _mm256_set1_epi32(2)));
      half_level = _mm256_sub_epi32(
          half_level, _mm256_castps_si256(_mm256_cmp_ps(_mm256_permutevar8x32_ps(odd_, half_level),
                                                        s, _CMP_LT_OQ)));
      const VecI last = _mm256_castps_si256(
          _mm256_cmp_ps(_mm256_permutevar8x32_ps(even_, half_level), s, _CMP_LT_OQ));
      return _mm256_sub_epi32(_mm256_add_epi32(half_level, half_level), last);
    }
  }

 private:
  Vec top_;  // midpoint of the first step
  Vec low_;  // midpoints of the second step
  Vec high_;
  Vec odd_;   // odd_[j] = mid[2j + 1], the third step at level 2j
  Vec even_;  // even_[j] = mid[2j], the fourth step at level 2j
};

/// The sorted level of each lane of s among 256 levels (Uniform<8>): the same binary search as
/// MidpointSearch, with gathers from the padded midpoints.
class ByteSearch {
 public:
  /// mid: the 255 sorted midpoints, padded with +inf.
  explicit ByteSearch(const std::array<float, 256>& mid) : mid_(mid) {}

  /// The number of midpoints below each lane of s.
  LOFTQ_TARGET_AVX2 VecI level(Vec s) const {
    const VecI below = _mm256_castps_si256(_mm256_cmp_ps(set1(mid_[127]), s, _CMP_LT_OQ));
    VecI idx = _mm256_and_si256(below, _mm256_set1_epi32(128));
    for (int step = 64; step >= 1; step /= 2) {
      const Vec mid = gather(mid_.data(), _mm256_add_epi32(idx, _mm256_set1_epi32(step - 1)));
      const VecI step_below = _mm256_castps_si256(_mm256_cmp_ps(mid, s, _CMP_LT_OQ));
      idx = _mm256_add_epi32(idx, _mm256_and_si256(step_below, _mm256_set1_epi32(step)));
    }
    return idx;
  }

 private:
  std::array<float, 256> mid_;
};

#include "quantize-inl.hpp"

/// The 8 x 8 transpose of src into registers: out[i] lane j = src[j * lds + i].
LOFTQ_TARGET_AVX2 __attribute__((always_inline)) inline void transpose8_into(const float* src,
                                                                             std::size_t lds,
                                                                             __m256* out) {
  __m256 r[8], t[8];
  for (std::size_t j = 0; j < 8; ++j) r[j] = _mm256_loadu_ps(src + j * lds);
  for (std::size_t j = 0; j < 8; j += 2) {
    t[j] = _mm256_unpacklo_ps(r[j], r[j + 1]);
    t[j + 1] = _mm256_unpackhi_ps(r[j], r[j + 1]);
  }
  for (std::size_t j = 0; j < 8; j += 4) {
    for (std::size_t h = 0; h < 2; ++h) {
      const __m256 a = t[j + h], b = t[j + h + 2];
      r[j + 2 * h] = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(1, 0, 1, 0));
      r[j + 2 * h + 1] = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 2, 3, 2));
    }
  }
  for (std::size_t i = 0; i < 4; ++i) {
    out[i] = _mm256_permute2f128_ps(r[i], r[i + 4], 0x20);
    out[i + 4] = _mm256_permute2f128_ps(r[i], r[i + 4], 0x31);
  }
}

/// dst[i * ldd + j] = src[j * lds + i] for i, j < 8.
/// Always inlined, also into the AVX-512 kernels, which use it as it is.
LOFTQ_TARGET_AVX2 __attribute__((always_inline)) inline void transpose8(const float* src,
                                                                        std::size_t lds, float* dst,
                                                                        std::size_t ldd) {
  __m256 rows[8];
  transpose8_into(src, lds, rows);
  for (std::size_t i = 0; i < 8; ++i) _mm256_storeu_ps(dst + i * ldd, rows[i]);
}

/// dst[i * ldd + j] = src[j * lds + i] for i, j < 16, each row of dst one 64-byte line written
/// whole by non-temporal stores (dst 32-byte aligned, ldd a multiple of 8); stream_fence() must
/// follow before another thread reads dst.
LOFTQ_TARGET_AVX2 inline void transpose16_streaming(const float* src, std::size_t lds, float* dst,
                                                    std::size_t ldd) {
  for (std::size_t i = 0; i < 16; i += 8) {
    __m256 left[8], right[8];
    transpose8_into(src + i, lds, left);
    transpose8_into(src + 8 * lds + i, lds, right);
    for (std::size_t k = 0; k < 8; ++k) {
      _mm256_stream_ps(dst + (i + k) * ldd, left[k]);
      _mm256_stream_ps(dst + (i + k) * ldd + 8, right[k]);
    }
  }
}

/// Orders this thread's non-temporal stores before its later stores.
LOFTQ_TARGET_AVX2 inline void stream_fence() { _mm_sfence(); }

/// Vectors per tile of the products' C: 16 rows.
inline constexpr std::size_t tile_vectors = 2;

/// Columns of C per step of the products: 12 accumulators of the 16 registers.
inline constexpr std::size_t tile_columns = 6;

#include "product-inl.hpp"

/// dst[i * ldd + j] = src[j * lds + i] for i, j < 8, of words (transpose8(), whose unaligned
/// vector loads and stores may alias any type): for the AVX-512 BF16 kernels.
LOFTQ_TARGET_AVX2 __attribute__((always_inline)) inline void transpose8_words(
    const std::uint32_t* src, std::size_t lds, std::uint32_t* dst, std::size_t ldd) {
  transpose8(reinterpret_cast<const float*>(src), lds, reinterpret_cast<float*>(dst), ldd);
}


/// The 8 bfloat16 halves of the 4 words at `words` (the low half of each word first) as floats.
LOFTQ_TARGET_AVX2 inline Vec widen_bfloat16(const std::uint32_t* words) {
  const __m128i halves = _mm_loadu_si128(reinterpret_cast<const __m128i*>(words));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(halves), 16));
}

/// The pairs of bfloat16 at `pairs` (float bits): their high halves written back there, their
/// low halves at `first`, each as the float whose high 16 bits it is.
LOFTQ_TARGET_AVX2 inline void split_lanes(float* pairs, float* first) {
  const __m256i w = _mm256_castps_si256(_mm256_loadu_ps(pairs));
  _mm256_storeu_ps(first, _mm256_castsi256_ps(_mm256_slli_epi32(w, 16)));
  _mm256_storeu_ps(pairs, _mm256_castsi256_ps(_mm256_and_si256(w, _mm256_set1_epi32(static_cast<int>(0xffff0000u)))));
}

/// Double lanes of a vector.
using VecD = __m256d;

/// Lanes of a vector of doubles.
inline constexpr std::size_t double_lanes = 4;

/// The lanes at p, unaligned.
LOFTQ_TARGET_AVX2 inline VecD load_doubles(const double* p) { return _mm256_loadu_pd(p); }

/// Stores v at p, unaligned.
LOFTQ_TARGET_AVX2 inline void store_doubles(double* p, VecD v) { _mm256_storeu_pd(p, v); }

/// The 4 floats at p as doubles.
LOFTQ_TARGET_AVX2 inline VecD widen(const float* p) { return _mm256_cvtps_pd(_mm_loadu_ps(p)); }

/// a - b.
LOFTQ_TARGET_AVX2 inline VecD subtract_doubles(VecD a, VecD b) { return _mm256_sub_pd(a, b); }

/// a * b + c with one rounding, as std::fma.
LOFTQ_TARGET_AVX2 inline VecD fmadd_doubles(VecD a, VecD b, VecD c) {
  return _mm256_fmadd_pd(a, b, c);
}

/// Columns of a block of the Gram matrix's sums (kernels/gram-inl.hpp): 2 x 2 blocks of
/// two 4-lane vectors each.
inline constexpr std::size_t gram_block = 2;

#include "bfloat16_split_product-inl.hpp"
#include "error_squares-inl.hpp"
#include "gram-inl.hpp"
#include "square_sum-inl.hpp"
#undef LOFTQ_MM
#undef LOFTQ_TARGET

}  // namespace loftq::detail::kernels::avx2

#endif  // LOFTQ_X86_KERNELS
