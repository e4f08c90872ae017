// `nashprune prune --stats FILE --plan-out FILE` record the requested and achieved
// target beside the heads and the plan: the same figures the printed target line
// gives, and the achieved counts agree with the plan written.
#include <gtest/gtest.h>

#include <gguf/gguf.hpp>
#include <gguf/prune_plan.hpp>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <fstream>
#include <string>

#include "gguf_test_files.hpp"

namespace {

nlohmann::json read_json(const std::filesystem::path& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

TEST(PruneSummaryFiles, StatsAndPlanCarryTheRequestedAndAchievedTarget) {
  gguf_test::scratch_dir dir;
  const auto model = std::filesystem::path(NASHPRUNE_DATA_DIR) / "stories260K.gguf";
  const auto out = dir / "out.gguf";
  const std::string command = std::string(NASHPRUNE_TOOL) + " prune '" + model.string() + "' '" + out.string() +
                              "' --unit heads --target 0.25 --stats '" + (dir / "stats.json").string() + "' --plan-out '" +
                              (dir / "plan.json").string() + "' > /dev/null";
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
  const auto stats = read_json(dir / "stats.json");
  const auto plan = read_json(dir / "plan.json");
  for (const auto& doc : {stats, plan}) {
    EXPECT_EQ(doc.at("target").at("unit"), "heads");
    EXPECT_DOUBLE_EQ(doc.at("target").at("fraction").get<double>(), 0.25);
    EXPECT_EQ(doc.at("target").at("requested"), 10);  // 25 % of 40 heads
    EXPECT_EQ(doc.at("head_count").at("before"), 40);
    EXPECT_EQ(doc.at("target").at("removed").get<int>(), 40 - doc.at("head_count").at("after").get<int>());
  }
  // The achieved figures are the written model's.
  const auto written = gguf::reader::open(out);
  const auto totals = gguf::totals(written.tensors());
  EXPECT_EQ(plan.at("after").at("parameters").get<std::int64_t>(), totals.parameters);
  EXPECT_EQ(plan.at("after").at("tensor_bytes").get<std::uint64_t>(), totals.bytes);
  std::int64_t kept_heads = 0;
  for (const auto& l : plan.at("layers")) kept_heads += static_cast<std::int64_t>(l.at("q_heads").size());
  EXPECT_EQ(plan.at("head_count").at("after").get<std::int64_t>(), kept_heads);
  std::int64_t pruned = 0;
  for (const auto& h : stats.at("heads")) pruned += h.at("pruned").get<bool>() ? 1 : 0;
  EXPECT_EQ(stats.at("target").at("removed").get<std::int64_t>(), pruned);
}

// ablation-plan's plan file carries the summary prune's has: for the same loss
// model and target, prune --game ablation writes the same document.
TEST(PruneSummaryFiles, AblationPlanWritesTheSummaryPruneWrites) {
  gguf_test::scratch_dir dir;
  const auto model = std::filesystem::path(NASHPRUNE_DATA_DIR) / "stories260K.gguf";
  // A loss model of stories260K's 40 heads (5 layers of 8): head h of layer l costs
  // (l + 1) * (h + 1) / 100, one pair interacts.
  nlohmann::json ablation = {{"version", 1}, {"l0", 1.5}, {"units", nlohmann::json::array()}, {"delta", nlohmann::json::array()},
                             {"interaction", nlohmann::json::array()}};
  for (int l = 0; l < 5; ++l) {
    for (int h = 0; h < 8; ++h) {
      ablation["units"].push_back({l, h});
      ablation["delta"].push_back((l + 1) * (h + 1) / 100.0);
    }
  }
  for (int i = 0; i < 40; ++i) {
    std::vector<double> row(40, 0.0);
    if (i == 1) row[2] = -0.01;
    if (i == 2) row[1] = -0.01;
    ablation["interaction"].push_back(row);
  }
  std::ofstream(dir / "ablation.json") << ablation.dump();
  const std::string common = " '" + model.string() + "' --ablation '" + (dir / "ablation.json").string() + "' --target 0.25 ";
  const std::string plan_command = std::string(NASHPRUNE_TOOL) + " ablation-plan" + common + "-o '" + (dir / "ablation-plan.json").string() +
                                   "' > '" + (dir / "ablation-plan.log").string() + "'";
  ASSERT_EQ(std::system(plan_command.c_str()), 0) << plan_command;
  const std::string prune_command = std::string(NASHPRUNE_TOOL) + " prune" + common + "--unit heads --game ablation --dry-run --plan-out '" +
                                    (dir / "prune.json").string() + "' > /dev/null";
  ASSERT_EQ(std::system(prune_command.c_str()), 0) << prune_command;
  const auto from_plan = read_json(dir / "ablation-plan.json");
  EXPECT_EQ(from_plan.at("target").at("requested"), 10);
  EXPECT_EQ(from_plan.at("target").at("removed"), 10);
  EXPECT_EQ(from_plan.at("head_count").at("after"), 30);
  EXPECT_EQ(from_plan, read_json(dir / "prune.json"));
  std::ifstream log(dir / "ablation-plan.log");
  const std::string printed((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  EXPECT_NE(printed.find("target 25.0 % of heads: requested 10, removed 10; heads 40 -> 30"), std::string::npos) << printed;
}

}  // namespace
