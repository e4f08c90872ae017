#include <nashprune/hgsp_priors.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "scalar_test_support.hpp"

#include <cmath>
#include <limits>
#include <random>
#include <stdexcept>
#include <vector>

namespace np = nashprune;
using np::item_kind;

namespace {

template <typename T>
class HgspTyped : public ::testing::Test {};
using nashprune_test::scalar_types;
TYPED_TEST_SUITE(HgspTyped, scalar_types);

using nashprune_test::vec;

template <typename Scalar>
std::vector<np::selection_item<Scalar>> one_of_each(int layers) {
  std::vector<np::selection_item<Scalar>> items;
  for (int l = 0; l < layers; ++l) {
    items.push_back({l, item_kind::attention_group, 0, Scalar(1), 10});
    items.push_back({l, item_kind::mlp_channel, 0, Scalar(1), 10});
  }
  return items;
}

TYPED_TEST(HgspTyped, FormulaAndAutomaticTauMatchPlainLoops) {
  using Scalar = TypeParam;
  std::mt19937 rng(5);
  std::uniform_real_distribution<double> u(0.0, 2.0);
  for (int trial = 0; trial < 200; ++trial) {
    const int layers = 1 + trial % 9;
    vec<Scalar> L(layers), A(layers), P(layers);
    for (int l = 0; l < layers; ++l) {
      L[l] = static_cast<Scalar>(u(rng));
      A[l] = static_cast<Scalar>(u(rng));
      P[l] = static_cast<Scalar>(u(rng));
    }
    const auto items = one_of_each<Scalar>(layers);
    np::hgsp_options o;
    o.temperature = 0.5 + trial % 3;
    const auto r = np::hgsp_multipliers<Scalar>(items, L, A, P, o);
    // numpy linear percentile by hand.
    std::vector<double> sorted(L.data(), L.data() + layers);
    std::sort(sorted.begin(), sorted.end());
    const double pos = 0.25 * (layers - 1);
    const auto lo = static_cast<std::size_t>(std::floor(pos));
    const double tau = sorted[lo] + (pos - static_cast<double>(lo)) * (sorted[std::min<std::size_t>(lo + 1, sorted.size() - 1)] - sorted[lo]);
    EXPECT_NEAR(r.tau, tau, 1e-6);
    for (std::size_t i = 0; i < items.size(); ++i) {
      const int l = static_cast<int>(items[i].layer);
      const bool layer_wise = static_cast<double>(L[l]) < r.tau;
      EXPECT_EQ(r.layer_dominant[static_cast<std::size_t>(l)], layer_wise);
      const double prior = layer_wise ? static_cast<double>(L[l]) : static_cast<double>(items[i].kind == item_kind::mlp_channel ? P[l] : A[l]);
      EXPECT_NEAR(static_cast<double>(r.multiplier[i]), std::pow(std::log(1.0 + prior), o.temperature), 1e-5);
    }
  }
}

TYPED_TEST(HgspTyped, TauZeroIsBlockWiseInfinityIsLayerWise) {
  using Scalar = TypeParam;
  vec<Scalar> L(3), A(3), P(3);
  L << Scalar(0), Scalar(0.5), Scalar(1);
  A << Scalar(0.2), Scalar(0.3), Scalar(0.4);
  P << Scalar(0.6), Scalar(0.7), Scalar(0.8);
  auto items = one_of_each<Scalar>(3);
  np::hgsp_options o;
  o.temperature = 1;
  o.tau = 0.0;
  auto r = np::hgsp_multipliers<Scalar>(items, L, A, P, o);
  EXPECT_THAT(r.layer_dominant, ::testing::Each(false));  // even the layer with L = 0
  EXPECT_NEAR(static_cast<double>(r.multiplier[0]), std::log(1.2), 1e-6);
  EXPECT_NEAR(static_cast<double>(r.multiplier[1]), std::log(1.6), 1e-6);
  o.tau = std::numeric_limits<double>::infinity();
  r = np::hgsp_multipliers<Scalar>(items, L, A, P, o);
  EXPECT_THAT(r.layer_dominant, ::testing::Each(true));
  EXPECT_EQ(r.multiplier[0], Scalar(0));  // T > 0 and a zero prior: identity layer goes first
  EXPECT_NEAR(static_cast<double>(r.multiplier[3]), std::log(1.5), 1e-6);
  // Whole-layer items always take the layer prior.
  items.push_back({2, item_kind::whole_layer, 0, Scalar(1), 1});
  items.erase(items.begin() + 4, items.begin() + 6);
  o.tau = 0.0;
  r = np::hgsp_multipliers<Scalar>(items, L, A, P, o);
  EXPECT_NEAR(static_cast<double>(r.multiplier.back()), std::log(2.0), 1e-6);
}

TYPED_TEST(HgspTyped, TemperatureZeroDisablesAndEpsilonCollapses) {
  using Scalar = TypeParam;
  vec<Scalar> L(2), A(2), P(2);
  L << Scalar(0.05), Scalar(0.9);
  A << Scalar(0.05), Scalar(0.9);
  P << Scalar(0.05), Scalar(0.9);
  const auto items = one_of_each<Scalar>(2);
  np::hgsp_options o;
  o.temperature = 0;
  o.epsilon = 0.2;
  auto r = np::hgsp_multipliers<Scalar>(items, L, A, P, o);
  EXPECT_THAT(r.multiplier, ::testing::Each(Scalar(1)));
  EXPECT_EQ(r.collapsed, 0);
  o.temperature = 1.5;
  r = np::hgsp_multipliers<Scalar>(items, L, A, P, o);
  EXPECT_EQ(r.collapsed, 2);
  EXPECT_EQ(r.multiplier[0], Scalar(0));
  EXPECT_EQ(r.multiplier[1], Scalar(0));
  EXPECT_NEAR(static_cast<double>(r.multiplier[2]), std::pow(std::log(1.9), 1.5), 1e-6);
  const auto weighted = np::apply_hgsp_priors<Scalar>(items, r);
  EXPECT_EQ(weighted[0].importance, Scalar(0));
  EXPECT_NEAR(static_cast<double>(weighted[3].importance), std::pow(std::log(1.9), 1.5), 1e-6);
  // Collapsed items are removed before the others.
  const auto selection = np::select_greedy<Scalar>(weighted, 20);
  EXPECT_THAT(selection.pruned, ::testing::ElementsAre(0, 1));
}

TEST(Hgsp, StridedAndRowMajorInputs) {
  Eigen::Matrix<double, 3, 2, Eigen::RowMajor> table;
  table << 0.1, 0.2, 0.3, 0.4, 0.5, 0.6;
  const auto items = one_of_each<double>(3);
  np::hgsp_options o;
  o.tau = std::numeric_limits<double>::infinity();
  const auto r = np::hgsp_multipliers<double>(items, table.col(0), table.col(1), table.col(1), o);
  EXPECT_NEAR(r.multiplier[2], std::log(1.3), 1e-12);
}

TEST(Hgsp, BadInput) {
  Eigen::VectorXd L(2), A(2), P(2), short_one(1);
  L << 0.1, 0.2;
  short_one << 0.5;
  A = L;
  P = L;
  const auto items = one_of_each<double>(2);
  np::hgsp_options o;
  const auto expect = [](auto&& call, const char* fragment) { nashprune_test::expect_error_containing(call, fragment); };
  expect([&] { (void)np::hgsp_multipliers<double>(items, L, short_one, P, o); }, "attention_block_importance");
  Eigen::VectorXd bad = L;
  bad[1] = -1;
  expect([&] { (void)np::hgsp_multipliers<double>(items, bad, A, P, o); }, "negative value -1 at index 1");
  bad[1] = NAN;
  expect([&] { (void)np::hgsp_multipliers<double>(items, L, A, bad, o); }, "mlp_block_importance");
  o.temperature = -1;
  expect([&] { (void)np::hgsp_multipliers<double>(items, L, A, P, o); }, "temperature");
  o = {};
  o.tau = -1.0;
  expect([&] { (void)np::hgsp_multipliers<double>(items, L, A, P, o); }, "tau");
  o = {};
  o.epsilon = NAN;
  expect([&] { (void)np::hgsp_multipliers<double>(items, L, A, P, o); }, "epsilon");
  o = {};
  expect([&] { (void)np::hgsp_multipliers<double>(items, short_one, short_one, short_one, o); }, "layer 1 has no layer importance");
  expect([&] { (void)np::hgsp_multipliers<double>(items, Eigen::VectorXd(), Eigen::VectorXd(), Eigen::VectorXd(), o); }, "empty");
}

}  // namespace
