/// @file quantized.hpp
/// QuantizedMatrix: packed codes plus one float32 scale per block, and the LoadPath that
/// dequantizes them.
#pragma once

#include <Eigen/Core>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "codebook.hpp"
#include "detail/checks.hpp"
#include "double_quant.hpp"
#include "load_path.hpp"
#include "detail/packing.hpp"
#include "kernels/passes.hpp"

namespace loftq {

namespace detail {

/// The scales the loader multiplies by for block scales `scales` on `path`: the restored ones
/// with double quantization, else the scales themselves.
inline std::vector<float> loaded_scales(const std::vector<float>& scales, const LoadPath& path) {
  return path.double_quant ? restored_scales(double_quantize(scales)) : scales;
}

}  // namespace detail

/// A blockwise-quantized rows x cols matrix.
///
/// Element (i, j) is element k = i * cols + j of the row-major flattening; block b holds
/// elements [b * block_size, (b + 1) * block_size), the last block may be short. Codes are packed
/// first element in the highest bits (4-bit: high nibble first, as bitsandbytes); a byte's
/// unused low bits are 0. scales()[b] is the block's absmax. dequantize() gives what the
/// load_path() hands to the matmul: with a plain path table[code] * factor (codebook.hpp).
class QuantizedMatrix {
 public:
  /// An empty 0 x 0 matrix (NF4, block size 64).
  QuantizedMatrix() = default;

  /// Builds a matrix from its arrays, e.g. as loaded from a checkpoint. Throws
  /// std::invalid_argument unless rows, cols >= 1, block_size >= 1,
  /// codes.size() == ceil(rows * cols * bits / 8), scales.size() == ceil(rows * cols / block_size)
  /// and every scale is finite (a scale bitsandbytes restored from double quantization may be
  /// slightly below 0), and, with load_path.double_quant, a 4-bit codebook and scales >= 0.
  QuantizedMatrix(Eigen::Index rows, Eigen::Index cols, int block_size, Codebook codebook,
                  std::vector<std::uint8_t> codes, std::vector<float> scales, LoadPath load_path = {})
      : rows_(rows),
        cols_(cols),
        block_size_(block_size),
        codebook_(codebook),
        load_path_(load_path),
        codes_(std::move(codes)),
        scales_(std::move(scales)) {
    detail::check_not_empty("QuantizedMatrix", rows, cols);
    detail::check_block_size(block_size);
    const std::size_t n = size();
    const std::size_t want_codes = detail::packed_bytes(n, bits());
    if (codes_.size() != want_codes) {
      detail::fail("codes.size() = " + std::to_string(codes_.size()) + " does not match " +
                   std::to_string(want_codes) + " bytes for " + std::to_string(n) + " " +
                   std::to_string(bits()) + "-bit codes");
    }
    if (scales_.size() != blocks()) {
      detail::fail("scales.size() = " + std::to_string(scales_.size()) + " does not match " +
                   std::to_string(blocks()) + " blocks of " + std::to_string(block_size));
    }
    for (std::size_t b = 0; b < scales_.size(); ++b) {
      if (!std::isfinite(scales_[b])) {
        detail::fail("scales[" + std::to_string(b) + "] = " + std::to_string(scales_[b]) + " is not finite");
      }
    }
    detail::check_load_path(load_path_, codebook_);
    if (load_path_.double_quant) static_cast<void>(double_quantize(scales_));  // throws for a scale < 0
  }

  /// Rows (out_features).
  Eigen::Index rows() const { return rows_; }
  /// Columns (in_features).
  Eigen::Index cols() const { return cols_; }
  /// Number of elements, rows * cols.
  std::size_t size() const { return static_cast<std::size_t>(rows_) * static_cast<std::size_t>(cols_); }
  /// Elements per block.
  int block_size() const { return block_size_; }
  /// Number of blocks, ceil(size() / block_size()).
  std::size_t blocks() const {
    const auto b = static_cast<std::size_t>(block_size_);
    return (size() + b - 1) / b;
  }
  /// The codebook.
  Codebook codebook() const { return codebook_; }
  /// Bits per code.
  int bits() const { return bits_of(codebook_); }
  /// The packed codes, ceil(size() * bits() / 8) bytes.
  const std::vector<std::uint8_t>& codes() const { return codes_; }
  /// One absmax per block, as quantization found it (before double quantization).
  const std::vector<float>& scales() const { return scales_; }
  /// How the matrix is stored and dequantized.
  const LoadPath& load_path() const { return load_path_; }
  /// The scales dequantization multiplies by: scales(), or with double quantization the ones
  /// bitsandbytes restores from their 8-bit codes (restored_scales()).
  std::vector<float> loaded_scales() const {
    return detail::loaded_scales(scales_, load_path_);
  }
  /// The code of element k of the row-major flattening.
  std::uint8_t code(std::size_t k) const { return detail::get_code(codes_.data(), k, bits()); }
  /// Bytes held: the packed codes, the scales and the object itself.
  std::size_t memory_bytes() const {
    return codes_.size() + scales_.size() * sizeof(float) + sizeof(*this);
  }

  /// Writes the dequantized matrix row-major into out[0 .. rows * cols), with the kernels of
  /// active_isa() on threads() threads: the codebook's values times loaded_scales(), rounded to
  /// load_path().dequantized_to.
  void dequantize(float* out) const {
    if (!load_path_.double_quant) {
      detail::dequantize_array(codes_.data(), scales_.data(), size(), block_size_, codebook_, out);
    } else {
      const std::vector<float> loaded = loaded_scales();
      detail::dequantize_array(codes_.data(), loaded.data(), size(), block_size_, codebook_, out);
    }
    detail::for_each_chunk(size(), block_size_, [&](std::size_t, std::size_t first, std::size_t count) {
      round_to(load_path_.dequantized_to, out + first, count);
    });
  }

  /// Writes, row-major into out[0 .. rows * cols), the values a 16- or 32-bit backbone stores so
  /// that bitsandbytes, quantizing them at load time as load_path() says, makes this matrix:
  /// dequantize() but with scales() instead of loaded_scales() (bitsandbytes double-quantizes
  /// the absmax it finds itself). Rounded to dequantized_to, their block absmax are scales()
  /// and their codes codes(), so bitsandbytes finds this matrix again (tests/test_load_path.cpp).
  void backbone_values(float* out) const {
    detail::dequantize_array(codes_.data(), scales_.data(), size(), block_size_, codebook_, out);
    detail::for_each_chunk(size(), block_size_, [&](std::size_t, std::size_t first, std::size_t count) {
      round_to(load_path_.dequantized_to, out + first, count);
    });
  }

  /// The dequantized matrix.
  Eigen::MatrixXf dequantize() const {
    Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> out(rows_, cols_);
    dequantize(out.data());
    return out;
  }

 private:
  Eigen::Index rows_ = 0;
  Eigen::Index cols_ = 0;
  int block_size_ = 64;
  Codebook codebook_ = Codebook::nf4;
  LoadPath load_path_;
  std::vector<std::uint8_t> codes_;
  std::vector<float> scales_;
};

}  // namespace loftq
