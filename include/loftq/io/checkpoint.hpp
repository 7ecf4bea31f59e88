/// @file io/checkpoint.hpp
/// A Hugging Face model directory: one model.safetensors, or shards listed by
/// model.safetensors.index.json.
#pragma once

#include <cstddef>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_map>
#include <utility>
#include <vector>

#include "error.hpp"
#include "json.hpp"
#include "safetensors.hpp"

namespace loftq::io {

/// File name of a single-file checkpoint.
inline constexpr const char* single_file_name = "model.safetensors";
/// File name of a sharded checkpoint's index.
inline constexpr const char* index_file_name = "model.safetensors.index.json";

/// What model.safetensors.index.json says.
struct SafetensorsIndex {
  Json metadata;                                            ///< Its "metadata" object, or null.
  std::map<std::string, std::vector<std::string>> files;   ///< Tensor names by file name.
};

/// Parses the text of a model.safetensors.index.json; `what` names it in errors. Throws
/// FormatError unless it is a JSON object whose weight_map maps at least one tensor, each to a
/// plain file name (no '/' or NUL, not "." or "..").
inline SafetensorsIndex parse_safetensors_index(std::string_view text, const std::string& what) {
  const Json json = parse_json(text, what);
  if (!json.is_object()) throw FormatError(what + ": not a JSON object");
  SafetensorsIndex index;
  if (const auto metadata = json.find("metadata"); metadata != json.end()) index.metadata = *metadata;
  const auto map = json.find("weight_map");
  if (map == json.end() || !map->is_object()) throw FormatError(what + ": no weight_map object");
  for (const auto& entry : map->items()) {
    const std::string& tensor = entry.key();
    const std::string& name = json_string(entry.value(), what + ": weight_map entry \"" + tensor + "\"");
    if (name.empty() || name.find_first_of(std::string("/\0", 2)) != std::string::npos || name == "." || name == "..") {
      throw FormatError(what + ": weight_map entry \"" + tensor + "\" names \"" + name +
                        "\", not a file in the model directory");
    }
    index.files[name].push_back(tensor);
  }
  if (index.files.empty()) throw FormatError(what + ": weight_map is empty");
  return index;
}

/// The safetensors files of a model directory, opened and validated, with every tensor found by
/// name. Shards are read lazily, tensor by tensor.
class Checkpoint {
 public:
  /// One tensor and the file that holds it.
  struct Entry {
    const SafetensorsReader* file;  ///< The file.
    const TensorInfo* info;         ///< The tensor in it.
  };

  /// Opens `dir`: the shards of model.safetensors.index.json when it exists, else
  /// model.safetensors. Throws FormatError for a malformed index (not a JSON object with a
  /// weight_map of tensor name to a plain file name in `dir`), for a shard that is malformed, a
  /// tensor the index maps to a file that lacks it, a tensor in a shard the index does not map
  /// there, or one name in two files, or when `dir` holds neither file; FileError when a file
  /// cannot be read.
  explicit Checkpoint(std::filesystem::path dir) : dir_(std::move(dir)) {
    const std::filesystem::path index = dir_ / index_file_name;
    const std::filesystem::path single = dir_ / single_file_name;
    if (exists(index)) {
      sharded_ = true;
      open_index(index);
    } else if (exists(single)) {
      open_file(single_file_name);
    } else {
      throw FormatError(dir_.string() + " holds neither " + index_file_name + " nor " + single_file_name);
    }
  }

  /// The directory.
  const std::filesystem::path& directory() const { return dir_; }
  /// True when read through model.safetensors.index.json.
  bool sharded() const { return sharded_; }
  /// The file names (relative to the directory), in index order (sorted for a sharded one).
  std::vector<std::string> file_names() const {
    std::vector<std::string> names;
    for (const auto& f : files_) names.push_back(f.first);
    return names;
  }
  /// The opened file `name` (relative); throws ArgumentError when there is none.
  const SafetensorsReader& file(const std::string& name) const {
    for (const auto& f : files_) {
      if (f.first == name) return f.second;
    }
    throw ArgumentError(dir_.string() + " has no file " + name);
  }
  /// Every tensor, file by file (in file_names() order), each file's in data order.
  std::vector<std::pair<std::string, const TensorInfo*>> tensors() const {
    std::vector<std::pair<std::string, const TensorInfo*>> all;
    for (const auto& [name, reader] : files_) {
      for (const TensorInfo& t : reader.tensors()) all.emplace_back(name, &t);
    }
    return all;
  }
  /// The tensor `name`; throws ArgumentError when no file holds it.
  Entry at(const std::string& name) const {
    const auto it = where_.find(name);
    if (it == where_.end()) throw ArgumentError(dir_.string() + " has no tensor \"" + name + "\"");
    const SafetensorsReader& reader = files_[it->second].second;
    return {&reader, reader.find(name)};
  }
  /// The metadata of the index (its "metadata" object, e.g. total_size), or null.
  const Json& index_metadata() const { return index_metadata_; }

 private:
  static bool exists(const std::filesystem::path& path) {
    std::error_code code;
    const bool found = std::filesystem::exists(path, code);
    if (code) throw detail::file_error("cannot look for", path, code);
    return found;
  }

  void open_index(const std::filesystem::path& index) {
    const std::string what = index.string();
    SafetensorsIndex parsed = parse_safetensors_index(read_small_file(index), what);
    index_metadata_ = std::move(parsed.metadata);
    for (const auto& [name, tensors] : parsed.files) {
      open_file(name);
      const SafetensorsReader& reader = files_.back().second;
      for (const std::string& tensor : tensors) {
        if (reader.find(tensor) == nullptr) {
          throw FormatError(what + ": maps \"" + tensor + "\" to " + name + ", which has no such tensor");
        }
      }
      if (reader.tensors().size() != tensors.size()) {
        throw FormatError(what + ": " + name + " holds " + std::to_string(reader.tensors().size()) +
                          " tensors, the index maps " + std::to_string(tensors.size()) + " to it");
      }
    }
  }

  void open_file(const std::string& name) {
    files_.emplace_back(name, SafetensorsReader(dir_ / name));
    const std::size_t file = files_.size() - 1;
    for (const TensorInfo& t : files_.back().second.tensors()) {
      if (!where_.emplace(t.name, file).second) {
        throw FormatError(dir_.string() + ": tensor \"" + t.name + "\" is in two files");
      }
    }
  }

  std::filesystem::path dir_;
  bool sharded_ = false;
  std::vector<std::pair<std::string, SafetensorsReader>> files_;
  std::unordered_map<std::string, std::size_t> where_;
  Json index_metadata_;
};

}  // namespace loftq::io
