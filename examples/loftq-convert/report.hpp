/// @file report.hpp
/// What a conversion did: per-target reports, the report file (JSON) and the summary table.
#pragma once

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <loftq/io/error.hpp>
#include <loftq/io/json.hpp>
#include <map>
#include <string>
#include <vector>

#include "human_units.hpp"

namespace loftq_convert {

/// What targets take: their bytes in the input and as the output stores them.
struct ByteCounts {
  std::uint64_t original = 0;  ///< The weights in the input's dtype.
  /// Every backbone tensor the output holds for them: the 16- or 32-bit Q, or bitsandbytes'
  /// packed codes, absmax, nested absmax and map, quant_map and quant-state JSON.
  std::uint64_t backbone = 0;
  std::uint64_t adapter = 0;  ///< Their lora_A and lora_B as stored (float32, padding included).

  /// (backbone + adapter) / original, the compression ratio of the LoftQ paper's Appendix A;
  /// 0 when original is 0.
  double compression() const {
    return original == 0 ? 0.0 : static_cast<double>(backbone + adapter) / static_cast<double>(original);
  }
  /// Adds `other`'s counts to these.
  ByteCounts& operator+=(const ByteCounts& other) {
    original += other.original;
    backbone += other.backbone;
    adapter += other.adapter;
    return *this;
  }
};

/// What happened to one target.
struct TargetReport {
  std::string name;                  ///< Tensor name.
  std::vector<std::uint64_t> shape;  ///< Its shape.
  int bits = 0;                      ///< Bits chosen.
  int rank = 0;                      ///< Rank of its LoftQ factors, min(r, out, in) (the adapter has r).
  std::string codebook;              ///< Codebook name.
  double qlora_error = 0.0;          ///< ||W - q(W)|| / ||W||.
  std::vector<double> loftq_errors;  ///< Relative error after each step.
  int iteration = 0;                 ///< Step returned.
  std::vector<int> krylov_depths;    ///< Krylov blocks each step's truncated SVD took (0: another method).
  double seconds = 0.0;              ///< Wall time of its LoftQ call.
  ByteCounts bytes;                  ///< Its bytes in the input and the output.
};

/// What convert() did.
struct ConvertSummary {
  std::vector<TargetReport> targets;  ///< Targets computed or merged, by name.
  std::size_t copied = 0;             ///< Tensors copied unchanged.
  std::vector<std::string> files;     ///< Output files written (relative names).
  std::string budget_note;            ///< What the bit budget chose, or empty.
};

/// Byte counts as JSON: original_bytes, backbone_bytes, adapter_bytes and compression.
inline loftq::io::Json bytes_json(const ByteCounts& b) {
  return {{"original_bytes", b.original},
          {"backbone_bytes", b.backbone},
          {"adapter_bytes", b.adapter},
          {"compression", b.compression()}};
}

/// The report of one target as JSON, its bytes_json() members included.
inline loftq::io::Json report_json(const TargetReport& r) {
  loftq::io::Json j = {{"name", r.name},
                       {"shape", r.shape},
                       {"bits", r.bits},
                       {"rank", r.rank},
                       {"codebook", r.codebook},
                       {"qlora_error", r.qlora_error},
                       {"loftq_errors", r.loftq_errors},
                       {"iteration", r.iteration},
                       {"krylov_depths", r.krylov_depths},
                       {"seconds", r.seconds}};
  j.update(bytes_json(r.bytes));
  return j;
}

/// The TargetReport stored by report_json(); `what` names it in errors (FormatError).
inline TargetReport report_from_json(const loftq::io::Json& j, const std::string& what) {
  using namespace loftq::io;
  TargetReport r;
  r.name = json_string(json_at(j, "name", what), what + ": name");
  const Json& shape = json_at(j, "shape", what);
  if (!shape.is_array()) throw FormatError(what + ": shape is not an array");
  for (const Json& d : shape) r.shape.push_back(json_u64(d, what + ": shape"));
  r.bits = static_cast<int>(json_u64(json_at(j, "bits", what), what + ": bits"));
  r.rank = static_cast<int>(json_u64(json_at(j, "rank", what), what + ": rank"));
  r.codebook = json_string(json_at(j, "codebook", what), what + ": codebook");
  r.qlora_error = json_number(json_at(j, "qlora_error", what), what + ": qlora_error");
  const Json& errors = json_at(j, "loftq_errors", what);
  if (!errors.is_array()) throw FormatError(what + ": loftq_errors is not an array");
  for (const Json& e : errors) r.loftq_errors.push_back(json_number(e, what + ": loftq_errors"));
  r.iteration = static_cast<int>(json_u64(json_at(j, "iteration", what), what + ": iteration"));
  const Json& depths = json_at(j, "krylov_depths", what);
  if (!depths.is_array()) throw FormatError(what + ": krylov_depths is not an array");
  for (const Json& d : depths) r.krylov_depths.push_back(static_cast<int>(json_u64(d, what + ": krylov_depths")));
  r.seconds = json_number(json_at(j, "seconds", what), what + ": seconds");
  r.bytes.original = json_u64(json_at(j, "original_bytes", what), what + ": original_bytes");
  r.bytes.backbone = json_u64(json_at(j, "backbone_bytes", what), what + ": backbone_bytes");
  r.bytes.adapter = json_u64(json_at(j, "adapter_bytes", what), what + ": adapter_bytes");
  return r;
}

/// The byte counts of all of `summary`'s targets.
inline ByteCounts total_bytes(const ConvertSummary& summary) {
  ByteCounts total;
  for (const TargetReport& r : summary.targets) total += r.bytes;
  return total;
}

/// The report file: {"targets": [report_json() of each], "compression": bytes_json() of
/// total_bytes(), "bits_budget": note when there is one}.
inline loftq::io::Json report_document(const ConvertSummary& summary) {
  loftq::io::Json report = {{"targets", loftq::io::Json::array()}, {"compression", bytes_json(total_bytes(summary))}};
  for (const TargetReport& r : summary.targets) report["targets"].push_back(report_json(r));
  if (!summary.budget_note.empty()) report["bits_budget"] = summary.budget_note;
  return report;
}

/// The summary table (per codebook: targets, mean QLoRA and LoftQ errors, compression, LoftQ
/// time), the total compression, the bit budget's note, and what was written into `output`.
inline std::string summary_table(const ConvertSummary& summary, const std::filesystem::path& output) {
  struct Row {
    std::size_t count = 0;
    double qlora = 0, loftq = 0, seconds = 0;
    ByteCounts bytes;
  };
  std::map<std::string, Row> rows;
  for (const TargetReport& r : summary.targets) {
    Row& row = rows[r.codebook];
    ++row.count;
    row.qlora += r.qlora_error;
    row.loftq += r.loftq_errors.at(static_cast<std::size_t>(r.iteration - 1));
    row.seconds += r.seconds;
    row.bytes += r.bytes;
  }
  std::string text = "\n| codebook | targets | mean QLoRA error | mean LoftQ error | compression | LoftQ time |\n"
                     "|----------|---------|------------------|------------------|-------------|------------|\n";
  for (const auto& [codebook, row] : rows) {
    const auto n = static_cast<double>(row.count);
    char line[200];
    std::snprintf(line, sizeof line, "| %-8s | %7zu | %16.5f | %16.5f | %11.4f | %10s |\n", codebook.c_str(), row.count,
                  row.qlora / n, row.loftq / n, row.bytes.compression(), human_seconds(row.seconds).c_str());
    text += line;
  }
  const ByteCounts total = total_bytes(summary);
  char ratio[32];
  std::snprintf(ratio, sizeof ratio, "%.4f", total.compression());
  text += "\ncompression (backbone + adapter) / original: (" + human_bytes(static_cast<double>(total.backbone)) + " + " +
          human_bytes(static_cast<double>(total.adapter)) + ") / " + human_bytes(static_cast<double>(total.original)) +
          " = " + ratio + "\n";
  if (!summary.budget_note.empty()) text += "\n" + summary.budget_note + "\n";
  text += "\n" + std::to_string(summary.targets.size()) + " targets, " + std::to_string(summary.copied) +
          " tensors copied unchanged; wrote " + output.string() + ":";
  for (const std::string& f : summary.files) text += " " + f;
  return text + "\n";
}

}  // namespace loftq_convert
