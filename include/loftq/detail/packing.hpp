/// @file detail/packing.hpp
/// Bit packing of 2-, 4- and 8-bit codes, first element in the highest bits of its byte.
#pragma once

#include <cstddef>
#include <cstdint>

namespace loftq::detail {

/// Bytes that hold n codes of `bits` bits each: ceil(n * bits / 8).
constexpr std::size_t packed_bytes(std::size_t n, int bits) {
  return (n * static_cast<std::size_t>(bits) + 7) / 8;
}

/// Left shift of element i's code inside its byte (4-bit: 4 then 0; 2-bit: 6, 4, 2, 0).
constexpr int code_shift(std::size_t i, int bits) {
  const std::size_t per_byte = static_cast<std::size_t>(8 / bits);
  return 8 - bits * static_cast<int>(i % per_byte + 1);
}

/// Code of element i.
inline std::uint8_t get_code(const std::uint8_t* packed, std::size_t i, int bits) {
  const std::size_t byte = i * static_cast<std::size_t>(bits) / 8;
  const unsigned mask = (1u << bits) - 1u;
  return static_cast<std::uint8_t>((packed[byte] >> code_shift(i, bits)) & mask);
}

/// ORs `code` into the slot of element i; the slot must be zero.
inline void or_code(std::uint8_t* packed, std::size_t i, int bits, std::uint8_t code) {
  const std::size_t byte = i * static_cast<std::size_t>(bits) / 8;
  packed[byte] = static_cast<std::uint8_t>(packed[byte] | (code << code_shift(i, bits)));
}

}  // namespace loftq::detail
