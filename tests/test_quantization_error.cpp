#include <nashprune/quantization_error.hpp>

#include <gtest/gtest.h>

#include "scalar_test_support.hpp"

#include <cmath>
#include <limits>
#include <random>

namespace np = nashprune;

namespace {

using row_major = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

double reference_error(const row_major& w, const row_major& q, const Eigen::VectorXd& r, const Eigen::VectorXd& c) {
  double total = 0;
  for (Eigen::Index i = 0; i < w.rows(); ++i) {
    for (Eigen::Index j = 0; j < w.cols(); ++j) {
      const double d = static_cast<double>(w(i, j)) - static_cast<double>(q(i, j));
      total += r[i] * c[j] * d * d;
    }
  }
  return total;
}

TEST(QuantizationError, MatchesPlainLoopsOnRandomInputs) {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> size(1, 9);
  std::uniform_real_distribution<double> weight(0.0, 2.0);
  for (int trial = 0; trial < 100; ++trial) {
    const int rows = size(rng), cols = size(rng);
    row_major w(rows, cols), q(rows, cols);
    for (Eigen::Index k = 0; k < w.size(); ++k) {
      w.data()[k] = normal(rng);
      q.data()[k] = w.data()[k] + 0.1f * normal(rng);
    }
    Eigen::VectorXd r(rows), c(cols);
    for (auto& v : r) v = weight(rng);
    for (auto& v : c) v = weight(rng);
    const double expected = reference_error(w, q, r, c);
    EXPECT_NEAR(np::weighted_squared_error(w, q, r, c), expected, 1e-12 * std::max(1.0, expected)) << trial;
  }
}

TEST(QuantizationError, ExpectedOutputErrorOfUncorrelatedInputs) {
  // E‖(W − Q) x‖² over independent zero-mean inputs with E[x_j²] = c_j, by sampling.
  std::mt19937 rng(11);
  std::normal_distribution<double> normal(0.0, 1.0);
  const int rows = 3, cols = 4;
  row_major w(rows, cols), q(rows, cols);
  for (Eigen::Index k = 0; k < w.size(); ++k) {
    w.data()[k] = static_cast<float>(normal(rng));
    q.data()[k] = w.data()[k] + static_cast<float>(0.2 * normal(rng));
  }
  Eigen::VectorXd c(cols);
  c << 0.25, 1.0, 4.0, 0.0;
  const Eigen::MatrixXd delta = (w - q).cast<double>();
  double sampled = 0;
  const int samples = 200000;
  for (int s = 0; s < samples; ++s) {
    Eigen::VectorXd x(cols);
    for (int j = 0; j < cols; ++j) x[j] = std::sqrt(c[j]) * normal(rng);
    sampled += (delta * x).squaredNorm();
  }
  sampled /= samples;
  const double predicted = np::weighted_squared_error(w, q, Eigen::VectorXd::Ones(rows), c);
  EXPECT_NEAR(sampled, predicted, 0.02 * predicted);
}

TEST(QuantizationError, NormalizedInputEnergyIsTheSquaredNormWeight) {
  Eigen::VectorXf g(3);
  g << 0.5f, -2.0f, 0.0f;
  const Eigen::VectorXd e = np::normalized_input_energy(g);
  EXPECT_DOUBLE_EQ(e[0], 0.25);
  EXPECT_DOUBLE_EQ(e[1], 4.0);
  EXPECT_DOUBLE_EQ(e[2], 0.0);
}

TEST(QuantizationError, BadInput) {
  row_major w = row_major::Ones(2, 3), q = row_major::Zero(2, 3);
  const Eigen::VectorXd r = Eigen::VectorXd::Ones(2), c = Eigen::VectorXd::Ones(3);
  const auto expect = [](auto&& call, const char* fragment) { nashprune_test::expect_error_containing(call, fragment); };
  expect([&] { (void)np::weighted_squared_error(w, row_major::Zero(3, 3), r, c); }, "reconstructed rows");
  expect([&] { (void)np::weighted_squared_error(w, q, Eigen::VectorXd::Ones(3), c); }, "row_weights");
  expect([&] { (void)np::weighted_squared_error(w, q, r, Eigen::VectorXd::Ones(2)); }, "column_weights");
  row_major bad = q;
  bad(1, 2) = std::numeric_limits<float>::quiet_NaN();
  expect([&] { (void)np::weighted_squared_error(w, bad, r, c); }, "'reconstructed': non-finite value NaN at row 1, column 2");
  Eigen::VectorXd negative = c;
  negative[1] = -1;
  expect([&] { (void)np::weighted_squared_error(w, q, r, negative); }, "'column_weights': negative value");
  expect([&] { (void)np::normalized_input_energy(Eigen::VectorXf()); }, "norm_weights");
}

}  // namespace
