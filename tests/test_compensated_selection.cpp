// compensated_selection.hpp: the OBS cost equals the refit's measured error, the
// per-layer enumeration equals a brute force over every subset of heads filtered by
// GQA consistency, the greedy curves charge exactly the cost of the sets they return,
// the allocation over layers equals a brute force over all combinations, a head
// duplicated by another is free after the refit, and bad inputs are named.
#include <gtest/gtest.h>

#include <nashprune/compensated_selection.hpp>

#include <algorithm>
#include <limits>
#include <random>
#include <vector>

#include "expect_error.hpp"

namespace {

namespace np = nashprune;
using nashprune_test::expect_error;
using Eigen::MatrixXd;
using Eigen::VectorXd;

struct layer_data {
  MatrixXd x;
  MatrixXd second_moment;
  VectorXd mean;
  MatrixXd weight;
};

layer_data random_layer(Eigen::Index n, Eigen::Index m, std::uint32_t seed, Eigen::Index count = 300) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal;
  MatrixXd mixing(n, n);
  for (auto& v : mixing.reshaped()) v = normal(rng);
  MatrixXd z(count, n);
  for (auto& v : z.reshaped()) v = normal(rng);
  layer_data d;
  d.x = z * mixing;
  for (Eigen::Index j = 0; j < n; ++j) d.x.col(j).array() += normal(rng);
  d.second_moment = d.x.transpose() * d.x / static_cast<double>(count);
  d.mean = d.x.colwise().mean().transpose();
  d.weight.resize(m, n);
  for (auto& v : d.weight.reshaped()) v = normal(rng);
  return d;
}

std::vector<std::int64_t> complement(const std::vector<std::int64_t>& removed, std::int64_t n) {
  return np::complement_units(removed, n);
}

double refit_error(const layer_data& d, const std::vector<std::int64_t>& removed) {
  const auto kept = complement(removed, d.weight.cols());
  return np::compensate(np::compensation_kind::refit, d.weight, d.second_moment, d.mean, kept, removed,
                        np::compensation_options<double>{0.0})
      .error;
}

TEST(CompensatedSelection, ObsCostEqualsTheRefitErrorWithoutDamping) {
  for (std::uint32_t seed = 1; seed <= 4; ++seed) {
    const auto d = random_layer(10, 6, seed);
    const np::obs_cost<double> cost(d.weight, d.second_moment, d.mean, 0.0);
    EXPECT_FALSE(cost.damping_raised());
    for (const std::vector<std::int64_t>& removed : {std::vector<std::int64_t>{}, {3}, {0, 7}, {1, 2, 5, 9}}) {
      EXPECT_NEAR(cost(removed), refit_error(d, removed), 1e-8 * (1 + refit_error(d, removed)));
    }
  }
}

TEST(CompensatedSelection, ADuplicatedHeadIsFreeAfterTheRefitButNotBoth) {
  // Heads of 2 coordinates; head 1 repeats head 3's output: either alone costs
  // nothing after the refit, the pair costs what both carry: E is not additive.
  auto d = random_layer(8, 5, 9);
  d.x.col(2) = d.x.col(6);
  d.x.col(3) = d.x.col(7);
  d.second_moment = d.x.transpose() * d.x / static_cast<double>(d.x.rows());
  d.mean = d.x.colwise().mean().transpose();
  const np::obs_cost<double> cost(d.weight, d.second_moment, d.mean, 1e-9);
  const double plain_scale = d.weight.squaredNorm() * d.second_moment.diagonal().mean();
  EXPECT_LT(cost(std::vector<std::int64_t>{2, 3}), 1e-6 * plain_scale);
  EXPECT_LT(cost(std::vector<std::int64_t>{6, 7}), 1e-6 * plain_scale);
  EXPECT_GT(cost(std::vector<std::int64_t>{2, 3, 6, 7}), 1e-2 * plain_scale);
  const np::attention_geometry geometry(4, 4, 2);
  const auto curve = np::obs_head_curve(cost, geometry, np::head_granularity::single_heads);
  EXPECT_TRUE(curve.removed[1] == std::vector<std::int64_t>{1} || curve.removed[1] == std::vector<std::int64_t>{3});
}

/// Every GQA-consistent removal of `count` q heads, by trying every subset.
std::vector<std::vector<std::int64_t>> brute_force_sets(const np::attention_geometry& g, np::head_granularity granularity,
                                                        std::int64_t count) {
  std::vector<std::vector<std::int64_t>> sets;
  const std::int64_t n = g.n_head();
  for (std::uint32_t mask = 0; mask < (1U << n); ++mask) {
    std::vector<std::int64_t> removed;
    for (std::int64_t h = 0; h < n; ++h)
      if ((mask >> h) & 1U) removed.push_back(h);
    if (static_cast<std::int64_t>(removed.size()) != count) continue;
    const auto q_kept = np::complement_units(removed, n);
    std::vector<std::int64_t> kv_kept;
    for (const auto h : q_kept)
      if (kv_kept.empty() || kv_kept.back() != h / g.group_size()) kv_kept.push_back(h / g.group_size());
    if (granularity != np::head_granularity::whole_groups) {
      if (granularity == np::head_granularity::heads_per_group && !q_kept.empty()) {
        kv_kept.resize(static_cast<std::size_t>(g.n_head_kv()));
        for (std::int64_t j = 0; j < g.n_head_kv(); ++j) kv_kept[static_cast<std::size_t>(j)] = j;
      }
    } else {
      // whole groups: a kept group keeps all its heads
      bool whole = true;
      for (const auto kv : kv_kept)
        for (std::int64_t h = kv * g.group_size(); h < (kv + 1) * g.group_size(); ++h)
          if (!std::binary_search(q_kept.begin(), q_kept.end(), h)) whole = false;
      if (!whole) continue;
    }
    try {
      (void)g.validate({q_kept, kv_kept}, /*allow_empty=*/true);
      sets.push_back(removed);
    } catch (const std::invalid_argument&) {
    }
  }
  return sets;
}

TEST(CompensatedSelection, PerLayerEnumerationEqualsBruteForceOverEverySubset) {
  struct shape {
    std::int64_t n_head, n_head_kv, head_dim;
    np::head_granularity granularity;
  };
  for (const auto& s : {shape{4, 2, 2, np::head_granularity::whole_groups}, shape{4, 2, 2, np::head_granularity::heads_per_group},
                        shape{6, 3, 1, np::head_granularity::heads_per_group}, shape{5, 5, 2, np::head_granularity::single_heads},
                        shape{6, 2, 1, np::head_granularity::whole_groups}}) {
    const np::attention_geometry geometry(s.n_head, s.n_head_kv, s.head_dim);
    const auto d = random_layer(s.n_head * s.head_dim, 4, static_cast<std::uint32_t>(s.n_head * 31 + s.n_head_kv));
    const np::obs_cost<double> cost(d.weight, d.second_moment, d.mean, 0.0);
    const auto curve = np::obs_head_curve(cost, geometry, s.granularity);
    ASSERT_EQ(curve.count, geometry.removable_q_head_counts(s.granularity));
    for (std::size_t k = 0; k < curve.count.size(); ++k) {
      EXPECT_EQ(curve.exact[k], 1);
      double best = std::numeric_limits<double>::infinity();
      for (const auto& removed : brute_force_sets(geometry, s.granularity, curve.count[k])) {
        best = std::min(best, refit_error(d, np::unit_coordinates(removed, s.head_dim)));
      }
      EXPECT_NEAR(curve.cost[k], best, 1e-8 * (1 + best)) << "count " << curve.count[k];
      EXPECT_NEAR(refit_error(d, np::unit_coordinates(curve.removed[k], s.head_dim)), best, 1e-8 * (1 + best));
    }
  }
}

TEST(CompensatedSelection, GreedyCurvesChargeExactlyTheCostOfTheirNestedSets) {
  const np::attention_geometry geometry(8, 4, 2);
  const auto d = random_layer(16, 6, 77);
  const np::obs_cost<double> cost(d.weight, d.second_moment, d.mean);
  for (const auto granularity : {np::head_granularity::whole_groups, np::head_granularity::heads_per_group}) {
    const auto exact = np::obs_head_curve(cost, geometry, granularity);
    const auto greedy = np::obs_head_curve(cost, geometry, granularity, /*max_sets=*/0);
    ASSERT_EQ(greedy.count, exact.count);
    for (std::size_t k = 0; k < greedy.count.size(); ++k) {
      EXPECT_EQ(greedy.exact[k], 0);
      ASSERT_EQ(static_cast<std::int64_t>(greedy.removed[k].size()), greedy.count[k]);
      EXPECT_NEAR(greedy.cost[k], cost(np::unit_coordinates(greedy.removed[k], 2)), 1e-8 * (1 + greedy.cost[k]));
      EXPECT_GE(greedy.cost[k], exact.cost[k] - 1e-9 * (1 + exact.cost[k]));
      if (k > 0) {
        EXPECT_TRUE(std::includes(greedy.removed[k].begin(), greedy.removed[k].end(), greedy.removed[k - 1].begin(), greedy.removed[k - 1].end()));
      }
    }
    // heads_per_group: every greedy set removes the same number from every group.
    if (granularity == np::head_granularity::heads_per_group) {
      for (std::size_t k = 0; k < greedy.count.size(); ++k) {
        EXPECT_NO_THROW((void)geometry.plan_removing(granularity, greedy.removed[k], true));
      }
    }
  }
  for (const std::int64_t batch : {1, 3}) {
    const auto channels = np::obs_channel_curve(cost, 10, batch);
    EXPECT_EQ(channels.count.back(), 10);
    for (std::size_t k = 0; k < channels.count.size(); ++k) {
      EXPECT_EQ(static_cast<std::int64_t>(channels.removed[k].size()), channels.count[k]);
      EXPECT_NEAR(channels.cost[k], cost(channels.removed[k]), 1e-8 * (1 + channels.cost[k]));
    }
    // The first greedy step takes the single channel of least cost.
    double best_single = std::numeric_limits<double>::infinity();
    for (std::int64_t c = 0; c < 16; ++c) best_single = std::min(best_single, cost(std::vector<std::int64_t>{c}));
    if (batch == 1) {
      EXPECT_NEAR(channels.cost[1], best_single, 1e-12 * (1 + best_single));
    }
  }
}

TEST(CompensatedSelection, AllocationOverLayersEqualsBruteForceOverCombinations) {
  const np::attention_geometry geometry(4, 2, 2);
  std::vector<np::removal_curve<double>> curves;
  std::vector<np::allocation_choices<double>> choices;
  const std::vector<double> scales{1.0, 0.5, 2.0};
  for (std::uint32_t l = 0; l < 3; ++l) {
    const auto d = random_layer(8, 5, 100 + l);
    const np::obs_cost<double> cost(d.weight, d.second_moment, d.mean);
    curves.push_back(np::obs_head_curve(cost, geometry, np::head_granularity::heads_per_group));
    choices.push_back(np::allocation_choices_of(curves.back(), 1, scales[l]));
  }
  for (std::int64_t requested = 0; requested <= 12; requested += 2) {
    const auto chosen = np::exact_allocation<double>(choices, requested);
    double best = std::numeric_limits<double>::infinity();
    for (std::size_t a = 0; a < 3; ++a)
      for (std::size_t b = 0; b < 3; ++b)
        for (std::size_t c = 0; c < 3; ++c) {
          if (curves[0].count[a] + curves[1].count[b] + curves[2].count[c] != requested) continue;
          best = std::min(best, scales[0] * curves[0].cost[a] + scales[1] * curves[1].cost[b] + scales[2] * curves[2].cost[c]);
        }
    EXPECT_TRUE(chosen.reached);
    EXPECT_NEAR(chosen.energy, best, 1e-12 * (1 + best)) << "requested " << requested;
  }
}

TEST(CompensatedSelection, BadInputsAreRefusedNamingTheArgument) {
  const auto d = random_layer(6, 3, 5);
  const np::obs_cost<double> cost(d.weight, d.second_moment, d.mean);
  expect_error<std::invalid_argument>([&] { (void)np::obs_head_curve(cost, np::attention_geometry(4, 2, 2), np::head_granularity::whole_groups); },
                                      {"cost", "input width"});
  expect_error<std::invalid_argument>([&] { (void)np::obs_head_curve(cost, np::attention_geometry(6, 2, 1), np::head_granularity::single_heads); },
                                      {"granularity"});
  expect_error<std::invalid_argument>([&] { (void)np::obs_channel_curve(cost, 7); }, {"max_channels"});
  expect_error<std::invalid_argument>([&] { (void)np::obs_channel_curve(cost, 3, 0); }, {"batch"});
  expect_error<std::invalid_argument>([&] { (void)cost(std::vector<std::int64_t>{1, 6}); }, {"removed", "6", "out of range"});
  expect_error<std::invalid_argument>([&] { (void)cost(std::vector<std::int64_t>{2, 1}); }, {"removed", "ascending"});
  expect_error<std::domain_error>([&] { (void)np::obs_cost<double>(d.weight, d.second_moment, d.mean, -0.5); }, {"damping"});
  MatrixXd not_psd = d.second_moment;
  not_psd(0, 1) = not_psd(1, 0) = 3 * std::sqrt(d.second_moment(0, 0) * d.second_moment(1, 1));
  expect_error<std::domain_error>([&] { (void)np::obs_cost<double>(d.weight, not_psd, d.mean); }, {"second_moment", "positive semidefinite"});
  expect_error<std::invalid_argument>([&] { (void)np::obs_cost<double>(d.weight.leftCols(5), d.second_moment, d.mean); }, {"weight", "column count"});
  np::removal_curve<double> curve;
  expect_error<std::invalid_argument>([&] { (void)np::allocation_choices_of(curve, 0); }, {"unit_size"});
  expect_error<std::domain_error>([&] { (void)np::allocation_choices_of(curve, 1, -1.0); }, {"scale"});
  expect_error<std::invalid_argument>(
      [&] {
        np::attention_geometry(8, 8, 1).for_each_removal(np::head_granularity::single_heads, 4, 10, [](const std::vector<std::int64_t>&) {});
      },
      {"max_sets", "70"});
}

}  // namespace
