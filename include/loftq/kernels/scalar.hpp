/// @file kernels/scalar.hpp
/// Portable kernels of blockwise quantization; every other path must equal these bit for bit.
/// Also what every instruction set's kernels share: the lookup quantizer of a codebook, the block
/// multipliers and factors, the block cursor, the scalar tails of the vector kernels, and
/// SquareSum, whose sums of squares kernels/square_sum-inl.hpp adds, and the lanes of the Gram
/// matrices of kernels/gram-inl.hpp.
/// No expression here can be contracted into an FMA: each result is one rounding.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <numeric>

#include "../codebook.hpp"
#include "../detail/packing.hpp"

namespace loftq::detail::kernels {

/// What quantizing to a lookup codebook needs: the float32 midpoints of the sorted table and
/// the code of each interval between them.
struct LookupQuantizer {
  std::array<float, 255> midpoints{};     ///< (s[k] + s[k+1]) / 2 of the sorted values s.
  std::array<std::uint8_t, 256> codes{};  ///< codes[k]: code of s[k].
  int levels = 0;                         ///< Table size, 2^bits.
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
  const auto levels = static_cast<std::size_t>(table.size);
  for (std::size_t k = 0; k < levels; ++k) q.codes[k] = static_cast<std::uint8_t>(order[k]);
  for (std::size_t k = 0; k + 1 < levels; ++k) {
    q.midpoints[k] = (table.values[order[k]] + table.values[order[k + 1]]) / 2.0f;
  }
  return q;
}

/// What a lookup codebook multiplies a block by to map it onto [-1, 1]: 1 / max(absmax, 1e-38).
inline float lookup_multiplier(float absmax) { return 1.0f / std::max(absmax, 1e-38f); }

/// What Int8 multiplies a block by: 127 / absmax (inf for a zero block).
inline float int8_multiplier(float absmax) { return 127.0f / absmax; }

/// What LLMInt8 multiplies a block by: (1 / absmax) * 127, as PyTorch evaluates bitsandbytes'
/// `127.0 / row_stats` (reciprocal, then product; inf for a zero block).
inline float llm_int8_multiplier(float absmax) { return (1.0f / absmax) * 127.0f; }

/// The multiplier of a block of a linear codebook (Int8 or LLMInt8).
inline float linear_multiplier(Codebook codebook, float absmax) {
  return codebook == Codebook::llm_int8 ? llm_int8_multiplier(absmax) : int8_multiplier(absmax);
}

/// The factor of a block's dequantized values: absmax, absmax / 127 for Int8, absmax for
/// LLMInt8 (whose value (q * absmax) * c the load path computes; the kernels only quantize it).
inline float dequantize_factor(Codebook codebook, float absmax) {
  return codebook == Codebook::int8 ? absmax / 127.0f : absmax;
}

/// The midpoints of `lookup` padded with +inf to N entries (N >= levels - 1), the search table of
/// a vector kernel.
template <std::size_t N>
std::array<float, N> padded_midpoints(const LookupQuantizer& lookup) {
  std::array<float, N> mid{};
  mid.fill(std::numeric_limits<float>::infinity());
  std::copy(lookup.midpoints.begin(), lookup.midpoints.begin() + (lookup.levels - 1), mid.begin());
  return mid;
}

/// The lookup code of x in a block of multiplier inv: clamp(x * inv, -1, 1), then the number of
/// midpoints strictly below it, mapped to its code. A NaN gets the code of the lowest level.
inline std::uint8_t lookup_code(float x, float inv, const LookupQuantizer& q) {
  const float s = std::clamp(x * inv, -1.0f, 1.0f);
  const float* mid_begin = q.midpoints.data();
  const float* mid_end = mid_begin + (q.levels - 1);
  const auto k = std::lower_bound(mid_begin, mid_end, s) - mid_begin;
  return q.codes[static_cast<std::size_t>(k)];
}

/// The Int8 code of x in a block of multiplier f: round-half-even(x * f) clamped to [-127, 127],
/// as its two's-complement byte; a NaN product (0 * inf in a zero block) gives 0.
inline std::uint8_t int8_code(float x, float f) {
  float v = x * f;
  if (std::isnan(v)) v = 0;
  const float q = std::nearbyint(std::clamp(v, -127.0f, 127.0f));
  return static_cast<std::uint8_t>(static_cast<std::int8_t>(q));
}

/// x, which the compiler may not fuse with a following addition or subtraction into an FMA.
inline float unfused(float x) {
#if defined(__GNUC__) || defined(__clang__)
  __asm__("" : "+m"(x));
#endif
  return x;
}

/// Elements per group of the vector kernels, their unit of work: from element 0 every group
/// starts a byte of 2-, 4- and 8-bit codes.
inline constexpr std::size_t group = 16;

/// Elements per pass of the vector kernels' quantize(): the maxima of the blocks of a pass are
/// taken first, then its codes, so the second read of the input comes from the cache.
inline constexpr std::size_t span = 2048;

/// The block of the current element as a kernel walks an array of n elements, cut in blocks of
/// `block` elements, in ascending order.
class BlockCursor {
 public:
  /// Starts at block 0; n and block must be >= 1.
  BlockCursor(std::size_t n, std::size_t block) : n_(n), block_(block), end_(std::min(n, block)) {}

  /// Moves to the block of element e; e must not be below an element sought before.
  void seek(std::size_t e) {
    while (e >= end_) {
      ++index_;
      end_ = std::min(n_, end_ + block_);
    }
  }

  /// The current block.
  std::size_t index() const { return index_; }

  /// One past the last element of the current block.
  std::size_t end() const { return end_; }

  /// True when elements [e, e + count) all lie in the current block.
  bool holds(std::size_t e, std::size_t count) const { return e + count <= end_; }

  /// out[j] = value(block of element e + j) for j in [0, count); e is in the current block and
  /// e + count <= n.
  template <class Value>
  void fill(std::size_t e, std::size_t count, Value value, float* out) const {
    std::size_t b = index_;
    std::size_t end = end_;
    float v = value(b);
    for (std::size_t j = 0; j < count; ++j) {
      if (e + j >= end) {
        ++b;
        end = std::min(n_, end + block_);
        v = value(b);
      }
      out[j] = v;
    }
  }

 private:
  std::size_t n_;
  std::size_t block_;
  std::size_t index_ = 0;
  std::size_t end_;
};

/// Pairs of bfloat16 (words) per row of a strip of a Bfloat16Matrix (kernels/products.hpp): 64
/// of E's columns, two 64-byte lines a row.
inline constexpr std::size_t strip_pairs = 32;

/// How a tile of a bfloat16 product (bfloat16_product_tile(), bfloat16_transposed_product_tile())
/// uses its panel, which its kernel reads E's words from, packed pair after pair.
enum class PanelUse {
  scratch,  ///< pair_panel_words of scratch, each chunk of pairs packed over the one before.
  keep,     ///< Room for every pair of the tile, all packed, kept for later passes over E.
  packed,   ///< Every pair of the tile, packed by an earlier pass (keep): E is not read.
};

/// Lanes of a SquareSum: the terms of elements i and j of its sequence share a lane when
/// i % square_lanes == j % square_lanes.
inline constexpr std::size_t square_lanes = 32;

/// Lanes of the sums of a Gram matrix in double (kernels/gram-inl.hpp): the terms of rows p and
/// q share a lane when p % gram_lanes == q % gram_lanes.
inline constexpr std::size_t gram_lanes = 8;

/// A sum in double of the squares of a sequence of floats, or of differences of two, being
/// accumulated: the term of the sequence's element i goes into lane i % square_lanes by one FMA,
/// and total() adds the lanes in a fixed order. So the sum is the same bits on every instruction
/// set and however the sequence is cut into calls of add_squares().
struct SquareSum {
  std::array<double, square_lanes> lane{};  ///< Partial sums.
  std::size_t count = 0;                    ///< Elements added so far.

  /// Adds the term (x - y)^2 of the sequence's next element, x and y as doubles.
  void add(float x, float y) {
    const double d = static_cast<double>(x) - static_cast<double>(y);
    double& l = lane[count % square_lanes];
    l = std::fma(d, d, l);
    ++count;
  }

  /// The sum of the terms: t[j] = (lane[j] + lane[j + 8]) + (lane[j + 16] + lane[j + 24]) for
  /// j < 8, then ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7])).
  double total() const {
    double t[8];
    for (std::size_t j = 0; j < 8; ++j)
      t[j] = (lane[j] + lane[j + 8]) + (lane[j + 16] + lane[j + 24]);
    return ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]));
  }
};

namespace scalar {

/// Largest |x[i]| over n values (0 for n = 0); NaNs are skipped.
inline float absmax(const float* x, std::size_t n) {
  float m = 0.0f;
  for (std::size_t i = 0; i < n; ++i) m = std::max(m, std::fabs(x[i]));
  return m;
}

/// Largest |w[i] - v[i]| over n values (0 for n = 0); NaNs are skipped.
inline float absmax_of_difference(const float* w, const float* v, std::size_t n) {
  float m = 0.0f;
  for (std::size_t i = 0; i < n; ++i) m = std::max(m, std::fabs(w[i] - v[i]));
  return m;
}

/// Codes of one block for a lookup codebook, one byte per element: lookup_code() of each x with
/// the block's lookup_multiplier().
inline void quantize_lookup(const float* x, std::size_t n, float absmax, const LookupQuantizer& q,
                            std::uint8_t* codes) {
  const float inv = lookup_multiplier(absmax);
  for (std::size_t i = 0; i < n; ++i) codes[i] = lookup_code(x[i], inv, q);
}

/// Int8 or LLMInt8 codes of one block, one byte per element: int8_code() of each x with the
/// block's linear_multiplier(); 0 where absmax is 0.
inline void quantize_int8(const float* x, std::size_t n, Codebook book, float absmax, std::uint8_t* codes) {
  const float f = linear_multiplier(book, absmax);
  for (std::size_t i = 0; i < n; ++i) codes[i] = int8_code(x[i], f);
}

/// Dequantizes elements [first, first + n) of a packed code array into out[0..n):
/// out[i] = table[code] * factor.
inline void dequantize(const std::uint8_t* packed, std::size_t first, std::size_t n, int bits,
                       const float* table, float factor, float* out) {
  for (std::size_t i = 0; i < n; ++i) {
    out[i] = table[detail::get_code(packed, first + i, bits)] * factor;
  }
}

/// Elements per piece of a block in the scalar kernels, the size of their stack buffers.
inline constexpr std::size_t piece = 256;

/// Quantizes x[0..n) in blocks of block_size (the last may be short): scales[b] = absmax of
/// block b, codes packed from packed[0] (x[0]'s code first, in the highest bits), all
/// packed_bytes(n, bits) bytes written, unused low bits 0. lookup is make_lookup_quantizer() of
/// the codebook (unused for Int8).
inline void quantize(const float* x, std::size_t n, int block_size, Codebook book,
                     const LookupQuantizer& lookup, std::uint8_t* packed, float* scales) {
  const int bits = bits_of(book);
  const auto block = static_cast<std::size_t>(block_size);
  std::fill(packed, packed + detail::packed_bytes(n, bits), std::uint8_t{0});
  std::array<std::uint8_t, piece> codes{};
  for (std::size_t first = 0, b = 0; first < n; first += block, ++b) {
    const std::size_t len = std::min(block, n - first);
    const float m = absmax(x + first, len);
    scales[b] = m;
    for (std::size_t off = 0; off < len; off += piece) {
      const std::size_t count = std::min(piece, len - off);
      if (is_linear(book)) {
        quantize_int8(x + first + off, count, book, m, codes.data());
      } else {
        quantize_lookup(x + first + off, count, m, lookup, codes.data());
      }
      for (std::size_t i = 0; i < count; ++i) {
        detail::or_code(packed, first + off + i, bits, codes[i]);
      }
    }
  }
}

/// Dequantizes n elements in blocks of block_size from packed codes (element 0's code in the
/// highest bits of packed[0]) and per-block scales: out[i] = table[code] * dequantize_factor().
inline void dequantize(const std::uint8_t* packed, const float* scales, std::size_t n,
                       int block_size, Codebook book, float* out) {
  const CodebookTable table = table_of(book);
  const auto block = static_cast<std::size_t>(block_size);
  for (std::size_t first = 0, b = 0; first < n; first += block, ++b) {
    dequantize(packed, first, std::min(block, n - first), bits_of(book), table.values,
               dequantize_factor(book, scales[b]), out + first);
  }
}

/// Quantizes target = w - low_rank (one subtraction per element) as quantize() does, and writes
/// residual[i] = w[i] - (dequantized target)[i]; w and low_rank are read block by block.
inline void quantize_residual(const float* w, const float* low_rank, std::size_t n, int block_size,
                              Codebook book, const LookupQuantizer& lookup, std::uint8_t* packed,
                              float* scales, float* residual) {
  const int bits = bits_of(book);
  const CodebookTable table = table_of(book);
  const auto block = static_cast<std::size_t>(block_size);
  std::fill(packed, packed + detail::packed_bytes(n, bits), std::uint8_t{0});
  std::array<float, piece> target{};
  std::array<std::uint8_t, piece> codes{};
  for (std::size_t first = 0, b = 0; first < n; first += block, ++b) {
    const std::size_t len = std::min(block, n - first);
    const float m = absmax_of_difference(w + first, low_rank + first, len);
    scales[b] = m;
    const float factor = dequantize_factor(book, m);
    for (std::size_t off = 0; off < len; off += piece) {
      const std::size_t count = std::min(piece, len - off);
      const std::size_t at = first + off;
      for (std::size_t i = 0; i < count; ++i) target[i] = w[at + i] - low_rank[at + i];
      if (is_linear(book)) {
        quantize_int8(target.data(), count, book, m, codes.data());
      } else {
        quantize_lookup(target.data(), count, m, lookup, codes.data());
      }
      for (std::size_t i = 0; i < count; ++i) {
        detail::or_code(packed, at + i, bits, codes[i]);
        residual[at + i] = w[at + i] - unfused(table.values[codes[i]] * factor);
      }
    }
  }
}

/// The last elements [first, n) of a vector kernel's quantize() or quantize_residual() call, one
/// by one: first is a multiple of 8, so they start a byte; scales of their blocks are known.
/// The target is w, or w - low_rank when low_rank is not null; residual is written when not
/// null.
inline void quantize_tail(const float* w, const float* low_rank, std::size_t first, std::size_t n,
                          std::size_t block, Codebook book, const LookupQuantizer& lookup,
                          const float* scales, std::uint8_t* packed, float* residual) {
  const int bits = bits_of(book);
  const CodebookTable table = table_of(book);
  std::fill(packed + first * static_cast<std::size_t>(bits) / 8,
            packed + detail::packed_bytes(n, bits), std::uint8_t{0});
  for (std::size_t i = first; i < n; ++i) {
    const float m = scales[i / block];
    const float x = low_rank != nullptr ? w[i] - low_rank[i] : w[i];
    const std::uint8_t code = is_linear(book) ? int8_code(x, linear_multiplier(book, m))
                                              : lookup_code(x, lookup_multiplier(m), lookup);
    detail::or_code(packed, i, bits, code);
    if (residual != nullptr) {
      residual[i] = w[i] - unfused(table.values[code] * dequantize_factor(book, m));
    }
  }
}

/// The last elements [first, n) of a vector kernel's dequantize() call, one by one.
inline void dequantize_tail(const std::uint8_t* packed, const float* scales, std::size_t first,
                            std::size_t n, std::size_t block, Codebook book, float* out) {
  const CodebookTable table = table_of(book);
  for (std::size_t i = first; i < n; ++i) {
    out[i] = table.values[detail::get_code(packed, i, bits_of(book))] *
             dequantize_factor(book, scales[i / block]);
  }
}

/// One double: the portable set's vector of doubles.
using VecD = double;

/// Lanes of a vector of doubles.
inline constexpr std::size_t double_lanes = 1;

/// *p.
inline VecD load_doubles(const double* p) { return *p; }

/// *p = v.
inline void store_doubles(double* p, VecD v) { *p = v; }

/// *p as a double.
inline VecD widen(const float* p) { return static_cast<double>(*p); }

/// a - b.
inline VecD subtract_doubles(VecD a, VecD b) { return a - b; }

/// a * b + c with one rounding.
inline VecD fmadd_doubles(VecD a, VecD b, VecD c) { return std::fma(a, b, c); }

/// Columns of a block of the Gram matrix's sums (kernels/gram-inl.hpp).
inline constexpr std::size_t gram_block = 1;

#define LOFTQ_TARGET
#include "gram-inl.hpp"
#include "square_sum-inl.hpp"
#undef LOFTQ_TARGET

/// Adds the terms ((w[i] - q[i]) - low_rank[i])^2 of elements [first, n) to `sum`, as
/// SquareSum::add() would one by one: q[i] the value dequantize() gives element i (its code in
/// packed, element 0's in the highest bits of packed[0], times its block's dequantize_factor()),
/// and w[i] - q[i] rounded to float, formed `piece` elements at a time for add_squares(). The
/// codebook is not LLMInt8.
inline void add_error_squares_tail(SquareSum& sum, const float* w, const std::uint8_t* packed,
                                   const float* scales, const float* low_rank, std::size_t first,
                                   std::size_t n, std::size_t block, Codebook book) {
  const CodebookTable table = table_of(book);
  const int bits = bits_of(book);
  std::array<float, piece> difference;
  for (std::size_t start = first; start < n; start += piece) {
    const std::size_t count = std::min(piece, n - start);
    float factor = dequantize_factor(book, scales[start / block]);
    for (std::size_t i = start; i < start + count; ++i) {
      if (i % block == 0) factor = dequantize_factor(book, scales[i / block]);
      difference[i - start] =
          w[i] - unfused(table.values[detail::get_code(packed, i, bits)] * factor);
    }
    add_squares(sum, difference.data(), low_rank + start, count);
  }
}

/// Adds the terms ((w[i] - q[i]) - low_rank[i])^2 of n more elements to `sum`, q dequantized
/// from the codes of a run that starts a block and a byte (add_error_squares_tail()): the
/// squared error of an iterate Q + low_rank whose Q is codes, without writing Q.
inline void add_error_squares(SquareSum& sum, const float* w, const std::uint8_t* packed,
                              const float* scales, const float* low_rank, std::size_t n,
                              int block_size, Codebook book) {
  add_error_squares_tail(sum, w, packed, scales, low_rank, 0, n,
                         static_cast<std::size_t>(block_size), book);
}

}  // namespace scalar
}  // namespace loftq::detail::kernels
