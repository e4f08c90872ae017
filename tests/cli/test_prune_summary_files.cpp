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

}  // namespace
