#include <nashprune/bit_allocation.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "scalar_test_support.hpp"

#include <cmath>
#include <limits>
#include <random>
#include <span>
#include <stdexcept>
#include <vector>

namespace np = nashprune;
using np::ggml_type;

namespace {

template <typename T>
class BitAllocationTyped : public ::testing::Test {};
using nashprune_test::scalar_types;
TYPED_TEST_SUITE(BitAllocationTyped, scalar_types);

using nashprune_test::vec;

double plain_error(double importance, const np::quant_tensor& t, ggml_type type) {
  return importance * static_cast<double>(t.row_length * t.rows) * std::pow(2.0, -2.0 * np::traits_of(type).bits_per_weight());
}

/// Within the budget, no better than the optimum, off it by at most its gap bound, and a valid LP bound.
void expect_within_its_bounds(const np::bit_allocation& a, std::int64_t budget, double optimum, int trial) {
  const double tol = 1e-9 * std::max(1.0, optimum);
  EXPECT_LE(a.bytes, budget);
  EXPECT_GE(a.error + tol, optimum) << "trial " << trial;
  EXPECT_LE(a.error - optimum, a.gap_bound + tol) << "trial " << trial;
  EXPECT_LE(a.lower_bound, optimum + tol) << "trial " << trial;
}

/// The least total error over every combination of available types within the budget.
template <typename Available, typename Error>
double brute_force_optimum(const std::vector<np::quant_tensor>& tensors, std::span<const ggml_type> menu, std::int64_t budget,
                           const Available& available, const Error& error_of) {
  double optimum = std::numeric_limits<double>::infinity();
  std::vector<std::size_t> pick(tensors.size(), 0);
  for (;;) {
    std::int64_t bytes = 0;
    double error = 0;
    bool ok = true;
    for (std::size_t t = 0; t < tensors.size() && ok; ++t) {
      ok = available(t, pick[t]);
      if (!ok) break;
      bytes += np::row_bytes(menu[pick[t]], tensors[t].row_length) * tensors[t].rows;
      error += error_of(t, pick[t]);
    }
    if (ok && bytes <= budget) optimum = std::min(optimum, error);
    std::size_t k = 0;
    while (k < pick.size() && ++pick[k] == menu.size()) pick[k++] = 0;
    if (k == pick.size()) break;
  }
  return optimum;
}

TYPED_TEST(BitAllocationTyped, OptimalAllocatorAgainstBruteForce) {
  using Scalar = TypeParam;
  std::mt19937 rng(21);
  std::uniform_int_distribution<int> count(1, 4), rows(1, 6), kind(0, 3);
  std::lognormal_distribution<double> imp(0.0, 2.0);
  const std::vector<std::int64_t> lengths{256, 512, 96, 1024};
  const auto& menu = np::default_quant_menu;
  for (int trial = 0; trial < 300; ++trial) {
    const int n = count(rng);
    std::vector<np::quant_tensor> tensors;
    vec<Scalar> importance(n);
    for (int t = 0; t < n; ++t) {
      tensors.push_back({"t" + std::to_string(t), lengths[static_cast<std::size_t>(kind(rng))], rows(rng)});
      importance[t] = static_cast<Scalar>(trial % 5 == 0 && t == 0 ? 0.0 : imp(rng));
    }
    std::int64_t least = 0, most = 0;
    for (const auto& t : tensors) {
      std::int64_t lo = std::numeric_limits<std::int64_t>::max(), hi = 0;
      for (const auto type : menu) {
        if (t.row_length % np::traits_of(type).block_size != 0) continue;
        lo = std::min(lo, np::row_bytes(type, t.row_length) * t.rows);
        hi = std::max(hi, np::row_bytes(type, t.row_length) * t.rows);
      }
      least += lo;
      most += hi;
    }
    const std::int64_t budget = std::uniform_int_distribution<std::int64_t>(least, most)(rng);
    const auto a = np::allocate_bits<Scalar>(tensors, importance, budget);
    const double optimum = brute_force_optimum(
        tensors, menu, budget,
        [&](std::size_t t, std::size_t k) { return tensors[t].row_length % np::traits_of(menu[k]).block_size == 0; },
        [&](std::size_t t, std::size_t k) { return plain_error(static_cast<double>(importance[static_cast<Eigen::Index>(t)]), tensors[t], menu[k]); });
    expect_within_its_bounds(a, budget, optimum, trial);
    // Meets the budget: no single upgrade still fits.
    for (int t = 0; t < n; ++t) {
      const auto& tt = tensors[static_cast<std::size_t>(t)];
      const auto now = np::row_bytes(a.types[static_cast<std::size_t>(t)], tt.row_length) * tt.rows;
      for (const auto type : menu) {
        if (tt.row_length % np::traits_of(type).block_size != 0) continue;
        const auto extra = np::row_bytes(type, tt.row_length) * tt.rows - now;
        if (extra > 0 && plain_error(static_cast<double>(importance[t]), tt, type) < plain_error(static_cast<double>(importance[t]), tt, a.types[static_cast<std::size_t>(t)])) {
          EXPECT_GT(a.bytes + extra, budget) << "trial " << trial;
        }
      }
    }
  }
}

TYPED_TEST(BitAllocationTyped, SeedQuantileRuleAndItsAverageBits) {
  using Scalar = TypeParam;
  std::vector<np::quant_tensor> tensors;
  vec<Scalar> importance(10);
  for (int t = 0; t < 10; ++t) {
    tensors.push_back({"blk." + std::to_string(t) + ".ffn_up.weight", 4096, 64});
    importance[t] = static_cast<Scalar>(t + 1);
  }
  const auto base = np::quantile_baseline<Scalar>(tensors, importance);
  // q90 = 9.1: tensor 10 -> q8_0; q70 = 7.3: tensors 8, 9 -> q4_K; the rest -> q2_K.
  EXPECT_EQ(base.types[9], ggml_type::q8_0);
  EXPECT_EQ(base.types[8], ggml_type::q4_k);
  EXPECT_EQ(base.types[7], ggml_type::q4_k);
  EXPECT_EQ(base.types[6], ggml_type::q2_k);
  EXPECT_EQ(base.types[0], ggml_type::q2_k);
  // The seed's "~3 bits" counts 8/4/2 nominal bits; real ggml blocks give 3.5875.
  EXPECT_DOUBLE_EQ(base.average_bits(), 0.1 * 8.5 + 0.2 * 4.5 + 0.7 * 2.625);
  // At the same bytes the optimal allocator does no worse.
  const auto best = np::allocate_bits<Scalar>(tensors, importance, base.bytes);
  EXPECT_LE(best.bytes, base.bytes);
  EXPECT_LE(best.error, base.error);
  // An average-bits budget.
  const std::int64_t three_bits = np::bytes_for_average_bits(tensors, 3.0);
  EXPECT_EQ(three_bits, 10 * 4096 * 64 * 3 / 8);
  EXPECT_LE(np::allocate_bits<Scalar>(tensors, importance, three_bits).average_bits(), 3.0);
}

TEST(BitAllocation, RowsThatKQuantsCannotHoldFallBack) {
  const std::vector<np::quant_tensor> tensors{{"a", 96, 4}, {"b", 96, 4}, {"c", 256, 4}};
  Eigen::VectorXd importance(3);
  importance << 0.0, 1.0, 2.0;
  const auto base = np::quantile_baseline<double>(tensors, importance);
  EXPECT_EQ(base.types[0], ggml_type::q8_0);  // wanted q2_K: 96 is not a multiple of 256
  EXPECT_EQ(base.types[2], ggml_type::q8_0);
  const auto a = np::allocate_bits<double>(tensors, importance, 100000);
  EXPECT_EQ(a.types[0], ggml_type::q8_0);  // zero importance: the cheapest type that fits
  EXPECT_EQ(a.types[1], ggml_type::f16);
  EXPECT_EQ(a.types[2], ggml_type::f16);
}

TEST(BitAllocation, TensorTypeOverrides) {
  const std::vector<np::quant_tensor> tensors{{"blk.0.attn_q.weight", 256, 1}, {"blk.10.ffn_up.weight", 256, 1}};
  const std::vector<ggml_type> types{ggml_type::q4_k, ggml_type::q8_0};
  EXPECT_THAT(np::tensor_type_overrides(tensors, types),
              ::testing::ElementsAre("^blk\\.0\\.attn_q\\.weight$=q4_K", "^blk\\.10\\.ffn_up\\.weight$=q8_0"));
  EXPECT_THAT(np::tensor_type_overrides(tensors, types, ggml_type::q4_k), ::testing::ElementsAre("^blk\\.10\\.ffn_up\\.weight$=q8_0"));
  EXPECT_THROW((void)np::tensor_type_overrides(tensors, std::vector<ggml_type>{ggml_type::f16}), std::invalid_argument);
}

TEST(BitAllocation, BadInput) {
  const std::vector<np::quant_tensor> tensors{{"a", 256, 4}, {"b", 256, 4}};
  Eigen::VectorXd importance(2), wrong(3);
  importance << 1.0, 2.0;
  const auto expect = [](auto&& call, const char* fragment) { nashprune_test::expect_error_containing(call, fragment); };
  expect([&] { (void)np::allocate_bits<double>(tensors, importance, 10); }, "below the smallest plan, 672 bytes");
  expect([&] { (void)np::allocate_bits<double>(tensors, wrong, 1000); }, "importance");
  Eigen::VectorXd negative = importance;
  negative[1] = -1;
  expect([&] { (void)np::quantile_baseline<double>(tensors, negative); }, "index 1");
  const std::vector<np::quant_tensor> odd{{"a", 256, 4}, {"odd", 10, 4}};
  const std::vector<ggml_type> quantized{ggml_type::q4_k, ggml_type::q8_0};
  expect([&] { (void)np::allocate_bits<double>(odd, importance, 100000, quantized); }, "fits no menu type at index 1 ('odd')");
  const std::vector<np::quant_tensor> empty_shape{{"z", 0, 4}};
  expect([&] { (void)np::bytes_for_average_bits(empty_shape, 3.0); }, "non-positive shape at index 0 ('z')");
  expect([&] { (void)np::bytes_for_average_bits(tensors, -3.0); }, "bits_per_weight");
  const std::vector<ggml_type> twice{ggml_type::q4_k, ggml_type::q4_k};
  expect([&] { (void)np::allocate_bits<double>(tensors, importance, 100000, twice); }, "repeats a type at index 1");
  expect([&] { (void)np::allocate_bits<double>(tensors, importance, 100000, std::span<const ggml_type>{}); }, "menu");
  expect([&] { (void)np::allocate_bits<double>(std::span<const np::quant_tensor>{}, importance, 1); }, "tensors");
}

// Measured errors: random non-monotone error tables (including types that are
// worse than cheaper ones and unavailable entries) against brute force.
TEST(BitAllocation, MeasuredErrorsAgainstBruteForce) {
  std::mt19937 rng(5);
  std::uniform_int_distribution<int> count(1, 4), rows(1, 5), kind(0, 2);
  std::lognormal_distribution<double> err(0.0, 1.5);
  std::bernoulli_distribution unavailable(0.15);
  const std::vector<ggml_type> menu{ggml_type::q4_0, ggml_type::q5_1, ggml_type::q8_0, ggml_type::q4_k, ggml_type::f16};
  const std::vector<std::int64_t> lengths{64, 256, 96};
  for (int trial = 0; trial < 300; ++trial) {
    const int n = count(rng);
    std::vector<np::quant_tensor> tensors;
    Eigen::MatrixXd errors(n, static_cast<Eigen::Index>(menu.size()));
    for (int t = 0; t < n; ++t) {
      tensors.push_back({"t" + std::to_string(t), lengths[static_cast<std::size_t>(kind(rng))], rows(rng)});
      for (std::size_t k = 0; k < menu.size(); ++k) {
        // f16 always available, so every tensor has a type.
        const bool gone = k + 1 < menu.size() && unavailable(rng);
        errors(t, static_cast<Eigen::Index>(k)) = gone ? std::numeric_limits<double>::infinity() : err(rng) / static_cast<double>(k + 1);
      }
    }
    auto available = [&](int t, std::size_t k) {
      return std::isfinite(errors(t, static_cast<Eigen::Index>(k))) &&
             tensors[static_cast<std::size_t>(t)].row_length % np::traits_of(menu[k]).block_size == 0;
    };
    std::int64_t least = 0, most = 0;
    for (int t = 0; t < n; ++t) {
      std::int64_t lo = std::numeric_limits<std::int64_t>::max(), hi = 0;
      for (std::size_t k = 0; k < menu.size(); ++k) {
        if (!available(t, k)) continue;
        const auto& tt = tensors[static_cast<std::size_t>(t)];
        lo = std::min(lo, np::row_bytes(menu[k], tt.row_length) * tt.rows);
        hi = std::max(hi, np::row_bytes(menu[k], tt.row_length) * tt.rows);
      }
      least += lo;
      most += hi;
    }
    const std::int64_t budget = std::uniform_int_distribution<std::int64_t>(least, most)(rng);
    const auto a = np::allocate_bits_measured<double>(tensors, errors, budget, menu);
    const double optimum = brute_force_optimum(
        tensors, menu, budget, [&](std::size_t t, std::size_t k) { return available(static_cast<int>(t), k); },
        [&](std::size_t t, std::size_t k) { return errors(static_cast<Eigen::Index>(t), static_cast<Eigen::Index>(k)); });
    expect_within_its_bounds(a, budget, optimum, trial);
    for (int t = 0; t < n; ++t) {
      const auto k = static_cast<std::size_t>(std::find(menu.begin(), menu.end(), a.types[static_cast<std::size_t>(t)]) - menu.begin());
      EXPECT_TRUE(available(t, k)) << "trial " << trial << " tensor " << t;
    }
  }
}

TEST(BitAllocation, MeasuredErrorsMatchTheModelAllocator) {
  // With the model's own errors in the table, the measured allocator is allocate_bits.
  const std::vector<np::quant_tensor> tensors{{"a", 256, 3}, {"b", 512, 2}, {"c", 96, 5}};
  Eigen::VectorXd importance(3);
  importance << 0.5, 3.0, 1.0;
  const auto& menu = np::default_quant_menu;
  Eigen::MatrixXd errors(3, static_cast<Eigen::Index>(menu.size()));
  for (Eigen::Index t = 0; t < 3; ++t) {
    for (std::size_t k = 0; k < menu.size(); ++k) {
      errors(t, static_cast<Eigen::Index>(k)) = plain_error(importance[t], tensors[static_cast<std::size_t>(t)], menu[k]);
    }
  }
  for (const std::int64_t budget : {3000, 5000, 8000}) {
    const auto model = np::allocate_bits<double>(tensors, importance, budget);
    const auto measured = np::allocate_bits_measured<double>(tensors, errors, budget, menu);
    EXPECT_EQ(model.types, measured.types) << budget;
    EXPECT_DOUBLE_EQ(model.error, measured.error) << budget;
    EXPECT_DOUBLE_EQ(model.lower_bound, measured.lower_bound) << budget;
  }
}

TEST(BitAllocation, MeasuredErrorsBadInput) {
  const std::vector<np::quant_tensor> tensors{{"a", 64, 4}, {"b", 64, 4}};
  const std::vector<ggml_type> menu{ggml_type::q4_0, ggml_type::q8_0};
  const auto expect = [](auto&& call, const char* fragment) { nashprune_test::expect_error_containing(call, fragment); };
  Eigen::MatrixXd errors(2, 2);
  errors << 1.0, 0.5, 2.0, 0.1;
  Eigen::MatrixXd nan = errors;
  nan(1, 0) = std::nan("");
  expect([&] { (void)np::allocate_bits_measured<double>(tensors, nan, 1000, menu); }, "(1, 0) ('b', q4_0): NaN");
  Eigen::MatrixXd negative = errors;
  negative(0, 1) = -1;
  expect([&] { (void)np::allocate_bits_measured<double>(tensors, negative, 1000, menu); }, "(0, 1) ('a', q8_0)");
  Eigen::MatrixXd none = errors;
  none.row(1).setConstant(std::numeric_limits<double>::infinity());
  expect([&] { (void)np::allocate_bits_measured<double>(tensors, none, 1000, menu); }, "no menu type is available at index 1 ('b')");
  expect([&] { (void)np::allocate_bits_measured<double>(tensors, Eigen::MatrixXd(2, 3), 1000, menu); }, "errors columns");
  expect([&] { (void)np::allocate_bits_measured<double>(tensors, Eigen::MatrixXd(1, 2), 1000, menu); }, "errors rows");
  expect([&] { (void)np::allocate_bits_measured<double>(tensors, errors, 10, menu); }, "below the smallest plan, 288 bytes");
}

}  // namespace
