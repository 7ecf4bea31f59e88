// The engine of loftq-convert (loftq_convert::convert) and the tool, end to end on a small synthetic Llama-shaped
// checkpoint (2 blocks, hidden 256, BF16, sharded in two files).
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <loftq/loftq.hpp>
#include <map>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "engine.hpp"
#include "io_helpers.hpp"

namespace {

namespace fs = std::filesystem;
using loftq::io::Dtype;
using loftq::io::SafetensorsReader;
using loftq_test::file_bytes;
using loftq_test::ScratchDir;

constexpr std::uint64_t hidden = 256, intermediate = 512, vocab = 320;

/// Every tensor of the synthetic model: name and shape, and the shard it goes in.
struct ModelTensor {
  std::string name;
  std::vector<std::uint64_t> shape;
  int shard;
};

std::vector<ModelTensor> model_tensors() {
  std::vector<ModelTensor> t = {{"model.embed_tokens.weight", {vocab, hidden}, 1}};
  for (int layer = 0; layer < 2; ++layer) {
    const std::string p = "model.layers." + std::to_string(layer) + ".";
    const int shard = layer + 1;
    for (const char* m : {"q_proj", "k_proj", "v_proj", "o_proj"}) t.push_back({p + "self_attn." + m + ".weight", {hidden, hidden}, shard});
    t.push_back({p + "mlp.gate_proj.weight", {intermediate, hidden}, shard});
    t.push_back({p + "mlp.up_proj.weight", {intermediate, hidden}, shard});
    t.push_back({p + "mlp.down_proj.weight", {hidden, intermediate}, shard});
    t.push_back({p + "input_layernorm.weight", {hidden}, shard});
    t.push_back({p + "post_attention_layernorm.weight", {hidden}, shard});
  }
  t.push_back({"model.norm.weight", {hidden}, 2});
  t.push_back({"lm_head.weight", {vocab, hidden}, 2});
  return t;
}

/// Writes the synthetic model into `dir` with the project's own writer: Gaussian weights
/// (std 0.02) plus a rank-4 part, norms at 1, and small config and tokenizer files.
void write_model(const fs::path& dir) {
  std::mt19937 gen(7);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::map<int, std::vector<loftq::io::TensorSource>> shards;
  std::map<std::string, std::string> weight_map;
  for (const ModelTensor& t : model_tensors()) {
    std::uint64_t n = 1;
    for (std::uint64_t d : t.shape) n *= d;
    std::vector<float> v(static_cast<std::size_t>(n));
    if (t.shape.size() == 1) {
      std::fill(v.begin(), v.end(), 1.0f);
    } else {
      const Eigen::MatrixXf low = Eigen::MatrixXf::Random(static_cast<Eigen::Index>(t.shape[0]), 4) *
                                  Eigen::MatrixXf::Random(4, static_cast<Eigen::Index>(t.shape[1])) * 0.02f;
      for (std::size_t i = 0; i < v.size(); ++i) {
        v[i] = normal(gen) + low(static_cast<Eigen::Index>(i / t.shape[1]), static_cast<Eigen::Index>(i % t.shape[1]));
      }
    }
    shards[t.shard].push_back(source_of(loftq::io::float_tensor(t.name, v.data(), t.shape, Dtype::bf16)));
    weight_map[t.name] = "model-0000" + std::to_string(t.shard) + "-of-00002.safetensors";
  }
  for (auto& [shard, tensors] : shards) {
    loftq::io::write_safetensors(dir / ("model-0000" + std::to_string(shard) + "-of-00002.safetensors"), std::move(tensors));
  }
  const loftq::io::Json index = {{"metadata", loftq::io::Json::object()}, {"weight_map", weight_map}};
  loftq::io::write_file_atomically(dir / "model.safetensors.index.json", loftq::io::dump_json(index, 2));
  loftq::io::write_file_atomically(dir / "config.json", R"({"model_type": "llama", "hidden_size": 256})");
  loftq::io::write_file_atomically(dir / "tokenizer.json", R"({"version": "1.0"})");
}

/// The bytes of every file under `dir`, by relative path.
std::map<std::string, std::string> tree_bytes(const fs::path& dir) {
  std::map<std::string, std::string> files;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.is_regular_file()) files[fs::relative(e.path(), dir).string()] = file_bytes(e.path());
  }
  return files;
}

/// Options for a conversion of `input` into `output`, rank 8, one LoftQ step.
loftq_convert::ConvertOptions options_for(const fs::path& input, const fs::path& output) {
  loftq_convert::ConvertOptions o;
  o.input = input;
  o.output = output;
  o.rank = 8;
  o.iters = 2;
  return o;
}

/// The model and a scratch space, shared by the tests of this file.
class Convert : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    scratch_ = new ScratchDir;
    fs::create_directories(model());
    write_model(model());
    input_bytes_ = new std::map<std::string, std::string>(tree_bytes(model()));
  }
  static void TearDownTestSuite() {
    delete input_bytes_;
    delete scratch_;
  }
  void TearDown() override { EXPECT_EQ(tree_bytes(model()), *input_bytes_) << "the input was modified"; }

  static fs::path model() { return scratch_->path() / "model"; }
  static fs::path out(const std::string& name) { return scratch_->path() / name; }

  static ScratchDir* scratch_;
  static std::map<std::string, std::string>* input_bytes_;
};
ScratchDir* Convert::scratch_ = nullptr;
std::map<std::string, std::string>* Convert::input_bytes_ = nullptr;

TEST_F(Convert, WritesBackboneAndAdapterThatReproduceW) {
  const loftq_convert::ConvertSummary summary = loftq_convert::convert(options_for(model(), out("bf16")));
  EXPECT_EQ(summary.targets.size(), 14u);  // 7 linear weights x 2 blocks
  EXPECT_EQ(summary.copied, 7u);           // embeddings, 5 norms, lm_head
  const fs::path o = out("bf16");
  for (const char* f : {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                        "model.safetensors.index.json", "config.json", "tokenizer.json",
                        "loftq_init/adapter_config.json", "loftq_init/adapter_model.safetensors"}) {
    EXPECT_TRUE(fs::exists(o / f)) << f;
  }
  EXPECT_EQ(file_bytes(o / "config.json"), file_bytes(model() / "config.json"));
  const loftq::io::Checkpoint in(model()), result(o);
  const SafetensorsReader adapter(o / "loftq_init" / "adapter_model.safetensors");
  const loftq::io::Json config = loftq::io::parse_json(file_bytes(o / "loftq_init" / "adapter_config.json"));
  EXPECT_EQ(config.at("r").get<std::uint64_t>(), 8u);
  EXPECT_EQ(config.at("lora_alpha").get<double>(), 8.0);
  std::set<std::string> modules;
  for (const auto& m : config.at("target_modules")) modules.insert(m.get<std::string>());
  EXPECT_EQ(modules, (std::set<std::string>{"down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"}));
  ASSERT_EQ(result.tensors().size(), in.tensors().size());
  for (const auto& [file, t] : in.tensors()) {
    const loftq::io::Checkpoint::Entry e = result.at(t->name);
    EXPECT_EQ(e.file->path().filename(), file) << t->name;
    EXPECT_EQ(e.info->dtype, Dtype::bf16);
    EXPECT_EQ(e.info->shape, t->shape);
    const bool target = t->shape.size() == 2 && t->name.find("layers") != std::string::npos;
    if (!target) {
      EXPECT_EQ(e.file->read_raw(*e.info), in.at(t->name).file->read_raw(*t)) << t->name << " not copied bit-exact";
      continue;
    }
    const loftq::RowMatrixXf w = in.at(t->name).file->read_matrix(*t);
    const loftq::RowMatrixXf q = e.file->read_matrix(*e.info);
    const std::string key = "base_model.model." + t->name.substr(0, t->name.size() - 7);
    const loftq::RowMatrixXf lora_a = adapter.read_matrix(adapter.at(key + ".lora_A.weight"));
    const loftq::RowMatrixXf lora_b = adapter.read_matrix(adapter.at(key + ".lora_B.weight"));
    EXPECT_EQ(lora_a.rows(), 8);
    EXPECT_EQ(lora_a.cols(), w.cols());
    EXPECT_EQ(lora_b.rows(), w.rows());
    EXPECT_EQ(lora_b.cols(), 8);
    const double qlora = (w - q).norm();
    const double loftq = (w - q - lora_b * lora_a).norm();
    EXPECT_LT(loftq, 0.97 * qlora) << t->name;
  }
}

TEST_F(Convert, SixteenBitBackboneIsWhatBitsandbytesLoadsFromIt) {
  // A bf16 / fp16 backbone is made for load_in_4bit: bitsandbytes quantizes the stored values
  // (NF4, blocks of 64, from their 16-bit values) and dequantizes them to the same values.
  for (const auto format : {loftq_convert::BackboneFormat::bf16, loftq_convert::BackboneFormat::fp16}) {
    loftq_convert::ConvertOptions o = options_for(model(), out("q16"));
    o.format = format;
    o.overwrite = true;
    loftq_convert::convert(o);
    const loftq::FloatType type = loftq_convert::float_type_of(format);
    const loftq::io::Checkpoint q16(out("q16"));
    for (const char* name : {"model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight"}) {
      const loftq::RowMatrixXf stored = q16.at(name).file->read_matrix(*q16.at(name).info);
      const loftq::QuantizedMatrix loaded = loftq::quantize(stored, loftq::Codebook::nf4, 64, loftq::LoadPath{type, false, type});
      EXPECT_TRUE(loftq::RowMatrixXf(loaded.dequantize()) == stored) << name;
    }
  }
  loftq_convert::ConvertOptions bnb = options_for(model(), out("bnb"));
  bnb.format = loftq_convert::BackboneFormat::bnb_nf4;
  loftq_convert::convert(bnb);
  const loftq::io::Json config = loftq::io::parse_json(file_bytes(out("bnb") / "config.json"));
  EXPECT_EQ(config.at("quantization_config").at("bnb_4bit_quant_type").get<std::string>(), "nf4");
}

TEST_F(Convert, RefusesSettingsItsLoaderCannotHonor) {
  using loftq_convert::BackboneFormat;
  const auto message = [&](const std::function<void(loftq_convert::ConvertOptions&)>& change) -> std::string {
    loftq_convert::ConvertOptions o = options_for(model(), out("refused"));
    change(o);
    try {
      loftq_convert::convert(o);
    } catch (const loftq::io::ArgumentError& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_NE(message([](auto& o) { o.bits = 8; o.double_quant = true; }).find("double_quant"), std::string::npos);
  EXPECT_NE(message([](auto& o) { o.codebook = loftq::Codebook::nf2; o.bits = 2; o.double_quant = true; }).find("double_quant"),
            std::string::npos);
  EXPECT_NE(message([](auto& o) { o.format = BackboneFormat::bnb_int8; }).find("bnb-int8"), std::string::npos);
  EXPECT_NE(message([](auto& o) { o.block_size = 128; }).find("blocks of 64"), std::string::npos);
  EXPECT_EQ(message([](auto& o) { o.block_size = 128; o.format = BackboneFormat::bnb_nf4; o.output = o.output.string() + "-nf4"; }), "");
  EXPECT_FALSE(fs::exists(out("refused")));
}

TEST_F(Convert, MixedPrecisionAndBitsBudgetChooseBitsPerTarget) {
  loftq_convert::ConvertOptions mixed = options_for(model(), out("mixed"));
  mixed.mixed = loftq_convert::MixedPrecision{4, 1, 2};
  mixed.report = out("mixed.json");
  loftq_convert::convert(mixed);
  const loftq::io::Json report = loftq::io::parse_json(file_bytes(out("mixed.json")));
  ASSERT_EQ(report.at("targets").size(), 14u);
  for (const loftq::io::Json& t : report.at("targets")) {
    const bool first_block = t.at("name").get<std::string>().find("layers.0.") != std::string::npos;
    EXPECT_EQ(t.at("bits").get<std::uint64_t>(), first_block ? 4u : 2u);
    EXPECT_EQ(t.at("loftq_errors").size(), 2u);
    EXPECT_EQ(t.at("krylov_depths").size(), 2u);
    EXPECT_GT(t.at("qlora_error").get<double>(), 0.0);
  }

  loftq_convert::ConvertOptions budget = options_for(model(), out("budget"));
  budget.bits_budget = 3.0;
  budget.report = out("budget.json");
  const loftq_convert::ConvertSummary summary = loftq_convert::convert(budget);
  EXPECT_NE(summary.budget_note.find("at 4 bits"), std::string::npos);
  double bits = 0, elements = 0;
  int four = 0;
  for (const loftq_convert::TargetReport& t : summary.targets) {
    const double n = static_cast<double>(t.shape[0] * t.shape[1]);
    bits += t.bits * n;
    elements += n;
    four += t.bits == 4;
  }
  EXPECT_LE(bits / elements, 3.0 + 1e-12);
  EXPECT_GE(bits / elements, 2.8);  // the greedy fill leaves less than one target's worth unused
  EXPECT_GT(four, 0);
  EXPECT_LT(four, 14);
}

TEST_F(Convert, ShardsMergeToTheSameBytesAsOneRun) {
  loftq_convert::convert(options_for(model(), out("whole")));
  for (int i = 0; i < 3; ++i) {
    loftq_convert::ConvertOptions shard = options_for(model(), out("shard" + std::to_string(i)));
    shard.shard_index = i;
    shard.shard_count = 3;
    const loftq_convert::ConvertSummary s = loftq_convert::convert(shard);
    EXPECT_GE(s.targets.size(), 4u);
  }
  loftq_convert::ConvertOptions merge = options_for(model(), out("merged"));
  merge.merge = {out("shard0"), out("shard1")};
  EXPECT_THROW(loftq_convert::convert(merge), loftq::io::ArgumentError);  // shard 2 missing
  EXPECT_FALSE(fs::exists(out("merged")));
  merge.merge.push_back(out("shard2"));
  loftq_convert::convert(merge);
  std::map<std::string, std::string> whole = tree_bytes(out("whole")), merged = tree_bytes(out("merged"));
  whole.erase("loftq_init/adapter_config.json");  // names the same input either way; compared below
  merged.erase("loftq_init/adapter_config.json");
  EXPECT_EQ(whole, merged);
  merge.rank = 4;
  merge.output = out("merged-other");
  EXPECT_THROW(loftq_convert::convert(merge), loftq::io::ArgumentError);  // other settings
}

TEST_F(Convert, OutputBytesDoNotDependOnThreadsOrInstructionSet) {
  loftq_convert::ConvertOptions o = options_for(model(), out("reference"));
  o.threads = 1;
  o.format = loftq_convert::BackboneFormat::bnb_nf4;
  o.double_quant = true;
  loftq_convert::convert(o);
  const std::map<std::string, std::string> reference = tree_bytes(out("reference"));
  for (const loftq::Isa isa : {loftq::Isa::scalar, loftq::Isa::avx2, loftq::Isa::avx512}) {
    if (!loftq::isa_supported(isa)) continue;
    loftq::force_isa(isa);
    for (const int threads : {1, 2}) {
      o.output = out("again");
      o.threads = threads;
      o.overwrite = true;
      loftq_convert::convert(o);
      EXPECT_EQ(tree_bytes(out("again")), reference) << loftq::name_of(isa) << ", " << threads << " threads";
    }
  }
  loftq::reset_isa();
}

TEST_F(Convert, FailuresLeaveNoOutput) {
  loftq_convert::ConvertOptions o = options_for(model(), out("fail"));
  o.target_modules = "nothing_matches";
  EXPECT_THROW(loftq_convert::convert(o), loftq::io::ArgumentError);
  o.target_modules = "all-linear";
  o.format = loftq_convert::BackboneFormat::bnb_nf4;
  o.bits = 2;
  EXPECT_THROW(loftq_convert::convert(o), loftq::io::ArgumentError);
  o = options_for(model(), model() / "inside");
  EXPECT_THROW(loftq_convert::convert(o), loftq::io::ArgumentError);
  for (const auto& e : fs::directory_iterator(scratch_->path())) {
    EXPECT_EQ(e.path().filename().string().find("fail"), std::string::npos) << e.path();
  }
  fs::create_directories(out("exists"));
  o = options_for(model(), out("exists"));
  EXPECT_THROW(loftq_convert::convert(o), loftq::io::ArgumentError);
  EXPECT_TRUE(fs::is_empty(out("exists")));
}

TEST_F(Convert, SingleFileInputGivesSingleFileOutput) {
  const ScratchDir dir;
  const loftq::io::Checkpoint sharded(model());
  std::vector<loftq::io::TensorSource> all;
  for (const auto& [file, t] : sharded.tensors()) {
    all.push_back(loftq::io::copied_tensor(*sharded.at(t->name).file, *t));
  }
  fs::create_directories(dir / "in");
  loftq::io::write_safetensors(dir / "in" / "model.safetensors", std::move(all));
  loftq_convert::ConvertOptions o = options_for(dir / "in", dir / "out");
  o.target_modules = ".*mlp.*";
  const loftq_convert::ConvertSummary summary = loftq_convert::convert(o);
  EXPECT_EQ(summary.targets.size(), 6u);
  EXPECT_TRUE(fs::exists(dir / "out" / "model.safetensors"));
  EXPECT_FALSE(fs::exists(dir / "out" / "model.safetensors.index.json"));
  const loftq::io::Checkpoint out_checkpoint(dir / "out");
  EXPECT_EQ(out_checkpoint.tensors().size(), sharded.tensors().size());
}

TEST_F(Convert, MalformedInputFailsWithoutOutput) {
  const ScratchDir dir;
  fs::copy(model(), dir / "model");
  const fs::path shard = dir / "model" / "model-00002-of-00002.safetensors";
  fs::resize_file(shard, fs::file_size(shard) - 1);
  EXPECT_THROW(loftq_convert::convert(options_for(dir / "model", dir / "out")), loftq::io::FormatError);
  EXPECT_FALSE(fs::exists(dir / "out"));
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(dir.path())) left.push_back(e.path().filename().string());
  EXPECT_EQ(left, std::vector<std::string>{"model"});
}

/// Writes a one-block model whose q_proj is `q_proj` (float32, 8 x 8) into `dir`.
void write_tiny_model(const fs::path& dir, const loftq::io::TensorData& q_proj) {
  fs::create_directories(dir);
  std::vector<loftq::io::TensorSource> tensors;
  tensors.push_back(source_of(q_proj));
  const std::vector<float> norm(8, 1.0f);
  tensors.push_back(source_of(loftq::io::float_tensor("model.layers.0.input_layernorm.weight", norm.data(), {8}, Dtype::f32)));
  loftq::io::write_safetensors(dir / "model.safetensors", std::move(tensors));
}

TEST_F(Convert, HostileInputsFailCleanly) {
  const ScratchDir dir;
  const std::string q = "model.layers.0.self_attn.q_proj.weight";
  std::vector<float> values(64, 0.01f);
  values[9] = std::nanf("");
  write_tiny_model(dir / "nan", loftq::io::float_tensor(q, values.data(), {8, 8}, Dtype::f32));
  write_tiny_model(dir / "int8", loftq::io::TensorData{q, Dtype::i8, {8, 8}, std::vector<std::uint8_t>(64, 1)});
  fs::create_directories(dir / "loop");
  fs::create_symlink("model.safetensors", dir / "loop" / "model.safetensors");
  fs::copy(model(), dir / "header");
  {
    std::fstream f(dir / "header" / "model-00001-of-00002.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    f.write("\xff\xff\xff\x00\x00\x00\x00\x00", 8);  // a header length past the end
  }
  // Hand-made headers: a huge declared shape, and overlapping offsets.
  const auto raw_model = [&](const std::string& name, const std::string& header, std::size_t buffer) {
    fs::create_directories(dir / name);
    std::string bytes(8, '\0');
    for (std::size_t i = 0; i < 8; ++i) bytes[i] = static_cast<char>(header.size() >> (8 * i));
    loftq_test::write_bytes(dir / name / "model.safetensors", bytes + header + std::string(buffer, '\0'));
  };
  raw_model("huge", R"({")" + q + R"(": {"dtype": "BF16", "shape": [4294967296, 4294967296], "data_offsets": [0, 8]}})", 8);
  raw_model("overlap", R"({")" + q + R"(": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 8]}, "x": {"dtype": "BF16", "shape": [2], "data_offsets": [4, 8]}})", 8);
  for (const char* input : {"nan", "int8", "loop", "header", "huge", "overlap"}) {
    EXPECT_ANY_THROW(loftq_convert::convert(options_for(dir / input, dir / "out"))) << input;
    EXPECT_FALSE(fs::exists(dir / "out")) << input;
  }
  EXPECT_THROW(loftq_convert::convert(options_for(dir / "nan", dir / "out")), loftq::io::ArgumentError);
  EXPECT_THROW(loftq_convert::convert(options_for(dir / "int8", dir / "out")), loftq::io::FormatError);
  EXPECT_THROW(loftq_convert::convert(options_for(dir / "header", dir / "out")), loftq::io::FormatError);
  EXPECT_THROW(loftq_convert::convert(options_for(dir / "huge", dir / "out")), loftq::io::FormatError);
  EXPECT_THROW(loftq_convert::convert(options_for(dir / "overlap", dir / "out")), loftq::io::FormatError);
  // An output that cannot be created: its parent is a regular file.
  loftq_test::write_bytes(dir / "file", "x");
  EXPECT_ANY_THROW(loftq_convert::convert(options_for(model(), dir / "file" / "out")));
  std::size_t left = 0;
  for (const auto& e : fs::directory_iterator(dir.path())) left += e.path().filename() == "out" || e.path().filename().string().find("partial") != std::string::npos;
  EXPECT_EQ(left, 0u);
  EXPECT_EQ(loftq_test::file_bytes(dir / "file"), "x");
}

/// The message of the error a merge gives of two shards of the q_proj and k_proj targets of the
/// model, shard 0 made with `first`'s changes to options_for(), shard 1 with `second`'s, merged
/// with `merged`'s; "" when the merge succeeds.
template <class First, class Second, class Merged>
std::string merge_error(const fs::path& model, const fs::path& dir, First first, Second second, Merged merged) {
  const auto options = [&](const fs::path& output) {
    loftq_convert::ConvertOptions o = options_for(model, output);
    o.target_modules = R"(.*layers\.0\.self_attn\.(q|k)_proj)";
    o.overwrite = true;
    return o;
  };
  loftq_convert::ConvertOptions shard0 = options(dir / "shard0"), shard1 = options(dir / "shard1");
  shard0.shard_count = shard1.shard_count = 2;
  shard1.shard_index = 1;
  first(shard0);
  second(shard1);
  loftq_convert::convert(shard0);
  loftq_convert::convert(shard1);
  loftq_convert::ConvertOptions merge = options(dir / "merged");
  merge.merge = {dir / "shard0", dir / "shard1"};
  merged(merge);
  fs::remove_all(dir / "merged");
  const std::string message = loftq_test::argument_error_message([&] { loftq_convert::convert(merge); });
  EXPECT_EQ(fs::exists(dir / "merged"), message.empty()) << message;
  return message;
}

TEST_F(Convert, MergeRefusesShardsMadeWithOtherSettingsNamingTheSettingAndBothValues) {
  const ScratchDir dir;
  const auto same = [](loftq_convert::ConvertOptions&) {};
  const auto contains = [](const std::string& message, const std::vector<std::string>& parts) {
    for (const std::string& part : parts) {
      if (message.find(part) == std::string::npos) return ::testing::AssertionFailure() << "no " << part << " in: " << message;
    }
    return ::testing::AssertionSuccess();
  };
  EXPECT_EQ(merge_error(model(), dir.path(), same, same, same), "");
  // Shard 1 differs from shard 0.
  EXPECT_TRUE(contains(merge_error(model(), dir.path(), same, [](auto& o) { o.bits = 2; }, same),
                       {"shard 1/2", "shard 0/2", "bits = 2", "bits = 4"}));
  EXPECT_TRUE(contains(merge_error(model(), dir.path(), same, [](auto& o) { o.codebook = loftq::Codebook::fp4; }, same),
                       {"shard 1/2", "codebook = \"fp4\"", "shard 0/2", "codebook = \"nf4\""}));
  EXPECT_TRUE(contains(merge_error(model(), dir.path(), same, [](auto& o) { o.mixed = loftq_convert::MixedPrecision{4, 1, 2}; }, same),
                       {"mixed = {\"blocks\":1,\"high_bits\":4,\"low_bits\":2}", "mixed = null"}));
  EXPECT_TRUE(contains(merge_error(model(), dir.path(), same, [](auto& o) { o.rank = 4; }, same), {"rank = 4", "rank = 8"}));
  EXPECT_TRUE(contains(merge_error(model(), dir.path(), same, [](auto& o) { o.format = loftq_convert::BackboneFormat::fp16; }, same),
                       {"format = \"fp16\"", "format = \"bf16\""}));
  const auto bnb = [](auto& o) { o.format = loftq_convert::BackboneFormat::bnb_nf4; };
  EXPECT_TRUE(contains(merge_error(model(), dir.path(), bnb, [&](auto& o) { bnb(o); o.double_quant = true; }, bnb),
                       {"double_quant = true", "double_quant = false"}));
  EXPECT_TRUE(contains(merge_error(model(), dir.path(), same, [](auto& o) { o.lora_alpha = 16.0; }, same),
                       {"lora_alpha = 16", "lora_alpha = 8"}));
  EXPECT_TRUE(contains(merge_error(model(), dir.path(), same, [](auto& o) { o.solver.seed = 1; }, same), {"seed = 1", "seed = 0"}));
  // The merge differs from the shards (which cannot run with a bit budget).
  EXPECT_TRUE(contains(merge_error(model(), dir.path(), same, same, [](auto& o) { o.bits_budget = 3.0; }),
                       {"shard 0/2", "bits_budget = null", "this merge has bits_budget = 3"}));
  EXPECT_TRUE(contains(merge_error(model(), dir.path(), same, same, [](auto& o) { o.iters = 1; }),
                       {"iters = 2", "this merge has iters = 1"}));
  // Shards of one model merged over another whose weights differ.
  fs::copy(model(), dir / "other");
  {
    const fs::path file = dir / "other" / "model-00001-of-00002.safetensors";
    const SafetensorsReader reader(file);
    const std::uint64_t data = fs::file_size(file) - reader.tensors().back().end;
    std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(data + reader.tensors().front().begin));
    f.write("\x12\x34", 2);
  }
  EXPECT_TRUE(contains(merge_error(model(), dir.path(), same, same, [&](auto& o) { o.input = dir / "other"; }),
                       {"input = ", "this merge has input = "}));
}

TEST_F(Convert, ShardManifestRecordsEverySettingThatChangesTheOutput) {
  using loftq_convert::ConvertOptions;
  const ConvertOptions base = options_for(model(), out("unused"));
  const loftq::io::Json reference = loftq::io::parse_json(loftq::io::dump_json(loftq_convert::settings_json(base, "input")));
  EXPECT_EQ(reference.at("codebook"), "nf4");
  EXPECT_EQ(reference.at("format"), "bf16");
  EXPECT_EQ(reference.at("svd"), "block_krylov");
  EXPECT_EQ(reference.at("loftq_version"), std::to_string(LOFTQ_VERSION_MAJOR) + "." + std::to_string(LOFTQ_VERSION_MINOR) +
                                               "." + std::to_string(LOFTQ_VERSION_PATCH));
  // One change per recorded setting: each shows in the manifest under its own name only.
  const std::map<std::string, std::function<void(ConvertOptions&)>> changes = {
      {"bits", [](ConvertOptions& o) { o.bits = 8; }},
      {"codebook", [](ConvertOptions& o) { o.codebook = loftq::Codebook::fp4; }},
      {"block_size", [](ConvertOptions& o) { o.block_size = 32; }},
      {"mixed", [](ConvertOptions& o) { o.mixed = loftq_convert::MixedPrecision{}; }},
      {"bits_budget", [](ConvertOptions& o) { o.bits_budget = 2.5; }},
      {"rank", [](ConvertOptions& o) { o.rank = 9; }},
      {"iters", [](ConvertOptions& o) { o.iters = 3; }},
      {"lora_alpha", [](ConvertOptions& o) { o.lora_alpha = 4.0; }},
      {"use_rslora", [](ConvertOptions& o) { o.use_rslora = true; }},
      {"format", [](ConvertOptions& o) { o.format = loftq_convert::BackboneFormat::fp32; }},
      {"double_quant", [](ConvertOptions& o) { o.double_quant = true; }},
      {"target_modules", [](ConvertOptions& o) { o.target_modules = ".*"; }},
      {"svd", [](ConvertOptions& o) { o.solver.svd = loftq::SvdMethod::exact; }},
      {"oversampling", [](ConvertOptions& o) { o.solver.oversampling = 7; }},
      {"krylov_depth", [](ConvertOptions& o) { o.solver.krylov_depth = 3; }},
      {"warm_krylov_depth", [](ConvertOptions& o) { o.solver.warm_krylov_depth = 2; }},
      {"krylov_tolerance", [](ConvertOptions& o) { o.solver.krylov_tolerance = 1e-2; }},
      {"power_iters", [](ConvertOptions& o) { o.solver.power_iters = 2; }},
      {"warm_start", [](ConvertOptions& o) { o.solver.warm_start = false; }},
      {"seed", [](ConvertOptions& o) { o.solver.seed = 5; }},
      {"keep_best", [](ConvertOptions& o) { o.solver.keep_best = false; }},
  };
  std::set<std::string> recorded;
  for (const auto& [key, value] : reference.items()) recorded.insert(key);
  std::set<std::string> changed = {"loftq_version", "input"};
  for (const auto& [name, change] : changes) {
    ConvertOptions o = base;
    change(o);
    const loftq::io::Json settings = loftq::io::parse_json(loftq::io::dump_json(loftq_convert::settings_json(o, "input")));
    std::set<std::string> differ;
    for (const auto& [key, value] : settings.items()) {
      if (!reference.contains(key) || reference.at(key) != value) differ.insert(key);
    }
    // Other bits choose another codebook; alpha left at 0 follows the rank.
    std::set<std::string> expected = {name};
    if (name == "bits") expected.insert("codebook");
    if (name == "rank") expected.insert("lora_alpha");
    EXPECT_EQ(differ, expected) << name;
    changed.insert(name);
  }
  EXPECT_EQ(recorded, changed) << "a recorded setting has no change in this test";
  // What does not change an output byte is not recorded.
  ConvertOptions o = base;
  o.output = out("elsewhere");
  o.threads = 1;
  o.report = out("report.json");
  o.overwrite = true;
  o.shard_index = 1;
  o.shard_count = 2;
  EXPECT_EQ(loftq::io::dump_json(loftq_convert::settings_json(o, "input")), loftq::io::dump_json(loftq_convert::settings_json(base, "input")));
}

TEST_F(Convert, RankAboveATargetsSmallerDimensionPadsItsAdapterWithZeros) {
  const ScratchDir dir;
  // One block: q_proj 64 x 64, and a 12 x 64 k_proj (as in grouped-query attention) below the rank.
  const std::string q = "model.layers.0.self_attn.q_proj.weight", k = "model.layers.0.self_attn.k_proj.weight";
  std::mt19937 gen(3);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<float> q_values(64 * 64), k_values(12 * 64);
  for (float& v : q_values) v = normal(gen);
  for (float& v : k_values) v = normal(gen);
  fs::create_directories(dir / "in");
  std::vector<loftq::io::TensorSource> tensors;
  tensors.push_back(source_of(loftq::io::float_tensor(q, q_values.data(), {64, 64}, Dtype::f32)));
  tensors.push_back(source_of(loftq::io::float_tensor(k, k_values.data(), {12, 64}, Dtype::f32)));
  loftq::io::write_safetensors(dir / "in" / "model.safetensors", std::move(tensors));
  loftq_convert::ConvertOptions o = options_for(dir / "in", dir / "out");
  o.rank = 16;
  o.lora_alpha = 32.0;  // scaling 2
  o.format = loftq_convert::BackboneFormat::fp32;
  o.report = dir / "report.json";
  const loftq_convert::ConvertSummary summary = loftq_convert::convert(o);
  ASSERT_EQ(summary.targets.size(), 2u);

  const loftq::io::Checkpoint input(dir / "in"), result(dir / "out");
  const SafetensorsReader adapter(dir / "out" / "loftq_init" / "adapter_model.safetensors");
  const loftq::io::Json report = loftq::io::parse_json(file_bytes(dir / "report.json"));
  std::map<std::string, std::uint64_t> effective;
  for (const loftq::io::Json& t : report.at("targets")) effective[t.at("name").get<std::string>()] = t.at("rank").get<std::uint64_t>();
  EXPECT_EQ(effective, (std::map<std::string, std::uint64_t>{{k, 12}, {q, 16}}));
  for (const auto& [name, rows, effective_rank] : {std::tuple{k, 12, 12}, std::tuple{q, 64, 16}}) {
    const std::string key = "base_model.model." + name.substr(0, name.size() - 7);
    const loftq::RowMatrixXf lora_a = adapter.read_matrix(adapter.at(key + ".lora_A.weight"));
    const loftq::RowMatrixXf lora_b = adapter.read_matrix(adapter.at(key + ".lora_B.weight"));
    ASSERT_EQ(lora_a.rows(), 16) << name;  // the configured rank
    ASSERT_EQ(lora_a.cols(), 64) << name;
    ASSERT_EQ(lora_b.rows(), rows) << name;
    ASSERT_EQ(lora_b.cols(), 16) << name;
    EXPECT_TRUE(lora_a.bottomRows(16 - effective_rank).isZero(0.0f)) << name;
    EXPECT_TRUE(lora_b.rightCols(16 - effective_rank).isZero(0.0f)) << name;
    EXPECT_GT(lora_a.topRows(effective_rank).rowwise().norm().minCoeff(), 0.0f) << name;
    // The unpadded LoftQ result, with the solver options the engine uses.
    const loftq::RowMatrixXf w = input.at(name).file->read_matrix(*input.at(name).info);
    loftq::Options lo;
    lo.rank = effective_rank;
    lo.iters = o.iters;
    lo.codebook = loftq::Codebook::nf4;
    lo.block_size = o.block_size;
    const loftq::Result direct = loftq::loftq(w, lo);
    const Eigen::MatrixXf direct_q = direct.Q.dequantize();
    const loftq::RowMatrixXf backbone = result.at(name).file->read_matrix(*result.at(name).info);
    EXPECT_EQ(backbone, loftq::RowMatrixXf(direct_q)) << name;
    const Eigen::MatrixXf written = backbone + 2.0f * lora_b * lora_a;
    const Eigen::MatrixXf expected = direct_q + direct.A * direct.B.transpose();
    EXPECT_LT((written - expected).norm(), 1e-5 * expected.norm()) << name;
  }
}

/// Writes model.safetensors and config.json into `dir`: every tensor of `shapes` in `dtype`,
/// 1-D ones at 1 and the others (as matrices of shape[0] rows) Gaussian (std 0.02) plus a rank-4
/// part, from a fixed seed.
void write_single_file_model(const fs::path& dir, const std::vector<std::pair<std::string, std::vector<std::uint64_t>>>& shapes,
                             Dtype dtype, const std::string& config) {
  std::mt19937 gen(11);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<loftq::io::TensorSource> tensors;
  for (const auto& [name, shape] : shapes) {
    std::uint64_t n = 1;
    for (const std::uint64_t d : shape) n *= d;
    std::vector<float> v(static_cast<std::size_t>(n), 1.0f);
    if (shape.size() > 1) {
      const auto rows = static_cast<Eigen::Index>(shape[0]), cols = static_cast<Eigen::Index>(n / shape[0]);
      Eigen::MatrixXf u(rows, 4), w(4, cols);
      for (float& x : u.reshaped()) x = normal(gen);
      for (float& x : w.reshaped()) x = normal(gen);
      const Eigen::MatrixXf low = u * w;
      for (std::size_t i = 0; i < v.size(); ++i) {
        v[i] = normal(gen) + low(static_cast<Eigen::Index>(i) / cols, static_cast<Eigen::Index>(i) % cols);
      }
    }
    tensors.push_back(source_of(loftq::io::float_tensor(name, v.data(), shape, dtype)));
  }
  fs::create_directories(dir);
  loftq::io::write_safetensors(dir / "model.safetensors", std::move(tensors));
  loftq::io::write_file_atomically(dir / "config.json", config);
}

/// The Conv1D weights of write_gpt2_model(), stored (in, out).
const std::vector<std::string> gpt2_conv1d = {"h.0.attn.c_attn.weight", "h.0.attn.c_proj.weight", "h.0.mlp.c_fc.weight",
                                              "h.0.mlp.c_proj.weight"};

/// Writes a one-block GPT-2-shaped model into `dir`: float32 as GPT-2's checkpoints are, with
/// their tensor names (no prefix, lm_head tied to wte so not stored), the Conv1D weights stored
/// (in, out): attn.c_attn (64, 192), attn.c_proj (64, 64), mlp.c_fc (64, 256), mlp.c_proj
/// (256, 64); config.json says model_type gpt2.
void write_gpt2_model(const fs::path& dir) {
  constexpr std::uint64_t n = 64;
  write_single_file_model(dir,
                          {{"wte.weight", {320, n}},
                           {"wpe.weight", {128, n}},
                           {"h.0.ln_1.weight", {n}},
                           {"h.0.ln_1.bias", {n}},
                           {"h.0.attn.c_attn.weight", {n, 3 * n}},
                           {"h.0.attn.c_attn.bias", {3 * n}},
                           {"h.0.attn.c_proj.weight", {n, n}},
                           {"h.0.attn.c_proj.bias", {n}},
                           {"h.0.ln_2.weight", {n}},
                           {"h.0.ln_2.bias", {n}},
                           {"h.0.mlp.c_fc.weight", {n, 4 * n}},
                           {"h.0.mlp.c_fc.bias", {4 * n}},
                           {"h.0.mlp.c_proj.weight", {4 * n, n}},
                           {"h.0.mlp.c_proj.bias", {n}},
                           {"ln_f.weight", {n}},
                           {"ln_f.bias", {n}}},
                          Dtype::f32, R"({"model_type": "gpt2", "n_embd": 64, "n_layer": 1})");
}

/// ||W - Q - s lora_B lora_A||_F / ||W||_F, in double.
double reconstruction_error(const loftq::RowMatrixXf& w, const loftq::RowMatrixXf& q, double s, const loftq::RowMatrixXf& lora_a,
                            const loftq::RowMatrixXf& lora_b) {
  const Eigen::MatrixXd wd = w.cast<double>();
  return (wd - q.cast<double>() - s * (lora_b.cast<double>() * lora_a.cast<double>())).norm() / wd.norm();
}

/// The reports of a report file, by target name.
std::map<std::string, loftq::io::Json> reports_by_name(const fs::path& report) {
  const loftq::io::Json document = loftq::io::parse_json(file_bytes(report));
  std::map<std::string, loftq::io::Json> reports;
  for (const loftq::io::Json& t : document.at("targets")) reports[t.at("name").get<std::string>()] = t;
  return reports;
}

/// The error a target's report gives for the iterate it returned.
double reported_error(const loftq::io::Json& report) {
  return report.at("loftq_errors").at(report.at("iteration").get<std::size_t>() - 1).get<double>();
}

/// Every tensor of `checkpoint` that belongs to weight `name` (itself and "name.*"), read whole.
std::vector<loftq::io::TensorData> tensors_of(const loftq::io::Checkpoint& checkpoint, const std::string& name) {
  std::vector<loftq::io::TensorData> parts;
  for (const auto& [file, t] : checkpoint.tensors()) {
    if (t->name == name || t->name.rfind(name + ".", 0) == 0) {
      parts.push_back({t->name, t->dtype, t->shape, checkpoint.at(t->name).file->read_raw(*t)});
    }
  }
  return parts;
}

/// One load-exact case: a format, bits and double quantization.
struct LoaderCase {
  std::string label;
  loftq_convert::BackboneFormat format;
  int bits;
  bool double_quant;
};

/// Every format, 4-bit and LLM.int8, with and without double quantization.
const std::vector<LoaderCase> loader_cases = {
    {"bf16", loftq_convert::BackboneFormat::bf16, 4, false},      {"bf16-dq", loftq_convert::BackboneFormat::bf16, 4, true},
    {"fp16-dq", loftq_convert::BackboneFormat::fp16, 4, true},    {"fp32", loftq_convert::BackboneFormat::fp32, 4, false},
    {"nf4", loftq_convert::BackboneFormat::bnb_nf4, 4, false},    {"nf4-dq", loftq_convert::BackboneFormat::bnb_nf4, 4, true},
    {"bf16-int8", loftq_convert::BackboneFormat::bf16, 8, false}, {"fp16-int8", loftq_convert::BackboneFormat::fp16, 8, false},
    {"fp32-int8", loftq_convert::BackboneFormat::fp32, 8, false}, {"int8", loftq_convert::BackboneFormat::bnb_int8, 8, false}};

/// The tensor `name` of `c` as TensorData.
loftq::io::TensorData tensor_data(const loftq::io::Checkpoint& c, const std::string& name) {
  const loftq::io::Checkpoint::Entry e = c.at(name);
  return {name, e.info->dtype, e.info->shape, e.file->read_raw(*e.info)};
}

/// What the loader of the README's "Fine-tuning the result" makes of target `name` in `out`
/// (out x in; a Conv1D weight transposed as transformers does): bitsandbytes quantizing a 16- or
/// 32-bit backbone at load time, or dequantizing the stored tensors, as the library models it (the
/// golden files check that model against bitsandbytes' own code).
Eigen::MatrixXf loaded_backbone(const fs::path& out, const std::string& name, const LoaderCase& c, bool conv1d) {
  using loftq_convert::BackboneFormat;
  const loftq::io::Checkpoint result(out);
  const std::string module = name.substr(0, name.size() - 7);
  if (c.format == BackboneFormat::bnb_nf4) return loftq::io::read_bnb(name, tensors_of(result, name)).dequantize();
  if (c.format == BackboneFormat::bnb_int8) {
    return loftq::io::read_bnb_int8(name, {tensor_data(result, name), tensor_data(result, module + ".SCB"),
                                           tensor_data(result, module + ".weight_format")})
        .dequantize();
  }
  loftq::RowMatrixXf stored = result.at(name).file->read_matrix(*result.at(name).info);
  if (conv1d) stored = loftq::RowMatrixXf(stored.transpose());
  const loftq::FloatType type = loftq_convert::float_type_of(c.format);
  if (c.bits == 8) {
    return loftq::quantize(stored, loftq::Codebook::llm_int8, static_cast<int>(stored.cols()),
                           loftq::LoadPath{type, false, loftq::FloatType::float32})
        .dequantize();
  }
  return loftq::quantize(stored, loftq::Codebook::nf4, 64, loftq::LoadPath{type, c.double_quant, type}).dequantize();
}

/// Converts `model` in every loader case with `target_modules` and checks each target's report:
/// its last LoftQ error is that of the loaded backbone plus scaling * lora_B lora_A (alpha = r,
/// scaling 1), its QLoRA error that of the same loader on the original weights, and LoftQ's is
/// below QLoRA's.
void expect_errors_of_what_the_loader_makes(const fs::path& model, const fs::path& scratch, const std::string& target_modules,
                                            std::size_t targets, bool conv1d) {
  const loftq::io::Checkpoint input(model);
  for (const LoaderCase& c : loader_cases) {
    SCOPED_TRACE(c.label);
    loftq_convert::ConvertOptions o = options_for(model, scratch / ("loader-" + c.label));
    o.format = c.format;
    o.bits = c.bits;
    o.double_quant = c.double_quant;
    o.target_modules = target_modules;
    o.report = scratch / ("loader-" + c.label + ".json");
    loftq_convert::convert(o);
    const std::map<std::string, loftq::io::Json> reports = reports_by_name(o.report);
    const SafetensorsReader adapter(o.output / "loftq_init" / "adapter_model.safetensors");
    ASSERT_EQ(reports.size(), targets);
    for (const auto& [name, report] : reports) {
      SCOPED_TRACE(name);
      EXPECT_EQ(report.at("codebook").get<std::string>(), c.bits == 8 ? "llm_int8" : "nf4");
      const loftq::io::Checkpoint::Entry in = input.at(name);
      loftq::RowMatrixXf w = in.file->read_matrix(*in.info);
      if (conv1d) w = loftq::RowMatrixXf(w.transpose());
      const std::string key = "base_model.model." + name.substr(0, name.size() - 7);
      const double loftq_error = reconstruction_error(w, loaded_backbone(o.output, name, c, conv1d), 1.0,
                                                      adapter.read_matrix(adapter.at(key + ".lora_A.weight")),
                                                      adapter.read_matrix(adapter.at(key + ".lora_B.weight")));
      EXPECT_NEAR(loftq_error, reported_error(report), 1e-5 * loftq_error);
      // QLoRA: the same loader on the original weights.
      const loftq::Codebook codebook = c.bits == 8 ? loftq::Codebook::llm_int8 : loftq::Codebook::nf4;
      const loftq::LoadPath path = loftq_convert::load_path_of(o, codebook, in.info->dtype, 2);
      const Eigen::MatrixXf qlora = loftq::quantize(w, codebook, c.bits == 8 ? static_cast<int>(w.cols()) : 64, path).dequantize();
      const double qlora_error = (w.cast<double>() - qlora.cast<double>()).norm() / w.cast<double>().norm();
      EXPECT_NEAR(report.at("qlora_error").get<double>(), qlora_error, 1e-6 * qlora_error);
      EXPECT_LT(loftq_error, qlora_error);
    }
  }
}

TEST_F(Convert, EveryFormatReportsTheErrorsOfWhatItsLoaderMakesOnALlamaShapedModel) {
  const ScratchDir dir;
  expect_errors_of_what_the_loader_makes(model(), dir.path(), R"(model\.layers\.0\.(self_attn\.q_proj|mlp\.down_proj))", 2, false);
  // bnb-int8: the tensors of a Linear8bitLt and the config that makes transformers load them.
  const loftq::io::Checkpoint int8(dir / "loader-int8");
  const std::string module = "model.layers.0.self_attn.q_proj";
  EXPECT_EQ(int8.at(module + ".weight").info->dtype, Dtype::i8);
  EXPECT_EQ(int8.at(module + ".weight").info->shape, (std::vector<std::uint64_t>{hidden, hidden}));
  EXPECT_EQ(int8.at(module + ".SCB").info->shape, (std::vector<std::uint64_t>{hidden}));
  EXPECT_EQ(int8.at(module + ".weight_format").info->shape, (std::vector<std::uint64_t>{}));
  const loftq::io::Json config = loftq::io::parse_json(file_bytes(dir / "loader-int8" / "config.json"));
  const loftq::io::Json& quantization = config.at("quantization_config");
  EXPECT_TRUE(quantization.at("load_in_8bit").get<bool>());
  EXPECT_FALSE(quantization.at("load_in_4bit").get<bool>());
  EXPECT_TRUE(quantization.at("llm_int8_threshold").is_number_float());
  // The 2-D weights that are not targets stay as stored: transformers must not replace them.
  const auto skip = quantization.at("llm_int8_skip_modules").get<std::set<std::string>>();
  EXPECT_EQ(skip.count("lm_head"), 1u);
  EXPECT_EQ(skip.count("model.embed_tokens"), 1u);
  EXPECT_EQ(skip.count("model.layers.0.self_attn.k_proj"), 1u);
  EXPECT_EQ(skip.count("model.layers.0.self_attn.q_proj"), 0u);
  EXPECT_EQ(skip.count("model.layers.0.input_layernorm"), 0u);
}

TEST_F(Convert, EveryFormatReportsTheErrorsOfWhatItsLoaderMakesOnAGpt2ShapedModel) {
  const ScratchDir dir;
  write_gpt2_model(dir / "gpt2");
  expect_errors_of_what_the_loader_makes(dir / "gpt2", dir.path(), "all-linear", gpt2_conv1d.size(), true);
  const loftq::io::Checkpoint int8(dir / "loader-int8");
  EXPECT_EQ(int8.at("h.0.attn.c_attn.weight").info->shape, (std::vector<std::uint64_t>{192, 64}));  // [out, in]
  EXPECT_EQ(int8.at("h.0.attn.c_attn.SCB").info->shape, (std::vector<std::uint64_t>{192}));
}

TEST_F(Convert, Gpt2Conv1dLayersConvertAsTheirTransposeInBf16AndBitsandbytes) {
  const ScratchDir dir;
  write_gpt2_model(dir / "gpt2");
  const loftq::io::Checkpoint input(dir / "gpt2");
  EXPECT_EQ(loftq_convert::input_identity(input).at("model_type"), "gpt2");  // recorded in shard manifests
  for (const auto format : {loftq_convert::BackboneFormat::bf16, loftq_convert::BackboneFormat::bnb_nf4}) {
    SCOPED_TRACE(std::string(loftq_convert::format_name(format)));
    loftq_convert::ConvertOptions o = options_for(dir / "gpt2", dir / "out");
    o.format = format;
    o.lora_alpha = 16.0;  // scaling 2
    o.report = dir / "report.json";
    o.overwrite = true;
    const loftq_convert::ConvertSummary summary = loftq_convert::convert(o);
    // all-linear: the four Conv1D layers of block h.0; not wte, wpe or the layer norms.
    std::vector<std::string> names;
    for (const loftq_convert::TargetReport& t : summary.targets) names.push_back(t.name);
    EXPECT_EQ(names, (std::vector<std::string>{"h.0.attn.c_attn.weight", "h.0.attn.c_proj.weight", "h.0.mlp.c_fc.weight",
                                               "h.0.mlp.c_proj.weight"}));
    const loftq::io::Json config = loftq::io::parse_json(file_bytes(dir / "out" / "loftq_init" / "adapter_config.json"));
    EXPECT_EQ(config.at("fan_in_fan_out"), true);
    EXPECT_EQ(config.at("use_rslora"), false);
    EXPECT_EQ(config.at("target_modules"), loftq::io::Json::array({"c_attn", "c_fc", "c_proj"}));
    const double s = config.at("lora_alpha").get<double>() / config.at("r").get<double>();
    EXPECT_EQ(s, 2.0);

    const loftq::io::Checkpoint result(dir / "out");
    const SafetensorsReader adapter(dir / "out" / "loftq_init" / "adapter_model.safetensors");
    const std::map<std::string, loftq::io::Json> reports = reports_by_name(dir / "report.json");
    for (const std::string& name : gpt2_conv1d) {
      SCOPED_TRACE(name);
      const loftq::io::TensorInfo& stored = *input.at(name).info;
      const auto in = static_cast<Eigen::Index>(stored.shape[0]), out = static_cast<Eigen::Index>(stored.shape[1]);
      const loftq::RowMatrixXf w = input.at(name).file->read_matrix(stored).transpose();  // out x in
      const std::string key = "base_model.model." + name.substr(0, name.size() - 7);
      const loftq::RowMatrixXf lora_a = adapter.read_matrix(adapter.at(key + ".lora_A.weight"));
      const loftq::RowMatrixXf lora_b = adapter.read_matrix(adapter.at(key + ".lora_B.weight"));
      EXPECT_EQ(adapter.at(key + ".lora_A.weight").shape, (std::vector<std::uint64_t>{8, stored.shape[0]}));  // (r, in)
      EXPECT_EQ(adapter.at(key + ".lora_B.weight").shape, (std::vector<std::uint64_t>{stored.shape[1], 8}));  // (out, r)
      loftq::RowMatrixXf q;
      if (format == loftq_convert::BackboneFormat::bf16) {
        const loftq::io::Checkpoint::Entry e = result.at(name);
        EXPECT_EQ(e.info->dtype, Dtype::bf16);
        ASSERT_EQ(e.info->shape, stored.shape);  // written back (in, out)
        // bitsandbytes quantizes the transposed weight at load time (load_in_4bit).
        const loftq::RowMatrixXf stored_q = e.file->read_matrix(*e.info).transpose();
        q = loftq::quantize(stored_q, loftq::Codebook::nf4, 64,
                            loftq::LoadPath{loftq::FloatType::bfloat16, false, loftq::FloatType::bfloat16})
                .dequantize();
      } else {
        const std::vector<loftq::io::TensorData> parts = tensors_of(result, name);
        const auto state = std::find_if(parts.begin(), parts.end(),
                                        [&](const loftq::io::TensorData& t) { return t.name == name + ".quant_state.bitsandbytes__nf4"; });
        ASSERT_NE(state, parts.end());
        const loftq::io::Json quant_state = loftq::io::parse_json(std::string(state->bytes.begin(), state->bytes.end()));
        EXPECT_EQ(quant_state.at("shape"), loftq::io::Json::array({out, in}));  // as transformers stores a Conv1D
        EXPECT_EQ(result.at(name).info->shape, (std::vector<std::uint64_t>{static_cast<std::uint64_t>(out * in + 1) / 2, 1}));
        const loftq::QuantizedMatrix packed = loftq::io::read_bnb(name, parts);
        ASSERT_EQ(packed.rows(), out);
        ASSERT_EQ(packed.cols(), in);
        q = packed.dequantize();
      }
      const double error = reconstruction_error(w, q, s, lora_a, lora_b);
      const double reported = reported_error(reports.at(name));
      // The loaded Q is the solver's, bit for bit: only the float rounding of the factors remains.
      EXPECT_NEAR(error, reported, 1e-5 * reported);
      EXPECT_LT(error, reports.at(name).at("qlora_error").get<double>());
    }
  }
}

TEST_F(Convert, RsloraDividesTheFactorsForAlphaOverTheSquareRootOfTheRank) {
  const ScratchDir dir;
  loftq_convert::ConvertOptions o = options_for(model(), dir / "plain");
  o.target_modules = R"(.*layers\.0\.(self_attn\.q_proj|mlp\.down_proj))";
  o.lora_alpha = 16.0;
  o.format = loftq_convert::BackboneFormat::fp32;
  loftq_convert::convert(o);
  o.use_rslora = true;
  o.output = dir / "rslora";
  o.report = dir / "report.json";
  loftq_convert::convert(o);

  const auto config_of = [&](const char* run) {
    return loftq::io::parse_json(file_bytes(dir / run / "loftq_init" / "adapter_config.json"));
  };
  EXPECT_EQ(config_of("plain").at("use_rslora"), false);
  EXPECT_EQ(config_of("plain").at("fan_in_fan_out"), false);
  const loftq::io::Json config = config_of("rslora");
  EXPECT_EQ(config.at("use_rslora"), true);
  const double s = config.at("lora_alpha").get<double>() / std::sqrt(config.at("r").get<double>());  // PEFT's rsLoRA scaling
  EXPECT_NEAR(s, 16.0 / std::sqrt(8.0), 1e-12);
  const loftq::io::Checkpoint input(model()), result(dir / "rslora");
  const SafetensorsReader adapter(dir / "rslora" / "loftq_init" / "adapter_model.safetensors");
  const SafetensorsReader plain(dir / "plain" / "loftq_init" / "adapter_model.safetensors");
  const std::map<std::string, loftq::io::Json> reports = reports_by_name(dir / "report.json");
  ASSERT_EQ(reports.size(), 2u);
  for (const auto& [name, report] : reports) {
    SCOPED_TRACE(name);
    const loftq::RowMatrixXf w = input.at(name).file->read_matrix(*input.at(name).info);
    const loftq::RowMatrixXf q = result.at(name).file->read_matrix(*result.at(name).info);
    const std::string key = "base_model.model." + name.substr(0, name.size() - 7);
    const loftq::RowMatrixXf lora_a = adapter.read_matrix(adapter.at(key + ".lora_A.weight"));
    const loftq::RowMatrixXf lora_b = adapter.read_matrix(adapter.at(key + ".lora_B.weight"));
    const double error = reconstruction_error(w, q, s, lora_a, lora_b);
    EXPECT_NEAR(error, reported_error(report), 1e-4 * reported_error(report));
    EXPECT_LT(error, report.at("qlora_error").get<double>());
    // The same LoftQ factors as without rsLoRA, divided by the square root of the other scaling.
    const auto ratio = static_cast<float>(std::sqrt((16.0 / 8.0) / s));
    const loftq::RowMatrixXf plain_b = plain.read_matrix(plain.at(key + ".lora_B.weight"));
    EXPECT_LT((lora_b - ratio * plain_b).norm(), 1e-5f * lora_b.norm());
  }
}

TEST_F(Convert, ConvolutionsTakePeftsConvolutionShapesAndNoBitsandbytesFormat) {
  const ScratchDir dir;
  const std::string c1 = "model.layers.0.conv1d.weight", c2 = "model.layers.0.conv2d.weight", c3 = "model.layers.0.conv3d.weight";
  write_single_file_model(dir / "in",
                          {{c1, {16, 8, 5}},
                           {c2, {32, 8, 3, 3}},
                           {c3, {16, 4, 2, 2, 2}},
                           {"model.layers.0.mlp.up_proj.weight", {64, 32}},
                           {"model.layers.0.odd.weight", {2, 2, 2, 2, 2, 2}}},
                          Dtype::bf16, R"({"model_type": "llama"})");
  // all-linear never selects a convolution.
  const loftq_convert::ConvertSummary linear = loftq_convert::convert(options_for(dir / "in", dir / "linear"));
  ASSERT_EQ(linear.targets.size(), 1u);
  EXPECT_EQ(linear.targets[0].name, "model.layers.0.mlp.up_proj.weight");

  loftq_convert::ConvertOptions o = options_for(dir / "in", dir / "out");
  o.target_modules = R"(.*\.conv\dd)";
  o.format = loftq_convert::BackboneFormat::fp32;
  o.lora_alpha = 4.0;  // scaling 0.5
  o.report = dir / "report.json";
  EXPECT_EQ(loftq_convert::convert(o).targets.size(), 3u);
  const loftq::io::Checkpoint input(dir / "in"), result(dir / "out");
  const SafetensorsReader adapter(dir / "out" / "loftq_init" / "adapter_model.safetensors");
  const std::map<std::string, loftq::io::Json> reports = reports_by_name(dir / "report.json");
  for (const auto& [name, lora_a_shape, lora_b_shape] :
       {std::tuple{c1, std::vector<std::uint64_t>{8, 8, 5}, std::vector<std::uint64_t>{16, 8, 1}},
        std::tuple{c2, std::vector<std::uint64_t>{8, 8, 3, 3}, std::vector<std::uint64_t>{32, 8, 1, 1}},
        std::tuple{c3, std::vector<std::uint64_t>{8, 4, 2, 2, 2}, std::vector<std::uint64_t>{16, 8, 1, 1, 1}}}) {
    SCOPED_TRACE(name);
    const loftq::io::Checkpoint::Entry in = input.at(name), out = result.at(name);
    EXPECT_EQ(out.info->shape, in.info->shape);  // written back in its own shape
    EXPECT_EQ(out.info->dtype, Dtype::f32);
    const std::string key = "base_model.model." + name.substr(0, name.size() - 7);
    EXPECT_EQ(adapter.at(key + ".lora_A.weight").shape, lora_a_shape);
    EXPECT_EQ(adapter.at(key + ".lora_B.weight").shape, lora_b_shape);
    // W as c_out x (c_in k ...), the factors read the same way (row-major).
    const double error = reconstruction_error(in.file->read_matrix(*in.info), out.file->read_matrix(*out.info), 0.5,
                                              adapter.read_matrix(adapter.at(key + ".lora_A.weight")),
                                              adapter.read_matrix(adapter.at(key + ".lora_B.weight")));
    EXPECT_NEAR(error, reported_error(reports.at(name)), 1e-4 * reported_error(reports.at(name)));
    EXPECT_LT(error, reports.at(name).at("qlora_error").get<double>());
  }

  o.output = dir / "bnb";
  o.format = loftq_convert::BackboneFormat::bnb_nf4;
  const std::string bnb = loftq_test::argument_error_message([&] { loftq_convert::convert(o); });
  EXPECT_NE(bnb.find("format = bnb-nf4"), std::string::npos) << bnb;
  EXPECT_NE(bnb.find(c1), std::string::npos) << bnb;
  EXPECT_NE(bnb.find("bitsandbytes does not quantize convolutions"), std::string::npos) << bnb;
  EXPECT_FALSE(fs::exists(dir / "bnb"));

  o.format = loftq_convert::BackboneFormat::bf16;
  o.target_modules = ".*odd";
  const std::string odd = loftq_test::argument_error_message([&] { loftq_convert::convert(o); });
  EXPECT_NE(odd.find("model.layers.0.odd.weight has shape (2, 2, 2, 2, 2, 2)"), std::string::npos) << odd;
  EXPECT_FALSE(fs::exists(dir / "bnb"));
}

/// The bytes of the tensor data of a safetensors file: its size less the 8-byte length and the header.
std::uint64_t data_bytes_of_file(const fs::path& path) {
  const std::string bytes = file_bytes(path);
  std::uint64_t header = 0;
  for (int i = 7; i >= 0; --i) header = header << 8 | static_cast<unsigned char>(bytes.at(static_cast<std::size_t>(i)));
  return bytes.size() - 8 - header;
}

TEST_F(Convert, CompressionReportCountsTheBytesOfTheFilesWritten) {
  const ScratchDir dir;
  loftq_convert::ConvertOptions o = options_for(model(), dir / "out");
  o.format = loftq_convert::BackboneFormat::bnb_nf4;
  o.double_quant = true;
  o.report = dir / "report.json";
  const loftq_convert::ConvertSummary summary = loftq_convert::convert(o);
  const loftq::io::Json report = loftq::io::parse_json(file_bytes(dir / "report.json"));
  const loftq::io::Checkpoint input(model()), result(dir / "out");
  const SafetensorsReader adapter(dir / "out" / "loftq_init" / "adapter_model.safetensors");
  std::uint64_t original = 0, backbone = 0, lora = 0, copied = 0;
  for (const loftq::io::Json& t : report.at("targets")) {
    const std::string name = t.at("name").get<std::string>();
    SCOPED_TRACE(name);
    std::uint64_t stored = 0;
    for (const loftq::io::TensorData& part : tensors_of(result, name)) stored += part.bytes.size();
    EXPECT_GT(stored, result.at(name).info->bytes());  // codes, absmax, nested absmax and map, quant_map, state
    const std::string key = "base_model.model." + name.substr(0, name.size() - 7);
    const std::uint64_t factors = adapter.at(key + ".lora_A.weight").bytes() + adapter.at(key + ".lora_B.weight").bytes();
    EXPECT_EQ(t.at("original_bytes").get<std::uint64_t>(), input.at(name).info->bytes());
    EXPECT_EQ(t.at("backbone_bytes").get<std::uint64_t>(), stored);
    EXPECT_EQ(t.at("adapter_bytes").get<std::uint64_t>(), factors);
    EXPECT_DOUBLE_EQ(t.at("compression").get<double>(),
                     static_cast<double>(stored + factors) / static_cast<double>(input.at(name).info->bytes()));
    original += input.at(name).info->bytes();
    backbone += stored;
    lora += factors;
  }
  const std::set<std::string> names = [&] {
    std::set<std::string> n;
    for (const loftq_convert::TargetReport& t : summary.targets) n.insert(t.name);
    return n;
  }();
  for (const auto& [file, t] : input.tensors()) copied += names.count(t->name) == 0 ? t->bytes() : 0;
  const loftq::io::Json& total = report.at("compression");
  EXPECT_EQ(total.at("original_bytes").get<std::uint64_t>(), original);
  EXPECT_EQ(total.at("backbone_bytes").get<std::uint64_t>(), backbone);
  EXPECT_EQ(total.at("adapter_bytes").get<std::uint64_t>(), lora);
  const double ratio = static_cast<double>(backbone + lora) / static_cast<double>(original);
  EXPECT_DOUBLE_EQ(total.at("compression").get<double>(), ratio);
  EXPECT_GT(ratio, 0.25);  // 4 of 16 bits, plus the absmax and the adapter
  EXPECT_LT(ratio, 0.5);
  // The files hold exactly those bytes: the backbone shards the targets' and the copied
  // tensors', the adapter file every lora_A and lora_B.
  EXPECT_EQ(data_bytes_of_file(dir / "out" / "model-00001-of-00002.safetensors") +
                data_bytes_of_file(dir / "out" / "model-00002-of-00002.safetensors"),
            backbone + copied);
  EXPECT_EQ(data_bytes_of_file(dir / "out" / "loftq_init" / "adapter_model.safetensors"), lora);
  char line[32];
  std::snprintf(line, sizeof line, "= %.4f\n", ratio);
  EXPECT_NE(loftq_convert::summary_table(summary, dir / "out").find(line), std::string::npos);
}

TEST(ConvertReport, ReadsBackTheByteCountsItWrites) {
  loftq_convert::TargetReport r;
  r.name = "h.0.attn.c_attn.weight";
  r.shape = {64, 192};
  r.bits = 4;
  r.rank = 8;
  r.codebook = "nf4";
  r.qlora_error = 0.1;
  r.loftq_errors = {0.09, 0.08};
  r.iteration = 2;
  r.krylov_depths = {5, 3};
  r.seconds = 0.5;
  r.bytes = {49152, 7000, 8192};
  // As a work file's metadata holds it: written, then parsed.
  const loftq::io::Json j = loftq::io::parse_json(loftq::io::dump_json(loftq_convert::report_json(r)));
  EXPECT_DOUBLE_EQ(j.at("compression").get<double>(), (7000.0 + 8192.0) / 49152.0);
  const loftq_convert::TargetReport back = loftq_convert::report_from_json(j, "report");
  EXPECT_EQ(back.bytes.original, 49152u);
  EXPECT_EQ(back.bytes.backbone, 7000u);
  EXPECT_EQ(back.bytes.adapter, 8192u);
  EXPECT_EQ(back.krylov_depths, (std::vector<int>{5, 3}));
  EXPECT_EQ(loftq_convert::report_json(back), j);
  loftq::io::Json missing = j;
  missing.erase("backbone_bytes");
  try {
    loftq_convert::report_from_json(missing, "shard report");
    ADD_FAILURE() << "no error for a report without backbone_bytes";
  } catch (const loftq::io::FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("backbone_bytes"), std::string::npos) << e.what();
  }
}

TEST(ConvertLayout, Conv1dLayersAreKnownByModelTypeAndLayerName) {
  using loftq_convert::is_conv1d_layer;
  EXPECT_TRUE(is_conv1d_layer("gpt2", "h.0.attn.c_attn"));
  EXPECT_TRUE(is_conv1d_layer("gpt2", "transformer.h.3.crossattention.q_attn"));
  EXPECT_TRUE(is_conv1d_layer("openai-gpt", "transformer.h.0.mlp.c_fc"));
  EXPECT_TRUE(is_conv1d_layer("decision_transformer", "encoder.h.1.mlp.c_proj"));
  EXPECT_TRUE(is_conv1d_layer("imagegpt", "transformer.h.0.attn.c_proj"));
  EXPECT_TRUE(is_conv1d_layer("clvp", "speech_decoder_model.model.decoder.layers.0.mlp.c_fc"));
  EXPECT_FALSE(is_conv1d_layer("clvp", "speech_decoder_model.model.decoder.layers.0.attn.q_proj"));
  EXPECT_FALSE(is_conv1d_layer("gpt2", "lm_head"));
  EXPECT_FALSE(is_conv1d_layer("gpt2", "score"));
  EXPECT_FALSE(is_conv1d_layer("gpt2", "c_attn_extra"));
  EXPECT_FALSE(is_conv1d_layer("gpt_bigcode", "transformer.h.0.attn.c_attn"));  // nn.Linear there
  EXPECT_FALSE(is_conv1d_layer("gpt_neo", "transformer.h.0.mlp.c_fc"));
  EXPECT_FALSE(is_conv1d_layer("", "h.0.attn.c_attn"));
  EXPECT_FALSE(is_conv1d_layer("gpt2", "h.0.attn."));

  EXPECT_EQ(loftq_convert::block_index("h.3.attn.c_attn.weight"), 3);
  EXPECT_EQ(loftq_convert::block_index("transformer.h.11.mlp.c_fc.weight"), 11);
  EXPECT_EQ(loftq_convert::block_index("model.layers.2.mlp.up_proj.weight"), 2);
  EXPECT_EQ(loftq_convert::block_index("wh.0.attn.weight"), -1);
  EXPECT_EQ(loftq_convert::block_index("lm_head.weight"), -1);

  const ScratchDir dir;
  EXPECT_EQ(loftq_convert::model_type_of(dir.path()), "");  // no config.json
  loftq::io::write_file_atomically(dir / "config.json", R"({"hidden_size": 8})");
  EXPECT_EQ(loftq_convert::model_type_of(dir.path()), "");
  loftq::io::write_file_atomically(dir / "config.json", R"({"model_type": "gpt2"})");
  EXPECT_EQ(loftq_convert::model_type_of(dir.path()), "gpt2");
  for (const char* bad : {R"({"model_type": 2})", R"(["gpt2"])", R"({"model_type": "gpt2",)"}) {
    loftq::io::write_file_atomically(dir / "config.json", bad);
    EXPECT_THROW(loftq_convert::model_type_of(dir.path()), loftq::io::FormatError) << bad;
  }
}

#ifdef LOFTQ_CONVERT_EXE
/// Runs loftq-convert with `arguments`; returns its exit status, with its stdout and stderr.
int run_tool(const std::string& arguments, std::string& out_text, std::string& err_text) {
  const ScratchDir logs;
  const std::string command = std::string(LOFTQ_CONVERT_EXE) + " " + arguments + " >" + (logs / "out").string() +
                              " 2>" + (logs / "err").string();
  const int status = std::system(command.c_str());
  out_text = file_bytes(logs / "out");
  err_text = file_bytes(logs / "err");
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST_F(Convert, ToolExitsWithTwoAndOneLineOnErrors) {
  const std::string in = "--input " + model().string();
  for (const std::string& args : {in + " --output " + out("t1").string() + " --bits 3",
                                  in + " --output " + out("t1").string() + " --unknown",
                                  in + " --output " + out("t1").string() + " --rank",
                                  in + " --output " + out("t1").string() + " --mixed 4,2",
                                  in + " --output " + out("t1").string() + " --target-modules 'nope.*'",
                                  "--input " + out("missing").string() + " --output " + out("t1").string(),
                                  in + " --output " + model().string()}) {
    std::string stdout_text, stderr_text;
    EXPECT_EQ(run_tool(args, stdout_text, stderr_text), 2) << args;
    EXPECT_EQ(stderr_text.rfind("loftq-convert: error: ", 0), 0u) << stderr_text;
    EXPECT_EQ(std::count(stderr_text.begin(), stderr_text.end(), '\n'), 1) << stderr_text;
    EXPECT_FALSE(fs::exists(out("t1")));
  }
}

TEST_F(Convert, ToolConvertsAndPrintsProgressAndSummary) {
  std::string stdout_text, stderr_text;
  const std::string args = "--input " + model().string() + " --output " + out("cli").string() +
                           " --rank 4 --iters 1 --target-modules '.*self_attn.*' --lora-alpha 8 --use-rslora --report " +
                           out("cli.json").string();
  ASSERT_EQ(run_tool(args, stdout_text, stderr_text), 0) << stderr_text;
  EXPECT_NE(stderr_text.find("LoftQ [8/8"), std::string::npos) << stderr_text;  // plain lines: not a terminal
  EXPECT_NE(stdout_text.find("| nf4      |       8 |"), std::string::npos) << stdout_text;
  const loftq::io::Json config = loftq::io::parse_json(file_bytes(out("cli") / "loftq_init" / "adapter_config.json"));
  EXPECT_EQ(config.at("lora_alpha").get<double>(), 8.0);
  EXPECT_EQ(config.at("use_rslora"), true);
  EXPECT_EQ(config.at("target_modules")[0].get<std::string>(), ".*self_attn.*");
  EXPECT_NE(stdout_text.find("compression (backbone + adapter) / original: "), std::string::npos) << stdout_text;
  EXPECT_EQ(loftq::io::parse_json(file_bytes(out("cli.json"))).at("targets").size(), 8u);
  EXPECT_EQ(run_tool(args, stdout_text, stderr_text), 2);  // the output exists now
  EXPECT_NE(stderr_text.find("--overwrite"), std::string::npos);
  EXPECT_EQ(run_tool(args + " --overwrite", stdout_text, stderr_text), 0) << stderr_text;
}

TEST_F(Convert, ToolHelpListsEveryFlagAndSaysTheFactorsAreDividedBySqrtOfAlphaOverRank) {
  std::string stdout_text, stderr_text;
  ASSERT_EQ(run_tool("--help", stdout_text, stderr_text), 0) << stderr_text;
  EXPECT_EQ(stderr_text, "");
  for (const char* flag : {"--input", "--output", "--bits", "--rank", "--iters", "--codebook", "--block-size",
                           "--target-modules", "--mixed", "--bits-budget", "--lora-alpha", "--use-rslora", "--format", "--double-quant",
                           "--threads", "--shard", "--merge", "--report", "--overwrite"}) {
    EXPECT_NE(stdout_text.find(std::string(flag) + " "), std::string::npos) << flag;
  }
  EXPECT_NE(stdout_text.find("sqrt(alpha / rank)"), std::string::npos) << stdout_text;
  EXPECT_EQ(stdout_text.find("divided by alpha / rank"), std::string::npos) << stdout_text;
}

TEST_F(Convert, ToolRefusesAReadOnlyOutputDirectory) {
  const ScratchDir dir;
  fs::create_directories(dir / "read-only");
  fs::permissions(dir / "read-only", fs::perms::owner_write | fs::perms::group_write | fs::perms::others_write,
                  fs::perm_options::remove);
  // Root ignores permission bits, so as root the tool runs as nobody (which can read the model).
  const std::string as_user = ::geteuid() == 0 ? "setpriv --reuid=65534 --regid=65534 --clear-groups " : "";
  const std::string command = as_user + LOFTQ_CONVERT_EXE + " --input " + model().string() + " --output " +
                              (dir / "read-only" / "out").string() + " >/dev/null 2>" + (dir / "err").string();
  const int status = std::system(command.c_str());
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 2);
  const std::string err = file_bytes(dir / "err");
  EXPECT_EQ(err.rfind("loftq-convert: error: ", 0), 0u) << err;
  EXPECT_NE(err.find("Permission denied"), std::string::npos) << err;
  EXPECT_TRUE(fs::is_empty(dir / "read-only"));
}

TEST_F(Convert, ToolFailsCleanlyPastAFileSizeLimit) {
  const ScratchDir dir;
  std::string stdout_text, stderr_text;
  // 1000 blocks of 512 bytes: the 1.5 MB output shards cannot be written.
  const std::string args = "--input " + model().string() + " --output " + (dir / "out").string() + " --rank 4";
  const std::string limited = "sh -c 'ulimit -f 1000; exec " + std::string(LOFTQ_CONVERT_EXE) + " " + args + "'";
  const int status = std::system((limited + " >/dev/null 2>" + (dir / "err").string()).c_str());
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 2);
  const std::string err = file_bytes(dir / "err");
  EXPECT_NE(err.find("File too large"), std::string::npos) << err;
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(dir.path())) left.push_back(e.path().filename().string());
  EXPECT_EQ(left, std::vector<std::string>{"err"});
}
#endif

}  // namespace
