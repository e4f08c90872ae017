// nashprune/attention_items.hpp — one layer's attention as global-selection items, at a
// GQA-consistent granularity, and the selection mapped back to a head_keep_plan.
//
// Sources: llama-pruning-toolkit.en.md ("Attention groups (GQA-aware)": group i = kv
// head i with its gqa_ratio query heads and their o-projection columns;
// I(group) = sum of its heads' importance; cost = parameters), and the granularities
// of attention_geometry.hpp. With g = group size, d = head_dim, d_v = head_dim_v and
// n_embd the model width (wq, wk, wv have n_embd inputs; wo has n_embd outputs):
//  - whole_groups: item kind attention_group, index = kv group j,
//    importance = sum of the scores of its g query heads,
//    cost = n_embd · (g·d + d + d_v + g·d_v).
//  - heads_per_group: item kind q_head, index = removal step r (0 <= r < g - 1):
//    step r removes from every group its (r+1)-th lowest-scoring query head, so
//    importance = sum over groups of that head's score and cost = n_head_kv · n_embd ·
//    (d + d_v) (k and v stay). Steps have equal cost and non-decreasing importance,
//    so an optimal selection may as well take a prefix; the plan only uses how many
//    steps were taken (k steps -> plan_by_scores with k · n_head_kv heads). The last
//    query head of a group is never offered (the layer would lose its kv heads).
//  - single_heads (multi-head attention only): item kind q_head, index = head h,
//    importance = its score, cost = n_embd · 2 · (d + d_v) (q, o and its own k, v).
// Removing every group (or, for single heads, every head) of a layer empties its
// attention: add the constraint min_kept {attention_group, 1} (single heads:
// {q_head, 1}), or allow an empty layer explicitly.
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <span>
#include <string>
#include <vector>

#include "attention_geometry.hpp"
#include "config.hpp"
#include "detail/validate.hpp"
#include "global_selection.hpp"

NASHPRUNE_BEGIN_NAMESPACE

/// Parameters of one MLP channel: a gate row, an up row and a down column of n_embd each.
[[nodiscard]] inline std::int64_t mlp_channel_cost(std::int64_t n_embd) {
  detail::require(n_embd > 0, "n_embd", "must be positive, got " + std::to_string(n_embd));
  return 3 * n_embd;
}

/// The selection items of one layer's attention (see the header comment).
template <typename Scalar, typename Derived>
[[nodiscard]] std::vector<selection_item<Scalar>> attention_items(const attention_geometry& geometry, head_granularity granularity,
                                                                  std::int64_t layer, const Eigen::MatrixBase<Derived>& head_scores,
                                                                  std::int64_t n_embd) {
  detail::require(layer >= 0, "layer", "must not be negative, got " + std::to_string(layer));
  detail::require(n_embd > 0, "n_embd", "must be positive, got " + std::to_string(n_embd));
  detail::require_size("head_scores", head_scores.size(), geometry.n_head());
  detail::require_finite_nonnegative("head_scores", head_scores);
  (void)geometry.removable_q_head_counts(granularity);  // rejects single_heads under GQA
  const std::int64_t g = geometry.group_size(), d = geometry.head_dim(), dv = geometry.head_dim_v();
  std::vector<selection_item<Scalar>> items;
  if (granularity == head_granularity::whole_groups) {
    for (std::int64_t j = 0; j < geometry.n_head_kv(); ++j) {
      Scalar importance = 0;
      for (std::int64_t h = j * g; h < (j + 1) * g; ++h) importance += static_cast<Scalar>(head_scores(h));
      items.push_back({layer, item_kind::attention_group, j, importance, n_embd * (g * d + d + dv + g * dv)});
    }
  } else if (granularity == head_granularity::single_heads) {
    for (std::int64_t h = 0; h < geometry.n_head(); ++h) {
      items.push_back({layer, item_kind::q_head, h, static_cast<Scalar>(head_scores(h)), n_embd * 2 * (d + dv)});
    }
  } else {
    // Per group, its heads' scores ascending (ties: lower head first, as plan_by_scores).
    std::vector<std::vector<Scalar>> ranked(static_cast<std::size_t>(geometry.n_head_kv()));
    for (std::int64_t j = 0; j < geometry.n_head_kv(); ++j) {
      auto& r = ranked[static_cast<std::size_t>(j)];
      for (std::int64_t h = j * g; h < (j + 1) * g; ++h) r.push_back(static_cast<Scalar>(head_scores(h)));
      std::stable_sort(r.begin(), r.end());
    }
    for (std::int64_t step = 0; step + 1 < g; ++step) {
      Scalar importance = 0;
      for (const auto& r : ranked) importance += r[static_cast<std::size_t>(step)];
      items.push_back({layer, item_kind::q_head, step, importance, geometry.n_head_kv() * n_embd * (d + dv)});
    }
  }
  return items;
}

/// The head_keep_plan of one layer from the items a selection removed there (items of
/// other layers or kinds are ignored; `head_scores` as given to attention_items).
template <typename Scalar, typename Derived>
[[nodiscard]] head_keep_plan attention_plan(const attention_geometry& geometry, head_granularity granularity, std::int64_t layer,
                                            const Eigen::MatrixBase<Derived>& head_scores,
                                            std::span<const selection_item<Scalar>> removed, bool allow_empty = false) {
  const item_kind kind = granularity == head_granularity::whole_groups ? item_kind::attention_group : item_kind::q_head;
  std::vector<std::int64_t> units;
  for (const auto& it : removed) {
    if (it.layer == layer && it.kind == kind) units.push_back(it.index);
  }
  if (granularity == head_granularity::heads_per_group) {
    const auto steps = static_cast<std::int64_t>(units.size());
    if (steps >= geometry.group_size()) {
      detail::fail_argument("removed", std::to_string(steps) + " removal steps in layer " + std::to_string(layer) +
                                           " leave a group without query heads");
    }
    return geometry.plan_by_scores(granularity, head_scores, steps * geometry.n_head_kv(), allow_empty);
  }
  return geometry.plan_removing(granularity, units, allow_empty);
}

NASHPRUNE_END_NAMESPACE
