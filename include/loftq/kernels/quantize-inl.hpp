/// @file kernels/quantize-inl.hpp
/// The vector kernels of blockwise quantization, written once for every instruction set: absmax,
/// the levels and codes of each codebook, quantize, the fused quantize-residual, dequantize and
/// its non-temporal variant. Each result equals kernels/scalar.hpp bit for bit.
///
/// This file has no include guard, on purpose: kernels/avx2.hpp and kernels/avx512.hpp include
/// it inside their namespaces (loftq::detail::kernels::avx2, ::avx512), once each, after they
/// have included the standard headers it uses and defined
/// - LOFTQ_TARGET, the `__attribute__((target(...)))` of every function here;
/// - `Vec` (float lanes) and `VecI` (int32 lanes) of `lanes` lanes, `vectors` per group;
/// - the operations of kernels/vector_ops-inl.hpp (included before) and load_first, abs_of,
///   reduce_max, unfused, zero_nan, narrow_unsigned, narrow_signed, gather, gather_codes,
///   repeat4, repeat4i, permute and lookup16, which differ in more than a prefix;
/// - MidpointSearch<Levels> (4 or 16 levels) and ByteSearch (256), the branch-free searches of
///   the sorted level of a lane among the midpoints, which differ most between the sets.
/// Include nothing else here: whatever this file includes would land in those namespaces.
///
/// The kernels walk an array in groups of 16 elements from element 0 (`vectors` vectors each),
/// so every group starts a byte of the packed codes for 2-, 4- and 8-bit codes; a group inside
/// one block uses that block's multiplier in every lane, one that crosses blocks gets each lane's
/// own. The last elements that do not fill a group go through scalar::quantize_tail() or
/// scalar::dequantize_tail().

#ifndef LOFTQ_TARGET
#error "kernels/quantize-inl.hpp is included by kernels/avx2.hpp and kernels/avx512.hpp only"
#endif

/// w[i .. i + lanes) - v[i .. i + lanes), or w[i .. i + lanes) when v is null.
LOFTQ_TARGET inline Vec load_target(const float* w, const float* v, std::size_t i) {
  const Vec x = load(w + i);
  return v != nullptr ? sub(x, load(v + i)) : x;
}

/// max(m, |x|) lane by lane; a NaN x leaves m, as std::max(m, std::fabs(x)) does.
LOFTQ_TARGET inline Vec max_magnitude(Vec m, Vec x) { return maximum(abs_of(x), m); }

/// Largest |w[i] - v[i]| over n values, or |w[i]| when v is null: as scalar::absmax() and
/// scalar::absmax_of_difference() (the maximum is exact, so the order does not matter).
LOFTQ_TARGET inline float absmax_of(const float* w, const float* v, std::size_t n) {
  Vec m0 = zero(), m1 = m0, m2 = m0, m3 = m0;
  std::size_t i = 0;
  for (; i + 4 * lanes <= n; i += 4 * lanes) {
    m0 = max_magnitude(m0, load_target(w, v, i));
    m1 = max_magnitude(m1, load_target(w, v, i + lanes));
    m2 = max_magnitude(m2, load_target(w, v, i + 2 * lanes));
    m3 = max_magnitude(m3, load_target(w, v, i + 3 * lanes));
  }
  for (; i + lanes <= n; i += lanes) m0 = max_magnitude(m0, load_target(w, v, i));
  if (i < n) {  // the last n - i values; the other lanes are 0 and read no memory
    const Vec x = load_first(w + i, n - i);
    m1 = max_magnitude(m1, v != nullptr ? sub(x, load_first(v + i, n - i)) : x);
  }
  return reduce_max(maximum(maximum(m0, m1), maximum(m2, m3)));
}

/// Packs 16 codes of Bits bits (one per byte of `codes`) into Bits * 2 bytes at out, the first
/// code in the highest bits.
template <int Bits>
LOFTQ_TARGET inline void store_codes(__m128i codes, std::uint8_t* out) {
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

/// out[h] = the lanes h * lanes .. of the 16 floats at p.
LOFTQ_TARGET inline void load_group(const float* p, Vec (&out)[vectors]) {
  for (std::size_t h = 0; h < vectors; ++h) out[h] = load(p + h * lanes);
}

/// factors[h] = the dequantization factors (dequantize_factor()) of lanes h * lanes .. of the
/// group at element e, which starts in the cursor's block: that block's in every lane, or, for a
/// group across blocks, each lane its own block's.
LOFTQ_TARGET inline void dequantize_factors(const BlockCursor& cursor, std::size_t e,
                                            const float* scales, Codebook book,
                                            Vec (&factors)[vectors]) {
  if (cursor.holds(e, group)) {
    const Vec factor = set1(dequantize_factor(book, scales[cursor.index()]));
    for (Vec& f : factors) f = factor;
    return;
  }
  alignas(64) float per_lane[group];
  cursor.fill(
      e, group, [scales, book](std::size_t b) { return dequantize_factor(book, scales[b]); },
      per_lane);
  load_group(per_lane, factors);
}

/// Codes of a 4- or 16-level lookup codebook: the level is the number of midpoints below
/// s = x * multiplier (MidpointSearch), the code that level's code. Midpoints lie in (-1, 1), so
/// the count below s is the same as below clamp(s, -1, 1) and the search skips the clamp; NaN
/// compares false and counts 0.
template <int Levels>
class SmallLookup {
  static_assert(Levels == 4 || Levels == 16, "SmallLookup: 4 or 16 levels");

 public:
  /// The search tables of `lookup`, whose values are table[code].
  LOFTQ_TARGET SmallLookup(const LookupQuantizer& lookup, const float* table)
      : search_(padded_midpoints<16>(lookup)) {
    alignas(16) std::uint8_t code[16] = {};
    alignas(64) float value[16] = {};
    for (int i = 0; i < Levels; ++i) {
      code[i] = lookup.codes[static_cast<std::size_t>(i)];
      value[i] = table[code[i]];
    }
    codes_ = _mm_load_si128(reinterpret_cast<const __m128i*>(code));
    load_group(value, values_);
  }

  /// The block multiplier, lookup_multiplier().
  static float multiplier(float absmax) { return lookup_multiplier(absmax); }

  /// Sorted level of each lane of s: the number of midpoints below s.
  LOFTQ_TARGET VecI level(Vec s) const { return search_.level(s); }

  /// The codes of 16 levels, one byte each.
  LOFTQ_TARGET __m128i codes(const VecI (&level)[vectors]) const {
    return _mm_shuffle_epi8(codes_, narrow_unsigned(level));
  }

  /// The table value of each level.
  LOFTQ_TARGET Vec value(VecI level) const {
    return Levels == 16 ? lookup16(values_, level) : permute(values_[0], level);
  }

 private:
  MidpointSearch<Levels> search_;
  __m128i codes_;        // code of each level
  Vec values_[vectors];  // table value of each level
};

/// Codes of a 256-level lookup codebook (Uniform<8>): the level by ByteSearch, its code and
/// value by gathers (the code is the level itself when the codes are in sorted order).
class LargeLookup {
 public:
  /// The search tables of `lookup`, whose values are table[code].
  LOFTQ_TARGET LargeLookup(const LookupQuantizer& lookup, const float* table)
      : search_(padded_midpoints<256>(lookup)) {
    for (std::size_t i = 0; i < 256; ++i) {
      codes_[i] = lookup.codes[i];
      values_[i] = table[lookup.codes[i]];
      identity_ = identity_ && lookup.codes[i] == i;
    }
  }

  /// The block multiplier, lookup_multiplier().
  static float multiplier(float absmax) { return lookup_multiplier(absmax); }

  /// Sorted level of each lane of s: the number of midpoints below s.
  LOFTQ_TARGET VecI level(Vec s) const { return search_.level(s); }

  /// The codes of 16 levels, one byte each.
  LOFTQ_TARGET __m128i codes(const VecI (&level)[vectors]) const {
    if (identity_) return narrow_unsigned(level);
    VecI code[vectors];
    for (std::size_t h = 0; h < vectors; ++h) code[h] = gather_codes(codes_, level[h]);
    return narrow_unsigned(code);
  }

  /// The table value of each level.
  LOFTQ_TARGET Vec value(VecI level) const { return gather(values_, level); }

 private:
  ByteSearch search_;
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

  /// q of each lane; the conversion rounds half to even, as std::nearbyint does.
  LOFTQ_TARGET VecI level(Vec s) const {
    return round_to_int(minimum(maximum(zero_nan(s), set1(-127.0f)), set1(127.0f)));
  }

  /// The two's-complement bytes of 16 q.
  LOFTQ_TARGET __m128i codes(const VecI (&level)[vectors]) const { return narrow_signed(level); }

  /// q as a float, int8_table[code].
  LOFTQ_TARGET Vec value(VecI level) const { return to_float(level); }
};

/// LLMInt8 codes: as Int8Levels, with the multiplier llm_int8_multiplier().
class LlmInt8Levels : public Int8Levels {
 public:
  /// The block multiplier, llm_int8_multiplier().
  static float multiplier(float absmax) { return llm_int8_multiplier(absmax); }
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
/// the dequantization factor of each lane: writes its codes and (Residual) its residual.
template <int Bits, bool Residual, class Levels>
LOFTQ_TARGET inline void quantize_group(const Levels& levels, const float* w, const float* low_rank,
                                        std::size_t e, const Vec (&multipliers)[vectors],
                                        const Vec (&factors)[vectors], std::uint8_t* packed,
                                        float* residual) {
  Vec x[vectors];
  VecI level[vectors];
  for (std::size_t h = 0; h < vectors; ++h) {
    const std::size_t at = e + h * lanes;
    x[h] = load(w + at);
    const Vec target = Residual ? sub(x[h], load(low_rank + at)) : x[h];
    level[h] = levels.level(mul(target, multipliers[h]));
  }
  store_codes<Bits>(levels.codes(level), packed + e * Bits / 8);
  if constexpr (Residual) {
    for (std::size_t h = 0; h < vectors; ++h) {
      const Vec dequantized = unfused(mul(levels.value(level[h]), factors[h]));
      store(residual + e + h * lanes, sub(x[h], dequantized));
    }
  }
}

/// Quantizes w (Residual: w - low_rank) as scalar::quantize() (scalar::quantize_residual())
/// does, with the levels of `levels`; Bits is the code width.
template <int Bits, bool Residual, class Levels>
LOFTQ_TARGET void quantize_groups(const Levels& book_levels, const float* w, const float* low_rank,
                                  std::size_t n, std::size_t block, Codebook book,
                                  const LookupQuantizer& lookup, std::uint8_t* packed,
                                  float* scales, float* residual) {
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
      Vec multipliers[vectors];
      Vec factors[vectors];
      if (cursor.holds(e, group)) {  // a run of groups inside one block
        const float absmax = scales[cursor.index()];
        const Vec multiplier = set1(Levels::multiplier(absmax));
        const Vec factor = set1(dequantize_factor(book, absmax));
        for (std::size_t h = 0; h < vectors; ++h) {
          multipliers[h] = multiplier;
          factors[h] = factor;
        }
        const std::size_t end = std::min(stop, cursor.end());
        for (; e + group <= end; e += group) {
          prefetch_next_span<Residual>(w, low_rank, e, n);
          quantize_group<Bits, Residual>(levels, w, low_rank, e, multipliers, factors, packed,
                                         residual);
        }
      } else {  // a group across blocks: each lane takes its own block's numbers
        alignas(64) float per_lane[group];
        cursor.fill(
            e, group, [scales](std::size_t b) { return Levels::multiplier(scales[b]); }, per_lane);
        load_group(per_lane, multipliers);
        dequantize_factors(cursor, e, scales, book, factors);
        quantize_group<Bits, Residual>(levels, w, low_rank, e, multipliers, factors, packed,
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
LOFTQ_TARGET void quantize_book(const float* w, const float* low_rank, std::size_t n,
                                int block_size, Codebook book, const LookupQuantizer& lookup,
                                std::uint8_t* packed, float* scales, float* residual) {
  const auto block = static_cast<std::size_t>(block_size);
  const float* table = table_of(book).values;
  if (book == Codebook::llm_int8) {
    quantize_groups<8, Residual>(LlmInt8Levels{}, w, low_rank, n, block, book, lookup, packed,
                                 scales, residual);
  } else if (is_linear(book)) {
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
  LOFTQ_TARGET explicit NibbleDecoder(const float* table) { load_group(table, table_); }

  /// out[h] gets the values of codes h * lanes ...
  LOFTQ_TARGET void values(const std::uint8_t* packed, Vec (&out)[vectors]) const {
    const __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(packed));
    const __m128i doubled = _mm_unpacklo_epi8(bytes, bytes);  // each byte twice
    // Lane 2i holds byte i >> 4, lane 2i + 1 byte i; lookup16() reads the low 4 bits.
    const VecI shifts = repeat4i(4, 0, 4, 0);
    for (std::size_t h = 0; h < vectors; ++h) {
      out[h] = lookup16(table_, shift_right(widen_u8(doubled, h), shifts));
    }
  }

 private:
  Vec table_[vectors];
};

/// Table values of 16 2-bit codes, 4 bytes, highest bits first.
class CrumbDecoder {
 public:
  /// Decodes to table[code], 4 entries.
  LOFTQ_TARGET explicit CrumbDecoder(const float* table)
      : table_(repeat4(table[0], table[1], table[2], table[3])) {}

  /// out[h] gets the values of codes h * lanes ...
  LOFTQ_TARGET void values(const std::uint8_t* packed, Vec (&out)[vectors]) const {
    int word = 0;
    std::memcpy(&word, packed, 4);
    const __m128i bytes = _mm_cvtsi32_si128(word);
    const __m128i doubled = _mm_unpacklo_epi8(bytes, bytes);
    const __m128i quadrupled = _mm_unpacklo_epi16(doubled, doubled);  // each byte four times
    // The table repeats every 4 entries, so the bits above each code do not matter.
    const VecI shifts = repeat4i(6, 4, 2, 0);
    for (std::size_t h = 0; h < vectors; ++h) {
      out[h] = permute(table_, shift_right(widen_u8(quadrupled, h), shifts));
    }
  }

 private:
  Vec table_;
};

/// Table values of 16 8-bit codes of a 256-entry lookup table, by gathers.
class ByteDecoder {
 public:
  /// Decodes to table[code], 256 entries.
  explicit ByteDecoder(const float* table) : table_(table) {}

  /// out[h] gets the values of codes h * lanes ...
  LOFTQ_TARGET void values(const std::uint8_t* packed, Vec (&out)[vectors]) const {
    const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(packed));
    for (std::size_t h = 0; h < vectors; ++h) out[h] = gather(table_, widen_u8(bytes, h));
  }

 private:
  const float* table_;
};

/// Int8 values of 16 codes: the signed bytes as floats.
class Int8Decoder {
 public:
  /// out[h] gets the values of codes h * lanes ...
  LOFTQ_TARGET void values(const std::uint8_t* packed, Vec (&out)[vectors]) const {
    const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(packed));
    for (std::size_t h = 0; h < vectors; ++h) out[h] = to_float(widen_i8(bytes, h));
  }
};

/// Writes the 16 dequantized values of the group at element e: decoded values times the factor
/// of each lane. Stream uses non-temporal stores, for out aligned to sizeof(Vec).
template <int Bits, bool Stream, class Decoder>
LOFTQ_TARGET inline void dequantize_group(const Decoder& decoder, const std::uint8_t* packed,
                                          std::size_t e, const Vec (&factors)[vectors],
                                          float* out) {
  Vec value[vectors];
  decoder.values(packed + e * Bits / 8, value);
  for (std::size_t h = 0; h < vectors; ++h) {
    const Vec result = mul(value[h], factors[h]);
    if constexpr (Stream) {
      stream(out + e + h * lanes, result);
    } else {
      store(out + e + h * lanes, result);
    }
  }
}

/// Dequantizes as scalar::dequantize() does, with the values of `decoder`; Bits is the code
/// width. Stream writes out with non-temporal stores and needs out aligned to sizeof(Vec).
template <int Bits, bool Stream, class Decoder>
LOFTQ_TARGET void dequantize_groups(const Decoder& decoder, const std::uint8_t* packed,
                                    const float* scales, std::size_t n, std::size_t block,
                                    Codebook book, float* out) {
  BlockCursor cursor(n, block);
  std::size_t e = 0;
  while (e + group <= n) {
    cursor.seek(e);
    Vec factors[vectors];
    dequantize_factors(cursor, e, scales, book, factors);
    if (cursor.holds(e, group)) {  // a run of groups inside one block, all with its factor
      for (; e + group <= cursor.end(); e += group) {
        dequantize_group<Bits, Stream>(decoder, packed, e, factors, out);
      }
    } else {  // a group across blocks
      dequantize_group<Bits, Stream>(decoder, packed, e, factors, out);
      e += group;
    }
  }
  if (e < n) scalar::dequantize_tail(packed, scales, e, n, block, book, out);
  if constexpr (Stream) _mm_sfence();
}

/// dequantize_groups() with the decoder and code width of `book`.
template <bool Stream>
LOFTQ_TARGET void dequantize_book(const std::uint8_t* packed, const float* scales, std::size_t n,
                                  int block_size, Codebook book, float* out) {
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

/// scalar::quantize() with this instruction set.
LOFTQ_TARGET inline void quantize(const float* x, std::size_t n, int block_size, Codebook book,
                                  const LookupQuantizer& lookup, std::uint8_t* packed,
                                  float* scales) {
  quantize_book<false>(x, nullptr, n, block_size, book, lookup, packed, scales, nullptr);
}

/// scalar::dequantize() (the whole-array overload) with this instruction set.
LOFTQ_TARGET inline void dequantize(const std::uint8_t* packed, const float* scales, std::size_t n,
                                    int block_size, Codebook book, float* out) {
  dequantize_book<false>(packed, scales, n, block_size, book, out);
}

/// dequantize(), with non-temporal stores when out is aligned to a vector: for outputs larger
/// than the caches.
LOFTQ_TARGET inline void dequantize_nontemporal(const std::uint8_t* packed, const float* scales,
                                                std::size_t n, int block_size, Codebook book,
                                                float* out) {
  if (reinterpret_cast<std::uintptr_t>(out) % sizeof(Vec) == 0) {
    dequantize_book<true>(packed, scales, n, block_size, book, out);
  } else {
    dequantize_book<false>(packed, scales, n, block_size, book, out);
  }
}

/// scalar::quantize_residual() with this instruction set.
LOFTQ_TARGET inline void quantize_residual(const float* w, const float* low_rank, std::size_t n,
                                           int block_size, Codebook book,
                                           const LookupQuantizer& lookup, std::uint8_t* packed,
                                           float* scales, float* residual) {
  quantize_book<true>(w, low_rank, n, block_size, book, lookup, packed, scales, residual);
}
