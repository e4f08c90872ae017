// nashprune/nash_solvers.hpp — equilibrium solvers of the Nash head-pruning game.
//
// Seed: nash-head-pruning-llama-cpp.md §4.3 (the gradient-ascent rule kept as the
// baseline) and §1.3. The game and its potential are defined in nash_game.hpp:
// with Q = λ·M, M = R + diag(r_ii), the equilibria are the KKT points of
//     max Φ(s) = cᵀs − ½·sᵀQs   over s ∈ [0,1]ⁿ,     ∇Φ(s) = g = c − Q·s,
// unique when R ⪰ 0 (then Q ≻ 0). Every variant is a class templated on the
// scalar with an options struct and the same entry points:
//     solve(game), solve(game, start), solve(std::span<const nash_game>) (a batch),
// returning nash_solution (s, iterations, converged, exploitability, KKT residual,
// potential). Non-baseline variants stop when the exploitability ε ≤ tolerance.
//
// Variants (an iteration is one pass of the variant's main loop):
//   seed_gradient_ascent    the seed's rule unchanged: s = 1, sequential in-place
//                           s_i ← clamp(s_i + lr·(c_i − λ·Σ_j r_ij·s_j)), stop when
//                           max|Δs| < threshold; `converged` is that rule firing.
//   projected_gradient      s ← Π(s + g/L), L = min(‖Q‖_F, √(‖Q‖₁·‖Q‖_∞)) ≥ ‖Q‖₂.
//   best_response_sweeps    Gauss–Seidel: s_i ← BR_i(s_−i) = clamp(s_i + g_i/Q_ii)
//                           (exact coordinate ascent on Φ); g kept up to date by
//                           g −= Δ·Q.col(i) (AVX2/AVX-512 kernel for double,
//                           detail/best_response_kernel.hpp). Each sweep is one
//                           sequential chain, so a batch sweeps four layers with
//                           their steps interleaved (same results as alone).
//   accelerated_projected_gradient  FISTA with gradient-based adaptive restart
//                           (O'Donoghue & Candès 2015), one product Q·x per step.
//   active_set_newton       projected Newton (Bertsekas 1982): free set F from the
//                           δ-active bounds, d_F = Q_FF⁻¹·g_F (Cholesky), scaled
//                           gradient on the rest, Armijo search along the projection
//                           arc; once F is right a full step lands on the face's
//                           exact maximiser, so it ends at machine precision.
//                           Indefinite Q_FF falls back to a projected-gradient step.
// With an indefinite M every variant still stops within max_iterations.
// Cost: R is read in place (no n×n copy). Double games on AVX2/AVX-512 check
// its entries in one SIMD pass (finite, |r_ij − r_ji| ≤ tolerance) and compute
// every ε by SIMD too (detail/best_response_kernel.hpp); the exact checks of
// nash_game.hpp (passes_validation) run only when that pass flags something,
// and validate_nash_game only to name a defect. A batch reuses one workspace.
#pragma once

#include <Eigen/Cholesky>
#include <Eigen/Core>
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <new>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "config.hpp"
#include "detail/best_response_kernel.hpp"
#include "detail/simd_dispatch.hpp"
#include "detail/validate.hpp"
#include "nash_game.hpp"
#include "simd_target.hpp"

NASHPRUNE_BEGIN_NAMESPACE

/// What a solve reached. `converged` false is a result, not an error.
template <typename Scalar>
struct nash_solution {
  nash_vector<Scalar> s;
  std::int64_t iterations = 0;
  bool converged = false;
  Scalar exploitability = 0;  ///< ε(s) = max_i [max_t U_i(t, s_−i) − U_i(s)]
  Scalar kkt_residual = 0;    ///< ‖s − Π(s + ∇Φ(s))‖_∞
  Scalar potential = 0;       ///< Φ(s)
};

/// Default stopping tolerance on ε: 1e-10 in double, 64 ulps of 1 in float.
template <typename Scalar>
[[nodiscard]] constexpr Scalar default_exploitability_tolerance() {
  return std::max(Scalar(1e-10), Scalar(64) * std::numeric_limits<Scalar>::epsilon());
}

/// Options shared by the non-baseline variants.
template <typename Scalar>
struct nash_iteration_options {
  Scalar tolerance = default_exploitability_tolerance<Scalar>();  ///< stop when ε ≤ tolerance
  std::int64_t max_iterations = 10000;
  /// Instruction set of the best-response sweep (double games; the accelerated
  /// variant has no sweep and ignores it). `automatic`: the widest the CPU has.
  simd_target simd = simd_target::automatic;
};

namespace detail {

inline void validate_iteration_options(double tolerance, std::int64_t max_iterations) {
  if (!(std::isfinite(tolerance) && tolerance >= 0)) {
    fail_argument("tolerance", "must be finite and >= 0, got " + describe_value(tolerance));
  }
  require(max_iterations >= 0, "max_iterations", "must be >= 0, got " + std::to_string(max_iterations));
}

[[nodiscard]] inline std::string layer_prefix(std::size_t layer) { return "layers[" + std::to_string(layer) + "]."; }

/// The game as the solvers use it: Q = λ·M, M = R + diag(r_ii), never formed.
/// R is read in place through a contiguous column-major view (copied only when
/// its inner stride is not 1), so Q·x = λ·(R·x + r∘x) and a change of s_j moves
/// the gradient by λ·Δ·(R.col(j) + r_j·e_j). R is used as given, not
/// symmetrised: row i of Q·s is then exactly player i's own derivative, so ε is
/// that of U itself. One object serves a whole batch: load() reuses its storage
/// and validates in the same pass that reads R.
template <typename Scalar>
struct quadratic_game {
  using matrix_view = Eigen::Map<const nash_matrix<Scalar>, 0, Eigen::OuterStride<>>;

  matrix_view r{nullptr, 0, 0, Eigen::OuterStride<>(1)};
  Scalar lambda = 1;
  nash_vector<Scalar> c;
  nash_vector<Scalar> diagonal;          ///< r_ii
  nash_vector<Scalar> half_diagonal;     ///< b_i = λ·r_ii = Q_ii/2
  nash_vector<Scalar> inverse_diagonal;  ///< 1/Q_ii: a best response is s_i + g_i/Q_ii
  simd_target target = simd_target::portable;  ///< of the SIMD passes (validation, ε), resolved

  quadratic_game() = default;
  explicit quadratic_game(const nash_game<Scalar>& game, simd_target simd = simd_target::automatic) {
    load(game, -1, simd);
  }
  quadratic_game(const quadratic_game&) = delete;  // `r` may view `owned_`
  quadratic_game& operator=(const quadratic_game&) = delete;

  /// Validates `game` (as validate_nash_game, naming "layers[layer]." when
  /// layer ≥ 0; R's entries by a SIMD pass on `simd` for double games) and
  /// makes it the current game; `game` must outlive its use.
  void load(const nash_game<Scalar>& game, std::ptrdiff_t layer = -1, simd_target simd = simd_target::automatic) {
    const auto& source = game.redundancy;
    const bool shapes_agree = source.rows() == game.size() && source.cols() == game.size() && game.size() > 0;
    if (shapes_agree && source.innerStride() == 1) {
      new (&r) matrix_view(source.data(), source.rows(), source.cols(), Eigen::OuterStride<>(source.outerStride()));
    } else if (shapes_agree) {
      owned_ = source;
      new (&r) matrix_view(owned_.data(), owned_.rows(), owned_.cols(), Eigen::OuterStride<>(owned_.rows()));
    }
    target = resolve_simd_target<Scalar, double>(simd);
    bool entries_checked = false;
    if constexpr (std::is_same_v<Scalar, double>) {
      if (shapes_agree) {
        (void)finite_and_nearly_symmetric_on(target, r.data(), r.outerStride(),
                                             r.rows(), nash_validation_options<Scalar>{}.symmetry_tolerance,
                                             entries_checked);
      }
    }
    if (!shapes_agree || !passes_validation(game, r, {}, entries_checked)) {
      validate_nash_game(game, {}, layer < 0 ? std::string() : layer_prefix(static_cast<std::size_t>(layer)));
      fail_domain("redundancy", "failed validation");  // unreachable: the checks agree
    }
    lambda = game.lambda;
    c = game.importance;
    diagonal = r.diagonal();
    half_diagonal = lambda * diagonal;
    inverse_diagonal = (Scalar(2) * half_diagonal).cwiseInverse();
  }

  [[nodiscard]] Eigen::Index size() const { return c.size(); }

  /// Q(i, j).
  [[nodiscard]] Scalar entry(Eigen::Index i, Eigen::Index j) const {
    return lambda * (i == j ? Scalar(2) * r(i, i) : r(i, j));
  }

  /// out = Q·x.
  template <typename X>
  void product(const X& x, nash_vector<Scalar>& out) const {
    out.noalias() = r * x;
    out = lambda * (out + diagonal.cwiseProduct(x));
  }

  /// g = c − Q·s.
  template <typename S>
  void gradient(const S& s, nash_vector<Scalar>& g) const {
    if ((s.array() == Scalar(0)).all()) {  // the usual start: no product needed
      g = c;
      return;
    }
    g.noalias() = r * s;
    g = c - lambda * (g + diagonal.cwiseProduct(s));
  }
  [[nodiscard]] nash_vector<Scalar> gradient(const nash_vector<Scalar>& s) const {
    nash_vector<Scalar> g(size());
    gradient(s, g);
    return g;
  }

  /// g −= delta·Q.col(j): the gradient after s_j moved by delta.
  void move_gradient(nash_vector<Scalar>& g, Eigen::Index j, Scalar delta) const {
    const Scalar scaled = lambda * delta;
    g.noalias() -= scaled * r.col(j);
    g(j) -= scaled * diagonal(j);
  }

  /// L ≥ ‖Q‖₂: min(‖Q‖_F, √(‖Q‖₁·‖Q‖_∞)), one pass over R (|2r_jj| = |r_jj| + r_jj, r_jj > 0).
  [[nodiscard]] Scalar lipschitz_bound() const {
    nash_vector<Scalar> row_sums = diagonal;
    Scalar max_column_sum = 0;
    Scalar squares = Scalar(3) * diagonal.squaredNorm();
    for (Eigen::Index j = 0; j < size(); ++j) {
      const auto column = r.col(j).array();
      max_column_sum = std::max(max_column_sum, column.abs().sum() + diagonal(j));
      squares += column.square().sum();
      row_sums.array() += column.abs();
    }
    const Scalar bound = lambda * std::min(std::sqrt(squares), std::sqrt(max_column_sum * row_sums.maxCoeff()));
    return bound > 0 ? bound : Scalar(1);
  }

  /// 1/L: the step of projected gradient ascent, which never lowers Φ for any symmetric Q.
  [[nodiscard]] Scalar gradient_step() const { return Scalar(1) / lipschitz_bound(); }

  /// The projection of x onto the strategy box [0, 1]ⁿ.
  template <typename X>
  [[nodiscard]] static auto project(const X& x) {
    return x.cwiseMax(Scalar(0)).cwiseMin(Scalar(1));
  }

  [[nodiscard]] Scalar exploitability(const nash_vector<Scalar>& s, const nash_vector<Scalar>& g) const {
    if constexpr (std::is_same_v<Scalar, double>) {
      double result = 0;
      if (exploitability_on(target, s.data(), g.data(), half_diagonal.data(), inverse_diagonal.data(), size(),
                            result)) {
        return result;
      }
    }
    return exploitability_from_gradient<Scalar>(s, g, half_diagonal, inverse_diagonal);
  }

  /// Φ(s) from s and g = c − Q·s:  Φ = cᵀs − ½sᵀQs = ½·sᵀ(c + g).
  [[nodiscard]] static Scalar potential(const nash_vector<Scalar>& s, const nash_vector<Scalar>& g,
                                        const nash_vector<Scalar>& c) {
    return Scalar(0.5) * s.dot(c + g);
  }

  [[nodiscard]] nash_solution<Scalar> finish(nash_vector<Scalar> s, std::int64_t iterations, Scalar tolerance) const {
    nash_solution<Scalar> out;
    const nash_vector<Scalar> g = gradient(s);
    out.exploitability = exploitability(s, g);
    out.kkt_residual = kkt_residual_from<Scalar>(s, g);
    out.potential = potential(s, g, c);
    out.converged = out.exploitability <= tolerance;
    out.iterations = iterations;
    out.s = std::move(s);
    return out;
  }

 private:
  nash_matrix<Scalar> owned_;  ///< R when its inner stride is not 1
};

template <typename Scalar>
void validate_start(const nash_game<Scalar>& game, const nash_vector<Scalar>& start) {
  require_size("start", start.size(), game.size());
  require_finite("start", start);
  for (Eigen::Index i = 0; i < start.size(); ++i) {
    if (start(i) < 0 || start(i) > 1)
      fail_domain("start", "must lie in [0, 1], got " + describe_value(start(i)) + " at " + at_index(i));
  }
}

/// The instruction set an options struct asks for (automatic when it has none).
template <typename Options>
[[nodiscard]] simd_target simd_of(const Options& options) {
  if constexpr (requires { options.simd; }) {
    return options.simd;
  } else {
    return simd_target::automatic;
  }
}

template <typename Options>
void validate_solver_options(const Options& options) {
  validate_iteration_options(double(options.tolerance), options.max_iterations);
  if constexpr (requires { options.warm_start_sweeps; }) {
    require(options.warm_start_sweeps >= 0, "warm_start_sweeps", "must be >= 0");
  }
}

}  // namespace detail

/// One interface for every variant whose layers are independent (ensmallen
/// style: a variant is a policy, `projected_gradient<double>` is
/// `nash_solver<double, projected_gradient_policy<double>>`). The policy holds
/// `options_type` and `static run(options, quadratic_game, start)`.
template <typename Scalar, typename Policy>
class nash_solver {
 public:
  using scalar_type = Scalar;
  using options_type = typename Policy::options_type;

  explicit nash_solver(options_type options = {}) : options_(options) { detail::validate_solver_options(options_); }
  [[nodiscard]] const options_type& options() const { return options_; }

  /// Solves one layer starting from nobody playing (s = 0).
  [[nodiscard]] nash_solution<Scalar> solve(const nash_game<Scalar>& game) const {
    const detail::quadratic_game<Scalar> quadratic(game, detail::simd_of(options_));
    return Policy::run(options_, quadratic, nash_vector<Scalar>::Zero(quadratic.size()));
  }

  /// Warm start from `start` ∈ [0,1]ⁿ (e.g. the equilibrium at a nearby λ).
  [[nodiscard]] nash_solution<Scalar> solve(const nash_game<Scalar>& game, const nash_vector<Scalar>& start) const {
    const detail::quadratic_game<Scalar> quadratic(game, detail::simd_of(options_));
    detail::validate_start(game, start);
    return Policy::run(options_, quadratic, start);
  }

  /// Solves a batch layer by layer, reusing one workspace (a policy with a
  /// `group_size` advances that many layers at once); a bad layer is named
  /// ("layers[3].lambda") and nothing is returned.
  [[nodiscard]] std::vector<nash_solution<Scalar>> solve(std::span<const nash_game<Scalar>> layers) const {
    std::vector<nash_solution<Scalar>> out;
    out.reserve(layers.size());
    if constexpr (requires { Policy::group_size; }) {
      std::array<detail::quadratic_game<Scalar>, Policy::group_size> group;
      typename Policy::workspace workspace;
      for (std::size_t first = 0; first < layers.size(); first += group.size()) {
        const std::size_t count = std::min(group.size(), layers.size() - first);
        for (std::size_t k = 0; k < count; ++k) {
          group[k].load(layers[first + k], static_cast<std::ptrdiff_t>(first + k), detail::simd_of(options_));
        }
        Policy::run_group(options_, std::span<const detail::quadratic_game<Scalar>>(group.data(), count), workspace,
                          out);
      }
    } else {
      detail::quadratic_game<Scalar> quadratic;
      for (std::size_t l = 0; l < layers.size(); ++l) {
        quadratic.load(layers[l], static_cast<std::ptrdiff_t>(l), detail::simd_of(options_));
        out.push_back(Policy::run(options_, quadratic, nash_vector<Scalar>::Zero(quadratic.size())));
      }
    }
    return out;
  }

 private:
  options_type options_;
};

// ---------------------------------------------------------------------------
// Baseline: the seed's gradient-ascent rule, unchanged.

template <typename Scalar>
struct seed_gradient_ascent_options {
  Scalar learning_rate = Scalar(0.01);
  std::int64_t max_iterations = 100;
  Scalar convergence_threshold = Scalar(1e-4);  ///< stop when max|Δs| < threshold
  Scalar initial_participation = Scalar(1);
};

/// The seed's rule (§4.3), step for step: a batch runs all layers in one loop and
/// stops when the largest change over every layer falls below the threshold.
template <typename Scalar>
class seed_gradient_ascent {
 public:
  using scalar_type = Scalar;
  using options_type = seed_gradient_ascent_options<Scalar>;

  explicit seed_gradient_ascent(options_type options = {}) : options_(options) {
    detail::require(options_.max_iterations >= 0, "max_iterations", "must be >= 0");
    if (!(std::isfinite(options_.learning_rate) && options_.learning_rate > 0)) {
      detail::fail_argument("learning_rate", "must be finite and > 0");
    }
    if (!std::isfinite(options_.convergence_threshold)) {
      detail::fail_argument("convergence_threshold", "must be finite");
    }
    if (!(options_.initial_participation >= 0 && options_.initial_participation <= 1)) {
      detail::fail_argument("initial_participation", "must lie in [0, 1]");
    }
  }
  [[nodiscard]] const options_type& options() const { return options_; }

  [[nodiscard]] nash_solution<Scalar> solve(const nash_game<Scalar>& game) const {
    return std::move(solve(std::span<const nash_game<Scalar>>(&game, 1)).front());
  }

  [[nodiscard]] std::vector<nash_solution<Scalar>> solve(std::span<const nash_game<Scalar>> layers) const {
    for (std::size_t l = 0; l < layers.size(); ++l) {
      validate_nash_game(layers[l], {}, layers.size() == 1 ? std::string() : detail::layer_prefix(l));
    }
    std::vector<nash_vector<Scalar>> s;
    s.reserve(layers.size());
    for (const auto& layer : layers)
      s.push_back(nash_vector<Scalar>::Constant(layer.size(), options_.initial_participation));

    std::int64_t iterations = 0;
    bool converged = false;
    while (iterations < options_.max_iterations && !converged) {
      Scalar max_delta = 0;
      for (std::size_t l = 0; l < layers.size(); ++l) {
        const auto& game = layers[l];
        auto& x = s[l];
        for (Eigen::Index h = 0; h < x.size(); ++h) {
          Scalar pressure = 0;  // the seed's own summation order, for step-for-step equality
          for (Eigen::Index j = 0; j < x.size(); ++j) pressure += x(j) * game.redundancy(h, j);
          const Scalar gradient = game.importance(h) - game.lambda * pressure;
          const Scalar old_s = x(h);
          const Scalar new_s = std::clamp(old_s + options_.learning_rate * gradient, Scalar(0), Scalar(1));
          x(h) = new_s;
          max_delta = std::max(max_delta, std::abs(new_s - old_s));
        }
      }
      ++iterations;
      converged = max_delta < options_.convergence_threshold;
    }

    std::vector<nash_solution<Scalar>> out;
    out.reserve(layers.size());
    for (std::size_t l = 0; l < layers.size(); ++l) {
      auto solution = detail::quadratic_game<Scalar>(layers[l]).finish(std::move(s[l]), iterations, Scalar(0));
      solution.converged = converged;
      out.push_back(std::move(solution));
    }
    return out;
  }

 private:
  options_type options_;
};

// ---------------------------------------------------------------------------
// Projected gradient with the Lipschitz step.

template <typename Scalar>
struct projected_gradient_options {
  Scalar tolerance = default_exploitability_tolerance<Scalar>();  ///< stop when ε ≤ tolerance
  std::int64_t max_iterations = 100000;  ///< plain gradient steps converge slowly: a larger cap
};

template <typename Scalar>
struct projected_gradient_policy {
  using options_type = projected_gradient_options<Scalar>;

  [[nodiscard]] static nash_solution<Scalar> run(const options_type& options,
                                                 const detail::quadratic_game<Scalar>& game, nash_vector<Scalar> s) {
    nash_vector<Scalar> g = game.gradient(s);
    const Scalar step = game.gradient_step();
    std::int64_t k = 0;
    for (; k < options.max_iterations && game.exploitability(s, g) > options.tolerance; ++k) {
      s = game.project(s + step * g);
      game.gradient(s, g);
    }
    return game.finish(std::move(s), k, options.tolerance);
  }
};

template <typename Scalar>
using projected_gradient = nash_solver<Scalar, projected_gradient_policy<Scalar>>;

// ---------------------------------------------------------------------------
// Best-response (Gauss–Seidel) sweeps.

namespace detail {
/// g_to = c − Q·to given g_from = c − Q·from: through the columns that changed
/// when they are few (a Newton step moves the free set only), else one product.
template <typename Scalar>
void gradient_at(const quadratic_game<Scalar>& game, const nash_vector<Scalar>& from, const nash_vector<Scalar>& g_from,
                 const nash_vector<Scalar>& to, nash_vector<Scalar>& g_to) {
  const Eigen::Index n = game.size();
  const Eigen::Index changed = (to.array() != from.array()).count();
  if (2 * changed >= n) {
    game.gradient(to, g_to);
    return;
  }
  g_to = g_from;
  for (Eigen::Index j = 0; j < n; ++j) {
    if (to(j) != from(j)) game.move_gradient(g_to, j, to(j) - from(j));
  }
}

/// What the sweep kernel reads and updates (double games).
inline best_response_sweep_data sweep_kernel_data(const quadratic_game<double>& game, nash_vector<double>& s,
                                                  nash_vector<double>& g) {
  return {game.r.data(),  game.r.outerStride(), game.size(), game.diagonal.data(), game.inverse_diagonal.data(),
          game.lambda,    s.data(),             g.data()};
}

/// One Gauss–Seidel sweep of best responses, portable loop; keeps g = c − Q·s current.
template <typename Scalar>
void best_response_sweep_portable(const quadratic_game<Scalar>& game, nash_vector<Scalar>& s, nash_vector<Scalar>& g) {
  for (Eigen::Index i = 0; i < s.size(); ++i) {
    const Scalar best = std::clamp(s(i) + g(i) * game.inverse_diagonal(i), Scalar(0), Scalar(1));
    const Scalar delta = best - s(i);
    if (delta != 0) {
      s(i) = best;
      game.move_gradient(g, i, delta);
    }
  }
}

/// One sweep on `target` (resolved by resolve_simd_target<Scalar, double>).
template <typename Scalar>
void best_response_sweep(const quadratic_game<Scalar>& game, nash_vector<Scalar>& s, nash_vector<Scalar>& g,
                         simd_target target) {
  if constexpr (std::is_same_v<Scalar, double>) {
    const best_response_sweep_data data = sweep_kernel_data(game, s, g);
    if (best_response_sweep_on(target, &data)) return;
  }
  best_response_sweep_portable(game, s, g);
}

/// The state of one best-response solve; a batch advances several at once
/// exactly as each would advance alone. Its vectors are reused from layer to layer.
template <typename Scalar>
struct sweep_run {
  const quadratic_game<Scalar>* game = nullptr;
  nash_vector<Scalar> s;
  nash_vector<Scalar> g;
  std::int64_t k = 0;
  bool running = false;

  template <typename Start>
  void start(const quadratic_game<Scalar>& q, const Start& initial, const nash_iteration_options<Scalar>& options) {
    game = &q;
    s = initial;
    g.resize(s.size());
    q.gradient(s, g);
    k = 0;
    update_running(options);
  }
  void update_running(const nash_iteration_options<Scalar>& options) {
    running = k < options.max_iterations && game->exploitability(s, g) > options.tolerance;
  }
  void after_sweep(const nash_iteration_options<Scalar>& options) {
    // Incremental updates drift by rounding; refresh the gradient now and then.
    if ((k & 63) == 63) game->gradient(s, g);
    ++k;
    update_running(options);
  }
  [[nodiscard]] nash_solution<Scalar> finish(const nash_iteration_options<Scalar>& options) const {
    return game->finish(s, k, options.tolerance);
  }
};

/// Sweeps every run still running (interleaved on a SIMD target) until none is.
template <typename Scalar>
void advance_sweep_runs(const nash_iteration_options<Scalar>& options, std::span<sweep_run<Scalar>> runs) {
  const simd_target target = resolve_simd_target<Scalar, double>(options.simd);
  for (;;) {
    std::array<sweep_run<Scalar>*, max_sweep_group> active{};
    int count = 0;
    for (auto& run : runs) {
      if (run.running && count < max_sweep_group) active[count++] = &run;
    }
    if (count == 0) return;
    bool swept = false;
    if constexpr (std::is_same_v<Scalar, double>) {
      std::array<best_response_sweep_data, max_sweep_group> data;
      for (int a = 0; a < count; ++a) data[a] = sweep_kernel_data(*active[a]->game, active[a]->s, active[a]->g);
      swept = best_response_sweep_on(target, data.data(), count);
    }
    for (int a = 0; a < count; ++a) {
      if (!swept) best_response_sweep_portable(*active[a]->game, active[a]->s, active[a]->g);
      active[a]->after_sweep(options);
    }
  }
}
}  // namespace detail

template <typename Scalar>
struct best_response_sweeps_policy {
  using options_type = nash_iteration_options<Scalar>;
  using workspace = std::array<detail::sweep_run<Scalar>, detail::max_sweep_group>;
  static constexpr std::size_t group_size = detail::max_sweep_group;

  [[nodiscard]] static nash_solution<Scalar> run(const options_type& options,
                                                 const detail::quadratic_game<Scalar>& game, nash_vector<Scalar> s) {
    detail::sweep_run<Scalar> run;
    run.start(game, s, options);
    detail::advance_sweep_runs(options, std::span<detail::sweep_run<Scalar>>(&run, 1));
    return run.finish(options);
  }

  /// Up to group_size games from s = 0 with their sweeps interleaved (a SIMD
  /// target overlaps their sequential chains); each result equals run() of its
  /// game alone.
  static void run_group(const options_type& options, std::span<const detail::quadratic_game<Scalar>> games,
                        workspace& runs, std::vector<nash_solution<Scalar>>& out) {
    for (std::size_t k = 0; k < games.size(); ++k) {
      runs[k].start(games[k], nash_vector<Scalar>::Zero(games[k].size()), options);
    }
    const std::span<detail::sweep_run<Scalar>> active(runs.data(), games.size());
    detail::advance_sweep_runs(options, active);
    for (const auto& run : active) out.push_back(run.finish(options));
  }
};

template <typename Scalar>
using best_response_sweeps = nash_solver<Scalar, best_response_sweeps_policy<Scalar>>;

// ---------------------------------------------------------------------------
// Accelerated projected gradient (FISTA) with adaptive restart.

template <typename Scalar>
struct accelerated_projected_gradient_policy {
  using options_type = nash_iteration_options<Scalar>;

  [[nodiscard]] static nash_solution<Scalar> run(const options_type& options,
                                                 const detail::quadratic_game<Scalar>& game, nash_vector<Scalar> x) {
    const Scalar step = game.gradient_step();
    nash_vector<Scalar> qx(game.size());
    game.product(x, qx);  // Q·y follows from Q·x by linearity: one product per step
    nash_vector<Scalar> y = x, qy = qx, x_next, qx_next;
    Scalar t = 1;
    std::int64_t k = 0;
    for (; k < options.max_iterations && game.exploitability(x, game.c - qx) > options.tolerance; ++k) {
      x_next = game.project(y + step * (game.c - qy));
      game.product(x_next, qx_next);
      if ((y - x_next).dot(x_next - x) > 0) {  // momentum points uphill of the step: restart
        t = 1;
        y = x_next;
        qy = qx_next;
      } else {
        const Scalar t_next = (Scalar(1) + std::sqrt(Scalar(1) + Scalar(4) * t * t)) / Scalar(2);
        const Scalar beta = (t - Scalar(1)) / t_next;
        y = x_next + beta * (x_next - x);
        qy = qx_next + beta * (qx_next - qx);
        t = t_next;
      }
      x.swap(x_next);
      qx.swap(qx_next);
    }
    return game.finish(std::move(x), k, options.tolerance);
  }
};

template <typename Scalar>
using accelerated_projected_gradient = nash_solver<Scalar, accelerated_projected_gradient_policy<Scalar>>;

// ---------------------------------------------------------------------------
// Exact active-set projected Newton.

template <typename Scalar>
struct active_set_newton_options {
  Scalar tolerance = default_exploitability_tolerance<Scalar>();  ///< stop when ε ≤ tolerance
  std::int64_t max_iterations = 1000;                             ///< Newton steps (plus warm-up sweeps)
  std::int64_t warm_start_sweeps = 4;                             ///< best-response sweeps before the first Newton step
  simd_target simd = simd_target::automatic;                      ///< instruction set of the warm-up sweeps
};

template <typename Scalar>
struct active_set_newton_policy {
  using options_type = active_set_newton_options<Scalar>;

  [[nodiscard]] static nash_solution<Scalar> run(const options_type& options,
                                                 const detail::quadratic_game<Scalar>& game, nash_vector<Scalar> s) {
    const Eigen::Index n = game.size();
    nash_vector<Scalar> g = game.gradient(s);
    std::int64_t k = 0;
    // Warm-up sweeps never end the solve: the answer always comes from a Newton
    // step, so it is exact to rounding whenever the free set is right.
    const simd_target target = detail::resolve_simd_target<Scalar, double>(options.simd);
    for (std::int64_t w = 0; w < options.warm_start_sweeps && k < options.max_iterations; ++w, ++k) {
      detail::best_response_sweep(game, s, g, target);
    }
    game.gradient(s, g);

    Scalar step = 0;  // the fallback's 1/L, computed on first use
    std::vector<Eigen::Index> free_set;
    nash_vector<Scalar> d(n), trial(n), g_trial(n);
    nash_matrix<Scalar> q_free;
    nash_vector<Scalar> g_free;
    for (bool done = false; k < options.max_iterations && !done; ++k) {
      // δ-active bounds (Bertsekas): near a bound with the gradient pushing out.
      const Scalar delta = std::min(Scalar(1e-3), detail::kkt_residual_from<Scalar>(s, g));
      free_set.clear();
      for (Eigen::Index i = 0; i < n; ++i) {
        const bool held = (s(i) <= delta && g(i) < 0) || (s(i) >= Scalar(1) - delta && g(i) > 0);
        if (held) {
          d(i) = g(i) * game.inverse_diagonal(i);
        } else {
          free_set.push_back(i);
        }
      }
      const auto m = static_cast<Eigen::Index>(free_set.size());
      bool newton = true;
      if (m > 0) {
        q_free.resize(m, m);
        g_free.resize(m);
        for (Eigen::Index b = 0; b < m; ++b) {
          g_free(b) = g(free_set[b]);
          for (Eigen::Index a = 0; a < m; ++a) q_free(a, b) = game.entry(free_set[a], free_set[b]);
        }
        const Eigen::LLT<nash_matrix<Scalar>> factor(q_free);
        if (factor.info() == Eigen::Success) {
          const nash_vector<Scalar> d_free = factor.solve(g_free);
          for (Eigen::Index b = 0; b < m; ++b) d(free_set[b]) = d_free(b);
        } else {
          newton = false;  // Q_FF not positive definite (indefinite game)
        }
      }

      // Armijo search along the projection arc; Φ(trial) − Φ(s) = (g + ½(g_trial − g))ᵀΔ.
      const Scalar phi = game.potential(s, g, game.c);
      bool accepted = false;
      bool full_newton_step = false;
      if (newton) {
        Scalar alpha = 1;
        for (int attempt = 0; attempt < 40 && !accepted; ++attempt, alpha *= Scalar(0.5)) {
          trial = game.project(s + alpha * d);
          const Scalar predicted = g.dot(trial - s);
          if (!(predicted > 0)) continue;
          detail::gradient_at(game, s, g, trial, g_trial);
          accepted = game.potential(trial, g_trial, game.c) - phi >= Scalar(1e-4) * predicted;
          full_newton_step = accepted && attempt == 0;
        }
      }
      if (!accepted) {  // projected-gradient step: ascends Φ for any symmetric Q
        if (step == 0) step = game.gradient_step();
        trial = game.project(s + step * g);
        detail::gradient_at(game, s, g, trial, g_trial);
        if (trial == s) {  // stationary to rounding: nothing more to gain
          ++k;
          break;
        }
      }
      s.swap(trial);
      g.swap(g_trial);
      done = game.exploitability(s, g) <= options.tolerance && (full_newton_step || !newton);
    }
    return game.finish(std::move(s), k, options.tolerance);
  }
};

template <typename Scalar>
using active_set_newton = nash_solver<Scalar, active_set_newton_policy<Scalar>>;

// ---------------------------------------------------------------------------
// Choosing a variant by name (the command-line tool and other front ends).

enum class nash_solver_kind {
  seed_gradient_ascent,
  projected_gradient,
  best_response_sweeps,
  accelerated_projected_gradient,
  active_set_newton,
};

struct nash_solver_name {
  std::string_view name;
  nash_solver_kind kind;
};

inline constexpr nash_solver_name nash_solver_names[] = {
    {"seed", nash_solver_kind::seed_gradient_ascent},
    {"projected-gradient", nash_solver_kind::projected_gradient},
    {"best-response", nash_solver_kind::best_response_sweeps},
    {"accelerated", nash_solver_kind::accelerated_projected_gradient},
    {"active-set", nash_solver_kind::active_set_newton},
};

/// The variant called `name`; std::invalid_argument listing the names otherwise.
[[nodiscard]] inline nash_solver_kind parse_nash_solver_kind(std::string_view name) {
  std::string known;
  for (const auto& entry : nash_solver_names) {
    if (entry.name == name) return entry.kind;
    known += (known.empty() ? "" : ", ") + std::string(entry.name);
  }
  detail::fail_argument("solver", "unknown solver '" + std::string(name) + "' (known: " + known + ")");
}

/// Solves a batch with the chosen variant; unset options keep the variant's
/// defaults. For the baseline, `tolerance` is ignored (its own rule decides)
/// and `max_iterations` replaces the seed's 100.
template <typename Scalar>
[[nodiscard]] std::vector<nash_solution<Scalar>> solve_nash_layers(nash_solver_kind kind,
                                                                   std::span<const nash_game<Scalar>> layers,
                                                                   std::optional<Scalar> tolerance = {},
                                                                   std::optional<std::int64_t> max_iterations = {}) {
  auto configure = [&](auto options) {
    if (tolerance) options.tolerance = *tolerance;
    if (max_iterations) options.max_iterations = *max_iterations;
    return options;
  };
  switch (kind) {
    case nash_solver_kind::seed_gradient_ascent: {
      seed_gradient_ascent_options<Scalar> options;
      if (max_iterations) options.max_iterations = *max_iterations;
      return seed_gradient_ascent<Scalar>(options).solve(layers);
    }
    case nash_solver_kind::projected_gradient:
      return projected_gradient<Scalar>(configure(projected_gradient_options<Scalar>{})).solve(layers);
    case nash_solver_kind::best_response_sweeps:
      return best_response_sweeps<Scalar>(configure(nash_iteration_options<Scalar>{})).solve(layers);
    case nash_solver_kind::accelerated_projected_gradient:
      return accelerated_projected_gradient<Scalar>(configure(nash_iteration_options<Scalar>{})).solve(layers);
    case nash_solver_kind::active_set_newton:
      return active_set_newton<Scalar>(configure(active_set_newton_options<Scalar>{})).solve(layers);
  }
  detail::fail_argument("solver", "unknown solver kind");
}

NASHPRUNE_END_NAMESPACE
