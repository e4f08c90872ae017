// `nashprune prune --layer-rates` and `--depth-preset` on a generated model with
// planted layer importances (calibration statistics whose measured layer influence
// is planted, or an ablation file of whole layers): the important layer loses fewer
// heads with inverse rates and more with proportional ones, every layer loses its
// groups of least score (checked against --stats by a plain loop), the head count
// meets the target; with --structures groups,mlp every layer also loses its rate of
// MLP channels, a --unit params target is met by heads and channels together, and
// the refit and bias compensations apply to the plan; the depth presets drop the
// planted layers.
#include <gtest/gtest.h>

#include <calibrate/calibration_stats.hpp>
#include <gguf/synthetic.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "gguf_test_files.hpp"
#include "synthetic_model_test.hpp"

namespace {

struct layer_importance_prune : gguf_test::synthetic_model_test {
  // Statistics of the right shape whose layer influence is `influence`.
  std::filesystem::path planted(const std::vector<double>& influence) const {
    auto s = tool_runs::neutral_stats(shape);
    for (std::size_t l = 0; l < s.layers.size(); ++l) s.layers[l].layer_influence = influence[l];
    const auto path = dir / "stats.gguf";
    calibrate::write_stats(path, s, true);
    return path;
  }

  struct outcome {
    std::vector<std::int64_t> removed_heads;     // per layer
    std::vector<std::int64_t> removed_channels;  // per layer
    std::vector<bool> kept_layer;
    nlohmann::json stats;
    nlohmann::json target;  // the plan file's target summary
  };

  outcome run(const std::string& args) const {
    const auto plan = dir / "plan.json";
    const auto stats = dir / "heads.json";
    std::filesystem::remove(stats);
    const std::string command = std::string(NASHPRUNE_TOOL) + " prune '" + model.string() + "' --dry-run --compensate none --plan-out '" +
                                plan.string() + "' --stats '" + stats.string() + "' " + args + " > /dev/null";
    EXPECT_EQ(std::system(command.c_str()), 0) << command;
    std::ifstream in(plan);
    const auto doc = nlohmann::json::parse(in);
    outcome out;
    for (const auto& l : doc.at("layers")) {
      const auto n = shape.layers[static_cast<std::size_t>(l.at("layer").get<std::int64_t>())].n_head;
      out.removed_heads.push_back(n - static_cast<std::int64_t>(l.at("q_heads").size()));
      out.kept_layer.push_back(l.at("keep").get<bool>());
      const auto n_ff = shape.layers[static_cast<std::size_t>(l.at("layer").get<std::int64_t>())].n_ff;
      out.removed_channels.push_back(n_ff - static_cast<std::int64_t>(l.at("channels").size()));
    }
    if (doc.contains("target")) out.target = doc.at("target");
    if (std::filesystem::exists(stats)) out.stats = nlohmann::json::parse(std::ifstream(stats));
    return out;
  }
};

std::int64_t sum(const std::vector<std::int64_t>& v) {
  std::int64_t s = 0;
  for (const auto x : v) s += x;
  return s;
}

TEST_F(layer_importance_prune, InverseSparesTheImportantLayerProportionalPrunesItMost) {
  ASSERT_EQ(shape.n_layer(), 4);
  for (const std::int64_t important : {1, 2}) {
    std::vector<double> influence(4, 0.1);
    influence[static_cast<std::size_t>(important)] = 0.9;
    const auto stats = planted(influence);
    const std::string common = " --unit heads --target 0.25 --structures groups --alpha 2 --min-rate 0 --max-rate 0.75 --calibration '" + stats.string() + "'";
    const auto inverse = run("--layer-rates inverse" + common);
    const auto proportional = run("--layer-rates proportional" + common);
    const auto uniform = run("--layer-rates uniform" + common);
    EXPECT_EQ(sum(inverse.removed_heads), 8);
    EXPECT_EQ(sum(proportional.removed_heads), 8);
    EXPECT_EQ(uniform.removed_heads, (std::vector<std::int64_t>{2, 2, 2, 2}));
    for (std::int64_t l = 0; l < 4; ++l) {
      if (l == important) continue;
      EXPECT_LT(inverse.removed_heads[static_cast<std::size_t>(important)], inverse.removed_heads[static_cast<std::size_t>(l)]);
      EXPECT_GT(proportional.removed_heads[static_cast<std::size_t>(important)], proportional.removed_heads[static_cast<std::size_t>(l)]);
    }
  }
}

// Within each layer the groups go by score: no kept group scores below a removed one.
TEST_F(layer_importance_prune, EachLayerLosesItsGroupsOfLeastScore) {
  const auto stats = planted({0.1, 0.9, 0.3, 0.2});
  const auto out = run("--layer-rates inverse --unit heads --target 0.25 --structures groups --score wanda --max-rate 0.75 --calibration '" +
                       stats.string() + "'");
  ASSERT_TRUE(out.stats.contains("heads"));
  std::map<std::pair<std::int64_t, std::int64_t>, std::pair<double, bool>> groups;  // (layer, group) -> (score, removed)
  const std::int64_t group_size = shape.layers[0].n_head / shape.layers[0].n_head_kv;
  std::int64_t pruned = 0;
  for (const auto& h : out.stats.at("heads")) {
    auto& g = groups[{h.at("layer").get<std::int64_t>(), h.at("head").get<std::int64_t>() / group_size}];
    g.first += h.at("importance").get<double>();
    g.second = h.at("pruned").get<bool>();
    pruned += h.at("pruned").get<bool>() ? 1 : 0;
  }
  EXPECT_EQ(pruned, 8);
  int compared = 0;
  for (const auto& [a, ga] : groups) {
    for (const auto& [b, gb] : groups) {
      if (a.first != b.first || !ga.second || gb.second) continue;
      EXPECT_LE(ga.first, gb.first) << "layer " << a.first << ": removed group " << a.second << " scores above kept group " << b.second;
      ++compared;
    }
  }
  EXPECT_GT(compared, 0);
}

TEST_F(layer_importance_prune, AnAblationFileOfLayersScoresThem) {
  const auto data = std::filesystem::path(NASHPRUNE_CLI_DATA) / "layer_ablation.json";  // delta 5.0, 0.1, 0.2, 0.3
  const auto out = run("--layer-rates inverse --unit heads --target 0.25 --structures groups --min-rate 0 --max-rate 0.75 --layer-importance '" +
                       data.string() + "'");
  EXPECT_EQ(sum(out.removed_heads), 8);
  for (std::size_t l = 1; l < 4; ++l) EXPECT_LT(out.removed_heads[0], out.removed_heads[l]);
}

// --structures groups,mlp with a head target: the heads are the groups-only plan's,
// and each layer loses its rate of MLP channels (the floor or the ceiling of
// rate × n_ff), so the important layer loses fewer with inverse rates.
TEST_F(layer_importance_prune, GroupsAndMlpLoseEachLayersRateOfChannels) {
  const auto stats = planted({0.1, 0.9, 0.1, 0.1});
  const std::string common = " --unit heads --target 0.25 --alpha 2 --min-rate 0 --max-rate 0.75 --calibration '" + stats.string() + "'";
  const auto groups = run("--layer-rates inverse --structures groups" + common);
  const auto inverse = run("--layer-rates inverse --structures groups,mlp" + common);
  EXPECT_EQ(inverse.removed_heads, groups.removed_heads);
  EXPECT_EQ(groups.removed_channels, (std::vector<std::int64_t>(4, 0)));
  for (const std::size_t l : {0, 2, 3}) EXPECT_LT(inverse.removed_channels[1], inverse.removed_channels[l]);
  const auto uniform = run("--layer-rates uniform --structures groups,mlp" + common);
  for (std::size_t l = 0; l < 4; ++l) {
    const double wanted = 0.25 * static_cast<double>(shape.layers[l].n_ff);
    EXPECT_GE(static_cast<double>(uniform.removed_channels[l]), std::floor(wanted)) << "layer " << l;
    EXPECT_LE(static_cast<double>(uniform.removed_channels[l]), std::ceil(wanted)) << "layer " << l;
  }
  // heads,mlp: the same heads from every group, and the same channels.
  const auto heads = run("--layer-rates uniform --structures heads,mlp" + common);
  EXPECT_EQ(sum(heads.removed_heads), 8);
  EXPECT_EQ(heads.removed_channels, uniform.removed_channels);
}

// --unit params: the rates are scaled until the heads and channels removed are the
// target's share of the parameters (within one channel step, a whole unit).
TEST_F(layer_importance_prune, AParameterTargetIsMetByHeadsAndChannelsTogether) {
  const auto stats = planted({0.1, 0.9, 0.3, 0.2});
  for (const std::string strategy : {"inverse", "uniform"}) {
    const auto out = run("--layer-rates " + strategy + " --unit params --target 0.15 --structures groups,mlp --calibration '" + stats.string() + "'");
    ASSERT_EQ(out.target.at("unit"), "params");
    const auto requested = out.target.at("requested").get<std::int64_t>();
    const auto removed = out.target.at("removed").get<std::int64_t>();
    EXPECT_LE(removed, requested) << strategy;
    EXPECT_GT(removed, requested - 3 * shape.n_embd * 32) << strategy;
    EXPECT_GT(sum(out.removed_heads), 0) << strategy;
    EXPECT_GT(sum(out.removed_channels), 0) << strategy;
  }
}

// The plan goes through the same compensation as every other plan: refit and bias
// report each attn_output and ffn_down whose inputs went.
TEST_F(layer_importance_prune, RefitAndBiasCompensateTheLayerRatesPlan) {
  const auto stats = dir / "moments.gguf";
  tool_runs::write_planted_stats(model, stats);
  for (const std::string kind : {"refit", "bias"}) {
    const auto out = dir / ("pruned-" + kind + ".gguf");
    const auto r = tool_runs::run_tool("prune '" + model.string() + "' '" + out.string() +
                                           "' --layer-rates uniform --unit params --target 0.15 --structures groups,mlp --calibration '" +
                                           stats.string() + "' --compensate " + kind,
                                       dir / ("prune-" + kind + ".log"));
    ASSERT_EQ(r.code, 0) << r.output;
    EXPECT_NE(r.output.find("compensation " + kind), std::string::npos) << r.output;
    // Every layer loses channels; the groups' rounding leaves some layer its heads.
    std::int64_t attention_maps = 0;
    for (std::int64_t l = 0; l < shape.n_layer(); ++l) {
      EXPECT_NE(r.output.find("layer " + std::to_string(l) + " ffn_down.weight: "), std::string::npos) << "layer " << l << "\n" << r.output;
      attention_maps += r.output.find("layer " + std::to_string(l) + " attn_output.weight: ") != std::string::npos ? 1 : 0;
    }
    EXPECT_GT(attention_maps, 0) << r.output;
    EXPECT_TRUE(std::filesystem::exists(out));
  }
}

TEST_F(layer_importance_prune, DepthPresetsDropThePlantedLayers) {
  const auto stats = planted({0.05, 0.9, 0.2, 0.1});
  const std::string given = " --calibration '" + stats.string() + "'";
  // Layer 0 has the least influence but is kept (it reads the raw embeddings) unless --freeze-first says otherwise.
  EXPECT_EQ(run("--depth-preset 25" + given).kept_layer, (std::vector<bool>{true, true, true, false}));
  EXPECT_EQ(run("--depth-preset 25 --freeze-first 0" + given).kept_layer, (std::vector<bool>{false, true, true, true}));
  EXPECT_EQ(run("--depth-preset 50" + given).kept_layer, (std::vector<bool>{true, true, false, false}));
  const auto contiguous = planted({0.05, 0.3, 0.9, 0.1});
  const std::string block = " --calibration '" + contiguous.string() + "'";
  EXPECT_EQ(run("--depth-preset 50 --depth-selection any" + block).kept_layer, (std::vector<bool>{true, false, true, false}));
  EXPECT_EQ(run("--depth-preset 50 --depth-selection contiguous" + block).kept_layer, (std::vector<bool>{true, true, false, false}));
}

}  // namespace
