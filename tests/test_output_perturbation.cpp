// output_perturbation.hpp: the game's potential is the (negated) perturbation
// energy plus the price, removal energies equal ‖Σ y_i‖², the enumeration equals
// a brute force over all subsets, the allocation equals a brute force over all
// combinations, planted cancelling heads are removed together, and bad inputs
// are refused naming the argument.
#include <gtest/gtest.h>

#include <nashprune/output_perturbation.hpp>

#include <random>
#include <vector>

#include "expect_error.hpp"
#include "scalar_test_support.hpp"

namespace {

namespace np = nashprune;
using nashprune_test::expect_error;

template <typename Scalar>
using mat = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;

/// Contributions y_i (columns of Y: dim × n) and their Gram P = YᵀY, in double.
struct contributions {
  Eigen::MatrixXd y;
  Eigen::MatrixXd gram;
};

contributions random_contributions(Eigen::Index n, Eigen::Index dim, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal;
  contributions c;
  c.y.resize(dim, n);
  for (Eigen::Index k = 0; k < c.y.size(); ++k) c.y.data()[k] = normal(rng);
  // Uneven head scales, as in a real layer.
  for (Eigen::Index i = 0; i < n; ++i) c.y.col(i) *= 0.2 + 2.0 * static_cast<double>((i * 7) % 5) / 5.0;
  c.gram = c.y.transpose() * c.y;
  return c;
}

double plain_energy(const Eigen::MatrixXd& y, const std::vector<std::int64_t>& removed) {
  double e = 0;
  for (Eigen::Index d = 0; d < y.rows(); ++d) {
    double sum = 0;
    for (auto i : removed) sum += y(d, i);
    e += sum * sum;
  }
  return e;
}

/// Every subset of n heads (bitmask) that `granularity` allows, with its head count.
bool allowed(std::uint32_t mask, std::int64_t n, std::int64_t n_kv, np::head_granularity granularity) {
  const std::int64_t gs = n / n_kv;
  std::vector<int> per_group(static_cast<std::size_t>(n_kv), 0);
  for (std::int64_t h = 0; h < n; ++h) per_group[static_cast<std::size_t>(h / gs)] += (mask >> h) & 1U;
  for (std::int64_t g = 0; g < n_kv; ++g) {
    const int c = per_group[static_cast<std::size_t>(g)];
    if (granularity == np::head_granularity::whole_groups && c != 0 && c != gs) return false;
    if (granularity == np::head_granularity::heads_per_group && c != per_group[0]) return false;
  }
  return true;
}

template <typename Scalar>
class OutputPerturbation : public ::testing::Test {};
TYPED_TEST_SUITE(OutputPerturbation, nashprune_test::scalar_types);

TYPED_TEST(OutputPerturbation, PotentialIsMinusHalfTheEnergyMinusThePrice) {
  using S = TypeParam;
  const auto c = random_contributions(6, 10, 3);
  const mat<S> p = c.gram.cast<S>();
  const S price = S(2.5);
  const auto g = np::make_perturbation_game(p, price);
  std::mt19937 rng(5);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  const double constant = 0.5 * c.gram.sum();
  for (int trial = 0; trial < 20; ++trial) {
    Eigen::VectorXd s(6);
    for (auto& v : s) v = u(rng);
    const Eigen::VectorXd r = Eigen::VectorXd::Ones(6) - s;
    const double expected = -(0.5 * r.dot(c.gram * r) + static_cast<double>(price) * s.sum()) + constant;
    const double tol = std::is_same_v<S, float> ? 1e-3 * (1 + std::abs(constant)) : 1e-9 * (1 + std::abs(constant));
    EXPECT_NEAR(static_cast<double>(np::nash_potential(g.game(), s.cast<S>())), expected, tol) << "trial " << trial;
  }
  // λ = 1, r_ij = P_ij off the diagonal, r_ii = P_ii / 2, c = P·1 − μ.
  EXPECT_EQ(g.game().lambda, S(1));
  for (Eigen::Index i = 0; i < 6; ++i) {
    EXPECT_NEAR(static_cast<double>(g.redundancy(i, i)), c.gram(i, i) / 2, 1e-4 * c.gram(i, i));
    EXPECT_NEAR(static_cast<double>(g.importance(i)), c.gram.row(i).sum() - 2.5, 1e-4 * (1 + c.gram.row(i).cwiseAbs().sum()));
  }
}

TYPED_TEST(OutputPerturbation, RemovalEnergyIsTheEnergyOfTheRemovedSum) {
  using S = TypeParam;
  const auto c = random_contributions(8, 12, 11);
  const mat<S> p = c.gram.cast<S>();
  for (std::uint32_t mask = 0; mask < 256; mask += 7) {
    std::vector<std::int64_t> removed;
    for (std::int64_t h = 0; h < 8; ++h)
      if ((mask >> h) & 1U) removed.push_back(h);
    const double expected = plain_energy(c.y, removed);
    EXPECT_NEAR(static_cast<double>(np::removal_energy(p, removed)), expected, 1e-4 * (1 + expected)) << "mask " << mask;
  }
}

TYPED_TEST(OutputPerturbation, EnumerationEqualsBruteForceAtEveryGranularity) {
  using S = TypeParam;
  const np::attention_geometry gqa{8, 4, 4, 4}, mha{8, 8, 4, 4};
  for (std::uint32_t seed = 1; seed <= 4; ++seed) {
    const auto c = random_contributions(8, 6, seed);
    const mat<S> p = c.gram.cast<S>();
    for (auto granularity : {np::head_granularity::whole_groups, np::head_granularity::heads_per_group, np::head_granularity::single_heads}) {
      const auto& geometry = granularity == np::head_granularity::single_heads ? mha : gqa;
      for (const auto k : geometry.removable_q_head_counts(granularity)) {
        double best = std::numeric_limits<double>::infinity();
        std::int64_t sets = 0;
        for (std::uint32_t mask = 0; mask < 256; ++mask) {
          if (std::popcount(mask) != k || !allowed(mask, 8, geometry.n_head_kv(), granularity)) continue;
          ++sets;
          std::vector<std::int64_t> removed;
          for (std::int64_t h = 0; h < 8; ++h)
            if ((mask >> h) & 1U) removed.push_back(h);
          best = std::min(best, plain_energy(c.y, removed));
        }
        const auto found = np::exact_best_removal(p, geometry, granularity, k);
        EXPECT_EQ(found.candidates, sets) << "k " << k;
        EXPECT_EQ(static_cast<std::int64_t>(found.removed.size()), k);
        EXPECT_NEAR(plain_energy(c.y, found.removed), best, 1e-3 * (1 + best)) << "seed " << seed << " k " << k;
      }
    }
  }
}

TYPED_TEST(OutputPerturbation, CancellingHeadsAreRemovedTogether) {
  using S = TypeParam;
  // Heads 0 and 1 are strong but cancel (y_1 = −y_0): removing both changes nothing,
  // while either alone is the most expensive single removal. Heads 2..5 are weak.
  auto c = random_contributions(6, 10, 21);
  c.y.colwise().normalize();
  c.y.col(0) *= 5.0;
  c.y.col(1) = -c.y.col(0);
  const mat<S> p = (c.y.transpose() * c.y).cast<S>();
  const np::attention_geometry geometry{6, 6, 4, 4};
  const auto exact = np::exact_best_removal(p, geometry, np::head_granularity::single_heads, 2);
  EXPECT_EQ(exact.removed, (std::vector<std::int64_t>{0, 1}));
  std::vector<np::perturbation_layer<S>> layers{{p, geometry, np::head_granularity::single_heads}};
  np::price_search_options<S> options;
  options.decisions.max_prune_ratio = S(1);
  const auto found = np::search_price<S>(layers, 2, options);
  ASSERT_TRUE(found.reached);
  EXPECT_EQ(found.removed, 2);
  EXPECT_EQ(found.plans[0].q_heads, (std::vector<std::int64_t>{2, 3, 4, 5}));
  // A score by each head's own energy (the diagonal) would keep 0 and 1 first.
  EXPECT_GT(p(0, 0), p.diagonal().tail(4).maxCoeff());
}

TYPED_TEST(OutputPerturbation, PriceSearchReachesTheCountAndNeverBeatsTheExactOptimum) {
  using S = TypeParam;
  for (std::uint32_t seed = 1; seed <= 6; ++seed) {
    std::vector<np::perturbation_layer<S>> layers;
    std::vector<np::allocation_choices<S>> choices;
    const np::attention_geometry geometry{8, 4, 4, 4};
    const auto granularity = np::head_granularity::heads_per_group;
    for (std::uint32_t l = 0; l < 3; ++l) {
      const auto c = random_contributions(8, 16, seed * 10 + l);
      const mat<S> p = (c.gram / c.gram.trace()).cast<S>();
      layers.push_back({p, geometry, granularity});
      np::allocation_choices<S> layer;
      for (const auto k : {0, 4}) {
        layer.removed.push_back(k);
        layer.energy.push_back(np::exact_best_removal(p, geometry, granularity, k).energy);
      }
      choices.push_back(layer);
    }
    const auto found = np::search_price<S>(layers, 8);
    ASSERT_TRUE(found.reached) << "seed " << seed;
    EXPECT_EQ(found.removed, 8);
    EXPECT_TRUE(found.equilibria[0].converged);
    const auto exact = np::exact_allocation<S>(choices, 8);
    EXPECT_EQ(exact.removed, 8);
    S nash_energy = 0;
    for (std::size_t l = 0; l < layers.size(); ++l) {
      std::vector<std::int64_t> removed;
      for (std::int64_t h = 0, k = 0; h < 8; ++h) {
        if (k < static_cast<std::int64_t>(found.plans[l].q_heads.size()) && found.plans[l].q_heads[static_cast<std::size_t>(k)] == h) ++k;
        else removed.push_back(h);
      }
      nash_energy += np::removal_energy(layers[l].gram, removed);
    }
    EXPECT_GE(nash_energy, exact.energy * S(0.9999)) << "seed " << seed;
    // Between steps of 4 heads: the most heads within the budget.
    const auto within = np::search_price<S>(layers, 7);
    EXPECT_EQ(within.removed, 4) << "seed " << seed;
    EXPECT_FALSE(within.reached);
  }
}

TYPED_TEST(OutputPerturbation, AllocationEqualsBruteForce) {
  using S = TypeParam;
  std::mt19937 rng(9);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::vector<np::allocation_choices<S>> layers(4);
  for (auto& l : layers) {
    for (std::int64_t k = 0; k <= 6; k += 2) {
      l.removed.push_back(k);
      l.energy.push_back(static_cast<S>(k == 0 ? 0.0 : u(rng) * static_cast<double>(k)));
    }
  }
  for (std::int64_t requested : {0, 3, 8, 13, 24, 30}) {
    // The budget: the most heads within `requested`, then the least energy.
    double best = std::numeric_limits<double>::infinity();
    std::int64_t best_count = -1;
    for (int code = 0; code < 256; ++code) {
      std::int64_t count = 0;
      double e = 0;
      for (int l = 0; l < 4; ++l) {
        const auto k = static_cast<std::size_t>((code >> (2 * l)) & 3);
        count += layers[static_cast<std::size_t>(l)].removed[k];
        e += static_cast<double>(layers[static_cast<std::size_t>(l)].energy[k]);
      }
      if (count > requested) continue;
      if (count > best_count || (count == best_count && e < best)) best_count = count, best = e;
    }
    const auto found = np::exact_allocation<S>(layers, requested);
    EXPECT_EQ(found.reached, requested % 2 == 0 && requested <= 24) << "requested " << requested;
    EXPECT_EQ(found.removed, best_count) << "requested " << requested;
    EXPECT_NEAR(static_cast<double>(found.energy), best, 1e-5 * (1 + best)) << "requested " << requested;
    double e = 0;
    for (std::size_t l = 0; l < 4; ++l) e += static_cast<double>(layers[l].energy[found.choice[l]]);
    EXPECT_NEAR(e, best, 1e-5 * (1 + best));
  }
  // Every allocation exceeding the budget: the fewest heads.
  const std::vector<np::allocation_choices<S>> forced{{{2, 4}, {S(1), S(2)}}};
  const auto least = np::exact_allocation<S>(forced, 1);
  EXPECT_EQ(least.removed, 2);
  EXPECT_FALSE(least.reached);
}

TYPED_TEST(OutputPerturbation, BadInputsAreRefusedNamingTheArgument) {
  using S = TypeParam;
  const mat<S> good = mat<S>::Identity(4, 4);
  const mat<S> wide = mat<S>::Identity(4, 3);
  expect_error<std::invalid_argument>([&] { (void)np::make_perturbation_game(wide, S(0)); }, {"gram"});
  expect_error<std::invalid_argument>([&] { (void)np::make_perturbation_game(mat<S>(0, 0), S(0)); }, {"gram", "empty"});
  mat<S> nan = good;
  nan(1, 2) = std::numeric_limits<S>::quiet_NaN();
  expect_error<std::domain_error>([&] { (void)np::make_perturbation_game(nan, S(0)); }, {"gram", "row 1, column 2"});
  mat<S> negative = good;
  negative(3, 3) = S(-1);
  expect_error<std::domain_error>([&] { (void)np::make_perturbation_game(negative, S(0)); }, {"gram", "row 3, column 3"});
  expect_error<std::domain_error>([&] { (void)np::make_perturbation_game(good, S(-1)); }, {"price"});
  expect_error<std::domain_error>([&] { (void)np::make_perturbation_game(good, std::numeric_limits<S>::infinity()); }, {"price"});
  const std::vector<std::int64_t> out_of_range{0, 4}, repeated{1, 2, 1};
  expect_error<std::invalid_argument>([&] { (void)np::removal_energy(good, out_of_range); }, {"removed", "index 1"});
  expect_error<std::invalid_argument>([&] { (void)np::removal_energy(good, repeated); }, {"removed", "repeated", "index 2"});
  const np::attention_geometry geometry{4, 2, 4, 4};
  expect_error<std::invalid_argument>(
      [&] { (void)np::exact_best_removal(good, geometry, np::head_granularity::heads_per_group, 1); }, {"q_heads_to_remove"});
  expect_error<std::invalid_argument>(
      [&] { (void)np::exact_best_removal(good, np::attention_geometry{4, 4, 4, 4}, np::head_granularity::single_heads, 2, 5); },
      {"max_candidates"});
  expect_error<std::invalid_argument>(
      [&] { (void)np::exact_best_removal(mat<S>(mat<S>::Identity(3, 3)), geometry, np::head_granularity::whole_groups, 2); }, {"gram"});
  std::vector<np::allocation_choices<S>> none;
  expect_error<std::invalid_argument>([&] { (void)np::exact_allocation<S>(none, 1); }, {"layers"});
  std::vector<np::allocation_choices<S>> mismatched{{{0, 2}, {S(0)}}};
  expect_error<std::invalid_argument>([&] { (void)np::exact_allocation<S>(mismatched, 1); }, {"layers[0].energy"});
  std::vector<np::allocation_choices<S>> infinite{{{0, 2}, {S(0), std::numeric_limits<S>::infinity()}}};
  expect_error<std::domain_error>([&] { (void)np::exact_allocation<S>(infinite, 1); }, {"layers[0].energy", "index 1"});
  std::vector<np::perturbation_layer<S>> layers{{good, geometry, np::head_granularity::whole_groups}};
  expect_error<std::invalid_argument>([&] { (void)np::search_price<S>(layers, -1); }, {"requested"});
  std::vector<np::perturbation_layer<S>> empty;
  expect_error<std::invalid_argument>([&] { (void)np::search_price<S>(empty, 1); }, {"layers"});
  std::vector<np::perturbation_layer<S>> misfit{{mat<S>(mat<S>::Identity(3, 3)), geometry, np::head_granularity::whole_groups}};
  expect_error<std::invalid_argument>([&] { (void)np::search_price<S>(misfit, 1); }, {"layers[0].gram"});
}

}  // namespace
