// Tests of nashprune/nash_solvers.hpp: every variant on PSD and indefinite games,
// against brute-force enumeration of active sets, the n = 1 case, permutation
// equivariance, and the seed baseline step for step.
#include <gtest/gtest.h>

#include <Eigen/LU>
#include <cmath>
#include <nashprune/nash_solvers.hpp>
#include <limits>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "nash_test_games.hpp"

namespace {

using nashprune::nash_matrix;
using nashprune::nash_solution;
using nashprune::nash_vector;
using nashprune_test::owned_game;
using nashprune_test::random_indefinite_game;
using nashprune_test::random_psd_game;

/// The four non-baseline variants, solved with one tolerance and a cap.
template <typename Scalar>
std::vector<nash_solution<Scalar>> solve_with_every_variant(const nashprune::nash_game<Scalar>& game, Scalar tolerance,
                                                            std::int64_t cap = 200000) {
  const nashprune::nash_iteration_options<Scalar> options{tolerance, cap};
  return {nashprune::projected_gradient<Scalar>({tolerance, cap}).solve(game),
          nashprune::best_response_sweeps<Scalar>(options).solve(game),
          nashprune::accelerated_projected_gradient<Scalar>(options).solve(game),
          nashprune::active_set_newton<Scalar>({tolerance, cap}).solve(game)};
}

/// Brute force: every assignment of each player to {0, interior, 1}; the
/// interior players solve Q_FF s_F = c_F − Q_FB s_B; keep the KKT points.
std::vector<Eigen::VectorXd> enumerate_equilibria(const owned_game<double>& g) {
  const Eigen::Index n = g.importance.size();
  Eigen::MatrixXd q = g.lambda * g.redundancy;
  q.diagonal() += g.lambda * g.redundancy.diagonal();
  std::vector<Eigen::VectorXd> found;
  std::int64_t total = 1;
  for (Eigen::Index i = 0; i < n; ++i) total *= 3;
  for (std::int64_t code = 0; code < total; ++code) {
    std::vector<int> state(n);
    std::int64_t rest = code;
    for (Eigen::Index i = 0; i < n; ++i, rest /= 3) state[i] = int(rest % 3);
    std::vector<Eigen::Index> free;
    Eigen::VectorXd s = Eigen::VectorXd::Zero(n);
    for (Eigen::Index i = 0; i < n; ++i) {
      if (state[i] == 1) free.push_back(i);
      if (state[i] == 2) s(i) = 1;
    }
    if (!free.empty()) {
      const auto m = Eigen::Index(free.size());
      Eigen::MatrixXd a(m, m);
      Eigen::VectorXd b(m);
      for (Eigen::Index r = 0; r < m; ++r) {
        b(r) = g.importance(free[r]) - q.row(free[r]).dot(s);
        for (Eigen::Index c = 0; c < m; ++c) a(r, c) = q(free[r], free[c]);
      }
      const Eigen::FullPivLU<Eigen::MatrixXd> lu(a);
      if (!lu.isInvertible()) continue;
      const Eigen::VectorXd x = lu.solve(b);
      for (Eigen::Index r = 0; r < m; ++r) s(free[r]) = x(r);
    }
    const Eigen::VectorXd grad = g.importance - q * s;
    bool kkt = true;
    for (Eigen::Index i = 0; i < n && kkt; ++i) {
      if (state[i] == 1) kkt = s(i) > 0 && s(i) < 1;
      if (state[i] == 0) kkt = grad(i) <= 1e-12;
      if (state[i] == 2) kkt = grad(i) >= -1e-12;
    }
    if (kkt) found.push_back(s);
  }
  return found;
}

TEST(NashSolvers, SingleHeadSeedStaysAtOneWhileTheGameSaysHalf) {
  const owned_game<double> g{Eigen::VectorXd::Ones(1), Eigen::MatrixXd::Ones(1, 1), 1.0};
  const auto seed = nashprune::seed_gradient_ascent<double>().solve(g.view());
  EXPECT_EQ(seed.s(0), 1.0);
  EXPECT_EQ(seed.iterations, 1);  // zero seed-gradient at s = 1: the seed's rule stops at once
  EXPECT_TRUE(seed.converged);
  EXPECT_EQ(nashprune::nash_utility(g.view(), seed.s, 0), 0.0);
  EXPECT_DOUBLE_EQ(seed.exploitability, 0.25);
  for (const auto& solution : solve_with_every_variant(g.view(), 1e-12)) {
    EXPECT_TRUE(solution.converged);
    EXPECT_NEAR(solution.s(0), 0.5, 1e-6);
    EXPECT_NEAR(nashprune::nash_utility(g.view(), solution.s, 0), 0.25, 1e-12);
    EXPECT_NEAR(solution.potential, 0.25, 1e-12);  // Φ(½) = ½ − ½·2·¼
  }
}

TEST(NashSolvers, AgreeWithBruteForceEnumerationUpToTenHeads) {
  for (Eigen::Index n = 1; n <= 10; ++n) {
    for (std::uint32_t seed = 0; seed < 3; ++seed) {
      const auto g = random_psd_game<double>(n, 100 * std::uint32_t(n) + seed, 0.2 + 0.3 * seed, 0.2 + 0.3 * seed);
      const auto equilibria = enumerate_equilibria(g);
      ASSERT_EQ(equilibria.size(), 1u) << "PSD games have one equilibrium; n = " << n;
      for (const auto& solution : solve_with_every_variant(g.view(), 1e-12)) {
        EXPECT_TRUE(solution.converged);
        EXPECT_LE(solution.exploitability, 1e-12);
        EXPECT_LE((solution.s - equilibria.front()).cwiseAbs().maxCoeff(), 1e-5) << "n = " << n;
      }
    }
  }
}

TEST(NashSolvers, ReachTightExploitabilityAndAgreeUpTo512Heads) {
  for (const Eigen::Index n : {1, 2, 3, 16, 32, 64, 128, 512}) {
    for (const double shared : {0.2, 1.0}) {
      const auto g = random_psd_game<double>(n, std::uint32_t(n) + 7, shared);
      const auto solutions = solve_with_every_variant(g.view(), 1e-10);
      const auto& exact = solutions.back();
      EXPECT_LE(exact.exploitability, 1e-13) << "active-set Newton ends at machine precision, n = " << n;
      for (const auto& solution : solutions) {
        EXPECT_TRUE(solution.converged) << "n = " << n;
        EXPECT_LE(solution.exploitability, 1e-9) << "n = " << n;
        EXPECT_NEAR(solution.potential, exact.potential, 1e-8);
        EXPECT_LE((solution.s - exact.s).cwiseAbs().maxCoeff(), 1e-3) << "n = " << n;
        EXPECT_NEAR(solution.exploitability, nashprune::nash_exploitability(g.view(), solution.s), 1e-14);
        EXPECT_LE(solution.kkt_residual, 1e-4);
      }
    }
  }
}

TEST(NashSolvers, PermutingHeadsPermutesTheEquilibrium) {
  const auto g = random_psd_game<double>(24, 42, 0.6);
  std::vector<int> order(24);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), std::mt19937(3));
  owned_game<double> permuted = g;
  for (int a = 0; a < 24; ++a) {
    permuted.importance(a) = g.importance(order[a]);
    for (int b = 0; b < 24; ++b) permuted.redundancy(a, b) = g.redundancy(order[a], order[b]);
  }
  const auto original = solve_with_every_variant(g.view(), 1e-12);
  const auto shuffled = solve_with_every_variant(permuted.view(), 1e-12);
  for (std::size_t v = 0; v < original.size(); ++v) {
    for (int a = 0; a < 24; ++a) EXPECT_NEAR(shuffled[v].s(a), original[v].s(order[a]), 1e-5);
  }
}

TEST(NashSolvers, IndefiniteGamesTerminateAndReportWhatTheyReached) {
  for (const Eigen::Index n : {2, 8, 33, 128}) {
    const auto g = random_indefinite_game<double>(n, std::uint32_t(n));
    const nashprune::nash_iteration_options<double> options{1e-10, 2000};
    const std::vector<nash_solution<double>> solutions = {
        nashprune::projected_gradient<double>({1e-10, 2000}).solve(g.view()),
        nashprune::best_response_sweeps<double>(options).solve(g.view()),
        nashprune::accelerated_projected_gradient<double>(options).solve(g.view()),
        nashprune::active_set_newton<double>({1e-10, 2000}).solve(g.view()),
        nashprune::seed_gradient_ascent<double>().solve(g.view())};
    for (const auto& solution : solutions) {
      EXPECT_LE(solution.iterations, 2000);
      EXPECT_TRUE(std::isfinite(solution.exploitability));
      EXPECT_TRUE(((solution.s.array() >= 0) && (solution.s.array() <= 1)).all());
      EXPECT_NEAR(solution.exploitability, nashprune::nash_exploitability(g.view(), solution.s), 1e-14);
    }
    for (std::size_t v = 0; v + 1 < solutions.size(); ++v) {
      EXPECT_EQ(solutions[v].converged, solutions[v].exploitability <= 1e-10);
    }
  }
}

TEST(NashSolvers, IterationCapIsRespectedAndReported) {
  const auto g = random_psd_game<double>(64, 5, 1.0);
  const auto pg = nashprune::projected_gradient<double>({1e-14, 3}).solve(g.view());
  EXPECT_EQ(pg.iterations, 3);
  EXPECT_FALSE(pg.converged);
  EXPECT_GT(pg.exploitability, 1e-14);
  const auto none = nashprune::best_response_sweeps<double>({1e-10, 0}).solve(g.view());
  EXPECT_EQ(none.iterations, 0);
}

TEST(NashSolvers, WarmStartFromTheEquilibriumNeedsNoIteration) {
  const auto g = random_psd_game<double>(40, 8);
  const auto exact = nashprune::active_set_newton<double>().solve(g.view());
  for (const auto& solution : {nashprune::best_response_sweeps<double>().solve(g.view(), exact.s),
                               nashprune::accelerated_projected_gradient<double>().solve(g.view(), exact.s)}) {
    EXPECT_EQ(solution.iterations, 0);
    EXPECT_TRUE(solution.converged);
  }
  Eigen::VectorXd outside = exact.s;
  outside(3) = 1.5;
  EXPECT_THROW((void)nashprune::best_response_sweeps<double>().solve(g.view(), outside), std::domain_error);
  EXPECT_THROW((void)nashprune::best_response_sweeps<double>().solve(g.view(), Eigen::VectorXd(3)),
               std::invalid_argument);
}

TEST(NashSolvers, BatchNamesTheBadLayerAndMatchesLayerByLayer) {
  std::vector<owned_game<double>> owned;
  for (std::uint32_t l = 0; l < 5; ++l) owned.push_back(random_psd_game<double>(8 + l, l));
  std::vector<nashprune::nash_game<double>> layers;
  for (const auto& g : owned) layers.push_back(g.view());
  const auto batch = nashprune::active_set_newton<double>().solve(layers);
  ASSERT_EQ(batch.size(), 5u);
  for (std::size_t l = 0; l < 5; ++l) {
    EXPECT_EQ(batch[l].s, nashprune::active_set_newton<double>().solve(layers[l]).s);
  }
  owned[3].lambda = 0;
  layers.clear();
  for (const auto& g : owned) layers.push_back(g.view());
  try {
    (void)nashprune::best_response_sweeps<double>().solve(layers);
    FAIL() << "expected a domain error";
  } catch (const std::domain_error& e) {
    EXPECT_NE(std::string(e.what()).find("'layers[3].lambda'"), std::string::npos) << e.what();
  }
}

/// The sweep targets this machine runs (portable always).
std::vector<nashprune::simd_target> supported_sweep_targets() {
  std::vector<nashprune::simd_target> targets{nashprune::simd_target::portable};
  const auto& cpu = nashprune::detail::detected_cpu_features();
  if (cpu.avx2_fma) targets.push_back(nashprune::simd_target::avx2_fma);
  if (cpu.avx512) targets.push_back(nashprune::simd_target::avx512);
  return targets;
}

// Every instruction set of the sweep kernel, on lengths around the vector widths
// (tails of 1..7 lanes), reaches the tolerance and agrees with the portable loop
// and with the exact solver; a strided R (copied) and a row-major R (viewed) too.
TEST(NashSolvers, BestResponseKernelOnEveryTarget) {
  for (const Eigen::Index n : {1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 100}) {
    const auto g = random_psd_game<double>(n, std::uint32_t(300 + n), 0.5);
    const auto exact = nashprune::active_set_newton<double>({1e-14, 1000}).solve(g.view());
    nash_matrix<double> wide(2 * n, 2 * n);  // R inside a matrix with inner stride 2
    wide.setConstant(std::nan(""));
    Eigen::Map<nash_matrix<double>, 0, Eigen::Stride<Eigen::Dynamic, 2>>(
        wide.data(), n, n, Eigen::Stride<Eigen::Dynamic, 2>(4 * n, 2)) = g.redundancy;
    const Eigen::Map<const nash_matrix<double>, 0, Eigen::Stride<Eigen::Dynamic, 2>> strided(
        wide.data(), n, n, Eigen::Stride<Eigen::Dynamic, 2>(4 * n, 2));
    const Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> row_major = g.redundancy;
    for (const auto target : supported_sweep_targets()) {
      nashprune::nash_iteration_options<double> options{1e-12, 10000};
      options.simd = target;
      const nashprune::best_response_sweeps<double> solver(options);
      for (const auto& game : {g.view(), nashprune::make_nash_game(g.importance, strided, g.lambda),
                               nashprune::make_nash_game(g.importance, row_major, g.lambda)}) {
        const auto solution = solver.solve(game);
        EXPECT_TRUE(solution.converged) << "n = " << n << ", target " << int(target);
        EXPECT_LE(solution.exploitability, 1e-12);
        EXPECT_LE((solution.s - exact.s).cwiseAbs().maxCoeff(), 1e-5) << "n = " << n << ", target " << int(target);
      }
    }
  }
}

// A batch runs its layers four at a time with interleaved sweeps; every layer's
// result is exactly that of solving it alone, every target. Mixed sizes take the
// kernel that keeps g in memory while a layer alone (n ≤ 32) keeps it in
// registers, so this also finds any difference between the two; equal sizes
// (9 layers: groups of 4, 4, 1) sweep in registers together.
TEST(NashSolvers, BatchOfGroupsEqualsLayersAlone) {
  for (const bool equal : {false, true}) {
    std::vector<owned_game<double>> owned;
    for (std::uint32_t l = 0; l < (equal ? 9u : 7u); ++l) {
      owned.push_back(random_psd_game<double>(equal ? 20 : 5 + 6 * l, 400 + l, 0.4));
    }
    std::vector<nashprune::nash_game<double>> layers;
    for (const auto& g : owned) layers.push_back(g.view());
    for (const auto target : supported_sweep_targets()) {
      nashprune::nash_iteration_options<double> options;
      options.simd = target;
      const nashprune::best_response_sweeps<double> solver(options);
      const auto batch = solver.solve(layers);
      ASSERT_EQ(batch.size(), layers.size());
      for (std::size_t l = 0; l < layers.size(); ++l) {
        const auto alone = solver.solve(layers[l]);
        EXPECT_EQ(batch[l].s, alone.s) << "layer " << l << ", target " << int(target) << ", equal " << equal;
        EXPECT_EQ(batch[l].iterations, alone.iterations);
        EXPECT_EQ(batch[l].exploitability, alone.exploitability);
        EXPECT_TRUE(batch[l].converged);
      }
    }
  }
}

// The SIMD exploitability against the closed form of nash_game.hpp, on every
// target, at sizes around the vector widths and random points of the box.
TEST(NashSolvers, ExploitabilityKernelMatchesTheClosedForm) {
  std::mt19937 rng(5);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  for (const Eigen::Index n : {1, 3, 4, 7, 8, 9, 31, 32, 33, 100}) {
    const auto g = random_psd_game<double>(n, std::uint32_t(500 + n));
    const nashprune::detail::quadratic_game<double> game(g.view());
    for (int trial = 0; trial < 5; ++trial) {
      nash_vector<double> s(n);
      for (Eigen::Index i = 0; i < n; ++i) s(i) = trial == 0 ? 0.0 : trial == 1 ? 1.0 : unit(rng);
      const nash_vector<double> gradient = game.gradient(s);
      const double expected = nashprune::nash_exploitability(g.view(), s);
      for (const auto target : supported_sweep_targets()) {
        double found = -1;
        const bool ran = nashprune::detail::exploitability_on(target, s.data(), gradient.data(),
                                                              game.half_diagonal.data(),
                                                              game.inverse_diagonal.data(), n, found);
        EXPECT_EQ(ran, target != nashprune::simd_target::portable);
        if (ran) {
          EXPECT_NEAR(found, expected, 1e-13 * (1 + expected)) << "n = " << n << ", trial " << trial;
        }
      }
    }
  }
}

// The SIMD look at R (finite, |r_ij − r_ji| ≤ tolerance) against plain loops, on
// every target: sizes around the vector widths, R inside a larger matrix, and
// one defect at a time (NaN, ±infinity, an asymmetry just over or under the
// tolerance) anywhere, the diagonal included.
TEST(NashSolvers, FiniteAndNearlySymmetricMatchesPlainLoops) {
  const double tolerance = 1e-5;
  std::mt19937 rng(77);
  for (const Eigen::Index n : {1, 2, 3, 5, 8, 9, 16, 17, 31, 32, 33, 40}) {
    const auto base = random_psd_game<double>(n, std::uint32_t(n)).redundancy;
    std::uniform_int_distribution<Eigen::Index> pick(0, n - 1);
    for (int trial = 0; trial < 12; ++trial) {
      nash_matrix<double> wide = nash_matrix<double>::Constant(n + 3, n, 0.25);  // leading dimension n + 3
      auto r = wide.topRows(n);
      r = base;
      const Eigen::Index i = pick(rng);
      const Eigen::Index j = pick(rng);
      const double defects[] = {0.0,
                                std::nan(""),
                                std::numeric_limits<double>::infinity(),
                                -std::numeric_limits<double>::infinity(),
                                r(i, j) + 2 * tolerance,
                                r(i, j) + 0.5 * tolerance};
      r(i, j) = defects[trial % 6] == 0.0 ? r(i, j) : defects[trial % 6];
      bool expected = true;
      for (Eigen::Index a = 0; a < n; ++a) {
        for (Eigen::Index b = 0; b < n; ++b) {
          expected = expected && std::isfinite(r(a, b)) && std::abs(r(a, b) - r(b, a)) <= tolerance;
        }
      }
      for (const auto target : supported_sweep_targets()) {
        bool found = !expected;
        const bool ran = nashprune::detail::finite_and_nearly_symmetric_on(target, wide.data(), wide.outerStride(), n,
                                                                          tolerance, found);
        EXPECT_EQ(ran, target != nashprune::simd_target::portable);
        if (ran) {
          EXPECT_EQ(found, expected) << "n = " << n << ", entry (" << i << ", " << j << "), trial " << trial;
        }
      }
    }
  }
}

/// The exception `action` throws: its type name and message ("none" when none).
template <typename Action>
std::string thrown_by(Action action) {
  try {
    action();
  } catch (const std::invalid_argument& e) {
    return std::string("invalid_argument: ") + e.what();
  } catch (const std::domain_error& e) {
    return std::string("domain_error: ") + e.what();
  }
  return "none";
}

// The solvers validate in the pass that reads R; every bad input still throws
// exactly what validate_nash_game throws (type and message), alone and in a batch.
TEST(NashSolvers, FusedValidationThrowsWhatValidateThrows) {
  const auto good = random_psd_game<double>(6, 9);
  std::vector<owned_game<double>> bad(8, good);
  bad[0].redundancy(2, 4) = std::nan("");
  bad[1].redundancy(5, 1) = std::numeric_limits<double>::infinity();
  bad[2].redundancy(1, 3) += 0.01;  // asymmetric
  bad[3].redundancy(4, 4) = 0;      // r_ii <= 0
  bad[4].importance(3) = -std::numeric_limits<double>::infinity();
  bad[5].lambda = -1;
  bad[6].redundancy = good.redundancy.topLeftCorner(5, 6);
  bad[7].importance.resize(0);
  bad[7].redundancy.resize(0, 0);
  for (std::size_t k = 0; k < bad.size(); ++k) {
    const auto game = bad[k].view();
    const std::string expected = thrown_by([&] { nashprune::validate_nash_game(game); });
    ASSERT_NE(expected, "none") << "case " << k;
    for (const auto target : supported_sweep_targets()) {
      nashprune::nash_iteration_options<double> options;
      options.simd = target;
      EXPECT_EQ(thrown_by([&] { (void)nashprune::best_response_sweeps<double>(options).solve(game); }), expected);
    }
    EXPECT_EQ(thrown_by([&] { (void)nashprune::active_set_newton<double>().solve(game); }), expected);
    const std::vector<nashprune::nash_game<double>> layers{good.view(), good.view(), game};
    const std::string in_batch = thrown_by([&] { nashprune::validate_nash_game(game, {}, "layers[2]."); });
    EXPECT_EQ(thrown_by([&] { (void)nashprune::best_response_sweeps<double>().solve(layers); }), in_batch);
    EXPECT_EQ(thrown_by([&] { (void)nashprune::projected_gradient<double>().solve(layers); }), in_batch);
  }
}

TEST(NashSolvers, BadOptionsAndNamesThrow) {
  EXPECT_THROW(nashprune::best_response_sweeps<double>({-1.0, 10}), std::invalid_argument);
  EXPECT_THROW(nashprune::projected_gradient<double>({1e-9, -1}), std::invalid_argument);
  EXPECT_THROW(nashprune::seed_gradient_ascent<double>({.learning_rate = 0.0}), std::invalid_argument);
  EXPECT_THROW((void)nashprune::parse_nash_solver_kind("newton"), std::invalid_argument);
  for (const auto& entry : nashprune::nash_solver_names) {
    EXPECT_EQ(nashprune::parse_nash_solver_kind(entry.name), entry.kind);
  }
}

TEST(NashSolvers, SolveByNameMatchesTheVariant) {
  const auto g = random_psd_game<double>(16, 9);
  const std::vector<nashprune::nash_game<double>> layers{g.view()};
  const auto by_name =
      nashprune::solve_nash_layers<double>(nashprune::nash_solver_kind::best_response_sweeps, layers, 1e-12, 500);
  EXPECT_EQ(by_name.front().s, nashprune::best_response_sweeps<double>({1e-12, 500}).solve(g.view()).s);
  const auto seed =
      nashprune::solve_nash_layers<double>(nashprune::nash_solver_kind::seed_gradient_ascent, layers, {}, 7);
  EXPECT_EQ(seed.front().iterations, 7);
}

// The seed's rule by hand: c = (0.5, 0.2, 0.8), λ = 0.5, lr = 0.01, s = 1.
//  head 0: Σ r_0j s_j = 1 + 0.5 + 0.2 = 1.7;  grad = 0.5 − 0.85 = −0.35;  s_0 = 0.9965
//  head 1: 0.5·0.9965 + 1 + 0.1 = 1.59825;     grad = −0.599125;           s_1 = 0.99400875
//  head 2: 0.2·0.9965 + 0.1·0.99400875 + 1 = 1.298700875; grad > 0: clamped, s_2 = 1
owned_game<float> three_heads() {
  nash_matrix<float> r(3, 3);
  r << 1.0f, 0.5f, 0.2f, 0.5f, 1.0f, 0.1f, 0.2f, 0.1f, 1.0f;
  nash_vector<float> c(3);
  c << 0.5f, 0.2f, 0.8f;
  return {c, r, 0.5f};
}

/// The seed's §4.3 loop verbatim, in plain float loops.
std::vector<std::vector<float>> seed_reference(const owned_game<float>& g, int n_iterations, int& performed) {
  std::vector<float> s(3, 1.0f);
  std::vector<std::vector<float>> history;
  performed = 0;
  for (int iter = 0; iter < n_iterations; iter++) {
    float max_delta = 0.0f;
    for (int h = 0; h < 3; h++) {
      float pressure = 0.0f;
      for (int j = 0; j < 3; j++) pressure += s[j] * g.redundancy(h, j);
      const float gradient = g.importance(h) - g.lambda * pressure;
      const float old_s = s[h];
      const float new_s = std::clamp(old_s + 0.01f * gradient, 0.0f, 1.0f);
      s[h] = new_s;
      max_delta = std::max(max_delta, std::abs(new_s - old_s));
    }
    history.push_back(s);
    performed = iter + 1;
    if (max_delta < 1e-4f) break;
  }
  return history;
}

TEST(NashSolvers, SeedBaselineReproducesTheSeedRuleStepForStep) {
  const auto g = three_heads();
  const auto first = nashprune::seed_gradient_ascent<float>({.max_iterations = 1}).solve(g.view());
  EXPECT_FLOAT_EQ(first.s(0), 0.9965f);
  EXPECT_FLOAT_EQ(first.s(1), 0.99400875f);
  EXPECT_EQ(first.s(2), 1.0f);
  EXPECT_FALSE(first.converged);

  int performed = 0;
  const auto history = seed_reference(g, 100, performed);
  for (int k = 1; k <= 100; ++k) {
    const auto solution = nashprune::seed_gradient_ascent<float>({.max_iterations = k}).solve(g.view());
    const auto& expected = history[std::size_t(std::min(k, performed) - 1)];
    for (int h = 0; h < 3; ++h) EXPECT_EQ(solution.s(h), expected[std::size_t(h)]) << "step " << k;
  }
  const auto defaults = nashprune::seed_gradient_ascent<float>().solve(g.view());
  EXPECT_EQ(defaults.iterations, performed);
  EXPECT_EQ(defaults.converged, performed < 100);
}

TEST(NashSolvers, SeedBatchStopsOnTheLargestChangeOverAllLayers) {
  const auto a = random_psd_game<double>(6, 1);
  const owned_game<double> idle{Eigen::VectorXd::Ones(1), Eigen::MatrixXd::Ones(1, 1), 1.0};  // stops at once alone
  const std::vector<nashprune::nash_game<double>> layers{idle.view(), a.view()};
  const auto batch = nashprune::seed_gradient_ascent<double>().solve(layers);
  const auto alone = nashprune::seed_gradient_ascent<double>().solve(a.view());
  EXPECT_EQ(batch[0].iterations, batch[1].iterations);
  EXPECT_EQ(batch[1].iterations, alone.iterations);
  EXPECT_EQ(batch[1].s, alone.s);
  EXPECT_GT(batch[0].iterations, 1);
}

template <typename Scalar>
class NashSolversTyped : public ::testing::Test {};
using Scalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(NashSolversTyped, Scalars);

TYPED_TEST(NashSolversTyped, EveryVariantMatchesTheDoubleEquilibrium) {
  using S = TypeParam;
  const auto reference = nashprune::active_set_newton<double>().solve(random_psd_game<double>(32, 77).view());
  const auto g = random_psd_game<S>(32, 77);
  const S tolerance = nashprune::default_exploitability_tolerance<S>();
  for (const auto& solution : solve_with_every_variant<S>(g.view(), tolerance)) {
    EXPECT_TRUE(solution.converged);
    EXPECT_LE(solution.exploitability, tolerance);
    EXPECT_LE((solution.s.template cast<double>() - reference.s).cwiseAbs().maxCoeff(),
              (std::is_same_v<S, float> ? 1e-2 : 1e-4));  // ε ≈ μ·err²/2
  }
}

}  // namespace
