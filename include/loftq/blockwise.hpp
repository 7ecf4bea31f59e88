/// @file blockwise.hpp
/// Blockwise quantization as bitsandbytes does it: quantize<Book>(W, block_size), dequantize(Q).
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

#include "codebook.hpp"
#include "detail/checks.hpp"
#include "detail/packing.hpp"
#include "kernels/scalar.hpp"
#include "quantized.hpp"

namespace loftq {

/// Row-major float matrix, the layout blocks are taken from.
using RowMatrixXf = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// Quantizes the row-major array data (rows x cols) with `codebook` in blocks of block_size
/// consecutive elements. Throws std::invalid_argument for an empty shape, a block size below 1
/// or a non-finite value (naming its row and column).
inline QuantizedMatrix quantize_row_major(const float* data, Eigen::Index rows, Eigen::Index cols,
                                          Codebook codebook, int block_size = 64) {
  detail::check_not_empty("W", rows, cols);
  detail::check_block_size(block_size);
  detail::check_finite("W", data, rows, cols);
  const int bits = bits_of(codebook);
  const std::size_t n = static_cast<std::size_t>(rows) * static_cast<std::size_t>(cols);
  const auto block = static_cast<std::size_t>(block_size);
  const std::size_t blocks = (n + block - 1) / block;
  std::vector<std::uint8_t> codes(detail::packed_bytes(n, bits), 0);
  std::vector<float> scales(blocks);
  std::vector<std::uint8_t> block_codes(std::min(block, n));
  const kernels::LookupQuantizer lookup =
      is_linear(codebook) ? kernels::LookupQuantizer{} : kernels::make_lookup_quantizer(table_of(codebook));
  for (std::size_t b = 0; b < blocks; ++b) {
    const std::size_t first = b * block;
    const std::size_t len = std::min(block, n - first);
    const float* x = data + first;
    const float absmax = kernels::scalar::absmax(x, len);
    scales[b] = absmax;
    if (is_linear(codebook)) {
      kernels::scalar::quantize_int8(x, len, absmax, block_codes.data());
    } else {
      kernels::scalar::quantize_lookup(x, len, absmax, lookup, block_codes.data());
    }
    for (std::size_t i = 0; i < len; ++i) detail::or_code(codes.data(), first + i, bits, block_codes[i]);
  }
  return QuantizedMatrix(rows, cols, block_size, codebook, std::move(codes), std::move(scales));
}

/// Quantizes W (any Eigen expression of floats, rows x cols) with `codebook`, blocks taken from
/// the row-major flattening. Throws as quantize_row_major().
template <class Derived, std::enable_if_t<!is_codebook_v<Derived>, int> = 0>
QuantizedMatrix quantize(const Eigen::MatrixBase<Derived>& W, Codebook codebook, int block_size = 64) {
  static_assert(std::is_same_v<typename Derived::Scalar, float>, "loftq::quantize: W must hold float");
  if constexpr (std::is_same_v<Derived, RowMatrixXf>) {
    return quantize_row_major(W.derived().data(), W.rows(), W.cols(), codebook, block_size);
  } else {
    const RowMatrixXf rowmajor = W;
    return quantize_row_major(rowmajor.data(), rowmajor.rows(), rowmajor.cols(), codebook, block_size);
  }
}

/// Quantizes W with the codebook policy Book (NF2, NF4, FP4, Int8, Uniform<2|4|8>).
template <class Book, class Derived>
QuantizedMatrix quantize(const Eigen::MatrixBase<Derived>& W, int block_size = 64) {
  static_assert(is_codebook_v<Book>, "loftq::quantize<Book>: Book must be a codebook policy");
  return quantize(W, Book::id, block_size);
}

/// The dequantized matrix of Q, Q.dequantize().
inline Eigen::MatrixXf dequantize(const QuantizedMatrix& Q) { return Q.dequantize(); }

}  // namespace loftq
