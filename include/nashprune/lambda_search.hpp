// nashprune/lambda_search.hpp — searching the redundancy weight λ so the
// equilibrium prunes a requested number (or fraction) of heads.
//
// Seed: nash-head-pruning-llama-cpp.md §3.1 (λ "[0.1-1.0], default 0.5") and §4.4.
// The equilibrium of max cᵀs − ½λ·sᵀMs is that of max (c/λ)ᵀs − ½·sᵀMs: raising λ
// shrinks every head's own incentive, so along the equilibrium path s*(λ) heads
// fall below the prune threshold as λ grows (λ → 0: every head with c_i > 0 plays 1;
// λ → ∞: every head plays 0). The count the seed's rule prunes (nash_decisions.hpp,
// caps included) is searched over λ (count_search.hpp): bracket by doubling/halving
// from the games' own λ, then bisect in log λ, each solve warm-started from the
// nearest equilibrium.
// The count is monotone in λ for typical games but not in every game (and it moves
// in steps), so the result reports the count achieved and whether it is the target;
// a target beyond the caps (n − min_keep) or below what the smallest λ already
// prunes (heads with c_i ≤ 0) is reported unreachable, with the nearest count found.
// Per layer: one λ per layer. Over all layers: one λ shared by every layer, the
// target being the total count.
//
// What counts as pruned is a parameter: by default the seed's rule, but a caller
// that will apply another rule (e.g. the GQA-consistent plans of nash_decisions.hpp,
// which remove whole groups or the same heads per group) passes that rule as the
// counter, so the count searched for is the count that will actually be removed.
// The cap (the most a scope can prune) is the counter's count at s = 0, the limit
// of the equilibrium as λ → ∞.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "config.hpp"
#include "count_search.hpp"
#include "detail/validate.hpp"
#include "nash_decisions.hpp"
#include "nash_game.hpp"
#include "nash_solvers.hpp"

NASHPRUNE_BEGIN_NAMESPACE

/// How many heads to prune: an absolute count, or a fraction of the heads in
/// scope (rounded to the nearest count).
struct prune_target {
  enum class kind { count, fraction };
  kind unit = kind::count;
  double value = 0;

  [[nodiscard]] static prune_target heads(std::int64_t count) { return {kind::count, static_cast<double>(count)}; }
  [[nodiscard]] static prune_target fraction_of_heads(double fraction) { return {kind::fraction, fraction}; }

  /// The count for `n` heads; throws std::invalid_argument for a negative or
  /// non-finite value, or a fraction above 1.
  [[nodiscard]] std::int64_t heads_of(std::int64_t n) const {
    if (!(std::isfinite(value) && value >= 0)) {
      detail::fail_argument("target", "must be finite and >= 0, got " + detail::describe_value(value));
    }
    if (unit == kind::fraction) {
      detail::require(value <= 1, "target", "a fraction must lie in [0, 1], got " + detail::describe_value(value));
      return std::llround(value * static_cast<double>(n));
    }
    return static_cast<std::int64_t>(value);
  }
};

template <typename Scalar>
struct lambda_search_options {
  nash_decision_options<Scalar> decisions{};  ///< the rule that counts pruned heads
  Scalar lambda_min = Scalar(1e-6);           ///< the search never leaves [lambda_min, lambda_max]
  Scalar lambda_max = Scalar(1e6);
  std::int64_t max_solves = 200;  ///< equilibrium solves (of the whole scope) at most
};

template <typename Scalar>
struct lambda_search_result {
  Scalar lambda = 0;           ///< the λ chosen
  std::int64_t requested = 0;  ///< heads the target asked for
  std::int64_t achieved = 0;   ///< heads the counter (default: the seed's rule) prunes at λ
  bool reached = false;        ///< achieved == requested
  bool reachable = true;       ///< false: the target lies beyond the caps or below the smallest count
  std::int64_t solves = 0;     ///< equilibrium solves spent
  std::vector<nash_solution<Scalar>> equilibria;  ///< per layer, at λ
};

/// The default counter: the heads the seed's rule (§4.4, caps included) prunes.
/// A counter is called as count(layer, participation, decisions) → heads pruned,
/// `layer` indexing the span given to the search.
struct seed_rule_counter {
  template <typename Scalar>
  [[nodiscard]] std::int64_t operator()(std::size_t /*layer*/, const nash_vector<Scalar>& participation,
                                        const nash_decision_options<Scalar>& decisions) const {
    return static_cast<std::int64_t>(seed_pruned_heads(participation, decisions).size());
  }
};

namespace detail {

/// The search on one scope (a set of layers sharing λ), count(λ) = Σ pruned.
/// `first_layer` is the scope's first index in the caller's span (what the
/// counter is told).
template <typename Scalar, typename Solver, typename Counter>
lambda_search_result<Scalar> search_scope(std::span<const nash_game<Scalar>> layers, std::size_t first_layer, std::int64_t requested,
                                          const lambda_search_options<Scalar>& options, const Solver& solver,
                                          const Counter& count_pruned) {
  struct point {
    std::int64_t count = 0;
    std::vector<nash_solution<Scalar>> equilibria;
  };
  const auto evaluate = [&](Scalar lambda, const point* warm) {
    point p;
    for (std::size_t l = 0; l < layers.size(); ++l) {
      const nash_game<Scalar> game{layers[l].importance, layers[l].redundancy, lambda};
      p.equilibria.push_back(warm ? solver.solve(game, warm->equilibria[l].s) : solver.solve(game));
      p.count += count_pruned(first_layer + l, p.equilibria.back().s, options.decisions);
    }
    return p;
  };

  std::int64_t cap = 0;
  for (std::size_t l = 0; l < layers.size(); ++l) {
    const nash_vector<Scalar> nobody = nash_vector<Scalar>::Zero(layers[l].size());
    cap += count_pruned(first_layer + l, nobody, options.decisions);
  }
  count_search_options<Scalar> search;
  search.low = options.lambda_min;
  search.high = options.lambda_max;
  search.start = std::clamp(layers.front().lambda, options.lambda_min, options.lambda_max);
  search.scale = search_scale::logarithmic;
  search.goal = count_goal::nearest;
  search.max_evaluations = options.max_solves;
  auto found = search_count(requested, search, evaluate, [](const point& p) { return p.count; });
  auto& best = found.best();
  lambda_search_result<Scalar> out;
  out.lambda = best.at;
  out.requested = requested;
  out.achieved = best.count;
  out.reached = best.count == requested;
  const bool below_smallest = found.lo.at <= options.lambda_min && found.lo.count > requested;
  const bool beyond_largest = found.hi.at >= options.lambda_max && found.hi.count < requested;
  out.reachable = requested <= cap && !below_smallest && !beyond_largest;
  out.solves = found.evaluations;
  out.equilibria = std::move(best.point.equilibria);
  return out;
}

template <typename Scalar>
void validate_lambda_search(std::span<const nash_game<Scalar>> layers,
                          const lambda_search_options<Scalar>& options) {
  require(!layers.empty(), "layers", "is empty");
  for (std::size_t l = 0; l < layers.size(); ++l) validate_nash_game(layers[l], {}, layer_prefix(l));
  validate_decision_options(options.decisions);
  if (!(options.lambda_min > 0 && options.lambda_max >= options.lambda_min && std::isfinite(options.lambda_max))) {
    fail_argument("lambda_min", "need 0 < lambda_min <= lambda_max < inf");
  }
  require(options.max_solves > 0, "max_solves", "must be > 0");
}

}  // namespace detail

/// One λ per layer, each pruning `target` of that layer's heads as counted by
/// `count_pruned` (default: the seed's rule). The games' own λ are where each
/// search starts.
template <typename Scalar, typename Solver = active_set_newton<Scalar>, typename Counter = seed_rule_counter>
[[nodiscard]] std::vector<lambda_search_result<Scalar>> search_lambda_per_layer(
    std::span<const nash_game<Scalar>> layers, prune_target target,
    const lambda_search_options<Scalar>& options = {}, const Solver& solver = Solver(),
    const Counter& count_pruned = Counter()) {
  detail::validate_lambda_search(layers, options);
  std::vector<lambda_search_result<Scalar>> out;
  for (std::size_t l = 0; l < layers.size(); ++l) {
    const std::int64_t requested = target.heads_of(layers[l].size());
    out.push_back(detail::search_scope(layers.subspan(l, 1), l, requested, options, solver, count_pruned));
  }
  return out;
}

/// One λ shared by every layer, pruning `target` of all heads together as
/// counted by `count_pruned` (default: the seed's rule). The first game's λ is
/// where the search starts.
template <typename Scalar, typename Solver = active_set_newton<Scalar>, typename Counter = seed_rule_counter>
[[nodiscard]] lambda_search_result<Scalar> search_lambda_over_layers(
    std::span<const nash_game<Scalar>> layers, prune_target target,
    const lambda_search_options<Scalar>& options = {}, const Solver& solver = Solver(),
    const Counter& count_pruned = Counter()) {
  detail::validate_lambda_search(layers, options);
  std::int64_t total = 0;
  for (const auto& layer : layers) total += layer.size();
  return detail::search_scope(layers, 0, target.heads_of(total), options, solver, count_pruned);
}

NASHPRUNE_END_NAMESPACE
