#include <nashprune/global_selection.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <iterator>
#include <limits>
#include <random>
#include <string>
#include <stdexcept>
#include <vector>

namespace np = nashprune;
using np::item_kind;

namespace {

template <typename Scalar>
using items_t = std::vector<np::selection_item<Scalar>>;

/// A random table: up to `layers` layers with MLP channels and attention groups.
template <typename Scalar>
items_t<Scalar> random_items(std::mt19937& rng, int n, int layers, bool ties) {
  std::uniform_int_distribution<int> layer(0, layers - 1), kind(0, 1), cost(1, 9), coarse(0, 3);
  std::uniform_real_distribution<double> importance(0.0, 10.0);
  items_t<Scalar> items;
  std::vector<std::int64_t> next(static_cast<std::size_t>(layers) * 2, 0);
  for (int i = 0; i < n; ++i) {
    const int l = layer(rng), k = kind(rng);
    const item_kind kd = k == 0 ? item_kind::mlp_channel : item_kind::attention_group;
    const double imp = ties ? coarse(rng) : importance(rng);
    items.push_back({l, kd, next[static_cast<std::size_t>(l * 2 + k)]++, static_cast<Scalar>(imp), cost(rng)});
  }
  return items;
}

np::selection_constraints random_constraints(std::mt19937& rng, int layers) {
  np::selection_constraints c;
  c.n_layers = layers;
  std::uniform_int_distribution<int> freeze(0, 1), pick(0, 3);
  std::uniform_real_distribution<double> ratio(0.2, 1.0);
  c.freeze_first_layers = freeze(rng);
  c.freeze_last_layers = freeze(rng);
  if (pick(rng) == 0) c.max_layer_prune_ratio = ratio(rng);
  if (pick(rng) == 1) {
    for (int l = 0; l < layers; ++l) c.layer_max_prune_ratio.push_back(ratio(rng));
  }
  if (pick(rng) != 3) c.min_kept.push_back({item_kind::mlp_channel, 1, -1});
  return c;
}

/// Plain-loop check of every constraint: the first one a selection breaks, or "".
template <typename Scalar>
std::string first_violation(const items_t<Scalar>& items, const std::vector<std::int64_t>& pruned,
                            const np::selection_constraints& c, std::int64_t budget) {
  const auto n_layers = static_cast<std::size_t>(c.n_layers);
  std::vector<std::int64_t> layer_cost(n_layers, 0), removed(n_layers, 0);
  std::vector<std::int64_t> count(n_layers * 6, 0), removed_count(count.size(), 0);
  for (const auto& it : items) {
    layer_cost[static_cast<std::size_t>(it.layer)] += it.cost;
    ++count[static_cast<std::size_t>(it.layer * 6 + static_cast<int>(it.kind))];
  }
  std::int64_t total = 0;
  for (std::size_t k = 0; k < pruned.size(); ++k) {
    if (k > 0 && pruned[k - 1] >= pruned[k]) return "positions not ascending";
    const auto& it = items[static_cast<std::size_t>(pruned[k])];
    if (it.layer < c.freeze_first_layers || it.layer >= c.n_layers - c.freeze_last_layers) return "frozen layer";
    removed[static_cast<std::size_t>(it.layer)] += it.cost;
    ++removed_count[static_cast<std::size_t>(it.layer * 6 + static_cast<int>(it.kind))];
    total += it.cost;
  }
  if (total > budget) return "over budget";
  for (std::size_t l = 0; l < n_layers; ++l) {
    const double ratio = c.layer_max_prune_ratio.empty() ? c.max_layer_prune_ratio : c.layer_max_prune_ratio[l];
    if (static_cast<double>(removed[l]) > ratio * static_cast<double>(layer_cost[l]) + 1e-9) return "layer ratio";
    for (const auto& rule : c.min_kept) {
      if (rule.layer >= 0 && rule.layer != static_cast<std::int64_t>(l)) continue;
      const auto s = l * 6 + static_cast<std::size_t>(rule.kind);
      if (count[s] > 0 && count[s] - removed_count[s] < rule.count) return "min kept";
    }
  }
  return "";
}

template <typename Scalar>
std::int64_t removed_cost(const items_t<Scalar>& items, const std::vector<std::int64_t>& pruned) {
  std::int64_t total = 0;
  for (const auto p : pruned) total += items[static_cast<std::size_t>(p)].cost;
  return total;
}

/// Brute force: least removed importance among constrained selections removing [low, high].
template <typename Scalar>
double brute_force(const items_t<Scalar>& items, const np::selection_constraints& c, std::int64_t low, std::int64_t high) {
  const int n = static_cast<int>(items.size());
  double best = std::numeric_limits<double>::infinity();
  for (std::uint32_t mask = 0; mask < (1U << n); ++mask) {
    std::vector<std::int64_t> layer_cost(static_cast<std::size_t>(c.n_layers), 0), removed(layer_cost.size(), 0);
    std::vector<std::int64_t> count(layer_cost.size() * 6, 0), kept(count.size(), 0);
    std::int64_t cost = 0;
    double importance = 0;
    bool ok = true;
    for (int i = 0; i < n; ++i) {
      const auto& it = items[static_cast<std::size_t>(i)];
      const auto l = static_cast<std::size_t>(it.layer);
      const auto s = l * 6 + static_cast<std::size_t>(it.kind);
      layer_cost[l] += it.cost;
      ++count[s];
      if ((mask >> i) & 1U) {
        if (it.layer < c.freeze_first_layers || it.layer >= c.n_layers - c.freeze_last_layers) {
          ok = false;
        }
        removed[l] += it.cost;
        cost += it.cost;
        importance += static_cast<double>(it.importance);
      } else {
        ++kept[s];
      }
    }
    if (!ok || cost < low || cost > high) continue;
    for (std::size_t l = 0; l < layer_cost.size() && ok; ++l) {
      const double ratio = c.layer_max_prune_ratio.empty() ? c.max_layer_prune_ratio : c.layer_max_prune_ratio[l];
      if (static_cast<long double>(removed[l]) > std::floor(static_cast<long double>(ratio) * layer_cost[l])) ok = false;
      for (const auto& rule : c.min_kept) {
        const auto s = l * 6 + static_cast<std::size_t>(rule.kind);
        if ((rule.layer < 0 || rule.layer == static_cast<std::int64_t>(l)) && count[s] > 0 && kept[s] < rule.count) {
          ok = false;
        }
      }
    }
    if (ok) best = std::min(best, importance);
  }
  return best;
}

template <typename T>
class GlobalSelectionTyped : public ::testing::Test {};
using scalar_types = ::testing::Types<float, double>;
TYPED_TEST_SUITE(GlobalSelectionTyped, scalar_types);

TYPED_TEST(GlobalSelectionTyped, ExactEqualsBruteForceAndGreedyStaysWithinItsCertificate) {
  using Scalar = TypeParam;
  std::mt19937 rng(4);
  for (int trial = 0; trial < 300; ++trial) {
    const int layers = 2 + trial % 3;
    const auto items = random_items<Scalar>(rng, 4 + trial % 9, layers, trial % 4 == 0);
    const auto c = random_constraints(rng, layers);
    std::int64_t total = 0;
    for (const auto& it : items) total += it.cost;
    const std::int64_t budget = std::uniform_int_distribution<std::int64_t>(0, total)(rng);
    const auto greedy = np::select_greedy<Scalar>(items, budget, c);
    const auto exact = np::solve_exact<Scalar>(items, budget, c);
    ASSERT_TRUE(exact.proven_optimal);
    const double reference = brute_force(items, c, greedy.achieved, budget);
    const double tolerance = 1e-4 * std::max(1.0, reference);
    EXPECT_NEAR(static_cast<double>(exact.objective), reference, tolerance) << "trial " << trial;
    EXPECT_GE(exact.achieved, greedy.achieved);
    EXPECT_LE(static_cast<double>(exact.objective), static_cast<double>(greedy.objective) + tolerance);
    // The greedy's certificate: nothing that removes at least as much removes less than lower_bound.
    EXPECT_GE(reference + tolerance, static_cast<double>(greedy.lower_bound)) << "trial " << trial;
    EXPECT_EQ(first_violation(items, exact.pruned, c, budget), "");
    EXPECT_EQ(removed_cost(items, exact.pruned), exact.achieved);
  }
}

TYPED_TEST(GlobalSelectionTyped, DynamicProgrammingAndBranchAndBoundAgree) {
  using Scalar = TypeParam;
  std::mt19937 rng(17);
  np::exact_options dp, bnb;
  dp.algorithm = np::exact_algorithm::dynamic_programming;
  bnb.algorithm = np::exact_algorithm::branch_and_bound;
  for (int trial = 0; trial < 300; ++trial) {
    auto items = random_items<Scalar>(rng, 3 + trial % 11, 3, trial % 3 == 0);
    if (trial % 2 == 0) {
      for (auto& it : items) it.cost *= 64;  // a common factor the DP divides out
    }
    np::selection_constraints c;
    c.n_layers = 3;
    c.freeze_first_layers = trial % 2;  // frozen layers never bind
    std::int64_t total = 0;
    for (const auto& it : items) total += it.cost;
    const std::int64_t budget = std::uniform_int_distribution<std::int64_t>(0, total)(rng);
    const auto a = np::solve_exact<Scalar>(items, budget, c, dp);
    const auto b = np::solve_exact<Scalar>(items, budget, c, bnb);
    const auto automatic = np::solve_exact<Scalar>(items, budget, c);
    EXPECT_EQ(a.algorithm, np::exact_algorithm::dynamic_programming);
    EXPECT_EQ(b.algorithm, np::exact_algorithm::branch_and_bound);
    EXPECT_EQ(automatic.algorithm, np::exact_algorithm::dynamic_programming);
    const double reference = brute_force(items, c, np::select_greedy<Scalar>(items, budget, c).achieved, budget);
    const double tolerance = 1e-4 * std::max(1.0, reference);
    EXPECT_NEAR(static_cast<double>(a.objective), reference, tolerance) << "trial " << trial;
    EXPECT_NEAR(static_cast<double>(b.objective), reference, tolerance) << "trial " << trial;
    EXPECT_EQ(first_violation(items, a.pruned, c, budget), "");
    EXPECT_EQ(removed_cost(items, a.pruned), a.achieved);
    EXPECT_TRUE(a.proven_optimal);
  }
  // Binding constraints: only branch and bound is exact.
  const items_t<Scalar> items{{0, item_kind::mlp_channel, 0, Scalar(1), 2}, {0, item_kind::mlp_channel, 1, Scalar(1), 2}};
  np::selection_constraints keep_one;
  keep_one.min_kept = {{item_kind::mlp_channel, 1, -1}};
  EXPECT_THROW((void)np::solve_exact<Scalar>(items, 4, keep_one, dp), std::invalid_argument);
  EXPECT_EQ(np::solve_exact<Scalar>(items, 4, keep_one).algorithm, np::exact_algorithm::branch_and_bound);
  np::exact_options tiny = dp;
  tiny.dp_max_cells = 1;
  EXPECT_THROW((void)np::solve_exact<Scalar>(items, 4, {}, tiny), std::invalid_argument);
}

TYPED_TEST(GlobalSelectionTyped, UnconstrainedGreedyGapWithinCriticalItemBound) {
  using Scalar = TypeParam;
  std::mt19937 rng(11);
  for (int trial = 0; trial < 300; ++trial) {
    const auto items = random_items<Scalar>(rng, 5 + trial % 8, 2, false);
    std::int64_t total = 0;
    for (const auto& it : items) total += it.cost;
    const std::int64_t budget = std::uniform_int_distribution<std::int64_t>(0, total)(rng);
    const auto greedy = np::select_greedy<Scalar>(items, budget);
    np::selection_constraints none;
    none.n_layers = 2;
    const double optimum = brute_force(items, none, greedy.achieved, budget);
    // Documented a-priori bound: gap <= I(Q) - s_k c(Q), Q = items taken after the first misfit k.
    std::vector<std::size_t> order(items.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
      return static_cast<double>(items[a].importance) / static_cast<double>(items[a].cost) <
             static_cast<double>(items[b].importance) / static_cast<double>(items[b].cost);
    });
    std::int64_t remaining = budget;
    double critical = -1, fill_importance = 0;
    std::int64_t fill_cost = 0;
    for (const auto i : order) {
      if (items[i].cost > remaining) {
        if (critical < 0) critical = static_cast<double>(items[i].importance) / static_cast<double>(items[i].cost);
        continue;
      }
      remaining -= items[i].cost;
      if (critical >= 0) {
        fill_importance += static_cast<double>(items[i].importance);
        fill_cost += items[i].cost;
      }
    }
    EXPECT_EQ(budget - remaining, greedy.achieved);
    const double bound = critical < 0 ? 0.0 : fill_importance - critical * static_cast<double>(fill_cost);
    EXPECT_LE(static_cast<double>(greedy.objective) - optimum, bound + 1e-4 * std::max(1.0, optimum)) << "trial " << trial;
  }
}

TYPED_TEST(GlobalSelectionTyped, ConstraintsHoldAndFillIsMaximalOverThousandsOfInstances) {
  using Scalar = TypeParam;
  std::mt19937 rng(7);
  for (int trial = 0; trial < 3000; ++trial) {
    const int layers = 1 + trial % 6;
    const auto items = random_items<Scalar>(rng, 1 + trial % 60, layers, trial % 3 == 0);
    const auto c = random_constraints(rng, layers);
    std::int64_t total = 0;
    for (const auto& it : items) total += it.cost;
    const std::int64_t budget = std::uniform_int_distribution<std::int64_t>(0, total)(rng);
    const auto fill = np::select_greedy<Scalar>(items, budget, c);
    np::greedy_options reference_rule;
    reference_rule.rule = np::greedy_rule::stop_at_first_misfit;
    const auto stop = np::select_greedy<Scalar>(items, budget, c, reference_rule);
    EXPECT_EQ(first_violation(items, fill.pruned, c, budget), "") << "trial " << trial;
    EXPECT_EQ(first_violation(items, stop.pruned, c, budget), "") << "trial " << trial;
    EXPECT_EQ(removed_cost(items, fill.pruned), fill.achieved);
    EXPECT_EQ(removed_cost(items, stop.pruned), stop.achieved);
    EXPECT_GE(fill.achieved, stop.achieved);
    EXPECT_EQ(fill.total_cost, total);
    // Maximality: adding any kept item breaks the budget or a constraint.
    std::vector<bool> taken(items.size(), false);
    for (const auto p : fill.pruned) taken[static_cast<std::size_t>(p)] = true;
    for (std::size_t i = 0; i < items.size(); ++i) {
      if (taken[i] || items[i].cost > budget - fill.achieved) continue;
      auto more = fill.pruned;
      more.push_back(static_cast<std::int64_t>(i));
      std::sort(more.begin(), more.end());
      EXPECT_NE(first_violation(items, more, c, budget), "") << "trial " << trial << ": item " << i << " still fits";
    }
  }
}

TYPED_TEST(GlobalSelectionTyped, TiesBreakByTablePosition) {
  using Scalar = TypeParam;
  items_t<Scalar> items;
  for (int i = 0; i < 6; ++i) items.push_back({0, item_kind::mlp_channel, 5 - i, Scalar(2), 2});
  const auto r = np::select_greedy<Scalar>(items, 6);
  EXPECT_THAT(r.pruned, ::testing::ElementsAre(0, 1, 2));
  EXPECT_EQ(r.achieved, 6);
  EXPECT_TRUE(r.proven_optimal);
}

TYPED_TEST(GlobalSelectionTyped, FillKeepsGoingWhereTheReferenceStops) {
  using Scalar = TypeParam;
  // Scores 1, 2, 3: the second item does not fit the remaining 3, the third does.
  const items_t<Scalar> items{{0, item_kind::mlp_channel, 0, Scalar(5), 5},
                              {0, item_kind::mlp_channel, 1, Scalar(10), 5},
                              {0, item_kind::mlp_channel, 2, Scalar(9), 3}};
  np::greedy_options reference;
  reference.rule = np::greedy_rule::stop_at_first_misfit;
  const auto stop = np::select_greedy<Scalar>(items, 8, {}, reference);
  const auto fill = np::select_greedy<Scalar>(items, 8);
  EXPECT_THAT(stop.pruned, ::testing::ElementsAre(0));
  EXPECT_EQ(stop.achieved, 5);
  EXPECT_THAT(fill.pruned, ::testing::ElementsAre(0, 2));
  EXPECT_EQ(fill.achieved, 8);
  EXPECT_NEAR(static_cast<double>(fill.objective), 14.0, 1e-6);
  EXPECT_NEAR(fill.achieved_fraction(), 8.0 / 13.0, 1e-12);
  // F(8) = 5 + 3 * (10 / 5) = 11 < 14.
  EXPECT_NEAR(static_cast<double>(fill.lower_bound), 11.0, 1e-6);
  EXPECT_FALSE(fill.proven_optimal);
}

TYPED_TEST(GlobalSelectionTyped, ExactBeatsGreedyOnClassicTrap) {
  using Scalar = TypeParam;
  // Greedy removes the cheap low-score item and then cannot use the budget well.
  const items_t<Scalar> items{{0, item_kind::mlp_channel, 0, Scalar(1), 1},
                              {0, item_kind::mlp_channel, 1, Scalar(20), 10},
                              {0, item_kind::mlp_channel, 2, Scalar(30), 10}};
  np::exact_options ask;
  ask.min_removed = 10;
  const auto exact = np::solve_exact<Scalar>(items, 10, {}, ask);
  EXPECT_THAT(exact.pruned, ::testing::ElementsAre(1));
  EXPECT_EQ(exact.achieved, 10);
  EXPECT_TRUE(exact.proven_optimal);
  ask.min_removed = 11;
  EXPECT_THROW((void)np::solve_exact<Scalar>(items, 10, {}, ask), std::invalid_argument);
}

TEST(GlobalSelection, NodeLimitIsReportedNotThrown) {
  std::mt19937 rng(3);
  auto items = random_items<double>(rng, 60, 1, false);
  std::uniform_real_distribution<double> noise(1.0, 1.01);
  for (auto& it : items) it.importance = static_cast<double>(it.cost) * noise(rng);  // weak bounds
  std::int64_t total = 0;
  for (const auto& it : items) total += it.cost;
  np::exact_options o;
  o.algorithm = np::exact_algorithm::branch_and_bound;  // the DP would solve this outright
  o.max_nodes = 50;
  // With the greedy as incumbent the answer is feasible, bounded, and not proven.
  const auto r = np::solve_exact<double>(items, total / 2, {}, o);
  EXPECT_FALSE(r.proven_optimal);
  EXPECT_TRUE(r.feasible);
  EXPECT_EQ(r.nodes, 51);
  EXPECT_LE(static_cast<double>(r.lower_bound), static_cast<double>(r.objective) + 1e-9);
  EXPECT_GE(r.achieved, np::select_greedy<double>(items, total / 2).achieved);
  // Asking for an exact sum without an incumbent: nothing found yet is a field, not a throw.
  o.min_removed = total / 2;
  const auto none = np::solve_exact<double>(items, total / 2, {}, o);
  EXPECT_FALSE(none.proven_optimal);
  EXPECT_FALSE(none.feasible);
  EXPECT_TRUE(none.pruned.empty());
}

// llama-pruning-toolkit.en.md, dimension example: LLaMA-3-8B with 50 % of the attention
// groups and 30 % of the MLP channels removed.
TEST(GlobalSelection, Llama3DimensionExample) {
  constexpr std::int64_t n_embd = 4096, head_dim = 128, gqa = 4, n_kv = 8, n_ff = 14336, layers = 32;
  constexpr std::int64_t group_cost = n_embd * head_dim * (gqa + 1 + 1 + gqa);  // q, k, v rows + o columns
  constexpr std::int64_t channel_cost = 3 * n_embd;                              // gate row, up row, down column
  items_t<double> items;
  for (std::int64_t l = 0; l < layers; ++l) {
    for (std::int64_t g = 0; g < n_kv; ++g) items.push_back({l, item_kind::attention_group, g, g < 4 ? 1.0 * group_cost : 3.0 * group_cost, group_cost});
    for (std::int64_t c = 0; c < n_ff; ++c) items.push_back({l, item_kind::mlp_channel, c, c < 4301 ? 2.0 * channel_cost : 4.0 * channel_cost, channel_cost});
  }
  const std::int64_t budget = layers * (4 * group_cost + 4301 * channel_cost);
  const auto r = np::select_greedy<double>(items, budget);
  EXPECT_EQ(r.achieved, budget);
  std::vector<std::int64_t> groups(layers, 0), channels(layers, 0);
  for (const auto p : r.pruned) {
    const auto& it = items[static_cast<std::size_t>(p)];
    ++(it.kind == item_kind::attention_group ? groups : channels)[static_cast<std::size_t>(it.layer)];
  }
  for (std::int64_t l = 0; l < layers; ++l) {
    const std::int64_t kept_groups = n_kv - groups[static_cast<std::size_t>(l)];
    EXPECT_EQ(kept_groups * gqa * head_dim, 2048);  // q_proj rows, o_proj columns
    EXPECT_EQ(kept_groups * head_dim, 512);         // k_proj / v_proj rows
    EXPECT_EQ(n_ff - channels[static_cast<std::size_t>(l)], 10035);  // gate/up rows, down columns
  }
  // The same plan from constraints alone: uniform scores, remove everything allowed.
  for (auto& it : items) it.importance = 1.0;
  np::selection_constraints c;
  c.min_kept = {{item_kind::attention_group, 4, -1}, {item_kind::mlp_channel, 10035, -1}};
  std::int64_t total = 0;
  for (const auto& it : items) total += it.cost;
  const auto constrained = np::select_greedy<double>(items, total, c);
  EXPECT_EQ(constrained.achieved, budget);
}

TEST(GlobalSelection, BudgetFromFraction) {
  EXPECT_EQ(np::budget_from_fraction(0.3, 10), 3);
  EXPECT_EQ(np::budget_from_fraction(1.0, 7), 7);
  EXPECT_EQ(np::budget_from_fraction(0.0, 7), 0);
  EXPECT_THROW((void)np::budget_from_fraction(1.5, 7), std::invalid_argument);
  EXPECT_THROW((void)np::budget_from_fraction(-0.1, 7), std::invalid_argument);
  EXPECT_THROW((void)np::budget_from_fraction(std::nan(""), 7), std::invalid_argument);
}

template <typename Exception>
void expect_error(const items_t<double>& items, std::int64_t budget, const np::selection_constraints& c,
                  const std::string& fragment) {
  try {
    (void)np::select_greedy<double>(items, budget, c);
    ADD_FAILURE() << "no error, expected: " << fragment;
  } catch (const Exception& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr(fragment));
  }
}

TEST(GlobalSelection, BadInputNamesTheItemOrLayer) {
  const items_t<double> good{{0, item_kind::mlp_channel, 0, 1.0, 2}, {1, item_kind::mlp_channel, 0, 1.0, 2}};
  auto with = [&](auto edit) {
    auto items = good;
    edit(items[1]);
    return items;
  };
  expect_error<std::domain_error>(with([](auto& it) { it.importance = -1; }), 1, {}, "importance -1");
  expect_error<std::domain_error>(with([](auto& it) { it.importance = std::nan(""); }), 1, {}, "at index 1");
  expect_error<std::domain_error>(with([](auto& it) { it.importance = INFINITY; }), 1, {}, "+Inf");
  expect_error<std::domain_error>(with([](auto& it) { it.cost = 0; }), 1, {}, "cost 0 is not positive at index 1");
  expect_error<std::domain_error>(with([](auto& it) { it.cost = -3; }), 1, {}, "cost -3");
  expect_error<std::invalid_argument>(with([](auto& it) { it.layer = -1; }), 1, {}, "negative layer");
  expect_error<std::invalid_argument>(with([](auto& it) { it.layer = 0; }), 1, {}, "item 1 repeats layer 0");
  const items_t<double> heads_and_group{{0, item_kind::q_head, 0, 1.0, 2}, {0, item_kind::attention_group, 0, 1.0, 2}};
  expect_error<std::invalid_argument>(heads_and_group, 1, {}, "layer 0 mixes attention_group and q_head");
  // A container must hold at least the cost of what lies inside it, and be its layer's only one.
  expect_error<std::invalid_argument>(with([](auto& it) { it.layer = 0; it.kind = item_kind::mlp_block; it.cost = 1; }), 1, {},
                                      "layer 0: mlp_block cost 1 is below the 2 of the items inside it");
  const items_t<double> two_blocks{{0, item_kind::attention_group, 0, 1.0, 2}, {0, item_kind::attention_block, 0, 1.0, 5},
                                   {0, item_kind::attention_block, 1, 1.0, 5}};
  expect_error<std::invalid_argument>(two_blocks, 1, {}, "layer 0: one attention_block holding finer items must be the layer's only one");
  const items_t<double> small_layer{{0, item_kind::mlp_channel, 0, 1.0, 2}, {0, item_kind::whole_layer, 0, 1.0, 1}};
  expect_error<std::invalid_argument>(small_layer, 1, {}, "layer 0: whole_layer cost 1 is below the 2");
  expect_error<std::invalid_argument>(with([](auto& it) { it.layer = std::int64_t{1} << 40; }), 1, {}, "beyond 2^22 layers at index 1");
  expect_error<std::invalid_argument>(good, 5, {}, "budget");
  expect_error<std::invalid_argument>(good, -1, {}, "budget");
  expect_error<std::invalid_argument>({}, 0, {}, "empty");
  np::selection_constraints c;
  c.min_kept = {{item_kind::mlp_channel, 2, -1}};
  expect_error<std::invalid_argument>(good, 1, c, "layer 0 has 1 mlp_channel items, cannot keep 2");
  c = {};
  c.max_layer_prune_ratio = 1.5;
  expect_error<std::invalid_argument>(good, 1, c, "max_layer_prune_ratio");
  c = {};
  c.layer_max_prune_ratio = {0.5};
  expect_error<std::invalid_argument>(good, 1, c, "layer_max_prune_ratio");
  c.layer_max_prune_ratio = {0.5, NAN};
  expect_error<std::invalid_argument>(good, 1, c, "at layer 1");
  c = {};
  c.n_layers = 1;
  expect_error<std::invalid_argument>(good, 1, c, "not below n_layers");
  c = {};
  c.freeze_first_layers = -1;
  expect_error<std::invalid_argument>(good, 1, c, "freeze_first_layers");
  // Sparse indices take the sorting path of the duplicate check.
  items_t<double> sparse{{0, item_kind::mlp_channel, 1'000'000'000, 1.0, 1}, {0, item_kind::mlp_channel, 5, 1.0, 1},
                         {0, item_kind::mlp_channel, 1'000'000'000, 1.0, 1}};
  expect_error<std::invalid_argument>(sparse, 1, {}, "item 2 repeats");
}

TEST(GlobalSelection, FrozenLayersAndKindNames) {
  items_t<double> items;
  for (int l = 0; l < 4; ++l) items.push_back({l, item_kind::whole_layer, 0, 0.0, 1});
  np::selection_constraints c;
  c.freeze_first_layers = 1;
  c.freeze_last_layers = 2;
  const auto r = np::select_greedy<double>(items, 4, c);
  EXPECT_THAT(r.pruned, ::testing::ElementsAre(1));
  EXPECT_EQ(r.refused_by_constraints, 3);
  for (std::size_t k = 0; k < np::item_kind_count; ++k) {
    const auto kind = static_cast<item_kind>(k);
    EXPECT_EQ(np::find_item_kind(np::name_of(kind)), kind);
  }
  EXPECT_FALSE(np::find_item_kind("head").has_value());
}

TEST(GlobalSelection, KindsSayWhichHoldWhich) {
  // kind, is a block, is a container, the block of its layer it lies in
  struct row {
    item_kind kind;
    bool block, container;
    item_kind lies_in;
  };
  const row table[] = {{item_kind::attention_group, false, false, item_kind::attention_block},
                       {item_kind::q_head, false, false, item_kind::attention_block},
                       {item_kind::mlp_channel, false, false, item_kind::mlp_block},
                       {item_kind::attention_block, true, true, item_kind::attention_block},
                       {item_kind::mlp_block, true, true, item_kind::mlp_block},
                       {item_kind::whole_layer, false, true, item_kind::whole_layer}};
  ASSERT_EQ(std::size(table), np::item_kind_count);
  for (const auto& r : table) {
    EXPECT_EQ(np::is_block(r.kind), r.block) << np::name_of(r.kind);
    EXPECT_EQ(np::is_container(r.kind), r.container) << np::name_of(r.kind);
    EXPECT_EQ(np::block_of(r.kind), r.lies_in) << np::name_of(r.kind);
  }
}

}  // namespace

namespace {

// ---- Score order and walk against a plain-loop greedy on large tables ----

/// The greedy of the header comment in plain loops: stable sort by the score computed in
/// the scalar's own precision (ties: table position), then the walk with every constraint.
template <typename Scalar>
np::selection_result<Scalar> plain_greedy(const items_t<Scalar>& items, std::int64_t budget, const np::selection_constraints& c,
                                          np::greedy_rule rule) {
  using real = std::conditional_t<sizeof(Scalar) <= 4, float, double>;
  std::vector<std::size_t> order(items.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  auto score = [&](std::size_t i) { return static_cast<real>(items[i].importance) / static_cast<real>(items[i].cost); };
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return score(a) < score(b); });
  const auto n_layers = static_cast<std::size_t>(c.n_layers);
  std::vector<std::int64_t> layer_cost(n_layers, 0), cap(n_layers, 0), removed(n_layers, 0), count(n_layers * 6, 0);
  for (const auto& it : items) {
    layer_cost[static_cast<std::size_t>(it.layer)] += it.cost;
    ++count[static_cast<std::size_t>(it.layer) * 6 + static_cast<std::size_t>(it.kind)];
  }
  std::vector<std::int64_t> slot_cap = count, slot_removed(count.size(), 0);
  for (std::size_t l = 0; l < n_layers; ++l) {
    const double ratio = c.layer_max_prune_ratio.empty() ? c.max_layer_prune_ratio : c.layer_max_prune_ratio[l];
    const auto layer = static_cast<std::int64_t>(l);
    const bool frozen = layer < c.freeze_first_layers || layer >= c.n_layers - c.freeze_last_layers;
    cap[l] = frozen ? 0 : static_cast<std::int64_t>(std::floor(static_cast<long double>(ratio) * layer_cost[l]));
    for (const auto& r : c.min_kept) {
      const auto s = l * 6 + static_cast<std::size_t>(r.kind);
      if ((r.layer < 0 || r.layer == layer) && count[s] > 0) slot_cap[s] = std::min(slot_cap[s], count[s] - r.count);
    }
  }
  np::selection_result<Scalar> out;
  std::int64_t remaining = budget;
  long double objective = 0;
  for (const auto i : order) {
    const auto& it = items[i];
    const auto l = static_cast<std::size_t>(it.layer);
    const auto s = l * 6 + static_cast<std::size_t>(it.kind);
    if (it.cost > remaining) {
      if (rule == np::greedy_rule::stop_at_first_misfit) break;
      continue;
    }
    if (removed[l] + it.cost > cap[l] || slot_removed[s] >= slot_cap[s]) {
      ++out.refused_by_constraints;
      continue;
    }
    removed[l] += it.cost;
    ++slot_removed[s];
    remaining -= it.cost;
    objective += static_cast<long double>(it.importance);
    out.pruned.push_back(static_cast<std::int64_t>(i));
  }
  std::sort(out.pruned.begin(), out.pruned.end());
  out.achieved = budget - remaining;
  out.objective = static_cast<Scalar>(objective);
  return out;
}

/// Large tables whose scores are spread wide (log-normal), packed narrow (near-equal)
/// or heavily tied, with every constraint.
template <typename Scalar>
items_t<Scalar> large_table(std::mt19937& rng, int n, int layers, int shape) {
  std::lognormal_distribution<double> wide(0.0, 2.0);
  std::uniform_real_distribution<double> narrow(1.0, 1.0001);
  std::uniform_int_distribution<int> tied(0, 3), cost(1, 40);
  items_t<Scalar> items;
  const int per_layer = (n + layers - 1) / layers;
  for (int i = 0; i < n; ++i) {
    const int l = i / per_layer, within = i % per_layer;
    const bool attention = within < 4;
    const double importance = shape == 0 ? wide(rng) : shape == 1 ? narrow(rng) : tied(rng);
    items.push_back({l, attention ? item_kind::attention_group : item_kind::mlp_channel, within, static_cast<Scalar>(importance),
                     attention ? 200 : (shape == 1 ? 16 : cost(rng))});
  }
  return items;
}

TYPED_TEST(GlobalSelectionTyped, GreedyEqualsPlainLoopReferenceOnLargeTables) {
  using Scalar = TypeParam;
  std::mt19937 rng(23);
  for (const int n : {65, 1000, 5000, 150'000}) {
    for (int shape = 0; shape < 3; ++shape) {
      const int layers = n < 1000 ? 3 : 12;
      const auto items = large_table<Scalar>(rng, n, layers, shape);
      np::selection_constraints c;
      c.n_layers = layers;
      c.freeze_first_layers = 1;
      c.max_layer_prune_ratio = 0.6;
      c.min_kept = {{item_kind::attention_group, 1, -1}, {item_kind::mlp_channel, 3, -1}};
      std::int64_t total = 0;
      for (const auto& it : items) total += it.cost;
      for (const double fraction : {0.0, 0.05, 0.3, 0.9}) {
        const std::int64_t budget = np::budget_from_fraction(fraction, total);
        for (const auto rule : {np::greedy_rule::fill, np::greedy_rule::stop_at_first_misfit}) {
          np::greedy_options o;
          o.rule = rule;
          const auto got = np::select_greedy<Scalar>(items, budget, c, o);
          const auto want = plain_greedy(items, budget, c, rule);
          const std::string where = "n " + std::to_string(n) + ", shape " + std::to_string(shape) + ", fraction " + std::to_string(fraction);
          ASSERT_EQ(got.pruned, want.pruned) << where;
          EXPECT_EQ(got.achieved, want.achieved) << where;
          EXPECT_NEAR(static_cast<double>(got.objective), static_cast<double>(want.objective),
                      1e-5 * std::max(1.0, static_cast<double>(want.objective))) << where;
          if (rule == np::greedy_rule::fill) {
            EXPECT_EQ(got.refused_by_constraints, want.refused_by_constraints) << where;
          }
          EXPECT_LE(static_cast<double>(got.lower_bound), static_cast<double>(got.objective) * (1 + 1e-5) + 1e-9) << where;
        }
      }
    }
  }
}

// ---- Mixed granularities: containers and the finer items inside them ----

/// Cost of each layer with a container counted once (plain loops).
template <typename Scalar>
std::vector<std::int64_t> nested_layer_costs(const items_t<Scalar>& items, std::size_t n_layers) {
  std::vector<std::int64_t> kind_cost(n_layers * 6, 0), out(n_layers, 0);
  for (const auto& it : items) kind_cost[static_cast<std::size_t>(it.layer) * 6 + static_cast<std::size_t>(it.kind)] += it.cost;
  for (std::size_t l = 0; l < n_layers; ++l) {
    const auto k = [&](item_kind kind) { return kind_cost[l * 6 + static_cast<std::size_t>(kind)]; };
    const auto part = [](std::int64_t fine, std::int64_t block) { return fine > 0 && block > 0 ? block : fine + block; };
    const std::int64_t below = part(k(item_kind::attention_group) + k(item_kind::q_head), k(item_kind::attention_block)) +
                               part(k(item_kind::mlp_channel), k(item_kind::mlp_block));
    out[l] = part(below, k(item_kind::whole_layer));
  }
  return out;
}

/// True when `inner` lies inside the container `outer` (same layer).
template <typename Scalar>
bool inside(const np::selection_item<Scalar>& inner, const np::selection_item<Scalar>& outer) {
  if (inner.layer != outer.layer || inner.kind == outer.kind) return false;
  if (outer.kind == item_kind::whole_layer) return true;
  if (outer.kind == item_kind::attention_block) return inner.kind == item_kind::attention_group || inner.kind == item_kind::q_head;
  if (outer.kind == item_kind::mlp_block) return inner.kind == item_kind::mlp_channel;
  return false;
}

/// The first rule a selection of a mixed table breaks, or "": no item together with a
/// container around it, the budget, frozen layers, per-layer ratios on the nested layer
/// cost, and min_kept counted on what remains (a removed container removes all inside).
template <typename Scalar>
std::string nested_violation(const items_t<Scalar>& items, const std::vector<std::int64_t>& pruned, const np::selection_constraints& c,
                             std::int64_t budget) {
  const auto n_layers = static_cast<std::size_t>(c.n_layers);
  const auto layer_cost = nested_layer_costs(items, n_layers);
  std::vector<bool> removed_item(items.size(), false);
  std::int64_t total = 0;
  std::vector<std::int64_t> removed(n_layers, 0);
  for (const auto p : pruned) {
    const auto& it = items[static_cast<std::size_t>(p)];
    if (it.layer < c.freeze_first_layers || it.layer >= c.n_layers - c.freeze_last_layers) return "frozen layer";
    removed_item[static_cast<std::size_t>(p)] = true;
    removed[static_cast<std::size_t>(it.layer)] += it.cost;
    total += it.cost;
  }
  if (total > budget) return "over budget";
  std::vector<std::int64_t> count(n_layers * 6, 0), kept(count.size(), 0);
  for (std::size_t i = 0; i < items.size(); ++i) {
    const auto s = static_cast<std::size_t>(items[i].layer) * 6 + static_cast<std::size_t>(items[i].kind);
    ++count[s];
    bool gone = removed_item[i];
    for (const auto p : pruned) {
      if (!inside(items[i], items[static_cast<std::size_t>(p)])) continue;
      if (removed_item[i]) return "item inside a removed container";
      gone = true;
    }
    if (!gone) ++kept[s];
  }
  for (std::size_t l = 0; l < n_layers; ++l) {
    const double ratio = c.layer_max_prune_ratio.empty() ? c.max_layer_prune_ratio : c.layer_max_prune_ratio[l];
    if (static_cast<long double>(removed[l]) > std::floor(static_cast<long double>(ratio) * layer_cost[l])) return "layer ratio";
    for (const auto& rule : c.min_kept) {
      const auto s = l * 6 + static_cast<std::size_t>(rule.kind);
      if ((rule.layer < 0 || rule.layer == static_cast<std::int64_t>(l)) && count[s] > 0 && kept[s] < rule.count) return "min kept";
    }
  }
  return "";
}

/// Brute force over the selections of a mixed table removing [low, high].
template <typename Scalar>
double nested_brute_force(const items_t<Scalar>& items, const np::selection_constraints& c, std::int64_t low, std::int64_t high) {
  double best = std::numeric_limits<double>::infinity();
  for (std::uint32_t mask = 0; mask < (1U << items.size()); ++mask) {
    std::vector<std::int64_t> pruned;
    std::int64_t cost = 0;
    double importance = 0;
    for (std::size_t i = 0; i < items.size(); ++i) {
      if (((mask >> i) & 1U) == 0) continue;
      pruned.push_back(static_cast<std::int64_t>(i));
      cost += items[i].cost;
      importance += static_cast<double>(items[i].importance);
    }
    if (cost < low || cost > high || nested_violation(items, pruned, c, high) != "") continue;
    best = std::min(best, importance);
  }
  return best;
}

/// A small mixed table: per layer, attention groups or single heads under an optional
/// attention block, MLP channels under an optional MLP block, an optional whole layer.
template <typename Scalar>
items_t<Scalar> mixed_items(std::mt19937& rng, int layers, int max_items) {
  std::uniform_int_distribution<int> coin(0, 1), fine(0, 2), cost(1, 6), extra(0, 3);
  std::uniform_real_distribution<double> importance(0.0, 10.0);
  items_t<Scalar> items;
  auto add = [&](int l, item_kind kind, int index, std::int64_t c) {
    if (static_cast<int>(items.size()) < max_items) items.push_back({l, kind, index, static_cast<Scalar>(importance(rng)), c});
  };
  for (int l = 0; l < layers; ++l) {
    std::int64_t below = 0;
    const item_kind head = coin(rng) ? item_kind::attention_group : item_kind::q_head;
    std::int64_t attention = 0, mlp = 0;
    const int heads = fine(rng), channels = fine(rng);
    for (int h = 0; h < heads; ++h) {
      const std::int64_t c = cost(rng);
      attention += c;
      add(l, head, h, c);
    }
    if (coin(rng)) {
      attention += extra(rng) + (heads == 0 ? 1 : 0);
      add(l, item_kind::attention_block, 0, attention);
    }
    for (int h = 0; h < channels; ++h) {
      const std::int64_t c = cost(rng);
      mlp += c;
      add(l, item_kind::mlp_channel, h, c);
    }
    if (coin(rng)) {
      mlp += extra(rng) + (channels == 0 ? 1 : 0);
      add(l, item_kind::mlp_block, 0, mlp);
    }
    below = attention + mlp;
    if (coin(rng)) add(l, item_kind::whole_layer, 0, below + extra(rng) + 1);
  }
  // Keep only complete containers: drop a container whose inside was cut by max_items.
  return items;
}

np::selection_constraints mixed_constraints(std::mt19937& rng, int layers) {
  np::selection_constraints c;
  c.n_layers = layers;
  std::uniform_int_distribution<int> pick(0, 5);
  std::uniform_real_distribution<double> ratio(0.3, 1.0);
  c.freeze_first_layers = pick(rng) == 0 ? 1 : 0;
  if (pick(rng) == 0) c.max_layer_prune_ratio = ratio(rng);
  if (pick(rng) == 0) c.min_kept.push_back({item_kind::mlp_channel, 1, -1});
  if (pick(rng) == 0) c.min_kept.push_back({item_kind::attention_block, 1, -1});
  return c;
}

TYPED_TEST(GlobalSelectionTyped, MixedGranularitiesExactEqualsBruteForceGreedyFeasibleAndMaximal) {
  using Scalar = TypeParam;
  std::mt19937 rng(31);
  int nested_tables = 0;
  for (int trial = 0; trial < 400; ++trial) {
    const int layers = 1 + trial % 3;
    const auto items = mixed_items<Scalar>(rng, layers, 12);
    std::int64_t total = 0;
    try {
      total = np::selection_total_cost<Scalar>(items);
    } catch (const std::invalid_argument&) {
      continue;  // max_items cut a container below what it holds
    }
    const auto c = mixed_constraints(rng, layers);
    EXPECT_EQ(total, [&] {
      std::int64_t sum = 0;
      for (const auto v : nested_layer_costs(items, static_cast<std::size_t>(layers))) sum += v;
      return sum;
    }());
    const std::int64_t budget = std::uniform_int_distribution<std::int64_t>(0, total)(rng);
    np::selection_result<Scalar> greedy;
    try {
      greedy = np::select_greedy<Scalar>(items, budget, c);
    } catch (const std::invalid_argument&) {
      continue;  // a min_kept rule asks for more items than a layer holds
    }
    const std::string where = "trial " + std::to_string(trial);
    EXPECT_EQ(greedy.total_cost, total) << where;
    ASSERT_EQ(nested_violation(items, greedy.pruned, c, budget), "") << where;
    EXPECT_EQ(removed_cost(items, greedy.pruned), greedy.achieved) << where;
    double objective = 0;
    for (const auto p : greedy.pruned) objective += static_cast<double>(items[static_cast<std::size_t>(p)].importance);
    EXPECT_NEAR(static_cast<double>(greedy.objective), objective, 1e-4 * std::max(1.0, objective)) << where;
    // Maximal: every item neither removed nor inside a removed container, added with the
    // items it holds taken out, breaks the budget or a constraint.
    for (std::size_t i = 0; i < items.size(); ++i) {
      bool covered = false;
      for (const auto p : greedy.pruned) covered = covered || p == static_cast<std::int64_t>(i) || inside(items[i], items[static_cast<std::size_t>(p)]);
      if (covered) continue;
      std::vector<std::int64_t> more;
      for (const auto p : greedy.pruned) {
        if (!inside(items[static_cast<std::size_t>(p)], items[i])) more.push_back(p);
      }
      more.push_back(static_cast<std::int64_t>(i));
      std::sort(more.begin(), more.end());
      EXPECT_NE(nested_violation(items, more, c, budget), "") << where << ": item " << i << " still fits";
    }
    const double reference = nested_brute_force(items, c, greedy.achieved, budget);
    const double tolerance = 1e-4 * std::max(1.0, reference);
    EXPECT_GE(reference + tolerance, static_cast<double>(greedy.lower_bound)) << where;
    const auto exact = np::solve_exact<Scalar>(items, budget, c);
    ASSERT_TRUE(exact.proven_optimal) << where;
    EXPECT_NEAR(static_cast<double>(exact.objective), reference, tolerance) << where;
    EXPECT_EQ(nested_violation(items, exact.pruned, c, budget), "") << where;
    EXPECT_LE(static_cast<double>(exact.objective), static_cast<double>(greedy.objective) + tolerance) << where;
    bool nested = false;
    for (const auto& a : items) {
      for (const auto& b : items) nested = nested || inside(a, b);
    }
    if (nested) {
      ++nested_tables;
      EXPECT_EQ(exact.algorithm, np::exact_algorithm::branch_and_bound) << where;
    }
  }
  EXPECT_GT(nested_tables, 150);
}

TEST(GlobalSelection, MixedGranularitySemantics) {
  // One layer: two MLP channels (cost 4 each) inside an MLP block of cost 10, two
  // attention groups (cost 4 each) inside an attention block of cost 10.
  // Scores: group 0 0.125, channel 0 0.25, MLP block 0.5, attention block 1, channel 1 2, group 1 4.
  items_t<double> items{{0, item_kind::mlp_channel, 0, 1.0, 4},       {0, item_kind::mlp_channel, 1, 8.0, 4},
                        {0, item_kind::mlp_block, 0, 5.0, 10},        {0, item_kind::attention_group, 0, 0.5, 4},
                        {0, item_kind::attention_group, 1, 16.0, 4}, {0, item_kind::attention_block, 0, 10.0, 10}};
  EXPECT_EQ(np::selection_total_cost<double>(items), 20);  // each block counted once
  auto r = np::select_greedy<double>(items, 8);
  EXPECT_THAT(r.pruned, ::testing::ElementsAre(0, 3));
  EXPECT_EQ(r.total_cost, 20);
  // Budget 14: group 0, channel 0, then the MLP block for 10 - 4 = 6 more: channel 0 is
  // subsumed (reported through the block, its cost not counted twice).
  r = np::select_greedy<double>(items, 14);
  EXPECT_THAT(r.pruned, ::testing::ElementsAre(2, 3));
  EXPECT_EQ(r.achieved, 14);
  EXPECT_DOUBLE_EQ(r.objective, 5.5);
  // Everything: both blocks; channel 1 and group 1 lie inside removed blocks and are not selected again.
  r = np::select_greedy<double>(items, 20);
  EXPECT_THAT(r.pruned, ::testing::ElementsAre(2, 5));
  EXPECT_EQ(r.achieved, 20);
  EXPECT_DOUBLE_EQ(r.objective, 15.0);
  EXPECT_EQ(r.refused_by_constraints, 0);
  // min_kept applies to what remains: keeping one MLP channel forbids removing the MLP block.
  np::selection_constraints keep_channel;
  keep_channel.min_kept = {{item_kind::mlp_channel, 1, -1}};
  r = np::select_greedy<double>(items, 14, keep_channel);
  EXPECT_THAT(r.pruned, ::testing::ElementsAre(0, 5));
  EXPECT_DOUBLE_EQ(r.objective, 11.0);
  const auto exact = np::solve_exact<double>(items, 14);
  EXPECT_THAT(exact.pruned, ::testing::ElementsAre(2, 3));
  EXPECT_EQ(exact.algorithm, np::exact_algorithm::branch_and_bound);
  np::exact_options dp;
  dp.algorithm = np::exact_algorithm::dynamic_programming;
  try {
    (void)np::solve_exact<double>(items, 14, {}, dp);
    ADD_FAILURE() << "dynamic programming accepted nested granularities";
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("nested granularities"));
  }
  // A whole layer around it all: removed last for its cost minus everything already removed.
  items.push_back({0, item_kind::whole_layer, 0, 30.0, 25});  // score 1.2
  EXPECT_EQ(np::selection_total_cost<double>(items), 25);
  r = np::select_greedy<double>(items, 25);
  EXPECT_THAT(r.pruned, ::testing::ElementsAre(6));
  EXPECT_EQ(r.achieved, 25);
  EXPECT_DOUBLE_EQ(r.objective, 30.0);
  // A fraction of the nested total.
  r = np::select_greedy<double>(items, np::budget_from_fraction(0.32, np::selection_total_cost<double>(items)));
  EXPECT_THAT(r.pruned, ::testing::ElementsAre(0, 3));
}

}  // namespace
