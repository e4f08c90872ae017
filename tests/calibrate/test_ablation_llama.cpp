// Ablation through real llama.cpp (label `llama`): zeroing heads' columns of
// kqv_out in the evaluation callback gives the NLL of the model actually pruned
// of those heads by `nashprune prune --plan` (to 1e-5 relative), removing a head
// changes the NLL, and bad inputs are refused. The same holds for whole blocks
// (attention, MLP) and whole layers, zeroed as the products of attn_output and
// ffn_down: singles, a pair, and layer 0 (written with one zero head).
#include <gtest/gtest.h>

#include <calibrate/llama_ablation.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include <unistd.h>

namespace {

struct real_ablation : ::testing::Test {
  const std::filesystem::path shared = NASHPRUNE_SHARED_DIR;
  const std::filesystem::path model = shared / "models/stories260K.gguf";
  const std::filesystem::path text = shared / "data/tinystories-calibration.txt";
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / ("nashprune_ablation_" + std::to_string(::getpid()));
  void SetUp() override {
    if (!std::filesystem::exists(model) || !std::filesystem::exists(text)) GTEST_SKIP() << model << " or " << text << " is absent";
    std::filesystem::create_directories(dir);
  }
  void TearDown() override { std::filesystem::remove_all(dir); }
  calibrate::ablation_options options(const std::filesystem::path& m) const { return {m, text, 512, 128, 1}; }
  static int run(const std::string& command) { return std::system(command.c_str()); }
};

TEST_F(real_ablation, AblatedNllEqualsThePrunedModelsNll) {
  const auto full = dir / "full.json", plan = dir / "plan.json", pruned = dir / "pruned.gguf";
  const std::string tool = NASHPRUNE_TOOL;
  ASSERT_EQ(run(tool + " prune '" + model.string() + "' --dry-run --unit heads --target 0 --plan-out '" + full.string() + "' > /dev/null"), 0);
  // One query head from every KV group of layers 1 and 3 (heads 0, 3, 5, 6 and 1, 2, 4, 7).
  const std::vector<calibrate::head_ref> removed{{1, 0}, {1, 3}, {1, 5}, {1, 6}, {3, 1}, {3, 2}, {3, 4}, {3, 7}};
  std::ifstream in(full);
  auto doc = nlohmann::json::parse(in);
  for (const auto& r : removed) {
    auto& q = doc["layers"][static_cast<std::size_t>(r.layer)]["q_heads"];
    q.erase(std::find(q.begin(), q.end(), r.head));
  }
  std::ofstream(plan) << doc.dump();
  ASSERT_EQ(run(tool + " prune '" + model.string() + "' '" + pruned.string() + "' --plan '" + plan.string() + "' --force > /dev/null"), 0);

  calibrate::ablation_session original(options(model));
  calibrate::ablation_session cut(options(pruned));
  const double ablated = original.mean_nll(removed);
  const double direct = cut.mean_nll({});
  EXPECT_EQ(original.predicted_tokens(), cut.predicted_tokens());
  EXPECT_NEAR(ablated, direct, 1e-5 * direct);
  const double intact = original.mean_nll({});
  EXPECT_GT(std::abs(ablated - intact), 1e-3 * intact);  // the ablation did remove something
  EXPECT_EQ(original.mean_nll({}), intact);               // and leaves no trace in later passes
}

// Blocks removed by ablation and, in the plan, by prune --plan.
struct block_case {
  const char* name;
  std::vector<calibrate::block_ref> blocks;
};

TEST_F(real_ablation, AblatedBlocksEqualThePrunedModelsNll) {
  const std::string tool = NASHPRUNE_TOOL;
  const auto full = dir / "full.json";
  ASSERT_EQ(run(tool + " prune '" + model.string() + "' --dry-run --unit heads --target 0 --plan-out '" + full.string() + "' > /dev/null"), 0);
  using calibrate::block_part;
  const std::vector<block_case> cases{
      {"layer_2", {{2, block_part::layer}}},
      {"layers_1_4", {{1, block_part::layer}, {4, block_part::layer}}},
      {"layer_0", {{0, block_part::layer}}},
      {"attention_3", {{3, block_part::attention}}},
      {"attention_0", {{0, block_part::attention}}},
      {"mlp_1", {{1, block_part::mlp}}},
      {"attention_2_mlp_4", {{2, block_part::attention}, {4, block_part::mlp}}},
  };
  calibrate::ablation_session original(options(model));
  const double intact = original.mean_nll({});
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    std::ifstream in(full);
    auto doc = nlohmann::json::parse(in);
    for (const auto& b : c.blocks) {
      auto& layer = doc["layers"][static_cast<std::size_t>(b.layer)];
      if (b.part == block_part::layer) layer["keep"] = false;
      if (b.part == block_part::attention) layer["q_heads"] = layer["kv_heads"] = nlohmann::json::array();
      if (b.part == block_part::mlp) layer["channels"] = nlohmann::json::array();
    }
    const auto plan = dir / (std::string(c.name) + ".json"), pruned = dir / (std::string(c.name) + ".gguf");
    std::ofstream(plan) << doc.dump();
    ASSERT_EQ(run(tool + " prune '" + model.string() + "' '" + pruned.string() + "' --plan '" + plan.string() + "' --force > /dev/null"), 0);
    calibrate::ablation_session cut(options(pruned));
    const double ablated = original.mean_nll({}, c.blocks);
    const double direct = cut.mean_nll({});
    EXPECT_EQ(original.predicted_tokens(), cut.predicted_tokens());
    EXPECT_NEAR(ablated, direct, 1e-5 * direct);
    EXPECT_GT(std::abs(ablated - intact), 1e-3 * intact);
  }
  EXPECT_EQ(original.mean_nll({}), intact);  // no trace in later passes
  // The model without layer 3's attention (deci, attention-free layer 3) has none left to remove.
  calibrate::ablation_session attention_free(options(dir / "attention_3.gguf"));
  const std::vector<calibrate::block_ref> gone{{3, block_part::attention}};
  EXPECT_THROW((void)attention_free.mean_nll({}, gone), std::invalid_argument);
}

TEST_F(real_ablation, BadInputsAreRefused) {
  calibrate::ablation_session session(options(model));
  const std::vector<calibrate::head_ref> beyond{{0, 8}};
  EXPECT_THROW((void)session.mean_nll(beyond), std::invalid_argument);
  const std::vector<calibrate::head_ref> no_layer{{5, 0}};
  EXPECT_THROW((void)session.mean_nll(no_layer), std::invalid_argument);
  const std::vector<calibrate::block_ref> no_block_layer{{5, calibrate::block_part::layer}};
  EXPECT_THROW((void)session.mean_nll({}, no_block_layer), std::invalid_argument);
  const std::vector<calibrate::block_ref> negative{{-1, calibrate::block_part::mlp}};
  EXPECT_THROW((void)session.mean_nll({}, negative), std::invalid_argument);
  const auto tiny = dir / "tiny.txt";
  std::ofstream(tiny) << "Once upon a time";
  EXPECT_THROW(calibrate::ablation_session({model, tiny, 0, 128, 1}), std::invalid_argument);
  EXPECT_THROW(calibrate::ablation_session({model, text, 64, 128, 1}), std::invalid_argument);
}

}  // namespace
