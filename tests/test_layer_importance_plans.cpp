// nashprune/layer_importance_plans.hpp: the unbalanced-rate plans on random GQA and
// multi-head models against references written as plain loops (every count vector
// and every removal set enumerated), the depth presets against an enumeration of
// the droppable sets, and every bad input named.
#include <nashprune/layer_importance_plans.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <stdexcept>
#include <vector>

#include "expect_error.hpp"

namespace {

namespace np = nashprune;
using nashprune_test::expect_error;

// n_layer layers of n_head query heads and n_kv kv heads with random head scores.
np::model_scores random_model(std::mt19937& rng, std::int64_t n_layer, std::int64_t n_head, std::int64_t n_kv) {
  std::uniform_real_distribution<double> score(0.0, 1.0);
  np::model_scores m;
  m.n_embd = 16;
  m.head_dim_k = 2;
  m.head_dim_v = 2;
  m.total_parameters = 100000;
  for (std::int64_t l = 0; l < n_layer; ++l) {
    np::layer_scores s;
    s.n_head = n_head;
    s.n_head_kv = n_kv;
    s.n_ff = 3;
    s.heads.resize(n_head);
    for (std::int64_t h = 0; h < n_head; ++h) s.heads[h] = score(rng);
    s.channels = Eigen::VectorXd::Ones(3);
    m.layers.push_back(s);
  }
  return m;
}

np::pruning_options head_options(double target, np::structure s) {
  np::pruning_options o;
  o.unit = np::budget_unit::heads;
  o.structures = {s};
  o.game = np::head_game::none;
  o.target = target;
  return o;
}

// Plain loop: the least total importance of `heads` query heads of one layer removed
// at the granularity (whole groups, the same count from every group, or any heads).
double least_removal(const Eigen::VectorXd& scores, std::int64_t n_kv, bool groups, std::int64_t heads) {
  const auto n = static_cast<std::int64_t>(scores.size());
  const std::int64_t g = n / n_kv;
  double best = std::numeric_limits<double>::infinity();
  for (std::int64_t mask = 0; mask < (std::int64_t{1} << n); ++mask) {
    std::int64_t count = 0;
    double sum = 0;
    std::vector<std::int64_t> per_group(static_cast<std::size_t>(n_kv), 0);
    for (std::int64_t h = 0; h < n; ++h) {
      if ((mask >> h & 1) == 0) continue;
      ++count;
      sum += scores[h];
      ++per_group[static_cast<std::size_t>(h / g)];
    }
    if (count != heads) continue;
    bool allowed = true;
    for (const auto c : per_group) {
      if (groups) allowed = allowed && (c == 0 || c == g);
      if (!groups && n_kv != n) allowed = allowed && c == per_group[0];
    }
    if (allowed) best = std::min(best, sum);
  }
  return best;
}

// Rates of trial's strategy (inverse, proportional, uniform in turn) over [0, 0.8].
np::layer_rate_options trial_rates(int trial) {
  np::layer_rate_options r;
  r.strategy = static_cast<np::rate_strategy>(trial % 3);
  r.min_rate = 0.0;
  r.max_rate = 0.8;
  return r;
}

// One lognormal importance per layer.
Eigen::VectorXd random_importance(std::mt19937& rng, std::int64_t n_layer) {
  std::lognormal_distribution<double> importance(0.0, 1.0);
  Eigen::VectorXd li(n_layer);
  for (auto& v : li) v = importance(rng);
  return li;
}

// Plain loop over every vector of unit counts (0 to cap per layer, each unit `step`
// of the budget): the most budget used <= `budget`, then the least squared distance
// to the `wanted` units; ties (layers clipped to the same rate) go to the layers
// first in the strategy's order: by importance ascending (inverse) or descending
// (proportional), then index.
std::vector<std::int64_t> reference_counts(const std::vector<double>& wanted, std::int64_t cap, std::int64_t step, std::int64_t budget,
                                           np::rate_strategy strategy, const Eigen::VectorXd& li) {
  const auto n_layer = static_cast<std::int64_t>(wanted.size());
  std::vector<std::int64_t> order(static_cast<std::size_t>(n_layer));
  for (std::int64_t l = 0; l < n_layer; ++l) order[static_cast<std::size_t>(l)] = l;
  std::stable_sort(order.begin(), order.end(), [&](std::int64_t a, std::int64_t b) {
    if (strategy == np::rate_strategy::inverse) return li[a] < li[b];
    if (strategy == np::rate_strategy::proportional) return li[a] > li[b];
    return false;
  });
  std::vector<std::int64_t> k(static_cast<std::size_t>(n_layer), 0), best_k;
  std::int64_t best_total = -1;
  double best_distance = 0;
  for (;;) {
    std::int64_t used = 0;
    double distance = 0;
    for (std::int64_t l = 0; l < n_layer; ++l) {
      const auto u = static_cast<double>(k[static_cast<std::size_t>(l)]);
      used += k[static_cast<std::size_t>(l)] * step;
      distance += (u - wanted[static_cast<std::size_t>(l)]) * (u - wanted[static_cast<std::size_t>(l)]);
    }
    std::vector<std::int64_t> ordered, best_ordered;
    for (const auto l : order) {
      ordered.push_back(k[static_cast<std::size_t>(l)]);
      if (!best_k.empty()) best_ordered.push_back(best_k[static_cast<std::size_t>(l)]);
    }
    const bool closer = distance < best_distance - 1e-9 || (distance <= best_distance + 1e-9 && ordered > best_ordered);
    if (used <= budget && (used > best_total || (used == best_total && closer))) {
      best_total = used;
      best_distance = distance;
      best_k = k;
    }
    std::size_t at = 0;
    while (at < k.size() && k[at] == cap) k[at++] = 0;
    if (at == k.size()) break;
    ++k[at];
  }
  return best_k;
}

// A layer's attention and the structures a trial offers.
struct attention_shape {
  std::int64_t n_head, n_kv;
  np::structure_set s;
};

TEST(UnbalancedRates, CountsAndChoicesMatchPlainLoopReferences) {
  std::mt19937 rng(17);
  std::uniform_real_distribution<double> target(0.1, 0.45);
  const std::vector<attention_shape> shapes{{8, 4, {np::structure::groups}}, {8, 8, {np::structure::heads}}, {8, 2, {np::structure::heads}},
                                            {6, 2, {np::structure::groups}},  {4, 4, {np::structure::groups}}};
  int checked = 0;
  for (int trial = 0; trial < 300; ++trial) {
    const auto& sh = shapes[static_cast<std::size_t>(trial) % shapes.size()];
    const std::int64_t n_layer = 2 + trial % 4;
    const auto model = random_model(rng, n_layer, sh.n_head, sh.n_kv);
    auto o = head_options(target(rng), np::structure::groups);
    o.structures = sh.s;
    o.max_prune = 0.8;
    const auto r = trial_rates(trial);
    const auto li = random_importance(rng, n_layer);
    const auto out = np::plan_unbalanced_rates(model, li, o, r);
    // The rates are layer_pruning_rates' for R / U, weighted by heads.
    const std::int64_t total = n_layer * sh.n_head;
    const auto requested = static_cast<std::int64_t>(std::floor(o.target * static_cast<double>(total) + 1e-9));
    ASSERT_EQ(out.report.requested, requested);
    auto solve = r;
    solve.target = static_cast<double>(requested) / static_cast<double>(total);
    const auto rates = np::layer_pruning_rates<double>(li, Eigen::VectorXd::Constant(n_layer, static_cast<double>(sh.n_head)), solve);
    for (std::int64_t l = 0; l < n_layer; ++l) EXPECT_NEAR(out.report.rates[l], rates.rates[l], 1e-12);
    // Reference counts: every vector of units within the caps, the most heads <= R,
    // then the least squared distance to the wanted units.
    const bool groups = sh.s.contains(np::structure::groups);
    const std::int64_t step = groups ? sh.n_head / sh.n_kv : sh.n_kv == sh.n_head ? 1 : sh.n_kv;
    const std::int64_t keep = np::seed_min_keep(sh.n_head, o.decisions());
    const std::int64_t cap = std::min((sh.n_head - keep) / step, sh.n_head / step - 1);
    std::vector<double> wanted;
    for (std::int64_t l = 0; l < n_layer; ++l) wanted.push_back(rates.rates[l] * static_cast<double>(sh.n_head) / static_cast<double>(step));
    const auto best_k = reference_counts(wanted, cap, step, requested, r.strategy, li);
    std::int64_t best_total = 0;
    for (const auto u : best_k) best_total += u * step;
    ASSERT_EQ(out.report.removed_total, best_total) << "trial " << trial;
    for (std::int64_t l = 0; l < n_layer; ++l) {
      EXPECT_EQ(out.report.removed[static_cast<std::size_t>(l)], best_k[static_cast<std::size_t>(l)] * step) << "trial " << trial << " layer " << l;
    }
    // Reference choice: the removed heads' importance is the least any allowed set has.
    for (std::int64_t l = 0; l < n_layer; ++l) {
      const auto& layer = out.plan.layers[static_cast<std::size_t>(l)];
      const auto& scores = model.layers[static_cast<std::size_t>(l)].heads;
      const auto removed = sh.n_head - static_cast<std::int64_t>(layer.heads.q_heads.size());
      ASSERT_EQ(removed, out.report.removed[static_cast<std::size_t>(l)]);
      double kept = 0;
      for (const auto h : layer.heads.q_heads) kept += scores[h];
      EXPECT_NEAR(scores.sum() - kept, least_removal(scores, sh.n_kv, groups, removed), 1e-12) << "trial " << trial << " layer " << l;
      EXPECT_EQ(layer.channels.size(), 3U);
      EXPECT_TRUE(layer.keep_layer);
    }
    std::int64_t pruned = 0;
    for (const auto& h : out.plan.heads) pruned += h.pruned ? 1 : 0;
    EXPECT_EQ(pruned, out.report.removed_total);
    ++checked;
  }
  EXPECT_EQ(checked, 300);
}

TEST(UnbalancedRates, InverseSparesTheImportantLayerAndFrozenLayersKeepTheirHeads) {
  std::mt19937 rng(3);
  const auto model = random_model(rng, 4, 8, 4);
  auto o = head_options(0.25, np::structure::groups);
  Eigen::VectorXd li(4);
  li << 0.1, 5.0, 0.1, 0.1;
  np::layer_rate_options r;
  r.min_rate = 0.0;
  r.max_rate = 0.75;
  const auto inverse = np::plan_unbalanced_rates(model, li, o, r);
  EXPECT_EQ(inverse.report.removed_total, 8);
  EXPECT_LT(inverse.report.removed[1], inverse.report.removed[0]);
  r.strategy = np::rate_strategy::proportional;
  const auto proportional = np::plan_unbalanced_rates(model, li, o, r);
  EXPECT_GT(proportional.report.removed[1], proportional.report.removed[0]);
  o.freeze_first = 1;
  r.strategy = np::rate_strategy::uniform;
  const auto frozen = np::plan_unbalanced_rates(model, li, o, r);
  EXPECT_EQ(frozen.report.removed[0], 0);
  EXPECT_EQ(frozen.report.rates[0], 0.0);
  EXPECT_EQ(frozen.plan.layers[0].heads.q_heads.size(), 8U);
  EXPECT_EQ(frozen.report.removed_total, 8);
  EXPECT_NEAR(frozen.report.overall_rate, 8.0 / 24.0, 1e-12);
}

TEST(UnbalancedRates, BadInputIsNamed) {
  std::mt19937 rng(5);
  const auto model = random_model(rng, 3, 8, 4);
  const auto o = head_options(0.25, np::structure::groups);
  const np::layer_rate_options r;
  expect_error<std::invalid_argument>([&] { (void)np::plan_unbalanced_rates(model, Eigen::VectorXd::Ones(4), o, r); },
                                      {"layer_importance", "layer count is 4, expected 3"});
  Eigen::VectorXd negative = Eigen::VectorXd::Ones(3);
  negative[1] = -1;
  expect_error<std::domain_error>([&] { (void)np::plan_unbalanced_rates(model, negative, o, r); }, {"importance"});
  auto mlp_alone = o;
  mlp_alone.structures = {np::structure::mlp};
  expect_error<std::invalid_argument>([&] { (void)np::plan_unbalanced_rates(model, Eigen::VectorXd::Ones(3), mlp_alone, r); },
                                      {"structures", "budget_unit::heads counts heads"});
  auto layers = o;
  layers.structures = {np::structure::groups, np::structure::layers};
  expect_error<std::invalid_argument>([&] { (void)np::plan_unbalanced_rates(model, Eigen::VectorXd::Ones(3), layers, r); },
                                      {"structures", "heads, groups and mlp channels only"});
  auto mlp = o;
  mlp.structures = {np::structure::groups, np::structure::mlp};
  auto short_channels = model;
  short_channels.layers[1].channels = Eigen::VectorXd::Ones(2);
  expect_error<std::invalid_argument>([&] { (void)np::plan_unbalanced_rates(short_channels, Eigen::VectorXd::Ones(3), mlp, r); },
                                      {"layers[1].channels", "size is 2, expected 3"});
  auto nan_channel = model;
  nan_channel.layers[2].channels[0] = std::numeric_limits<double>::quiet_NaN();
  expect_error<std::domain_error>([&] { (void)np::plan_unbalanced_rates(nan_channel, Eigen::VectorXd::Ones(3), mlp, r); },
                                  {"layers[2].channels", "non-finite value NaN at index 0"});
  auto no_chunk = model;
  no_chunk.layers[0].mlp_chunk = 0;
  expect_error<std::invalid_argument>([&] { (void)np::plan_unbalanced_rates(no_chunk, Eigen::VectorXd::Ones(3), mlp, r); },
                                      {"layers[0].mlp_chunk", "must be positive"});
  auto params = mlp;
  params.unit = np::budget_unit::parameters;
  auto no_total = model;
  no_total.total_parameters = 0;
  expect_error<std::invalid_argument>([&] { (void)np::plan_unbalanced_rates(no_total, Eigen::VectorXd::Ones(3), params, r); },
                                      {"total_parameters"});
  auto far = params;
  far.target = 0.9;
  expect_error<std::domain_error>([&] { (void)np::plan_unbalanced_rates(model, Eigen::VectorXd::Ones(3), far, r); }, {"target", "unreachable"});
  auto low = o;
  low.target = 0.05;
  expect_error<std::domain_error>([&] { (void)np::plan_unbalanced_rates(model, Eigen::VectorXd::Ones(3), low, r); },
                                  {"target", "unreachable", "0.150000, 0.500000"});
  auto all_frozen = o;
  all_frozen.freeze_first = 3;
  expect_error<std::invalid_argument>([&] { (void)np::plan_unbalanced_rates(model, Eigen::VectorXd::Ones(3), all_frozen, r); }, {"nothing to prune"});
}

// A model whose layers also hold n_ff channels of random score, removed in steps of chunk.
np::model_scores random_mlp_model(std::mt19937& rng, std::int64_t n_layer, std::int64_t n_head, std::int64_t n_kv, std::int64_t n_ff,
                                  std::int64_t chunk) {
  auto m = random_model(rng, n_layer, n_head, n_kv);
  // Scores on a coarse grid, so that equal scores (ties) occur.
  std::uniform_int_distribution<int> grid(0, 9);
  for (auto& l : m.layers) {
    l.n_ff = n_ff;
    l.mlp_chunk = chunk;
    l.channels.resize(n_ff);
    for (auto& c : l.channels) c = 0.1 * grid(rng);
  }
  return m;
}

// Plain loop: in every layer no removed channel scores above a kept one, and the
// removed count is what the report says.
void expect_least_scored_channels(const np::model_scores& model, const np::unbalanced_rates_result& out, int trial) {
  for (std::size_t l = 0; l < model.layers.size(); ++l) {
    const auto& scores = model.layers[l].channels;
    const auto& kept = out.plan.layers[l].channels;
    ASSERT_EQ(model.layers[l].n_ff - static_cast<std::int64_t>(kept.size()), out.report.removed_channels[l]) << "trial " << trial << " layer " << l;
    double lowest_kept = std::numeric_limits<double>::infinity(), highest_removed = -1;
    for (std::int64_t c = 0; c < model.layers[l].n_ff; ++c) {
      const bool is_kept = std::find(kept.begin(), kept.end(), c) != kept.end();
      (is_kept ? lowest_kept : highest_removed) = is_kept ? std::min(lowest_kept, scores[c]) : std::max(highest_removed, scores[c]);
    }
    EXPECT_LE(highest_removed, lowest_kept) << "trial " << trial << " layer " << l;
  }
}

TEST(UnbalancedRatesMlp, WithAHeadTargetEachLayerLosesItsRateOfChannels) {
  std::mt19937 rng(23);
  std::uniform_real_distribution<double> target(0.1, 0.45);
  for (int trial = 0; trial < 200; ++trial) {
    const std::int64_t n_layer = 2 + trial % 3;
    const std::int64_t chunk = 1 + trial % 3;
    const std::int64_t n_ff = 5 + trial % 8;
    const bool groups = trial % 2 == 0;
    const auto model = random_mlp_model(rng, n_layer, 8, 4, n_ff, chunk);
    auto o = head_options(target(rng), groups ? np::structure::groups : np::structure::heads);
    o.max_prune = trial % 4 < 2 ? 0.8 : 0.5;
    const auto r = trial_rates(trial);
    const auto li = random_importance(rng, n_layer);
    const auto heads_only = np::plan_unbalanced_rates(model, li, o, r);
    o.structures.insert(np::structure::mlp);
    const auto out = np::plan_unbalanced_rates(model, li, o, r);
    // The heads are the plan without mlp: the channels count for nothing in a head target.
    EXPECT_EQ(out.report.removed, heads_only.report.removed) << "trial " << trial;
    EXPECT_EQ(out.report.removed_total, heads_only.report.removed_total);
    for (std::int64_t l = 0; l < n_layer; ++l) {
      EXPECT_EQ(out.report.rates[l], heads_only.report.rates[l]);
      EXPECT_EQ(out.plan.layers[static_cast<std::size_t>(l)].heads.q_heads, heads_only.plan.layers[static_cast<std::size_t>(l)].heads.q_heads);
    }
    // Reference counts: every vector of channel steps within the caps (at most
    // max_prune of the channels, never the last), the most channels <= floor(Σ
    // rate·n_ff), then the least squared distance to the wanted steps, ties as the heads.
    const std::int64_t cap = std::min(static_cast<std::int64_t>(std::floor(o.max_prune * static_cast<double>(n_ff) + 1e-9)), n_ff - 1) / chunk;
    double wanted_total = 0;
    std::vector<double> wanted(static_cast<std::size_t>(n_layer));
    for (std::int64_t l = 0; l < n_layer; ++l) {
      wanted[static_cast<std::size_t>(l)] = out.report.rates[l] * static_cast<double>(n_ff) / static_cast<double>(chunk);
      wanted_total += out.report.rates[l] * static_cast<double>(n_ff);
    }
    const auto budget = static_cast<std::int64_t>(std::floor(wanted_total + 1e-9));
    const auto best_k = reference_counts(wanted, cap, chunk, budget, r.strategy, li);
    // A capped layer's share goes to the others, as capped layers' heads do.
    bool capped = false;
    for (const auto w : wanted) capped = capped || std::ceil(w - 1e-9) > static_cast<double>(cap);
    for (std::int64_t l = 0; l < n_layer; ++l) {
      const auto removed = out.report.removed_channels[static_cast<std::size_t>(l)];
      EXPECT_EQ(removed, best_k[static_cast<std::size_t>(l)] * chunk) << "trial " << trial << " layer " << l;
      // The rate's rounding: the floor or the ceiling of the wanted steps.
      const double w = wanted[static_cast<std::size_t>(l)];
      if (!capped) {
        EXPECT_GE(removed / chunk, static_cast<std::int64_t>(std::floor(w + 1e-9)));
        EXPECT_LE(removed / chunk, static_cast<std::int64_t>(std::ceil(w - 1e-9)));
      }
    }
    expect_least_scored_channels(model, out, trial);
  }
}

TEST(UnbalancedRatesMlp, AParameterTargetScalesTheRatesUntilTheRemovedShareMeetsIt) {
  std::mt19937 rng(29);
  std::uniform_real_distribution<double> target(0.05, 0.3);
  using np::structure;
  const std::vector<attention_shape> shapes{{8, 4, {structure::groups, structure::mlp}}, {8, 2, {structure::heads, structure::mlp}},
                                  {4, 4, {structure::heads, structure::mlp}},  {8, 4, {structure::mlp}},
                                  {8, 4, {structure::groups}}};
  int within_max_rate = 0;
  for (int trial = 0; trial < 300; ++trial) {
    const auto& sh = shapes[static_cast<std::size_t>(trial) % shapes.size()];
    const std::int64_t n_layer = 2 + trial % 4;
    const std::int64_t chunk = 1 + trial % 2;
    auto model = random_mlp_model(rng, n_layer, sh.n_head, sh.n_kv, 6 + trial % 7, chunk);
    const std::int64_t e = model.n_embd, d = model.head_dim_k;  // head_dim_v = d
    // Weights by plain loop: the parameters each layer's rate applies to.
    const bool heads = sh.s.contains(structure::heads), groups = sh.s.contains(structure::groups), mlp = sh.s.contains(structure::mlp);
    const std::int64_t g = sh.n_head / sh.n_kv;
    std::int64_t step = 0, step_cost = 0;
    if (groups) step = g, step_cost = e * (g * d + d + d + g * d);
    if (heads) step = sh.n_kv == sh.n_head ? 1 : sh.n_kv, step_cost = sh.n_kv == sh.n_head ? e * 2 * (d + d) : sh.n_kv * e * (d + d);
    const std::int64_t n_ff = model.layers[0].n_ff;
    const std::int64_t layer_weight = (heads || groups ? sh.n_head / step * step_cost : 0) + (mlp ? n_ff * 3 * e : 0);
    model.total_parameters = n_layer * (sh.n_head * 2 * e * d + 2 * sh.n_kv * e * d + 3 * n_ff * e) + 500;
    np::pruning_options o;
    o.unit = np::budget_unit::parameters;
    o.structures = sh.s;
    o.game = np::head_game::none;
    o.target = target(rng);
    o.max_prune = 0.8;
    o.freeze_last = trial % 5 == 0 ? 1 : 0;
    auto r = trial_rates(trial);
    r.max_rate = 0.5;
    const auto li = random_importance(rng, n_layer);
    const auto in_scope = n_layer - o.freeze_last;
    const auto requested = static_cast<std::int64_t>(std::floor(o.target * static_cast<double>(model.total_parameters) + 1e-9));
    if (static_cast<double>(requested) > 0.5 * static_cast<double>(in_scope * layer_weight)) continue;  // beyond max_rate
    const auto out = np::plan_unbalanced_rates(model, li, o, r);
    ASSERT_EQ(out.report.requested, requested);
    ASSERT_EQ(out.report.unit, np::budget_unit::parameters);
    // The rates: layer_pruning_rates for R / Σ w over the unfrozen layers, so Σ rate·w = R.
    auto solve = r;
    solve.target = static_cast<double>(requested) / static_cast<double>(in_scope * layer_weight);
    const auto rates = np::layer_pruning_rates<double>(li.head(in_scope), Eigen::VectorXd::Constant(in_scope, static_cast<double>(layer_weight)), solve);
    double weighted = 0;
    for (std::int64_t l = 0; l < in_scope; ++l) {
      EXPECT_NEAR(out.report.rates[l], rates.rates[l], 1e-12);
      weighted += out.report.rates[l] * static_cast<double>(layer_weight);
    }
    EXPECT_NEAR(weighted, static_cast<double>(requested), 1e-6 * static_cast<double>(requested) + 1e-9);
    // What the plan removes, counted by plain loop over its layers.
    std::int64_t removed = 0;
    for (std::int64_t l = 0; l < n_layer; ++l) {
      const auto& p = out.plan.layers[static_cast<std::size_t>(l)];
      const auto q = sh.n_head - static_cast<std::int64_t>(p.heads.q_heads.size());
      const auto kv = sh.n_kv - static_cast<std::int64_t>(p.heads.kv_heads.size());
      const auto c = n_ff - static_cast<std::int64_t>(p.channels.size());
      removed += q * e * 2 * d + kv * e * 2 * d + c * 3 * e;
      if (l >= in_scope) {
        EXPECT_EQ(q + c, 0) << "frozen layer " << l;
      }
      if (!mlp) {
        EXPECT_EQ(c, 0);
      }
      if (!heads && !groups) {
        EXPECT_EQ(q, 0);
      }
      EXPECT_EQ(q, out.report.removed[static_cast<std::size_t>(l)]);
      EXPECT_EQ(c % chunk, 0);
      // Each count at least its floor (the caps do not bind here: rates <= 0.5 < max_prune).
      if (l < in_scope && (heads || groups)) {
        EXPECT_GE(q / step, static_cast<std::int64_t>(std::floor(rates.rates[l] * static_cast<double>(sh.n_head / step) + 1e-9)));
      }
      if (l < in_scope && mlp) {
        EXPECT_GE(c / chunk, static_cast<std::int64_t>(std::floor(rates.rates[l] * static_cast<double>(n_ff / chunk) + 1e-9)));
      }
    }
    ASSERT_EQ(removed, out.report.removed_total) << "trial " << trial;
    EXPECT_LE(removed, requested);
    // Nothing more fits: the budget left is below every step that still has room.
    const std::int64_t channel_cap = std::min(static_cast<std::int64_t>(std::floor(0.8 * static_cast<double>(n_ff) + 1e-9)), n_ff - 1) / chunk;
    const std::int64_t head_cap = std::min((sh.n_head - np::seed_min_keep(sh.n_head, o.decisions())) / std::max<std::int64_t>(step, 1),
                                           sh.n_head / std::max<std::int64_t>(step, 1) - 1);
    for (std::int64_t l = 0; l < in_scope; ++l) {
      if (mlp && out.report.removed_channels[static_cast<std::size_t>(l)] / chunk < channel_cap) {
        EXPECT_LT(requested - removed, chunk * 3 * e);
      }
      if ((heads || groups) && out.report.removed[static_cast<std::size_t>(l)] / step < head_cap) {
        EXPECT_LT(requested - removed, step_cost);
      }
    }
    // The choice: each layer's channels and heads of least score.
    expect_least_scored_channels(model, out, trial);
    for (std::int64_t l = 0; l < n_layer && (heads || groups); ++l) {
      const auto& scores = model.layers[static_cast<std::size_t>(l)].heads;
      double kept = 0;
      for (const auto h : out.plan.layers[static_cast<std::size_t>(l)].heads.q_heads) kept += scores[h];
      EXPECT_NEAR(scores.sum() - kept, least_removal(scores, sh.n_kv, groups, out.report.removed[static_cast<std::size_t>(l)]), 1e-12);
    }
    ++within_max_rate;
  }
  EXPECT_GT(within_max_rate, 200) << "trials whose target the rates reach under max_rate";
}

TEST(DepthPreset, DropsTheLayersAPlainLoopFinds) {
  std::mt19937 rng(11);
  std::uniform_real_distribution<double> score(0.0, 1.0);
  int checked = 0;
  for (int trial = 0; trial < 200; ++trial) {
    const std::int64_t n = 4 + trial % 9;
    const auto model = random_model(rng, n, 4, 4);
    Eigen::VectorXd s(n);
    for (auto& v : s) v = score(rng);
    const auto preset = trial % 2 == 0 ? np::depth_preset::drop_25_percent : np::depth_preset::drop_50_percent;
    const auto selection = trial % 4 < 2 ? np::depth_selection::any_set : np::depth_selection::contiguous_block;
    np::pruning_options o;
    o.keep_first_layers = trial % 3 == 0 ? 1 : 0;
    o.freeze_last = trial % 5 == 0 ? 1 : 0;
    const std::int64_t k = preset == np::depth_preset::drop_25_percent ? n / 4 : n / 2;
    const std::int64_t first = o.keep_first_layers, last = n - o.freeze_last;
    // Plain loop: every set of k droppable layers (contiguous ones only for the block), least total score.
    double best = std::numeric_limits<double>::infinity();
    for (std::int64_t mask = 0; mask < (std::int64_t{1} << n); ++mask) {
      std::int64_t count = 0, lo = n, hi = -1;
      double sum = 0;
      for (std::int64_t l = 0; l < n; ++l) {
        if ((mask >> l & 1) == 0) continue;
        ++count;
        sum += s[l];
        lo = std::min(lo, l);
        hi = std::max(hi, l);
      }
      if (count != k || (count > 0 && (lo < first || hi >= last))) continue;
      if (selection == np::depth_selection::contiguous_block && count > 0 && hi - lo + 1 != k) continue;
      best = std::min(best, sum);
    }
    const auto plan = np::plan_depth_preset(model, s, preset, selection, o);
    std::int64_t dropped = 0;
    double sum = 0;
    for (std::int64_t l = 0; l < n; ++l) {
      const auto& p = plan.layers[static_cast<std::size_t>(l)];
      EXPECT_EQ(p.heads.q_heads.size(), 4U);
      if (p.keep_layer) continue;
      ++dropped;
      sum += s[l];
      EXPECT_GE(l, first);
      EXPECT_LT(l, last);
    }
    EXPECT_EQ(dropped, k);
    EXPECT_NEAR(sum, k == 0 ? 0.0 : best, 1e-12) << "trial " << trial;
    ++checked;
  }
  EXPECT_EQ(checked, 200);
}

TEST(DepthPreset, BadInputIsNamed) {
  std::mt19937 rng(2);
  const auto model = random_model(rng, 4, 4, 4);
  np::pruning_options o;
  expect_error<std::invalid_argument>(
      [&] { (void)np::plan_depth_preset(model, Eigen::VectorXd::Ones(3), np::depth_preset::drop_25_percent, np::depth_selection::any_set, o); },
      {"layer_scores", "layer count is 3, expected 4"});
  o.freeze_first = 3;
  expect_error<std::invalid_argument>(
      [&] { (void)np::plan_depth_preset(model, Eigen::VectorXd::Ones(4), np::depth_preset::drop_50_percent, np::depth_selection::any_set, o); },
      {"layers_to_drop", "2 lies outside [0, 1]"});
}

}  // namespace
