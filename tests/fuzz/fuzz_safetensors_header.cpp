// Fuzz target: a whole safetensors file in memory through the header checks of the reader.
#include <cstddef>
#include <cstdint>
#include <loftq/io/safetensors.hpp>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const std::string_view file(reinterpret_cast<const char*>(data), size);
    unsigned char length[8] = {};
    for (std::size_t i = 0; i < 8 && i < size; ++i) length[i] = data[i];
    const std::uint64_t header = loftq::io::safetensors_header_length(length, size, "fuzz");
    const loftq::io::SafetensorsHeader parsed =
        loftq::io::parse_safetensors_header(file.substr(8, static_cast<std::size_t>(header)), size, "fuzz");
    for (const loftq::io::TensorInfo& t : parsed.tensors) {
      if (parsed.data_offset + t.end > size) __builtin_trap();  // the checks must keep tensors inside the file
    }
  } catch (const loftq::io::FormatError&) {
  }
  return 0;
}
