// What `nashprune prune --plan PLAN --calibration STATS --compensate KIND` writes,
// with statistics planted in STATS:
// - on the bundled Q8_0 model, a refit attn_output whose rows are whole Q8_0
//   blocks is requantized to Q8_0 (when the tool has ggml), one that is not is
//   written F16 and listed; a column slice that splits blocks without
//   compensation is written F16 with the llama-quantize command that restores it;
// - on stories260K (F32), every removed attention block, MLP block and layer adds
//   its mean output W μ to the bias applied at the same point of the residual
//   stream, as computed here in plain loops.
#include <gtest/gtest.h>

#include <calibrate/calibration_stats.hpp>
#include <gguf/llama_model.hpp>
#include <gguf/tensor_floats.hpp>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "gguf_test_files.hpp"
#include "tool_runs.hpp"

namespace {

struct layer_keep {
  bool keep = true;
  std::vector<std::int64_t> q_heads;
  std::vector<std::int64_t> kv_heads;
  std::vector<std::int64_t> channels;
};

std::vector<std::int64_t> iota(std::int64_t n, std::int64_t step = 1) {
  std::vector<std::int64_t> v;
  for (std::int64_t i = 0; i < n; i += step) v.push_back(i);
  return v;
}

struct compensation_outputs : ::testing::Test {
  gguf_test::scratch_dir dir;

  std::filesystem::path planted_stats(const std::filesystem::path& model) const {
    const auto path = dir / (model.stem().string() + "-stats.gguf");
    tool_runs::write_planted_stats(model, path);
    return path;
  }

  std::filesystem::path plan_file(const std::vector<layer_keep>& layers) const {
    nlohmann::json doc;
    for (std::size_t l = 0; l < layers.size(); ++l) {
      doc["layers"].push_back({{"layer", l}, {"keep", layers[l].keep}, {"q_heads", layers[l].q_heads},
                               {"kv_heads", layers[l].kv_heads}, {"channels", layers[l].channels}});
    }
    const auto path = dir / "plan.json";
    std::ofstream(path) << doc.dump();
    return path;
  }

  // Runs prune; returns its output (the test fails on a non-zero exit).
  std::string prune(const std::filesystem::path& model, const std::filesystem::path& out, const std::string& args) const {
    const auto run = tool_runs::run_tool("prune '" + model.string() + "' '" + out.string() + "' --force " + args, dir / "prune.log");
    EXPECT_EQ(run.code, 0) << run.output;
    return run.output;
  }
};

std::vector<float> decoded(const gguf::tensor_view& t) {
  std::vector<float> out(static_cast<std::size_t>(t.elements()));
  gguf::dequantize(t.type, t.data, out);
  return out;
}

// W μ in plain loops, W as ggml stores it (dims[0] columns, dims[1] rows).
std::vector<double> times(const gguf::tensor_view& w, const Eigen::VectorXd& mean) {
  const auto values = decoded(w);
  std::vector<double> out(static_cast<std::size_t>(w.dims[1]), 0.0);
  for (std::int64_t r = 0; r < w.dims[1]; ++r) {
    for (std::int64_t c = 0; c < w.dims[0]; ++c) out[static_cast<std::size_t>(r)] += values[static_cast<std::size_t>(r * w.dims[0] + c)] * mean(c);
  }
  return out;
}

void expect_bias(const gguf::reader& out, const std::string& name, const std::vector<double>& expected) {
  const auto* bias = out.find_tensor(name);
  ASSERT_NE(bias, nullptr) << name << " missing";
  ASSERT_EQ(bias->type, nashprune::ggml_type::f32) << name;
  const auto values = decoded(*bias);
  ASSERT_EQ(values.size(), expected.size()) << name;
  for (std::size_t i = 0; i < values.size(); ++i) {
    EXPECT_NEAR(values[i], expected[i], 1e-4 * (1 + std::abs(expected[i]))) << name << " at " << i;
  }
}

TEST_F(compensation_outputs, QuantizedRefitKeepsQ8_0WhereRowsAreWholeBlocks) {
  const auto model = std::filesystem::path(NASHPRUNE_DATA_DIR) / "TinyStories-656K-Q8_0.gguf";
  const auto stats = planted_stats(model);
  // Layer 0 keeps two whole GQA groups (64 columns); layer 1 one head of three groups (48 columns).
  const auto plan = plan_file({{true, {0, 1, 6, 7}, {0, 3}, iota(384)}, {true, {0, 2, 4}, {0, 1, 2}, iota(384)}});
  const auto out_path = dir / "refit.gguf";
  const auto log = prune(model, out_path, "--plan '" + plan.string() + "' --calibration '" + stats.string() + "' --compensate refit");
  const auto out = gguf::reader::open(out_path);
  const auto& aligned = out.tensor("blk.0.attn_output.weight");
  const auto& unaligned = out.tensor("blk.1.attn_output.weight");
  EXPECT_EQ(unaligned.type, nashprune::ggml_type::f16);
  EXPECT_NE(log.find("stay F16 (rows not whole blocks of their type): blk.1.attn_output.weight (48 values a row)"), std::string::npos) << log;
#ifdef NASHPRUNE_TOOL_HAS_GGML
  EXPECT_EQ(aligned.type, nashprune::ggml_type::q8_0);
  EXPECT_EQ(log.find("blk.0.attn_output.weight (q8_0)"), std::string::npos) << log;
#else
  EXPECT_EQ(aligned.type, nashprune::ggml_type::f16);
#endif
  // The refit changed the kept columns (they are not the input's) and every value is finite.
  const auto in = gguf::reader::open(model);
  const auto original = decoded(in.tensor("blk.0.attn_output.weight"));
  const auto written = decoded(aligned);
  double change = 0;
  for (std::int64_t r = 0; r < aligned.dims[1]; ++r) {
    for (std::int64_t c = 0; c < 64; ++c) {
      const auto column = (c < 32 ? c : c + 64);  // groups 0 and 3: columns [0, 32) and [96, 128)
      const auto w = written[static_cast<std::size_t>(r * 64 + c)];
      ASSERT_TRUE(std::isfinite(w));
      change += std::abs(w - original[static_cast<std::size_t>(r * 128 + column)]);
    }
  }
  EXPECT_GT(change, 0.0);
  EXPECT_NE(out.find_tensor("blk.0.attn_output.bias"), nullptr);
}

TEST_F(compensation_outputs, SlicesThatSplitBlocksComeWithTheRestoringCommand) {
  const auto model = std::filesystem::path(NASHPRUNE_DATA_DIR) / "TinyStories-656K-Q8_0.gguf";
  const auto plan = plan_file({{true, {0, 2, 4, 6}, {0, 1, 2, 3}, iota(384)}, {true, iota(8), iota(4), iota(384)}});
  const auto out_path = dir / "sliced.gguf";
  const auto log = prune(model, out_path, "--plan '" + plan.string() + "'");
  EXPECT_EQ(gguf::reader::open(out_path).tensor("blk.0.attn_output.weight").type, nashprune::ggml_type::f16);
  const auto expected = "to quantize them back: llama-quantize --allow-requantize --pure '" + out_path.string() + "' '" +
                        (dir / "sliced-q8_0.gguf").string() + "' Q8_0";
  EXPECT_NE(log.find(expected), std::string::npos) << log;
}

TEST_F(compensation_outputs, RemovedBlocksAddTheirMeanOutputWhereTheResidualStreamHadIt) {
  const auto model = std::filesystem::path(NASHPRUNE_DATA_DIR) / "stories260K.gguf";
  const auto in = gguf::reader::open(model);
  const auto shape = gguf::llama_shape::read(in);
  ASSERT_EQ(shape.n_layer(), 5);
  const auto n_ff = shape.layers[0].n_ff;
  const auto stats_path = planted_stats(model);
  const auto stats = calibrate::read_stats(stats_path);
  const auto all = [&] { return layer_keep{true, iota(8), iota(4), iota(n_ff)}; };
  // Layer 0 loses its attention (the first layer keeps a zeroed placeholder), layer 1
  // its attention, layer 2 goes whole, layer 3 loses its MLP.
  std::vector<layer_keep> layers{all(), all(), all(), all(), all()};
  layers[0].q_heads.clear();
  layers[0].kv_heads.clear();
  layers[1].q_heads.clear();
  layers[1].kv_heads.clear();
  layers[2].keep = false;
  layers[3].channels.clear();
  const auto plan = plan_file(layers);
  const auto out_path = dir / "blocks.gguf";
  const auto log = prune(model, out_path, "--plan '" + plan.string() + "' --calibration '" + stats_path.string() + "' --compensate bias");
  const auto out = gguf::reader::open(out_path);
  const auto mean = [&](std::int64_t layer, const char* weight) {
    const auto& s = stats.layers[static_cast<std::size_t>(layer)];
    return times(in.tensor(gguf::layer_tensor(layer, weight)), std::string(weight) == "attn_output.weight" ? s.attn_in_mean : s.ffn_in_mean);
  };
  const auto sum = [](std::vector<double> a, const std::vector<double>& b) {
    for (std::size_t i = 0; i < a.size(); ++i) a[i] += b[i];
    return a;
  };
  expect_bias(out, "blk.0.attn_output.bias", mean(0, "attn_output.weight"));
  expect_bias(out, "blk.0.ffn_down.bias", mean(1, "attn_output.weight"));
  expect_bias(out, "blk.1.ffn_down.bias", sum(mean(2, "attn_output.weight"), mean(2, "ffn_down.weight")));
  expect_bias(out, "blk.2.ffn_down.bias", mean(3, "ffn_down.weight"));
  EXPECT_EQ(out.find_tensor("blk.3.ffn_down.bias"), nullptr);
  EXPECT_NE(log.find("layer 2 removed: its mean output"), std::string::npos) << log;

  // Without a kept layer before it, a removed first layer has no such bias, and says so.
  layers = {all(), all(), all(), all(), all()};
  layers[0].keep = false;
  const auto first = plan_file(layers);
  const auto first_log = prune(model, dir / "first.gguf", "--plan '" + first.string() + "' --calibration '" + stats_path.string() + "' --compensate bias");
  EXPECT_NE(first_log.find("layer 0 removed: no bias of the pruned model adds at its place in the residual stream; not compensated"),
            std::string::npos) << first_log;
  const auto first_out = gguf::reader::open(dir / "first.gguf");
  for (const auto& t : first_out.tensors()) EXPECT_FALSE(t.name.ends_with(".bias")) << t.name;

  // --compensate none adds nothing.
  (void)prune(model, dir / "none.gguf", "--plan '" + plan.string() + "' --calibration '" + stats_path.string() + "' --compensate none");
  const auto none_out = gguf::reader::open(dir / "none.gguf");
  for (const auto& t : none_out.tensors()) EXPECT_FALSE(t.name.ends_with(".bias")) << t.name;
}

}  // namespace
