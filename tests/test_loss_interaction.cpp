// loss_interaction.hpp: C(S) equals a plain sum, the shifted game's potential
// equals −C − price on every binary point (indefinite I), the output-perturbation
// energy is the special case (same game up to a factor 2, same loss), the exact
// enumeration equals a brute force over all subsets, the price search on an
// additive model removes the smallest δ, the conditional search (units removed
// already) keeps them and plays the game of the others, and bad inputs are refused naming the argument.
#include <gtest/gtest.h>

#include <nashprune/loss_interaction.hpp>

#include <bit>
#include <random>
#include <tuple>
#include <vector>

#include "expect_error.hpp"
#include "scalar_test_support.hpp"

namespace {

namespace np = nashprune;
using nashprune_test::expect_error;

template <typename Scalar>
using mat = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
template <typename Scalar>
using vec = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;

/// A random model with an indefinite interaction (symmetric, zero diagonal).
template <typename Scalar>
std::pair<vec<Scalar>, mat<Scalar>> random_model(Eigen::Index n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal;
  vec<Scalar> delta(n);
  mat<Scalar> inter = mat<Scalar>::Zero(n, n);
  for (Eigen::Index i = 0; i < n; ++i) {
    delta(i) = static_cast<Scalar>(std::abs(normal(rng)));
    for (Eigen::Index j = i + 1; j < n; ++j) inter(i, j) = inter(j, i) = static_cast<Scalar>(0.5 * normal(rng));
  }
  return {delta, inter};
}

/// C(S) by a plain double loop over the membership mask.
template <typename Scalar>
double plain_loss(const vec<Scalar>& delta, const mat<Scalar>& inter, std::uint32_t mask) {
  double c = 0;
  for (Eigen::Index i = 0; i < delta.size(); ++i) {
    if (!(mask >> i & 1U)) continue;
    c += static_cast<double>(delta(i));
    for (Eigen::Index j = i + 1; j < delta.size(); ++j)
      if (mask >> j & 1U) c += static_cast<double>(inter(i, j));
  }
  return c;
}

/// An additive model (I = 0) over two multi-head layers of 4 heads: units 0..3 and 4..7.
template <typename Scalar>
std::pair<vec<Scalar>, mat<Scalar>> additive_model() {
  vec<Scalar> delta(8);
  delta << Scalar(0.5), Scalar(0.1), Scalar(0.9), Scalar(0.05), Scalar(0.7), Scalar(0.3), Scalar(0.8), Scalar(0.6);
  return {delta, mat<Scalar>::Zero(8, 8)};
}
std::vector<np::loss_layer> two_mha_layers() {
  return {{0, np::attention_geometry(4, 4, 2, 2), np::head_granularity::single_heads},
          {4, np::attention_geometry(4, 4, 2, 2), np::head_granularity::single_heads}};
}

template <typename Scalar>
class LossInteraction : public ::testing::Test {};
TYPED_TEST_SUITE(LossInteraction, nashprune_test::scalar_types);

TYPED_TEST(LossInteraction, RemovalLossIsThePlainSum) {
  using S = TypeParam;
  const auto [delta, inter] = random_model<S>(7, 3);
  const std::vector<std::int64_t> set{5, 1, 3};
  const std::uint32_t mask = (1U << 5) | (1U << 1) | (1U << 3);
  EXPECT_NEAR(static_cast<double>(np::removal_loss(delta, inter, std::span<const std::int64_t>(set))), plain_loss(delta, inter, mask), 1e-5);
}

TYPED_TEST(LossInteraction, ShiftedPotentialIsMinusLossMinusPriceOnBinaryPoints) {
  using S = TypeParam;
  const Eigen::Index n = 6;
  const auto [delta, inter] = random_model<S>(n, 11);
  const S price = S(0.3);
  const auto g = np::make_loss_game(delta, inter, price);
  // I + D ⪰ 0: the game is concave.
  mat<S> m = g.redundancy;
  m.diagonal() *= S(2);
  EXPECT_GE(Eigen::SelfAdjointEigenSolver<mat<S>>(m).eigenvalues().minCoeff(), S(0));
  EXPECT_LT(Eigen::SelfAdjointEigenSolver<mat<S>>(inter).eigenvalues().minCoeff(), S(0));  // the instance is indefinite
  const double constant = static_cast<double>(delta.sum()) + 0.5 * static_cast<double>(inter.sum());
  for (std::uint32_t kept = 0; kept < (1U << n); ++kept) {
    vec<S> s(n);
    for (Eigen::Index i = 0; i < n; ++i) s(i) = (kept >> i & 1U) ? S(1) : S(0);
    const double phi = static_cast<double>(np::nash_potential(g.game(), s));
    const double removed_loss = plain_loss(delta, inter, ~kept & ((1U << n) - 1));
    EXPECT_NEAR(phi + removed_loss + static_cast<double>(price) * static_cast<double>(s.sum()), constant, 2e-4) << "kept mask " << kept;
  }
}

TYPED_TEST(LossInteraction, OutputPerturbationIsTheSpecialCase) {
  using S = TypeParam;
  const Eigen::Index n = 5;
  std::mt19937 rng(5);
  std::normal_distribution<double> normal;
  mat<S> y(7, n);
  for (Eigen::Index k = 0; k < y.size(); ++k) y.data()[k] = static_cast<S>(normal(rng));
  const mat<S> gram = y.transpose() * y;
  const vec<S> delta = gram.diagonal();
  mat<S> inter = S(2) * gram;
  inter.diagonal().setZero();
  const S price = S(0.7);
  const auto loss_game = np::make_loss_game(delta, inter, S(2) * price, std::optional<vec<S>>(S(2) * gram.diagonal()));
  const auto energy_game = np::make_perturbation_game(gram, price);
  const S scale = gram.cwiseAbs().maxCoeff();
  EXPECT_LE((loss_game.importance - S(2) * energy_game.importance).cwiseAbs().maxCoeff(), S(1e-5) * scale);
  EXPECT_LE((loss_game.redundancy - S(2) * energy_game.redundancy).cwiseAbs().maxCoeff(), S(1e-5) * scale);
  const std::vector<std::int64_t> set{0, 2, 3};
  EXPECT_NEAR(static_cast<double>(np::removal_loss(delta, inter, std::span<const std::int64_t>(set))),
              static_cast<double>(np::removal_energy(gram, std::span<const std::int64_t>(set))), 1e-4 * static_cast<double>(scale));
}

TYPED_TEST(LossInteraction, ExactChoiceEqualsBruteForce) {
  using S = TypeParam;
  const Eigen::Index n = 9;
  for (std::uint32_t seed = 0; seed < 4; ++seed) {
    const auto [delta, inter] = random_model<S>(n, 100 + seed);
    std::vector<np::loss_slot> slots;
    for (std::int64_t i = 0; i < n; ++i) slots.push_back({{}, {i}});
    for (std::int64_t size = 0; size <= n; ++size) {
      const auto best = np::exact_loss_choice(delta, inter, std::span<const np::loss_slot>(slots), size);
      double brute = std::numeric_limits<double>::infinity();
      for (std::uint32_t mask = 0; mask < (1U << n); ++mask)
        if (std::popcount(mask) == size) brute = std::min(brute, plain_loss(delta, inter, mask));
      EXPECT_NEAR(static_cast<double>(best.loss), brute, 1e-4) << "seed " << seed << " size " << size;
      EXPECT_EQ(static_cast<std::int64_t>(best.removed.size()), size);
      EXPECT_NEAR(static_cast<double>(np::removal_loss(delta, inter, std::span<const std::int64_t>(best.removed))), brute, 1e-4);
    }
  }
}

TYPED_TEST(LossInteraction, ExactChoiceRespectsSlots) {
  using S = TypeParam;
  const auto [delta, inter] = random_model<S>(6, 9);
  // Two layers of three units; a layer removes nothing or exactly two of its units.
  const std::vector<np::loss_slot> slots{{{}, {0, 1}, {0, 2}, {1, 2}}, {{}, {3, 4}, {3, 5}, {4, 5}}};
  const auto best = np::exact_loss_choice(delta, inter, std::span<const np::loss_slot>(slots), 2);
  double brute = std::numeric_limits<double>::infinity();
  for (const auto& option : {std::vector<std::int64_t>{0, 1}, {0, 2}, {1, 2}, {3, 4}, {3, 5}, {4, 5}}) {
    brute = std::min(brute, static_cast<double>(np::removal_loss(delta, inter, std::span<const std::int64_t>(option))));
  }
  EXPECT_NEAR(static_cast<double>(best.loss), brute, 1e-5);
  EXPECT_FALSE(std::isfinite(np::exact_loss_choice(delta, inter, std::span<const np::loss_slot>(slots), 3).loss));
}

TYPED_TEST(LossInteraction, PriceSearchOnAnAdditiveModelRemovesTheSmallestDeltas) {
  using S = TypeParam;
  const auto [delta, inter] = additive_model<S>();
  const auto layers = two_mha_layers();
  const auto found = np::search_loss_price(delta, inter, std::span<const np::loss_layer>(layers), 3);
  EXPECT_TRUE(found.reached);
  ASSERT_EQ(found.plans.size(), 2U);
  EXPECT_EQ(found.plans[0].q_heads, (std::vector<std::int64_t>{0, 2}));        // units 1, 3 removed
  EXPECT_EQ(found.plans[1].q_heads, (std::vector<std::int64_t>{0, 2, 3}));     // unit 5 removed
}

TYPED_TEST(LossInteraction, ConditionalSearchOnAnAdditiveModelKeepsThePinnedAndAddsTheSmallestFreeDeltas) {
  using S = TypeParam;
  const auto [delta, inter] = additive_model<S>();
  const auto layers = two_mha_layers();
  const std::vector<std::int64_t> pinned{6, 2};  // the largest deltas: no game would remove them
  const auto found = np::search_loss_price(delta, inter, std::span<const np::loss_layer>(layers), 4, {}, np::active_set_newton<S>(),
                                           std::span<const std::int64_t>(pinned));
  EXPECT_TRUE(found.reached);
  EXPECT_EQ(found.removed, 4);
  EXPECT_EQ(found.equilibrium.s.size(), 6);
  // Layer 0: 2 pinned, 3 the smallest free delta (the cap of 2 removals per layer of 4 stops 1);
  // layer 1: 6 pinned, 5 the next smallest.
  EXPECT_EQ(found.plans[0].q_heads, (std::vector<std::int64_t>{0, 1}));
  EXPECT_EQ(found.plans[1].q_heads, (std::vector<std::int64_t>{0, 3}));
}

TYPED_TEST(LossInteraction, ConditionalSearchIsTheGameOverTheFreeUnits) {
  using S = TypeParam;
  const Eigen::Index n = 8;
  auto [delta, inter] = random_model<S>(n, 11);
  // Two layers of 4 query heads in 2 KV groups; one head of each group of layer 0 removed already.
  const std::vector<np::loss_layer> layers{{0, np::attention_geometry(4, 2, 2, 2), np::head_granularity::heads_per_group},
                                           {4, np::attention_geometry(4, 2, 2, 2), np::head_granularity::heads_per_group}};
  const std::vector<std::int64_t> pinned{1, 2};
  const std::vector<Eigen::Index> free{0, 3, 4, 5, 6, 7};
  const auto search = [&](const vec<S>& d, const mat<S>& i) {
    return np::search_loss_price(d, i, std::span<const np::loss_layer>(layers), 4, {}, np::active_set_newton<S>(), std::span<const std::int64_t>(pinned));
  };
  const auto found = search(delta, inter);
  EXPECT_TRUE(found.reached);
  EXPECT_EQ(found.plans[0].q_heads, (std::vector<std::int64_t>{0, 3}));
  EXPECT_EQ(found.plans[1].q_heads.size(), 2U);
  // The pinned units' own entries do not matter.
  vec<S> other_delta = delta;
  mat<S> other_inter = inter;
  for (const auto u : pinned) {
    other_delta(u) = S(-5);
    for (Eigen::Index j = 0; j < n; ++j)
      if (j != u) other_inter(u, j) = other_inter(j, u) = S(3);
  }
  const auto same = search(other_delta, other_inter);
  EXPECT_EQ(same.plans[1].q_heads, found.plans[1].q_heads);
  EXPECT_EQ(same.price, found.price);
  // The equilibrium is the loss game of the sub-model (copied by plain loops) at the price found.
  vec<S> sub_delta(6);
  mat<S> sub_inter(6, 6);
  for (std::size_t a = 0; a < free.size(); ++a) {
    sub_delta(static_cast<Eigen::Index>(a)) = delta(free[a]);
    for (std::size_t b = 0; b < free.size(); ++b) sub_inter(static_cast<Eigen::Index>(a), static_cast<Eigen::Index>(b)) = inter(free[a], free[b]);
  }
  const auto game = np::make_loss_game(sub_delta, sub_inter, found.price);
  const auto direct = np::active_set_newton<S>().solve(game.game());
  EXPECT_TRUE(direct.s.isApprox(found.equilibrium.s, S(1e-4)) || (direct.s - found.equilibrium.s).cwiseAbs().maxCoeff() < S(1e-4));
}

TYPED_TEST(LossInteraction, LowestPriceIsTheBoundaryWhereThePlansReachTheCount) {
  using S = TypeParam;
  vec<S> delta;  // not a structured binding: the lambdas below capture it (clang 14 cannot)
  mat<S> inter;
  std::tie(delta, inter) = random_model<S>(8, 5);
  // Two GQA layers of 4 heads in 2 groups: at most one head per group goes (the 0.7 cap), so
  // 4 heads is every layer's cap and the first price tried at the top already reaches it.
  const std::vector<np::loss_layer> layers{{0, np::attention_geometry(4, 2, 2, 2), np::head_granularity::heads_per_group},
                                           {4, np::attention_geometry(4, 2, 2, 2), np::head_granularity::heads_per_group}};
  const auto removed_at = [&](S price) {  // the plans' count at one price, by the search's own steps
    const auto g = np::make_loss_game(delta, inter, price);
    const auto s = np::active_set_newton<S>().solve(g.game()).s;
    const vec<S> scores = np::rounding_scores(g.game(), s);
    std::int64_t removed = 0;
    for (const auto& l : layers) removed += 4 - static_cast<std::int64_t>(np::gqa_prune_plan(l.geometry, l.granularity, scores.segment(l.first, 4)).q_heads.size());
    return removed;
  };
  const auto span = std::span<const np::loss_layer>(layers);
  const auto first = np::search_loss_price(delta, inter, span, 4);
  np::price_search_options<S> lowest_options;
  lowest_options.lowest_price = true;
  const auto lowest = np::search_loss_price(delta, inter, span, 4, lowest_options);
  ASSERT_TRUE(first.reached);
  ASSERT_TRUE(lowest.reached);
  EXPECT_LE(lowest.price, first.price);
  EXPECT_GT(lowest.solves, first.solves);
  EXPECT_EQ(removed_at(lowest.price), 4);
  EXPECT_LT(removed_at(lowest.price * (1 - S(1e-3))), 4);  // just below: the plans fall short
}

TYPED_TEST(LossInteraction, BadInputsNameTheArgument) {
  using S = TypeParam;
  vec<S> delta;  // not a structured binding: the lambdas below capture it (clang 14 cannot)
  mat<S> inter;
  std::tie(delta, inter) = random_model<S>(4, 1);
  const std::vector<std::int64_t> none;
  const auto loss = [&](const vec<S>& d, const mat<S>& i) { (void)np::removal_loss(d, i, std::span<const std::int64_t>(none)); };
  vec<S> bad_delta = delta;
  bad_delta(2) = std::numeric_limits<S>::quiet_NaN();
  expect_error<std::domain_error>([&] { loss(bad_delta, inter); }, {"'delta'", "index 2"});
  mat<S> asym = inter;
  asym(0, 3) += S(1);
  expect_error<std::domain_error>([&] { loss(delta, asym); }, {"'interaction'", "not symmetric"});
  mat<S> diag = inter;
  diag(1, 1) = S(1);
  expect_error<std::domain_error>([&] { loss(delta, diag); }, {"'interaction'", "diagonal"});
  mat<S> inf = inter;
  inf(1, 2) = inf(2, 1) = std::numeric_limits<S>::infinity();
  expect_error<std::domain_error>([&] { loss(delta, inf); }, {"'interaction'"});
  expect_error<std::invalid_argument>([&] { loss(delta, mat<S>::Zero(3, 3)); }, {"'interaction'"});
  expect_error<std::invalid_argument>([&] { loss(vec<S>(), mat<S>()); }, {"'delta'", "empty"});
  const std::vector<std::int64_t> repeated{1, 1};
  expect_error<std::invalid_argument>([&] { (void)np::removal_loss(delta, inter, std::span<const std::int64_t>(repeated)); }, {"'removed'", "repeated"});
  const std::vector<std::int64_t> outside{4};
  expect_error<std::invalid_argument>([&] { (void)np::removal_loss(delta, inter, std::span<const std::int64_t>(outside)); }, {"'removed'", "out of range"});
  expect_error<std::domain_error>([&] { (void)np::make_loss_game(delta, inter, S(-1)); }, {"'price'"});
  expect_error<std::domain_error>([&] { (void)np::make_loss_game(delta, inter, S(0), std::optional<vec<S>>(vec<S>::Zero(4))); }, {"'shift'", "index 0"});
  expect_error<std::invalid_argument>([&] { (void)np::make_loss_game(delta, inter, S(0), std::optional<vec<S>>(vec<S>::Ones(3))); }, {"'shift'"});
  const std::vector<np::loss_slot> overlapping{{{}, {0}}, {{}, {0}}};
  expect_error<std::invalid_argument>([&] { (void)np::exact_loss_choice(delta, inter, std::span<const np::loss_slot>(overlapping), 1); }, {"'slots[0]'", "repeated"});
  const std::vector<np::loss_slot> beyond{{{}, {7}}};
  expect_error<std::invalid_argument>([&] { (void)np::exact_loss_choice(delta, inter, std::span<const np::loss_slot>(beyond), 1); }, {"'slots[0]'", "out of range"});
  const std::vector<np::loss_slot> empty_slot{{}};
  expect_error<std::invalid_argument>([&] { (void)np::exact_loss_choice(delta, inter, std::span<const np::loss_slot>(empty_slot), 0); }, {"'slots[0]'", "empty"});
  const std::vector<np::loss_layer> misaligned{{1, np::attention_geometry(4, 4, 2, 2), np::head_granularity::single_heads}};
  expect_error<std::invalid_argument>([&] { (void)np::search_loss_price(delta, inter, std::span<const np::loss_layer>(misaligned), 1); }, {"'layers[0].first'"});
  const std::vector<np::loss_layer> one{{0, np::attention_geometry(4, 4, 2, 2), np::head_granularity::single_heads}};
  const auto conditional = [&](std::vector<std::int64_t> pinned, std::int64_t requested) {
    (void)np::search_loss_price(delta, inter, std::span<const np::loss_layer>(one), requested, {}, np::active_set_newton<S>(),
                                std::span<const std::int64_t>(pinned));
  };
  expect_error<std::invalid_argument>([&] { conditional({4}, 2); }, {"'removed_already'", "out of range", "index 0"});
  expect_error<std::invalid_argument>([&] { conditional({1, 1}, 2); }, {"'removed_already'", "repeated", "index 1"});
  expect_error<std::invalid_argument>([&] { conditional({0, 1, 2, 3}, 4); }, {"'removed_already'", "every unit"});
  expect_error<std::invalid_argument>([&] { conditional({0, 1}, 1); }, {"'requested'", "removed already"});
}

}  // namespace
