// nashprune/head_count_allocation.hpp: every layer's curve against a brute force
// over all subsets of its heads (plain loops, the GQA rule written out), and the
// allocation against the brute force over all combinations of layers.
#include <nashprune/head_count_allocation.hpp>

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <span>
#include <vector>

#include "expect_error.hpp"

namespace {

namespace np = nashprune;
using nashprune_test::expect_error;

// True when keeping the heads outside `removed_mask` leaves every kept group with
// the same number of query heads (at least one group kept), and, with groups_only,
// every group whole or gone.
bool consistent(std::int64_t n, std::int64_t n_kv, std::uint32_t removed_mask, bool groups_only) {
  const std::int64_t g = n / n_kv;
  std::int64_t per_group = -1;
  bool any = false;
  for (std::int64_t j = 0; j < n_kv; ++j) {
    std::int64_t kept = 0;
    for (std::int64_t h = j * g; h < (j + 1) * g; ++h) kept += (removed_mask >> h & 1U) ? 0 : 1;
    if (kept == 0) continue;
    if (groups_only && kept != g) return false;
    if (per_group >= 0 && kept != per_group) return false;
    per_group = kept;
    any = true;
  }
  return any;
}

struct brute_layer {
  std::map<std::int64_t, double> least;  // count -> least cost
};

// Every subset, costed as Σ a_i + Σ_{i,j} Q_ij (Q empty: additive), holding `required`.
brute_layer brute_force(std::int64_t n, std::int64_t n_kv, bool groups_only, std::int64_t min_keep, const Eigen::VectorXd& a,
                        const Eigen::MatrixXd& q, const std::vector<std::int64_t>& required = {}) {
  brute_layer out;
  for (std::uint32_t mask = 0; mask < (1U << n); ++mask) {
    if (!consistent(n, n_kv, mask, groups_only)) continue;
    std::int64_t count = 0;
    double cost = 0;
    for (std::int64_t i = 0; i < n; ++i) {
      if (!(mask >> i & 1U)) continue;
      ++count;
      cost += a(i);
      for (std::int64_t j = 0; j < n && q.size() > 0; ++j) {
        if (mask >> j & 1U) cost += q(i, j);
      }
    }
    bool holds = true;
    for (const auto r : required) holds = holds && (mask >> r & 1U);
    if (!holds || n - count < min_keep) continue;
    if (!out.least.contains(count) || cost < out.least[count]) out.least[count] = cost;
  }
  return out;
}

// The total cost of a set as the brute force counts it.
double cost_of(const std::vector<std::int64_t>& set, const Eigen::VectorXd& a, const Eigen::MatrixXd& q) {
  double c = 0;
  for (const auto i : set) {
    c += a(i);
    for (const auto j : set) c += q.size() > 0 ? q(i, j) : 0.0;
  }
  return c;
}

struct shape_case {
  std::int64_t n, n_kv;
};
const std::vector<shape_case> shapes{{8, 4}, {6, 2}, {6, 3}, {4, 4}, {8, 2}, {9, 3}, {1, 1}, {8, 8}};

TEST(HeadCountAllocation, CurvesMatchTheBruteForceOverEverySubset) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  for (const auto& s : shapes) {
    const np::attention_geometry g(s.n, s.n_kv, 4);
    for (const bool groups_only : {false, true}) {
      for (std::int64_t min_keep = 0; min_keep <= s.n; ++min_keep) {
        for (const bool quadratic : {false, true}) {
          Eigen::VectorXd a(s.n);
          for (auto& x : a) x = u(rng);
          Eigen::MatrixXd q;
          if (quadratic) {
            const Eigen::MatrixXd b = Eigen::MatrixXd::NullaryExpr(s.n, s.n, [&] { return u(rng) - 0.3; });
            q = b * b.transpose() / static_cast<double>(s.n);
          }
          const auto reference = brute_force(s.n, s.n_kv, groups_only, std::max<std::int64_t>(min_keep, 1), a, q);
          const auto curve = np::least_cost_curve<double>(g, groups_only, std::max<std::int64_t>(min_keep, 1), {a, q, {}});
          ASSERT_EQ(curve.removed.size(), reference.least.size()) << s.n << "/" << s.n_kv << " min_keep " << min_keep;
          std::size_t k = 0;
          for (const auto& [count, least] : reference.least) {
            EXPECT_EQ(curve.removed[k], count);
            EXPECT_NEAR(curve.cost[k], least, 1e-12);
            EXPECT_EQ(static_cast<std::int64_t>(curve.sets[k].size()), count);
            EXPECT_NEAR(cost_of(curve.sets[k], a, q), curve.cost[k], 1e-12);
            (void)np::plan_without(g, curve.sets[k]);  // a runnable layer
            ++k;
          }
          EXPECT_EQ(np::most_removable_heads(g, groups_only, std::max<std::int64_t>(min_keep, 1)), reference.least.rbegin()->first);
        }
      }
    }
  }
}

TEST(HeadCountAllocation, AnySetCostMatchesTheBruteForceOverEverySubset) {
  std::mt19937 rng(11);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  for (const auto& s : shapes) {
    const np::attention_geometry g(s.n, s.n_kv, 4);
    Eigen::VectorXd a(s.n);
    for (auto& x : a) x = u(rng);
    // Not additive and not quadratic: the square root of a quadratic form.
    const auto of_set = [&a](std::span<const std::int64_t> set) {
      double sum = 0, squares = 0;
      for (const auto i : set) sum += a(i), squares += a(i) * a(i);
      return std::sqrt(sum * sum + squares);
    };
    np::set_removal_cost<double, decltype(of_set)> cost{Eigen::VectorXd(s.n), of_set};
    for (std::int64_t h = 0; h < s.n; ++h) cost.singles(h) = of_set(std::span<const std::int64_t>(&h, 1));
    for (const bool groups_only : {false, true}) {
      for (std::int64_t min_keep = 1; min_keep <= s.n; ++min_keep) {
        std::map<std::int64_t, double> least;
        for (std::uint32_t mask = 0; mask < (1U << s.n); ++mask) {
          if (!consistent(s.n, s.n_kv, mask, groups_only)) continue;
          std::vector<std::int64_t> set;
          for (std::int64_t i = 0; i < s.n; ++i)
            if (mask >> i & 1U) set.push_back(i);
          const auto count = static_cast<std::int64_t>(set.size());
          if (s.n - count < min_keep) continue;
          const double c = of_set(set);
          if (!least.contains(count) || c < least[count]) least[count] = c;
        }
        const auto curve = np::least_cost_curve<double>(g, groups_only, min_keep, cost);
        ASSERT_EQ(curve.removed.size(), least.size()) << s.n << "/" << s.n_kv << " min_keep " << min_keep;
        std::size_t k = 0;
        for (const auto& [count, c] : least) {
          EXPECT_EQ(curve.removed[k], count);
          EXPECT_NEAR(curve.cost[k], c, 1e-12);
          EXPECT_NEAR(of_set(curve.sets[k]), c, 1e-12);
          ++k;
        }
        // Without enumeration: the closed form's set on the singles, costed by of_set.
        const auto closed = np::least_cost_curve<double>(g, groups_only, min_keep, cost, 0);
        ASSERT_EQ(closed.removed, curve.removed);
        for (std::size_t j = 0; j < closed.removed.size(); ++j) {
          EXPECT_NEAR(closed.cost[j], of_set(closed.sets[j]), 1e-12);
          EXPECT_GE(closed.cost[j], curve.cost[j] - 1e-12);
        }
      }
    }
  }
}

TEST(HeadCountAllocation, RequiredHeadsStayInEverySet) {
  const np::attention_geometry g(8, 4, 2);
  Eigen::VectorXd a = Eigen::VectorXd::LinSpaced(8, 1.0, 0.1);
  const Eigen::MatrixXd q = Eigen::MatrixXd::Identity(8, 8) * 0.05;
  const std::vector<std::int64_t> required{0, 2};
  const auto reference = brute_force(8, 4, false, 1, a, q, required);
  const auto curve = np::least_cost_curve<double>(g, false, 1, {a, q, required});
  ASSERT_EQ(curve.removed.size(), reference.least.size());
  std::size_t k = 0;
  for (const auto& [count, least] : reference.least) {
    EXPECT_EQ(curve.removed[k], count);
    EXPECT_NEAR(curve.cost[k], least, 1e-12);
    EXPECT_TRUE(std::includes(curve.sets[k].begin(), curve.sets[k].end(), required.begin(), required.end()));
    ++k;
  }
}

TEST(HeadCountAllocation, AllocationMeetsEveryReachableCountAndTheNearestBelowOtherwise) {
  std::mt19937 rng(11);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  const std::vector<shape_case> model{{8, 4}, {6, 2}, {4, 4}};
  std::vector<np::head_count_curve<double>> curves;
  std::vector<brute_layer> brute;
  for (const auto& s : model) {
    Eigen::VectorXd a(s.n);
    for (auto& x : a) x = u(rng);
    const std::int64_t min_keep = 2;
    curves.push_back(np::least_cost_curve<double>(np::attention_geometry(s.n, s.n_kv, 4), false, min_keep, {a, {}, {}}));
    brute.push_back(brute_force(s.n, s.n_kv, false, min_keep, a, {}));
  }
  // Every combination of one count per layer: the least cost of each total.
  std::map<std::int64_t, double> totals;
  for (const auto& [c0, e0] : brute[0].least)
    for (const auto& [c1, e1] : brute[1].least)
      for (const auto& [c2, e2] : brute[2].least) {
        const auto t = c0 + c1 + c2;
        if (!totals.contains(t) || e0 + e1 + e2 < totals[t]) totals[t] = e0 + e1 + e2;
      }
  for (std::int64_t requested = 0; requested <= 20; ++requested) {
    const auto a = np::allocate_head_count<double>(curves, requested);
    auto expected = totals.upper_bound(requested);
    --expected;  // the largest reachable total <= requested
    EXPECT_EQ(a.total, expected->first) << "requested " << requested;
    EXPECT_EQ(a.reached, totals.contains(requested));
    EXPECT_NEAR(a.cost, expected->second, 1e-12);
    std::int64_t sum = 0;
    for (const auto& set : a.removed) sum += static_cast<std::int64_t>(set.size());
    EXPECT_EQ(sum, a.total);
  }
}

TEST(HeadCountAllocation, StoriesShapeReachesTenOfFortyHeads) {
  // Five layers of 8 heads over 4 kv heads, at most 5 removed per layer (max_prune 0.7):
  // counts 0, 2, 4, 5 per layer; 10 = 5 + 5 or 4 + 4 + 2 or ...
  std::vector<np::head_count_curve<double>> curves;
  for (int l = 0; l < 5; ++l) {
    curves.push_back(np::least_cost_curve<double>(np::attention_geometry(8, 4, 8), false, 3, {Eigen::VectorXd::Ones(8), {}, {}}));
  }
  EXPECT_EQ(curves[0].removed, (std::vector<std::int64_t>{0, 2, 4, 5}));
  for (std::int64_t requested = 0; requested <= 25; ++requested) {
    const auto a = np::allocate_head_count<double>(curves, requested);
    EXPECT_EQ(a.total, requested == 1 ? 0 : requested == 3 ? 2 : requested);
  }
}

TEST(HeadCountAllocation, EnumerationVisitsEachSetOfAShapeOnce) {
  const np::attention_geometry g(6, 3, 2);
  for (std::int64_t k = 1; k <= 3; ++k) {
    for (std::int64_t m = 1; m <= 2; ++m) {
      std::set<std::vector<std::int64_t>> seen;
      np::for_each_shape_removal(g, {k, m}, [&](const std::vector<std::int64_t>& removed) {
        EXPECT_TRUE(seen.insert(removed).second);
        EXPECT_EQ(static_cast<std::int64_t>(removed.size()), 6 - k * m);
        (void)np::plan_without(g, removed);
      });
      EXPECT_EQ(static_cast<double>(seen.size()), np::shape_removal_count(g, {k, m}));
    }
  }
}

TEST(HeadCountAllocation, BadInputNamesTheArgument) {
  const np::attention_geometry g(4, 2, 2);
  expect_error<std::invalid_argument>([&] { (void)np::least_cost_curve<double>(g, false, 1, {Eigen::VectorXd::Ones(3), {}, {}}); },
                                      {"cost.linear"});
  expect_error<std::invalid_argument>([&] { (void)np::least_cost_curve<double>(g, false, 1, {Eigen::VectorXd::Ones(4), {}, {0}}); },
                                      {"cost.required"});
  const auto nan_cost = [](std::span<const std::int64_t>) { return std::numeric_limits<double>::quiet_NaN(); };
  expect_error<std::invalid_argument>(
      [&] { (void)np::least_cost_curve<double>(g, false, 1, np::set_removal_cost<double, decltype(nan_cost)>{Eigen::VectorXd::Ones(3), nan_cost}); },
      {"cost.singles"});
  expect_error<std::domain_error>(
      [&] { (void)np::least_cost_curve<double>(g, false, 1, np::set_removal_cost<double, decltype(nan_cost)>{Eigen::VectorXd::Ones(4), nan_cost}); },
      {"cost.of_set", "NaN"});
  expect_error<std::invalid_argument>([&] { (void)np::consistent_shapes(g, false, -1); }, {"min_keep"});
  const std::vector<std::int64_t> uneven{0};
  expect_error<std::invalid_argument>([&] { (void)np::plan_without(g, uneven); }, {"plan.kv_heads"});
  std::vector<np::head_count_curve<double>> none;
  expect_error<std::invalid_argument>([&] { (void)np::allocate_head_count<double>(none, 1); }, {"layers"});
}

}  // namespace
