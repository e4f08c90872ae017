// nashprune/output_perturbation.hpp — choosing attention heads to remove by the
// energy of the change their removal makes to the attention output: the Nash
// head game of nash_game.hpp with incentives and redundancy measured in the
// residual stream, a price search for the target count, and the exact optimum
// by enumeration as the reference.
//
// Seed: nash-head-pruning-llama-cpp.md §1.2–1.3 (the game), §4.1–4.2 (measured
// redundancy), §4.4 (decisions). Head i's output x_i(t) lives in its own value
// coordinates; what the model sees is its contribution to the residual stream,
// y_i(t) = W_o[:, head i]·x_i(t). With the projected Gram
//     P_ij = Σ_t <y_i(t), y_j(t)>                       (n × n, positive semidefinite)
// removing a set S changes the attention output by Σ_{i∈S} y_i, of energy
//     E(S) = 1_Sᵀ P 1_S                                 (interactions included).
// With participation s ∈ [0,1]ⁿ (removal 1 − s), E(s) = (1 − s)ᵀP(1 − s), and
// minimising ½E(s) + μ·1ᵀs (each kept head costs a price μ) is maximising
//     Φ(s) = (P·1 − μ)ᵀs − ½·sᵀPs                        (+ a constant),
// the potential of the Nash game with c_i = (P·1)_i − μ (head i's covariance with
// the whole attention output, minus the price), M = P, i.e. r_ij = P_ij (i ≠ j),
// r_ii = P_ii/2 and λ = 1: each head is paid for what it contributes and taxed for
// what the others already contribute. P ⪰ 0 makes Φ concave; a dead head (P_ii = 0)
// gets r_ii floored at a tiny fraction of the largest diagonal so the game stays
// strictly concave in its own strategy (its c_i = −μ ≤ 0 sends it to 0 anyway).
// Several layers share one μ when each layer's P is expressed in the same unit
// (e.g. divided by the energy of the residual stream entering the layer): the
// search raises μ until the GQA-consistent plans (nash_decisions.hpp) of the
// equilibria remove the requested number of heads; heads the equilibrium sets to 0
// are ordered by how strongly the bound holds them (rounding_scores). μ = 0 keeps every head with
// P·1 ≥ 0 in play; μ > max_i (P·1)_i makes s = 0 the equilibrium.
//
// The exact reference: per layer, the GQA-consistent removal set of each size
// with the least E(S) by enumeration (exact_best_removal), and the allocation of
// sizes over layers minimising Σ_l E_l by dynamic programming (exact_allocation).
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "attention_geometry.hpp"
#include "config.hpp"
#include "count_search.hpp"
#include "detail/validate.hpp"
#include "nash_decisions.hpp"
#include "nash_game.hpp"
#include "nash_solvers.hpp"

NASHPRUNE_BEGIN_NAMESPACE

namespace detail {

/// P must be square, finite, with a nonnegative diagonal (a Gram matrix).
template <typename Derived>
void validate_output_gram(const Eigen::MatrixBase<Derived>& gram, const std::string& name) {
  require(gram.rows() > 0, name, "is empty");
  require_size(name, gram.cols(), gram.rows(), "column count");
  require_finite(name, gram);
  for (Eigen::Index i = 0; i < gram.rows(); ++i) {
    if (gram(i, i) < 0) fail_domain(name, "diagonal must be >= 0, got " + describe_value(gram(i, i)) + " at " + at_entry(i, i));
  }
}

}  // namespace detail

/// The output-perturbation game of one layer, owning c and R (see the header).
template <typename Scalar>
struct perturbation_game {
  nash_vector<Scalar> importance;  ///< c = P·1 − μ
  nash_matrix<Scalar> redundancy;  ///< R: r_ij = P_ij, r_ii = P_ii/2 (floored)

  /// The game view (λ = 1); valid while this object lives and is not modified.
  [[nodiscard]] nash_game<Scalar> game() const { return make_nash_game(importance, redundancy, Scalar(1)); }
};

/// Builds the game of P at price μ ≥ 0. Throws std::invalid_argument for a
/// non-square or empty P, std::domain_error for non-finite values, a negative
/// diagonal or a negative or non-finite price.
template <typename Derived, typename Scalar = typename Derived::Scalar>
[[nodiscard]] perturbation_game<Scalar> make_perturbation_game(const Eigen::MatrixBase<Derived>& gram, Scalar price) {
  detail::validate_output_gram(gram, "gram");
  if (!(std::isfinite(price) && price >= 0)) detail::fail_domain("price", "must be finite and >= 0, got " + detail::describe_value(price));
  perturbation_game<Scalar> out;
  // Symmetrised, so a P accumulated in floating point is exactly symmetric.
  out.redundancy = (gram + gram.transpose()) / Scalar(2);
  out.importance = out.redundancy.rowwise().sum().array() - price;
  const Scalar largest = out.redundancy.diagonal().maxCoeff();
  const Scalar floor = largest > 0 ? largest * Scalar(64) * std::numeric_limits<Scalar>::epsilon() : Scalar(1);
  for (Eigen::Index i = 0; i < gram.rows(); ++i) out.redundancy(i, i) = std::max(out.redundancy(i, i) / Scalar(2), floor);
  return out;
}

/// E(S) = 1_Sᵀ P 1_S: the energy of the change removing `removed` makes to the
/// attention output. Throws std::invalid_argument for an out-of-range or repeated index.
template <typename Derived, typename Scalar = typename Derived::Scalar>
[[nodiscard]] Scalar removal_energy(const Eigen::MatrixBase<Derived>& gram, std::span<const std::int64_t> removed) {
  detail::validate_output_gram(gram, "gram");
  std::vector<bool> seen(static_cast<std::size_t>(gram.rows()), false);
  for (std::size_t k = 0; k < removed.size(); ++k) {
    const auto h = removed[k];
    if (h < 0 || h >= gram.rows()) {
      detail::fail_argument("removed", "head " + std::to_string(h) + " out of range [0, " + std::to_string(gram.rows()) + ") at " +
                                           detail::at_index(static_cast<std::int64_t>(k)));
    }
    if (seen[static_cast<std::size_t>(h)]) {
      detail::fail_argument("removed", "head " + std::to_string(h) + " repeated at " + detail::at_index(static_cast<std::int64_t>(k)));
    }
    seen[static_cast<std::size_t>(h)] = true;
  }
  Scalar energy = 0;
  for (const auto i : removed)
    for (const auto j : removed) energy += gram(i, j);
  return energy;
}

/// The least-energy GQA-consistent removal set of a given size.
template <typename Scalar>
struct exact_removal {
  std::vector<std::int64_t> removed;  ///< query heads, ascending
  Scalar energy = 0;                  ///< E(removed)
  std::int64_t candidates = 0;        ///< sets enumerated
};

/// Enumerates every removal of `q_heads_to_remove` query heads that `granularity`
/// allows on `geometry` (whole kv groups; the same count from every group; any
/// heads) and returns one of least E(S) (ties: the first in lexicographic order).
/// Throws std::invalid_argument when the count is not removable at that
/// granularity or the sets number more than `max_candidates`.
template <typename Derived, typename Scalar = typename Derived::Scalar>
[[nodiscard]] exact_removal<Scalar> exact_best_removal(const Eigen::MatrixBase<Derived>& gram, const attention_geometry& geometry,
                                                       head_granularity granularity, std::int64_t q_heads_to_remove,
                                                       std::int64_t max_candidates = std::int64_t{1} << 22) {
  detail::validate_output_gram(gram, "gram");
  detail::require_size("gram", gram.rows(), geometry.n_head(), "row count");
  const double sets = geometry.removal_set_count(granularity, q_heads_to_remove);
  if (sets > static_cast<double>(max_candidates)) {
    detail::fail_argument("max_candidates", "the enumeration needs " + detail::describe_value(sets) + " sets, more than " + std::to_string(max_candidates));
  }
  exact_removal<Scalar> best;
  best.energy = std::numeric_limits<Scalar>::infinity();
  geometry.for_each_removal(granularity, q_heads_to_remove, max_candidates, [&](const std::vector<std::int64_t>& removed) {
    ++best.candidates;
    Scalar energy = 0;
    for (const auto i : removed)
      for (const auto j : removed) energy += gram(i, j);
    if (energy < best.energy) best.energy = energy, best.removed = removed;
  });
  std::sort(best.removed.begin(), best.removed.end());
  return best;
}

/// One layer's choices for exact_allocation: removing removed[k] heads costs energy[k].
template <typename Scalar>
struct allocation_choices {
  std::vector<std::int64_t> removed;
  std::vector<Scalar> energy;
};

template <typename Scalar>
struct allocation_result {
  std::vector<std::size_t> choice;  ///< per layer, the index into its choices
  std::int64_t removed = 0;         ///< heads removed in total
  Scalar energy = 0;                ///< Σ energy of the choices
  bool reached = false;             ///< removed == requested
};

/// The allocation of one choice per layer minimising Σ energy among those removing
/// the most heads ≤ `requested` (a budget, as in global_selection.hpp; the fewest
/// heads possible when every allocation exceeds it), by dynamic programming over
/// the running head count.
/// Throws std::invalid_argument for an empty layer list, a layer without
/// choices, mismatched lists or negative counts; std::domain_error for non-finite energies.
template <typename Scalar>
[[nodiscard]] allocation_result<Scalar> exact_allocation(std::span<const allocation_choices<Scalar>> layers, std::int64_t requested) {
  detail::require(!layers.empty(), "layers", "is empty");
  std::int64_t most = 0;
  for (std::size_t l = 0; l < layers.size(); ++l) {
    const auto& c = layers[l];
    const std::string name = "layers[" + std::to_string(l) + "]";
    detail::require(!c.removed.empty(), name + ".removed", "is empty");
    detail::require_size(name + ".energy", static_cast<std::int64_t>(c.energy.size()), static_cast<std::int64_t>(c.removed.size()));
    std::int64_t layer_most = 0;
    for (std::size_t k = 0; k < c.removed.size(); ++k) {
      if (c.removed[k] < 0) detail::fail_argument(name + ".removed", "must be >= 0 at " + detail::at_index(static_cast<std::int64_t>(k)));
      if (!std::isfinite(c.energy[k])) detail::fail_domain(name + ".energy", "must be finite at " + detail::at_index(static_cast<std::int64_t>(k)));
      layer_most = std::max(layer_most, c.removed[k]);
    }
    most += layer_most;
  }
  const auto width = static_cast<std::size_t>(most + 1);
  const Scalar inf = std::numeric_limits<Scalar>::infinity();
  // best[l][r]: least energy of layers < l removing r heads; from[l][r]: the choice of layer l − 1.
  std::vector<std::vector<Scalar>> best(layers.size() + 1, std::vector<Scalar>(width, inf));
  std::vector<std::vector<std::size_t>> from(layers.size() + 1, std::vector<std::size_t>(width, 0));
  best[0][0] = 0;
  for (std::size_t l = 0; l < layers.size(); ++l) {
    for (std::size_t r = 0; r < width; ++r) {
      if (best[l][r] == inf) continue;
      for (std::size_t k = 0; k < layers[l].removed.size(); ++k) {
        const auto to = r + static_cast<std::size_t>(layers[l].removed[k]);
        const Scalar e = best[l][r] + layers[l].energy[k];
        if (to < width && e < best[l + 1][to]) best[l + 1][to] = e, from[l + 1][to] = k;
      }
    }
  }
  std::size_t total = width;
  for (std::size_t r = static_cast<std::size_t>(std::clamp<std::int64_t>(requested, 0, most)) + 1; r-- > 0 && total == width;)
    if (best[layers.size()][r] < inf) total = r;
  for (std::size_t r = 0; r < width && total == width; ++r)
    if (best[layers.size()][r] < inf) total = r;
  allocation_result<Scalar> out;
  out.removed = static_cast<std::int64_t>(total);
  out.energy = best[layers.size()][total];
  out.reached = out.removed == requested;
  out.choice.assign(layers.size(), 0);
  for (std::size_t l = layers.size(), r = total; l-- > 0;) {
    out.choice[l] = from[l + 1][r];
    r -= static_cast<std::size_t>(layers[l].removed[out.choice[l]]);
  }
  return out;
}

/// The order in which the rounding drops heads: participation s_i, and for the
/// heads at s_i = 0 the potential's gradient g_i ≤ 0 (how hard the bound holds
/// them: at a high price many heads sit at 0, and their KKT multipliers, not their
/// indices, say which the game wants out most).
template <typename Scalar>
[[nodiscard]] nash_vector<Scalar> rounding_scores(const nash_game<Scalar>& game, const nash_vector<Scalar>& s) {
  const nash_vector<Scalar> gradient = nash_potential_gradient(game, s);
  nash_vector<Scalar> scores = s;
  for (Eigen::Index i = 0; i < s.size(); ++i)
    if (s[i] <= 0) scores[i] = std::min(gradient[i], Scalar(0));
  return scores;
}

/// One layer of a price search: its (commonly scaled) P and how it may be cut.
template <typename Scalar>
struct perturbation_layer {
  nash_matrix<Scalar> gram;
  attention_geometry geometry;
  head_granularity granularity = head_granularity::single_heads;
};

template <typename Scalar>
struct price_search_options {
  nash_decision_options<Scalar> decisions{};  ///< threshold and caps of the GQA rounding
  std::int64_t max_solves = 200;              ///< price evaluations (of every layer) at most
  /// Bisect on to the lowest price whose plans reach the count (to 1e-9 relative) instead of
  /// stopping at the first that does: the equilibrium with the most units still in play. Without
  /// it a target every layer's caps bind at (stories260K at 50 %) stops at the top price, where
  /// every s_i = 0 and the rounding ranks by the gradient there alone.
  bool lowest_price = false;
};

template <typename Scalar>
struct price_search_result {
  Scalar price = 0;
  std::int64_t requested = 0;
  std::int64_t removed = 0;                       ///< heads the plans remove at `price`
  bool reached = false;                           ///< removed == requested
  std::int64_t solves = 0;
  std::vector<nash_solution<Scalar>> equilibria;  ///< per layer
  std::vector<head_keep_plan> plans;              ///< per layer, GQA-consistent
};

namespace detail {

/// The price search of search_price and search_loss_price (count_search.hpp): μ from
/// 0 up to just above `top` (where s = 0 is the equilibrium) on a linear scale, for
/// the most units <= requested. `evaluate(price, warm)` returns a result with fields
/// price, removed and solves (`warm`: the result at a lower price, or null).
template <typename Result, typename Scalar, typename Evaluate>
[[nodiscard]] Result search_price_count(Scalar top, std::int64_t requested, std::int64_t max_solves, const Evaluate& evaluate,
                                        bool lowest) {
  count_search_options<Scalar> search;
  search.low = Scalar(0);
  search.high = top * Scalar(1.000001) + std::numeric_limits<Scalar>::min();
  search.scale = search_scale::linear;
  search.goal = count_goal::at_most;
  search.max_evaluations = max_solves;
  search.lowest = lowest;
  auto found = search_count(requested, search, evaluate, [](const Result& r) { return r.removed; });
  Result best = std::move(found.best().point);
  best.solves = found.evaluations;
  return best;
}

}  // namespace detail

/// The price μ whose equilibria's GQA-consistent plans remove the most heads
/// ≤ `requested` over all layers (a budget, as in global_selection.hpp), by the
/// count search of count_search.hpp bisecting on μ ∈ [0, max_l max_i (P_l·1)_i] (to a relative 1e-9) for the
/// boundary where the count reaches `requested`; each solve starts from the
/// equilibria at the price below. When the plans' counts step over `requested`
/// (GQA steps), the price just below the step is returned. The count need not be
/// monotone in μ in every game: the result reports what it reached.
template <typename Scalar, typename Solver = active_set_newton<Scalar>>
[[nodiscard]] price_search_result<Scalar> search_price(std::span<const perturbation_layer<Scalar>> layers, std::int64_t requested,
                                                       const price_search_options<Scalar>& options = {},
                                                       const Solver& solver = Solver()) {
  detail::require(!layers.empty(), "layers", "is empty");
  detail::require(requested >= 0, "requested", "must be >= 0, got " + std::to_string(requested));
  detail::require(options.max_solves > 1, "max_solves", "must be > 1");
  validate_decision_options(options.decisions);
  Scalar top = 0;
  for (std::size_t l = 0; l < layers.size(); ++l) {
    detail::validate_output_gram(layers[l].gram, "layers[" + std::to_string(l) + "].gram");
    detail::require_size("layers[" + std::to_string(l) + "].gram", layers[l].gram.rows(), layers[l].geometry.n_head(), "row count");
    top = std::max(top, ((layers[l].gram + layers[l].gram.transpose()) / Scalar(2)).rowwise().sum().maxCoeff());
  }
  const auto evaluate = [&](Scalar price, const price_search_result<Scalar>* warm) {
    price_search_result<Scalar> r;
    r.price = price;
    r.requested = requested;
    for (std::size_t l = 0; l < layers.size(); ++l) {
      const auto g = make_perturbation_game(layers[l].gram, price);
      r.equilibria.push_back(warm ? solver.solve(g.game(), warm->equilibria[l].s) : solver.solve(g.game()));
      r.plans.push_back(gqa_prune_plan(layers[l].geometry, layers[l].granularity, rounding_scores(g.game(), r.equilibria.back().s),
                                       options.decisions));
      r.removed += layers[l].geometry.n_head() - static_cast<std::int64_t>(r.plans.back().q_heads.size());
    }
    r.reached = r.removed == requested;
    return r;
  };
  return detail::search_price_count<price_search_result<Scalar>>(top, requested, options.max_solves, evaluate, options.lowest_price);
}

NASHPRUNE_END_NAMESPACE
