// nashprune/loss_interaction.hpp — choosing units (query heads, GQA groups) to
// remove by a second-order model of the LOSS measured by ablation, with pairwise
// interactions across layers: the Nash game of output_perturbation.hpp with a
// general, indefinite quadratic, a price search for the target count and the
// exact optimum by enumeration as the reference.
//
// Seed: nash-head-pruning-llama-cpp.md §1.2–1.3 (the game), §4.4 (decisions);
// the losses come from ablation on calibration text (L0 intact, L_i with unit i
// removed, L_ij with units i and j removed).
// With binary removal z ∈ {0,1}ⁿ and the measured losses,
//     δ_i  = L_i − L0                  (unit i removed alone)
//     I_ij = L_ij − L_i − L_j + L0     (i ≠ j; I symmetric, zero diagonal)
// the loss after removing the set z is modelled as
//     C(z) = δᵀz + ½·zᵀIz              (exact for |z| ≤ 2 by construction).
// The output-perturbation energy E(S) = 1_SᵀP1_S is the special case δ = diag(P),
// I = 2·offdiag(P). In participation s = 1 − z, minimising C + μ·1ᵀs (each kept
// unit costs the price μ) is maximising the potential
//     Φ(s) = (δ + I·1 − μ)ᵀs − ½·sᵀIs.
// I is indefinite in general. On binary points s_i² = s_i, so adding a diagonal D
// to the quadratic and D/2 to the linear term,
//     Φ_D(s) = (δ + I·1 + D/2 − μ)ᵀs − ½·sᵀ(I + D)s,
// leaves Φ unchanged on every binary point while I + D ⪰ 0 makes the game
// concave: D = (max(0, −λ_min(I)) + ε)·𝟙 by default (ε a tiny fraction of the
// scale, so every r_ii > 0), or any caller-chosen D ≥ 0. In nash_game terms:
// c = δ + I·1 + D/2 − μ, r_ij = I_ij, r_ii = D_ii/2, λ = 1. With δ = diag(P),
// I = 2·offdiag(P) and D = 2·diag(P) this is exactly twice the game of
// make_perturbation_game at price μ/2 (same equilibria).
//
// Iterative (re-linearised) use: with a set R removed already and the model
// measured on the network without R (L0 = L(R)), search_loss_price's
// `removed_already` pins s_i = 0 for i ∈ R (their terms drop out of Φ) and the
// rounding takes them first, so higher-order effects of R enter through the
// re-measured δ and I rather than through the quadratic.
//
// The exact reference (exact_loss_choice) enumerates one option per slot (e.g.
// per layer: nothing, or one admissible GQA-consistent removal set) with the
// requested total size; cross-layer interactions rule out a per-layer dynamic
// programme, so the enumeration is bounded by `max_candidates` (it throws above it).
#pragma once

#include <Eigen/Core>
#include <Eigen/Eigenvalues>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "config.hpp"
#include "detail/validate.hpp"
#include "output_perturbation.hpp"

NASHPRUNE_BEGIN_NAMESPACE

namespace detail {

/// δ finite; I square n×n, finite, symmetric (to 1e-9 of its largest entry), zero diagonal.
template <typename DeltaDerived, typename InteractionDerived>
void validate_loss_model(const Eigen::MatrixBase<DeltaDerived>& delta, const Eigen::MatrixBase<InteractionDerived>& interaction) {
  using Scalar = typename DeltaDerived::Scalar;
  require(delta.size() > 0, "delta", "is empty");
  require_finite("delta", delta);
  require_size("interaction", interaction.rows(), delta.size(), "row count");
  require_size("interaction", interaction.cols(), delta.size(), "column count");
  require_finite("interaction", interaction);
  const Scalar scale = interaction.cwiseAbs().maxCoeff();
  for (Eigen::Index i = 0; i < interaction.rows(); ++i) {
    if (interaction(i, i) != 0) fail_domain("interaction", "diagonal must be 0, got " + describe_value(interaction(i, i)) + " at " + at_entry(i, i));
    for (Eigen::Index j = i + 1; j < interaction.cols(); ++j) {
      if (std::abs(interaction(i, j) - interaction(j, i)) > Scalar(1e-9) * scale) {
        fail_domain("interaction", "not symmetric: " + describe_value(interaction(i, j)) + " vs " + describe_value(interaction(j, i)) + " at " + at_entry(i, j));
      }
    }
  }
}

}  // namespace detail

/// C(S) = Σ_{i∈S} δ_i + Σ_{i<j∈S} I_ij. Throws std::invalid_argument for an
/// out-of-range or repeated index, as validate_loss_model for a bad model.
template <typename DeltaDerived, typename InteractionDerived, typename Scalar = typename DeltaDerived::Scalar>
[[nodiscard]] Scalar removal_loss(const Eigen::MatrixBase<DeltaDerived>& delta, const Eigen::MatrixBase<InteractionDerived>& interaction,
                                  std::span<const std::int64_t> removed) {
  detail::validate_loss_model(delta, interaction);
  std::vector<bool> seen(static_cast<std::size_t>(delta.size()), false);
  for (std::size_t k = 0; k < removed.size(); ++k) {
    const auto u = removed[k];
    const auto at = detail::at_index(static_cast<std::int64_t>(k));
    if (u < 0 || u >= delta.size()) detail::fail_argument("removed", "unit " + std::to_string(u) + " out of range [0, " + std::to_string(delta.size()) + ") at " + at);
    if (seen[static_cast<std::size_t>(u)]) detail::fail_argument("removed", "unit " + std::to_string(u) + " repeated at " + at);
    seen[static_cast<std::size_t>(u)] = true;
  }
  Scalar loss = 0;
  for (std::size_t a = 0; a < removed.size(); ++a) {
    loss += delta(removed[a]);
    for (std::size_t b = a + 1; b < removed.size(); ++b) loss += interaction(removed[a], removed[b]);
  }
  return loss;
}

/// The default concavifying diagonal: (max(0, −λ_min(I)) + ε)·𝟙 with ε = 1e-9 of
/// max(‖I‖_max, max|δ|, 1e-300), so I + D is positive definite.
template <typename DeltaDerived, typename InteractionDerived, typename Scalar = typename DeltaDerived::Scalar>
[[nodiscard]] nash_vector<Scalar> concave_shift(const Eigen::MatrixBase<DeltaDerived>& delta, const Eigen::MatrixBase<InteractionDerived>& interaction) {
  detail::validate_loss_model(delta, interaction);
  const nash_matrix<Scalar> sym = (interaction + interaction.transpose()) / Scalar(2);
  const Eigen::SelfAdjointEigenSolver<nash_matrix<Scalar>> eig(sym, Eigen::EigenvaluesOnly);
  const Scalar scale = std::max({sym.cwiseAbs().maxCoeff(), delta.cwiseAbs().maxCoeff(), std::numeric_limits<Scalar>::min()});
  const Scalar shift = std::max(Scalar(0), -eig.eigenvalues().minCoeff()) * (1 + Scalar(1e-6)) + Scalar(1e-6) * scale;
  return nash_vector<Scalar>::Constant(delta.size(), shift);
}

/// The loss game at price μ ≥ 0 with diagonal D (default concave_shift); see the
/// header. Throws std::domain_error for a negative or non-finite price or D, a
/// bad model (validate_loss_model), std::invalid_argument for a D of the wrong size.
template <typename DeltaDerived, typename InteractionDerived, typename Scalar = typename DeltaDerived::Scalar>
[[nodiscard]] perturbation_game<Scalar> make_loss_game(const Eigen::MatrixBase<DeltaDerived>& delta,
                                                       const Eigen::MatrixBase<InteractionDerived>& interaction, Scalar price,
                                                       const std::type_identity_t<std::optional<nash_vector<Scalar>>>& shift = std::nullopt) {
  detail::validate_loss_model(delta, interaction);
  if (!(std::isfinite(price) && price >= 0)) detail::fail_domain("price", "must be finite and >= 0, got " + detail::describe_value(price));
  const nash_vector<Scalar> d = shift ? *shift : concave_shift(delta, interaction);
  detail::require_size("shift", d.size(), delta.size());
  detail::require_finite("shift", d);
  for (Eigen::Index i = 0; i < d.size(); ++i)
    if (!(d(i) > 0)) detail::fail_domain("shift", "must be > 0, got " + detail::describe_value(d(i)) + " at " + detail::at_index(i));
  perturbation_game<Scalar> out;
  out.redundancy = (interaction + interaction.transpose()) / Scalar(2);
  out.importance = delta + out.redundancy.rowwise().sum() + d / Scalar(2);
  out.importance.array() -= price;
  out.redundancy.diagonal() = d / Scalar(2);
  return out;
}

/// One slot of the exact enumeration: alternative removal sets (unit indices), one
/// of which is taken (include the empty set to allow taking nothing).
using loss_slot = std::vector<std::vector<std::int64_t>>;

template <typename Scalar>
struct exact_loss_result {
  std::vector<std::size_t> choice;  ///< per slot, the index of the option taken
  std::vector<std::int64_t> removed;  ///< the union, ascending
  Scalar loss = std::numeric_limits<Scalar>::infinity();  ///< C(removed); +inf when no choice has the size
  std::int64_t candidates = 0;      ///< complete choices evaluated
};

/// Minimises C over one option per slot with Σ |option| == `size` (ties: the
/// first in lexicographic order of option indices), by depth-first enumeration
/// with the cost updated incrementally. Throws std::invalid_argument for an empty
/// slot list or slot, an out-of-range or repeated unit (across slots too), a
/// negative size, or more than `max_candidates` complete choices.
template <typename DeltaDerived, typename InteractionDerived, typename Scalar = typename DeltaDerived::Scalar>
[[nodiscard]] exact_loss_result<Scalar> exact_loss_choice(const Eigen::MatrixBase<DeltaDerived>& delta,
                                                          const Eigen::MatrixBase<InteractionDerived>& interaction,
                                                          std::span<const loss_slot> slots, std::int64_t size,
                                                          std::int64_t max_candidates = std::int64_t{1} << 24) {
  detail::validate_loss_model(delta, interaction);
  detail::require(!slots.empty(), "slots", "is empty");
  detail::require(size >= 0, "size", "must be >= 0, got " + std::to_string(size));
  std::vector<bool> seen(static_cast<std::size_t>(delta.size()), false);
  // most[k]: the largest size slots k.. can still add (prunes hopeless branches).
  std::vector<std::int64_t> most(slots.size() + 1, 0);
  double complete = 1;
  for (std::size_t k = slots.size(); k-- > 0;) {
    const std::string name = "slots[" + std::to_string(k) + "]";
    detail::require(!slots[k].empty(), name, "is empty");
    std::int64_t largest = 0;
    std::vector<bool> in_slot(static_cast<std::size_t>(delta.size()), false);
    for (std::size_t o = 0; o < slots[k].size(); ++o) {
      std::vector<bool> in_option(static_cast<std::size_t>(delta.size()), false);
      for (const auto u : slots[k][o]) {
        const auto at = detail::at_index(static_cast<std::int64_t>(o));
        if (u < 0 || u >= delta.size()) detail::fail_argument(name, "unit " + std::to_string(u) + " out of range at option " + at);
        if (in_option[static_cast<std::size_t>(u)] || seen[static_cast<std::size_t>(u)]) {
          detail::fail_argument(name, "unit " + std::to_string(u) + " repeated at option " + at);
        }
        in_option[static_cast<std::size_t>(u)] = in_slot[static_cast<std::size_t>(u)] = true;
      }
      largest = std::max(largest, static_cast<std::int64_t>(slots[k][o].size()));
    }
    for (std::size_t u = 0; u < in_slot.size(); ++u) seen[u] = seen[u] || in_slot[u];
    most[k] = most[k + 1] + largest;
    complete *= static_cast<double>(slots[k].size());
  }
  if (complete > static_cast<double>(max_candidates)) {
    detail::fail_argument("max_candidates", "the enumeration may need " + detail::describe_value(complete) + " choices, more than " + std::to_string(max_candidates));
  }
  exact_loss_result<Scalar> best;
  std::vector<std::size_t> choice(slots.size(), 0);
  std::vector<std::int64_t> chosen;
  const auto visit = [&](auto&& self, std::size_t k, std::int64_t left, Scalar loss) -> void {
    if (k == slots.size()) {
      if (left != 0) return;
      ++best.candidates;
      if (loss < best.loss) best.loss = loss, best.choice = choice, best.removed = chosen;
      return;
    }
    if (left > most[k]) return;
    for (std::size_t o = 0; o < slots[k].size(); ++o) {
      const auto& option = slots[k][o];
      if (static_cast<std::int64_t>(option.size()) > left) continue;
      Scalar added = 0;
      for (std::size_t a = 0; a < option.size(); ++a) {
        added += delta(option[a]);
        for (std::size_t b = a + 1; b < option.size(); ++b) added += interaction(option[a], option[b]);
        for (const auto z : chosen) added += interaction(option[a], z);
      }
      choice[k] = o;
      chosen.insert(chosen.end(), option.begin(), option.end());
      self(self, k + 1, left - static_cast<std::int64_t>(option.size()), loss + added);
      chosen.resize(chosen.size() - option.size());
    }
  };
  visit(visit, 0, size, Scalar(0));
  std::sort(best.removed.begin(), best.removed.end());
  return best;
}

/// Units of one layer in the global loss game: the layer's query heads are units
/// [first, first + geometry.n_head()).
struct loss_layer {
  std::int64_t first = 0;
  attention_geometry geometry;
  head_granularity granularity = head_granularity::single_heads;
};

template <typename Scalar>
struct loss_search_result {
  Scalar price = 0;
  std::int64_t requested = 0;
  std::int64_t removed = 0;  ///< units the plans remove at `price`
  bool reached = false;
  std::int64_t solves = 0;
  nash_solution<Scalar> equilibrium;  ///< of the one game over all units (not removed already)
  std::vector<head_keep_plan> plans;  ///< per layer, GQA-consistent
};

/// The price μ whose equilibrium's GQA-consistent plans remove the most units
/// ≤ `requested` (one game over every unit, so cross-layer interactions count),
/// by bisection on μ ∈ [0, max_i c_i(μ=0)] as search_price does for per-layer games.
///
/// `removed_already` (the conditional, re-linearised step of an iterative plan):
/// units removed before this round. The model (δ, I) is then the one measured
/// with them removed (L0 = L(R); their own entries are ignored), they take no part
/// in the game (s_i = 0 pinned) and rank below every other unit in the rounding,
/// so every plan removes them; `requested` and `removed` count them too, and
/// `equilibrium` is the game over the other units, in ascending order. Throws
/// std::invalid_argument for an out-of-range or repeated unit, for every unit
/// removed already, or for `requested` below their count.
template <typename DeltaDerived, typename InteractionDerived, typename Scalar = typename DeltaDerived::Scalar,
          typename Solver = active_set_newton<Scalar>>
[[nodiscard]] loss_search_result<Scalar> search_loss_price(const Eigen::MatrixBase<DeltaDerived>& delta,
                                                           const Eigen::MatrixBase<InteractionDerived>& interaction,
                                                           std::span<const loss_layer> layers, std::int64_t requested,
                                                           const price_search_options<Scalar>& options = {}, const Solver& solver = Solver(),
                                                           std::span<const std::int64_t> removed_already = {}) {
  detail::validate_loss_model(delta, interaction);
  detail::require(!layers.empty(), "layers", "is empty");
  detail::require(requested >= 0, "requested", "must be >= 0, got " + std::to_string(requested));
  detail::require(options.max_solves > 1, "max_solves", "must be > 1");
  validate_decision_options(options.decisions);
  std::int64_t next = 0;
  for (std::size_t l = 0; l < layers.size(); ++l) {
    detail::require(layers[l].first == next, "layers[" + std::to_string(l) + "].first", "must be " + std::to_string(next) + " (layers tile the units in order)");
    next += layers[l].geometry.n_head();
  }
  detail::require_size("delta", delta.size(), next, "size (units of all layers)");
  std::vector<bool> pinned(static_cast<std::size_t>(next), false);
  for (std::size_t k = 0; k < removed_already.size(); ++k) {
    const auto u = removed_already[k];
    const auto at = detail::at_index(static_cast<std::int64_t>(k));
    if (u < 0 || u >= next) detail::fail_argument("removed_already", "unit " + std::to_string(u) + " out of range [0, " + std::to_string(next) + ") at " + at);
    if (pinned[static_cast<std::size_t>(u)]) detail::fail_argument("removed_already", "unit " + std::to_string(u) + " repeated at " + at);
    pinned[static_cast<std::size_t>(u)] = true;
  }
  const auto fixed = static_cast<std::int64_t>(removed_already.size());
  detail::require(fixed < next, "removed_already", "holds every unit: nothing is left to choose");
  detail::require(requested >= fixed, "requested", "must be >= the " + std::to_string(fixed) + " units removed already, got " + std::to_string(requested));
  // The game over the free units only (a pinned s_i = 0 drops unit i's terms).
  std::vector<Eigen::Index> free;
  for (Eigen::Index i = 0; i < next; ++i)
    if (!pinned[static_cast<std::size_t>(i)]) free.push_back(i);
  const auto m = static_cast<Eigen::Index>(free.size());
  nash_vector<Scalar> free_delta(m);
  nash_matrix<Scalar> free_interaction(m, m);
  for (Eigen::Index a = 0; a < m; ++a) {
    free_delta(a) = delta(free[static_cast<std::size_t>(a)]);
    for (Eigen::Index b = 0; b < m; ++b) free_interaction(a, b) = interaction(free[static_cast<std::size_t>(a)], free[static_cast<std::size_t>(b)]);
  }
  const nash_vector<Scalar> shift = concave_shift(free_delta, free_interaction);
  const Scalar top = make_loss_game(free_delta, free_interaction, Scalar(0), shift).importance.maxCoeff();
  const auto evaluate = [&](Scalar price, const loss_search_result<Scalar>* warm) {
    loss_search_result<Scalar> r;
    r.price = price;
    r.requested = requested;
    const auto g = make_loss_game(free_delta, free_interaction, price, shift);
    r.equilibrium = warm ? solver.solve(g.game(), warm->equilibrium.s) : solver.solve(g.game());
    const nash_vector<Scalar> free_scores = rounding_scores(g.game(), r.equilibrium.s);
    // Pinned units score below every free one (scores are finite), so the rounding takes them first.
    nash_vector<Scalar> scores = nash_vector<Scalar>::Constant(next, free_scores.minCoeff() - 1);
    for (Eigen::Index a = 0; a < m; ++a) scores(free[static_cast<std::size_t>(a)]) = free_scores(a);
    for (const auto& layer : layers) {
      const auto n = layer.geometry.n_head();
      r.plans.push_back(gqa_prune_plan(layer.geometry, layer.granularity, scores.segment(layer.first, n), options.decisions));
      r.removed += n - static_cast<std::int64_t>(r.plans.back().q_heads.size());
    }
    r.reached = r.removed == requested;
    return r;
  };
  return detail::search_price_count<loss_search_result<Scalar>>(std::max(top, Scalar(0)), requested, options.max_solves, evaluate, options.lowest_price);
}

NASHPRUNE_END_NAMESPACE
