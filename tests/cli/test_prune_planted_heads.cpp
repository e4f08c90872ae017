// `nashprune prune` on the synthetic model with planted duplicate and near-zero
// heads (gguf/synthetic.hpp), asked to remove as many heads as were planted,
// removes exactly those (either twin of a duplicate pair), with the pipeline it
// recommends without calibration and with the exact 0/1 selector alone; the
// written model re-reads with the planned shape.
#include <gtest/gtest.h>

#include <gguf/llama_model.hpp>
#include <gguf/synthetic.hpp>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <fstream>
#include <set>
#include <string>
#include <utility>

#include "gguf_test_files.hpp"

namespace {

using head = std::pair<std::int64_t, std::int64_t>;

struct planted_heads : ::testing::TestWithParam<std::string> {
  gguf_test::scratch_dir dir;
  gguf::synthetic_options options;
  std::filesystem::path model = dir / "synthetic.gguf";
  std::vector<gguf::planted_head> planted = gguf::generate_synthetic(model, options, {});
};

TEST_P(planted_heads, AreExactlyTheHeadsRemoved) {
  const auto output = dir / "pruned.gguf";
  const auto plan = dir / "plan.json";
  const double target = static_cast<double>(planted.size()) / static_cast<double>(options.n_layer * options.n_head);
  const std::string command = std::string(NASHPRUNE_TOOL) + " prune '" + model.string() + "' '" + output.string() +
                              "' --unit heads --target " + std::to_string(target) + " --plan-out '" + plan.string() + "' " +
                              GetParam() + " > '" + (dir / "log.txt").string() + "'";
  ASSERT_EQ(std::system(command.c_str()), 0) << command;

  std::ifstream in(plan);
  const auto doc = nlohmann::json::parse(in);
  std::set<head> removed;
  for (const auto& l : doc.at("layers")) {
    std::set<std::int64_t> kept;
    for (const auto& h : l.at("q_heads")) kept.insert(h.get<std::int64_t>());
    for (std::int64_t h = 0; h < options.n_head; ++h) {
      if (!kept.contains(h)) removed.insert({l.at("layer").get<std::int64_t>(), h});
    }
  }
  EXPECT_EQ(removed.size(), planted.size());
  for (const auto& p : planted) {
    EXPECT_TRUE(removed.contains({p.layer, p.head}) || (p.duplicate && removed.contains({p.layer, p.twin})))
        << "planted layer " << p.layer << " head " << p.head << " stayed";
  }
  const auto shape = gguf::llama_shape::read(gguf::reader::open(output));
  std::int64_t heads_left = 0;
  for (const auto& l : shape.layers) heads_left += l.n_head;
  EXPECT_EQ(heads_left, options.n_layer * options.n_head - static_cast<std::int64_t>(planted.size()));
}

INSTANTIATE_TEST_SUITE_P(selections, planted_heads, ::testing::Values("", "--game none --selector exact"));

}  // namespace
