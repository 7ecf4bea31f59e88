/// @file io/peft.hpp
/// A PEFT LoRA adapter directory (adapter_config.json + adapter_model.safetensors) holding LoftQ's
/// factors: lora_A = B^T (r x in) and lora_B = A (out x r), divided by the square root of the
/// LoRA scaling; a convolution's factors in the shapes of PEFT's LoRA Conv1d/2d/3d layers.
#pragma once

#include <Eigen/Core>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "../matrix.hpp"
#include "error.hpp"
#include "file.hpp"
#include "json.hpp"
#include "safetensors.hpp"

namespace loftq::io {

/// What adapter_config.json says.
struct AdapterConfig {
  int rank = 16;                            ///< r.
  double lora_alpha = 0.0;                  ///< LoRA alpha; 0 means r (scaling 1, as LoftQ needs).
  bool use_rslora = false;                  ///< rsLoRA (PEFT's use_rslora): scaling alpha / sqrt(r).
  /// The base layers store their weights (in, out), as transformers' Conv1D (GPT-2) does: PEFT's
  /// fan_in_fan_out. The adapter's shapes are the same either way (lora_A r x in, lora_B out x r).
  bool fan_in_fan_out = false;
  std::vector<std::string> target_modules;  ///< Module leaf names (e.g. q_proj), or {"all-linear"}.
  std::string base_model_name_or_path;      ///< The base model (a hub id or a path).
  std::string task_type = "CAUSAL_LM";      ///< PEFT task type.

  /// lora_alpha, with 0 read as r.
  double alpha() const { return lora_alpha == 0.0 ? static_cast<double>(rank) : lora_alpha; }
  /// PEFT's LoRA scaling: alpha / r, or alpha / sqrt(r) with use_rslora.
  double scaling() const {
    const auto r = static_cast<double>(rank);
    return alpha() / (use_rslora ? std::sqrt(r) : r);
  }
};

/// The factors of one module: W ~ Q + A B^T, where W is the module's weight as a matrix (out x in).
struct AdapterFactors {
  std::string module;  ///< Module path, e.g. "model.layers.0.self_attn.q_proj" (no ".weight").
  Eigen::MatrixXf A;   ///< out x r.
  Eigen::MatrixXf B;   ///< in x r.
  /// Empty for a linear layer. For a convolution, whose weight (c_out, c_in, k1, ...) is the
  /// matrix c_out x (c_in k1 ...) (row-major), its shape after c_out: (c_in, k1, ...), at least
  /// two dimensions whose product is B's rows.
  std::vector<std::uint64_t> input_shape;
};

/// Key prefix PEFT gives a module's adapter weights.
inline std::string peft_key(const std::string& module) { return "base_model.model." + module; }

/// The adapter_config.json text of `config`, keys sorted as PEFT writes them. Throws
/// ArgumentError for a lora_alpha that is not finite or a string that is not UTF-8.
inline std::string adapter_config_json(const AdapterConfig& config) {
  const bool all_linear = config.target_modules.size() == 1 && config.target_modules[0] == "all-linear";
  const Json json = {{"peft_type", "LORA"},
                     {"task_type", config.task_type},
                     {"base_model_name_or_path", config.base_model_name_or_path},
                     {"r", config.rank},
                     {"lora_alpha", config.alpha()},
                     {"use_rslora", config.use_rslora},
                     {"lora_dropout", 0.0},
                     {"target_modules", all_linear ? Json(config.target_modules[0]) : Json(config.target_modules)},
                     {"bias", "none"},
                     {"init_lora_weights", true},
                     {"fan_in_fan_out", config.fan_in_fan_out},
                     {"inference_mode", true}};
  return dump_json(json, 2) + "\n";
}

/// The adapter tensors of `factors` in float32: lora_A.weight = B^T / sqrt(s) (r x in) and
/// lora_B.weight = A / sqrt(s) (out x r) with s = config.scaling(), so that
/// s * lora_B * lora_A = A B^T. For a convolution (factors.input_shape = (c_in, k1, ...)),
/// the shapes of PEFT's LoRA convolution: lora_A (r, c_in, k1, ...), B^T reshaped row-major,
/// and lora_B (out, r, 1, ...), a 1 x ... x 1 kernel. Throws ArgumentError when A and B do not
/// have config.rank columns, for an input_shape of one dimension or whose product is not B's
/// rows, or for a scaling that is not positive and finite.
inline std::vector<TensorData> adapter_tensors(const AdapterConfig& config, const AdapterFactors& factors) {
  const double s = config.scaling();
  if (!(s > 0.0) || !std::isfinite(s)) {
    throw ArgumentError("lora_alpha = " + std::to_string(config.lora_alpha) + " with r = " + std::to_string(config.rank) +
                        (config.use_rslora ? " (rsLoRA)" : "") + " gives scaling " + std::to_string(s) +
                        ", needs a positive finite value");
  }
  if (factors.A.cols() != config.rank || factors.B.cols() != config.rank) {
    throw ArgumentError("adapter for " + factors.module + ": A and B have " + std::to_string(factors.A.cols()) +
                                " and " + std::to_string(factors.B.cols()) + " columns, rank is " +
                                std::to_string(config.rank));
  }
  const auto r = static_cast<std::uint64_t>(config.rank);
  std::vector<std::uint64_t> a_shape = {r, static_cast<std::uint64_t>(factors.B.rows())};
  std::vector<std::uint64_t> b_shape = {static_cast<std::uint64_t>(factors.A.rows()), r};
  if (!factors.input_shape.empty()) {
    std::uint64_t product = 1;
    bool fits = true;
    std::string text;
    for (const std::uint64_t d : factors.input_shape) {
      fits = fits && detail::multiply_checked(product, d, product);
      text += (text.empty() ? "" : ", ") + std::to_string(d);
    }
    if (factors.input_shape.size() < 2 || !fits || product != a_shape[1]) {
      throw ArgumentError("adapter for " + factors.module + ": input_shape (" + text +
                          ") is not a convolution's (c_in, k1, ...) for B of " + std::to_string(factors.B.rows()) + " rows");
    }
    a_shape = {r};
    a_shape.insert(a_shape.end(), factors.input_shape.begin(), factors.input_shape.end());
    b_shape.resize(factors.input_shape.size() + 1, 1);
  }
  const auto divisor = static_cast<float>(std::sqrt(s));
  const RowMatrixXf lora_a = factors.B.transpose() / divisor;
  const RowMatrixXf lora_b = factors.A / divisor;
  const std::string key = peft_key(factors.module);
  return {float_tensor(key + ".lora_A.weight", lora_a.data(), std::move(a_shape), Dtype::f32),
          float_tensor(key + ".lora_B.weight", lora_b.data(), std::move(b_shape), Dtype::f32)};
}

/// Writes the adapter directory `dir` (created when missing): adapter_config.json and
/// adapter_model.safetensors with every module's lora_A and lora_B, each file written atomically.
/// Throws as adapter_tensors() and write_safetensors(), FileError when `dir` cannot be created.
inline void write_adapter(const std::filesystem::path& dir, const AdapterConfig& config,
                          const std::vector<AdapterFactors>& modules) {
  std::vector<TensorSource> tensors;
  for (const AdapterFactors& m : modules) {
    for (TensorData& t : adapter_tensors(config, m)) tensors.push_back(source_of(std::move(t)));
  }
  std::error_code code;
  std::filesystem::create_directories(dir, code);
  if (code) throw detail::file_error("cannot create", dir, code);
  write_safetensors(dir / "adapter_model.safetensors", std::move(tensors));
  write_file_atomically(dir / "adapter_config.json", adapter_config_json(config));
}

}  // namespace loftq::io
