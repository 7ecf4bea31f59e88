/// @file blockwise.hpp
/// Blockwise quantization as bitsandbytes does it: quantize<Book>(W, block_size), dequantize(Q).
#pragma once

#include <Eigen/Core>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "codebook.hpp"
#include "detail/checks.hpp"
#include "detail/row_major.hpp"
#include "detail/packing.hpp"
#include "kernels/passes.hpp"
#include "load_path.hpp"
#include "matrix.hpp"
#include "quantized.hpp"

namespace loftq {

namespace detail {

/// Throws std::invalid_argument naming the block of a target (rows x cols, row-major, blocks
/// of block_size) whose absmax is not finite: a value beyond float16's range where the target
/// was rounded to float16, or an infinite value.
inline void check_scales_finite(const char* target, const std::vector<float>& scales, int block_size,
                                Eigen::Index cols) {
  for (std::size_t b = 0; b < scales.size(); ++b) {
    if (!std::isfinite(scales[b])) {
      const std::size_t first = b * static_cast<std::size_t>(block_size);
      const auto c = static_cast<std::size_t>(cols);
      fail(std::string(target) + " has a value beyond the range of its load path's float type (float16: 65504) or an infinite value in block " +
           std::to_string(b) + " (from row " + std::to_string(first / c) + ", col " + std::to_string(first % c) + ")");
    }
  }
}

}  // namespace detail

/// Quantizes the row-major array data (rows x cols) with `codebook` in blocks of block_size
/// consecutive elements, with the kernels of active_isa() on threads() threads, for the load
/// path `load_path`: each element is first rounded as detail::round_target() says (to
/// load_path.quantized_from, and to float16 for LLMInt8), so that codes and absmax are the ones
/// bitsandbytes finds. Throws std::invalid_argument for an empty shape, a block size below 1, a
/// non-finite value (naming its row and column), an invalid load path, or a value beyond
/// float16's range on a float16 path.
inline QuantizedMatrix quantize_row_major(const float* data, Eigen::Index rows, Eigen::Index cols,
                                          Codebook codebook, int block_size = 64,
                                          const LoadPath& load_path = {}) {
  detail::check_not_empty("W", rows, cols);
  detail::check_block_size(block_size);
  detail::check_finite("W", data, rows, cols);
  detail::check_codebook(codebook);
  detail::check_load_path(load_path, codebook);
  const std::size_t n = static_cast<std::size_t>(rows) * static_cast<std::size_t>(cols);
  const auto block = static_cast<std::size_t>(block_size);
  std::vector<std::uint8_t> codes(detail::packed_bytes(n, bits_of(codebook)));
  std::vector<float> scales((n + block - 1) / block);
  if (detail::is_kernel_path(load_path, codebook)) {
    detail::quantize_array(data, n, block_size, codebook, codes.data(), scales.data());
  } else {
    std::vector<float> target(data, data + n);
    detail::for_each_chunk(n, block_size, [&](std::size_t, std::size_t first, std::size_t count) {
      detail::round_target(load_path, codebook, target.data() + first, count);
    });
    detail::quantize_array(target.data(), n, block_size, codebook, codes.data(), scales.data());
    detail::check_scales_finite("W", scales, block_size, cols);
  }
  return QuantizedMatrix(rows, cols, block_size, codebook, std::move(codes), std::move(scales), load_path);
}

/// Quantizes target = w - low_rank (row-major rows x cols arrays; one float subtraction per
/// element) with `codebook` in blocks of block_size, and writes residual[k] = w[k] - Q's
/// dequantized element k into residual[0 .. rows * cols), in one pass that reads w and low_rank
/// once. Q equals quantize_row_major() of the target and residual equals w minus
/// Q.dequantize(), bit for bit. Throws std::invalid_argument for an empty shape, a block size
/// below 1, or an infinite value in the target, found through the block scales. Unlike
/// quantize_row_major() it does not check every element: w and low_rank must be finite, and a
/// NaN in them is not reported (its element gets the code of the lowest level, 0 for Int8).
/// LLMInt8 takes a separate quantize and dequantize pass (its value is not the kernels').
inline QuantizedMatrix quantize_residual(const float* w, const float* low_rank, Eigen::Index rows,
                                         Eigen::Index cols, Codebook codebook, int block_size,
                                         float* residual) {
  detail::check_not_empty("w", rows, cols);
  detail::check_block_size(block_size);
  detail::check_codebook(codebook);
  const std::size_t n = static_cast<std::size_t>(rows) * static_cast<std::size_t>(cols);
  const auto block = static_cast<std::size_t>(block_size);
  if (codebook == Codebook::llm_int8) {
    std::vector<float> target(n);
    for (std::size_t i = 0; i < n; ++i) target[i] = w[i] - low_rank[i];
    detail::round_target(LoadPath{}, codebook, target.data(), n);
    std::vector<std::uint8_t> codes(n);
    std::vector<float> scales((n + block - 1) / block);
    detail::quantize_array(target.data(), n, block_size, codebook, codes.data(), scales.data());
    detail::check_scales_finite("w - low_rank", scales, block_size, cols);
    QuantizedMatrix q(rows, cols, block_size, codebook, std::move(codes), std::move(scales));
    q.dequantize(residual);
    for (std::size_t i = 0; i < n; ++i) residual[i] = w[i] - residual[i];
    return q;
  }
  std::vector<std::uint8_t> codes(detail::packed_bytes(n, bits_of(codebook)));
  std::vector<float> scales((n + block - 1) / block);
  detail::quantize_residual_array(w, low_rank, n, block_size, codebook, codes.data(), scales.data(),
                                  residual);
  for (std::size_t b = 0; b < scales.size(); ++b) {
    if (!std::isfinite(scales[b])) {
      const std::size_t first = b * block;
      const auto c = static_cast<std::size_t>(cols);
      detail::fail("w - low_rank has an infinite value in block " + std::to_string(b) +
                   " (from row " + std::to_string(first / c) + ", col " +
                   std::to_string(first % c) + ")");
    }
  }
  return QuantizedMatrix(rows, cols, block_size, codebook, std::move(codes), std::move(scales));
}

/// Quantizes W (any Eigen expression of floats, rows x cols) with `codebook`, blocks taken from
/// the row-major flattening. Throws as quantize_row_major().
template <class Derived, std::enable_if_t<!is_codebook_v<Derived>, int> = 0>
QuantizedMatrix quantize(const Eigen::MatrixBase<Derived>& W, Codebook codebook, int block_size = 64) {
  static_assert(std::is_same_v<typename Derived::Scalar, float>, "loftq::quantize: W must hold float");
  return detail::with_row_major(W, [&](const RowMatrixXf& row_major) {
    return quantize_row_major(row_major.data(), row_major.rows(), row_major.cols(), codebook, block_size);
  });
}

/// Quantizes W (any Eigen expression of floats) with `codebook` for the load path `load_path`,
/// as quantize_row_major(); Q.dequantize() is what that path hands to the matmul.
template <class Derived>
QuantizedMatrix quantize(const Eigen::MatrixBase<Derived>& W, Codebook codebook, int block_size,
                         const LoadPath& load_path) {
  static_assert(std::is_same_v<typename Derived::Scalar, float>, "loftq::quantize: W must hold float");
  return detail::with_row_major(W, [&](const RowMatrixXf& row_major) {
    return quantize_row_major(row_major.data(), row_major.rows(), row_major.cols(), codebook, block_size,
                              load_path);
  });
}

/// Quantizes W with the codebook policy Book (NF2, NF4, FP4, Int8, LLMInt8, Uniform<2|4|8>).
template <class Book, class Derived>
QuantizedMatrix quantize(const Eigen::MatrixBase<Derived>& W, int block_size = 64) {
  static_assert(is_codebook_v<Book>, "loftq::quantize<Book>: Book must be a codebook policy");
  return quantize(W, Book::id, block_size);
}

/// The dequantized matrix of Q, Q.dequantize().
inline Eigen::MatrixXf dequantize(const QuantizedMatrix& Q) { return Q.dequantize(); }

}  // namespace loftq
