#include <nashprune/attention_items.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <random>
#include <stdexcept>
#include <vector>

#include "scalar_test_support.hpp"

namespace np = nashprune;
using np::head_granularity;
using np::item_kind;

namespace {

template <typename T>
class AttentionItemsTyped : public ::testing::Test {};
using nashprune_test::scalar_types;
TYPED_TEST_SUITE(AttentionItemsTyped, scalar_types);
using nashprune_test::vec;

// llama-pruning-toolkit.en.md: LLaMA-3-8B group = 4 q heads + k + v + 4 o column blocks.
TEST(AttentionItems, Llama3GroupAndChannelCosts) {
  const np::attention_geometry llama(32, 8, 128);
  const Eigen::VectorXd scores = Eigen::VectorXd::LinSpaced(32, 1.0, 32.0);
  const auto groups = np::attention_items<double>(llama, head_granularity::whole_groups, 3, scores, 4096);
  ASSERT_EQ(groups.size(), 8U);
  EXPECT_EQ(groups[0].cost, 4096 * (4 * 128 + 128 + 128 + 4 * 128));
  EXPECT_EQ(groups[0].layer, 3);
  EXPECT_DOUBLE_EQ(groups[1].importance, 5.0 + 6.0 + 7.0 + 8.0);
  EXPECT_EQ(np::mlp_channel_cost(4096), 12288);
  const auto steps = np::attention_items<double>(llama, head_granularity::heads_per_group, 0, scores, 4096);
  ASSERT_EQ(steps.size(), 3U);  // the last head of every group is never offered
  EXPECT_EQ(steps[0].cost, 8 * 4096 * 256);
  EXPECT_DOUBLE_EQ(steps[0].importance, 1 + 5 + 9 + 13 + 17 + 21 + 25 + 29);
}

TYPED_TEST(AttentionItemsTyped, SelectionsMapBackToValidPlans) {
  using Scalar = TypeParam;
  std::mt19937 rng(13);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  const std::vector<std::pair<np::attention_geometry, head_granularity>> cases{
      {np::attention_geometry(8, 2, 4), head_granularity::whole_groups},
      {np::attention_geometry(8, 2, 4), head_granularity::heads_per_group},
      {np::attention_geometry(6, 6, 4, 2), head_granularity::single_heads},
      {np::attention_geometry(12, 3, 2), head_granularity::heads_per_group}};
  for (int trial = 0; trial < 200; ++trial) {
    const auto& [geometry, granularity] = cases[static_cast<std::size_t>(trial) % cases.size()];
    const int layers = 3;
    std::vector<vec<Scalar>> scores;
    std::vector<np::selection_item<Scalar>> items;
    for (int l = 0; l < layers; ++l) {
      vec<Scalar> s(geometry.n_head());
      for (std::int64_t h = 0; h < geometry.n_head(); ++h) s[h] = static_cast<Scalar>(u(rng));
      scores.push_back(s);
      const auto layer_items = np::attention_items<Scalar>(geometry, granularity, l, s, 16);
      items.insert(items.end(), layer_items.begin(), layer_items.end());
    }
    np::selection_constraints c;
    c.min_kept = {{item_kind::attention_group, 1, -1}};
    if (granularity == head_granularity::single_heads) c.min_kept.push_back({item_kind::q_head, 1, -1});
    std::int64_t total = 0;
    for (const auto& it : items) total += it.cost;
    const auto r = np::select_greedy<Scalar>(items, std::uniform_int_distribution<std::int64_t>(0, total)(rng), c);
    std::vector<np::selection_item<Scalar>> removed;
    for (const auto p : r.pruned) removed.push_back(items[static_cast<std::size_t>(p)]);
    for (int l = 0; l < layers; ++l) {
      const auto plan = np::attention_plan<Scalar>(geometry, granularity, l, scores[static_cast<std::size_t>(l)], removed);
      const auto counts = geometry.validate(plan);  // throws if not runnable
      // The removed query heads carry exactly the removed items' importance.
      double removed_items = 0, removed_heads = 0;
      for (const auto& it : removed) removed_items += it.layer == l ? static_cast<double>(it.importance) : 0.0;
      for (std::int64_t h = 0; h < geometry.n_head(); ++h) {
        if (!std::binary_search(plan.q_heads.begin(), plan.q_heads.end(), h)) removed_heads += static_cast<double>(scores[static_cast<std::size_t>(l)][h]);
      }
      EXPECT_NEAR(removed_heads, removed_items, 1e-5) << "trial " << trial << " layer " << l;
      EXPECT_GE(counts.n_head_kv, 1);
    }
  }
}

TEST(AttentionItems, BadInput) {
  const np::attention_geometry gqa(8, 2, 4);
  Eigen::VectorXd scores = Eigen::VectorXd::Ones(8), short_scores(3);
  const auto expect = [](auto&& call, const char* fragment) { nashprune_test::expect_error_containing(call, fragment); };
  expect([&] { (void)np::attention_items<double>(gqa, head_granularity::single_heads, 0, scores, 16); }, "single_heads needs");
  expect([&] { (void)np::attention_items<double>(gqa, head_granularity::whole_groups, 0, short_scores, 16); }, "head_scores");
  expect([&] { (void)np::attention_items<double>(gqa, head_granularity::whole_groups, -1, scores, 16); }, "layer");
  expect([&] { (void)np::attention_items<double>(gqa, head_granularity::whole_groups, 0, scores, 0); }, "n_embd");
  scores[5] = -1;
  expect([&] { (void)np::attention_items<double>(gqa, head_granularity::whole_groups, 0, scores, 16); }, "index 5");
  scores[5] = 1;
  const std::vector<np::selection_item<double>> too_many{{0, item_kind::q_head, 0, 1.0, 1}, {0, item_kind::q_head, 1, 1.0, 1},
                                                         {0, item_kind::q_head, 2, 1.0, 1}, {0, item_kind::q_head, 3, 1.0, 1}};
  expect([&] { (void)np::attention_plan<double>(gqa, head_granularity::heads_per_group, 0, scores, too_many); }, "without query heads");
  const std::vector<np::selection_item<double>> all_groups{{0, item_kind::attention_group, 0, 1.0, 1}, {0, item_kind::attention_group, 1, 1.0, 1}};
  expect([&] { (void)np::attention_plan<double>(gqa, head_granularity::whole_groups, 0, scores, all_groups); }, "empty");
}

}  // namespace
