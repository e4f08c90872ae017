// Ablation through real llama.cpp (label `llama`): zeroing heads' columns of
// kqv_out in the evaluation callback gives the NLL of the model actually pruned
// of those heads by `nashprune prune --plan` (to 1e-5 relative), removing a head
// changes the NLL, and bad inputs are refused.
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

TEST_F(real_ablation, BadInputsAreRefused) {
  calibrate::ablation_session session(options(model));
  const std::vector<calibrate::head_ref> beyond{{0, 8}};
  EXPECT_THROW((void)session.mean_nll(beyond), std::invalid_argument);
  const std::vector<calibrate::head_ref> no_layer{{5, 0}};
  EXPECT_THROW((void)session.mean_nll(no_layer), std::invalid_argument);
  const auto tiny = dir / "tiny.txt";
  std::ofstream(tiny) << "Once upon a time";
  EXPECT_THROW(calibrate::ablation_session({model, tiny, 0, 128, 1}), std::invalid_argument);
  EXPECT_THROW(calibrate::ablation_session({model, text, 64, 128, 1}), std::invalid_argument);
}

}  // namespace
