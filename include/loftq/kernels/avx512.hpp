/// @file kernels/avx512.hpp
/// AVX-512 kernels of blockwise quantization, equal bit for bit to kernels/scalar.hpp: the vector
/// operations of kernels/quantize-inl.hpp on 16-lane vectors (one per group of 16, with masked
/// loads and mask registers), and that file instantiated with them; the sums of squares of
/// kernels/square_sum-inl.hpp and the Gram matrices of kernels/gram-inl.hpp on 8-lane vectors of
/// doubles; and the product kernels of kernels/product-inl.hpp, equal bit for bit to the portable
/// ones of kernels/products.hpp. They are compiled for AVX-512 F, BW, DQ and VL whatever the build
/// flags, and run only on CPUs that have them (see isa.hpp).
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
#include "avx2.hpp"
#include "scalar.hpp"

/// Compiles a function for AVX-512 F, BW, DQ and VL, and for AVX2 and FMA, which they extend.
#define LOFTQ_TARGET_AVX512 __attribute__((target("avx2,fma,avx512f,avx512bw,avx512dq,avx512vl")))

// GCC 12 reports the undefined pass-through operand of its own AVX-512 intrinsics as
// uninitialized once they are inlined.
#if !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace loftq::detail::kernels::avx512 {

/// Float lanes of a vector.
using Vec = __m512;

/// Int32 lanes of a vector.
using VecI = __m512i;

/// One bit per lane of a vector.
using Mask = __mmask16;

#define LOFTQ_TARGET LOFTQ_TARGET_AVX512
#define LOFTQ_MM(name) _mm512_##name
#include "vector_ops-inl.hpp"

/// The first `count` lanes at p (count < lanes); the others are 0 and read no memory.
LOFTQ_TARGET_AVX512 inline Vec load_first(const float* p, std::size_t count) {
  return _mm512_maskz_loadu_ps(static_cast<Mask>((1u << count) - 1u), p);
}

/// |x| lane by lane.
LOFTQ_TARGET_AVX512 inline Vec abs_of(Vec x) { return _mm512_abs_ps(x); }

/// Largest lane of v; no lane may be NaN.
LOFTQ_TARGET_AVX512 inline float reduce_max(Vec v) { return _mm512_reduce_max_ps(v); }

/// x, which the compiler may not fuse with a following addition or subtraction into an FMA.
LOFTQ_TARGET_AVX512 inline Vec unfused(Vec x) {
  __asm__("" : "+v"(x));
  return x;
}

/// x with its NaN lanes set to 0.
LOFTQ_TARGET_AVX512 inline Vec zero_nan(Vec x) {
  return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, x, _CMP_ORD_Q), x);
}

/// A group of int32 lanes in [0, 255] as 16 bytes, in order.
LOFTQ_TARGET_AVX512 inline __m128i narrow_unsigned(const VecI (&v)[vectors]) {
  return _mm512_cvtepi32_epi8(v[0]);
}

/// A group of int32 lanes in [-128, 127] as 16 two's-complement bytes, in order.
LOFTQ_TARGET_AVX512 inline __m128i narrow_signed(const VecI (&v)[vectors]) {
  return _mm512_cvtepi32_epi8(v[0]);
}

/// table[index] lane by lane.
LOFTQ_TARGET_AVX512 inline Vec gather(const float* table, VecI index) {
  return _mm512_i32gather_ps(index, table, 4);
}

/// table[index] lane by lane.
LOFTQ_TARGET_AVX512 inline VecI gather_codes(const std::int32_t* table, VecI index) {
  return _mm512_i32gather_epi32(index, table, 4);
}

/// a, b, c, d repeated from the lowest lane.
LOFTQ_TARGET_AVX512 inline Vec repeat4(float a, float b, float c, float d) {
  return _mm512_set4_ps(d, c, b, a);
}

/// a, b, c, d repeated from the lowest lane.
LOFTQ_TARGET_AVX512 inline VecI repeat4i(int a, int b, int c, int d) {
  return _mm512_set4_epi32(d, c, b, a);
}

/// Lane index % lanes of table, lane by lane.
LOFTQ_TARGET_AVX512 inline Vec permute(Vec table, VecI index) {
  return _mm512_permutexvar_ps(index, table);
}

/// Entry index % 16 of a 16-entry table.
LOFTQ_TARGET_AVX512 inline Vec lookup16(const Vec (&table)[vectors], VecI index) {
  return _mm512_permutexvar_ps(index, table[0]);
}

/// idx + k in the lanes of `mask`, idx elsewhere.
LOFTQ_TARGET_AVX512 inline VecI add_where(Mask mask, VecI idx, int k) {
  return _mm512_mask_add_epi32(idx, mask, idx, _mm512_set1_epi32(k));
}

/// 2 idx + 1 in the lanes of `mask`, 2 idx elsewhere: one more step of a binary search.
LOFTQ_TARGET_AVX512 inline VecI double_plus(Mask mask, VecI idx) {
  return add_where(mask, _mm512_add_epi32(idx, idx), 1);
}

/// The lanes where a < b.
LOFTQ_TARGET_AVX512 inline Mask less(Vec a, Vec b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }

/// The sorted level of each lane of s among 4 or 16 levels, the number of midpoints below s, by
/// a branch-free binary search: the first step compares with one midpoint, the second picks one
/// of two by a blend, the last two (16 levels) permute a table of midpoints by the level found
/// so far. NaN compares false and counts 0.
template <int Levels>
class MidpointSearch {
 public:
  /// mid: the sorted midpoints, padded with +inf.
  LOFTQ_TARGET_AVX512 explicit MidpointSearch(const std::array<float, 16>& mid)
      : top_(set1(mid[Levels / 2 - 1])),
        low_(set1(mid[Levels / 4 - 1])),
        high_(set1(mid[Levels / 2 + Levels / 4 - 1])),
        mid_(_mm512_loadu_ps(mid.data())) {
    float next[16];
    for (std::size_t i = 0; i < 16; ++i) next[i] = mid[std::min<std::size_t>(i + 1, 15)];
    next_ = _mm512_loadu_ps(next);
  }

  /// The number of midpoints below each lane of s.
  LOFTQ_TARGET_AVX512 VecI level(Vec s) const {
    const Mask above_top = less(top_, s);
    const Mask above = less(_mm512_mask_blend_ps(above_top, low_, high_), s);
    VecI idx = add_where(above, _mm512_maskz_mov_epi32(above_top, _mm512_set1_epi32(Levels / 2)),
                         Levels / 4);
    if constexpr (Levels == 16) {
      // Third step: mid[level + 1]; fourth: mid[level].
      idx = add_where(less(permute(next_, idx), s), idx, 2);
      idx = add_where(less(permute(mid_, idx), s), idx, 1);
    }
    return idx;
  }

 private:
  Vec top_;  // midpoint of the first step
  Vec low_;  // midpoints of the second step
  Vec high_;
  Vec mid_;   // the midpoints, padded with +inf
  Vec next_;  // next_[i] = mid[i + 1]
};

/// The sorted level of each lane of s among 256 levels (Uniform<8>): the same branch-free binary
/// search as MidpointSearch over the 255 midpoints padded with +inf. The first two steps compare
/// with broadcast midpoints, the next three permute 16-entry tables by level / 16, the last three
/// read 32-, 64- and 128-entry tables (two-table permutes and blends) at level / 8, / 4 and / 2.
class ByteSearch {
 public:
  /// mid: the 255 sorted midpoints, padded with +inf.
  LOFTQ_TARGET_AVX512 explicit ByteSearch(const std::array<float, 256>& mid)
      : first_(set1(mid[127])), second_low_(set1(mid[63])), second_high_(set1(mid[191])) {
    float t[128];
    for (std::size_t k = 0; k < 3; ++k) {  // steps 32, 16 and 8 at level 16g: mid[16g + step - 1]
      const std::size_t step = std::size_t{32} >> k;
      for (std::size_t g = 0; g < 16; ++g)
        t[g] = mid[std::min<std::size_t>(16 * g + step - 1, 255)];
      by_sixteen_[k] = _mm512_loadu_ps(t);
    }
    for (std::size_t j = 0; j < 32; ++j) t[j] = mid[8 * j + 3];  // step 4 at level 8j
    for (std::size_t k = 0; k < 2; ++k) by_eight_[k] = _mm512_loadu_ps(t + 16 * k);
    for (std::size_t j = 0; j < 64; ++j) t[j] = mid[4 * j + 1];  // step 2 at level 4j
    for (std::size_t k = 0; k < 4; ++k) by_four_[k] = _mm512_loadu_ps(t + 16 * k);
    for (std::size_t j = 0; j < 128; ++j) t[j] = mid[2 * j];  // step 1 at level 2j
    for (std::size_t k = 0; k < 8; ++k) by_two_[k] = _mm512_loadu_ps(t + 16 * k);
  }

  /// The number of midpoints below each lane of s.
  LOFTQ_TARGET_AVX512 VecI level(Vec s) const {
    Mask above = less(first_, s);
    VecI g = _mm512_maskz_mov_epi32(above, _mm512_set1_epi32(8));  // level / 16
    g = add_where(less(_mm512_mask_blend_ps(above, second_low_, second_high_), s), g, 4);
    g = add_where(less(permute(by_sixteen_[0], g), s), g, 2);
    g = add_where(less(permute(by_sixteen_[1], g), s), g, 1);
    VecI j = double_plus(less(permute(by_sixteen_[2], g), s), g);  // level / 8
    j = double_plus(less(_mm512_permutex2var_ps(by_eight_[0], j, by_eight_[1]), s), j);
    j = double_plus(less(pick64(by_four_, j), s), j);
    const Vec mid = _mm512_mask_blend_ps(_mm512_test_epi32_mask(j, _mm512_set1_epi32(64)),
                                         pick64(by_two_, j), pick64(by_two_ + 4, j));
    return double_plus(less(mid, s), j);
  }

 private:
  /// Entry j % 64 of the 64-entry table held in four vectors.
  LOFTQ_TARGET_AVX512 static Vec pick64(const Vec* table, VecI j) {
    const Vec low = _mm512_permutex2var_ps(table[0], j, table[1]);
    const Vec high = _mm512_permutex2var_ps(table[2], j, table[3]);
    return _mm512_mask_blend_ps(_mm512_test_epi32_mask(j, _mm512_set1_epi32(32)), low, high);
  }

  Vec first_;       // mid[127], the first step
  Vec second_low_;  // mid[63] and mid[191], the second step
  Vec second_high_;
  Vec by_sixteen_[3];  // steps 32, 16 and 8, by level / 16
  Vec by_eight_[2];    // step 4, by level / 8
  Vec by_four_[4];     // step 2, by level / 4
  Vec by_two_[8];      // step 1, by level / 2
};

#include "quantize-inl.hpp"

using avx2::transpose8;

/// dst[i * ldd + j] = src[j * lds + i] for i, j < 16, each row of dst one 64-byte line written
/// by one non-temporal store (dst 64-byte aligned, ldd a multiple of 16); stream_fence() must
/// follow before another thread reads dst.
LOFTQ_TARGET_AVX512 inline void transpose16_streaming(const float* src, std::size_t lds, float* dst,
                                                      std::size_t ldd) {
  __m512 r[16], t[16];
  for (std::size_t j = 0; j < 16; ++j) r[j] = _mm512_loadu_ps(src + j * lds);
  // As transpose8() does within each 128-bit lane L: lane L of r[4 q + k] is column 4 L + k of
  // rows 4 q to 4 q + 3.
  for (std::size_t j = 0; j < 16; j += 2) {
    t[j] = _mm512_unpacklo_ps(r[j], r[j + 1]);
    t[j + 1] = _mm512_unpackhi_ps(r[j], r[j + 1]);
  }
  for (std::size_t j = 0; j < 16; j += 4) {
    for (std::size_t h = 0; h < 2; ++h) {
      r[j + 2 * h] = _mm512_shuffle_ps(t[j + h], t[j + h + 2], _MM_SHUFFLE(1, 0, 1, 0));
      r[j + 2 * h + 1] = _mm512_shuffle_ps(t[j + h], t[j + h + 2], _MM_SHUFFLE(3, 2, 3, 2));
    }
  }
  // Then lane L of r[k], r[4 + k], r[8 + k], r[12 + k] side by side is row 4 L + k of dst.
  for (std::size_t k = 0; k < 4; ++k) {
    const __m512 even_lanes_of_first =
        _mm512_shuffle_f32x4(r[k], r[4 + k], _MM_SHUFFLE(2, 0, 2, 0));
    const __m512 odd_lanes_of_first = _mm512_shuffle_f32x4(r[k], r[4 + k], _MM_SHUFFLE(3, 1, 3, 1));
    const __m512 even_lanes_of_last =
        _mm512_shuffle_f32x4(r[8 + k], r[12 + k], _MM_SHUFFLE(2, 0, 2, 0));
    const __m512 odd_lanes_of_last =
        _mm512_shuffle_f32x4(r[8 + k], r[12 + k], _MM_SHUFFLE(3, 1, 3, 1));
    _mm512_stream_ps(dst + k * ldd, _mm512_shuffle_f32x4(even_lanes_of_first, even_lanes_of_last,
                                                         _MM_SHUFFLE(2, 0, 2, 0)));
    _mm512_stream_ps(
        dst + (4 + k) * ldd,
        _mm512_shuffle_f32x4(odd_lanes_of_first, odd_lanes_of_last, _MM_SHUFFLE(2, 0, 2, 0)));
    _mm512_stream_ps(
        dst + (8 + k) * ldd,
        _mm512_shuffle_f32x4(even_lanes_of_first, even_lanes_of_last, _MM_SHUFFLE(3, 1, 3, 1)));
    _mm512_stream_ps(
        dst + (12 + k) * ldd,
        _mm512_shuffle_f32x4(odd_lanes_of_first, odd_lanes_of_last, _MM_SHUFFLE(3, 1, 3, 1)));
  }
}

using avx2::stream_fence;

/// Vectors per tile of the products' C: 64 rows.
inline constexpr std::size_t tile_vectors = 4;

/// Columns of C per step of the products: 24 accumulators of the 32 registers.
inline constexpr std::size_t tile_columns = 6;

#include "product-inl.hpp"

/// The 16 bfloat16 halves of the 8 words at `words` (the low half of each word first) as floats.
LOFTQ_TARGET_AVX512 inline Vec widen_bfloat16(const std::uint32_t* words) {
  const __m256i halves = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(words));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(halves), 16));
}

/// The pairs of bfloat16 at `pairs` (float bits): their high halves written back there, their
/// low halves at `first`, each as the float whose high 16 bits it is.
LOFTQ_TARGET_AVX512 inline void split_lanes(float* pairs, float* first) {
  const __m512i w = _mm512_castps_si512(_mm512_loadu_ps(pairs));
  _mm512_storeu_ps(first, _mm512_castsi512_ps(_mm512_slli_epi32(w, 16)));
  _mm512_storeu_ps(pairs, _mm512_castsi512_ps(_mm512_and_si512(w, _mm512_set1_epi32(static_cast<int>(0xffff0000u)))));
}

/// Double lanes of a vector.
using VecD = __m512d;

/// Lanes of a vector of doubles.
inline constexpr std::size_t double_lanes = 8;

/// The lanes at p, unaligned.
LOFTQ_TARGET_AVX512 inline VecD load_doubles(const double* p) { return _mm512_loadu_pd(p); }

/// Stores v at p, unaligned.
LOFTQ_TARGET_AVX512 inline void store_doubles(double* p, VecD v) { _mm512_storeu_pd(p, v); }

/// The 8 floats at p as doubles.
LOFTQ_TARGET_AVX512 inline VecD widen(const float* p) {
  return _mm512_cvtps_pd(_mm256_loadu_ps(p));
}

/// a - b.
LOFTQ_TARGET_AVX512 inline VecD subtract_doubles(VecD a, VecD b) { return _mm512_sub_pd(a, b); }

/// a * b + c with one rounding, as std::fma.
LOFTQ_TARGET_AVX512 inline VecD fmadd_doubles(VecD a, VecD b, VecD c) {
  return _mm512_fmadd_pd(a, b, c);
}

/// Columns of a block of the Gram matrix's sums (kernels/gram-inl.hpp): 4 x 4 blocks of
/// one 8-lane vector each.
inline constexpr std::size_t gram_block = 4;

#include "bfloat16_split_product-inl.hpp"
#include "error_squares-inl.hpp"
#include "gram-inl.hpp"
#include "square_sum-inl.hpp"
#undef LOFTQ_MM
#undef LOFTQ_TARGET

}  // namespace loftq::detail::kernels::avx512

/// Compiles a function for AVX-512 BF16 and the sets of LOFTQ_TARGET_AVX512.
#define LOFTQ_TARGET_AVX512_BF16 \
  __attribute__((target("avx2,fma,avx512f,avx512bw,avx512dq,avx512vl,avx512bf16")))

/// The bfloat16 products of kernels/bfloat16_product-inl.hpp on AVX-512 BF16's dot product, for
/// CPUs that have it (CpuFeatures::avx512_bf16); equal bit for bit to the portable ones.
namespace loftq::detail::kernels::avx512_bf16 {

/// Float lanes of a vector.
using Vec = __m512;

/// Lanes of a vector.
inline constexpr std::size_t lanes = 16;

/// All lanes 0.
LOFTQ_TARGET_AVX512_BF16 inline Vec zero() { return _mm512_setzero_ps(); }

/// The lanes at p, unaligned.
LOFTQ_TARGET_AVX512_BF16 inline Vec load(const float* p) { return _mm512_loadu_ps(p); }

/// Stores v at p, unaligned.
LOFTQ_TARGET_AVX512_BF16 inline void store(float* p, Vec v) { _mm512_storeu_ps(p, v); }

/// Two bfloat16 per int32 lane.
using Pairs = __m512i;

/// The words at p, unaligned.
LOFTQ_TARGET_AVX512_BF16 inline Pairs load_pairs(const std::uint32_t* p) {
  return _mm512_loadu_si512(p);
}

/// All lanes `word`.
LOFTQ_TARGET_AVX512_BF16 inline Pairs set1_pairs(std::uint32_t word) {
  return _mm512_set1_epi32(static_cast<int>(word));
}

/// Per lane, fma(high(a), high(b), sum), then fma(low(a), low(b), that), by vdpbf16ps.
LOFTQ_TARGET_AVX512_BF16 inline Vec dot_pairs(Vec sum, Pairs a, Pairs b) {
  return _mm512_dpbf16_ps(sum, reinterpret_cast<__m512bh>(a), reinterpret_cast<__m512bh>(b));
}

using avx2::transpose8_words;

/// Vectors per tile of the bfloat16 products' C: 64 rows.
inline constexpr std::size_t pair_tile_vectors = 4;

/// Columns of C per step of the bfloat16 products: 24 accumulators of the 32 registers.
inline constexpr std::size_t pair_tile_columns = 6;

#define LOFTQ_TARGET LOFTQ_TARGET_AVX512_BF16
#include "bfloat16_product-inl.hpp"
#undef LOFTQ_TARGET

}  // namespace loftq::detail::kernels::avx512_bf16

#if !defined(__clang__)
#pragma GCC diagnostic pop
#endif

#endif  // LOFTQ_X86_KERNELS
