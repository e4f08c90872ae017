// `nashprune prune --calibration STATS --structures layers|attn-blocks|mlp-blocks`
// scores whole layers and blocks by the influence 1 - cos(x_in, x_out) measured in
// STATS: with planted influences the block of least influence goes, whatever the
// weights say. Each structure is checked with two plants in different layers, so
// a choice made from the weights cannot pass both; the H-GSP priors (which also
// read the influence) are off (--temperature 0), so only the score can do it.
#include <gtest/gtest.h>

#include <calibrate/calibration_stats.hpp>
#include <gguf/prune_plan.hpp>
#include <gguf/synthetic.hpp>
#include <nashprune/attention_items.hpp>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gguf_test_files.hpp"
#include "synthetic_model_test.hpp"

namespace {

enum class part { layer, attention, mlp };

struct block_influence_prune : gguf_test::synthetic_model_test {
  // Statistics of the right shape whose `which` influence is 0.5 everywhere but 0.1 in `lowest`.
  std::filesystem::path planted(part which, std::int64_t lowest) const {
    auto s = tool_runs::neutral_stats(shape);
    auto& r = s.layers[static_cast<std::size_t>(lowest)];
    (which == part::layer ? r.layer_influence : which == part::attention ? r.attn_influence : r.mlp_influence) = 0.1;
    const auto path = dir / ("stats_" + std::to_string(static_cast<int>(which)) + "_" + std::to_string(lowest) + ".gguf");
    calibrate::write_stats(path, s, true);
    return path;
  }

  // The plan prune chooses with `args`; the layers it removes the `which` block of.
  std::vector<std::int64_t> removed(part which, const std::string& args) const {
    const auto plan = dir / "plan.json";
    const std::string command = std::string(NASHPRUNE_TOOL) + " prune '" + model.string() + "' --dry-run --plan-out '" + plan.string() + "' " + args + " > /dev/null";
    EXPECT_EQ(std::system(command.c_str()), 0) << command;
    std::ifstream in(plan);
    const auto doc = nlohmann::json::parse(in);
    std::vector<std::int64_t> out;
    for (const auto& l : doc.at("layers")) {
      const bool gone = which == part::layer ? !l.at("keep").get<bool>() : which == part::attention ? l.at("q_heads").empty() : l.at("channels").empty();
      if (gone) out.push_back(l.at("layer").get<std::int64_t>());
    }
    return out;
  }

  // --target (fraction of parameters) that fits one MLP block and not two.
  [[nodiscard]] std::string one_mlp_block() const {
    const auto total = gguf::totals(gguf::reader::open(model).tensors()).parameters;
    const auto block = shape.layers[0].n_ff * nashprune::mlp_channel_cost(shape.n_embd);
    std::ostringstream s;
    s << 1.5 * static_cast<double>(block) / static_cast<double>(total);
    return s.str();
  }
};

TEST_F(block_influence_prune, TheLayerOfLeastInfluenceGoes) {
  ASSERT_EQ(shape.n_layer(), 4);
  for (const std::int64_t lowest : {1, 3}) {
    const auto stats = planted(part::layer, lowest);
    EXPECT_EQ(removed(part::layer, "--structures layers --unit heads --target 0.25 --temperature 0 --calibration '" + stats.string() + "'"),
              std::vector<std::int64_t>{lowest});
  }
}

TEST_F(block_influence_prune, TheAttentionBlockOfLeastInfluenceGoes) {
  for (const std::int64_t lowest : {0, 2}) {
    const auto stats = planted(part::attention, lowest);
    EXPECT_EQ(removed(part::attention, "--structures attn-blocks --unit heads --target 0.25 --temperature 0 --calibration '" + stats.string() + "'"),
              std::vector<std::int64_t>{lowest});
  }
}

TEST_F(block_influence_prune, TheMlpBlockOfLeastInfluenceGoes) {
  for (const std::int64_t lowest : {1, 2}) {
    const auto stats = planted(part::mlp, lowest);
    EXPECT_EQ(removed(part::mlp, "--structures mlp-blocks --target " + one_mlp_block() + " --temperature 0 --calibration '" + stats.string() + "'"),
              std::vector<std::int64_t>{lowest});
  }
}

// Mixed with finer items the influences are rescaled, not dropped: a layer of zero
// influence is the cheapest item of all and goes first.
TEST_F(block_influence_prune, MixedWithHeadsAZeroInfluenceLayerGoesFirst) {
  for (const std::int64_t lowest : {2, 3}) {
    auto stats_path = planted(part::layer, lowest);
    auto s = calibrate::read_stats(stats_path);
    s.layers[static_cast<std::size_t>(lowest)].layer_influence = 0;
    calibrate::write_stats(stats_path, s, true);
    EXPECT_EQ(removed(part::layer, "--structures layers,heads --unit heads --target 0.25 --game none --temperature 0 --calibration '" + stats_path.string() + "'"),
              std::vector<std::int64_t>{lowest});
  }
}

}  // namespace
