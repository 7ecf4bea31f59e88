/// @file options.hpp
/// The settings of one conversion (what loftq-convert's flags fill in) and their checks.
#pragma once

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <locale>
#include <loftq/codebook.hpp>
#include <loftq/io/error.hpp>
#include <loftq/io/safetensors.hpp>
#include <loftq/load_path.hpp>
#include <loftq/lowrank.hpp>
#include <loftq/solver.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace loftq_convert {

/// How the backbone stores a target's Q.
enum class BackboneFormat : std::uint8_t {
  bf16,     ///< Dequantized Q in bfloat16.
  fp16,     ///< Dequantized Q in float16.
  fp32,     ///< Dequantized Q in float32.
  bnb_nf4,  ///< Packed in the bitsandbytes 4-bit layout (NF4 or FP4 codebooks).
  bnb_int8, ///< The bitsandbytes LLM.int8 layout of a Linear8bitLt (int8 weight, SCB, weight_format).
};

/// Every backbone format, in declaration order.
inline constexpr BackboneFormat backbone_formats[] = {BackboneFormat::bf16, BackboneFormat::fp16, BackboneFormat::fp32,
                                                      BackboneFormat::bnb_nf4, BackboneFormat::bnb_int8};

/// The name of a backbone format: "bf16", "fp16", "fp32", "bnb-nf4" or "bnb-int8".
constexpr std::string_view format_name(BackboneFormat format) {
  switch (format) {
    case BackboneFormat::bf16: return "bf16";
    case BackboneFormat::fp16: return "fp16";
    case BackboneFormat::fp32: return "fp32";
    case BackboneFormat::bnb_nf4: return "bnb-nf4";
    case BackboneFormat::bnb_int8: return "bnb-int8";
  }
  return "?";
}

/// True for a format in a bitsandbytes layout ("bnb-..."), which holds only what bitsandbytes
/// quantizes: linear and Conv1D layers, never convolutions.
constexpr bool stores_bitsandbytes(BackboneFormat format) { return format_name(format).substr(0, 4) == "bnb-"; }

/// The backbone format named `name` (as format_name() spells it); throws
/// loftq::io::ArgumentError otherwise.
inline BackboneFormat format_from_name(std::string_view name) {
  for (BackboneFormat f : backbone_formats) {
    if (format_name(f) == name) return f;
  }
  throw loftq::io::ArgumentError("format = \"" + std::string(name) + "\" is not bf16, fp16, fp32, bnb-nf4 or bnb-int8");
}

/// The name of a truncated-SVD method: "exact", "block_krylov" or "subspace_iteration".
constexpr std::string_view svd_method_name(loftq::SvdMethod method) {
  switch (method) {
    case loftq::SvdMethod::exact: return "exact";
    case loftq::SvdMethod::block_krylov: return "block_krylov";
    case loftq::SvdMethod::subspace_iteration: return "subspace_iteration";
  }
  return "?";
}

/// The paper's mixed precision: blocks below `blocks` at high_bits, the others at low_bits.
struct MixedPrecision {
  int high_bits = 4;  ///< Bits of the first blocks.
  int blocks = 0;     ///< How many leading transformer blocks get high_bits.
  int low_bits = 2;   ///< Bits of the rest.
};

/// The solver settings that have no flag: loftq::Options' defaults, passed to every LoftQ call.
struct SolverSettings {
  loftq::SvdMethod svd = loftq::Options{}.svd;                  ///< Truncated-SVD method.
  int oversampling = loftq::Options{}.oversampling;             ///< Sketch columns beyond the rank.
  int krylov_depth = loftq::Options{}.krylov_depth;             ///< Most Krylov blocks of a cold step.
  int warm_krylov_depth = loftq::Options{}.warm_krylov_depth;   ///< Most Krylov blocks of a warm step.
  double krylov_tolerance = loftq::Options{}.krylov_tolerance;  ///< When a step stops adding Krylov blocks.
  int power_iters = loftq::Options{}.power_iters;               ///< subspace_iteration passes.
  bool warm_start = loftq::Options{}.warm_start;                ///< Warm-start step t > 1 with B_{t-1}.
  std::uint64_t seed = loftq::Options{}.seed;                   ///< Seed of the randomized SVD.
  bool keep_best = loftq::Options{}.keep_best;                  ///< Keep the iterate of least error.
};

/// Everything one conversion does.
struct ConvertOptions {
  std::filesystem::path input;                   ///< Model directory.
  std::filesystem::path output;                  ///< Output directory (must not exist unless overwrite).
  int bits = 4;                                  ///< Bits of every target (2, 4 or 8) without mixed or budget.
  Eigen::Index rank = 16;                        ///< Adapter rank r.
  int iters = 1;                                 ///< LoftQ steps T.
  std::optional<loftq::Codebook> codebook;       ///< Codebook for `bits`; default NF2, NF4 or Int8 by bits.
  int block_size = 64;                           ///< Quantization block size.
  std::string target_modules = "all-linear";     ///< "all-linear", or a regex the module path must match whole.
  std::optional<MixedPrecision> mixed;           ///< Mixed precision by block.
  std::optional<double> bits_budget;             ///< Average-bit budget over targets (2 or 4 bits each).
  double lora_alpha = 0.0;                       ///< LoRA alpha; 0 means rank.
  bool use_rslora = false;                       ///< rsLoRA: scaling alpha / sqrt(rank) rather than alpha / rank.
  BackboneFormat format = BackboneFormat::bf16;  ///< Backbone storage of targets.
  bool double_quant = false;                     ///< 4-bit: the absmax double-quantized (bnb-nf4: stored so; 16-bit: loaded so).
  SolverSettings solver;                         ///< Solver settings without a flag.
  int threads = 0;                               ///< Threads; 0 means all.
  int shard_index = 0;                           ///< With shard_count > 0: which subset, in [0, shard_count).
  int shard_count = 0;                           ///< > 0: compute only the targets k with k % shard_count == shard_index.
  std::vector<std::filesystem::path> merge;      ///< Shard directories to assemble (the merge step).
  std::filesystem::path report;                  ///< Report JSON path, or empty.
  bool overwrite = false;                        ///< Replace an existing output directory.
};

/// The output directory exists and ConvertOptions::overwrite is false.
class OutputExistsError : public loftq::io::ArgumentError {
 public:
  /// For the existing directory `path`.
  explicit OutputExistsError(std::filesystem::path path)
      : ArgumentError("output " + path.string() + " exists and overwrite is not set"), path_(std::move(path)) {}
  /// The existing directory.
  const std::filesystem::path& path() const noexcept { return path_; }

 private:
  std::filesystem::path path_;
};

/// A number as the shortest text that reads back the same ("2.5", not "2.500000"), whatever
/// the locale.
inline std::string number_text(double value) {
  std::string text;
  for (int digits = 1; digits <= 17; ++digits) {
    std::ostringstream out;
    out.imbue(std::locale::classic());
    out.precision(digits);
    out << value;
    text = out.str();
    std::istringstream in(text);
    in.imbue(std::locale::classic());
    double back = 0.0;
    if (in >> back && back == value) break;
  }
  return text;
}

/// The codebook of a target quantized at `bits` under the options: options.codebook when it
/// applies (bits is options.bits, without mixed precision or bit budget), else NF2, NF4, or
/// for 8 bits bitsandbytes' LLM.int8 (row-wise; the per-block Int8 only as options.codebook).
inline loftq::Codebook codebook_of_bits(const ConvertOptions& options, int bits) {
  if (options.codebook && bits == options.bits && !options.mixed && !options.bits_budget) return *options.codebook;
  return bits == 8 ? loftq::Codebook::llm_int8 : loftq::codebook_for_bits(bits);
}

/// The float type of a checkpoint dtype (F32, F16 or BF16).
inline loftq::FloatType float_type_of(loftq::io::Dtype dtype) {
  switch (dtype) {
    case loftq::io::Dtype::f16: return loftq::FloatType::float16;
    case loftq::io::Dtype::bf16: return loftq::FloatType::bfloat16;
    default: return loftq::FloatType::float32;
  }
}

/// The float type a 16- or 32-bit backbone format stores.
inline loftq::FloatType float_type_of(BackboneFormat format) {
  switch (format) {
    case BackboneFormat::bf16: return loftq::FloatType::bfloat16;
    case BackboneFormat::fp16: return loftq::FloatType::float16;
    default: return loftq::FloatType::float32;
  }
}

/// The load path of a target with `codebook` whose input tensor has dtype `input` and `dims`
/// dimensions: how the loader the README's "Fine-tuning the result" gives for the format turns
/// the stored backbone into the weight of the matmul, which the solver then optimizes for.
/// - bnb-nf4: the stored codes and float32 absmax (double-quantized with double_quant),
///   dequantized to the input's dtype (the quant state's dtype).
/// - bnb-int8: the stored int8 codes and SCB, dequantized to float32.
/// - bf16, fp16, fp32 with NF4 or FP4 on a 2-D target: bitsandbytes quantizes the stored values
///   at load time (load_in_4bit, with double_quant bnb_4bit_use_double_quant): from the
///   format's type, dequantized to it; with LLM.int8 (load_in_8bit): from the format's type,
///   dequantized to float32.
/// - otherwise (NF2, Int8, Uniform, or a convolution, which bitsandbytes does not quantize): the
///   stored 16- or 32-bit values themselves.
inline loftq::LoadPath load_path_of(const ConvertOptions& options, loftq::Codebook codebook, loftq::io::Dtype input,
                                    std::size_t dims) {
  using loftq::Codebook;
  using loftq::FloatType;
  switch (options.format) {
    case BackboneFormat::bnb_nf4: return {FloatType::float32, options.double_quant, float_type_of(input)};
    case BackboneFormat::bnb_int8: return {FloatType::float32, false, FloatType::float32};
    default: break;
  }
  const FloatType stored = float_type_of(options.format);
  if (dims == 2 && (codebook == Codebook::nf4 || codebook == Codebook::fp4)) return {stored, options.double_quant, stored};
  if (dims == 2 && codebook == Codebook::llm_int8) return {stored, false, FloatType::float32};
  return {FloatType::float32, false, stored};
}

/// Throws loftq::io::ArgumentError, naming the setting and its value, for settings that are
/// out of range or cannot work together.
inline void check_options(const ConvertOptions& options) {
  using loftq::io::ArgumentError;
  const auto check_bits = [](const std::string& setting, int bits) {
    if (bits != 2 && bits != 4 && bits != 8) throw ArgumentError(setting + " = " + std::to_string(bits) + " is not 2, 4 or 8");
  };
  if (options.input.empty()) throw ArgumentError("input is not set");
  if (options.output.empty()) throw ArgumentError("output is not set");
  check_bits("bits", options.bits);
  if (options.codebook && loftq::bits_of(*options.codebook) != options.bits) {
    throw ArgumentError("codebook = " + std::string(loftq::name_of(*options.codebook)) + " has " +
                        std::to_string(loftq::bits_of(*options.codebook)) + " bits, bits = " + std::to_string(options.bits));
  }
  if (options.rank < 1) throw ArgumentError("rank = " + std::to_string(options.rank) + " must be >= 1");
  if (options.iters < 1) throw ArgumentError("iters = " + std::to_string(options.iters) + " must be >= 1");
  if (options.block_size < 1) throw ArgumentError("block_size = " + std::to_string(options.block_size) + " must be >= 1");
  if (options.mixed && options.bits_budget) throw ArgumentError("mixed and bits_budget exclude each other");
  if (options.mixed) {
    check_bits("mixed high_bits", options.mixed->high_bits);
    check_bits("mixed low_bits", options.mixed->low_bits);
    if (options.mixed->blocks < 0) throw ArgumentError("mixed blocks = " + std::to_string(options.mixed->blocks) + " must be >= 0");
  }
  if (options.bits_budget && !(*options.bits_budget >= 2.0 && *options.bits_budget <= 4.0)) {
    throw ArgumentError("bits_budget = " + number_text(*options.bits_budget) + " is not in [2, 4]");
  }
  if (options.bits_budget && options.shard_count > 0) {
    throw ArgumentError("bits_budget needs every target's errors: it cannot run in a shard");
  }
  if (options.shard_count < 0 ||
      (options.shard_count > 0 && (options.shard_index < 0 || options.shard_index >= options.shard_count))) {
    throw ArgumentError("shard " + std::to_string(options.shard_index) + " of " + std::to_string(options.shard_count) +
                        " needs 0 <= shard_index < shard_count");
  }
  if (options.shard_count > 0 && !options.merge.empty()) throw ArgumentError("a shard and a merge exclude each other");
  if (!(options.lora_alpha >= 0.0) || !std::isfinite(options.lora_alpha)) {
    throw ArgumentError("lora_alpha = " + number_text(options.lora_alpha) + " must be > 0 (or 0 for the rank)");
  }
  if (options.threads < 0) throw ArgumentError("threads = " + std::to_string(options.threads) + " must be >= 0");
  const bool nf4_or_fp4 = !options.codebook || *options.codebook == loftq::Codebook::nf4 ||
                          *options.codebook == loftq::Codebook::fp4;
  if (options.double_quant && (options.bits != 4 || !nf4_or_fp4 || options.mixed || options.bits_budget)) {
    throw ArgumentError("double_quant is bitsandbytes' double quantization of 4-bit NF4 or FP4 weights: it needs "
                        "bits = 4 (not " + std::to_string(options.bits) + "), codebook nf4 or fp4 and no mixed or bits_budget");
  }
  const bool quantized_at_load = options.format == BackboneFormat::bf16 || options.format == BackboneFormat::fp16 ||
                                 options.format == BackboneFormat::fp32;
  const bool four_bit_targets = (options.bits == 4 && nf4_or_fp4) || options.bits_budget ||
                                (options.mixed && (options.mixed->high_bits == 4 || options.mixed->low_bits == 4));
  if (quantized_at_load && four_bit_targets && options.block_size != 64) {
    throw ArgumentError("block_size = " + std::to_string(options.block_size) + ": a " +
                        std::string(format_name(options.format)) +
                        " backbone is quantized by bitsandbytes at load time (load_in_4bit) in blocks of 64, which "
                        "transformers does not let one change; store other block sizes with format = bnb-nf4");
  }
  if (options.format == BackboneFormat::bnb_int8 &&
      (options.bits != 8 || options.mixed || options.bits_budget ||
       (options.codebook && *options.codebook != loftq::Codebook::llm_int8))) {
    throw ArgumentError("format = bnb-int8 stores bitsandbytes' LLM.int8: it needs bits = 8 (not " + std::to_string(options.bits) +
                        "), no other codebook and no mixed or bits_budget");
  }
}

}  // namespace loftq_convert
