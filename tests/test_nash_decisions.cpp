// Tests of nashprune/nash_decisions.hpp: the seed's §4.4 rule against its own loop,
// and the GQA-consistent plans.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <nashprune/nash_decisions.hpp>
#include <random>
#include <stdexcept>
#include <utility>
#include <vector>

namespace {

using nashprune::head_granularity;

/// The seed's apply_pruning for one layer, verbatim in float.
std::vector<bool> seed_reference(const std::vector<float>& participation, int min_heads, float max_ratio,
                                 float threshold) {
  std::vector<std::pair<float, int>> sorted;
  const int n_total = int(participation.size());
  for (int h = 0; h < n_total; h++) sorted.push_back({participation[std::size_t(h)], h});
  std::sort(sorted.begin(), sorted.end());
  const int min_keep = std::max(min_heads, (int)std::ceil(n_total * (1.0f - max_ratio)));
  std::vector<bool> pruned(std::size_t(n_total), false);
  int n_pruned = 0;
  for (auto& [score, h] : sorted) {
    if (score < threshold && (n_total - n_pruned) > min_keep) {
      pruned[std::size_t(h)] = true;
      n_pruned++;
    }
  }
  return pruned;
}

TEST(NashDecisions, SeedRuleMatchesTheSeedLoopOnRandomLayers) {
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(0, 0.3f);
  for (int trial = 0; trial < 300; ++trial) {
    const int n = 1 + trial % 40;
    std::vector<float> s(static_cast<std::size_t>(n));
    for (auto& v : s) v = (trial % 3 == 0) ? std::round(u(rng) * 20) / 20 : u(rng);  // ties too
    const nashprune::nash_decision_options<float> options{0.1f + 0.01f * float(trial % 5), trial % 4,
                                                          0.25f * float(trial % 5)};
    const auto expected =
        seed_reference(s, int(options.min_heads_per_layer), options.max_prune_ratio, options.prune_threshold);
    const auto pruned = nashprune::seed_pruned_heads(Eigen::Map<const Eigen::VectorXf>(s.data(), n), options);
    std::vector<bool> got(std::size_t(n), false);
    for (const auto h : pruned) got[std::size_t(h)] = true;
    EXPECT_EQ(got, expected) << "trial " << trial;
    EXPECT_TRUE(std::is_sorted(pruned.begin(), pruned.end()));
  }
}

TEST(NashDecisions, SeedDefaultsKeepThirtyPercent) {
  const Eigen::VectorXd s = Eigen::VectorXd::Zero(32);
  EXPECT_EQ(nashprune::seed_min_keep<double>(32, {}), 10);  // ⌈32·0.3⌉ = ⌈9.6⌉
  EXPECT_EQ(nashprune::seed_pruned_heads(s).size(), 22u);
  EXPECT_EQ(nashprune::seed_pruned_heads(Eigen::VectorXd::Zero(1)).size(), 0u);  // min_heads_per_layer 1
  // 10·(1 − 0.7) is 3.0000000000000004 in double: still keeps 3, as in float.
  EXPECT_EQ(nashprune::seed_min_keep<double>(10, {}), 3);
  EXPECT_EQ(nashprune::seed_min_keep<float>(10, {}), 3);
}

TEST(NashDecisions, BadOptionsAndParticipationThrow) {
  const Eigen::VectorXd s = Eigen::VectorXd::Zero(4);
  EXPECT_THROW((void)nashprune::seed_pruned_heads(s, nashprune::nash_decision_options<double>{0.1, -1, 0.5}),
               std::invalid_argument);
  EXPECT_THROW((void)nashprune::seed_pruned_heads(s, nashprune::nash_decision_options<double>{0.1, 1, 1.5}),
               std::invalid_argument);
  EXPECT_THROW((void)nashprune::seed_pruned_heads(s, nashprune::nash_decision_options<double>{NAN, 1, 0.5}),
               std::invalid_argument);
  EXPECT_THROW((void)nashprune::seed_pruned_heads(Eigen::VectorXd()), std::invalid_argument);
  Eigen::VectorXd bad = s;
  bad(2) = NAN;
  EXPECT_THROW((void)nashprune::seed_pruned_heads(bad), std::domain_error);
  const nashprune::attention_geometry geometry(8, 2, 4);
  EXPECT_THROW((void)nashprune::gqa_prune_plan(geometry, head_granularity::whole_groups, Eigen::VectorXd::Zero(6)),
               std::invalid_argument);
}

/// Every head the plan drops is one the seed's rule would drop (threshold), and
/// the layer keeps at least min_keep heads.
void expect_consistent_with_seed(const nashprune::attention_geometry& geometry, const Eigen::VectorXd& s,
                                 const nashprune::head_keep_plan& plan,
                                 const nashprune::nash_decision_options<double>& options) {
  EXPECT_NO_THROW((void)geometry.validate(plan));
  EXPECT_GE(std::int64_t(plan.q_heads.size()), nashprune::seed_min_keep(geometry.n_head(), options));
  for (std::int64_t h = 0; h < geometry.n_head(); ++h) {
    const bool kept = std::binary_search(plan.q_heads.begin(), plan.q_heads.end(), h);
    if (!kept) {
      EXPECT_LT(s(h), options.prune_threshold) << "head " << h;
    }
  }
}

TEST(NashDecisions, WholeGroupsRemoveOnlyGroupsEntirelyBelowThreshold) {
  const nashprune::attention_geometry geometry(8, 4, 16);  // groups {0,1} {2,3} {4,5} {6,7}
  Eigen::VectorXd s(8);
  s << 0.05, 0.02, 0.5, 0.0, 0.01, 0.09, 0.03, 0.02;  // group 1 holds a head above threshold
  const auto plan = nashprune::gqa_prune_plan(geometry, head_granularity::whole_groups, s,
                                              nashprune::nash_decision_options<double>{0.1, 1, 1.0});
  EXPECT_EQ(plan.kv_heads, (std::vector<std::int64_t>{1}));
  EXPECT_EQ(plan.q_heads, (std::vector<std::int64_t>{2, 3}));
  // Default caps: keep ⌈8·0.3⌉ = 3 heads, so at most 2 groups go: the two of lowest Σs.
  const auto capped = nashprune::gqa_prune_plan(geometry, head_granularity::whole_groups, s);
  EXPECT_EQ(capped.kv_heads, (std::vector<std::int64_t>{1, 2}));  // groups 3 (Σ .05) and 0 (Σ .07) go
  expect_consistent_with_seed(geometry, s, capped, {});
}

TEST(NashDecisions, HeadsPerGroupRemoveTheSameCountFromEveryGroup) {
  const nashprune::attention_geometry geometry(8, 2, 16);  // groups {0..3} {4..7}
  Eigen::VectorXd s(8);
  s << 0.0, 0.05, 0.5, 0.08, 0.9, 0.01, 0.7, 0.6;  // 3 below in group 0, 1 in group 1
  const auto plan = nashprune::gqa_prune_plan(geometry, head_granularity::heads_per_group, s);
  EXPECT_EQ(plan.q_heads, (std::vector<std::int64_t>{1, 2, 3, 4, 6, 7}));
  EXPECT_EQ(plan.kv_heads, (std::vector<std::int64_t>{0, 1}));
  expect_consistent_with_seed(geometry, s, plan, {});
}

TEST(NashDecisions, SingleHeadsFollowTheSeedRuleAndRandomPlansStayValid) {
  const nashprune::attention_geometry mha(6, 6, 8);
  Eigen::VectorXd s(6);
  s << 0.3, 0.01, 0.02, 0.5, 0.0, 0.09;
  const auto plan = nashprune::gqa_prune_plan(mha, head_granularity::single_heads, s);
  EXPECT_EQ(plan.q_heads, (std::vector<std::int64_t>{0, 3}));  // 4 below threshold; caps keep ⌈6·0.3⌉ = 2
  std::mt19937 rng(4);
  std::uniform_real_distribution<double> u(0, 0.2);
  for (int trial = 0; trial < 100; ++trial) {
    const nashprune::attention_geometry geometry(32, trial % 2 ? 8 : 4, 8);
    Eigen::VectorXd random(32);
    for (auto& v : random) v = u(rng);
    for (const auto granularity : {head_granularity::whole_groups, head_granularity::heads_per_group}) {
      expect_consistent_with_seed(geometry, random, nashprune::gqa_prune_plan(geometry, granularity, random), {});
    }
  }
}

}  // namespace
