/// @file shard_manifest.hpp
/// The manifest of a shard directory: which shard it is, and every setting that changes an
/// output byte, by name, so that a merge assembles only shards made alike.
///
///     {"shard": "1/3",
///      "settings": {"loftq_version": "0.1.0", "input": {...}, "bits": 4, "codebook": "nf4", ...}}
///
/// settings_json() is the one place that records settings; a merge compares every member it
/// finds, so a setting recorded there is also checked.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <loftq/io/checkpoint.hpp>
#include <loftq/io/error.hpp>
#include <loftq/io/file.hpp>
#include <loftq/io/json.hpp>
#include <loftq/version.hpp>
#include <string>
#include <vector>

#include "options.hpp"
#include "weight_layout.hpp"

namespace loftq_convert {

/// Name of a shard directory's manifest.
inline constexpr const char* manifest_name = "loftq_shard.json";

/// The identity of an input model: its file and tensor counts, total bytes, a fingerprint
/// (64-bit FNV-1a, hex) of every file name, every tensor's name, dtype, shape and offsets, and
/// the first and last 256 bytes of every tensor's data, and its config.json's model_type (which
/// decides which weights are transposed, model_type_of()). Reads a few bytes per tensor; another
/// model, or the same with other weights in those bytes, gives another identity.
inline loftq::io::OrderedJson input_identity(const loftq::io::Checkpoint& checkpoint) {
  std::uint64_t hash = 0xcbf29ce484222325u;
  const auto mix = [&hash](const void* data, std::size_t n) {
    const auto* bytes = static_cast<const unsigned char*>(data);
    for (std::size_t i = 0; i < n; ++i) hash = (hash ^ bytes[i]) * 0x100000001b3u;
  };
  const auto mix_text = [&mix](const std::string& text) { mix(text.c_str(), text.size() + 1); };
  const auto mix_u64 = [&mix](std::uint64_t value) {
    unsigned char bytes[8];
    for (int i = 0; i < 8; ++i) bytes[i] = static_cast<unsigned char>(value >> (8 * i));
    mix(bytes, 8);
  };
  std::uint64_t tensors = 0, bytes = 0;
  constexpr std::uint64_t sample = 256;
  unsigned char data[sample];
  for (const std::string& name : checkpoint.file_names()) {
    mix_text(name);
    const loftq::io::SafetensorsReader& file = checkpoint.file(name);
    for (const loftq::io::TensorInfo& t : file.tensors()) {
      mix_text(t.name);
      mix_text(std::string(loftq::io::dtype_name(t.dtype)));
      mix_u64(t.shape.size());
      for (std::uint64_t d : t.shape) mix_u64(d);
      mix_u64(t.begin);
      mix_u64(t.end);
      const std::uint64_t n = std::min(sample, t.bytes());
      for (const std::uint64_t offset : {std::uint64_t{0}, t.bytes() - n}) {
        file.read_bytes(t, offset, data, static_cast<std::size_t>(n));
        mix(data, static_cast<std::size_t>(n));
      }
      ++tensors;
      bytes += t.bytes();
    }
  }
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(hash));
  return {{"files", checkpoint.file_names().size()},
          {"tensors", tensors},
          {"bytes", bytes},
          {"fingerprint", hex},
          {"model_type", model_type_of(checkpoint.directory())}};
}

/// The settings of `options` that change an output byte, by name, with readable values
/// (strings for enumerations, the codebook and alpha in effect, null when unset), plus the
/// library version and `input` (input_identity() of the input model).
inline loftq::io::OrderedJson settings_json(const ConvertOptions& options, const loftq::io::OrderedJson& input) {
  using loftq::io::OrderedJson;
  // One binding per field: a field added to ConvertOptions or SolverSettings stops the build
  // here until it is recorded below, or listed among those that change no output byte.
  const auto& [input_dir, output, bits, rank, iters, codebook, block_size, target_modules, mixed, bits_budget,
               lora_alpha, use_rslora, format, double_quant, solver, threads, shard_index, shard_count, merge, report, overwrite] =
      options;
  const auto& [svd, oversampling, krylov_depth, warm_krylov_depth, krylov_tolerance, power_iters, warm_start, seed, keep_best] =
      solver;
  // Not recorded, since they change no output byte: input_dir and output (the input is recorded
  // by identity), threads (results do not depend on them), shard_index and shard_count
  // (recorded beside the settings), merge, report and overwrite. `codebook` is recorded as
  // codebook_of_bits() applies it.
  return {
      {"loftq_version", std::to_string(LOFTQ_VERSION_MAJOR) + "." + std::to_string(LOFTQ_VERSION_MINOR) + "." +
                            std::to_string(LOFTQ_VERSION_PATCH)},
      {"input", input},
      {"bits", bits},
      {"codebook", std::string(loftq::name_of(codebook_of_bits(options, bits)))},
      {"block_size", block_size},
      {"mixed", mixed ? OrderedJson{{"high_bits", mixed->high_bits}, {"blocks", mixed->blocks}, {"low_bits", mixed->low_bits}}
                      : OrderedJson()},
      {"bits_budget", bits_budget ? OrderedJson(*bits_budget) : OrderedJson()},
      {"rank", rank},
      {"iters", iters},
      {"lora_alpha", lora_alpha == 0.0 ? static_cast<double>(rank) : lora_alpha},
      {"use_rslora", use_rslora},
      {"format", std::string(format_name(format))},
      {"double_quant", double_quant},
      {"target_modules", target_modules},
      {"svd", std::string(svd_method_name(svd))},
      {"oversampling", oversampling},
      {"krylov_depth", krylov_depth},
      {"warm_krylov_depth", warm_krylov_depth},
      {"krylov_tolerance", krylov_tolerance},
      {"power_iters", power_iters},
      {"warm_start", warm_start},
      {"seed", seed},
      {"keep_best", keep_best},
  };
}

/// The manifest of shard options.shard_index of options.shard_count of `checkpoint`.
inline loftq::io::OrderedJson manifest_json(const ConvertOptions& options, const loftq::io::Checkpoint& checkpoint) {
  return {{"shard", std::to_string(options.shard_index) + "/" + std::to_string(options.shard_count)},
          {"settings", settings_json(options, input_identity(checkpoint))}};
}

/// The first setting whose value differs between `a` and `b` (one missing counts as
/// different): in the order of `order`, then any member only `a` or `b` has; empty when none.
inline std::string first_difference(const std::vector<std::string>& order, const loftq::io::Json& a,
                                    const loftq::io::Json& b) {
  const auto differs = [&a, &b](const std::string& key) {
    return a.contains(key) != b.contains(key) || (a.contains(key) && a.at(key) != b.at(key));
  };
  for (const std::string& key : order) {
    if (differs(key)) return key;
  }
  for (const loftq::io::Json* side : {&a, &b}) {
    for (const auto& [key, value] : side->items()) {
      if (differs(key)) return key;
    }
  }
  return {};
}

/// "key = value" of member `key` of `settings`, the value as JSON, or "key not recorded".
inline std::string setting_text(const loftq::io::Json& settings, const std::string& key) {
  if (!settings.contains(key)) return key + " not recorded";
  return key + " = " + loftq::io::dump_json(settings.at(key));
}

/// Throws loftq::io::ArgumentError unless every directory of options.merge holds a manifest
/// with the same settings as the first, and those are the settings of `options` on
/// `checkpoint`; the message names the shards, the setting and both values. Throws FormatError
/// or FileError for a manifest that is malformed or cannot be read.
inline void check_shards(const ConvertOptions& options, const loftq::io::Checkpoint& checkpoint) {
  using namespace loftq::io;
  const OrderedJson ordered = settings_json(options, input_identity(checkpoint));
  std::vector<std::string> order;
  for (const auto& [key, value] : ordered.items()) order.push_back(key);
  const Json expected = parse_json(dump_json(ordered));
  Json first;
  std::string first_name;
  for (const std::filesystem::path& dir : options.merge) {
    const std::string what = (dir / manifest_name).string();
    const Json manifest = parse_json(read_small_file(dir / manifest_name), what);
    const std::string name = "shard " + json_string(json_at(manifest, "shard", what), what + ": shard") + " (" + dir.string() + ")";
    const Json& settings = json_at(manifest, "settings", what);
    if (!settings.is_object()) throw FormatError(what + ": settings is not an object");
    if (first_name.empty()) {
      first = settings;
      first_name = name;
    } else if (const std::string key = first_difference(order, settings, first); !key.empty()) {
      throw ArgumentError(name + " was made with " + setting_text(settings, key) + ", " + first_name + " with " +
                          setting_text(first, key));
    }
  }
  if (const std::string key = first_difference(order, first, expected); !key.empty()) {
    throw ArgumentError(first_name + " was made with " + setting_text(first, key) + ", this merge has " +
                        setting_text(expected, key));
  }
}

}  // namespace loftq_convert
