/// @file io/peft.hpp
/// A PEFT LoRA adapter directory (adapter_config.json + adapter_model.safetensors) holding LoftQ's
/// factors: lora_A = B^T (r x in) and lora_B = A (out x r), divided by the LoRA scaling.
#pragma once

#include <Eigen/Core>
#include <cmath>
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
  std::vector<std::string> target_modules;  ///< Module leaf names (e.g. q_proj), or {"all-linear"}.
  std::string base_model_name_or_path;      ///< The base model (a hub id or a path).
  std::string task_type = "CAUSAL_LM";      ///< PEFT task type.

  /// lora_alpha, with 0 read as r.
  double alpha() const { return lora_alpha == 0.0 ? static_cast<double>(rank) : lora_alpha; }
  /// PEFT's LoRA scaling, alpha / r.
  double scaling() const { return alpha() / static_cast<double>(rank); }
};

/// The factors of one module: W ~ Q + A B^T.
struct AdapterFactors {
  std::string module;  ///< Module path, e.g. "model.layers.0.self_attn.q_proj" (no ".weight").
  Eigen::MatrixXf A;   ///< out x r.
  Eigen::MatrixXf B;   ///< in x r.
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
                     {"lora_dropout", 0.0},
                     {"target_modules", all_linear ? Json(config.target_modules[0]) : Json(config.target_modules)},
                     {"bias", "none"},
                     {"init_lora_weights", true},
                     {"fan_in_fan_out", false},
                     {"inference_mode", true}};
  return dump_json(json, 2) + "\n";
}

/// The adapter tensors of `factors` in float32: lora_A.weight = B^T / sqrt(s) (r x in) and
/// lora_B.weight = A / sqrt(s) (out x r) with s = config.scaling(), so that
/// s * lora_B * lora_A = A B^T. Throws ArgumentError when A and B do not have config.rank
/// columns, or for a scaling that is not positive and finite.
inline std::vector<TensorData> adapter_tensors(const AdapterConfig& config, const AdapterFactors& factors) {
  const double s = config.scaling();
  if (!(s > 0.0) || !std::isfinite(s)) {
    throw ArgumentError("lora_alpha = " + std::to_string(config.lora_alpha) + " gives scaling " +
                                std::to_string(s) + ", needs a positive finite value");
  }
  if (factors.A.cols() != config.rank || factors.B.cols() != config.rank) {
    throw ArgumentError("adapter for " + factors.module + ": A and B have " + std::to_string(factors.A.cols()) +
                                " and " + std::to_string(factors.B.cols()) + " columns, rank is " +
                                std::to_string(config.rank));
  }
  const auto divisor = static_cast<float>(std::sqrt(s));
  const RowMatrixXf lora_a = factors.B.transpose() / divisor;
  const RowMatrixXf lora_b = factors.A / divisor;
  const std::string key = peft_key(factors.module);
  const auto shape = [](const RowMatrixXf& m) {
    return std::vector<std::uint64_t>{static_cast<std::uint64_t>(m.rows()), static_cast<std::uint64_t>(m.cols())};
  };
  return {float_tensor(key + ".lora_A.weight", lora_a.data(), shape(lora_a), Dtype::f32),
          float_tensor(key + ".lora_B.weight", lora_b.data(), shape(lora_b), Dtype::f32)};
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
