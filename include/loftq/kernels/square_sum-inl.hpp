/// @file kernels/square_sum-inl.hpp
/// The sums of squares of kernels/scalar.hpp's SquareSum, written once for every instruction
/// set.
///
/// This file has no include guard, on purpose: kernels/scalar.hpp, kernels/avx2.hpp and
/// kernels/avx512.hpp include it inside their namespaces, once each, after they have defined
/// - LOFTQ_TARGET, the `__attribute__((target(...)))` of every function here (empty for the
///   portable set);
/// - `VecD`, a vector of `double_lanes` doubles, which divides square_lanes;
/// - load_doubles(p) and store_doubles(p, v), unaligned; widen(p), the double_lanes floats at p
///   as doubles; subtract_doubles(a, b); fmadd_doubles(a, b, c), a * b + c with one rounding.
/// Include nothing here: whatever this file includes would land in those namespaces.

/// Adds to `sum` the terms (x[i] - y[i])^2, or x[i]^2 when y is null, of the next n elements of
/// its sequence: the same bits as n calls of SquareSum::add(). Whole rounds of square_lanes
/// elements run in vectors, one FMA per lane.
LOFTQ_TARGET inline void add_squares(SquareSum& sum, const float* x, const float* y, std::size_t n) {
  std::size_t i = 0;
  for (; i < n && sum.count % square_lanes != 0; ++i) sum.add(x[i], y != nullptr ? y[i] : 0.0f);
  const std::size_t rounds = (n - i) / square_lanes;
  if (rounds > 0) {
    constexpr std::size_t accumulators = square_lanes / double_lanes;
    VecD acc[accumulators];
    for (std::size_t k = 0; k < accumulators; ++k) acc[k] = load_doubles(sum.lane.data() + k * double_lanes);
    const std::size_t end = i + rounds * square_lanes;
    if (y == nullptr) {
      for (; i < end; i += square_lanes) {
        for (std::size_t k = 0; k < accumulators; ++k) {
          const VecD d = widen(x + i + k * double_lanes);
          acc[k] = fmadd_doubles(d, d, acc[k]);
        }
      }
    } else {
      for (; i < end; i += square_lanes) {
        for (std::size_t k = 0; k < accumulators; ++k) {
          const VecD d = subtract_doubles(widen(x + i + k * double_lanes), widen(y + i + k * double_lanes));
          acc[k] = fmadd_doubles(d, d, acc[k]);
        }
      }
    }
    for (std::size_t k = 0; k < accumulators; ++k) store_doubles(sum.lane.data() + k * double_lanes, acc[k]);
    sum.count += rounds * square_lanes;
  }
  for (; i < n; ++i) sum.add(x[i], y != nullptr ? y[i] : 0.0f);
}
