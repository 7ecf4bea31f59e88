/// @file targets.hpp
/// Which tensors of a checkpoint are converted (the targets), and the codebook of each.
#pragma once

#include <algorithm>
#include <cctype>
#include <loftq/codebook.hpp>
#include <loftq/io/checkpoint.hpp>
#include <loftq/io/error.hpp>
#include <loftq/io/safetensors.hpp>
#include <optional>
#include <regex>
#include <string>
#include <vector>

#include "options.hpp"
#include "weight_layout.hpp"

namespace loftq_convert {

/// The transformer block index of a tensor name ("model.layers.7.mlp..." or GPT-2's
/// "h.7.attn..." gives 7), or -1.
inline int block_index(const std::string& name) {
  static const std::regex pattern(R"((^|\.)(layers|layer|h|blocks|block)\.(\d+)\.)");
  std::smatch match;
  if (!std::regex_search(name, match, pattern)) return -1;
  return match[3].length() > 6 ? -1 : std::stoi(match[3].str());
}

/// The module path of a weight name ("a.b.weight" gives "a.b").
inline std::string module_of(const std::string& name) { return name.substr(0, name.size() - 7); }

/// True for a tensor all-linear targets: a 2-D ".weight" inside a transformer block that is not
/// an embedding, a norm or the LM head (so nn.Linear and transformers' Conv1D layers, never
/// convolutions).
inline bool is_all_linear(const loftq::io::TensorInfo& t) {
  if (t.shape.size() != 2 || t.name.size() < 8 || t.name.compare(t.name.size() - 7, 7, ".weight") != 0) return false;
  if (block_index(t.name) < 0) return false;
  std::string lower = t.name;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  for (const char* word : {"norm", "embed", "lm_head", "ln_", "wte", "wpe"}) {
    if (lower.find(word) != std::string::npos) return false;
  }
  return true;
}

/// One target: the tensor, its file, and the codebook chosen for it.
struct Target {
  std::string name;             ///< Tensor name.
  std::string file;             ///< Input file holding it.
  loftq::io::TensorInfo info;   ///< Its header entry.
  loftq::Codebook codebook;     ///< Codebook chosen.
  WeightLayout layout;          ///< How the weight maps to LoftQ's matrix.
};

/// The targets of `checkpoint` under options.target_modules, sorted by name, each with the
/// codebook of options.bits or of its block under options.mixed, and its layout_of() under the
/// model_type of options.input's config.json. Throws ArgumentError for an invalid regex, when
/// nothing matches, or for a target of more than 5 dimensions; FormatError for a target that is
/// empty or not F32, F16 or BF16, or a malformed config.json.
inline std::vector<Target> select_targets(const loftq::io::Checkpoint& checkpoint, const ConvertOptions& options) {
  std::optional<std::regex> pattern;
  if (options.target_modules != "all-linear") {
    try {
      pattern.emplace(options.target_modules);
    } catch (const std::regex_error& e) {
      throw loftq::io::ArgumentError("target_modules = \"" + options.target_modules + "\" is not a valid regex: " + e.what());
    }
  }
  const std::string model_type = model_type_of(options.input);
  std::vector<Target> targets;
  for (const auto& [file, info] : checkpoint.tensors()) {
    const bool weight = info->name.size() > 7 && info->name.compare(info->name.size() - 7, 7, ".weight") == 0;
    const bool chosen = pattern ? weight && info->shape.size() >= 2 && std::regex_match(module_of(info->name), *pattern)
                                : is_all_linear(*info);
    if (!chosen) continue;
    using loftq::io::Dtype;
    if (info->dtype != Dtype::f32 && info->dtype != Dtype::f16 && info->dtype != Dtype::bf16) {
      throw loftq::io::FormatError("target " + info->name + " has dtype " + std::string(loftq::io::dtype_name(info->dtype)) +
                                   ", not F32, F16 or BF16");
    }
    if (info->elements() == 0) throw loftq::io::FormatError("target " + info->name + " is empty");
    int bits = options.bits;
    if (options.mixed) {
      const int block = block_index(info->name);
      bits = block >= 0 && block >= options.mixed->blocks ? options.mixed->low_bits : options.mixed->high_bits;
    }
    targets.push_back({info->name, file, *info, codebook_of_bits(options, bits), layout_of(*info, module_of(info->name), model_type)});
  }
  if (targets.empty()) {
    throw loftq::io::ArgumentError("no tensor of " + options.input.string() + " matches target_modules = \"" +
                                   options.target_modules + "\"");
  }
  std::sort(targets.begin(), targets.end(), [](const Target& a, const Target& b) { return a.name < b.name; });
  return targets;
}

}  // namespace loftq_convert
