// Fuzz target: the bitsandbytes reader on a valid 8 x 16 NF4 weight whose quant state (or, by the
// first input byte, another of its tensors) is replaced by the input.
#include <cstddef>
#include <cstdint>
#include <loftq/blockwise.hpp>
#include <loftq/io/bnb.hpp>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  static const std::vector<loftq::io::TensorData> valid = [] {
    const Eigen::MatrixXf w = Eigen::MatrixXf::Random(8, 16);
    loftq::io::BnbOptions options;
    options.double_quant = true;
    return loftq::io::bnb_tensors("w", loftq::quantize(w, loftq::Codebook::nf4, 64), options);
  }();
  std::vector<loftq::io::TensorData> tensors = valid;
  loftq::io::TensorData& target = tensors[data[0] % tensors.size()];
  target.bytes.assign(data + 1, data + size);
  if (data[0] & 0x80) target.shape = {target.bytes.size()};
  try {
    const loftq::QuantizedMatrix q = loftq::io::read_bnb("w", tensors);
    if (q.rows() < 1 || q.cols() < 1) __builtin_trap();
    if (q.size() <= 4096) static_cast<void>(q.dequantize());  // restored scales may be negative
  } catch (const loftq::io::FormatError&) {
  }
  return 0;
}
