// Tests of nashprune/nash_game.hpp: validation, potential, exploitability, KKT
// residual and best response against plain-loop references.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <nashprune/nash_game.hpp>
#include <stdexcept>
#include <string>

#include "nash_test_games.hpp"

namespace {

template <typename Scalar>
constexpr double tol(double float_tol, double double_tol) {
  return std::is_same_v<Scalar, float> ? float_tol : double_tol;
}

using nashprune::make_nash_game;
using nashprune::nash_matrix;
using nashprune::nash_vector;
using nashprune_test::owned_game;
using nashprune_test::random_indefinite_game;
using nashprune_test::random_psd_game;

template <typename Scalar>
class NashGame : public ::testing::Test {};
using Scalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(NashGame, Scalars);

TYPED_TEST(NashGame, SingleHeadBestResponseIsHalf) {
  using S = TypeParam;
  const owned_game<S> g{nash_vector<S>::Ones(1), nash_matrix<S>::Ones(1, 1), S(1)};
  const auto game = g.view();
  const nash_vector<S> one = nash_vector<S>::Ones(1);
  const nash_vector<S> half = nash_vector<S>::Constant(1, S(0.5));
  EXPECT_EQ(nashprune::nash_best_response(game, one, 0), S(0.5));
  EXPECT_EQ(nashprune::nash_utility(game, one, 0), S(0));
  EXPECT_EQ(nashprune::nash_utility(game, half, 0), S(0.25));
  EXPECT_NEAR(nashprune::nash_exploitability(game, one), S(0.25), 1e-6);
  EXPECT_NEAR(nashprune::nash_exploitability(game, half), S(0), 1e-7);
  EXPECT_NEAR(nashprune::nash_kkt_residual(game, half), S(0), 1e-7);
  EXPECT_NEAR(nashprune::nash_kkt_residual(game, one), S(1), 1e-6);  // ∇Φ(1) = 1 − 2 = −1
}

TYPED_TEST(NashGame, ExploitabilityMatchesPlainLoopsAndGrid) {
  using S = TypeParam;
  for (std::uint32_t seed = 1; seed <= 6; ++seed) {
    const auto g = seed % 2 ? random_psd_game<S>(7, seed) : random_indefinite_game<S>(7, seed);
    std::mt19937 rng(seed);
    std::uniform_real_distribution<double> u(0, 1);
    Eigen::VectorXd s(7);
    for (auto& v : s) v = u(rng);
    s(0) = 0;
    s(1) = 1;
    const nash_vector<S> x = s.cast<S>();
    EXPECT_NEAR(double(nashprune::nash_exploitability(g.view(), x)), nashprune_test::reference_exploitability(g, s),
                (tol<S>(1e-5, 1e-12)));
  }
}

TYPED_TEST(NashGame, PotentialTracksEveryUnilateralDeviation) {
  using S = TypeParam;
  const auto g = random_psd_game<S>(9, 3);
  const auto game = g.view();
  std::mt19937 rng(5);
  std::uniform_real_distribution<double> u(0, 1);
  Eigen::VectorXd s(9);
  for (auto& v : s) v = u(rng);
  for (Eigen::Index i = 0; i < 9; ++i) {
    Eigen::VectorXd t = s;
    t(i) = u(rng);
    const double d_utility = nashprune_test::reference_utility(g, t, i) - nashprune_test::reference_utility(g, s, i);
    const double d_potential =
        double(nashprune::nash_potential(game, t.cast<S>())) - double(nashprune::nash_potential(game, s.cast<S>()));
    EXPECT_NEAR(d_potential, d_utility, (tol<S>(1e-5, 1e-13))) << "player " << i;
  }
}

TYPED_TEST(NashGame, GradientIsOwnUtilityDerivative) {
  using S = TypeParam;
  const auto g = random_indefinite_game<S>(6, 11);
  Eigen::VectorXd s = Eigen::VectorXd::LinSpaced(6, 0.1, 0.9);
  const nash_vector<S> grad = nashprune::nash_potential_gradient(g.view(), s.cast<S>());
  for (Eigen::Index i = 0; i < 6; ++i) {
    const double h = 1e-6;
    Eigen::VectorXd up = s, down = s;
    up(i) += h;
    down(i) -= h;
    const double numeric =
        (nashprune_test::reference_utility(g, up, i) - nashprune_test::reference_utility(g, down, i)) / (2 * h);
    EXPECT_NEAR(double(grad(i)), numeric, (tol<S>(1e-5, 1e-7)));
  }
}

TYPED_TEST(NashGame, RowMajorAndStridedViewsReadTheSameGame) {
  using S = TypeParam;
  const auto g = random_psd_game<S>(5, 2);
  const Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> row_major = g.redundancy;
  nash_matrix<S> padded = nash_matrix<S>::Zero(10, 5);
  padded.topRows(5) = g.redundancy;
  nash_vector<S> strided_c = nash_vector<S>::Zero(10);
  for (int i = 0; i < 5; ++i) strided_c(2 * i) = g.importance(i);
  const Eigen::Map<const nash_vector<S>, 0, Eigen::InnerStride<2>> c_view(strided_c.data(), 5);
  const nash_vector<S> s = nash_vector<S>::LinSpaced(5, S(0), S(1));
  const S expected = nashprune::nash_exploitability(g.view(), s);
  EXPECT_EQ(nashprune::nash_exploitability(make_nash_game(g.importance, row_major, g.lambda), s), expected);
  EXPECT_EQ(nashprune::nash_exploitability(make_nash_game(c_view, padded.topRows(5), g.lambda), s), expected);
  // The row-major view binds to the caller's memory: no copy.
  EXPECT_EQ(make_nash_game(g.importance, row_major, g.lambda).redundancy.data(), row_major.data());
}

template <typename Scalar>
std::string validation_error(const owned_game<Scalar>& g) {
  try {
    nashprune::validate_nash_game(g.view());
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

TYPED_TEST(NashGame, BadInputsThrowNamingTheArgument) {
  using S = TypeParam;
  const auto good = random_psd_game<S>(4, 1);
  EXPECT_NO_THROW(nashprune::validate_nash_game(good.view()));

  auto sizes = good;
  sizes.importance.resize(3);
  EXPECT_THROW(nashprune::validate_nash_game(sizes.view()), std::invalid_argument);
  EXPECT_NE(validation_error(sizes).find("'redundancy': row count is 4, expected 3"), std::string::npos);

  auto empty = good;
  empty.importance.resize(0);
  empty.redundancy.resize(0, 0);
  EXPECT_THROW(nashprune::validate_nash_game(empty.view()), std::invalid_argument);

  auto nan_c = good;
  nan_c.importance(2) = std::numeric_limits<S>::quiet_NaN();
  EXPECT_THROW(nashprune::validate_nash_game(nan_c.view()), std::domain_error);
  EXPECT_NE(validation_error(nan_c).find("'importance': non-finite value NaN at index 2"), std::string::npos);

  auto inf_r = good;
  inf_r.redundancy(1, 3) = std::numeric_limits<S>::infinity();
  EXPECT_THROW(nashprune::validate_nash_game(inf_r.view()), std::domain_error);
  EXPECT_NE(validation_error(inf_r).find("row 1, column 3"), std::string::npos);

  auto asymmetric = good;
  asymmetric.redundancy(0, 2) += S(0.01);
  EXPECT_THROW(nashprune::validate_nash_game(asymmetric.view()), std::domain_error);
  EXPECT_NE(validation_error(asymmetric).find("not symmetric"), std::string::npos);
  auto nearly = good;
  nearly.redundancy(0, 2) += S(1e-6);
  EXPECT_NO_THROW(nashprune::validate_nash_game(nearly.view()));

  for (const S diagonal : {S(0), S(-1)}) {
    auto bad_diagonal = good;
    bad_diagonal.redundancy(3, 3) = diagonal;
    EXPECT_THROW(nashprune::validate_nash_game(bad_diagonal.view()), std::domain_error);
    EXPECT_NE(validation_error(bad_diagonal).find("row 3, column 3"), std::string::npos);
  }
  for (const S lambda : {S(0), S(-0.5), std::numeric_limits<S>::infinity(), std::numeric_limits<S>::quiet_NaN()}) {
    auto bad_lambda = good;
    bad_lambda.lambda = lambda;
    EXPECT_THROW(nashprune::validate_nash_game(bad_lambda.view()), std::domain_error);
    EXPECT_NE(validation_error(bad_lambda).find("'lambda'"), std::string::npos);
  }
}

}  // namespace
