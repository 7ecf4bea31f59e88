/// @file weight_layout.hpp
/// How a target weight maps to the matrix LoftQ runs on (out x in): as stored (nn.Linear),
/// transposed (transformers' Conv1D, the layers of GPT-2 and its kin), or reshaped (nn.Conv1d,
/// Conv2d, Conv3d, as in Appendix H of the LoftQ paper); and which models have Conv1D layers.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <filesystem>
#include <loftq/io/error.hpp>
#include <loftq/io/file.hpp>
#include <loftq/io/json.hpp>
#include <loftq/io/safetensors.hpp>
#include <loftq/matrix.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace loftq_convert {

/// How a weight is stored, and so how it maps to LoftQ's matrix W (out x in).
enum class WeightLayout : std::uint8_t {
  linear,       ///< (out, in), as nn.Linear stores it: W itself.
  transposed,   ///< (in, out), as transformers' Conv1D stores it: W is its transpose.
  convolution,  ///< (c_out, c_in, k1, ...), nn.Conv1d/2d/3d: W is c_out x (c_in k1 ...), row-major.
};

/// A model type whose modeling code has transformers' Conv1D layers, and their leaf names.
struct Conv1dModel {
  std::string_view model_type;                ///< config.json's model_type.
  std::array<std::string_view, 4> layers;     ///< Leaf names of its Conv1D modules ("" pads).
};

/// The model types (config.json's model_type) whose modeling code stores layers as
/// transformers' Conv1D (pytorch_utils.Conv1D: weight (in, out)), with those layers' names;
/// every other weight of these models is an nn.Linear or not a matrix. Read from transformers'
/// src/transformers/models/:
/// - gpt2/modeling_gpt2.py: GPT2Attention c_attn, q_attn (cross-attention), c_proj; GPT2MLP
///   c_fc, c_proj;
/// - decision_transformer/modeling_decision_transformer.py: its copy of GPT-2, the same;
/// - imagegpt/modeling_imagegpt.py: ImageGPTAttention c_attn, q_attn, c_proj; ImageGPTMLP c_fc,
///   c_proj;
/// - openai/modeling_openai.py ("openai-gpt"): Attention c_attn, c_proj; MLP c_fc, c_proj;
/// - clvp/modeling_clvp.py ("clvp", and "clvp_decoder" for the decoder alone): ClvpDecoderMLP
///   c_fc, c_proj (its attention layers are nn.Linear).
/// gpt_bigcode (GPTBigCodeAttention) and gpt_neo (GPTNeoMLP) use the same names for nn.Linear
/// layers, so the model type decides, not the name alone.
inline constexpr std::array<Conv1dModel, 6> conv1d_models{{
    {"gpt2", {"c_attn", "q_attn", "c_proj", "c_fc"}},
    {"decision_transformer", {"c_attn", "q_attn", "c_proj", "c_fc"}},
    {"imagegpt", {"c_attn", "q_attn", "c_proj", "c_fc"}},
    {"openai-gpt", {"c_attn", "c_proj", "c_fc", ""}},
    {"clvp", {"c_fc", "c_proj", "", ""}},
    {"clvp_decoder", {"c_fc", "c_proj", "", ""}},
}};

/// The model_type of the model directory `input` (its config.json), or "" when it has no
/// config.json or the config names none. Throws loftq::io::FormatError for a config.json that
/// is not a JSON object or whose model_type is not a string, FileError when it cannot be read.
inline std::string model_type_of(const std::filesystem::path& input) {
  using namespace loftq::io;
  const std::filesystem::path path = input / "config.json";
  if (!std::filesystem::exists(path)) return {};
  const Json config = parse_json(read_small_file(path), path.string());
  if (!config.is_object()) throw FormatError(path.string() + ": not a JSON object");
  if (!config.contains("model_type")) return {};
  return json_string(config.at("model_type"), path.string() + ": model_type");
}

/// True when `module` (a module path, "h.0.attn.c_attn") is a transformers Conv1D layer of a
/// model of type `model_type`.
inline bool is_conv1d_layer(std::string_view model_type, std::string_view module) {
  const std::string_view leaf = module.substr(module.rfind('.') + 1);  // npos + 1 is 0
  return !leaf.empty() && std::any_of(conv1d_models.begin(), conv1d_models.end(), [&](const Conv1dModel& m) {
    return m.model_type == model_type && std::find(m.layers.begin(), m.layers.end(), leaf) != m.layers.end();
  });
}

/// The layout of weight `tensor` of module `module` in a model of type `model_type`: 2-D is
/// linear, or transposed for a Conv1D layer (is_conv1d_layer()); 3-, 4- and 5-D are
/// convolutions (the weights do not tell a grouped convolution's groups, so its adapter is
/// shaped as for groups = 1, from the weight's (c_out, c_in / groups, k ...)). Throws
/// loftq::io::ArgumentError, naming the tensor and its shape, for any other number of
/// dimensions.
inline WeightLayout layout_of(const loftq::io::TensorInfo& tensor, std::string_view module, std::string_view model_type) {
  const std::size_t dims = tensor.shape.size();
  if (dims == 2) return is_conv1d_layer(model_type, module) ? WeightLayout::transposed : WeightLayout::linear;
  if (dims >= 3 && dims <= 5) return WeightLayout::convolution;
  std::string shape;
  for (const std::uint64_t d : tensor.shape) shape += (shape.empty() ? "" : ", ") + std::to_string(d);
  throw loftq::io::ArgumentError("target " + tensor.name + " has shape (" + shape +
                                 "): loftq-convert converts 2-D weights (linear and Conv1D layers) and "
                                 "3- to 5-D weights (convolutions)");
}

/// `m` between a weight's stored order, as SafetensorsReader::read_matrix() gives it (shape[0]
/// rows), and LoftQ's matrix W (out x in), in either direction: its transpose for a transposed
/// layout, else itself (a convolution's row-major reshape is already W).
inline loftq::RowMatrixXf swap_layout(loftq::RowMatrixXf m, WeightLayout layout) {
  if (layout == WeightLayout::transposed) return m.transpose();
  return m;
}

/// The shape PEFT's LoRA convolution needs of a weight (io::AdapterFactors::input_shape): the
/// weight's shape after c_out for a convolution, empty otherwise.
inline std::vector<std::uint64_t> adapter_input_shape(const loftq::io::TensorInfo& tensor, WeightLayout layout) {
  if (layout != WeightLayout::convolution) return {};
  return {tensor.shape.begin() + 1, tensor.shape.end()};
}

}  // namespace loftq_convert
