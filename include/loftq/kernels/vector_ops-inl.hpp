/// @file kernels/vector_ops-inl.hpp
/// The vector operations of kernels/quantize-inl.hpp and kernels/product-inl.hpp that differ between instruction sets only in
/// the prefix of their intrinsics (_mm256_, _mm512_), written once.
///
/// This file has no include guard, on purpose: kernels/avx2.hpp and kernels/avx512.hpp include
/// it inside their namespaces, once each, after they have included <immintrin.h> and <cstddef>
/// and defined
/// - LOFTQ_TARGET, the `__attribute__((target(...)))` of every function here;
/// - LOFTQ_MM(name), the intrinsic `name` of the set (_mm256_##name, _mm512_##name);
/// - `Vec` (float lanes) and `VecI` (int32 lanes), vectors of the set's width.
/// It defines `lanes` and `vectors` (per group) too.
/// Include nothing here: whatever this file includes would land in those namespaces.

#if !defined(LOFTQ_TARGET) || !defined(LOFTQ_MM)
#error "kernels/vector_ops-inl.hpp is included by kernels/avx2.hpp and kernels/avx512.hpp only"
#endif

/// Lanes of a vector.
inline constexpr std::size_t lanes = sizeof(Vec) / sizeof(float);

/// Vectors of a group.
inline constexpr std::size_t vectors = group / lanes;

/// All lanes 0.
LOFTQ_TARGET inline Vec zero() { return LOFTQ_MM(setzero_ps)(); }

/// All lanes x.
LOFTQ_TARGET inline Vec set1(float x) { return LOFTQ_MM(set1_ps)(x); }

/// The lanes at p, unaligned.
LOFTQ_TARGET inline Vec load(const float* p) { return LOFTQ_MM(loadu_ps)(p); }

/// Stores v at p, unaligned.
LOFTQ_TARGET inline void store(float* p, Vec v) { LOFTQ_MM(storeu_ps)(p, v); }

/// Stores v at p, aligned to sizeof(Vec), bypassing the caches.
LOFTQ_TARGET inline void stream(float* p, Vec v) { LOFTQ_MM(stream_ps)(p, v); }

/// a - b.
LOFTQ_TARGET inline Vec sub(Vec a, Vec b) { return LOFTQ_MM(sub_ps)(a, b); }

/// a * b.
LOFTQ_TARGET inline Vec mul(Vec a, Vec b) { return LOFTQ_MM(mul_ps)(a, b); }

/// a * b + c with one rounding, as std::fma.
LOFTQ_TARGET inline Vec fmadd(Vec a, Vec b, Vec c) { return LOFTQ_MM(fmadd_ps)(a, b, c); }

/// max(a, b) lane by lane; b where either is NaN.
LOFTQ_TARGET inline Vec maximum(Vec a, Vec b) { return LOFTQ_MM(max_ps)(a, b); }

/// min(a, b) lane by lane; b where either is NaN.
LOFTQ_TARGET inline Vec minimum(Vec a, Vec b) { return LOFTQ_MM(min_ps)(a, b); }

/// x rounded half to even (as std::nearbyint does), as int32; x within the int32 range.
LOFTQ_TARGET inline VecI round_to_int(Vec x) { return LOFTQ_MM(cvtps_epi32)(x); }

/// q as floats.
LOFTQ_TARGET inline Vec to_float(VecI q) { return LOFTQ_MM(cvtepi32_ps)(q); }

/// v >> shifts lane by lane, logical.
LOFTQ_TARGET inline VecI shift_right(VecI v, VecI shifts) {
  return LOFTQ_MM(srlv_epi32)(v, shifts);
}

/// Bytes h * lanes .. of `bytes` (h is 0 or 1, 0 when a vector holds 16 lanes), zero-extended
/// to int32 lanes.
LOFTQ_TARGET inline VecI widen_u8(__m128i bytes, std::size_t h) {
  return LOFTQ_MM(cvtepu8_epi32)(h == 0 ? bytes : _mm_unpackhi_epi64(bytes, bytes));
}

/// Bytes h * lanes .. of `bytes` (h is 0 or 1, 0 when a vector holds 16 lanes), sign-extended
/// to int32 lanes.
LOFTQ_TARGET inline VecI widen_i8(__m128i bytes, std::size_t h) {
  return LOFTQ_MM(cvtepi8_epi32)(h == 0 ? bytes : _mm_unpackhi_epi64(bytes, bytes));
}
