// loftq-convert: a Hugging Face model directory in, a LoftQ backbone plus a PEFT adapter out.
// The flags (CLI11) and exit statuses; engine.hpp does the conversion.
#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>
#include <exception>
#include <loftq/codebook.hpp>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "engine.hpp"

namespace {

using loftq_convert::ConvertOptions;

constexpr const char* description = R"(LoftQ-initializes every target weight of a Hugging Face model (safetensors, single or sharded):
OUT_DIR gets the backbone (each target replaced by its quantized Q), the input's config and
tokenizer files, and OUT_DIR/loftq_init/, a PEFT LoRA adapter that starts at W - Q. The Conv1D
layers of GPT-2-family models (config.json's model_type gpt2, openai-gpt, imagegpt,
decision_transformer, clvp), stored (in, out), are converted as their (out, in) transpose.)";

constexpr const char* footer =
    "Exit status: 0 on success, 2 on any error (with a one-line message; no output is left behind).";

/// The integer that is the whole of `text`, or nothing.
std::optional<long> whole_integer(const std::string& text) {
  std::size_t used = 0;
  try {
    const long value = std::stol(text, &used);
    if (used == text.size()) return value;
  } catch (const std::exception&) {
  }
  return std::nullopt;
}

/// The parts of `text` between `separator`s.
std::vector<std::string> split(const std::string& text, char separator) {
  std::vector<std::string> parts;
  std::size_t start = 0;
  for (;;) {
    const std::size_t end = text.find(separator, start);
    parts.push_back(text.substr(start, end - start));
    if (end == std::string::npos) return parts;
    start = end + 1;
  }
}

/// An integer value of at least `low` (CLI11 prefixes the flag to the message).
CLI::Validator at_least(long low) {
  return CLI::Validator(
      [low](std::string& text) -> std::string {
        const std::optional<long> value = whole_integer(text);
        if (!value) return text + " is not an integer";
        if (*value < low) return text + " must be >= " + std::to_string(low);
        return {};
      },
      "INT>=" + std::to_string(low));
}

/// A number that `accept` accepts, else "<text> <rule>" (CLI11 prefixes the flag).
template <class Accept>
CLI::Validator number_where(Accept accept, const std::string& rule, const std::string& name) {
  return CLI::Validator(
      [accept, rule](std::string& text) -> std::string {
        std::size_t used = 0;
        double value = 0.0;
        try {
          value = std::stod(text, &used);
        } catch (const std::exception&) {
          used = 0;
        }
        if (used == 0 || used != text.size()) return text + " is not a number";
        return accept(value) ? std::string() : text + " " + rule;
      },
      name);
}

/// "H:K,L" as mixed precision, or an error message.
std::pair<loftq_convert::MixedPrecision, std::string> parse_mixed(const std::string& text) {
  const std::vector<std::string> parts = split(text, ',');
  const std::vector<std::string> first = parts.size() == 2 ? split(parts[0], ':') : std::vector<std::string>{};
  const std::string syntax = text + " is not H:K,L (e.g. 4:8,2)";
  if (first.size() != 2) return {{}, syntax};
  const std::optional<long> high = whole_integer(first[0]), blocks = whole_integer(first[1]), low = whole_integer(parts[1]);
  if (!high || !blocks || !low) return {{}, syntax};
  for (long bits : {*high, *low}) {
    if (bits != 2 && bits != 4 && bits != 8) return {{}, text + ": bits " + std::to_string(bits) + " are not 2, 4 or 8"};
  }
  if (*blocks < 0 || *blocks > 1'000'000) return {{}, text + ": block count " + first[1] + " is not in [0, 10^6]"};
  return {{static_cast<int>(*high), static_cast<int>(*blocks), static_cast<int>(*low)}, {}};
}

/// "I/N" as (I, N), or an error message.
std::pair<std::pair<int, int>, std::string> parse_shard(const std::string& text) {
  const std::vector<std::string> parts = split(text, '/');
  const std::optional<long> index = parts.size() == 2 ? whole_integer(parts[0]) : std::nullopt;
  const std::optional<long> count = parts.size() == 2 ? whole_integer(parts[1]) : std::nullopt;
  if (!index || !count) return {{}, text + " is not I/N"};
  if (*count < 1 || *count > 1'000'000 || *index < 0 || *index >= *count) return {{}, text + " needs 0 <= I < N"};
  return {{static_cast<int>(*index), static_cast<int>(*count)}, {}};
}

/// A validator, without a description of its own, from a parser that returns (value, error
/// message).
template <class Parse>
CLI::Validator syntax_of(Parse parse, const std::string& name) {
  return CLI::Validator([parse](std::string& text) { return parse(text).second; }, "", name);
}

/// The flags: what they fill in, before conversion into ConvertOptions.
struct Flags {
  ConvertOptions options;          ///< Filled directly by the flags that map one to one.
  std::string codebook;            ///< --codebook.
  std::string mixed;               ///< --mixed.
  double bits_budget = 0.0;        ///< --bits-budget.
  std::string format = "bf16";     ///< --format.
  std::string shard;               ///< --shard.
  std::string merge;               ///< --merge.
  std::string input, output, report;  ///< --input, --output, --report.
};

/// Declares every flag of loftq-convert on `app`, filling `flags`.
void declare_flags(CLI::App& app, Flags& flags) {
  ConvertOptions& o = flags.options;
  std::vector<std::string> codebooks;
  for (loftq::Codebook c : {loftq::Codebook::nf4, loftq::Codebook::nf2, loftq::Codebook::fp4, loftq::Codebook::int8,
                            loftq::Codebook::llm_int8, loftq::Codebook::uniform2, loftq::Codebook::uniform4,
                            loftq::Codebook::uniform8}) {
    codebooks.emplace_back(loftq::name_of(c));
  }
  std::vector<std::string> formats;
  for (loftq_convert::BackboneFormat f : loftq_convert::backbone_formats) formats.emplace_back(loftq_convert::format_name(f));

  app.add_option("--input", flags.input, "model directory (model.safetensors or model.safetensors.index.json)")
      ->required()
      ->type_name("DIR");
  app.add_option("--output", flags.output, "output directory; must not exist unless --overwrite")->required()->type_name("DIR");
  app.add_option("--bits", o.bits, "2, 4 or 8 (default 4; 8 is bitsandbytes' LLM.int8, row-wise)")->check(CLI::IsMember({2, 4, 8}))->type_name("N");
  app.add_option("--rank", o.rank, "adapter rank (default 16)")->check(at_least(1))->type_name("R");
  app.add_option("--iters", o.iters, "LoftQ alternating steps (default 1)")->check(at_least(1))->type_name("T");
  app.add_option("--codebook", flags.codebook,
                 "nf4, nf2, fp4, int8 (per block), llm_int8, uniform2, uniform4, uniform8 (default by --bits: nf2, nf4, "
                 "llm_int8)")
      ->check(CLI::IsMember(codebooks))
      ->type_name("NAME");
  app.add_option("--block-size", o.block_size, "quantization block size (default 64; LLM.int8 takes one row per block)")->check(at_least(1))->type_name("N");
  app.add_option("--target-modules", o.target_modules,
                 "all-linear (default: 2-D weights of the transformer blocks, never embeddings, norms or lm_head), "
                 "or a regex the module path must match whole (which may select convolutions: 3- to 5-D weights, "
                 "converted as c_out x (c_in k ...), not with bnb-nf4)")
      ->type_name("X");
  CLI::Option* mixed = app.add_option("--mixed", flags.mixed, "first K transformer blocks at H bits, the rest at L (e.g. 4:8,2)")
                           ->check(syntax_of(parse_mixed, "H:K,L"))
                           ->type_name("H:K,L");
  CLI::Option* budget = app.add_option("--bits-budget", flags.bits_budget,
                                       "choose 2 or 4 bits per target for an average of at most B bits, with least "
                                       "total squared error (measures every target at both)")
                            ->check(number_where([](double b) { return b >= 2.0 && b <= 4.0; }, "is not in [2, 4]", "NUMBER in [2, 4]"))
                            ->type_name("B");
  app.add_option("--lora-alpha", o.lora_alpha,
                 "LoRA alpha (default: the rank); lora_A and lora_B are divided by sqrt(alpha / rank), "
                 "or by sqrt(alpha / sqrt(rank)) with --use-rslora")
      ->check(number_where([](double a) { return a > 0.0 && a <= 1e30; }, "must be > 0 (and finite)", "NUMBER>0"))
      ->type_name("A");
  app.add_flag("--use-rslora", o.use_rslora, "rsLoRA: scaling alpha / sqrt(rank) rather than alpha / rank (PEFT's use_rslora)");
  app.add_option("--format", flags.format,
                 "bf16 (default), fp16, fp32: dequantized Q, for bitsandbytes to quantize at load time (load_in_4bit, "
                 "load_in_8bit); bnb-nf4: bitsandbytes 4-bit (Linear4bit); bnb-int8: bitsandbytes LLM.int8 "
                 "(Linear8bitLt); the bnb formats store linear and Conv1D layers only")
      ->check(CLI::IsMember(formats))
      ->type_name("F");
  app.add_flag("--double-quant", o.double_quant,
               "4-bit: double-quantized absmax, as bitsandbytes does: stored so with bnb-nf4; with bf16, fp16, fp32 "
               "the backbone is made for bnb_4bit_use_double_quant=True");
  app.add_option("--threads", o.threads, "threads (default: all)")->check(at_least(0))->type_name("N");
  CLI::Option* shard = app.add_option("--shard", flags.shard, "compute only targets k with k % N == I (0 <= I < N) into OUT_DIR")
                           ->check(syntax_of(parse_shard, "I/N"))
                           ->type_name("I/N");
  CLI::Option* merge =
      app.add_option("--merge", flags.merge, "assemble shard directories made by --shard into OUT_DIR")->type_name("D1[,D2...]");
  app.add_option("--report", flags.report,
                 "write a JSON report per target (shape, bits, errors, time, bytes and compression) and in total")
      ->type_name("FILE");
  app.add_flag("--overwrite", o.overwrite, "replace OUT_DIR if it exists");
  mixed->excludes(budget);
  budget->excludes(shard);
  shard->excludes(merge);
}

/// The ConvertOptions of parsed flags.
ConvertOptions options_of(const CLI::App& app, const Flags& flags) {
  ConvertOptions o = flags.options;
  o.input = flags.input;
  o.output = flags.output;
  o.report = flags.report;
  if (!flags.codebook.empty()) o.codebook = loftq::codebook_from_name(flags.codebook);
  if (app.count("--block-size") > 0 && o.bits == 8 && !o.mixed && (!o.codebook || *o.codebook == loftq::Codebook::llm_int8)) {
    throw loftq::io::ArgumentError("block_size = " + std::to_string(o.block_size) +
                                   ": LLM.int8 (bits = 8) quantizes one row per block; for per-block int8 use --codebook int8");
  }
  if (!flags.mixed.empty()) o.mixed = parse_mixed(flags.mixed).first;
  if (app.count("--bits-budget") > 0) o.bits_budget = flags.bits_budget;
  o.format = loftq_convert::format_from_name(flags.format);
  if (!flags.shard.empty()) std::tie(o.shard_index, o.shard_count) = parse_shard(flags.shard).first;
  if (app.count("--merge") > 0) {
    for (const std::string& dir : split(flags.merge, ',')) o.merge.emplace_back(dir);
  }
  return o;
}

/// Prints `message` as one line "loftq-convert: error: ..." on stderr; returns exit status 2.
int fail(std::string message) {
  for (char& c : message) {
    if (c == '\n') c = ' ';
  }
  std::fprintf(stderr, "loftq-convert: error: %s\n", message.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  // Past a file size limit (ulimit -f), let write() fail with EFBIG and clean up, rather than
  // be killed with a half-written temporary left behind.
  std::signal(SIGXFSZ, SIG_IGN);
#if defined(__GLIBC__)
  // Every target allocates matrices of tens to hundreds of MB (W, its residual, the backbone).
  // glibc would map each afresh and unmap it when freed, so every target would fault in its
  // pages again (a third of the LoftQ time of a 4096 x 4096 T = 1 target); from the heap, and
  // with freed memory kept, later targets reuse the pages of earlier ones. The peak stays the
  // largest target's.
  mallopt(M_MMAP_MAX, 0);
  mallopt(M_TRIM_THRESHOLD, -1);
#endif
  CLI::App app(description, "loftq-convert");
  app.footer(footer);
  Flags flags;
  declare_flags(app, flags);
  loftq_convert::ProgressDisplay display;
  try {
    app.parse(argc, argv);
    const ConvertOptions options = options_of(app, flags);
    const loftq_convert::ConvertSummary summary = loftq_convert::convert(options, display.events());
    display.end_line();
    std::fputs(loftq_convert::summary_table(summary, options.output).c_str(), stdout);
    return 0;
  } catch (const CLI::CallForHelp&) {
    std::fputs(app.help().c_str(), stdout);
    return 0;
  } catch (const CLI::ParseError& e) {
    return fail(e.what());
  } catch (const loftq_convert::OutputExistsError& e) {
    display.end_line();
    return fail("output " + e.path().string() + " exists (add --overwrite to replace it)");
  } catch (const std::exception& e) {
    display.end_line();
    return fail(e.what());
  }
}
