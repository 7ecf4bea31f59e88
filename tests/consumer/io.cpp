// The I/O layer, compiled from outside the project: a bfloat16 safetensors file written and read
// back, and a failure caught through the one exception base.
#include <loftq/io/safetensors.hpp>
#include <loftq/loftq.hpp>

#include <cstdio>
#include <filesystem>

int main() {
  const loftq::RowMatrixXf W = loftq::RowMatrixXf::Random(8, 64) * 0.02f;
  const loftq::QuantizedMatrix q = loftq::quantize<loftq::NF4>(W);
  const loftq::RowMatrixXf Q = q.dequantize();
  const auto path = std::filesystem::temp_directory_path() / "loftq_consumer_io.safetensors";
  std::vector<loftq::io::TensorSource> tensors;
  tensors.push_back(loftq::io::source_of(loftq::io::float_tensor("q.weight", Q.data(), {8, 64}, loftq::io::Dtype::bf16)));
  loftq::io::write_safetensors(path, std::move(tensors));
  const loftq::io::SafetensorsReader reader(path);
  const loftq::RowMatrixXf back = reader.read_matrix(reader.at("q.weight"));
  std::filesystem::remove(path);
  bool caught = false;
  try {
    loftq::io::SafetensorsReader missing(path);
  } catch (const loftq::io::Error& e) {
    caught = true;
    std::printf("as expected: %s\n", e.what());
  }
  // NF4 levels times a bf16-rounded scale: bf16 keeps 8 significant bits, so the round trip is close.
  const float difference = (back - Q).cwiseAbs().maxCoeff();
  std::printf("bf16 round trip of an NF4 matrix: max difference %g\n", difference);
  return caught && difference <= 0.004f * Q.cwiseAbs().maxCoeff() ? 0 : 1;
}
