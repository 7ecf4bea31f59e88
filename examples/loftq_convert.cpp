// loftq-convert: a Hugging Face model directory in, a LoftQ backbone plus a PEFT adapter out.
// See --help, and loftq::io::convert() in <loftq/io/convert.hpp> for what each step does.
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <loftq/io/convert.hpp>
#include <loftq/loftq.hpp>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace {

constexpr const char* usage = R"(usage: loftq-convert --input MODEL_DIR --output OUT_DIR [options]

LoftQ-initializes every target weight of a Hugging Face model (safetensors, single or sharded):
OUT_DIR gets the backbone (each target replaced by its quantized Q), the input's config and
tokenizer files, and OUT_DIR/loftq_init/, a PEFT LoRA adapter that starts at W - Q.

  --input DIR            model directory (model.safetensors or model.safetensors.index.json)
  --output DIR           output directory; must not exist unless --overwrite
  --bits N               2, 4 or 8 (default 4)
  --rank R               adapter rank (default 16)
  --iters T              LoftQ alternating steps (default 1)
  --codebook NAME        nf4, nf2, fp4, int8, uniform2, uniform4, uniform8 (default by --bits: nf2, nf4, int8)
  --block-size N         quantization block size (default 64)
  --target-modules X     all-linear (default: 2-D weights of the transformer blocks, never
                         embeddings, norms or lm_head), or a regex the module path must match whole
  --mixed H:K,L          first K transformer blocks at H bits, the rest at L (e.g. 4:8,2)
  --bits-budget B        choose 2 or 4 bits per target for an average of at most B bits, with
                         least total squared error (measures every target at both)
  --lora-alpha A         LoRA alpha (default: the rank); the adapter is divided by alpha / rank
  --format F             bf16 (default), fp16, fp32: dequantized Q; bnb-nf4: bitsandbytes 4-bit
  --double-quant         with bnb-nf4: double-quantize the absmax, as bitsandbytes does
  --threads N            threads (default: all)
  --shard I/N            compute only targets k with k % N == I (0 <= I < N) into OUT_DIR
  --merge D1[,D2...]     assemble shard directories made by --shard into OUT_DIR
  --report FILE          write a JSON report per target (shape, bits, errors, time)
  --overwrite            replace OUT_DIR if it exists
  --help                 this text

Exit status: 0 on success, 2 on any error (with a one-line message; no output is left behind).
)";

/// A command-line error: printed on one line, exit status 2.
struct UsageError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

/// The whole of `text` as a number through `convert` (std::stoi, std::stod); `kind` names it
/// in the error.
template <class Convert>
auto parse_number(const std::string& flag, const std::string& text, const char* kind, Convert&& convert) {
  std::size_t used = 0;
  decltype(convert(text, &used)) value{};
  try {
    value = convert(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || text.empty()) throw UsageError(flag + " " + text + " is not " + kind);
  return value;
}

int parse_int(const std::string& flag, const std::string& text) {
  return parse_number(flag, text, "an integer", [](const std::string& t, std::size_t* used) { return std::stoi(t, used); });
}

double parse_double(const std::string& flag, const std::string& text) {
  return parse_number(flag, text, "a number", [](const std::string& t, std::size_t* used) { return std::stod(t, used); });
}

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

loftq::io::ConvertOptions parse_arguments(int argc, char** argv) {
  loftq::io::ConvertOptions o;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      std::fputs(usage, stdout);
      std::exit(0);
    }
    if (flag == "--overwrite") {
      o.overwrite = true;
      continue;
    }
    if (flag == "--double-quant") {
      o.double_quant = true;
      continue;
    }
    if (i + 1 >= argc) throw UsageError(flag.rfind("--", 0) == 0 ? flag + " needs a value" : "unexpected argument " + flag);
    const std::string value = argv[++i];
    if (flag == "--input") {
      o.input = value;
    } else if (flag == "--output") {
      o.output = value;
    } else if (flag == "--bits") {
      o.bits = parse_int(flag, value);
    } else if (flag == "--rank") {
      o.rank = parse_int(flag, value);
    } else if (flag == "--iters") {
      o.iters = parse_int(flag, value);
    } else if (flag == "--codebook") {
      o.codebook = loftq::codebook_from_name(value);
    } else if (flag == "--block-size") {
      o.block_size = parse_int(flag, value);
    } else if (flag == "--target-modules") {
      o.target_modules = value;
    } else if (flag == "--mixed") {
      const std::vector<std::string> parts = split(value, ',');
      const std::vector<std::string> first = parts.size() == 2 ? split(parts[0], ':') : std::vector<std::string>{};
      if (first.size() != 2) throw UsageError("--mixed " + value + " is not H:K,L (e.g. 4:8,2)");
      o.mixed = loftq::io::MixedPrecision{parse_int(flag, first[0]), parse_int(flag, first[1]), parse_int(flag, parts[1])};
    } else if (flag == "--bits-budget") {
      o.bits_budget = parse_double(flag, value);
    } else if (flag == "--lora-alpha") {
      o.lora_alpha = parse_double(flag, value);
      if (!(o.lora_alpha > 0)) throw UsageError("--lora-alpha " + value + " must be > 0");
    } else if (flag == "--format") {
      static const std::map<std::string, loftq::io::BackboneFormat> formats = {
          {"bf16", loftq::io::BackboneFormat::bf16},
          {"fp16", loftq::io::BackboneFormat::fp16},
          {"fp32", loftq::io::BackboneFormat::fp32},
          {"bnb-nf4", loftq::io::BackboneFormat::bnb_nf4}};
      const auto it = formats.find(value);
      if (it == formats.end()) throw UsageError("--format " + value + " is not bf16, fp16, fp32 or bnb-nf4");
      o.format = it->second;
    } else if (flag == "--threads") {
      o.threads = parse_int(flag, value);
    } else if (flag == "--shard") {
      const std::vector<std::string> parts = split(value, '/');
      if (parts.size() != 2) throw UsageError("--shard " + value + " is not I/N");
      o.shard_index = parse_int(flag, parts[0]);
      o.shard_count = parse_int(flag, parts[1]);
      if (o.shard_count < 1) throw UsageError("--shard " + value + ": N must be >= 1");
    } else if (flag == "--merge") {
      for (const std::string& dir : split(value, ',')) o.merge.emplace_back(dir);
    } else if (flag == "--report") {
      o.report = value;
    } else {
      throw UsageError("unknown option " + flag + " (see --help)");
    }
  }
  return o;
}

std::string human_bytes(double bytes) {
  const char* units[] = {"B", "KB", "MB", "GB", "TB"};
  int u = 0;
  while (bytes >= 1000.0 && u < 4) {
    bytes /= 1000.0;
    ++u;
  }
  char text[32];
  std::snprintf(text, sizeof text, "%.1f %s", bytes, units[u]);
  return text;
}

std::string human_seconds(double seconds) {
  char text[32];
  const long s = static_cast<long>(seconds + 0.5);
  if (seconds < 60) {
    std::snprintf(text, sizeof text, "%.1fs", seconds);
  } else if (s >= 3600) {
    std::snprintf(text, sizeof text, "%ldh%02ldm", s / 3600, (s / 60) % 60);
  } else {
    std::snprintf(text, sizeof text, "%ldm%02lds", s / 60, s % 60);
  }
  return text;
}

/// Progress on stderr: a bar redrawn in place on a terminal, plain lines otherwise.
class ProgressDisplay {
 public:
  ProgressDisplay() : terminal_(::isatty(2) != 0) {}

  loftq::io::ConvertProgress callbacks() {
    loftq::io::ConvertProgress p;
    p.begin = [this](const std::string& phase, std::size_t steps, std::uint64_t bytes) {
      end_line();
      phase_ = phase;
      steps_ = steps;
      bytes_ = bytes;
      step_ = 0;
      start_ = std::chrono::steady_clock::now();
      std::fprintf(stderr, "%s: %zu steps, %s\n", phase.c_str(), steps, human_bytes(static_cast<double>(bytes)).c_str());
    };
    p.step = [this](const std::string& name, std::uint64_t done) { show(name, done); };
    return p;
  }

  void end_line() {
    if (open_line_) std::fputc('\n', stderr);
    open_line_ = false;
  }

 private:
  void show(const std::string& name, std::uint64_t done) {
    ++step_;
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    const double fraction = bytes_ > 0 ? static_cast<double>(done) / static_cast<double>(bytes_) : 1.0;
    const double eta = fraction > 0 ? elapsed * (1.0 - fraction) / fraction : 0.0;
    const std::string counts = std::to_string(step_) + "/" + std::to_string(steps_) + "  " +
                               human_bytes(static_cast<double>(done)) + " / " + human_bytes(static_cast<double>(bytes_)) +
                               "  ETA " + human_seconds(eta);
    if (terminal_) {
      constexpr int width = 30;
      const int filled = static_cast<int>(fraction * width);
      std::string bar(static_cast<std::size_t>(filled), '#');
      bar.append(static_cast<std::size_t>(width - filled), '.');
      std::string shown = name.size() > 40 ? "..." + name.substr(name.size() - 37) : name;
      std::fprintf(stderr, "\r\033[K%s [%s] %s  %s", phase_.c_str(), bar.c_str(), counts.c_str(), shown.c_str());
      open_line_ = true;
    } else {
      std::fprintf(stderr, "%s [%s] %s\n", phase_.c_str(), counts.c_str(), name.c_str());
    }
    std::fflush(stderr);
  }

  bool terminal_;
  bool open_line_ = false;
  std::string phase_;
  std::size_t steps_ = 0, step_ = 0;
  std::uint64_t bytes_ = 0;
  std::chrono::steady_clock::time_point start_;
};

/// The summary table: per codebook, targets, mean QLoRA and LoftQ errors, and time.
void print_summary(const loftq::io::ConvertSummary& summary, const loftq::io::ConvertOptions& options) {
  struct Row {
    std::size_t count = 0;
    double qlora = 0, loftq = 0, seconds = 0;
  };
  std::map<std::string, Row> rows;
  for (const loftq::io::TargetReport& r : summary.targets) {
    Row& row = rows[r.codebook];
    ++row.count;
    row.qlora += r.qlora_error;
    row.loftq += r.loftq_errors.at(static_cast<std::size_t>(r.iteration - 1));
    row.seconds += r.seconds;
  }
  std::printf("\n| codebook | targets | mean QLoRA error | mean LoftQ error | LoftQ time |\n");
  std::printf("|----------|---------|------------------|------------------|------------|\n");
  for (const auto& [codebook, row] : rows) {
    const auto n = static_cast<double>(row.count);
    std::printf("| %-8s | %7zu | %16.5f | %16.5f | %10s |\n", codebook.c_str(), row.count, row.qlora / n, row.loftq / n,
                human_seconds(row.seconds).c_str());
  }
  if (!summary.budget_note.empty()) std::printf("\n%s\n", summary.budget_note.c_str());
  std::printf("\n%zu targets, %zu tensors copied unchanged; wrote %s:", summary.targets.size(), summary.copied,
              options.output.string().c_str());
  for (const std::string& f : summary.files) std::printf(" %s", f.c_str());
  std::printf("\n");
}

}  // namespace

int main(int argc, char** argv) {
  // Past a file size limit (ulimit -f), let write() fail with EFBIG and clean up, rather than
  // be killed with a half-written temporary left behind.
  std::signal(SIGXFSZ, SIG_IGN);
  ProgressDisplay display;
  try {
    const loftq::io::ConvertOptions options = parse_arguments(argc, argv);
    const loftq::io::ConvertSummary summary = loftq::io::convert(options, display.callbacks());
    display.end_line();
    print_summary(summary, options);
    return 0;
  } catch (const std::exception& e) {
    display.end_line();
    std::string message = e.what();
    for (char& c : message) {
      if (c == '\n') c = ' ';
    }
    std::fprintf(stderr, "loftq-convert: error: %s\n", message.c_str());
    return 2;
  }
}
