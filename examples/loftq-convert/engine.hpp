/// @file engine.hpp
/// The conversion: a Hugging Face model directory in, a LoftQ backbone plus a PEFT adapter out.
///
/// Work runs in two phases. The compute phase runs LoftQ on each target weight, one at a time,
/// and writes one work file per target: the backbone tensors that replace the weight, the
/// adapter's lora_A and lora_B, and the target's report in the metadata. The assemble phase
/// writes each output file by streaming the input's other tensors and the work files' tensors.
/// Peak memory is a few times the largest target, whatever the model size. A shard runs the
/// compute phase for a deterministic subset of targets; a merge assembles the shards.
#pragma once

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <loftq/io/bnb.hpp>
#include <loftq/io/checkpoint.hpp>
#include <loftq/io/error.hpp>
#include <loftq/io/file.hpp>
#include <loftq/io/json.hpp>
#include <loftq/io/peft.hpp>
#include <loftq/io/safetensors.hpp>
#include <loftq/solver.hpp>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "bit_budget.hpp"
#include "options.hpp"
#include "progress.hpp"
#include "report.hpp"
#include "run_target.hpp"
#include "shard_manifest.hpp"
#include "targets.hpp"
#include "weight_layout.hpp"

namespace loftq_convert {

/// The dtype of a float backbone format.
inline loftq::io::Dtype dtype_of(BackboneFormat format) {
  switch (format) {
    case BackboneFormat::fp16: return loftq::io::Dtype::f16;
    case BackboneFormat::fp32: return loftq::io::Dtype::f32;
    default: return loftq::io::Dtype::bf16;
  }
}

/// The backbone tensors that replace `target` in the output: Q packed in bitsandbytes' layout
/// (of the matrix W, so a Conv1D layer's quant state has shape [out, in], as transformers
/// stores it), or dequantized in the weight's own shape and layout (a Conv1D layer's Q
/// transposed back to (in, out), a convolution's Q in its 3- to 5-D shape).
inline std::vector<loftq::io::TensorData> backbone_tensors(const Target& target, const loftq::Result& r,
                                                           const ConvertOptions& options) {
  using loftq::io::Dtype;
  // Q's load path (load_path_of()) says how it is stored: bitsandbytes then dequantizes exactly Q.
  if (options.format == BackboneFormat::bnb_nf4) return loftq::io::bnb_tensors(target.name, r.Q);
  if (options.format == BackboneFormat::bnb_int8) return loftq::io::bnb_int8_tensors(target.name, r.Q);
  loftq::RowMatrixXf q(r.Q.rows(), r.Q.cols());
  r.Q.backbone_values(q.data());  // what bitsandbytes quantizes into r.Q at load time
  const loftq::RowMatrixXf stored = swap_layout(std::move(q), target.layout);
  return {loftq::io::float_tensor(target.name, stored.data(), target.info.shape, dtype_of(options.format))};
}

/// `m` with zero columns appended up to `cols` columns.
inline Eigen::MatrixXf padded_to(const Eigen::MatrixXf& m, Eigen::Index cols) {
  Eigen::MatrixXf padded = Eigen::MatrixXf::Zero(m.rows(), cols);
  padded.leftCols(m.cols()) = m;
  return padded;
}

/// The bytes of `tensors`' data.
inline std::uint64_t data_bytes(const std::vector<loftq::io::TensorData>& tensors) {
  std::uint64_t n = 0;
  for (const loftq::io::TensorData& t : tensors) n += t.bytes.size();
  return n;
}

/// Work file name of a target.
inline std::string work_file_name(const std::string& target) { return target + ".safetensors"; }

/// Runs the compute phase for `targets` into `work` (one file per target); returns their reports,
/// with the bytes each takes in the input and the output. A target whose smaller dimension is
/// below the adapter's rank r gets LoftQ at that rank and factors padded with zeros to r (zero
/// rows of lora_A, zero columns of lora_B; PEFT accepts r above min(in, out)); with the scaling
/// of r and alpha, scaling * lora_B * lora_A is A B^T.
inline std::vector<TargetReport> compute_targets(const loftq::io::Checkpoint& checkpoint, const std::vector<Target>& targets,
                                                 const ConvertOptions& options, const loftq::io::AdapterConfig& adapter,
                                                 const std::filesystem::path& work, const Progress& progress) {
  using namespace loftq::io;
  std::uint64_t bytes = 0;
  for (const Target& t : targets) bytes += t.info.bytes();
  if (progress.begin) progress.begin("LoftQ", targets.size(), bytes);
  std::uint64_t done = 0;
  std::vector<TargetReport> reports;
  for (const Target& t : targets) {
    TargetReport report;
    const loftq::Result r = run_target(checkpoint, t, options, t.codebook, report);
    std::vector<TensorData> backbone = backbone_tensors(t, r, options);
    std::vector<TensorData> lora = adapter_tensors(adapter, {module_of(t.name), padded_to(r.A, adapter.rank),
                                                             padded_to(r.B, adapter.rank), adapter_input_shape(t.info, t.layout)});
    report.bytes.backbone = data_bytes(backbone);
    report.bytes.adapter = data_bytes(lora);
    std::vector<TensorSource> tensors;
    for (TensorData& d : backbone) tensors.push_back(source_of(std::move(d)));
    for (TensorData& d : lora) tensors.push_back(source_of(std::move(d)));
    write_safetensors(work / work_file_name(t.name), std::move(tensors),
                      {{"format", "pt"}, {"loftq_report", dump_json(report_json(report))}});
    reports.push_back(std::move(report));
    done += t.info.bytes();
    if (progress.step) progress.step(t.name, done);
  }
  return reports;
}

/// Copies the input directory's small files (config, tokenizer, ...) into `out`: every regular
/// file but the safetensors and index and other weight formats. With bnb-nf4 and bnb-int8,
/// config.json gets the quantization_config transformers needs to load the packed weights.
///
/// The quantization_config lists in llm_int8_skip_modules the module of every 2-D weight that is
/// not a target, and lm_head, so that transformers keeps them as they are stored rather than
/// replacing them by bitsandbytes layers with no quantized tensors.
inline void copy_small_files(const ConvertOptions& options, const loftq::io::Checkpoint& checkpoint,
                             const std::vector<Target>& targets, const std::filesystem::path& out) {
  using namespace loftq::io;
  static const std::set<std::string> weight_extensions = {".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf"};
  for (const auto& entry : std::filesystem::directory_iterator(options.input)) {
    if (!entry.is_regular_file()) continue;
    const std::string name = entry.path().filename().string();
    if (name == index_file_name || weight_extensions.count(entry.path().extension().string()) > 0) continue;
    if (name == "config.json" && (options.format == BackboneFormat::bnb_nf4 || options.format == BackboneFormat::bnb_int8)) {
      Json config = parse_json(read_small_file(entry.path()), entry.path().string());
      if (!config.is_object()) throw FormatError(entry.path().string() + ": not a JSON object");
      std::set<std::string> target_names;
      for (const Target& t : targets) target_names.insert(t.name);
      std::set<std::string> skip = {"lm_head"};
      for (const auto& [file, info] : checkpoint.tensors()) {
        const std::string& n = info->name;
        if (info->shape.size() == 2 && n.size() > 7 && n.compare(n.size() - 7, 7, ".weight") == 0 && target_names.count(n) == 0) {
          skip.insert(module_of(n));
        }
      }
      if (options.format == BackboneFormat::bnb_int8) {
        config["quantization_config"] = {{"quant_method", "bitsandbytes"},
                                         {"load_in_4bit", false},
                                         {"load_in_8bit", true},
                                         {"llm_int8_threshold", 6.0},
                                         {"llm_int8_skip_modules", skip}};
      } else {
        config["quantization_config"] = {{"quant_method", "bitsandbytes"},
                                         {"load_in_4bit", true},
                                         {"load_in_8bit", false},
                                         {"bnb_4bit_quant_type", std::string(loftq::name_of(codebook_of_bits(options, 4)))},
                                         {"bnb_4bit_use_double_quant", options.double_quant},
                                         {"bnb_4bit_compute_dtype", "bfloat16"},
                                         {"llm_int8_skip_modules", skip}};
      }
      write_file_atomically(out / name, dump_json(config, 2) + "\n");
      continue;
    }
    std::filesystem::copy_file(entry.path(), out / name);
  }
}

/// Assembles the output in `out` from the input and the work files (in `work_dirs`, one per
/// target); returns the reports read from them.
inline std::vector<TargetReport> assemble(const loftq::io::Checkpoint& checkpoint, const std::vector<Target>& targets,
                                          const std::vector<std::filesystem::path>& work_dirs,
                                          const ConvertOptions& options, const loftq::io::AdapterConfig& adapter,
                                          const std::filesystem::path& out, ConvertSummary& summary,
                                          const Progress& progress) {
  using namespace loftq::io;
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
  copy_small_files(options, checkpoint, targets, out);
  return reports;
}

/// The adapter config of a conversion: fan_in_fan_out when any target is a Conv1D layer (PEFT
/// applies the flag per layer type, so nn.Linear targets beside them are still right).
inline loftq::io::AdapterConfig adapter_config_of(const ConvertOptions& options, const std::vector<Target>& targets) {
  loftq::io::AdapterConfig adapter;
  adapter.rank = static_cast<int>(options.rank);
  adapter.lora_alpha = options.lora_alpha;
  adapter.use_rslora = options.use_rslora;
  adapter.fan_in_fan_out = std::any_of(targets.begin(), targets.end(),
                                       [](const Target& t) { return t.layout == WeightLayout::transposed; });
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

/// Runs the conversion `options` describes: LoftQ on every target weight of the model in
/// options.input, the backbone and the PEFT adapter (in loftq_init/) written to
/// options.output; with shard_count > 0 only the shard's work files and manifest; with merge,
/// the output assembled from shard directories. The output appears only when complete: work
/// happens in a temporary directory beside it, renamed at the end, and removed on any failure;
/// the input is only read. Throws OutputExistsError for an existing output without overwrite;
/// loftq::io::ArgumentError for bad settings, a missing input, no matching target, a target of
/// more than 5 dimensions, a convolution with a bitsandbytes format, shards that do not fit
/// together or a weight the solver refuses (e.g. a NaN); FormatError for malformed input files
/// (config.json included); FileError when files cannot be read or written.
inline ConvertSummary convert(const ConvertOptions& options, const Progress& progress = {}) try {
  namespace fs = std::filesystem;
  using loftq::io::ArgumentError;
  check_options(options);
  if (!fs::is_directory(options.input)) throw ArgumentError("input " + options.input.string() + " is not a directory");
  const fs::path output = fs::absolute(options.output).lexically_normal();
  if (fs::exists(output) && !options.overwrite) throw OutputExistsError(output);
  const fs::path input = fs::weakly_canonical(options.input);
  const fs::path resolved = fs::weakly_canonical(output);
  if (std::mismatch(input.begin(), input.end(), resolved.begin(), resolved.end()).first == input.end()) {
    throw ArgumentError("output " + output.string() + " must not be the input directory or inside it");
  }
  const loftq::io::Checkpoint checkpoint(options.input);
  std::vector<Target> targets = select_targets(checkpoint, options);
  ConvertSummary summary;
  for (const Target& t : targets) {
    if (stores_bitsandbytes(options.format) && t.layout == WeightLayout::convolution) {
      throw ArgumentError("format = " + std::string(format_name(options.format)) + " cannot store target " + t.name + " (" +
                          std::to_string(t.info.shape.size()) +
                          "-D, a convolution): bitsandbytes does not quantize convolutions (transformers' bitsandbytes "
                          "integration replaces nn.Linear and Conv1D layers only); use format bf16, fp16 or fp32");
    }
    if (options.format == BackboneFormat::bnb_nf4 && t.codebook != loftq::Codebook::nf4 && t.codebook != loftq::Codebook::fp4) {
      throw ArgumentError("format = bnb-nf4 stores only NF4 or FP4; target " + t.name + " is " +
                          std::string(loftq::name_of(t.codebook)));
    }
  }
  const loftq::io::AdapterConfig adapter = adapter_config_of(options, targets);

  fs::create_directories(output.parent_path());
  const fs::path staging = loftq::io::detail::temporary_beside(output);
  fs::create_directory(staging);
  DirectoryGuard guard(staging);

  if (options.shard_count > 0) {
    std::vector<Target> mine;
    for (std::size_t k = 0; k < targets.size(); ++k) {
      if (static_cast<int>(k % static_cast<std::size_t>(options.shard_count)) == options.shard_index) mine.push_back(targets[k]);
    }
    summary.targets = compute_targets(checkpoint, mine, options, adapter, staging, progress);
    loftq::io::write_file_atomically(staging / manifest_name, loftq::io::dump_json(manifest_json(options, checkpoint), 2) + "\n");
    for (const Target& t : mine) summary.files.push_back(work_file_name(t.name));
  } else {
    std::vector<fs::path> work_dirs = options.merge;
    const fs::path work = staging / ".loftq_work";
    if (options.merge.empty()) {
      if (options.bits_budget) summary.budget_note = choose_bits_by_budget(checkpoint, targets, options, progress);
      fs::create_directory(work);
      compute_targets(checkpoint, targets, options, adapter, work, progress);
      work_dirs = {work};
    } else {
      check_shards(options, checkpoint);
    }
    summary.targets = assemble(checkpoint, targets, work_dirs, options, adapter, staging, summary, progress);
    if (options.merge.empty()) fs::remove_all(work);
  }
  if (!options.report.empty()) {
    loftq::io::write_file_atomically(options.report, loftq::io::dump_json(report_document(summary), 2) + "\n");
  }
  if (fs::exists(output)) fs::remove_all(output);
  fs::rename(staging, output);
  guard.release();
  return summary;
} catch (const std::filesystem::filesystem_error& e) {
  throw loftq::io::FileError(e.what(), e.path1(), e.code());
} catch (const std::invalid_argument& e) {  // the solver's argument checks
  throw loftq::io::ArgumentError(e.what());
}

}  // namespace loftq_convert
