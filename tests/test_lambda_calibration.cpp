// Tests of nashprune/lambda_calibration.hpp: λ found for every reachable count,
// per layer and over all layers; unreachable targets said so.
#include <gtest/gtest.h>

#include <nashprune/lambda_calibration.hpp>
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

TEST(LambdaCalibration, HitsEveryCountOfOneLayerUpToTheCap) {
  const auto g = random_psd_game<double>(16, 21, 0.5);
  const std::vector<nashprune::nash_game<double>> layers{g.view()};
  const nashprune::lambda_calibration_options<double> options{{0.1, 1, 1.0}};  // cap: 15 of 16
  int hit = 0;
  for (std::int64_t target = 0; target <= 15; ++target) {
    const auto result = nashprune::calibrate_lambda_per_layer<double>(layers, prune_target::heads(target), options);
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

TEST(LambdaCalibration, FractionPerLayerAndTotalOverLayers) {
  std::vector<owned_game<double>> owned;
  for (std::uint32_t l = 0; l < 4; ++l) owned.push_back(random_psd_game<double>(12, 50 + l, 0.3));
  std::vector<nashprune::nash_game<double>> layers;
  for (const auto& g : owned) layers.push_back(g.view());

  const auto per_layer = nashprune::calibrate_lambda_per_layer<double>(layers, prune_target::fraction_of_heads(0.5));
  ASSERT_EQ(per_layer.size(), 4u);
  for (std::size_t l = 0; l < 4; ++l) {
    EXPECT_EQ(per_layer[l].requested, 6);
    EXPECT_EQ(per_layer[l].achieved, pruned_at(owned[l], per_layer[l].lambda));
  }

  const auto shared = nashprune::calibrate_lambda_over_layers<double>(layers, prune_target::heads(20));
  EXPECT_EQ(shared.requested, 20);
  std::int64_t total = 0;
  for (const auto& g : owned) total += pruned_at(g, shared.lambda);
  EXPECT_EQ(shared.achieved, total);
  EXPECT_LE(std::abs(shared.achieved - 20), 1);
  EXPECT_EQ(shared.equilibria.size(), 4u);
}

TEST(LambdaCalibration, UnreachableTargetsAreReported) {
  const auto g = random_psd_game<double>(10, 3);
  const std::vector<nashprune::nash_game<double>> layers{g.view()};
  // Default caps keep ⌈10·0.3⌉ = 3 heads: 8 cannot be pruned.
  const auto beyond = nashprune::calibrate_lambda_per_layer<double>(layers, prune_target::heads(8)).front();
  EXPECT_FALSE(beyond.reachable);
  EXPECT_FALSE(beyond.reached);
  EXPECT_EQ(beyond.achieved, 7);

  auto negative = g;
  negative.importance(4) = -0.5;  // plays 0 at every λ: always pruned
  const std::vector<nashprune::nash_game<double>> one{negative.view()};
  const auto below = nashprune::calibrate_lambda_per_layer<double>(one, prune_target::heads(0)).front();
  EXPECT_FALSE(below.reachable);
  EXPECT_EQ(below.achieved, 1);
}

TEST(LambdaCalibration, BadInputsThrow) {
  const auto g = random_psd_game<double>(4, 1);
  const std::vector<nashprune::nash_game<double>> layers{g.view()};
  EXPECT_THROW((void)nashprune::calibrate_lambda_per_layer<double>(layers, prune_target::heads(-1)),
               std::invalid_argument);
  EXPECT_THROW((void)nashprune::calibrate_lambda_per_layer<double>(layers, prune_target::fraction_of_heads(1.5)),
               std::invalid_argument);
  EXPECT_THROW((void)nashprune::calibrate_lambda_over_layers<double>({}, prune_target::heads(1)),
               std::invalid_argument);
  nashprune::lambda_calibration_options<double> options;
  options.lambda_min = 0;
  EXPECT_THROW((void)nashprune::calibrate_lambda_per_layer<double>(layers, prune_target::heads(1), options),
               std::invalid_argument);
}

}  // namespace
