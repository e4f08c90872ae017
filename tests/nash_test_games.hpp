// Random Nash head-pruning games for tests and benchmarks (fixed seeds).
//
// PSD games: cosine-similarity Gram matrices of random activations, as the
// seed's §4.2 builds them, with importance normalised per layer (max c = 1).
// Indefinite games: symmetric R with unit diagonal and uniform off-diagonals.
#pragma once

#include <Eigen/Core>
#include <cmath>
#include <cstdint>
#include <nashprune/nash_game.hpp>
#include <random>

namespace nashprune_test {

template <typename Scalar>
struct owned_game {
  nashprune::nash_vector<Scalar> importance;
  nashprune::nash_matrix<Scalar> redundancy;
  Scalar lambda = Scalar(0.5);

  [[nodiscard]] nashprune::nash_game<Scalar> view() const {
    return nashprune::make_nash_game(importance, redundancy, lambda);
  }
};

/// Activations of n heads over `samples` tokens (0: 2n + 8) sharing a common
/// direction with weight `shared` (0 = independent heads, larger = more alike).
template <typename Scalar>
[[nodiscard]] owned_game<Scalar> random_psd_game(Eigen::Index n, std::uint32_t seed, double shared = 0.4,
                                                 double lambda = 0.5, Eigen::Index samples = 0) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> normal;
  std::uniform_real_distribution<double> uniform(0.05, 1.0);
  if (samples == 0) samples = 2 * n + 8;
  Eigen::MatrixXd activations(samples, n);
  Eigen::VectorXd common(samples);
  for (Eigen::Index t = 0; t < samples; ++t) common(t) = normal(rng);
  for (Eigen::Index h = 0; h < n; ++h) {
    for (Eigen::Index t = 0; t < samples; ++t) activations(t, h) = shared * common(t) + normal(rng);
    activations.col(h).normalize();
  }
  Eigen::MatrixXd gram = activations.transpose() * activations;
  gram = 0.5 * (gram + gram.transpose()).eval();
  gram.diagonal().setOnes();
  Eigen::VectorXd importance(n);
  for (Eigen::Index h = 0; h < n; ++h) importance(h) = uniform(rng);
  importance /= importance.maxCoeff();
  return {importance.cast<Scalar>(), gram.cast<Scalar>(), Scalar(lambda)};
}

template <typename Scalar>
[[nodiscard]] owned_game<Scalar> random_indefinite_game(Eigen::Index n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> off(-1.0, 1.0);
  std::uniform_real_distribution<double> uniform(-0.2, 1.0);
  nashprune::nash_matrix<Scalar> r(n, n);
  for (Eigen::Index i = 0; i < n; ++i) {
    r(i, i) = Scalar(1);
    for (Eigen::Index j = i + 1; j < n; ++j) r(i, j) = r(j, i) = Scalar(off(rng));
  }
  nashprune::nash_vector<Scalar> c(n);
  for (Eigen::Index i = 0; i < n; ++i) c(i) = Scalar(uniform(rng));
  return {c, r, Scalar(0.5)};
}

/// U_i(s) = s_i·c_i − λ·s_i·Σ_j s_j·r_ij, in plain loops.
template <typename Scalar>
[[nodiscard]] double reference_utility(const owned_game<Scalar>& game, const Eigen::VectorXd& s, Eigen::Index i) {
  double pressure = 0;
  for (Eigen::Index j = 0; j < s.size(); ++j) pressure += s(j) * double(game.redundancy(i, j));
  return s(i) * double(game.importance(i)) - double(game.lambda) * s(i) * pressure;
}

/// ε(s) in plain loops: each player's best deviation found by its closed form,
/// checked against a fine grid so the closed form itself is tested.
template <typename Scalar>
[[nodiscard]] double reference_exploitability(const owned_game<Scalar>& game, const Eigen::VectorXd& s) {
  double worst = 0;
  for (Eigen::Index i = 0; i < s.size(); ++i) {
    const double base = reference_utility(game, s, i);
    Eigen::VectorXd t = s;
    double best = base;
    for (int k = 0; k <= 1000; ++k) {
      t(i) = k / 1000.0;
      best = std::max(best, reference_utility(game, t, i));
    }
    double others = 0;
    for (Eigen::Index j = 0; j < s.size(); ++j) {
      if (j != i) others += double(game.redundancy(i, j)) * s(j);
    }
    const double a = double(game.importance(i)) - double(game.lambda) * others;
    const double b = double(game.lambda) * double(game.redundancy(i, i));
    t(i) = std::clamp(a / (2 * b), 0.0, 1.0);
    best = std::max(best, reference_utility(game, t, i));
    worst = std::max(worst, best - base);
  }
  return worst;
}

}  // namespace nashprune_test
