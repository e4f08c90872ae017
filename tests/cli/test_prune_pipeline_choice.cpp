// Which pipeline `nashprune prune` runs when options are given that the
// recommended one would ignore: a score, an imatrix or priors run the scored
// pipeline (--game none), the cosine game's options run the cosine game, and the
// printed pipeline line says so; the plan is then the one the explicit --game
// gives. A --game given beside an option it ignores is refused (exit 2).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <string>

#include "gguf_test_files.hpp"
#include "tool_runs.hpp"

namespace {

struct pipeline_choice : ::testing::Test {
  gguf_test::scratch_dir dir;
  std::filesystem::path model = std::filesystem::path(NASHPRUNE_DATA_DIR) / "stories260K.gguf";
  std::filesystem::path stats = dir / "stats.gguf";
  int runs = 0;

  void SetUp() override { tool_runs::write_planted_stats(model, stats); }

  // prune --dry-run of 20 % of the parameters over heads and MLP channels with the
  // planted calibration, writing the plan to `plan` when given.
  tool_runs::run prune(const std::string& args, const std::string& plan = "") {
    const std::string plan_out = plan.empty() ? "" : " --plan-out '" + (dir / plan).string() + "'";
    return tool_runs::run_tool("prune '" + model.string() + "' --dry-run --structures heads,mlp --target 0.2 --calibration '" +
                                   stats.string() + "'" + plan_out + " " + args,
                               dir / ("run" + std::to_string(++runs) + ".log"));
  }

  nlohmann::json layers_of(const std::string& plan) const {
    std::ifstream in(dir / plan);
    return nlohmann::json::parse(in).at("layers");
  }
};

TEST_F(pipeline_choice, TheRecommendedObsGameRunsWhenNothingItIgnoresIsGiven) {
  const auto run = prune("");
  EXPECT_EQ(run.code, 0) << run.output;
  EXPECT_NE(run.output.find("\npipeline: obs game + refit (recommended)\n"), std::string::npos) << run.output;
}

TEST_F(pipeline_choice, AScoreRunsTheScoredPipelineAndSaysWhy) {
  const auto given = prune("--score wanda", "given.json");
  ASSERT_EQ(given.code, 0) << given.output;
  EXPECT_NE(given.output.find("\npipeline: wanda + refit (--score wanda: the recommended obs game + refit uses no importance score, "
                              "so the scored pipeline runs)\n"),
            std::string::npos)
      << given.output;
  const auto explicit_game = prune("--score wanda --game none", "explicit.json");
  ASSERT_EQ(explicit_game.code, 0) << explicit_game.output;
  EXPECT_NE(explicit_game.output.find("\npipeline: wanda + refit\n"), std::string::npos) << explicit_game.output;
  EXPECT_EQ(layers_of("given.json"), layers_of("explicit.json"));
  // The obs plan differs, so the comparison above tells the pipelines apart.
  ASSERT_EQ(prune("", "obs.json").code, 0);
  EXPECT_NE(layers_of("given.json"), layers_of("obs.json"));
}

TEST_F(pipeline_choice, PriorsRunTheScoredPipeline) {
  const auto run = prune("--temperature 1");
  EXPECT_EQ(run.code, 0) << run.output;
  EXPECT_NE(run.output.find("\npipeline: magnitude, priors 1 + refit (--temperature/--tau: the recommended obs game + refit"),
            std::string::npos)
      << run.output;
  // Priors off is what the obs game does anyway: nothing is ignored.
  const auto off = prune("--temperature 0");
  EXPECT_NE(off.output.find("\npipeline: obs game + refit (recommended)\n"), std::string::npos) << off.output;
}

TEST_F(pipeline_choice, TheCosineGamesOptionsRunTheCosineGame) {
  for (const std::string option : {"--lambda 0.3", "--threshold 0.2", "--iterations 50"}) {
    const auto given = prune(option, "given.json");
    ASSERT_EQ(given.code, 0) << given.output;
    EXPECT_NE(given.output.find("\npipeline: magnitude + cosine game + refit (--lambda/--threshold/--iterations tune the cosine game, "
                                "which runs in place of the recommended obs game + refit)\n"),
              std::string::npos)
        << given.output;
    ASSERT_EQ(prune(option + " --game cosine", "explicit.json").code, 0);
    EXPECT_EQ(layers_of("given.json"), layers_of("explicit.json")) << option;
  }
}

TEST_F(pipeline_choice, AGameThatIgnoresAnOptionGivenIsRefused) {
  const auto refused = [this](const std::string& args, const std::string& message) {
    const auto run = prune(args);
    EXPECT_EQ(run.code, 2) << run.output;
    EXPECT_NE(run.output.find("\nnashprune: error: " + message), std::string::npos) << run.output;
  };
  refused("--game obs --score wanda", "--score wanda: --game obs uses no importance score or H-GSP priors; drop it, or use --game none or cosine\n");
  refused("--game obs --score activation --temperature 2",
          "--score activation, --temperature/--tau: --game obs uses no importance score or H-GSP priors; drop them");
  refused("--game none --lambda 0.3",
          "--lambda, --threshold and --iterations tune the cosine game; --game none ignores them: drop them or use --game cosine\n");
  refused("--game none --compensate none --damping 0.01", "--damping is the ridge of the refit, and nothing is refit here");
}

}  // namespace
