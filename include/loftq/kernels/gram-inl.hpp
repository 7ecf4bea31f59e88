/// @file kernels/gram-inl.hpp
/// The Gram matrices in double of CholeskyQR (detail/pieced_products.hpp's gram_in_double()),
/// written once for every instruction set.
///
/// This file has no include guard, on purpose: kernels/scalar.hpp, kernels/avx2.hpp and
/// kernels/avx512.hpp include it inside their namespaces, once each, after they have defined
/// - LOFTQ_TARGET, the `__attribute__((target(...)))` of every function here (empty for the
///   portable set);
/// - `VecD`, a vector of `double_lanes` doubles, which divides gram_lanes; load_doubles(p) and
///   store_doubles(p, v), unaligned; widen(p), the double_lanes floats at p as doubles;
///   fmadd_doubles(a, b, c), a * b + c with one rounding;
/// - `gram_block`: the Gram matrix is computed in blocks of gram_block x gram_block elements,
///   as many accumulators as the set has registers for.
/// Include nothing here: whatever this file includes would land in those namespaces.

/// g[i + j ldg] for columns > i >= j: the sum over p < depth of x[i ldx + p] x[j ldx + p] in
/// double, each product of two floats exact: the term of p goes into lane p % gram_lanes by one
/// FMA, in p order from 0, and the lanes are added as ((l0 + l1) + (l2 + l3)) + ((l4 + l5) +
/// (l6 + l7)). So g is the same bits on every instruction set. The strict upper triangle of g is
/// not written.
LOFTQ_TARGET inline void lower_gram(const float* x, std::size_t ldx, std::size_t depth, std::size_t columns,
                                    double* g, std::size_t ldg) {
  constexpr std::size_t lane_vectors = gram_lanes / double_lanes;
  const double zeros[gram_lanes] = {};
  const std::size_t rounds = depth / gram_lanes;
  for (std::size_t j0 = 0; j0 < columns; j0 += gram_block) {
    for (std::size_t i0 = j0; i0 < columns; i0 += gram_block) {
      // Columns past the last one repeat it; their sums are not stored.
      const float* xi[gram_block];
      const float* xj[gram_block];
      for (std::size_t u = 0; u < gram_block; ++u) {
        xi[u] = x + std::min(i0 + u, columns - 1) * ldx;
        xj[u] = x + std::min(j0 + u, columns - 1) * ldx;
      }
      VecD sum[gram_block][gram_block][lane_vectors];
#pragma GCC unroll 8
      for (std::size_t u = 0; u < gram_block; ++u) {
#pragma GCC unroll 8
        for (std::size_t w = 0; w < gram_block; ++w) {
#pragma GCC unroll 8
          for (std::size_t v = 0; v < lane_vectors; ++v) sum[u][w][v] = load_doubles(zeros);
        }
      }
      for (std::size_t r = 0; r < rounds; ++r) {
        const std::size_t p = r * gram_lanes;
        VecD a[gram_block][lane_vectors], b[gram_block][lane_vectors];
#pragma GCC unroll 8
        for (std::size_t u = 0; u < gram_block; ++u) {
#pragma GCC unroll 8
          for (std::size_t v = 0; v < lane_vectors; ++v) {
            a[u][v] = widen(xi[u] + p + v * double_lanes);
            b[u][v] = widen(xj[u] + p + v * double_lanes);
          }
        }
#pragma GCC unroll 8
        for (std::size_t u = 0; u < gram_block; ++u) {
#pragma GCC unroll 8
          for (std::size_t w = 0; w < gram_block; ++w) {
#pragma GCC unroll 8
            for (std::size_t v = 0; v < lane_vectors; ++v) sum[u][w][v] = fmadd_doubles(a[u][v], b[w][v], sum[u][w][v]);
          }
        }
      }
      for (std::size_t u = 0; u < gram_block; ++u) {
        for (std::size_t w = 0; w < gram_block; ++w) {
          const std::size_t i = i0 + u, j = j0 + w;
          if (i >= columns || j >= columns || i < j) continue;
          double lane[gram_lanes];
          for (std::size_t v = 0; v < lane_vectors; ++v) store_doubles(lane + v * double_lanes, sum[u][w][v]);
          for (std::size_t p = rounds * gram_lanes; p < depth; ++p) {
            double& l = lane[p % gram_lanes];
            l = std::fma(static_cast<double>(xi[u][p]), static_cast<double>(xj[w][p]), l);
          }
          g[i + j * ldg] = ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
        }
      }
    }
  }
}
