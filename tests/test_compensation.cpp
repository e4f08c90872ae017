// compensation.hpp: on explicit samples, the refit equals a least-squares solve of
// W x on [x_K, 1] and every reported error equals the mean squared output change
// measured on the samples; a removed coordinate that is an affine combination of kept
// ones leaves no error after the refit; damping, the singular case, and every bad
// input named.
#include <gtest/gtest.h>

#include <nashprune/compensated_selection.hpp>
#include <nashprune/compensation.hpp>

#include <Eigen/QR>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "expect_error.hpp"

namespace {

namespace np = nashprune;
using nashprune_test::expect_error;
using Eigen::MatrixXd;
using Eigen::VectorXd;

/// Samples (rows) with correlated, non-centred coordinates, and their moments.
struct samples {
  MatrixXd x;  // N × n
  MatrixXd second_moment;
  VectorXd mean;
};

samples moments_of(MatrixXd x) {
  samples s;
  const double count = static_cast<double>(x.rows());
  s.second_moment = x.transpose() * x / count;
  s.mean = x.colwise().sum().transpose() / count;
  s.x = std::move(x);
  return s;
}

samples random_samples(Eigen::Index count, Eigen::Index n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal;
  MatrixXd mixing(n, n);
  for (auto& v : mixing.reshaped()) v = normal(rng);
  VectorXd offset(n);
  for (auto& v : offset) v = normal(rng);
  MatrixXd z(count, n);
  for (auto& v : z.reshaped()) v = normal(rng);
  MatrixXd x = z * mixing;
  x.rowwise() += offset.transpose();
  return moments_of(std::move(x));
}

MatrixXd random_matrix(Eigen::Index rows, Eigen::Index cols, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal;
  MatrixXd m(rows, cols);
  for (auto& v : m.reshaped()) v = normal(rng);
  return m;
}

/// A random split of [0, n) into ascending kept and removed lists (removed non-empty).
std::pair<std::vector<std::int64_t>, std::vector<std::int64_t>> random_split(std::int64_t n, std::int64_t removed_count,
                                                                             std::uint32_t seed) {
  std::vector<std::int64_t> all(static_cast<std::size_t>(n));
  std::iota(all.begin(), all.end(), std::int64_t{0});
  std::mt19937 rng(seed);
  std::shuffle(all.begin(), all.end(), rng);
  std::vector<std::int64_t> removed(all.begin(), all.begin() + removed_count);
  std::vector<std::int64_t> kept(all.begin() + removed_count, all.end());
  std::sort(removed.begin(), removed.end());
  std::sort(kept.begin(), kept.end());
  return {kept, removed};
}

/// The mean over the samples of ‖W x − (W'_K x_K + b)‖², by a loop over samples.
double measured_error(const samples& s, const MatrixXd& weight, const std::vector<std::int64_t>& kept,
                      const MatrixXd& kept_weight, const VectorXd& bias) {
  double total = 0;
  for (Eigen::Index t = 0; t < s.x.rows(); ++t) {
    VectorXd replaced = bias;
    for (std::size_t j = 0; j < kept.size(); ++j) replaced += kept_weight.col(static_cast<Eigen::Index>(j)) * s.x(t, kept[j]);
    total += (weight * s.x.row(t).transpose() - replaced).squaredNorm();
  }
  return total / static_cast<double>(s.x.rows());
}

TEST(Compensation, RefitEqualsLeastSquaresOnSamplesAndEveryErrorEqualsTheMeasuredOne) {
  for (std::uint32_t seed = 1; seed <= 6; ++seed) {
    const Eigen::Index n = 12;
    const Eigen::Index m = 7;
    const auto s = random_samples(200, n, seed);
    const MatrixXd weight = random_matrix(m, n, seed + 100);
    const auto [kept, removed] = random_split(n, 1 + seed % 5, seed);

    // Least squares of W x on [x_K, 1] over the samples, by QR.
    MatrixXd design(s.x.rows(), static_cast<Eigen::Index>(kept.size()) + 1);
    for (std::size_t j = 0; j < kept.size(); ++j) design.col(static_cast<Eigen::Index>(j)) = s.x.col(kept[j]);
    design.col(design.cols() - 1).setOnes();
    const MatrixXd targets = s.x * weight.transpose();
    const MatrixXd solution = design.colPivHouseholderQr().solve(targets);  // (|K|+1) × m
    const MatrixXd expected_weight = solution.topRows(static_cast<Eigen::Index>(kept.size())).transpose();
    const VectorXd expected_bias = solution.bottomRows(1).transpose();

    const auto refit = np::compensate(np::compensation_kind::refit, weight, s.second_moment, s.mean, kept, removed,
                                      np::compensation_options<double>{0.0});
    EXPECT_FALSE(refit.damping_raised);
    EXPECT_EQ(refit.damping, 0.0);
    EXPECT_LT((refit.kept_weight - expected_weight).cwiseAbs().maxCoeff(), 1e-8) << "seed " << seed;
    EXPECT_LT((refit.bias - expected_bias).cwiseAbs().maxCoeff(), 1e-8) << "seed " << seed;

    for (const auto kind : {np::compensation_kind::none, np::compensation_kind::bias, np::compensation_kind::refit}) {
      for (const double damping : {0.0, 0.001, 0.1}) {
        const auto c = np::compensate(kind, weight, s.second_moment, s.mean, kept, removed, np::compensation_options<double>{damping});
        const double measured = measured_error(s, weight, kept, c.kept_weight, c.bias);
        EXPECT_NEAR(c.error, measured, 1e-9 * (1 + measured)) << "seed " << seed << " kind " << static_cast<int>(kind);
        EXPECT_NEAR(np::expected_output_error(weight, s.second_moment, s.mean, kept, c.kept_weight, c.bias), measured,
                    1e-9 * (1 + measured));
      }
    }
    // Plain removal, FLAP's bias and the refit, in that order, and their closed forms.
    const auto none = np::compensate(np::compensation_kind::none, weight, s.second_moment, s.mean, kept, removed);
    const auto bias = np::compensate(np::compensation_kind::bias, weight, s.second_moment, s.mean, kept, removed);
    MatrixXd removed_weight(m, static_cast<Eigen::Index>(removed.size()));
    MatrixXd removed_moment(removed.size(), removed.size());
    VectorXd removed_mean(removed.size());
    for (std::size_t i = 0; i < removed.size(); ++i) {
      removed_weight.col(static_cast<Eigen::Index>(i)) = weight.col(removed[i]);
      removed_mean(static_cast<Eigen::Index>(i)) = s.mean(removed[i]);
      for (std::size_t j = 0; j < removed.size(); ++j)
        removed_moment(static_cast<Eigen::Index>(i), static_cast<Eigen::Index>(j)) = s.second_moment(removed[i], removed[j]);
    }
    EXPECT_NEAR(none.error, (removed_weight * removed_moment * removed_weight.transpose()).trace(), 1e-9 * (1 + none.error));
    EXPECT_LT((bias.bias - removed_weight * removed_mean).cwiseAbs().maxCoeff(), 1e-12);
    EXPECT_LE(refit.error, bias.error + 1e-12);
    EXPECT_LE(bias.error, none.error + 1e-12);
  }
}

TEST(Compensation, RemovingAnAffineCombinationOfKeptCoordinatesLeavesNoErrorAfterRefit) {
  const Eigen::Index n = 8;
  auto base = random_samples(100, n, 7);
  MatrixXd x = base.x;
  x.col(3) = 0.5 * x.col(0) - 2.0 * x.col(5) + VectorXd::Constant(x.rows(), 1.5);
  const auto s = moments_of(x);
  const MatrixXd weight = random_matrix(5, n, 8);
  const std::vector<std::int64_t> kept{0, 1, 2, 4, 5, 6, 7};
  const std::vector<std::int64_t> removed{3};
  const auto none = np::compensate(np::compensation_kind::none, weight, s.second_moment, s.mean, kept, removed);
  const auto refit = np::compensate(np::compensation_kind::refit, weight, s.second_moment, s.mean, kept, removed,
                                    np::compensation_options<double>{0.0});
  ASSERT_GT(none.error, 1.0);
  EXPECT_LT(refit.error, 1e-10 * none.error);
  EXPECT_LT(measured_error(s, weight, kept, refit.kept_weight, refit.bias), 1e-10 * none.error);
}

TEST(Compensation, NothingRemovedLeavesTheMapUnchangedAtAnyDamping) {
  const auto s = random_samples(50, 6, 3);
  const MatrixXd weight = random_matrix(4, 6, 4);
  const std::vector<std::int64_t> kept{0, 1, 2, 3, 4, 5};
  for (const double damping : {0.0, 0.001, 1.0}) {
    const auto c = np::compensate(np::compensation_kind::refit, weight, s.second_moment, s.mean, kept, {},
                                  np::compensation_options<double>{damping});
    EXPECT_EQ(c.kept_weight, weight);
    EXPECT_EQ(c.bias, VectorXd::Zero(4));
    EXPECT_NEAR(c.error, 0.0, 1e-12);
  }
}

TEST(Compensation, DampingRaisesTheErrorOnlySlightlyAndRemovingEverythingLeavesTheMean) {
  const auto s = random_samples(300, 10, 11);
  const MatrixXd weight = random_matrix(6, 10, 12);
  const auto [kept, removed] = random_split(10, 4, 13);
  const auto exact = np::compensate(np::compensation_kind::refit, weight, s.second_moment, s.mean, kept, removed,
                                    np::compensation_options<double>{0.0});
  const auto damped = np::compensate(np::compensation_kind::refit, weight, s.second_moment, s.mean, kept, removed);
  EXPECT_GT(damped.damping, 0.0);
  EXPECT_GE(damped.error, exact.error - 1e-12);
  EXPECT_LE(damped.error, exact.error * 1.05 + 1e-12);

  std::vector<std::int64_t> all(10);
  std::iota(all.begin(), all.end(), std::int64_t{0});
  const auto gone = np::compensate(np::compensation_kind::refit, weight, s.second_moment, s.mean, {}, all);
  EXPECT_EQ(gone.kept_weight.cols(), 0);
  EXPECT_LT((gone.bias - weight * s.mean).cwiseAbs().maxCoeff(), 1e-12);
}

TEST(Compensation, ASingularKeptBlockWithoutDampingRaisesTheDampingAndSaysSo) {
  auto base = random_samples(80, 6, 21);
  MatrixXd x = base.x;
  x.col(4) = x.col(1);  // kept twice: C_KK is singular
  const auto s = moments_of(x);
  const MatrixXd weight = random_matrix(3, 6, 22);
  const std::vector<std::int64_t> kept{0, 1, 2, 4, 5};
  const std::vector<std::int64_t> removed{3};
  const auto c = np::compensate(np::compensation_kind::refit, weight, s.second_moment, s.mean, kept, removed,
                                np::compensation_options<double>{0.0});
  EXPECT_TRUE(c.damping_raised);
  EXPECT_GT(c.damping, 0.0);
  EXPECT_TRUE(c.kept_weight.allFinite());
  // Still (close to) the least-squares error: the duplicate column adds nothing.
  MatrixXd w = weight;
  w.col(1) += w.col(4);
  MatrixXd w5(3, 5);
  w5 << w.col(0), w.col(1), w.col(2), w.col(3), w.col(5);
  const auto reduced = moments_of(MatrixXd(x(Eigen::all, std::vector<Eigen::Index>{0, 1, 2, 3, 5})));
  const auto reference = np::compensate(np::compensation_kind::refit, w5, reduced.second_moment, reduced.mean,
                                        std::vector<std::int64_t>{0, 1, 2, 4}, std::vector<std::int64_t>{3},
                                        np::compensation_options<double>{0.0});
  EXPECT_NEAR(c.error, reference.error, 1e-4 * (1 + reference.error));
}

// Fewer samples than coordinates give a singular C; rounding its entries (moments
// formed or stored in float) makes it indefinite by up to n·r·max diag H. With the
// rounding declared, such moments are accepted and the refit stays finite and near
// the exact one; undeclared, they are refused; a C far below the rounding is refused
// either way.
TEST(Compensation, SingularMomentsWithinTheirDeclaredRoundingAreAccepted) {
  constexpr Eigen::Index n = 12;
  const auto s = random_samples(5, n, 51);  // C has rank at most 4
  const MatrixXd weight = random_matrix(3, n, 52);
  const auto split = random_split(n, 4, 53);
  const std::vector<std::int64_t>& kept = split.first;
  const std::vector<std::int64_t>& removed = split.second;
  const double rounding = 1e-6;
  const double largest = s.second_moment.diagonal().maxCoeff();
  // Every zero eigenvalue of C moves to −rounding·max diag H: |E_ij| ≤ r·max diag H.
  MatrixXd rounded = s.second_moment;
  rounded.diagonal().array() -= rounding * largest;
  const auto refit = np::compensation_kind::refit;
  expect_error<std::domain_error>(
      [&] { (void)np::compensate(refit, weight, rounded, s.mean, kept, removed); }, {"second_moment", "negative pivot"});
  const auto c = np::compensate(refit, weight, rounded, s.mean, kept, removed, np::compensation_options<double>{0.001, rounding});
  const auto exact = np::compensate(refit, weight, s.second_moment, s.mean, kept, removed);
  ASSERT_TRUE(c.kept_weight.allFinite());
  ASSERT_TRUE(c.bias.allFinite());
  EXPECT_LE(c.error, exact.error + 1e-3 * (1 + exact.error));
  EXPECT_NEAR(np::expected_output_error(weight, s.second_moment, s.mean, kept, c.kept_weight, c.bias), exact.error,
              1e-2 * (1 + exact.error));
  const np::obs_cost<double> cost(weight, rounded, s.mean, 0.001, rounding);
  EXPECT_TRUE(std::isfinite(cost(removed)));
  expect_error<std::domain_error>([&] { (void)np::obs_cost<double>(weight, rounded, s.mean, 0.001); },
                                  {"second_moment", "negative pivot"});

  MatrixXd indefinite = s.second_moment;
  indefinite.diagonal().array() -= 100 * n * rounding * largest;
  expect_error<std::domain_error>(
      [&] { (void)np::compensate(refit, weight, indefinite, s.mean, kept, removed, np::compensation_options<double>{0.001, rounding}); },
      {"second_moment", "negative pivot"});
  for (const double bad : {-1e-6, std::numeric_limits<double>::quiet_NaN()}) {
    expect_error<std::domain_error>(
        [&] { (void)np::compensate(refit, weight, s.second_moment, s.mean, kept, removed, np::compensation_options<double>{0.001, bad}); },
        {"moment_rounding"});
  }
}

TEST(Compensation, FloatInstantiationAgreesWithDouble) {
  const auto s = random_samples(120, 9, 31);
  const MatrixXd weight = random_matrix(4, 9, 32);
  const auto [kept, removed] = random_split(9, 3, 33);
  const auto d = np::compensate(np::compensation_kind::refit, weight, s.second_moment, s.mean, kept, removed);
  const Eigen::MatrixXf wf = weight.cast<float>();
  const Eigen::MatrixXf hf = s.second_moment.cast<float>();
  const Eigen::VectorXf mf = s.mean.cast<float>();
  const auto f = np::compensate(np::compensation_kind::refit, wf, hf, mf, kept, removed);
  EXPECT_LT((f.kept_weight.cast<double>() - d.kept_weight).cwiseAbs().maxCoeff(), 1e-3 * (1 + d.kept_weight.cwiseAbs().maxCoeff()));
  EXPECT_NEAR(static_cast<double>(f.error), d.error, 1e-3 * (1 + d.error));
}

TEST(Compensation, UnitCoordinatesExpandHeadsIntoTheirColumns) {
  const std::vector<std::int64_t> heads{0, 2, 3};
  EXPECT_EQ(np::unit_coordinates(heads, 2), (std::vector<std::int64_t>{0, 1, 4, 5, 6, 7}));
  EXPECT_TRUE(np::unit_coordinates({}, 4).empty());
}

TEST(Compensation, BadInputsAreRefusedNamingTheArgument) {
  const auto s = random_samples(40, 4, 41);
  const MatrixXd weight = random_matrix(3, 4, 42);
  const std::vector<std::int64_t> kept{0, 1, 3};
  const std::vector<std::int64_t> removed{2};
  const auto refit = np::compensation_kind::refit;
  auto call = [&](const MatrixXd& w, const MatrixXd& h, const VectorXd& mu, std::vector<std::int64_t> k,
                  std::vector<std::int64_t> r, double damping = 0.001) {
    return [=] { (void)np::compensate(refit, w, h, mu, k, r, np::compensation_options<double>{damping}); };
  };
  MatrixXd not_psd = s.second_moment;  // |H_01| beyond √(H_00·H_11): every diagonal test passes, the pivots do not
  not_psd(0, 1) = not_psd(1, 0) = 3 * std::sqrt(s.second_moment(0, 0) * s.second_moment(1, 1));
  expect_error<std::domain_error>(call(weight, not_psd, s.mean, kept, removed), {"second_moment", "positive semidefinite"});
  MatrixXd below_mean = s.second_moment;
  below_mean(2, 2) = 0.5 * s.mean(2) * s.mean(2);
  expect_error<std::domain_error>(call(weight, below_mean, s.mean, kept, removed), {"second_moment", "index 2"});
  MatrixXd nan_h = s.second_moment;
  nan_h(1, 2) = std::numeric_limits<double>::quiet_NaN();
  expect_error<std::domain_error>(call(weight, nan_h, s.mean, kept, removed), {"second_moment", "NaN", "row 1, column 2"});
  MatrixXd asymmetric = s.second_moment;
  asymmetric(3, 0) += 1.0;
  expect_error<std::domain_error>(call(weight, asymmetric, s.mean, kept, removed), {"second_moment", "symmetric", "row 3, column 0"});
  VectorXd inf_mean = s.mean;
  inf_mean(3) = std::numeric_limits<double>::infinity();
  expect_error<std::domain_error>(call(weight, s.second_moment, inf_mean, kept, removed), {"mean", "index 3"});
  MatrixXd nan_w = weight;
  nan_w(2, 1) = std::numeric_limits<double>::quiet_NaN();
  expect_error<std::domain_error>(call(nan_w, s.second_moment, s.mean, kept, removed), {"weight", "row 2, column 1"});

  expect_error<std::invalid_argument>(call(weight, s.second_moment, s.mean, {0, 1, 4}, {2}), {"kept", "4", "out of range"});
  expect_error<std::invalid_argument>(call(weight, s.second_moment, s.mean, kept, {-1}), {"removed", "-1", "out of range"});
  expect_error<std::invalid_argument>(call(weight, s.second_moment, s.mean, {0, 1, 3}, {1, 2}), {"removed", "1", "also in kept"});
  expect_error<std::invalid_argument>(call(weight, s.second_moment, s.mean, {0, 3}, {2}), {"kept", "coordinate 1"});
  expect_error<std::invalid_argument>(call(weight, s.second_moment, s.mean, {0, 3, 1}, {2}), {"kept", "ascending"});
  expect_error<std::invalid_argument>(call(weight.leftCols(3), s.second_moment, s.mean, {0, 1}, {2}), {"weight", "column count"});
  expect_error<std::invalid_argument>(call(weight, s.second_moment.leftCols(3), s.mean, kept, removed), {"second_moment", "column count"});
  expect_error<std::invalid_argument>(call(weight, s.second_moment, s.mean.head(3), kept, removed), {"mean", "size"});
  expect_error<std::domain_error>(call(weight, s.second_moment, s.mean, kept, removed, -1.0), {"options.damping"});

  const MatrixXd kept_weight = weight.leftCols(3);
  expect_error<std::invalid_argument>(
      [&] { (void)np::expected_output_error(weight, s.second_moment, s.mean, kept, weight.leftCols(2), VectorXd::Zero(3)); },
      {"kept_weight", "column count"});
  expect_error<std::invalid_argument>(
      [&] { (void)np::expected_output_error(weight, s.second_moment, s.mean, kept, kept_weight, VectorXd::Zero(2)); },
      {"bias", "size"});
}

}  // namespace
