// Fuzz target: the text of a model.safetensors.index.json through its parser.
#include <cstddef>
#include <cstdint>
#include <loftq/io/checkpoint.hpp>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const loftq::io::SafetensorsIndex index =
        loftq::io::parse_safetensors_index(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz");
    for (const auto& file : index.files) {
      if (file.first.find('/') != std::string::npos) __builtin_trap();  // never a path outside the model
    }
  } catch (const loftq::io::FormatError&) {
  }
  return 0;
}
