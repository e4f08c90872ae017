// nashprune/nash_decisions.hpp — which heads an equilibrium prunes: the seed's
// rule, and its GQA-consistent forms.
//
// Seed: nash-head-pruning-llama-cpp.md §4.4 and §3.1 (defaults prune_threshold 0.1,
// min_heads_per_layer 1, max_prune_ratio 0.7). Heads are sorted by participation
// s_i ascending (ties: lower index first); with
//     min_keep = max(min_heads_per_layer, ⌈n·(1 − max_prune_ratio)⌉),
// a head is pruned while s_i < prune_threshold and more than min_keep heads remain.
//
// GQA (attention_geometry.hpp): a plan must remove whole kv groups, or the same
// number of query heads from every group (single heads only for multi-head
// attention). The GQA forms never prune a head the seed's rule would keep and
// never break its caps:
//   whole_groups     a group is removable when every one of its heads has s < threshold;
//                    the removable groups with the lowest Σs go first, as many as
//                    min_keep allows;
//   heads_per_group  k = the fewest heads below threshold in any group (capped by
//                    min_keep), then the k lowest heads of every group;
//   single_heads     the seed's rule itself.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "attention_geometry.hpp"
#include "config.hpp"
#include "detail/validate.hpp"

NASHPRUNE_BEGIN_NAMESPACE

template <typename Scalar>
struct nash_decision_options {
  Scalar prune_threshold = Scalar(0.1);  ///< prune heads with s_i below this
  std::int64_t min_heads_per_layer = 1;  ///< never keep fewer heads than this
  Scalar max_prune_ratio = Scalar(0.7);  ///< never prune more than this fraction of a layer
};

template <typename Scalar>
void validate_decision_options(const nash_decision_options<Scalar>& options) {
  if (!std::isfinite(options.prune_threshold)) {
    detail::fail_argument("prune_threshold", "must be finite, got " + detail::describe_value(options.prune_threshold));
  }
  detail::require(options.min_heads_per_layer >= 0, "min_heads_per_layer",
                  "must be >= 0, got " + std::to_string(options.min_heads_per_layer));
  if (!(options.max_prune_ratio >= 0 && options.max_prune_ratio <= 1)) {
    detail::fail_argument("max_prune_ratio",
                          "must lie in [0, 1], got " + detail::describe_value(options.max_prune_ratio));
  }
}

/// The fewest heads a layer of n keeps: max(min_heads_per_layer, ⌈n·(1 − max_prune_ratio)⌉).
/// The product is rounded first when within a few ulps of an integer, so a ratio
/// like 0.7 (not exact in binary) gives ⌈10·0.3⌉ = 3 in float and double alike.
template <typename Scalar>
[[nodiscard]] std::int64_t seed_min_keep(std::int64_t n, const nash_decision_options<Scalar>& options) {
  const Scalar exact = static_cast<Scalar>(n) * (Scalar(1) - options.max_prune_ratio);
  const Scalar slack = Scalar(64) * std::numeric_limits<Scalar>::epsilon() * std::max(Scalar(1), exact);
  const auto by_ratio = static_cast<std::int64_t>(std::ceil(exact - slack));
  return std::max(options.min_heads_per_layer, by_ratio);
}

namespace detail {
template <typename Derived>
void validate_participation(const Eigen::MatrixBase<Derived>& participation) {
  require(participation.size() > 0, "participation", "is empty");
  require_finite("participation", participation);
}
}  // namespace detail

/// The heads the seed's §4.4 rule prunes, ascending.
template <typename Derived, typename Scalar = typename Derived::Scalar>
[[nodiscard]] std::vector<std::int64_t> seed_pruned_heads(const Eigen::MatrixBase<Derived>& participation,
                                                          const nash_decision_options<Scalar>& options = {}) {
  validate_decision_options(options);
  detail::validate_participation(participation);
  const std::int64_t n = participation.size();
  std::vector<std::int64_t> order(static_cast<std::size_t>(n));
  std::iota(order.begin(), order.end(), std::int64_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](std::int64_t a, std::int64_t b) { return participation(a) < participation(b); });
  const std::int64_t min_keep = seed_min_keep(n, options);
  std::vector<std::int64_t> pruned;
  for (const std::int64_t h : order) {
    if (participation(h) < options.prune_threshold && n - static_cast<std::int64_t>(pruned.size()) > min_keep) {
      pruned.push_back(h);
    }
  }
  std::sort(pruned.begin(), pruned.end());
  return pruned;
}

/// The GQA-consistent plan (kept q and kv heads) for one layer's participation
/// (one value per query head), at the given granularity; see the header comment.
template <typename Derived, typename Scalar = typename Derived::Scalar>
[[nodiscard]] head_keep_plan gqa_prune_plan(const attention_geometry& geometry, head_granularity granularity,
                                            const Eigen::MatrixBase<Derived>& participation,
                                            const nash_decision_options<Scalar>& options = {}) {
  validate_decision_options(options);
  detail::validate_participation(participation);
  detail::require_size("participation", participation.size(), geometry.n_head());
  const std::int64_t n = geometry.n_head();
  const std::int64_t groups = geometry.n_head_kv();
  const std::int64_t group_size = geometry.group_size();
  const std::int64_t min_keep = seed_min_keep(n, options);
  const std::int64_t removable = std::max<std::int64_t>(0, n - min_keep);
  const bool allow_empty = min_keep == 0;
  const auto below = [&](std::int64_t h) { return participation(h) < options.prune_threshold; };

  if (granularity == head_granularity::single_heads) {
    const auto pruned = seed_pruned_heads(participation, options);
    return geometry.plan_removing(granularity, pruned, allow_empty);
  }
  if (granularity == head_granularity::heads_per_group) {
    std::int64_t per_group = group_size;
    for (std::int64_t g = 0; g < groups; ++g) {
      std::int64_t count = 0;
      for (std::int64_t h = g * group_size; h < (g + 1) * group_size; ++h) count += below(h) ? 1 : 0;
      per_group = std::min(per_group, count);
    }
    per_group = std::min(per_group, removable / groups);
    return geometry.plan_by_scores(granularity, participation, per_group * groups, allow_empty);
  }
  // whole_groups
  std::vector<std::int64_t> eligible;
  std::vector<double> group_sum(static_cast<std::size_t>(groups), 0.0);
  for (std::int64_t g = 0; g < groups; ++g) {
    bool all_below = true;
    for (std::int64_t h = g * group_size; h < (g + 1) * group_size; ++h) {
      all_below = all_below && below(h);
      group_sum[static_cast<std::size_t>(g)] += static_cast<double>(participation(h));
    }
    if (all_below) eligible.push_back(g);
  }
  std::stable_sort(eligible.begin(), eligible.end(), [&](std::int64_t a, std::int64_t b) {
    return group_sum[static_cast<std::size_t>(a)] < group_sum[static_cast<std::size_t>(b)];
  });
  eligible.resize(static_cast<std::size_t>(
      std::min<std::int64_t>(static_cast<std::int64_t>(eligible.size()), removable / group_size)));
  return geometry.plan_removing(granularity, eligible, allow_empty);
}

NASHPRUNE_END_NAMESPACE
