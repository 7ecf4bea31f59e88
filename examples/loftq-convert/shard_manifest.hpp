/// @file shard_manifest.hpp
/// The manifest of a shard directory: which shard it is and the settings it was made with, so
/// that a merge assembles only shards made alike.
#pragma once

#include <filesystem>
#include <loftq/io/error.hpp>
#include <loftq/io/file.hpp>
#include <loftq/io/json.hpp>
#include <string>
#include <vector>

#include "options.hpp"

namespace loftq_convert {

/// Name of a shard directory's manifest.
inline constexpr const char* manifest_name = "loftq_shard.json";

/// The settings that shards must share to be merged, as JSON.
inline loftq::io::Json settings_json(const ConvertOptions& options) {
  return {{"rank", options.rank},
          {"iters", options.iters},
          {"block_size", options.block_size},
          {"lora_alpha", options.lora_alpha},
          {"format", static_cast<int>(options.format)},
          {"double_quant", options.double_quant},
          {"target_modules", options.target_modules}};
}

/// The manifest of shard options.shard_index of options.shard_count, as JSON.
inline loftq::io::Json manifest_json(const ConvertOptions& options) {
  return {{"shard", std::to_string(options.shard_index) + "/" + std::to_string(options.shard_count)},
          {"settings", settings_json(options)}};
}

/// Throws loftq::io::ArgumentError unless every directory of options.merge holds a manifest
/// made with the settings of `options`; FormatError or FileError for a manifest that is
/// malformed or cannot be read.
inline void check_shards(const ConvertOptions& options) {
  using namespace loftq::io;
  const std::string settings = dump_json(settings_json(options));
  for (const std::filesystem::path& dir : options.merge) {
    const std::string what = (dir / manifest_name).string();
    const std::string made = dump_json(json_at(parse_json(read_small_file(dir / manifest_name), what), "settings", what));
    if (made != settings) {
      throw ArgumentError("shard " + dir.string() + " was made with other settings: " + made + ", this merge has " + settings);
    }
  }
}

}  // namespace loftq_convert
