/// @file detail/cpu.hpp
/// What the CPU and the operating system let loftq's x86 kernels use, detected once.
#pragma once

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
/// 1 where loftq compiles its AVX2 and AVX-512 kernels (x86-64 with GCC or Clang), else 0.
#define LOFTQ_X86_KERNELS 1
#include <cpuid.h>
#else
#define LOFTQ_X86_KERNELS 0
#endif

#include <cstdint>

namespace loftq::detail {

/// The vector instruction sets the kernels may use on this machine.
struct CpuFeatures {
  /// AVX2 and FMA, with the YMM state enabled by the OS.
  bool avx2 = false;
  /// AVX-512 F, BW, DQ and VL (and AVX2), with the ZMM and mask state enabled by the OS.
  bool avx512 = false;
  /// AVX-512 BF16 as well as avx512: the bfloat16 dot products of the randomized SVD's passes.
  bool avx512_bf16 = false;
  /// AVX-512 BF16's vdpbf16ps issues as fast as a float FMA, so that one of it (32 products)
  /// outruns two FMAs (the same 32): AMD's Zen 4 and later. Intel's cores to date issue it at
  /// half that rate (one every two cycles on a Sapphire Rapids core, against two FMAs a cycle).
  bool fast_bfloat16_dot = false;
};

#if LOFTQ_X86_KERNELS
/// Reads the CPU's feature bits and the OS-enabled state components (XCR0).
inline CpuFeatures query_cpu_features() {
  CpuFeatures f;
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid(1, &eax, &ebx, &ecx, &edx) == 0) return f;
  const bool osxsave = (ecx & (1u << 27)) != 0;
  const bool avx = (ecx & (1u << 28)) != 0;
  const bool fma = (ecx & (1u << 12)) != 0;
  if (!osxsave || !avx) return f;
  unsigned xcr0_low = 0, xcr0_high = 0;
  __asm__ volatile("xgetbv" : "=a"(xcr0_low), "=d"(xcr0_high) : "c"(0u));
  const std::uint64_t xcr0 = (static_cast<std::uint64_t>(xcr0_high) << 32) | xcr0_low;
  const bool ymm_state = (xcr0 & 0x6u) == 0x6u;    // SSE and AVX state
  const bool zmm_state = (xcr0 & 0xE6u) == 0xE6u;  // plus opmask, ZMM_Hi256 and Hi16_ZMM
  if (__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) == 0) return f;
  const bool avx2 = (ebx & (1u << 5)) != 0;
  const bool avx512f = (ebx & (1u << 16)) != 0;
  const bool avx512dq = (ebx & (1u << 17)) != 0;
  const bool avx512bw = (ebx & (1u << 30)) != 0;
  const bool avx512vl = (ebx & (1u << 31)) != 0;
  f.avx2 = avx2 && fma && ymm_state;
  f.avx512 = f.avx2 && avx512f && avx512dq && avx512bw && avx512vl && zmm_state;
  if (f.avx512 && eax >= 1 && __get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx) != 0) {
    f.avx512_bf16 = (eax & (1u << 5)) != 0;
  }
  if (__get_cpuid(0, &eax, &ebx, &ecx, &edx) != 0) {
    // "AuthenticAMD" in ebx, edx, ecx
    f.fast_bfloat16_dot = f.avx512_bf16 && ebx == 0x68747541u && edx == 0x69746e65u && ecx == 0x444d4163u;
  }
  return f;
}
#else
/// No x86 kernels on this target: nothing to detect.
inline CpuFeatures query_cpu_features() { return {}; }
#endif

/// The features of this machine, queried on the first call.
inline const CpuFeatures& cpu_features() {
  static const CpuFeatures features = query_cpu_features();
  return features;
}

}  // namespace loftq::detail
