// Tests of nashprune/lambda_search.hpp: λ found for every reachable count,
// per layer and over all layers; unreachable targets said so.
#include <gtest/gtest.h>

#include <algorithm>
#include <nashprune/lambda_search.hpp>
#include <stdexcept>
#include <vector>

#include "nash_test_games.hpp"

namespace {

using nashprune::prune_target;
using nashprune_test::owned_game;
using nashprune_test::random_psd_game;

std::int64_t pruned_at(const owned_game<double>& g, double lambda,
                       const nashprune::nash_decision_options<double>& decisions = {}) {
  const auto game = nashprune::make_nash_game(g.importance, g.redundancy, lambda);
  return std::int64_t(
      nashprune::seed_pruned_heads(nashprune::active_set_newton<double>().solve(game).s, decisions).size());
}

TEST(LambdaSearch, HitsEveryCountOfOneLayerUpToTheCap) {
  const auto g = random_psd_game<double>(16, 21, 0.5);
  const std::vector<nashprune::nash_game<double>> layers{g.view()};
  const nashprune::lambda_search_options<double> options{{0.1, 1, 1.0}};  // cap: 15 of 16
  int hit = 0;
  for (std::int64_t target = 0; target <= 15; ++target) {
    const auto result = nashprune::search_lambda_per_layer<double>(layers, prune_target::heads(target), options);
    ASSERT_EQ(result.size(), 1u);
    const auto& r = result.front();
    EXPECT_EQ(r.requested, target);
    EXPECT_TRUE(r.reachable);
    EXPECT_EQ(r.achieved, pruned_at(g, r.lambda, options.decisions)) << "the count reported is the count at λ";
    EXPECT_EQ(r.reached, r.achieved == target);
    EXPECT_LE(std::abs(r.achieved - target), 1);
    EXPECT_LE(r.solves, options.max_solves);
    EXPECT_EQ(r.equilibria.size(), 1u);
    EXPECT_LE(r.equilibria.front().exploitability, 1e-10);
    hit += r.reached ? 1 : 0;
  }
  EXPECT_GE(hit, 14) << "counts move one head at a time in a generic game";
}

TEST(LambdaSearch, FractionPerLayerAndTotalOverLayers) {
  std::vector<owned_game<double>> owned;
  for (std::uint32_t l = 0; l < 4; ++l) owned.push_back(random_psd_game<double>(12, 50 + l, 0.3));
  std::vector<nashprune::nash_game<double>> layers;
  for (const auto& g : owned) layers.push_back(g.view());

  const auto per_layer = nashprune::search_lambda_per_layer<double>(layers, prune_target::fraction_of_heads(0.5));
  ASSERT_EQ(per_layer.size(), 4u);
  for (std::size_t l = 0; l < 4; ++l) {
    EXPECT_EQ(per_layer[l].requested, 6);
    EXPECT_EQ(per_layer[l].achieved, pruned_at(owned[l], per_layer[l].lambda));
  }

  const auto shared = nashprune::search_lambda_over_layers<double>(layers, prune_target::heads(20));
  EXPECT_EQ(shared.requested, 20);
  std::int64_t total = 0;
  for (const auto& g : owned) total += pruned_at(g, shared.lambda);
  EXPECT_EQ(shared.achieved, total);
  EXPECT_LE(std::abs(shared.achieved - 20), 1);
  EXPECT_EQ(shared.equilibria.size(), 4u);
}

TEST(LambdaSearch, UnreachableTargetsAreReported) {
  const auto g = random_psd_game<double>(10, 3);
  const std::vector<nashprune::nash_game<double>> layers{g.view()};
  // Default caps keep ⌈10·0.3⌉ = 3 heads: 8 cannot be pruned.
  const auto beyond = nashprune::search_lambda_per_layer<double>(layers, prune_target::heads(8)).front();
  EXPECT_FALSE(beyond.reachable);
  EXPECT_FALSE(beyond.reached);
  EXPECT_EQ(beyond.achieved, 7);

  auto negative = g;
  negative.importance(4) = -0.5;  // plays 0 at every λ: always pruned
  const std::vector<nashprune::nash_game<double>> one{negative.view()};
  const auto below = nashprune::search_lambda_per_layer<double>(one, prune_target::heads(0)).front();
  EXPECT_FALSE(below.reachable);
  EXPECT_EQ(below.achieved, 1);
}

// 8 heads in 4 kv groups {0,1} {2,3} {4,5} {6,7}; R = I + 0.05 off the diagonal.
// Heads 0..3 are weak, so the seed's rule reaches 4 pruned heads long before
// every group has a head below the threshold; the same-q-heads-per-group plan
// removes nothing there, and 4 heads (one per group) only at a larger λ.
TEST(LambdaSearch, CountsWhatTheGqaPlanRemoves) {
  owned_game<double> g;
  g.importance = (Eigen::VectorXd(8) << 0.05, 0.06, 0.07, 0.08, 0.9, 0.95, 1.0, 0.85).finished();
  g.redundancy = Eigen::MatrixXd::Constant(8, 8, 0.05);
  g.redundancy.diagonal().setOnes();
  const std::vector<nashprune::nash_game<double>> layers{g.view()};
  const nashprune::attention_geometry geometry(8, 4, 16);
  const auto plan_removes = [&](const Eigen::VectorXd& s, const nashprune::nash_decision_options<double>& decisions) {
    const auto plan = nashprune::gqa_prune_plan(geometry, nashprune::head_granularity::heads_per_group, s, decisions);
    return std::int64_t(8 - std::int64_t(plan.q_heads.size()));
  };
  std::vector<std::size_t> layers_seen;
  const auto counter = [&](std::size_t layer, const Eigen::VectorXd& s,
                           const nashprune::nash_decision_options<double>& decisions) {
    layers_seen.push_back(layer);
    return plan_removes(s, decisions);
  };
  const auto target = prune_target::fraction_of_heads(0.5);
  const nashprune::lambda_search_options<double> options;

  const auto by_seed = nashprune::search_lambda_over_layers<double>(layers, target, options);
  ASSERT_TRUE(by_seed.reached);
  EXPECT_EQ(plan_removes(by_seed.equilibria.front().s, options.decisions), 0)
      << "the seed's count is met where the GQA plan removes nothing: the gap the counter closes";

  const auto by_plan = nashprune::search_lambda_over_layers<double>(layers, target, options,
                                                                       nashprune::active_set_newton<double>(), counter);
  EXPECT_EQ(by_plan.requested, 4);
  EXPECT_TRUE(by_plan.reachable);
  EXPECT_TRUE(by_plan.reached);
  EXPECT_EQ(by_plan.achieved, 4);
  EXPECT_GT(by_plan.lambda, by_seed.lambda);
  const auto game = nashprune::make_nash_game(g.importance, g.redundancy, by_plan.lambda);
  EXPECT_EQ(plan_removes(nashprune::active_set_newton<double>().solve(game).s, options.decisions), 4)
      << "the count reported is what the plan removes at the λ found";
  for (const auto layer : layers_seen) EXPECT_EQ(layer, 0u);

  // Per layer, the counter is told which layer of the span it counts.
  layers_seen.clear();
  const std::vector<nashprune::nash_game<double>> three{g.view(), g.view(), g.view()};
  const auto each = nashprune::search_lambda_per_layer<double>(three, target, options,
                                                                  nashprune::active_set_newton<double>(), counter);
  ASSERT_EQ(each.size(), 3u);
  for (const auto& r : each) EXPECT_EQ(r.achieved, 4);
  ASSERT_FALSE(layers_seen.empty());
  EXPECT_EQ(layers_seen.front(), 0u);
  EXPECT_EQ(layers_seen.back(), 2u);
  EXPECT_TRUE(std::is_sorted(layers_seen.begin(), layers_seen.end()));
}

TEST(LambdaSearch, CapIsTheCountersCountWhenNobodyPlays) {
  const auto g = random_psd_game<double>(8, 5);
  const std::vector<nashprune::nash_game<double>> layers{g.view()};
  // A rule that never removes more than 2 heads: 3 is unreachable.
  const auto at_most_two = [](std::size_t, const Eigen::VectorXd& s, const nashprune::nash_decision_options<double>& d) {
    return std::min<std::int64_t>(2, std::int64_t(nashprune::seed_pruned_heads(s, d).size()));
  };
  const auto r = nashprune::search_lambda_over_layers<double>(layers, prune_target::heads(3), {},
                                                                 nashprune::active_set_newton<double>(), at_most_two);
  EXPECT_FALSE(r.reachable);
  EXPECT_EQ(r.achieved, 2);
}

TEST(LambdaSearch, BadInputsThrow) {
  const auto g = random_psd_game<double>(4, 1);
  const std::vector<nashprune::nash_game<double>> layers{g.view()};
  EXPECT_THROW((void)nashprune::search_lambda_per_layer<double>(layers, prune_target::heads(-1)),
               std::invalid_argument);
  EXPECT_THROW((void)nashprune::search_lambda_per_layer<double>(layers, prune_target::fraction_of_heads(1.5)),
               std::invalid_argument);
  EXPECT_THROW((void)nashprune::search_lambda_over_layers<double>({}, prune_target::heads(1)),
               std::invalid_argument);
  nashprune::lambda_search_options<double> options;
  options.lambda_min = 0;
  EXPECT_THROW((void)nashprune::search_lambda_per_layer<double>(layers, prune_target::heads(1), options),
               std::invalid_argument);
}

}  // namespace
