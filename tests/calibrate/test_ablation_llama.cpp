// Ablation through real llama.cpp (label `llama`): zeroing heads' columns of
// kqv_out in the evaluation callback gives the NLL of the model actually pruned
// of those heads by `nashprune prune --plan` (to 1e-5 relative), removing a head
// changes the NLL, and bad inputs are refused. The same holds for whole blocks
// (attention, MLP) and whole layers, zeroed as the products of attn_output and
// ffn_down: singles, a pair, and layer 0 (written with one zero head). The conditional ablation (ablate
// --given G) measures the model pruned of G: its L0 and L_i are the pruned
// model's NLLs; the iterative plan (ablation-prune) of one round is ablation-plan's,
// prune --redundancy ablation chooses the same heads and records the price, and
// a two-round plan is GQA-consistent with its measured loss that of the pruned model.
#include <gtest/gtest.h>

#include <calibrate/llama_ablation.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include <sys/wait.h>
#include <unistd.h>

namespace {

struct real_ablation : ::testing::Test {
  const std::filesystem::path data = NASHPRUNE_DATA_DIR;
  const std::filesystem::path model = data / "stories260K.gguf";
  const std::filesystem::path text = data / "tinystories-calibration.txt";
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / ("nashprune_ablation_" + std::to_string(::getpid()));
  void SetUp() override {
    ASSERT_TRUE(std::filesystem::exists(model) && std::filesystem::exists(text)) << model << " or " << text << " is missing";
    std::filesystem::create_directories(dir);
  }
  void TearDown() override { std::filesystem::remove_all(dir); }
  calibrate::ablation_options options(const std::filesystem::path& m) const { return {{m, text, 512, 128, 1}}; }
  static int run(const std::string& command) { return std::system(command.c_str()); }
  static std::string slurp(const std::filesystem::path& p) {
    std::ifstream in(p);
    return {std::istreambuf_iterator<char>(in), {}};
  }
  /// The tool's stdout (to `log`) and exit status for `args`.
  int tool(const std::string& args, const std::filesystem::path& log) const {
    return run(std::string(NASHPRUNE_TOOL) + " " + args + " > '" + log.string() + "' 2>&1");
  }
  /// The number printed after `key` in a tool log.
  static double number_after(const std::string& text, const std::string& key) {
    const auto at = text.find(key);
    EXPECT_NE(at, std::string::npos) << key << " in " << text;
    return at == std::string::npos ? 0.0 : std::stod(text.substr(at + key.size()));
  }
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
  using nashprune::item_kind;
  const std::vector<block_case> cases{
      {"layer_2", {{2, item_kind::whole_layer}}},
      {"layers_1_4", {{1, item_kind::whole_layer}, {4, item_kind::whole_layer}}},
      {"layer_0", {{0, item_kind::whole_layer}}},
      {"attention_3", {{3, item_kind::attention_block}}},
      {"attention_0", {{0, item_kind::attention_block}}},
      {"mlp_1", {{1, item_kind::mlp_block}}},
      {"attention_2_mlp_4", {{2, item_kind::attention_block}, {4, item_kind::mlp_block}}},
  };
  calibrate::ablation_session original(options(model));
  const double intact = original.mean_nll({});
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    std::ifstream in(full);
    auto doc = nlohmann::json::parse(in);
    for (const auto& b : c.blocks) {
      auto& layer = doc["layers"][static_cast<std::size_t>(b.layer)];
      if (b.part == item_kind::whole_layer) layer["keep"] = false;
      if (b.part == item_kind::attention_block) layer["q_heads"] = layer["kv_heads"] = nlohmann::json::array();
      if (b.part == item_kind::mlp_block) layer["channels"] = nlohmann::json::array();
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
  const std::vector<calibrate::block_ref> gone{{3, nashprune::item_kind::attention_block}};
  EXPECT_THROW((void)attention_free.mean_nll({}, gone), std::invalid_argument);
}

TEST_F(real_ablation, BadInputsAreRefused) {
  calibrate::ablation_session session(options(model));
  const std::vector<calibrate::head_ref> beyond{{0, 8}};
  EXPECT_THROW((void)session.mean_nll(beyond), std::invalid_argument);
  const std::vector<calibrate::head_ref> no_layer{{5, 0}};
  EXPECT_THROW((void)session.mean_nll(no_layer), std::invalid_argument);
  const std::vector<calibrate::block_ref> no_block_layer{{5, nashprune::item_kind::whole_layer}};
  EXPECT_THROW((void)session.mean_nll({}, no_block_layer), std::invalid_argument);
  const std::vector<calibrate::block_ref> negative{{-1, nashprune::item_kind::mlp_block}};
  EXPECT_THROW((void)session.mean_nll({}, negative), std::invalid_argument);
  const auto tiny = dir / "tiny.txt";
  std::ofstream(tiny) << "Once upon a time";
  EXPECT_THROW(calibrate::ablation_session(calibrate::ablation_options{{model, tiny, 0, 128, 1}}), std::invalid_argument);
  EXPECT_THROW(calibrate::ablation_session(calibrate::ablation_options{{model, text, 64, 128, 1}}), std::invalid_argument);
  EXPECT_THROW(calibrate::ablation_session({{model, text, 512, 128, 1}, -1}), std::invalid_argument);
  EXPECT_THROW(calibrate::ablation_session({{model, text, 512, 128, 1}, 127}), std::invalid_argument);
}

TEST_F(real_ablation, ScoringFromHalfAContextIsLlamaPerplexity) {
  // llama-perplexity scores the predictions of positions ctx/2 .. ctx-2 of each chunk:
  // the NLL from score_from = 64 is the log of its perplexity on the same 4 chunks,
  // and scoring from 0 differs (the early positions have little context).
  const auto log = dir / "eval.json";
  ASSERT_EQ(tool("eval '" + model.string() + "' '" + model.string() + "' --text '" + text.string() + "' -c 128 --chunks 4 --json", log), 0) << slurp(log);
  const double perplexity = number_after(slurp(log), "\"perplexity\":");
  calibrate::ablation_session from_half({{model, text, 512, 128, 1}, 64});
  EXPECT_EQ(from_half.predicted_tokens(), 4 * 63);
  const double half = from_half.mean_nll(std::vector<calibrate::head_ref>{});
  EXPECT_NEAR(std::exp(half), perplexity, 1e-3 * perplexity);
  calibrate::ablation_session from_start(options(model));
  EXPECT_GT(std::abs(from_start.mean_nll(std::vector<calibrate::head_ref>{}) - half), 0.01);
}

TEST_F(real_ablation, ConditionalAblationMeasuresThePrunedModel) {
  const auto full = dir / "full.json", plan = dir / "plan.json", pruned = dir / "pruned.gguf", ablation = dir / "given.json";
  // One head from every KV group of layer 2 (heads 0, 2, 5, 7 go; 1, 3, 4, 6 become 0..3).
  ASSERT_EQ(tool("prune '" + model.string() + "' --dry-run --unit heads --target 0 --plan-out '" + full.string() + "'", dir / "full.log"), 0);
  auto doc = nlohmann::json::parse(slurp(full));
  doc["layers"][2]["q_heads"] = {1, 3, 4, 6};
  std::ofstream(plan) << doc.dump();
  ASSERT_EQ(tool("prune '" + model.string() + "' '" + pruned.string() + "' --plan '" + plan.string() + "' --force", dir / "prune.log"), 0);
  ASSERT_EQ(tool("ablate '" + model.string() + "' --text '" + text.string() + "' --tokens 256 --ctx 128 --threads 1 --pairs none --given 2:0,2:2,2:5,2:7 -o '" +
                     ablation.string() + "'",
                 dir / "ablate.log"),
            0)
      << slurp(dir / "ablate.log");
  const auto measured = nlohmann::json::parse(slurp(ablation));
  EXPECT_EQ(measured.at("passes").get<int>(), 1 + 36);
  EXPECT_EQ(measured.at("given").size(), 4U);
  calibrate::ablation_session cut(calibrate::ablation_options{{pruned, text, 256, 128, 1}});
  const double l0 = measured.at("l0").get<double>();
  EXPECT_NEAR(l0, cut.mean_nll({}), 1e-5 * l0);
  // Unit 2·8 + 3 (layer 2, head 3) is the pruned model's layer 2, head 1; unit 4·8 + 6 stays head 6 of layer 4.
  const std::vector<calibrate::head_ref> layer2_head1{{2, 1}}, layer4_head6{{4, 6}};
  EXPECT_NEAR(measured.at("loss")[19].get<double>(), cut.mean_nll(layer2_head1), 1e-5 * l0);
  EXPECT_NEAR(measured.at("loss")[38].get<double>(), cut.mean_nll(layer4_head6), 1e-5 * l0);
  EXPECT_EQ(measured.at("delta")[16].get<double>(), 0.0);  // a given head
}

TEST_F(real_ablation, IterativePlansAreConsistentWithTheOneShotPlanAndThePrunedModel) {
  const auto ablation = dir / "ablation.json";
  const std::string m = "'" + model.string() + "'";
  ASSERT_EQ(tool("ablate " + m + " --text '" + text.string() + "' --tokens 256 --ctx 128 --threads 1 --pairs within-layer -o '" + ablation.string() + "'",
                 dir / "ablate.log"),
            0)
      << slurp(dir / "ablate.log");
  const std::string from = " --ablation '" + ablation.string() + "'";
  ASSERT_EQ(tool("ablation-plan " + m + from + " --target 0.25 --plan-out '" + (dir / "one_shot.json").string() + "'", dir / "one_shot.log"), 0);
  // One round from the same measurement is the one-shot plan.
  const std::string iterate = "ablation-prune " + m + " --text '" + text.string() + "' --tokens 256 --ctx 128 --threads 1 --pairs within-layer --first '" +
                              ablation.string() + "'";
  ASSERT_EQ(tool(iterate + " --target 0.25 --rounds 1 --plan-out '" + (dir / "one_round.json").string() + "'", dir / "one_round.log"), 0)
      << slurp(dir / "one_round.log");
  // The same plan and the same target summary.
  const auto one_shot = nlohmann::json::parse(slurp(dir / "one_shot.json"));
  EXPECT_EQ(nlohmann::json::parse(slurp(dir / "one_round.json")), one_shot);
  EXPECT_EQ(one_shot.at("target").at("unit"), "heads");
  // prune --game ablation reads the same file to the same plan, and records the price it used.
  ASSERT_EQ(tool("prune " + m + " '" + (dir / "direct.gguf").string() + "' --unit heads --target 0.25 --game ablation" + from + " --force --plan-out '" +
                     (dir / "direct.json").string() + "'",
                 dir / "direct.log"),
            0)
      << slurp(dir / "direct.log");
  EXPECT_EQ(nlohmann::json::parse(slurp(dir / "direct.json")).at("layers"), nlohmann::json::parse(slurp(dir / "one_shot.json")).at("layers"));
  const double price = number_after(slurp(dir / "direct.log"), "ablation loss model (nash): price ");
  EXPECT_GT(price, 0.0);
  ASSERT_EQ(tool("inspect '" + (dir / "direct.gguf").string() + "' --metadata", dir / "meta.log"), 0);
  EXPECT_NEAR(number_after(slurp(dir / "meta.log"), "general.pruning.lambda = "), price, 1e-5 * price);
  // Two rounds to 50 %: whole GQA steps (20 heads), and the loss it measured is the pruned model's.
  ASSERT_EQ(tool(iterate + " --target 0.5 --rounds 2 --plan-out '" + (dir / "two_rounds.json").string() + "'", dir / "two_rounds.log"), 0)
      << slurp(dir / "two_rounds.log");
  const auto log = slurp(dir / "two_rounds.log");
  EXPECT_NE(log.find("round 2: measured 30 heads given 10 removed"), std::string::npos) << log;
  EXPECT_NE(log.find("requested 20 heads, removing 20 in 2 round(s)"), std::string::npos) << log;
  const auto pruned = dir / "two_rounds.gguf";
  ASSERT_EQ(tool("prune " + m + " '" + pruned.string() + "' --plan '" + (dir / "two_rounds.json").string() + "' --force", dir / "apply.log"), 0);
  calibrate::ablation_session cut(calibrate::ablation_options{{pruned, text, 256, 128, 1}});
  const double direct = cut.mean_nll({});
  EXPECT_NEAR(number_after(log, "measured L of the plan "), direct, 1e-5 * direct);
}

TEST_F(real_ablation, BadGivenHeadsAndRoundsAreRefused) {
  const std::string ablate = "ablate '" + model.string() + "' --text '" + text.string() + "' --tokens 256 --pairs none -o '" + (dir / "x.json").string() + "'";
  const auto refused = [&](const std::string& args, const std::string& message) {
    const auto log = dir / "refused.log";
    const int status = tool(args, log);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 2) << args;
    EXPECT_NE(slurp(log).find(message), std::string::npos) << slurp(log);
  };
  refused(ablate + " --given 0:8", "nashprune: error: --given: head 0:8 out of range at index 0");
  refused(ablate + " --given 1:0,5:0", "--given: head 5:0 out of range at index 1");
  refused(ablate + " --given 1:0,2:3,1:0", "--given: head 1:0 repeated at index 2");
  refused(ablate + " --given 1-0", "--given: expected LAYER:HEAD, got '1-0'");
  EXPECT_FALSE(std::filesystem::exists(dir / "x.json"));
  const std::string iterate = "ablation-prune '" + model.string() + "' --text '" + text.string() + "' --plan-out '" + (dir / "p.json").string() + "'";
  refused(iterate + " --rounds 0", "--rounds must be at least 1");
  refused(iterate + " --pairs some", "--pairs must be all, within-layer or none");
  refused(iterate + " --method best", "--method must be nash, exact or greedy");
  refused(iterate + " --game output", "--game must be ablation or none on the loss model of nashprune ablate, got 'output'");
  refused(iterate + " --selector best", "--selector must be greedy or exact, got 'best'");
  refused("prune '" + model.string() + "' --dry-run --unit heads --game ablation", "--game ablation and --ablation FILE go together");
}

}  // namespace
