// nashprune/compensated_selection.hpp — choosing what to remove knowing that what
// stays will be refit (compensation.hpp): the Optimal Brain Surgeon cost of removing
// a set of input coordinates after the refit, per layer the GQA-consistent set of
// least cost at every count (exact by enumeration, or greedy in SlimGPT's way), and
// the allocation of counts over layers.
//
// Cost. For y = W x with H = E[x xᵀ], μ = E[x] and the centred moment C = H − μμᵀ, the
// refit of the kept columns plus a bias after removing S leaves (compensation.hpp)
//     E(S) = tr(W_S ((C_λ⁻¹)_SS)⁻¹ W_Sᵀ),   C_λ = C + λI,   λ = δ·mean(diag H),
// the OBS error in its Schur-complement form ((C_λ⁻¹)_SS)⁻¹ = C_λ,SS − C_SK C_λ,KK⁻¹ C_KS.
// The bias is handled by the centring: the constant input absorbs the mean, so only C
// enters. At δ = 0 (C nonsingular) E(S) is the refit's error exactly; with δ > 0 it is
// the error of the refit for the damped moment C_λ. λ uses the mean diagonal of the whole
// H (one inverse per layer) where compensate uses that of H_KK: the two refits differ by
// O(δ). When C_λ is numerically singular, λ is raised as in compensate and the cost says
// so (obs_cost::damping_raised). E is not additive: coordinates the kept ones can stand
// in for are cheap together, so a per-unit score cannot rank sets.
//
// Per layer (removal_curve): for each count, a removal set and its cost.
//   exact   every GQA-consistent set of that count (attention_geometry::for_each_removal)
//           when they number at most max_sets: the set of least E (ties: the first in
//           enumeration order).
//   greedy  otherwise, SlimGPT's sequential OBS. From the current S, with W' the refit
//           weights and P the inverse of the kept block C_λ,KK, unit u (a group, head or
//           channel: a block of coordinates) costs
//               ΔE(u) = tr(W'_u (P_uu)⁻¹ W'_uᵀ),
//           the least goes, and the block OBS step updates both,
//               W' ← W' − W'_u P_uu⁻¹ P_u:,   P ← P − P_:u P_uu⁻¹ P_u:,
//           which is exact: E(S ∪ u) = E(S) + ΔE(u). With batch b > 1 the b units of least
//           ΔE go in one step and the step charges their joint cost exactly (SlimGPT's
//           batched channel pruning). heads_per_group removes one head from every group per
//           round, one at a time by least ΔE among the groups not yet visited in the round.
//           The greedy sets are nested; the exact ones need not be.
// Across layers: exact_allocation (output_perturbation.hpp), dynamic programming over the
// per-layer curves minimising Σ_l scale_l·E_l among the allocations removing the most
// budget units ≤ the request (allocation_choices_of: count × unit size, e.g. parameters).
// Rounding: costs accumulate in Scalar; a tiny negative E from cancellation is clamped to 0.
#pragma once

#include <Eigen/Cholesky>
#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "attention_geometry.hpp"
#include "compensation.hpp"
#include "config.hpp"
#include "detail/validate.hpp"
#include "output_perturbation.hpp"

NASHPRUNE_BEGIN_NAMESPACE

/// E(S) for one map y = W x and its input moments (see the header): holds W and the
/// inverse of the damped centred moment.
template <typename Scalar>
class obs_cost {
 public:
  using matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;

  /// Throws as compensate does for bad W, H, μ, damping or moment_rounding (the
  /// options of compensation.hpp).
  template <typename DerivedW, typename DerivedH, typename DerivedMu>
  obs_cost(const Eigen::MatrixBase<DerivedW>& weight, const Eigen::MatrixBase<DerivedH>& second_moment,
           const Eigen::MatrixBase<DerivedMu>& mean, Scalar damping = Scalar(0.001), Scalar moment_rounding = Scalar(0)) {
    if (!(damping >= 0) || !std::isfinite(damping)) {
      detail::fail_domain("damping", "must be finite and >= 0, got " + detail::describe_value(damping));
    }
    matrix centred = detail::centred_moment(second_moment, mean, moment_rounding);
    detail::validate_weight(weight, second_moment.rows());
    weight_ = weight;
    const Eigen::Index n = centred.rows();
    const Scalar mean_diagonal = second_moment.diagonal().sum() / static_cast<Scalar>(n);
    const Scalar unit = mean_diagonal > 0 ? mean_diagonal : Scalar(1);
    damping_ = damping * unit;
    Eigen::LLT<matrix> llt;
    for (int attempt = 0;; ++attempt) {
      matrix damped = centred;
      damped.diagonal().array() += damping_;
      llt.compute(damped);
      if (detail::well_conditioned<Scalar>(llt, n)) break;
      if (attempt == 40) detail::fail_domain("second_moment", "stays singular under any damping");
      damping_raised_ = true;
      damping_ = std::max(damping_ * Scalar(10), Scalar(1e-6) * unit);
    }
    inverse_ = llt.solve(matrix::Identity(n, n));
    inverse_ = (inverse_ + inverse_.transpose()).eval() / Scalar(2);
  }

  /// E(S) for the coordinates `removed` (ascending, in range; empty: 0).
  [[nodiscard]] Scalar operator()(std::span<const std::int64_t> removed) const {
    validate_keep_list("removed", removed, width(), /*allow_empty=*/true);
    return block_cost(weight_, inverse_, removed);
  }

  [[nodiscard]] Eigen::Index width() const { return weight_.cols(); }
  [[nodiscard]] const matrix& weight() const { return weight_; }
  /// (C + λI)⁻¹.
  [[nodiscard]] const matrix& inverse() const { return inverse_; }
  /// λ (absolute).
  [[nodiscard]] Scalar damping() const { return damping_; }
  [[nodiscard]] bool damping_raised() const { return damping_raised_; }

  /// tr(W_B (P_BB)⁻¹ W_Bᵀ) for any W and P (the greedy's incremental cost too).
  [[nodiscard]] static Scalar block_cost(const matrix& weight, const matrix& inverse, std::span<const std::int64_t> block) {
    if (block.empty()) return Scalar(0);
    const matrix w = detail::columns_of(weight, block);
    const matrix p = detail::block_of(inverse, block, block);
    const Eigen::LDLT<matrix> ldlt(p);
    const Scalar cost = (ldlt.solve(w.transpose()).array() * w.transpose().array()).sum();
    return std::max(cost, Scalar(0));
  }

 private:
  matrix weight_;
  matrix inverse_;
  Scalar damping_ = 0;
  bool damping_raised_ = false;
};

template <typename DerivedW, typename DerivedH, typename DerivedMu>
obs_cost(const Eigen::MatrixBase<DerivedW>&, const Eigen::MatrixBase<DerivedH>&, const Eigen::MatrixBase<DerivedMu>&)
    -> obs_cost<typename DerivedW::Scalar>;

/// One layer's least-cost removal at each count.
template <typename Scalar>
struct removal_curve {
  std::vector<std::int64_t> count;                 ///< units removed (q heads or channels), ascending from 0
  std::vector<std::vector<std::int64_t>> removed;  ///< the units removed (q heads or channels), ascending
  std::vector<Scalar> cost;                        ///< E(removed)
  std::vector<char> exact;                         ///< 1: least over every set of that count; 0: greedy
};

namespace detail {

/// Sequential OBS over units (blocks of coordinates). pool_of[u] is the pool of unit u;
/// with pools > 1 a round removes one unit from every pool and the curve records whole
/// rounds; otherwise a step removes up to `batch` units. Stops after `max_units`.
template <typename Scalar>
[[nodiscard]] removal_curve<Scalar> greedy_obs_curve(const obs_cost<Scalar>& cost,
                                                     const std::vector<std::vector<std::int64_t>>& unit_coordinates,
                                                     const std::vector<std::vector<std::int64_t>>& unit_ids,
                                                     const std::vector<std::int64_t>& pool_of, std::int64_t pools,
                                                     std::int64_t max_units, std::int64_t batch) {
  using matrix = typename obs_cost<Scalar>::matrix;
  matrix refit = cost.weight();
  matrix inverse = cost.inverse();
  const auto units = static_cast<std::int64_t>(unit_coordinates.size());
  std::vector<char> gone(static_cast<std::size_t>(units), 0);
  removal_curve<Scalar> curve;
  curve.count.push_back(0);
  curve.removed.emplace_back();
  curve.cost.push_back(0);
  curve.exact.push_back(1);
  Scalar total = 0;
  std::vector<std::int64_t> removed_ids;
  std::int64_t removed_units = 0;
  const auto remove_block = [&](const std::vector<std::int64_t>& chosen) {
    std::vector<std::int64_t> block;
    for (const auto u : chosen) {
      block.insert(block.end(), unit_coordinates[static_cast<std::size_t>(u)].begin(), unit_coordinates[static_cast<std::size_t>(u)].end());
      removed_ids.insert(removed_ids.end(), unit_ids[static_cast<std::size_t>(u)].begin(), unit_ids[static_cast<std::size_t>(u)].end());
      gone[static_cast<std::size_t>(u)] = 1;
    }
    std::sort(block.begin(), block.end());
    total += obs_cost<Scalar>::block_cost(refit, inverse, block);
    const matrix p_bb = block_of(inverse, block, block);
    const Eigen::LDLT<matrix> ldlt(p_bb);
    matrix p_b_rows(static_cast<Eigen::Index>(block.size()), inverse.cols());  // P_B:
    for (std::size_t i = 0; i < block.size(); ++i) p_b_rows.row(static_cast<Eigen::Index>(i)) = inverse.row(block[i]);
    const matrix solved = ldlt.solve(p_b_rows);  // P_BB⁻¹ P_B:
    refit -= columns_of(refit, block) * solved;
    inverse -= p_b_rows.transpose() * solved;
    removed_units += static_cast<std::int64_t>(chosen.size());
  };
  const auto record = [&] {
    curve.count.push_back(static_cast<std::int64_t>(removed_ids.size()));
    std::vector<std::int64_t> sorted = removed_ids;
    std::sort(sorted.begin(), sorted.end());
    curve.removed.push_back(std::move(sorted));
    curve.cost.push_back(std::max(total, Scalar(0)));
    curve.exact.push_back(0);
  };
  const auto increment = [&](std::int64_t u) {
    return obs_cost<Scalar>::block_cost(refit, inverse, unit_coordinates[static_cast<std::size_t>(u)]);
  };
  while (removed_units < max_units) {
    if (pools > 1) {
      std::vector<char> visited(static_cast<std::size_t>(pools), 0);
      for (std::int64_t step = 0; step < pools; ++step) {
        std::int64_t best = -1;
        Scalar best_cost = std::numeric_limits<Scalar>::infinity();
        for (std::int64_t u = 0; u < units; ++u) {
          if (gone[static_cast<std::size_t>(u)] != 0 || visited[static_cast<std::size_t>(pool_of[static_cast<std::size_t>(u)])] != 0) continue;
          const Scalar c = increment(u);
          if (c < best_cost) best_cost = c, best = u;
        }
        visited[static_cast<std::size_t>(pool_of[static_cast<std::size_t>(best)])] = 1;
        remove_block({best});
      }
    } else {
      std::vector<std::pair<Scalar, std::int64_t>> ranked;
      for (std::int64_t u = 0; u < units; ++u)
        if (gone[static_cast<std::size_t>(u)] == 0) ranked.emplace_back(increment(u), u);
      const auto take = static_cast<std::size_t>(std::min(batch, max_units - removed_units));
      std::partial_sort(ranked.begin(), ranked.begin() + static_cast<std::ptrdiff_t>(take), ranked.end());
      std::vector<std::int64_t> chosen;
      for (std::size_t i = 0; i < take; ++i) chosen.push_back(ranked[i].second);
      remove_block(chosen);
    }
    record();
  }
  return curve;
}

}  // namespace detail

/// The least-cost GQA-consistent removal of each removable count of query heads of a
/// layer whose attn_output (W, of input width n_head·head_dim_v) has the cost `cost`:
/// exact where the sets number at most max_sets, greedy (see the header) elsewhere.
/// Counts run over removable_q_head_counts(granularity) up to max_q_heads (default:
/// all). Throws std::invalid_argument when the widths disagree.
template <typename Scalar>
[[nodiscard]] removal_curve<Scalar> obs_head_curve(const obs_cost<Scalar>& cost, const attention_geometry& geometry,
                                                   head_granularity granularity, std::int64_t max_sets = std::int64_t{1} << 12,
                                                   std::int64_t max_q_heads = -1) {
  const std::int64_t d = geometry.head_dim_v();
  detail::require_size("cost", cost.width(), geometry.n_head() * d, "input width (n_head·head_dim_v)");
  const auto counts = geometry.removable_q_head_counts(granularity);  // validates the granularity
  const std::int64_t limit = max_q_heads < 0 ? geometry.n_head() : std::min(max_q_heads, geometry.n_head());
  // The greedy curve, for the counts the enumeration would be too large for.
  std::vector<std::vector<std::int64_t>> unit_coords;
  std::vector<std::vector<std::int64_t>> unit_ids;
  std::vector<std::int64_t> pool_of;
  const bool by_group = granularity == head_granularity::whole_groups;
  const std::int64_t unit_heads = by_group ? geometry.group_size() : 1;
  for (std::int64_t u = 0; u < geometry.n_head() / unit_heads; ++u) {
    std::vector<std::int64_t> heads;
    for (std::int64_t h = u * unit_heads; h < (u + 1) * unit_heads; ++h) heads.push_back(h);
    unit_coords.push_back(unit_coordinates(heads, d));
    unit_ids.push_back(heads);
    pool_of.push_back(granularity == head_granularity::heads_per_group ? u / geometry.group_size() : 0);
  }
  const std::int64_t pools = granularity == head_granularity::heads_per_group ? geometry.n_head_kv() : 1;
  bool need_greedy = false;
  for (const auto c : counts)
    if (c <= limit && geometry.removal_set_count(granularity, c) > static_cast<double>(max_sets)) need_greedy = true;
  removal_curve<Scalar> greedy;
  if (need_greedy) greedy = detail::greedy_obs_curve(cost, unit_coords, unit_ids, pool_of, pools, limit / unit_heads, 1);

  removal_curve<Scalar> curve;
  for (const auto c : counts) {
    if (c > limit) break;
    std::vector<std::int64_t> best_heads;
    Scalar best = std::numeric_limits<Scalar>::infinity();
    bool exact = false;
    if (geometry.removal_set_count(granularity, c) <= static_cast<double>(max_sets)) {
      exact = true;
      geometry.for_each_removal(granularity, c, max_sets, [&](const std::vector<std::int64_t>& heads) {
        std::vector<std::int64_t> sorted = heads;
        std::sort(sorted.begin(), sorted.end());
        const Scalar e = obs_cost<Scalar>::block_cost(cost.weight(), cost.inverse(), unit_coordinates(sorted, d));
        if (e < best) best = e, best_heads = std::move(sorted);
      });
    } else {
      const auto at = std::find(greedy.count.begin(), greedy.count.end(), c);
      best_heads = greedy.removed[static_cast<std::size_t>(at - greedy.count.begin())];
      best = greedy.cost[static_cast<std::size_t>(at - greedy.count.begin())];
    }
    curve.count.push_back(c);
    curve.removed.push_back(std::move(best_heads));
    curve.cost.push_back(best);
    curve.exact.push_back(exact ? 1 : 0);
  }
  return curve;
}

/// The greedy (SlimGPT) removal curve of single input coordinates (MLP channels of
/// ffn_down), `batch` channels per step, up to max_channels; counts 0, b, 2b, ….
template <typename Scalar>
[[nodiscard]] removal_curve<Scalar> obs_channel_curve(const obs_cost<Scalar>& cost, std::int64_t max_channels,
                                                      std::int64_t batch = 1) {
  detail::require(batch > 0, "batch", "must be positive, got " + std::to_string(batch));
  detail::require(max_channels >= 0 && max_channels <= cost.width(), "max_channels",
                  "must lie in [0, " + std::to_string(cost.width()) + "], got " + std::to_string(max_channels));
  std::vector<std::vector<std::int64_t>> units;
  std::vector<std::int64_t> pool_of(static_cast<std::size_t>(cost.width()), 0);
  for (Eigen::Index c = 0; c < cost.width(); ++c) units.push_back({static_cast<std::int64_t>(c)});
  return detail::greedy_obs_curve(cost, units, units, pool_of, 1, max_channels, batch);
}

/// A curve as exact_allocation's choices: count × unit_size budget units (heads,
/// parameters, ...), cost × scale (a layer's weight in the sum).
template <typename Scalar>
[[nodiscard]] allocation_choices<Scalar> allocation_choices_of(const removal_curve<Scalar>& curve, std::int64_t unit_size,
                                                               Scalar scale = Scalar(1)) {
  detail::require(unit_size > 0, "unit_size", "must be positive, got " + std::to_string(unit_size));
  if (!(scale >= 0) || !std::isfinite(scale)) detail::fail_domain("scale", "must be finite and >= 0, got " + detail::describe_value(scale));
  allocation_choices<Scalar> choices;
  for (std::size_t k = 0; k < curve.count.size(); ++k) {
    choices.removed.push_back(curve.count[k] * unit_size);
    choices.energy.push_back(curve.cost[k] * scale);
  }
  return choices;
}

NASHPRUNE_END_NAMESPACE
