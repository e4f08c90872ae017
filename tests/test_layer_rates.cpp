#include <nashprune/layer_rates.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "scalar_test_support.hpp"

#include <cmath>
#include <random>
#include <stdexcept>
#include <type_traits>

namespace np = nashprune;

namespace {

template <typename T>
class LayerRatesTyped : public ::testing::Test {};
using nashprune_test::scalar_types;
TYPED_TEST_SUITE(LayerRatesTyped, scalar_types);

using nashprune_test::vec;

TYPED_TEST(LayerRatesTyped, WeightedMeanHitsTargetAndOrderFollowsStrategy) {
  using Scalar = TypeParam;
  std::mt19937 rng(9);
  std::lognormal_distribution<double> imp(0.0, 1.5);
  std::uniform_int_distribution<int> params(1, 100);
  std::uniform_real_distribution<double> target(0.16, 0.49);
  int checked = 0;
  for (int trial = 0; trial < 2000; ++trial) {
    const int n = 1 + trial % 40;
    vec<Scalar> s(n), p(n);
    for (int l = 0; l < n; ++l) {
      s[l] = static_cast<Scalar>(imp(rng));
      p[l] = static_cast<Scalar>(params(rng));
    }
    np::layer_rate_options o;
    o.strategy = static_cast<np::rate_strategy>(trial % 3);
    o.alpha = (trial % 7) * 0.5;
    o.log_transform = trial % 2 == 0;
    o.target = target(rng);
    np::layer_rates_result<Scalar> r;
    try {
      r = np::layer_pruning_rates<Scalar>(s, p, o);
    } catch (const std::domain_error& e) {
      EXPECT_THAT(e.what(), ::testing::HasSubstr("unreachable"));
      continue;
    }
    ++checked;
    double mean = 0;
    for (int l = 0; l < n; ++l) mean += static_cast<double>(p[l]) * static_cast<double>(r.rates[l]);
    mean /= static_cast<double>(p.sum());
    const double tolerance = std::is_same_v<Scalar, float> ? 1e-6 : 1e-12;
    EXPECT_NEAR(mean, o.target, tolerance) << "trial " << trial;
    EXPECT_NEAR(r.weighted_mean, o.target, 1e-12);
    for (int l = 0; l < n; ++l) {
      EXPECT_GE(r.rates[l], Scalar(o.min_rate) - Scalar(1e-7));
      EXPECT_LE(r.rates[l], Scalar(o.max_rate) + Scalar(1e-7));
      for (int m = 0; m < n; ++m) {
        if (s[l] < s[m] && o.strategy == np::rate_strategy::inverse) {
          EXPECT_GE(r.rates[l], r.rates[m]);
        }
        if (s[l] < s[m] && o.strategy == np::rate_strategy::proportional) {
          EXPECT_LE(r.rates[l], r.rates[m]);
        }
        if (o.strategy == np::rate_strategy::uniform || o.alpha == 0) {
          EXPECT_NEAR(r.rates[l], r.rates[m], 1e-6);
        }
      }
    }
  }
  EXPECT_GT(checked, 1500);
}

TYPED_TEST(LayerRatesTyped, SeedDefaultsOnThirtyTwoLayers) {
  using Scalar = TypeParam;
  vec<Scalar> s(32), none;
  for (int l = 0; l < 32; ++l) s[l] = static_cast<Scalar>(l == 0 || l == 31 ? 10.0 : 1.0 + 0.01 * l);
  const auto r = np::layer_pruning_rates<Scalar>(s, none);  // target 0.25, [0.15, 0.5], inverse, alpha 1, log
  EXPECT_NEAR(static_cast<double>(r.rates.mean()), 0.25, 1e-6);
  EXPECT_LT(r.rates[0], r.rates[15]);  // the outlier first and last layers are protected
  EXPECT_EQ(r.rates[0], r.rates[31]);
  // The log transform narrows the gap the outliers open.
  np::layer_rate_options with_log, raw;
  with_log.min_rate = raw.min_rate = 0.0;
  raw.log_transform = false;
  const auto r1 = np::layer_pruning_rates<Scalar>(s, none, with_log);
  const auto r2 = np::layer_pruning_rates<Scalar>(s, none, raw);
  EXPECT_LT(r2.rates[0], r1.rates[0]);
}

TEST(LayerRates, ZeroImportanceAndUnreachableTargets) {
  Eigen::VectorXd s(3), none;
  s << 0.0, 1.0, 2.0;
  np::layer_rate_options o;
  o.target = 0.3;
  const auto r = np::layer_pruning_rates<double>(s, none, o);
  EXPECT_DOUBLE_EQ(r.rates[0], 0.5);  // inverse with w = 0: max_rate
  EXPECT_NEAR(r.rates.mean(), 0.3, 1e-12);
  o.target = 0.25;  // layers 1 and 2 would need 0.125 on average, below min_rate
  EXPECT_THROW((void)np::layer_pruning_rates<double>(s, none, o), std::domain_error);
  o.target = 0.6;
  try {
    (void)np::layer_pruning_rates<double>(s, none, o);
    ADD_FAILURE();
  } catch (const std::domain_error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("unreachable"));
    EXPECT_THAT(e.what(), ::testing::HasSubstr("0.500000"));
  }
  o.target = 0.1;
  EXPECT_THROW((void)np::layer_pruning_rates<double>(s, none, o), std::domain_error);
  Eigen::VectorXd zeros = Eigen::VectorXd::Zero(4);
  o = {};
  EXPECT_NEAR(np::layer_pruning_rates<double>(zeros, none, o).rates[2], 0.25, 1e-12);
}

TEST(LayerRates, BadInput) {
  Eigen::VectorXd s(2), none, p(3);
  s << 1.0, 2.0;
  const auto expect = [](auto&& call, const char* fragment) { nashprune_test::expect_error_containing(call, fragment); };
  expect([&] { (void)np::layer_pruning_rates<double>(s, p, {}); }, "parameters");
  np::layer_rate_options o;
  o.min_rate = 0.6;
  expect([&] { (void)np::layer_pruning_rates<double>(s, none, o); }, "min_rate");
  o = {};
  o.target = 1.2;
  expect([&] { (void)np::layer_pruning_rates<double>(s, none, o); }, "target");
  o = {};
  o.alpha = -1;
  expect([&] { (void)np::layer_pruning_rates<double>(s, none, o); }, "alpha");
  Eigen::VectorXd bad = s;
  bad[1] = -2;
  expect([&] { (void)np::layer_pruning_rates<double>(bad, none, {}); }, "index 1");
  expect([&] { (void)np::layer_pruning_rates<double>(none, none, {}); }, "empty");
  Eigen::VectorXd zero_params = Eigen::VectorXd::Zero(2);
  expect([&] { (void)np::layer_pruning_rates<double>(s, zero_params, {}); }, "sum to zero");
}

}  // namespace
