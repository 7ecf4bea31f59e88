// Writes a Llama-shaped BF16 checkpoint of Gaussian weights (std 0.02), to try loftq-convert
// without a download:
//   synthetic_checkpoint OUT_DIR [BLOCKS [HIDDEN [INTERMEDIATE [VOCAB]]]]
// Defaults: 1 block of LLaMA-2-7B's shape (hidden 4096, intermediate 11008, vocab 32000), one
// shard per block plus one for the embeddings and the head, with an index.
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <loftq/io/safetensors.hpp>
#include <map>
#include <random>
#include <string>
#include <vector>

namespace {

/// A BF16 tensor of Gaussian values (std 0.02), or of ones for a 1-D (norm) weight.
loftq::io::TensorSource gaussian_tensor(const std::string& name, std::vector<std::uint64_t> shape, unsigned seed) {
  return {name, loftq::io::Dtype::bf16, shape, [shape, seed](const loftq::io::TensorSource::Emit& emit) {
            std::uint64_t n = 1;
            for (std::uint64_t d : shape) n *= d;
            std::mt19937 gen(seed);
            std::normal_distribution<float> normal(0.0f, 0.02f);
            std::vector<std::uint16_t> row(static_cast<std::size_t>(shape.back()));
            for (std::uint64_t done = 0; done < n; done += row.size()) {
              for (std::uint16_t& h : row) h = loftq::io::float_to_bf16(shape.size() == 1 ? 1.0f : normal(gen));
              emit(row.data(), row.size() * 2);
            }
          }};
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: synthetic_checkpoint OUT_DIR [BLOCKS [HIDDEN [INTERMEDIATE [VOCAB]]]]\n");
    return 2;
  }
  try {
    const std::filesystem::path dir = argv[1];
    const auto arg = [&](int i, std::uint64_t fallback) { return argc > i ? std::stoull(argv[i]) : fallback; };
    const std::uint64_t blocks = arg(2, 1), hidden = arg(3, 4096), intermediate = arg(4, 11008), vocab = arg(5, 32000);
    std::filesystem::create_directories(dir);
    const std::size_t shards = static_cast<std::size_t>(blocks) + 1;
    const auto shard_name = [&](std::size_t s) {
      char name[64];
      std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", s + 1, shards);
      return std::string(name);
    };
    std::map<std::string, std::string> weight_map;
    unsigned seed = 1;
    for (std::size_t s = 0; s < shards; ++s) {
      std::vector<loftq::io::TensorSource> tensors;
      if (s == blocks) {
        tensors.push_back(gaussian_tensor("model.embed_tokens.weight", {vocab, hidden}, seed++));
        tensors.push_back(gaussian_tensor("model.norm.weight", {hidden}, seed++));
        tensors.push_back(gaussian_tensor("lm_head.weight", {vocab, hidden}, seed++));
      } else {
        const std::string p = "model.layers." + std::to_string(s) + ".";
        for (const char* m : {"q_proj", "k_proj", "v_proj", "o_proj"}) {
          tensors.push_back(gaussian_tensor(p + "self_attn." + m + ".weight", {hidden, hidden}, seed++));
        }
        tensors.push_back(gaussian_tensor(p + "mlp.gate_proj.weight", {intermediate, hidden}, seed++));
        tensors.push_back(gaussian_tensor(p + "mlp.up_proj.weight", {intermediate, hidden}, seed++));
        tensors.push_back(gaussian_tensor(p + "mlp.down_proj.weight", {hidden, intermediate}, seed++));
        tensors.push_back(gaussian_tensor(p + "input_layernorm.weight", {hidden}, seed++));
        tensors.push_back(gaussian_tensor(p + "post_attention_layernorm.weight", {hidden}, seed++));
      }
      for (const auto& t : tensors) weight_map[t.name] = shard_name(s);
      loftq::io::write_safetensors(dir / shard_name(s), std::move(tensors));
    }
    const loftq::io::Json index = {{"metadata", loftq::io::Json::object()}, {"weight_map", weight_map}};
    loftq::io::write_file_atomically(dir / "model.safetensors.index.json", loftq::io::dump_json(index, 2) + "\n");
    loftq::io::write_file_atomically(dir / "config.json",
                                     "{\"model_type\": \"llama\", \"hidden_size\": " + std::to_string(hidden) +
                                         ", \"intermediate_size\": " + std::to_string(intermediate) +
                                         ", \"num_hidden_layers\": " + std::to_string(blocks) + "}\n");
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "synthetic_checkpoint: error: %s\n", e.what());
    return 2;
  }
}
