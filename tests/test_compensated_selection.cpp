// compensated_selection.hpp: the OBS cost equals the refit's measured error, the
// per-layer enumeration equals a brute force over every subset of heads filtered by
// GQA consistency, the greedy curves charge exactly the cost of the sets they return,
// the allocation over layers equals a brute force over all combinations, a head
// duplicated by another is free after the refit, and bad inputs are named. The obs
// game of pruning_plan.hpp equals a brute force over every combination of every
// layer's GQA-consistent sets (heads or parameters as the budget, caps and frozen
// layers), and with MLP channels a brute force over the per-layer curves.
#include <gtest/gtest.h>

#include <nashprune/compensated_selection.hpp>
#include <nashprune/pruning_plan.hpp>

#include <algorithm>
#include <array>
#include <tuple>
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

/// Every removal of `count` q heads that leaves some groups keeping the same number
/// of heads each and the other groups none (the mixes of whole groups and heads per
/// group a head count may need), by trying every subset.
std::vector<std::vector<std::int64_t>> brute_force_mixed_sets(const np::attention_geometry& g, std::int64_t count) {
  std::vector<std::vector<std::int64_t>> sets;
  const std::int64_t n = g.n_head();
  for (std::uint32_t mask = 0; mask < (1U << n); ++mask) {
    std::vector<std::int64_t> removed;
    std::vector<std::int64_t> kept_in_group(static_cast<std::size_t>(g.n_head_kv()), 0);
    for (std::int64_t h = 0; h < n; ++h) {
      if ((mask >> h) & 1U) {
        removed.push_back(h);
      } else {
        ++kept_in_group[static_cast<std::size_t>(h / g.group_size())];
      }
    }
    if (static_cast<std::int64_t>(removed.size()) != count || count == n) continue;
    std::int64_t kept_per_group = 0;
    bool consistent = true;
    for (const auto kept : kept_in_group) {
      if (kept == 0) continue;
      if (kept_per_group == 0) kept_per_group = kept;
      consistent = consistent && kept == kept_per_group;
    }
    if (consistent) sets.push_back(removed);
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

// ---------------------------------------------------------------------------
// The obs game (pruning_plan.hpp)

struct obs_model {
  np::model_scores scores;
  std::vector<layer_data> attention;  // per layer: attn_output's input data
  std::vector<layer_data> mlp;        // per layer: ffn_down's input data
  std::vector<double> scale;
};

constexpr std::int64_t embd = 5;
constexpr std::int64_t head_dim = 2;

// Layers of (n_head, n_head_kv, n_ff); attn_output and ffn_down of random data.
obs_model make_obs_model(const std::vector<std::array<std::int64_t, 3>>& layers, std::uint32_t seed) {
  obs_model m;
  m.scores.n_embd = embd;
  m.scores.head_dim_k = head_dim;
  m.scores.head_dim_v = head_dim;
  m.scores.total_parameters = 4000;
  for (std::size_t l = 0; l < layers.size(); ++l) {
    const auto [n_head, n_head_kv, n_ff] = layers[l];
    m.scores.layers.push_back({n_head, n_head_kv, n_ff, 1, VectorXd::Zero(n_head), VectorXd::Zero(n_ff)});
    m.attention.push_back(random_layer(n_head * head_dim, embd, seed + static_cast<std::uint32_t>(10 * l)));
    m.mlp.push_back(random_layer(n_ff, embd, seed + static_cast<std::uint32_t>(10 * l + 5)));
    m.scale.push_back(0.5 + static_cast<double>(l % 3) * 0.75);
  }
  return m;
}

np::compensated_error_game game_of(const obs_model& m, const np::pruning_options& o) {
  np::compensated_error_game game;
  for (std::size_t l = 0; l < m.attention.size(); ++l) {
    np::compensated_layer layer;
    const auto& a = m.attention[l];
    const auto& f = m.mlp[l];
    if (o.wants_heads()) layer.attention.emplace(a.weight, a.second_moment, a.mean, 0.0);
    if (o.wants(np::structure::mlp)) layer.mlp.emplace(f.weight, f.second_moment, f.mean, 0.0);
    layer.scale = m.scale[l];
    game.layers.push_back(std::move(layer));
  }
  return game;
}

// One candidate removal of one layer: the budget it spends and its scaled refit error.
struct candidate {
  std::vector<std::int64_t> removed;
  std::int64_t budget = 0;
  double error = 0;
};

// Every GQA-consistent head removal of layer l the caps allow (with `mixes`, also
// those keeping some groups whole and the same heads of the others), its budget and
// its error after the refit measured by compensate.
std::vector<candidate> head_candidates(const obs_model& m, std::size_t l, const np::pruning_options& o, bool mixes = false) {
  const auto& layer = m.scores.layers[l];
  const np::attention_geometry g(layer.n_head, layer.n_head_kv, head_dim);
  const auto granularity = !o.wants(np::structure::heads) ? np::head_granularity::whole_groups
                           : g.is_multi_head()            ? np::head_granularity::single_heads
                                                          : np::head_granularity::heads_per_group;
  std::int64_t most = layer.n_head - o.min_heads;
  for (std::int64_t c = 0; c <= layer.n_head; ++c)
    if (static_cast<double>(c) > o.max_prune * static_cast<double>(layer.n_head) + 1e-9) most = std::min(most, c - 1);
  std::vector<candidate> out;
  for (std::int64_t count = 0; count <= most; ++count) {
    for (const auto& removed : mixes ? brute_force_mixed_sets(g, count) : brute_force_sets(g, granularity, count)) {
      std::int64_t whole_groups = 0;
      for (std::int64_t j = 0; j < g.n_head_kv(); ++j) {
        bool all = true;
        for (std::int64_t h = j * g.group_size(); h < (j + 1) * g.group_size(); ++h)
          all = all && std::binary_search(removed.begin(), removed.end(), h);
        whole_groups += all ? 1 : 0;
      }
      const std::int64_t budget = o.unit == np::budget_unit::heads ? count : (count + whole_groups) * embd * 2 * head_dim;
      out.push_back({removed, budget, m.scale[l] * refit_error(m.attention[l], np::unit_coordinates(removed, head_dim))});
    }
  }
  return out;
}

// The least summed error among the combinations of one candidate per layer that
// spend the most budget <= requested: {budget spent, error}.
std::pair<std::int64_t, double> brute_force_best(const std::vector<std::vector<candidate>>& layers, std::int64_t requested) {
  std::pair<std::int64_t, double> best{-1, 0};
  std::vector<std::size_t> pick(layers.size(), 0);
  while (true) {
    std::int64_t budget = 0;
    double error = 0;
    for (std::size_t l = 0; l < layers.size(); ++l) budget += layers[l][pick[l]].budget, error += layers[l][pick[l]].error;
    if (budget <= requested && (budget > best.first || (budget == best.first && error < best.second))) best = {budget, error};
    std::size_t l = 0;
    while (l < layers.size() && ++pick[l] == layers[l].size()) pick[l++] = 0;
    if (l == layers.size()) break;
  }
  return best;
}

// The plan's summed refit error, recomputed by compensate from what it removes.
double plan_error(const obs_model& m, const np::pruning_result& r) {
  double error = 0;
  for (std::size_t l = 0; l < m.attention.size(); ++l) {
    const auto& layer = m.scores.layers[l];
    const auto& p = r.layers[l];
    const auto heads = np::complement_units(p.heads.q_heads, layer.n_head);
    const auto channels = np::complement_units(p.channels, layer.n_ff);
    if (!heads.empty()) error += m.scale[l] * refit_error(m.attention[l], np::unit_coordinates(heads, head_dim));
    if (!channels.empty()) error += m.scale[l] * refit_error(m.mlp[l], channels);
  }
  return error;
}

TEST(CompensatedPlan, HeadsAndGroupsEqualBruteForceOverEveryLayersSets) {
  const auto m = make_obs_model({{{4, 2, 3}}, {{3, 3, 3}}, {{4, 2, 3}}, {{4, 1, 3}}}, 300);
  for (const auto structure : {np::structure::heads, np::structure::groups}) {
    for (const auto unit : {np::budget_unit::heads, np::budget_unit::parameters}) {
      for (const auto& [min_heads, max_prune, freeze_first] : {std::tuple{1, 1.0, 0}, std::tuple{2, 0.7, 0}, std::tuple{1, 0.6, 1}}) {
        np::pruning_options o;
        o.structures = {structure};
        o.unit = unit;
        o.selection = np::selector::exact;
        o.min_heads = min_heads;
        o.max_prune = max_prune;
        o.freeze_first = freeze_first;
        std::vector<std::vector<candidate>> layers;
        std::vector<std::vector<candidate>> mixed_layers;  // a head count the granularity's sets miss is met with mixes
        for (std::size_t l = static_cast<std::size_t>(freeze_first); l < m.attention.size(); ++l) {
          layers.push_back(head_candidates(m, l, o));
          mixed_layers.push_back(head_candidates(m, l, o, structure == np::structure::heads));
        }
        const std::int64_t total = unit == np::budget_unit::heads ? 15 : m.scores.total_parameters;
        for (const double target : {0.1, 0.2, 0.3, 0.45, 0.6}) {
          o.target = target;
          const auto requested = static_cast<std::int64_t>(std::floor(target * static_cast<double>(total) + 1e-9));
          const auto r = np::plan_pruning(m.scores, game_of(m, o), o);
          auto [budget, error] = brute_force_best(layers, requested);
          if (unit == np::budget_unit::heads && budget != requested) {
            const auto mixed = brute_force_best(mixed_layers, requested);
            if (mixed.first > budget) std::tie(budget, error) = mixed;
          }
          const std::string where = std::string(structure == np::structure::heads ? "heads" : "groups") +
                                    (unit == np::budget_unit::heads ? " per head" : " per parameter") + " min_heads " +
                                    std::to_string(min_heads) + " target " + std::to_string(target);
          ASSERT_TRUE(r.compensated.has_value());
          EXPECT_EQ(r.compensated->requested, requested) << where;
          EXPECT_EQ(r.compensated->removed, budget) << where;
          EXPECT_NEAR(r.compensated->error, error, 1e-8 * (1 + error)) << where;
          EXPECT_NEAR(plan_error(m, r), error, 1e-8 * (1 + error)) << where;
          for (std::size_t l = 0; l < static_cast<std::size_t>(freeze_first); ++l) EXPECT_EQ(r.layers[l].heads.q_heads.size(), 4U) << where;
          for (std::size_t l = 0; l < m.attention.size(); ++l) {
            const auto& layer = m.scores.layers[l];
            EXPECT_NO_THROW((void)np::attention_geometry(layer.n_head, layer.n_head_kv, head_dim).validate(r.layers[l].heads)) << where;
          }
        }
      }
    }
  }
}

TEST(CompensatedPlan, HeadsAndChannelsEqualBruteForceOverThePerLayerCurves) {
  auto m = make_obs_model({{{4, 2, 6}}, {{4, 2, 8}}, {{3, 3, 5}}}, 500);
  m.scores.layers[1].mlp_chunk = 2;
  np::pruning_options o;
  o.structures = {np::structure::heads, np::structure::mlp};
  o.selection = np::selector::exact;
  o.max_prune = 0.75;
  const auto game = game_of(m, o);
  // The curves the game allocates over, built here from the library's per-layer searches.
  std::vector<std::vector<candidate>> layers;
  for (std::size_t l = 0; l < m.attention.size(); ++l) {
    const auto& layer = m.scores.layers[l];
    const np::attention_geometry g(layer.n_head, layer.n_head_kv, head_dim);
    const auto heads = np::obs_head_curve(*game.layers[l].attention, g,
                                          g.is_multi_head() ? np::head_granularity::single_heads : np::head_granularity::heads_per_group,
                                          std::int64_t{1} << 12, layer.n_head - 1);
    std::vector<candidate> h;
    for (std::size_t k = 0; k < heads.count.size(); ++k) {
      const std::int64_t kv = g.is_multi_head() ? heads.count[k] : 0;
      h.push_back({heads.removed[k], (heads.count[k] + kv) * embd * 2 * head_dim, m.scale[l] * heads.cost[k]});
    }
    layers.push_back(h);
    const std::int64_t most = static_cast<std::int64_t>(0.75 * static_cast<double>(layer.n_ff)) / layer.mlp_chunk * layer.mlp_chunk;
    const auto channels = np::obs_channel_curve(*game.layers[l].mlp, most, layer.mlp_chunk);
    std::vector<candidate> c;
    for (std::size_t k = 0; k < channels.count.size(); ++k) {
      EXPECT_EQ(channels.count[k] % layer.mlp_chunk, 0);
      c.push_back({channels.removed[k], channels.count[k] * 3 * embd, m.scale[l] * channels.cost[k]});
    }
    layers.push_back(c);
  }
  for (const double target : {0.05, 0.1, 0.17, 0.25}) {
    o.target = target;
    const auto requested = static_cast<std::int64_t>(std::floor(target * static_cast<double>(m.scores.total_parameters) + 1e-9));
    const auto r = np::plan_pruning(m.scores, game, o);
    const auto [budget, error] = brute_force_best(layers, requested);
    ASSERT_TRUE(r.compensated.has_value());
    EXPECT_EQ(r.compensated->removed, budget) << target;
    EXPECT_LE(r.compensated->removed, requested) << target;
    EXPECT_NEAR(r.compensated->error, error, 1e-8 * (1 + error)) << target;
    EXPECT_NEAR(plan_error(m, r), error, 1e-6 * (1 + error)) << target;
    EXPECT_EQ((8 - static_cast<std::int64_t>(r.layers[1].channels.size())) % 2, 0) << target;
  }
}

TEST(CompensatedPlan, HeadCountsTheGroupStepsMissAreMetWithTheLeastErrorMixes) {
  // 8 heads in 4 groups of 2: the same heads of every group go 4 at a time, so 6 of
  // 24 heads (25 %) need a layer that loses some whole groups and heads of the others.
  const auto m = make_obs_model({{{8, 4, 3}}, {{8, 4, 3}}, {{8, 4, 3}}}, 1100);
  np::pruning_options o;
  o.structures = {np::structure::heads};
  o.unit = np::budget_unit::heads;
  std::vector<std::vector<candidate>> layers;
  for (std::size_t l = 0; l < 3; ++l) layers.push_back(head_candidates(m, l, o, /*mixes=*/true));
  for (const double target : {0.25, 0.3, 0.375}) {  // 6, 7 and 9 heads
    o.target = target;
    const auto requested = static_cast<std::int64_t>(std::floor(target * 24 + 1e-9));
    const auto [budget, error] = brute_force_best(layers, requested);
    ASSERT_EQ(budget, requested);
    // The greedy selector enumerates these layers' sets (at most 32 a count) as the
    // exact one does; with greedy_max_sets 1 it enumerates none and still meets the count.
    for (const auto& [how, greedy_max_sets] : {std::pair{np::selector::exact, std::int64_t{64}}, std::pair{np::selector::greedy, std::int64_t{64}},
                                               std::pair{np::selector::greedy, std::int64_t{1}}}) {
      o.selection = how;
      auto game = game_of(m, o);
      game.greedy_max_sets = greedy_max_sets;
      const auto r = np::plan_pruning(m.scores, game, o);
      const std::string where = "target " + std::to_string(target) + (how == np::selector::exact ? " exact" : " greedy") +
                                " greedy_max_sets " + std::to_string(greedy_max_sets);
      std::int64_t removed = 0;
      for (const auto& layer : r.layers) removed += 8 - static_cast<std::int64_t>(layer.heads.q_heads.size());
      EXPECT_EQ(removed, requested) << where;
      EXPECT_EQ(r.compensated->removed, requested) << where;
      EXPECT_NEAR(plan_error(m, r), r.compensated->error, 1e-8 * (1 + error)) << where;
      if (greedy_max_sets > 1) {
        EXPECT_NEAR(r.compensated->error, error, 1e-8 * (1 + error)) << where;
        EXPECT_EQ(r.compensated->exact_choices, 3) << where;
      } else {
        EXPECT_GE(r.compensated->error, error * (1 - 1e-9)) << where;
        EXPECT_LT(r.compensated->exact_choices, 3) << where;
      }
      for (std::size_t l = 0; l < 3; ++l) EXPECT_NO_THROW((void)np::attention_geometry(8, 4, head_dim).validate(r.layers[l].heads)) << target;
    }
  }
}

TEST(CompensatedPlan, GreedySelectorCostsNoLessThanTheEnumeration) {
  const auto m = make_obs_model({{{8, 4, 3}}, {{8, 4, 3}}, {{8, 2, 3}}}, 700);
  for (const auto structure : {np::structure::heads, np::structure::groups}) {
    np::pruning_options o;
    o.structures = {structure};
    o.unit = np::budget_unit::heads;
    for (const double target : {0.25, 0.5}) {
      o.target = target;
      o.selection = np::selector::exact;
      const auto exact = np::plan_pruning(m.scores, game_of(m, o), o);
      o.selection = np::selector::greedy;
      auto game = game_of(m, o);
      game.greedy_max_sets = 1;  // SlimGPT's greedy and the closed form for every count
      const auto greedy = np::plan_pruning(m.scores, game, o);
      EXPECT_EQ(greedy.compensated->removed, exact.compensated->removed);
      EXPECT_GE(greedy.compensated->error, exact.compensated->error * (1 - 1e-9));
      EXPECT_NEAR(plan_error(m, greedy), greedy.compensated->error, 1e-8 * (1 + greedy.compensated->error));
      // Where every count's sets number at most greedy_max_sets, the greedy selector's choice is the exact one.
      const auto enumerated = np::plan_pruning(m.scores, game_of(m, o), o);
      EXPECT_NEAR(enumerated.compensated->error, exact.compensated->error, 1e-9 * (1 + exact.compensated->error));
      EXPECT_EQ(enumerated.compensated->exact_choices, exact.compensated->exact_choices);
    }
  }
}

TEST(CompensatedPlan, BadInputsAreRefusedNamingTheArgument) {
  const auto m = make_obs_model({{{4, 2, 3}}, {{4, 2, 3}}}, 900);
  np::pruning_options o;
  o.unit = np::budget_unit::heads;
  auto game = game_of(m, o);
  game.layers[1].attention.reset();
  expect_error<std::invalid_argument>([&] { (void)np::plan_pruning(m.scores, game, o); }, {"layers[1].attention", "unset"});
  game = game_of(m, o);
  game.layers.pop_back();
  expect_error<std::invalid_argument>([&] { (void)np::plan_pruning(m.scores, game, o); }, {"layers", "layer count"});
  game = game_of(m, o);
  game.layers[0].attention.emplace(m.mlp[0].weight, m.mlp[0].second_moment, m.mlp[0].mean);
  expect_error<std::invalid_argument>([&] { (void)np::plan_pruning(m.scores, game, o); }, {"layers[0].attention", "input width"});
  game = game_of(m, o);
  game.layers[0].scale = -1;
  expect_error<std::invalid_argument>([&] { (void)np::plan_pruning(m.scores, game, o); }, {"layers[0].scale"});
  auto bad = o;
  bad.structures = {np::structure::heads, np::structure::layers};
  expect_error<std::invalid_argument>([&] { (void)np::plan_pruning(m.scores, game_of(m, o), bad); }, {"structures", "heads, groups and mlp"});
  bad = o;
  bad.structures = {np::structure::heads, np::structure::mlp};
  expect_error<std::invalid_argument>([&] { (void)np::plan_pruning(m.scores, game_of(m, bad), bad); }, {"structures", "mlp"});
  bad = o;
  bad.lambda_auto = true;
  expect_error<std::invalid_argument>([&] { (void)np::plan_pruning(m.scores, game_of(m, o), bad); }, {"lambda_auto"});
  bad = o;
  bad.freeze_first = 2;
  expect_error<std::invalid_argument>([&] { (void)np::plan_pruning(m.scores, game_of(m, o), bad); }, {"structures", "nothing to prune"});
  game = game_of(m, o);
  game.max_sets = 0;
  expect_error<std::invalid_argument>([&] { (void)np::plan_pruning(m.scores, game, o); }, {"max_sets"});
  game = game_of(m, o);
  game.greedy_max_sets = 0;
  expect_error<std::invalid_argument>([&] { (void)np::plan_pruning(m.scores, game, o); }, {"greedy_max_sets"});
}

}  // namespace
