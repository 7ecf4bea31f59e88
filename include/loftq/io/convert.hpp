/// @file io/convert.hpp
/// Converts a Hugging Face model directory into a LoftQ backbone plus a PEFT adapter: the engine
/// of the loftq-convert tool.
///
/// Work runs in two phases. The compute phase runs LoftQ on each target weight, one at a time,
/// and writes one work file per target: the backbone tensors that replace the weight, the
/// adapter's lora_A and lora_B, and the target's report in the metadata. The assemble phase
/// writes each output file by streaming the input's other tensors and the work files' tensors.
/// Peak memory is a few times the largest target, whatever the model size. `--shard I/N` runs
/// the compute phase for a deterministic subset of targets; `--merge` assembles the shards.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <regex>
#include <set>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "../codebook.hpp"
#include "../solver.hpp"
#include "bnb.hpp"
#include "checkpoint.hpp"
#include "error.hpp"
#include "file.hpp"
#include "json.hpp"
#include "peft.hpp"
#include "safetensors.hpp"

namespace loftq::io {

/// How the backbone stores a target's Q.
enum class BackboneFormat : std::uint8_t {
  bf16,     ///< Dequantized Q in bfloat16.
  fp16,     ///< Dequantized Q in float16.
  fp32,     ///< Dequantized Q in float32.
  bnb_nf4,  ///< Packed in the bitsandbytes 4-bit layout (NF4 or FP4 codebooks).
};

/// The paper's mixed precision: blocks below `blocks` at high_bits, the others at low_bits.
struct MixedPrecision {
  int high_bits = 4;  ///< Bits of the first blocks.
  int blocks = 0;     ///< How many leading transformer blocks get high_bits.
  int low_bits = 2;   ///< Bits of the rest.
};

/// Everything loftq-convert does.
struct ConvertOptions {
  std::filesystem::path input;             ///< Model directory.
  std::filesystem::path output;            ///< Output directory (must not exist unless overwrite).
  int bits = 4;                            ///< Bits of every target (2, 4 or 8) without mixed or budget.
  Eigen::Index rank = 16;                  ///< Adapter rank.
  int iters = 1;                           ///< LoftQ steps T.
  std::optional<Codebook> codebook;        ///< Codebook for `bits`; default NF2, NF4 or Int8 by bits.
  int block_size = 64;                     ///< Quantization block size.
  std::string target_modules = "all-linear";  ///< "all-linear", or a regex the module path must match whole.
  std::optional<MixedPrecision> mixed;     ///< Mixed precision by block.
  std::optional<double> bits_budget;       ///< Average-bit budget over targets (2 or 4 bits each).
  double lora_alpha = 0.0;                 ///< LoRA alpha; 0 means rank.
  BackboneFormat format = BackboneFormat::bf16;  ///< Backbone storage of targets.
  bool double_quant = false;               ///< bnb_nf4: double-quantize the absmax.
  int threads = 0;                         ///< Threads; 0 means all.
  int shard_index = 0;                     ///< With shard_count > 0: which subset, in [0, shard_count).
  int shard_count = 0;                     ///< > 0: compute only the targets k with k % shard_count == shard_index.
  std::vector<std::filesystem::path> merge;  ///< Shard directories to assemble (the merge step).
  std::filesystem::path report;            ///< Report JSON path, or empty.
  bool overwrite = false;                  ///< Replace an existing output directory.
};

/// What happened to one target.
struct TargetReport {
  std::string name;                 ///< Tensor name.
  std::vector<std::uint64_t> shape; ///< Its shape.
  int bits = 0;                     ///< Bits chosen.
  std::string codebook;             ///< Codebook name.
  double qlora_error = 0.0;         ///< ||W - q(W)|| / ||W||.
  std::vector<double> loftq_errors; ///< Relative error after each step.
  int iteration = 0;                ///< Step returned.
  double seconds = 0.0;             ///< Wall time of its LoftQ call.
};

/// Progress events for a user interface.
struct ConvertProgress {
  /// Called when a phase starts: its name and the number of steps (tensors).
  std::function<void(const std::string& phase, std::size_t steps, std::uint64_t bytes)> begin;
  /// Called after each step: tensor name and bytes done so far in the phase.
  std::function<void(const std::string& name, std::uint64_t bytes)> step;
};

/// What convert() did.
struct ConvertSummary {
  std::vector<TargetReport> targets;  ///< Targets computed or merged, by name.
  std::size_t copied = 0;             ///< Tensors copied unchanged.
  std::vector<std::string> files;     ///< Output files written (relative names).
  std::string budget_note;            ///< What --bits-budget chose, or empty.
};

namespace detail {

/// The transformer block index of a tensor name (".layers.7." gives 7), or -1.
inline int block_index(const std::string& name) {
  static const std::regex pattern(R"(\.(layers|layer|h|blocks|block)\.(\d+)\.)");
  std::smatch match;
  if (!std::regex_search(name, match, pattern)) return -1;
  return match[2].length() > 6 ? -1 : std::stoi(match[2].str());
}

/// The module path of a weight name ("a.b.weight" gives "a.b").
inline std::string module_of(const std::string& name) { return name.substr(0, name.size() - 7); }

/// True for a tensor all-linear targets: a 2-D ".weight" inside a transformer block that is not
/// an embedding, a norm or the LM head.
inline bool is_all_linear(const TensorInfo& t) {
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
  std::string name;   ///< Tensor name.
  std::string file;   ///< Input file holding it.
  TensorInfo info;    ///< Its header entry.
  Codebook codebook;  ///< Codebook chosen.
};

/// The codebook for `bits` under the options.
inline Codebook codebook_of_bits(const ConvertOptions& options, int bits) {
  if (options.codebook && bits == options.bits && !options.mixed && !options.bits_budget) return *options.codebook;
  return codebook_for_bits(bits);
}

/// Throws ArgumentError for options that cannot work together or are out of range.
inline void check_convert_options(const ConvertOptions& options) {
  if (options.input.empty()) throw ArgumentError("--input is required");
  if (options.output.empty()) throw ArgumentError("--output is required");
  if (options.bits != 2 && options.bits != 4 && options.bits != 8) {
    throw ArgumentError("--bits " + std::to_string(options.bits) + " is not 2, 4 or 8");
  }
  if (options.codebook && bits_of(*options.codebook) != options.bits) {
    throw ArgumentError("--codebook " + std::string(name_of(*options.codebook)) + " has " +
                                std::to_string(bits_of(*options.codebook)) + " bits, --bits is " +
                                std::to_string(options.bits));
  }
  if (options.rank < 1) throw ArgumentError("--rank " + std::to_string(options.rank) + " must be >= 1");
  if (options.iters < 1) throw ArgumentError("--iters " + std::to_string(options.iters) + " must be >= 1");
  if (options.block_size < 1) throw ArgumentError("--block-size " + std::to_string(options.block_size) + " must be >= 1");
  if (options.mixed && options.bits_budget) throw ArgumentError("--mixed and --bits-budget exclude each other");
  if (options.mixed) {
    for (int b : {options.mixed->high_bits, options.mixed->low_bits}) {
      if (b != 2 && b != 4 && b != 8) throw ArgumentError("--mixed bits " + std::to_string(b) + " is not 2, 4 or 8");
    }
    if (options.mixed->blocks < 0) throw ArgumentError("--mixed block count must be >= 0");
  }
  if (options.bits_budget && !(*options.bits_budget >= 2.0 && *options.bits_budget <= 4.0)) {
    throw ArgumentError("--bits-budget " + std::to_string(*options.bits_budget) + " is not in [2, 4]");
  }
  if (options.bits_budget && options.shard_count > 0) {
    throw ArgumentError("--bits-budget needs every target's errors: it cannot run with --shard");
  }
  if (options.shard_count < 0 || (options.shard_count > 0 && (options.shard_index < 0 || options.shard_index >= options.shard_count))) {
    throw ArgumentError("--shard " + std::to_string(options.shard_index) + "/" + std::to_string(options.shard_count) +
                                " needs 0 <= I < N");
  }
  if (options.shard_count > 0 && !options.merge.empty()) throw ArgumentError("--shard and --merge exclude each other");
  if (!(options.lora_alpha >= 0.0) || !std::isfinite(options.lora_alpha)) {
    throw ArgumentError("--lora-alpha " + std::to_string(options.lora_alpha) + " must be > 0");
  }
  if (options.threads < 0) throw ArgumentError("--threads " + std::to_string(options.threads) + " must be >= 0");
}

/// The targets of `checkpoint` under the options, sorted by name, without codebooks chosen.
inline std::vector<Target> select_targets(const Checkpoint& checkpoint, const ConvertOptions& options) {
  std::optional<std::regex> pattern;
  if (options.target_modules != "all-linear") {
    try {
      pattern.emplace(options.target_modules);
    } catch (const std::regex_error& e) {
      throw ArgumentError("--target-modules \"" + options.target_modules + "\" is not a valid regex: " + e.what());
    }
  }
  std::vector<Target> targets;
  for (const auto& [file, info] : checkpoint.tensors()) {
    const bool weight = info->name.size() > 7 && info->name.compare(info->name.size() - 7, 7, ".weight") == 0;
    const bool chosen = pattern ? weight && info->shape.size() >= 2 && std::regex_match(module_of(info->name), *pattern)
                                : is_all_linear(*info);
    if (!chosen) continue;
    if (info->dtype != Dtype::f32 && info->dtype != Dtype::f16 && info->dtype != Dtype::bf16) {
      throw FormatError("target " + info->name + " has dtype " + std::string(dtype_name(info->dtype)) +
                        ", not F32, F16 or BF16");
    }
    if (info->elements() == 0) throw FormatError("target " + info->name + " is empty");
    targets.push_back({info->name, file, *info, Codebook::nf4});
  }
  if (targets.empty()) {
    throw ArgumentError("no tensor of " + options.input.string() + " matches --target-modules " + options.target_modules);
  }
  std::sort(targets.begin(), targets.end(), [](const Target& a, const Target& b) { return a.name < b.name; });
  return targets;
}

/// The dtype of a float backbone format.
inline Dtype dtype_of(BackboneFormat format) {
  switch (format) {
    case BackboneFormat::fp16: return Dtype::f16;
    case BackboneFormat::fp32: return Dtype::f32;
    default: return Dtype::bf16;
  }
}

/// Runs LoftQ on one target with `codebook`; puts ||W||_F^2 in *weight_norm2 when not null.
inline Result run_target(const Checkpoint& checkpoint, const Target& target, const ConvertOptions& options,
                         Codebook codebook, TargetReport& report, double* weight_norm2 = nullptr) {
  const Checkpoint::Entry entry = checkpoint.at(target.name);
  const RowMatrixXf w = entry.file->read_matrix(*entry.info);
  if (weight_norm2 != nullptr) *weight_norm2 = w.cast<double>().squaredNorm();
  Options lo;
  lo.rank = std::min<Eigen::Index>(options.rank, std::min(w.rows(), w.cols()));
  lo.iters = options.iters;
  lo.codebook = codebook;
  lo.block_size = options.block_size;
  lo.threads = options.threads;
  const auto start = std::chrono::steady_clock::now();
  Result r = loftq::loftq(w, lo);
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  report.name = target.name;
  report.shape = target.info.shape;
  report.bits = bits_of(codebook);
  report.codebook = std::string(name_of(codebook));
  report.qlora_error = r.quantization_error;
  report.loftq_errors = r.errors;
  report.iteration = r.iteration;
  return r;
}

/// The report of one target as JSON.
inline Json report_json(const TargetReport& r) {
  return {{"name", r.name},
          {"shape", r.shape},
          {"bits", r.bits},
          {"codebook", r.codebook},
          {"qlora_error", r.qlora_error},
          {"loftq_errors", r.loftq_errors},
          {"iteration", r.iteration},
          {"seconds", r.seconds}};
}

/// The TargetReport stored by report_json(); `what` names it in errors.
inline TargetReport report_from_json(const Json& j, const std::string& what) {
  TargetReport r;
  r.name = json_string(json_at(j, "name", what), what + ": name");
  const Json& shape = json_at(j, "shape", what);
  if (!shape.is_array()) throw FormatError(what + ": shape is not an array");
  for (const Json& d : shape) r.shape.push_back(json_u64(d, what + ": shape"));
  r.bits = static_cast<int>(json_u64(json_at(j, "bits", what), what + ": bits"));
  r.codebook = json_string(json_at(j, "codebook", what), what + ": codebook");
  r.qlora_error = json_number(json_at(j, "qlora_error", what), what + ": qlora_error");
  const Json& errors = json_at(j, "loftq_errors", what);
  if (!errors.is_array()) throw FormatError(what + ": loftq_errors is not an array");
  for (const Json& e : errors) r.loftq_errors.push_back(json_number(e, what + ": loftq_errors"));
  r.iteration = static_cast<int>(json_u64(json_at(j, "iteration", what), what + ": iteration"));
  r.seconds = json_number(json_at(j, "seconds", what), what + ": seconds");
  return r;
}

/// The settings that shards must share to be merged, as JSON.
inline Json settings_json(const ConvertOptions& options) {
  return {{"rank", options.rank},
          {"iters", options.iters},
          {"block_size", options.block_size},
          {"lora_alpha", options.lora_alpha},
          {"format", static_cast<int>(options.format)},
          {"double_quant", options.double_quant},
          {"target_modules", options.target_modules}};
}

/// The backbone tensors that replace `target` in the output.
inline std::vector<TensorData> backbone_tensors(const Target& target, const Result& r, const ConvertOptions& options) {
  if (options.format == BackboneFormat::bnb_nf4) {
    BnbOptions bnb;
    bnb.double_quant = options.double_quant;
    bnb.dtype = target.info.dtype == Dtype::f32 ? "float32" : target.info.dtype == Dtype::f16 ? "float16" : "bfloat16";
    return bnb_tensors(target.name, r.Q, bnb);
  }
  std::vector<float> q(r.Q.size());
  r.Q.dequantize(q.data());
  return {float_tensor(target.name, q.data(), target.info.shape, dtype_of(options.format))};
}

/// Work file name of a target.
inline std::string work_file_name(const std::string& target) { return target + ".safetensors"; }

/// Name of a shard directory's manifest.
inline constexpr const char* manifest_name = "loftq_shard.json";

/// Runs the compute phase for `targets` into `work` (one file per target); returns their reports.
inline std::vector<TargetReport> compute_targets(const Checkpoint& checkpoint, const std::vector<Target>& targets,
                            const ConvertOptions& options, const AdapterConfig& adapter,
                            const std::filesystem::path& work, const ConvertProgress& progress) {
  std::uint64_t bytes = 0;
  for (const Target& t : targets) bytes += t.info.bytes();
  if (progress.begin) progress.begin("LoftQ", targets.size(), bytes);
  std::uint64_t done = 0;
  std::vector<TargetReport> reports;
  for (const Target& t : targets) {
    TargetReport report;
    const Result r = run_target(checkpoint, t, options, t.codebook, report);
    std::vector<TensorSource> tensors;
    for (TensorData& d : backbone_tensors(t, r, options)) tensors.push_back(source_of(std::move(d)));
    for (TensorData& d : adapter_tensors(adapter, {module_of(t.name), r.A, r.B})) tensors.push_back(source_of(std::move(d)));
    write_safetensors(work / work_file_name(t.name), std::move(tensors),
                      {{"format", "pt"}, {"loftq_report", dump_json(report_json(report))}});
    reports.push_back(std::move(report));
    done += t.info.bytes();
    if (progress.step) progress.step(t.name, done);
  }
  return reports;
}

/// Chooses 2 or 4 bits per target to meet the average-bit budget while minimizing the total
/// squared error: measures every target at both, starts all at 2 bits and upgrades greedily by
/// squared error saved per extra bit while the budget allows. Returns what it chose.
inline std::string choose_bits_by_budget(const Checkpoint& checkpoint, std::vector<Target>& targets,
                                         const ConvertOptions& options, const ConvertProgress& progress) {
  struct Gain {
    std::size_t target;
    double saved;  // squared error saved by 4 bits over 2
    double bits;   // extra bits
  };
  std::vector<Gain> gains;
  double elements = 0.0;
  std::uint64_t bytes = 0;
  for (const Target& t : targets) bytes += t.info.bytes();
  if (progress.begin) progress.begin("measure 2 and 4 bits", targets.size(), bytes);
  std::uint64_t done = 0;
  for (std::size_t i = 0; i < targets.size(); ++i) {
    double squared[2];
    for (int k = 0; k < 2; ++k) {
      TargetReport report;
      double norm2 = 0.0;
      const Result r = run_target(checkpoint, targets[i], options, k == 0 ? Codebook::nf2 : Codebook::nf4, report, &norm2);
      squared[k] = r.error() * r.error() * (norm2 > 0.0 ? norm2 : 1.0);
    }
    const auto n = static_cast<double>(targets[i].info.elements());
    gains.push_back({i, squared[0] - squared[1], 2.0 * n});
    elements += n;
    targets[i].codebook = Codebook::nf2;
    done += targets[i].info.bytes();
    if (progress.step) progress.step(targets[i].name, done);
  }
  std::stable_sort(gains.begin(), gains.end(), [](const Gain& a, const Gain& b) { return a.saved / a.bits > b.saved / b.bits; });
  double spare = (*options.bits_budget - 2.0) * elements;
  std::size_t upgraded = 0;
  double total_bits = 2.0 * elements;
  for (const Gain& g : gains) {
    if (g.bits <= spare + 1e-9 * elements) {
      targets[g.target].codebook = Codebook::nf4;
      spare -= g.bits;
      total_bits += g.bits;
      ++upgraded;
    }
  }
  return "bits budget " + std::to_string(*options.bits_budget) + ": " + std::to_string(upgraded) + " of " +
         std::to_string(targets.size()) + " targets at 4 bits (NF4), the rest at 2 (NF2); average " +
         std::to_string(total_bits / elements) + " bits";
}

/// Copies the input directory's small files (config, tokenizer, ...) into `out`: every regular
/// file but the safetensors and index and other weight formats. With bnb_nf4, config.json gets
/// the quantization_config transformers needs to load the packed weights.
inline void copy_small_files(const ConvertOptions& options, const std::filesystem::path& out) {
  static const std::set<std::string> weight_extensions = {".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf"};
  for (const auto& entry : std::filesystem::directory_iterator(options.input)) {
    if (!entry.is_regular_file()) continue;
    const std::string name = entry.path().filename().string();
    if (name == index_file_name || weight_extensions.count(entry.path().extension().string()) > 0) continue;
    if (name == "config.json" && options.format == BackboneFormat::bnb_nf4) {
      Json config = parse_json(read_small_file(entry.path()), entry.path().string());
      if (!config.is_object()) throw FormatError(entry.path().string() + ": not a JSON object");
      config["quantization_config"] = {{"quant_method", "bitsandbytes"},
                                       {"load_in_4bit", true},
                                       {"load_in_8bit", false},
                                       {"bnb_4bit_quant_type", "nf4"},
                                       {"bnb_4bit_use_double_quant", options.double_quant},
                                       {"bnb_4bit_compute_dtype", "bfloat16"}};
      write_file_atomically(out / name, dump_json(config, 2) + "\n");
      continue;
    }
    std::filesystem::copy_file(entry.path(), out / name);
  }
}

/// Assembles the output in `out` from the input and the work files (in `work_dirs`, one per
/// target); returns the reports read from them.
inline std::vector<TargetReport> assemble(const Checkpoint& checkpoint, const std::vector<Target>& targets,
                                          const std::vector<std::filesystem::path>& work_dirs,
                                          const ConvertOptions& options, const AdapterConfig& adapter,
                                          const std::filesystem::path& out, ConvertSummary& summary,
                                          const ConvertProgress& progress) {
  // Open every target's work file.
  std::map<std::string, SafetensorsReader> work;
  std::vector<TargetReport> reports;
  for (const Target& t : targets) {
    std::optional<std::filesystem::path> found;
    for (const auto& dir : work_dirs) {
      if (std::filesystem::exists(dir / work_file_name(t.name))) {
        if (found) throw ArgumentError("target " + t.name + " is in two shard directories");
        found = dir / work_file_name(t.name);
      }
    }
    if (!found) throw ArgumentError("no shard directory holds target " + t.name);
    SafetensorsReader reader(*found);
    const auto meta = std::find_if(reader.metadata().begin(), reader.metadata().end(),
                                   [](const auto& m) { return m.first == "loftq_report"; });
    if (meta == reader.metadata().end()) throw FormatError(found->string() + ": no loftq_report metadata");
    reports.push_back(report_from_json(parse_json(meta->second, found->string()), found->string() + ": loftq_report"));
    work.emplace(t.name, std::move(reader));
  }
  std::set<std::string> target_names;
  for (const Target& t : targets) target_names.insert(t.name);

  std::uint64_t bytes = 0;
  for (const auto& [file, info] : checkpoint.tensors()) bytes += info->bytes();
  if (progress.begin) progress.begin("write", checkpoint.file_names().size(), bytes);
  std::uint64_t done = 0;
  Json weight_map = Json::object();
  std::uint64_t total_size = 0;
  for (const std::string& file : checkpoint.file_names()) {
    const SafetensorsReader& input = checkpoint.file(file);
    std::vector<TensorSource> tensors;
    for (const TensorInfo& t : input.tensors()) {
      if (target_names.count(t.name) == 0) {
        tensors.push_back(copied_tensor(input, t));
        ++summary.copied;
        continue;
      }
      const SafetensorsReader& w = work.at(t.name);
      for (const TensorInfo& part : w.tensors()) {
        if (part.name.rfind("base_model.model.", 0) == 0) continue;  // adapter tensors
        tensors.push_back(copied_tensor(w, part));
      }
    }
    for (const TensorSource& t : tensors) {
      weight_map[t.name] = file;
      std::uint64_t n = dtype_size(t.dtype);
      for (std::uint64_t d : t.shape) n *= d;
      total_size += n;
    }
    const std::size_t count = tensors.size();
    write_safetensors(out / file, std::move(tensors));
    for (const TensorInfo& t : input.tensors()) done += t.bytes();
    summary.files.push_back(file);
    if (progress.step) progress.step(file + " (" + std::to_string(count) + " tensors)", done);
  }
  if (checkpoint.sharded()) {
    const Json index = {{"metadata", {{"total_size", total_size}}}, {"weight_map", std::move(weight_map)}};
    write_file_atomically(out / index_file_name, dump_json(index, 2) + "\n");
    summary.files.push_back(index_file_name);
  }
  // The adapter: every target's lora_A and lora_B, streamed from the work files.
  std::vector<TensorSource> lora;
  for (const Target& t : targets) {
    const SafetensorsReader& w = work.at(t.name);
    for (const TensorInfo& part : w.tensors()) {
      if (part.name.rfind("base_model.model.", 0) == 0) lora.push_back(copied_tensor(w, part));
    }
  }
  const std::filesystem::path adapter_dir = out / "loftq_init";
  std::filesystem::create_directories(adapter_dir);
  write_safetensors(adapter_dir / "adapter_model.safetensors", std::move(lora));
  write_file_atomically(adapter_dir / "adapter_config.json", adapter_config_json(adapter));
  summary.files.push_back("loftq_init/adapter_model.safetensors");
  summary.files.push_back("loftq_init/adapter_config.json");
  copy_small_files(options, out);
  return reports;
}

/// The adapter config of a conversion.
inline AdapterConfig adapter_config_of(const ConvertOptions& options, const std::vector<Target>& targets) {
  AdapterConfig adapter;
  adapter.rank = static_cast<int>(options.rank);
  adapter.lora_alpha = options.lora_alpha;
  adapter.base_model_name_or_path = std::filesystem::absolute(options.input).lexically_normal().string();
  if (options.target_modules == "all-linear") {
    std::set<std::string> leaves;
    for (const Target& t : targets) {
      const std::string module = module_of(t.name);
      leaves.insert(module.substr(module.rfind('.') + 1));
    }
    adapter.target_modules.assign(leaves.begin(), leaves.end());
  } else {
    adapter.target_modules = {options.target_modules};
  }
  return adapter;
}

/// Removes a directory tree on destruction unless released.
class DirectoryGuard {
 public:
  /// Guards `dir`.
  explicit DirectoryGuard(std::filesystem::path dir) : dir_(std::move(dir)) {}
  DirectoryGuard(const DirectoryGuard&) = delete;
  DirectoryGuard& operator=(const DirectoryGuard&) = delete;
  ~DirectoryGuard() {
    std::error_code ignored;
    if (!released_) std::filesystem::remove_all(dir_, ignored);
  }
  /// Keeps the directory.
  void release() { released_ = true; }

 private:
  std::filesystem::path dir_;
  bool released_ = false;
};

}  // namespace detail

/// Runs the conversion `options` describes (see loftq-convert --help): LoftQ on every target
/// weight of the model in options.input, the backbone and the PEFT adapter (in loftq_init/)
/// written to options.output. The output appears only when complete: work happens in a
/// temporary directory beside it, renamed at the end, and removed on any failure; the input is
/// only read. Throws ArgumentError for bad options, a missing input, no matching target, an
/// existing output without overwrite or a weight the solver refuses (e.g. a NaN); FormatError
/// for malformed input files; FileError when files cannot be read or written.
inline ConvertSummary convert(const ConvertOptions& options, const ConvertProgress& progress = {}) try {
  namespace fs = std::filesystem;
  detail::check_convert_options(options);
  if (!fs::is_directory(options.input)) throw ArgumentError("--input " + options.input.string() + " is not a directory");
  const fs::path output = fs::absolute(options.output).lexically_normal();
  if (fs::exists(output) && !options.overwrite) {
    throw ArgumentError("--output " + output.string() + " exists (add --overwrite to replace it)");
  }
  const fs::path input = fs::weakly_canonical(options.input);
  const fs::path resolved = fs::weakly_canonical(output);
  if (std::mismatch(input.begin(), input.end(), resolved.begin(), resolved.end()).first == input.end()) {
    throw ArgumentError("--output " + output.string() + " must not be the input directory or inside it");
  }
  const Checkpoint checkpoint(options.input);
  std::vector<detail::Target> targets = detail::select_targets(checkpoint, options);
  ConvertSummary summary;
  for (detail::Target& t : targets) {
    int bits = options.bits;
    if (options.mixed) {
      const int block = detail::block_index(t.name);
      bits = block >= 0 && block >= options.mixed->blocks ? options.mixed->low_bits : options.mixed->high_bits;
    }
    t.codebook = detail::codebook_of_bits(options, bits);
  }
  if (options.format == BackboneFormat::bnb_nf4) {
    for (const detail::Target& t : targets) {
      if (t.codebook != Codebook::nf4 && t.codebook != Codebook::fp4) {
        throw ArgumentError("--format bnb-nf4 stores only NF4 or FP4; target " + t.name + " is " +
                                    std::string(name_of(t.codebook)));
      }
      if (t.info.shape.size() != 2) throw ArgumentError("--format bnb-nf4 needs 2-D targets; " + t.name + " is not");
    }
  }
  const AdapterConfig adapter = detail::adapter_config_of(options, targets);

  fs::create_directories(output.parent_path());
  const fs::path staging = loftq::io::detail::temporary_beside(output);
  fs::create_directory(staging);
  detail::DirectoryGuard guard(staging);

  if (options.shard_count > 0) {
    std::vector<detail::Target> mine;
    for (std::size_t k = 0; k < targets.size(); ++k) {
      if (static_cast<int>(k % static_cast<std::size_t>(options.shard_count)) == options.shard_index) mine.push_back(targets[k]);
    }
    summary.targets = detail::compute_targets(checkpoint, mine, options, adapter, staging, progress);
    const Json manifest = {{"shard", std::to_string(options.shard_index) + "/" + std::to_string(options.shard_count)},
                           {"settings", detail::settings_json(options)}};
    write_file_atomically(staging / detail::manifest_name, dump_json(manifest, 2) + "\n");
    for (const detail::Target& t : mine) summary.files.push_back(detail::work_file_name(t.name));
  } else {
    std::vector<fs::path> work_dirs = options.merge;
    const fs::path work = staging / ".loftq_work";
    if (options.merge.empty()) {
      if (options.bits_budget) summary.budget_note = detail::choose_bits_by_budget(checkpoint, targets, options, progress);
      fs::create_directory(work);
      detail::compute_targets(checkpoint, targets, options, adapter, work, progress);
      work_dirs = {work};
    } else {
      const std::string settings = dump_json(detail::settings_json(options));
      for (const fs::path& dir : options.merge) {
        const std::string what = (dir / detail::manifest_name).string();
        const std::string made = dump_json(json_at(parse_json(read_small_file(dir / detail::manifest_name), what), "settings", what));
        if (made != settings) {
          throw ArgumentError("shard " + dir.string() + " was made with other settings: " +
                                      made + ", this merge has " + settings);
        }
      }
    }
    summary.targets = detail::assemble(checkpoint, targets, work_dirs, options, adapter, staging, summary, progress);
    if (options.merge.empty()) fs::remove_all(work);
  }
  if (!options.report.empty()) {
    Json report = {{"targets", Json::array()}};
    for (const TargetReport& r : summary.targets) report["targets"].push_back(detail::report_json(r));
    if (!summary.budget_note.empty()) report["bits_budget"] = summary.budget_note;
    write_file_atomically(options.report, dump_json(report, 2) + "\n");
  }
  if (fs::exists(output)) fs::remove_all(output);
  fs::rename(staging, output);
  guard.release();
  return summary;
} catch (const std::filesystem::filesystem_error& e) {
  throw FileError(e.what(), e.path1(), e.code());
} catch (const std::invalid_argument& e) {  // the solver's argument checks
  throw ArgumentError(e.what());
}

}  // namespace loftq::io
