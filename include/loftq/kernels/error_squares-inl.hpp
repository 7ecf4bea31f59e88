/// @file kernels/error_squares-inl.hpp
/// The squared error of an iterate whose Q is held as codes, written once for every vector
/// instruction set: the terms ((w[i] - q[i]) - low_rank[i])^2, q dequantized from the codes,
/// added to a SquareSum without writing q or w - q anywhere. The same bits as dequantize(),
/// w - q in float and add_squares() of that and low_rank.
///
/// This file has no include guard, on purpose: kernels/avx2.hpp and kernels/avx512.hpp include
/// it inside their namespaces, once each, after kernels/quantize-inl.hpp (its decoders) and
/// kernels/square_sum-inl.hpp (its operations on doubles). Include nothing here: whatever this
/// file includes would land in those namespaces.

#ifndef LOFTQ_TARGET
#error "kernels/error_squares-inl.hpp is included by kernels/avx2.hpp and kernels/avx512.hpp only"
#endif

/// add_error_squares() with the decoder of `book`; Bits is the code width. Whole rounds of
/// square_lanes elements run in vectors when sum.count is a multiple of double_lanes (each
/// vector of doubles then feeds one vector of lanes); the rest goes through
/// scalar::add_error_squares_tail().
template <int Bits, class Decoder>
LOFTQ_TARGET void add_error_squares_groups(const Decoder& decoder, SquareSum& sum, const float* w,
                                           const std::uint8_t* packed, const float* scales,
                                           const float* low_rank, std::size_t n, std::size_t block,
                                           Codebook book) {
  static_assert(square_lanes % group == 0 && group % double_lanes == 0, "whole vectors of lanes");
  constexpr std::size_t accumulators = square_lanes / double_lanes;
  constexpr std::size_t per_group = group / double_lanes;
  std::size_t e = 0;
  if (sum.count % double_lanes == 0 && n >= square_lanes) {
    // Accumulator k holds the lanes of elements e + k double_lanes ..., for e a multiple of
    // square_lanes: lanes `first` on.
    const std::size_t first = sum.count % square_lanes;
    VecD acc[accumulators];
    for (std::size_t k = 0; k < accumulators; ++k)
      acc[k] = load_doubles(sum.lane.data() + (first + k * double_lanes) % square_lanes);
    BlockCursor cursor(n, block);
    alignas(64) float difference[group];  // w - q of a group
    for (; e + square_lanes <= n; e += square_lanes) {
      for (std::size_t g = 0; g < square_lanes / group; ++g) {
        const std::size_t at = e + g * group;
        cursor.seek(at);
        Vec factors[vectors];
        dequantize_factors(cursor, at, scales, book, factors);
        Vec value[vectors];
        decoder.values(packed + at * Bits / 8, value);
        for (std::size_t h = 0; h < vectors; ++h) {
          store(difference + h * lanes,
                sub(load(w + at + h * lanes), unfused(mul(value[h], factors[h]))));
        }
        for (std::size_t k = 0; k < per_group; ++k) {
          const VecD d = subtract_doubles(widen(difference + k * double_lanes),
                                          widen(low_rank + at + k * double_lanes));
          acc[g * per_group + k] = fmadd_doubles(d, d, acc[g * per_group + k]);
        }
      }
    }
    for (std::size_t k = 0; k < accumulators; ++k)
      store_doubles(sum.lane.data() + (first + k * double_lanes) % square_lanes, acc[k]);
    sum.count += e;
  }
  scalar::add_error_squares_tail(sum, w, packed, scales, low_rank, e, n, block, book);
}

/// scalar::add_error_squares() of elements [0, n) with this instruction set: the same bits.
/// The codebook is not LLMInt8.
LOFTQ_TARGET inline void add_error_squares(SquareSum& sum, const float* w,
                                           const std::uint8_t* packed, const float* scales,
                                           const float* low_rank, std::size_t n, int block_size,
                                           Codebook book) {
  const auto block = static_cast<std::size_t>(block_size);
  const CodebookTable table = table_of(book);
  if (is_linear(book)) {
    add_error_squares_groups<8>(Int8Decoder{}, sum, w, packed, scales, low_rank, n, block, book);
  } else if (table.size == 4) {
    add_error_squares_groups<2>(CrumbDecoder(table.values), sum, w, packed, scales, low_rank, n,
                                block, book);
  } else if (table.size == 16) {
    add_error_squares_groups<4>(NibbleDecoder(table.values), sum, w, packed, scales, low_rank, n,
                                block, book);
  } else {
    add_error_squares_groups<8>(ByteDecoder(table.values), sum, w, packed, scales, low_rank, n,
                                block, book);
  }
}
