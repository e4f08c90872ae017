#include <nashprune/depth_pruning.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "scalar_test_support.hpp"

#include <cmath>
#include <limits>
#include <random>
#include <stdexcept>
#include <vector>

namespace np = nashprune;

namespace {

template <typename T>
class DepthTyped : public ::testing::Test {};
using nashprune_test::scalar_types;
TYPED_TEST_SUITE(DepthTyped, scalar_types);

using nashprune_test::vec;

TYPED_TEST(DepthTyped, BlockInfluenceMatchesPlainLoopInBothStorageOrders) {
  using Scalar = TypeParam;
  using row_major = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using col_major = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  std::mt19937 rng(1);
  std::normal_distribution<double> g;
  for (int trial = 0; trial < 50; ++trial) {
    const int tokens = 1 + trial % 7, dim = 1 + trial % 5;
    row_major a(tokens, dim);
    col_major b(tokens, dim);
    for (int t = 0; t < tokens; ++t) {
      for (int d = 0; d < dim; ++d) {
        a(t, d) = static_cast<Scalar>(g(rng));
        b(t, d) = static_cast<Scalar>(g(rng));
      }
    }
    if (trial % 5 == 0) a.row(0).setZero();
    double expected = 0;
    for (int t = 0; t < tokens; ++t) {
      double dot = 0, na = 0, nb = 0;
      for (int d = 0; d < dim; ++d) {
        dot += static_cast<double>(a(t, d)) * static_cast<double>(b(t, d));
        na += static_cast<double>(a(t, d)) * static_cast<double>(a(t, d));
        nb += static_cast<double>(b(t, d)) * static_cast<double>(b(t, d));
      }
      expected += (na == 0 || nb == 0) ? 1.0 : 1.0 - dot / std::sqrt(na * nb);
    }
    expected /= tokens;
    EXPECT_NEAR(static_cast<double>(np::block_influence(a, b)), expected, 1e-5);
    // A strided view (every other column of a wider buffer) reads the same values.
    col_major wide(tokens, 2 * dim);
    for (int d = 0; d < dim; ++d) wide.col(2 * d) = b.col(d);
    Eigen::Map<const col_major, 0, Eigen::OuterStride<>> strided(wide.data(), tokens, dim, Eigen::OuterStride<>(2 * tokens));
    EXPECT_NEAR(static_cast<double>(np::block_influence(a, strided)), expected, 1e-5);
  }
  col_major zero = col_major::Zero(2, 3);
  EXPECT_EQ(np::block_influence(zero, zero), Scalar(0));  // identity on zero tokens
  col_major x(1, 2), y(1, 2);
  x << 1, 0;
  y << -1, 0;
  EXPECT_NEAR(static_cast<double>(np::block_influence(x, y)), 2.0, 1e-6);  // opposite directions
}

TYPED_TEST(DepthTyped, SelectionsEqualBruteForce) {
  using Scalar = TypeParam;
  std::mt19937 rng(8);
  std::uniform_int_distribution<int> coarse(0, 4);
  for (int trial = 0; trial < 500; ++trial) {
    const int n = 1 + trial % 12;
    vec<Scalar> s(n);
    for (int l = 0; l < n; ++l) s[l] = static_cast<Scalar>(coarse(rng));
    np::depth_options o;
    o.freeze_first_layers = trial % 2;
    o.freeze_last_layers = (trial / 2) % 2;
    const int first = std::min(n, static_cast<int>(o.freeze_first_layers));
    const int last = std::max(first, n - static_cast<int>(o.freeze_last_layers));
    o.layers_to_drop = std::uniform_int_distribution<int>(0, last - first)(rng);
    // any set: the dropped sum is the k smallest, ties to lower layers.
    const auto any = np::select_layers_to_drop<Scalar>(s, o);
    std::vector<std::pair<Scalar, int>> sorted;
    for (int l = first; l < last; ++l) sorted.push_back({s[l], l});
    std::sort(sorted.begin(), sorted.end());
    std::vector<std::int64_t> expected;
    for (int k = 0; k < o.layers_to_drop; ++k) expected.push_back(sorted[static_cast<std::size_t>(k)].second);
    std::sort(expected.begin(), expected.end());
    EXPECT_EQ(any.dropped, expected);
    EXPECT_EQ(static_cast<std::int64_t>(any.kept.size() + any.dropped.size()), n);
    // contiguous: the earliest window with the least sum.
    o.selection = np::depth_selection::contiguous_block;
    const auto block = np::select_layers_to_drop<Scalar>(s, o);
    double best = std::numeric_limits<double>::infinity();
    int best_start = first;
    for (int start = first; start + o.layers_to_drop <= last && o.layers_to_drop > 0; ++start) {
      double sum = 0;
      for (int l = start; l < start + o.layers_to_drop; ++l) sum += static_cast<double>(s[l]);
      if (sum < best) {
        best = sum;
        best_start = start;
      }
    }
    expected.clear();
    for (int l = best_start; l < best_start + o.layers_to_drop; ++l) expected.push_back(l);
    EXPECT_EQ(block.dropped, expected) << "trial " << trial;
  }
}

// densecore-model-optimization.md: 32 layers -> 24 (25 %) and -> 16 (50 %).
TEST(Depth, PresetsOnLlama2_7B) {
  EXPECT_EQ(32 - np::preset_drop_count(np::depth_preset::drop_25_percent, 32), 24);
  EXPECT_EQ(32 - np::preset_drop_count(np::depth_preset::drop_50_percent, 32), 16);
  EXPECT_EQ(np::preset_drop_count(np::depth_preset::drop_25_percent, 3), 0);
  EXPECT_THROW((void)np::preset_drop_count(np::depth_preset::drop_50_percent, 0), std::invalid_argument);
  // L1 scores: middle layers smallest; freezing the ends keeps them.
  Eigen::VectorXd l1(32), params = Eigen::VectorXd::Constant(32, 1000.0);
  for (int l = 0; l < 32; ++l) l1[l] = 100.0 + std::abs(l - 15.5);
  const Eigen::VectorXd scores = np::weight_norm_scores<double>(l1, params);
  np::depth_options o;
  o.layers_to_drop = np::preset_drop_count(np::depth_preset::drop_50_percent, 32);
  o.selection = np::depth_selection::contiguous_block;
  const auto plan = np::select_layers_to_drop<double>(scores, o);
  EXPECT_EQ(plan.dropped.front(), 8);
  EXPECT_EQ(plan.dropped.back(), 23);
  EXPECT_EQ(plan.kept.size(), 16U);
}

TEST(Depth, BadInput) {
  Eigen::VectorXd s(4), wrong(3), none;
  s << 1, 2, 3, 4;
  const auto expect = [](auto&& call, const char* fragment) { nashprune_test::expect_error_containing(call, fragment); };
  np::depth_options o;
  o.layers_to_drop = 5;
  expect([&] { (void)np::select_layers_to_drop<double>(s, o); }, "layers_to_drop");
  o.layers_to_drop = 3;
  o.freeze_first_layers = 2;
  expect([&] { (void)np::select_layers_to_drop<double>(s, o); }, "outside [0, 2]");
  expect([&] { (void)np::select_layers_to_drop<double>(none, {}); }, "empty");
  Eigen::VectorXd nan = s;
  nan[2] = NAN;
  expect([&] { (void)np::select_layers_to_drop<double>(nan, {}); }, "index 2");
  expect([&] { (void)np::weight_norm_scores<double>(s, wrong); }, "parameters");
  Eigen::VectorXd zeros = Eigen::VectorXd::Zero(4);
  expect([&] { (void)np::weight_norm_scores<double>(s, zeros); }, "zero parameters at index 0");
  Eigen::MatrixXd a(2, 3), b(3, 3);
  a.setOnes();
  b.setOnes();
  expect([&] { (void)np::block_influence(a, b); }, "row count");
  a(1, 1) = INFINITY;
  expect([&] { (void)np::block_influence(a, a); }, "x_in");
}

}  // namespace
