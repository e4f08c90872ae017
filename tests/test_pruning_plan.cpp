// nashprune/pruning_plan.hpp: plans on small hand-built models against
// references written as plain loops, random models against the ascending-order
// reference, and every bad input named.
#include <nashprune/pruning_plan.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "expect_error.hpp"

namespace {

namespace np = nashprune;
using nashprune_test::expect_error;

// Multi-head attention layers with these head scores (head_dim 2, FFN of n_ff
// channels scored 1 each, unless given).
np::model_scores mha_model(const std::vector<std::vector<double>>& heads, std::int64_t n_ff = 4) {
  np::model_scores m;
  m.n_embd = 16;
  m.head_dim_k = 2;
  m.head_dim_v = 2;
  m.total_parameters = 100000;
  for (const auto& h : heads) {
    np::layer_scores l;
    l.n_head = static_cast<std::int64_t>(h.size());
    l.n_head_kv = l.n_head;
    l.n_ff = n_ff;
    l.heads = Eigen::Map<const Eigen::VectorXd>(h.data(), static_cast<Eigen::Index>(h.size()));
    l.channels = Eigen::VectorXd::Ones(n_ff);
    m.layers.push_back(l);
  }
  return m;
}

np::pruning_options heads_only(double target) {
  np::pruning_options o;
  o.target = target;
  o.unit = np::budget_unit::heads;
  o.game = np::head_game::none;
  return o;
}

// The (layer, head) pairs a plan removes.
std::set<std::pair<std::int64_t, std::int64_t>> removed_heads(const np::pruning_result& r, const np::model_scores& m) {
  std::set<std::pair<std::int64_t, std::int64_t>> out;
  for (std::size_t l = 0; l < r.layers.size(); ++l) {
    for (std::int64_t h = 0; h < m.layers[l].n_head; ++h) {
      const auto& q = r.layers[l].heads.q_heads;
      if (!r.layers[l].keep_layer || !std::binary_search(q.begin(), q.end(), h)) out.insert({static_cast<std::int64_t>(l), h});
    }
  }
  return out;
}

// Reference: walk all heads by ascending importance (ties: layer, then head) and
// remove each while the budget lasts and its layer keeps at least min_heads and
// loses at most floor(max_prune · n_head).
std::set<std::pair<std::int64_t, std::int64_t>> ascending_reference(const np::model_scores& m, std::int64_t budget,
                                                                     std::int64_t min_heads, double max_prune) {
  std::vector<std::tuple<double, std::int64_t, std::int64_t>> all;
  for (std::size_t l = 0; l < m.layers.size(); ++l) {
    for (Eigen::Index h = 0; h < m.layers[l].heads.size(); ++h) all.emplace_back(m.layers[l].heads[h], l, h);
  }
  std::stable_sort(all.begin(), all.end(), [](const auto& a, const auto& b) { return std::get<0>(a) < std::get<0>(b); });
  std::vector<std::int64_t> lost(m.layers.size(), 0);
  std::set<std::pair<std::int64_t, std::int64_t>> out;
  for (const auto& [score, l, h] : all) {
    if (static_cast<std::int64_t>(out.size()) == budget) break;
    const auto n = m.layers[static_cast<std::size_t>(l)].n_head;
    const auto cap = std::min(n - min_heads, static_cast<std::int64_t>(max_prune * static_cast<double>(n) + 1e-9));
    if (lost[static_cast<std::size_t>(l)] >= cap) continue;
    ++lost[static_cast<std::size_t>(l)];
    out.insert({l, h});
  }
  return out;
}

TEST(PruningPlan, HeadsByImportanceAlone) {
  const auto m = mha_model({{0.5, 0.1, 0.9, 0.3}, {0.2, 0.8, 0.05, 0.6}});
  const auto r = np::plan_pruning(m, heads_only(0.25));
  const std::set<std::pair<std::int64_t, std::int64_t>> expected{{0, 1}, {1, 2}};
  EXPECT_EQ(removed_heads(r, m), expected);
  EXPECT_EQ(r.layers[0].heads.q_heads, (std::vector<std::int64_t>{0, 2, 3}));
  EXPECT_EQ(r.layers[1].heads.kv_heads, (std::vector<std::int64_t>{0, 1, 3}));
  ASSERT_EQ(r.heads.size(), 8U);
  EXPECT_TRUE(r.heads[1].pruned);
  EXPECT_DOUBLE_EQ(r.heads[1].importance, 0.1);
  EXPECT_DOUBLE_EQ(r.heads[1].participation, 1.0);
  EXPECT_FALSE(r.lambda.has_value());
  EXPECT_FALSE(r.game.has_value());
  // Channels stay.
  EXPECT_EQ(r.layers[0].channels, (std::vector<std::int64_t>{0, 1, 2, 3}));
}

TEST(PruningPlan, PerLayerCapsMoveTheRemovalToTheNextLayer) {
  const auto m = mha_model({{0.01, 0.02, 0.03, 0.04}, {1, 2, 3, 4}});
  auto o = heads_only(0.5);
  o.max_prune = 0.5;
  const auto r = np::plan_pruning(m, o);
  const std::set<std::pair<std::int64_t, std::int64_t>> expected{{0, 0}, {0, 1}, {1, 0}, {1, 1}};
  EXPECT_EQ(removed_heads(r, m), expected);
  EXPECT_EQ(removed_heads(r, m), ascending_reference(m, 4, 1, 0.5));
}

TEST(PruningPlan, RandomModelsMatchTheAscendingReference) {
  std::mt19937 rng(11);
  std::uniform_real_distribution<double> score(0.0, 1.0);
  std::uniform_int_distribution<int> layers(1, 6), heads(2, 8);
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<std::vector<double>> h(static_cast<std::size_t>(layers(rng)));
    for (auto& l : h) {
      l.resize(static_cast<std::size_t>(heads(rng)));
      for (auto& x : l) x = score(rng);
    }
    const auto m = mha_model(h);
    auto o = heads_only(std::uniform_real_distribution<double>(0.0, 0.9)(rng));
    o.max_prune = std::uniform_real_distribution<double>(0.1, 1.0)(rng);
    o.min_heads = std::uniform_int_distribution<int>(1, 2)(rng);
    const auto budget = np::budget_from_fraction(o.target, m.total_heads());
    const auto reference = ascending_reference(m, budget, o.min_heads, o.max_prune);
    const auto most = ascending_reference(m, m.total_heads(), o.min_heads, o.max_prune).size();
    EXPECT_EQ(np::reach_of(m, o).largest, static_cast<std::int64_t>(most)) << "trial " << trial;
    if (static_cast<std::int64_t>(reference.size()) < budget) {
      // Beyond the caps: refused, naming the target and the most the caps allow.
      expect_error<std::invalid_argument>([&] { (void)np::plan_pruning(m, o); }, {"'target'", ("at most " + std::to_string(most)).c_str()});
    } else {
      EXPECT_EQ(removed_heads(np::plan_pruning(m, o), m), reference) << "trial " << trial;
    }
  }
}

TEST(PruningPlan, MlpChunksGoLeastImportantFirst) {
  auto m = mha_model({{1, 1}}, 8);
  m.layers[0].mlp_chunk = 4;
  m.layers[0].channels << 5, 0.1, 7, 0.3, 0.2, 9, 0.4, 8;
  np::pruning_options o;
  o.game = np::head_game::none;
  o.structures = {np::structure::mlp};
  // One chunk of 4 channels costs 4 · mlp_channel_cost(n_embd): the budget fits one, not two.
  const auto chunk = 4 * np::mlp_channel_cost(m.n_embd);
  o.target = 1.5 * static_cast<double>(chunk) / static_cast<double>(m.total_parameters);
  const auto r = np::plan_pruning(m, o);
  // Reference: the 4 smallest channels (1, 3, 4, 6) go.
  std::vector<std::int64_t> order(8);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](auto a, auto b) { return m.layers[0].channels[a] < m.layers[0].channels[b]; });
  std::vector<std::int64_t> kept(order.begin() + 4, order.end());
  std::sort(kept.begin(), kept.end());
  EXPECT_EQ(r.layers[0].channels, kept);
  EXPECT_EQ(kept, (std::vector<std::int64_t>{0, 2, 5, 7}));
  EXPECT_EQ(r.layers[0].heads.q_heads.size(), 2U);
}

TEST(PruningPlan, CosineGameScalesImportanceByParticipation) {
  // Heads 0 and 1 are duplicates (cosine 1), head 2 stands alone.
  const auto m = mha_model({{1.0, 0.9, 0.5}});
  Eigen::MatrixXd cosine = Eigen::MatrixXd::Identity(3, 3);
  cosine(0, 1) = cosine(1, 0) = 1.0;
  cosine(0, 2) = cosine(2, 0) = -0.4;  // anti-correlated: clipped to 0
  np::pruning_options o = heads_only(0.0);
  o.game = np::head_game::cosine;
  o.lambda = 2.0;
  const auto r = np::plan_pruning(m, np::cosine_game{{cosine}}, o);
  // Reference: the same game solved directly, its participation applied in a loop.
  Eigen::MatrixXd redundancy = cosine.cwiseMax(0.0);
  redundancy.diagonal().setOnes();
  const Eigen::VectorXd c = m.layers[0].heads / m.layers[0].heads.maxCoeff();
  const std::vector<np::nash_game<double>> games{np::make_nash_game(c, redundancy, 2.0)};
  const auto s = np::solve_nash_layers<double>(np::nash_solver_kind::active_set_newton, games, std::nullopt, 100).front().s;
  ASSERT_EQ(r.heads.size(), 3U);
  for (int h = 0; h < 3; ++h) {
    EXPECT_DOUBLE_EQ(r.heads[static_cast<std::size_t>(h)].participation, s[h]) << h;
    EXPECT_DOUBLE_EQ(r.heads[static_cast<std::size_t>(h)].importance, m.layers[0].heads[h]) << h;
    EXPECT_DOUBLE_EQ(r.heads[static_cast<std::size_t>(h)].redundancy_sum, redundancy.row(h).sum() - 1.0) << h;
  }
  EXPECT_LT(s[1], 1.0);  // the duplicate gives way
  // At 1 of 3 heads the game's weighted importance decides: the duplicate with the
  // lowest s_i · importance goes, not head 2 of lowest raw importance.
  o.target = 1.0 / 3.0 + 1e-12;
  const auto one = np::plan_pruning(m, np::cosine_game{{cosine}}, o);
  std::vector<double> weighted(3);
  for (int h = 0; h < 3; ++h) weighted[static_cast<std::size_t>(h)] = s[h] < o.threshold ? 0.0 : s[h] * m.layers[0].heads[h];
  const auto lowest = std::min_element(weighted.begin(), weighted.end()) - weighted.begin();
  EXPECT_EQ(removed_heads(one, m), (std::set<std::pair<std::int64_t, std::int64_t>>{{0, lowest}}));
}

TEST(PruningPlan, LambdaSearchReachesTheHeadCount) {
  const auto m = mha_model({{1.0, 0.9, 0.5, 0.4}, {0.7, 0.6, 0.8, 0.2}});
  Eigen::MatrixXd cosine = Eigen::MatrixXd::Identity(4, 4);
  cosine(0, 1) = cosine(1, 0) = 0.9;
  np::pruning_options o = heads_only(0.25);
  o.game = np::head_game::cosine;
  o.lambda_auto = true;
  const auto r = np::plan_pruning(m, np::cosine_game{{cosine, cosine}}, o);
  ASSERT_TRUE(r.lambda.has_value());
  EXPECT_EQ(r.lambda->requested, 2);
  EXPECT_EQ(r.lambda->plan_pruned, static_cast<std::int64_t>(removed_heads(r, m).size()));
  EXPECT_EQ(r.lambda->plan_pruned, 2);
  EXPECT_TRUE(r.lambda->reachable);
}

TEST(PruningPlan, AWholeLayerOfLowImportanceGoesWithItsHeads) {
  // No FFN: a layer's importance is its heads'.
  const auto m = mha_model({{0.9, 0.8}, {0.01, 0.02}, {0.7, 0.6}}, 0);
  np::pruning_options o = heads_only(1.0 / 3.0 + 1e-12);
  o.structures = {np::structure::layers, np::structure::heads};
  o.keep_first_layers = 1;
  const auto r = np::plan_pruning(m, o);
  EXPECT_TRUE(r.layers[0].keep_layer);
  EXPECT_FALSE(r.layers[1].keep_layer);
  EXPECT_TRUE(r.layers[2].keep_layer);
  EXPECT_EQ(removed_heads(r, m), (std::set<std::pair<std::int64_t, std::int64_t>>{{1, 0}, {1, 1}}));
  // keep_first_layers protects layer 0 whole even when it is the cheapest.
  const auto low_first = mha_model({{0.01, 0.02}, {0.9, 0.8}, {0.7, 0.6}}, 0);
  o.structures = {np::structure::layers};
  const auto kept = np::plan_pruning(low_first, o);
  EXPECT_TRUE(kept.layers[0].keep_layer);
  EXPECT_FALSE(kept.layers[2].keep_layer);
}

TEST(PruningPlan, MeasuredInfluenceScoresBlocks) {
  auto m = mha_model({{1, 1}, {1, 1}, {1, 1}});
  m.influence = {{0.5, 0.5, 0.5}, {0.3, 0.3, 0.01}, {0.4, 0.4, 0.4}};
  np::pruning_options o;
  o.game = np::head_game::none;
  o.structures = {np::structure::mlp_blocks};
  o.temperature = 0;
  const auto block = 4 * np::mlp_channel_cost(m.n_embd);
  o.target = 1.5 * static_cast<double>(block) / static_cast<double>(m.total_parameters);
  const auto r = np::plan_pruning(m, o);
  EXPECT_FALSE(r.layers[0].channels.empty());
  EXPECT_TRUE(r.layers[1].channels.empty());
  EXPECT_FALSE(r.layers[2].channels.empty());
}

TEST(PruningPlan, OutputGameExactTakesTheLowestEnergy) {
  const auto m = mha_model({{1, 1, 1, 1}, {1, 1, 1, 1}});
  // Diagonal P: removing a set costs the sum of its diagonal entries.
  Eigen::MatrixXd p0 = Eigen::Vector4d(0.5, 0.01, 0.3, 0.02).asDiagonal();
  Eigen::MatrixXd p1 = Eigen::Vector4d(0.03, 0.9, 0.8, 0.7).asDiagonal();
  np::pruning_options o = heads_only(0.375);  // 3 of 8 heads
  o.game = np::head_game::output;
  o.selection = np::selector::exact;
  const auto r = np::plan_pruning(m, np::output_perturbation_game{{p0, p1}}, o);
  EXPECT_EQ(removed_heads(r, m), (std::set<std::pair<std::int64_t, std::int64_t>>{{0, 1}, {0, 3}, {1, 0}}));
  ASSERT_TRUE(r.game.has_value());
  EXPECT_EQ(r.game->requested, 3);
  EXPECT_EQ(r.game->removed, 3);
  EXPECT_NEAR(r.game->energy, 0.01 + 0.02 + 0.03, 1e-12);
  // The price search reaches the same count within the budget.
  o.selection = np::selector::greedy;
  const auto searched = np::plan_pruning(m, np::output_perturbation_game{{p0, p1}}, o);
  EXPECT_LE(searched.game->removed, 3);
  EXPECT_GE(searched.game->energy, r.game->energy - 1e-12);
}

TEST(PruningPlan, AblationGameExactWithoutInteractionsTakesTheSmallestLosses) {
  const auto m = mha_model({{1, 1, 1, 1}, {1, 1, 1, 1}});
  np::ablation_loss_game loss;
  loss.delta = (Eigen::VectorXd(8) << 0.4, 0.05, 0.3, 0.2, 0.01, 0.5, 0.6, 0.02).finished();
  loss.interaction = Eigen::MatrixXd::Zero(8, 8);
  np::pruning_options o = heads_only(0.375);
  o.game = np::head_game::ablation;
  o.selection = np::selector::exact;
  const auto r = np::plan_pruning(m, loss, o);
  // floor(0.375 · 8) = 3 units: 4 (0.01), 7 (0.02) and 1 (0.05).
  EXPECT_EQ(removed_heads(r, m), (std::set<std::pair<std::int64_t, std::int64_t>>{{0, 1}, {1, 0}, {1, 3}}));
  EXPECT_NEAR(r.game->energy, 0.08, 1e-12);
  EXPECT_TRUE(r.heads.empty());
}

TEST(PruningPlan, SelectItemsIsTheGreedyOrTheExactSolver) {
  const std::vector<np::selection_item<double>> items{{0, np::item_kind::mlp_channel, 0, 1.0, 3},
                                                      {0, np::item_kind::mlp_channel, 1, 1.2, 2},
                                                      {0, np::item_kind::mlp_channel, 2, 1.1, 2}};
  const np::selection_constraints none;
  EXPECT_EQ(np::select_items<double>(items, 4, none, np::selector::greedy).pruned, np::select_greedy<double>(items, 4, none).pruned);
  EXPECT_EQ(np::select_items<double>(items, 4, none, np::selector::exact).pruned, np::solve_exact<double>(items, 4, none).pruned);
}

TEST(PruningPlan, StructureNamesRoundTrip) {
  for (std::size_t k = 0; k < np::structure_count; ++k) EXPECT_EQ(np::find_structure(np::structure_names[k]), static_cast<np::structure>(k));
  EXPECT_FALSE(np::find_structure("rows").has_value());
  const np::structure_set s{np::structure::heads, np::structure::layers};
  EXPECT_EQ(s.size(), 2U);
  EXPECT_TRUE(s.within(np::structure_set{np::structure::heads, np::structure::layers, np::structure::mlp}));
  EXPECT_FALSE(s.within(np::structure_set{np::structure::heads}));
}

TEST(PruningPlan, BadInputNamesTheArgument) {
  const auto good = mha_model({{1, 2}, {3, 4}});
  const auto plan = [](const np::model_scores& m, const np::pruning_options& o) { return np::plan_pruning(m, o); };
  auto m = good;
  m.layers[1].heads = Eigen::VectorXd::Ones(3);
  expect_error<std::invalid_argument>([&] { (void)plan(m, heads_only(0.25)); }, {"layers[1].heads", "expected n_head = 2"});
  m = good;
  m.layers[0].channels[2] = -1;
  expect_error<std::invalid_argument>([&] { (void)plan(m, heads_only(0.25)); }, {"layers[0]", ">= 0"});
  m = good;
  m.layers[1].heads[0] = std::numeric_limits<double>::quiet_NaN();
  expect_error<std::domain_error>([&] { (void)plan(m, heads_only(0.25)); }, {"layers[1].heads", "NaN at index 0"});
  m = good;
  m.layers[0].mlp_chunk = 0;
  expect_error<std::invalid_argument>([&] { (void)plan(m, heads_only(0.25)); }, {"layers[0].mlp_chunk"});
  m = good;
  m.influence = {{0.1, 0.1, 0.1}};
  expect_error<std::invalid_argument>([&] { (void)plan(m, heads_only(0.25)); }, {"'influence'", "expected 2"});
  m = good;
  m.layers[1].n_head_kv = 3;
  expect_error<std::invalid_argument>([&] { (void)plan(m, heads_only(0.25)); }, {"n_head_kv"});
  expect_error<std::invalid_argument>([&] { (void)plan(good, heads_only(1.0)); }, {"'target'"});
  auto o = heads_only(0.25);
  o.structures = {};
  expect_error<std::invalid_argument>([&] { (void)plan(good, o); }, {"'structures'"});
  o = heads_only(0.25);
  o.max_prune = 0;
  expect_error<std::invalid_argument>([&] { (void)plan(good, o); }, {"'max_prune'"});
  o = heads_only(0.25);
  o.structures = {np::structure::attention_blocks};
  auto attention_free = good;
  for (auto& l : attention_free.layers) l.n_head = l.n_head_kv = 0, l.heads.resize(0);
  o.unit = np::budget_unit::parameters;
  expect_error<std::invalid_argument>([&] { (void)plan(attention_free, o); }, {"'structures'", "nothing to prune"});
  o = heads_only(0.25);
  o.game = np::head_game::cosine;
  expect_error<std::invalid_argument>([&] { (void)np::plan_pruning(good, np::cosine_game{{Eigen::MatrixXd::Identity(2, 2)}}, o); },
                                      {"'cosine'", "layer count"});
  expect_error<std::invalid_argument>(
      [&] { (void)np::plan_pruning(good, np::cosine_game{{Eigen::MatrixXd::Identity(2, 2), Eigen::MatrixXd::Identity(3, 3)}}, o); },
      {"'cosine'", "layer 1"});
  o.game = np::head_game::output;
  expect_error<std::invalid_argument>(
      [&] { (void)np::plan_pruning(good, np::output_perturbation_game{{Eigen::MatrixXd::Identity(2, 2), Eigen::MatrixXd()}}, o); },
      {"'scaled_gram'", "layer 1"});
  o.game = np::head_game::ablation;
  np::ablation_loss_game loss{Eigen::VectorXd::Ones(3), Eigen::MatrixXd::Zero(3, 3), {}};
  expect_error<std::invalid_argument>([&] { (void)np::plan_pruning(good, loss, o); }, {"'delta'", "expected 4"});
  loss = {Eigen::VectorXd::Ones(4), Eigen::MatrixXd::Zero(4, 4), {0, 1}};
  const auto layout = np::make_loss_layout(std::vector<np::attention_geometry>{good.geometry(0), good.geometry(1)}, o.decisions());
  expect_error<std::invalid_argument>(
      [&] { (void)np::choose_heads_by_loss(loss, layout, np::head_game::ablation, np::selector::exact, 1, o.decisions()); },
      {"'requested'", "fewer than the 2"});
  expect_error<std::invalid_argument>(
      [&] { (void)np::choose_heads_by_loss(loss, layout, np::head_game::cosine, np::selector::exact, 2, o.decisions()); }, {"'game'"});
}

// GQA layers of these (n_head, n_head_kv) with random head scores (head_dim 2).
np::model_scores gqa_model(const std::vector<std::pair<std::int64_t, std::int64_t>>& shapes, std::mt19937& rng) {
  std::uniform_real_distribution<double> u(0.05, 1.0);
  np::model_scores m;
  m.n_embd = 16;
  m.head_dim_k = 2;
  m.head_dim_v = 2;
  m.total_parameters = 100000;
  for (const auto& [n, n_kv] : shapes) {
    np::layer_scores l;
    l.n_head = n;
    l.n_head_kv = n_kv;
    l.n_ff = 4;
    l.heads = Eigen::VectorXd::NullaryExpr(n, [&] { return u(rng); });
    l.channels = Eigen::VectorXd::Ones(4);
    m.layers.push_back(l);
  }
  return m;
}

// Brute force: the totals of GQA-consistent removals over the layers (every subset
// of every layer's heads whose kept heads fill their kv groups evenly, at most
// floor(max_prune · n) removed and at least min_heads kept; groups_only: whole groups).
std::set<std::int64_t> reachable_totals(const np::model_scores& m, std::int64_t min_heads, double max_prune, bool groups_only) {
  std::set<std::int64_t> totals{0};
  for (const auto& l : m.layers) {
    std::set<std::int64_t> counts;
    const std::int64_t g = l.n_head / l.n_head_kv;
    for (std::uint32_t mask = 0; mask < (1U << l.n_head); ++mask) {
      std::int64_t per_group = -1;
      bool ok = true;
      std::int64_t removed = 0;
      for (std::int64_t j = 0; j < l.n_head_kv; ++j) {
        std::int64_t kept = 0;
        for (std::int64_t h = j * g; h < (j + 1) * g; ++h) kept += (mask >> h & 1U) ? 0 : 1;
        removed += g - kept;
        if (kept == 0) continue;
        if ((per_group >= 0 && kept != per_group) || (groups_only && kept != g)) ok = false;
        per_group = kept;
      }
      const auto cap = static_cast<std::int64_t>(max_prune * static_cast<double>(l.n_head) + 1e-9);
      if (ok && per_group > 0 && removed <= cap && l.n_head - removed >= min_heads) counts.insert(removed);
    }
    std::set<std::int64_t> next;
    for (const auto t : totals)
      for (const auto c : counts) next.insert(t + c);
    totals = next;
  }
  return totals;
}

// Every requested count: met exactly when reachable, else the largest reachable
// below; beyond the most reachable, refused naming the target.
template <typename Plan>
void expect_exact_counts(const np::model_scores& m, np::pruning_options o, bool groups_only, const Plan& plan, const std::string& what) {
  const auto totals = reachable_totals(m, o.min_heads, o.max_prune, groups_only);
  const auto heads = m.total_heads();
  for (std::int64_t requested = 0; requested <= heads; ++requested) {
    o.target = static_cast<double>(requested) / static_cast<double>(heads);
    if (o.target >= 1.0) break;
    if (requested > *totals.rbegin()) {
      expect_error<std::invalid_argument>([&] { (void)plan(m, o); }, {"'target'"});
      continue;
    }
    const auto r = plan(m, o);
    auto expected = totals.upper_bound(requested);
    --expected;
    EXPECT_EQ(static_cast<std::int64_t>(removed_heads(r, m).size()), *expected) << what << ", requested " << requested;
    for (std::size_t l = 0; l < r.layers.size(); ++l) (void)m.geometry(static_cast<std::int64_t>(l)).validate(r.layers[l].heads);
  }
}

const std::vector<std::vector<std::pair<std::int64_t, std::int64_t>>> gqa_shapes{
    {{8, 4}, {8, 4}, {8, 4}},  // stories260K's layer shape
    {{6, 2}, {6, 3}, {4, 4}},
    {{8, 2}, {9, 3}},
};

TEST(PruningPlan, HeadTargetsAreMetExactlyWhenReachableWithoutAGame) {
  std::mt19937 rng(5);
  for (const auto& shapes : gqa_shapes) {
    const auto m = gqa_model(shapes, rng);
    for (const auto how : {np::selector::greedy, np::selector::exact}) {
      for (const bool groups : {false, true}) {
        auto o = heads_only(0);
        o.selection = how;
        o.structures = {groups ? np::structure::groups : np::structure::heads};
        expect_exact_counts(m, o, groups, [](const auto& model, const auto& options) { return np::plan_pruning(model, options); },
                            groups ? "groups" : "heads");
      }
    }
  }
}

// B·Bᵀ for a random n × rank matrix B: positive semidefinite of rank at most `rank`.
Eigen::MatrixXd random_gram(Eigen::Index n, Eigen::Index rank) {
  const Eigen::MatrixXd b = Eigen::MatrixXd::Random(n, rank);
  return b * b.transpose();
}

TEST(PruningPlan, HeadTargetsAreMetExactlyWithTheCosineGame) {
  std::mt19937 rng(6);
  for (const auto& shapes : gqa_shapes) {
    const auto m = gqa_model(shapes, rng);
    np::cosine_game game;
    for (const auto& l : m.layers) {
      const Eigen::MatrixXd c = random_gram(l.n_head, 3);
      const Eigen::VectorXd d = c.diagonal().cwiseSqrt();
      game.cosine.push_back(c.array() / (d * d.transpose()).array());
    }
    for (const bool lambda_auto : {false, true}) {
      auto o = heads_only(0);
      o.game = np::head_game::cosine;
      o.lambda_auto = lambda_auto;
      expect_exact_counts(m, o, false, [&](const auto& model, const auto& options) { return np::plan_pruning(model, game, options); },
                          lambda_auto ? "cosine, lambda auto" : "cosine");
    }
  }
}

TEST(PruningPlan, HeadTargetsAreMetExactlyWithTheOutputAndAblationGames) {
  std::mt19937 rng(8);
  for (const auto& shapes : gqa_shapes) {
    const auto m = gqa_model(shapes, rng);
    np::output_perturbation_game output;
    std::int64_t units = 0;
    for (const auto& l : m.layers) {
      output.scaled_gram.push_back(random_gram(l.n_head, l.n_head) / 10.0);
      units += l.n_head;
    }
    np::ablation_loss_game loss;
    loss.delta = (Eigen::VectorXd::Random(units).array() + 1.5).matrix() / 10.0;
    const Eigen::MatrixXd b = Eigen::MatrixXd::Random(units, units) / 50.0;
    loss.interaction = (b + b.transpose()) / 2.0;
    loss.interaction.diagonal().setZero();
    for (const auto how : {np::selector::greedy, np::selector::exact}) {
      auto o = heads_only(0);
      o.selection = how;
      o.game = np::head_game::output;
      expect_exact_counts(m, o, false, [&](const auto& model, const auto& options) { return np::plan_pruning(model, output, options); },
                          "output");
      o.game = np::head_game::ablation;
      if (how == np::selector::exact && units > 20) continue;  // the joint enumeration is for small models
      expect_exact_counts(m, o, false, [&](const auto& model, const auto& options) { return np::plan_pruning(model, loss, options); },
                          "ablation");
    }
  }
}

}  // namespace
