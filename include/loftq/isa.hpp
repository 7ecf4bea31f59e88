/// @file isa.hpp
/// The instruction set of the quantization and product kernels: what this CPU supports, which one is used,
/// and how to force one (force_isa() or the environment variable LOFTQ_FORCE_ISA).
///
/// Every instruction set gives the same bits, so the choice changes speed only.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "detail/checks.hpp"
#include "detail/cpu.hpp"

namespace loftq {

/// Instruction sets of the quantization and product kernels.
enum class Isa : std::uint8_t {
  scalar,  ///< Portable C++, on every target.
  avx2,    ///< AVX2 and FMA (x86-64).
  avx512,  ///< AVX-512 F, BW, DQ and VL (x86-64).
};

/// Lower-case name: "scalar", "avx2" or "avx512".
constexpr std::string_view name_of(Isa isa) {
  switch (isa) {
    case Isa::scalar:
      return "scalar";
    case Isa::avx2:
      return "avx2";
    case Isa::avx512:
      return "avx512";
  }
  return "";
}

/// The Isa named `name` (as name_of() spells it); throws std::invalid_argument otherwise.
inline Isa isa_from_name(std::string_view name) {
  for (Isa isa : {Isa::scalar, Isa::avx2, Isa::avx512}) {
    if (name_of(isa) == name) return isa;
  }
  detail::fail("isa = \"" + std::string(name) + "\" is not supported (scalar, avx2, avx512)");
}

/// True when this CPU (and its operating system) can run the kernels of `isa`.
inline bool isa_supported(Isa isa) {
  switch (isa) {
    case Isa::scalar:
      return true;
    case Isa::avx2:
      return LOFTQ_X86_KERNELS && detail::cpu_features().avx2;
    case Isa::avx512:
      return LOFTQ_X86_KERNELS && detail::cpu_features().avx512;
  }
  return false;
}

/// The best instruction set this CPU supports.
inline Isa detected_isa() {
  if (isa_supported(Isa::avx512)) return Isa::avx512;
  if (isa_supported(Isa::avx2)) return Isa::avx2;
  return Isa::scalar;
}

namespace detail {

/// The Isa that the environment variable LOFTQ_FORCE_ISA selects when it has `value`:
/// detected_isa() for null or "", else the named one. Throws std::invalid_argument, naming the
/// variable and the value, for an unknown name or one this CPU does not support.
inline Isa isa_from_environment(const char* value) {
  if (value == nullptr || *value == '\0') return detected_isa();
  const std::string_view name(value);
  for (Isa isa : {Isa::scalar, Isa::avx2, Isa::avx512}) {
    if (name_of(isa) != name) continue;
    if (!isa_supported(isa)) {
      fail("LOFTQ_FORCE_ISA = \"" + std::string(name) + "\" is not supported by this CPU");
    }
    return isa;
  }
  fail("LOFTQ_FORCE_ISA = \"" + std::string(name) + "\" is not supported (scalar, avx2, avx512)");
}

/// The Isa used when none is forced: isa_from_environment() of LOFTQ_FORCE_ISA, read on the
/// first call that does not throw.
inline Isa default_isa() {
  static const Isa isa = isa_from_environment(std::getenv("LOFTQ_FORCE_ISA"));
  return isa;
}

/// The Isa set by force_isa() as an integer, or -1 for default_isa().
inline std::atomic<int>& forced_isa() {
  static std::atomic<int> forced{-1};
  return forced;
}

}  // namespace detail

/// The instruction set the kernels use now: the one set by force_isa(), else the one named by
/// the environment variable LOFTQ_FORCE_ISA (scalar, avx2 or avx512; read once), else
/// detected_isa(). Throws std::invalid_argument when LOFTQ_FORCE_ISA names an unknown or
/// unsupported instruction set and none is forced.
inline Isa active_isa() {
  const int forced = detail::forced_isa().load();
  return forced >= 0 ? static_cast<Isa>(forced) : detail::default_isa();
}

/// Makes the kernels use `isa` from now on; throws std::invalid_argument, naming it, when this
/// CPU does not support it.
inline void force_isa(Isa isa) {
  if (!isa_supported(isa)) {
    const std::string_view name = name_of(isa);
    detail::fail("isa = \"" +
                 (name.empty() ? std::to_string(static_cast<int>(isa)) : std::string(name)) +
                 "\" is not supported by this CPU");
  }
  detail::forced_isa().store(static_cast<int>(isa));
}

/// Undoes force_isa(): the kernels use the default of active_isa() again.
inline void reset_isa() { detail::forced_isa().store(-1); }

}  // namespace loftq
