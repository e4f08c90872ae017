// nashprune/attention_geometry.hpp — where every head, GQA group and MLP channel
// lives inside a layer's weight matrices, and which removals keep a layer runnable.
//
// Convention (llama.cpp's, seeds: gqa-aware-prune.md "Key Concepts", llama-pruning-toolkit
// "Attention groups"): a layer has n_head query heads and n_head_kv key/value heads,
// n_head % n_head_kv == 0, group size g = n_head / n_head_kv, and query head h reads
// kv head h / g. So kv group j is kv head j together with query heads [j·g, (j+1)·g).
//
// Where the heads sit. A projection y = W x stored "out_by_in" has one row per output
// unit; that is both ggml's layout (wq ne = [n_embd, n_head·head_dim]: ne[0] is the
// contiguous input axis, so row r of the row-major data is output unit r) and Hugging
// Face's nn.Linear weight [out, in]. "in_by_out" is the transposed storage ([in, out],
// e.g. GPT-2's Conv1D). Query head h owns output units [h·d, (h+1)·d) of wq
// (d = head_dim); kv head j owns [j·d, (j+1)·d) of wk and [j·d_v, (j+1)·d_v) of wv;
// the output projection wo takes the concatenated head outputs, so head h owns its
// *input* units [h·d_v, (h+1)·d_v). MLP channel c is output unit c of ffn_gate and
// ffn_up and input unit c of ffn_down.
//
// Granularities that keep a layer runnable (the Q:KV mapping must survive renumbering):
//   whole_groups     remove kv head j with all its query heads (any GQA ratio);
//   heads_per_group  remove the same number of query heads from every group, k and v
//                    untouched (the ratio stays an integer);
//   single_heads     any query heads, only when n_head_kv == n_head (MHA), where each
//                    head is its own group and its k/v heads go with it.
// A kept set is valid iff every kept query head's kv head is kept and every kept kv
// head keeps the same (non-zero) number of query heads; then, after renumbering, new
// query head i again reads new kv head i / g'.
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "config.hpp"
#include "detail/validate.hpp"
#include "index_range.hpp"

NASHPRUNE_BEGIN_NAMESPACE


enum class tensor_role { q, k, v, o, gate, up, down };

/// out_by_in: row = output unit (ggml, Hugging Face nn.Linear); in_by_out: transposed.
enum class matrix_orientation { out_by_in, in_by_out };

enum class matrix_axis { rows, cols };

/// The matrix axis along which heads (attention roles) or channels (MLP roles) lie.
[[nodiscard]] constexpr matrix_axis structure_axis(tensor_role role, matrix_orientation orientation) {
  const bool on_input_side = role == tensor_role::o || role == tensor_role::down;
  const bool rows_are_outputs = orientation == matrix_orientation::out_by_in;
  return (on_input_side != rows_are_outputs) ? matrix_axis::rows : matrix_axis::cols;
}

enum class head_granularity { whole_groups, heads_per_group, single_heads };

/// Head counts of a layer after a plan is applied (0 only for an allowed empty layer).
struct head_counts {
  std::int64_t n_head = 0;
  std::int64_t n_head_kv = 0;
  friend constexpr bool operator==(const head_counts&, const head_counts&) = default;
};

/// The query and kv heads a layer keeps, both strictly ascending.
struct head_keep_plan {
  std::vector<std::int64_t> q_heads;
  std::vector<std::int64_t> kv_heads;
};

namespace detail {

inline void require_unit_index(std::string_view argument, std::int64_t position, std::int64_t value,
                               std::int64_t extent) {
  if (value < 0 || value >= extent) {
    fail_argument(argument, "value " + std::to_string(value) + " at " + at_index(position) +
                                " is out of range [0, " + std::to_string(extent) + ")");
  }
}

/// Sorted copy of `units`, rejecting out-of-range and duplicate entries by position.
inline std::vector<std::int64_t> sorted_unique_units(std::string_view argument,
                                                     std::span<const std::int64_t> units,
                                                     std::int64_t extent) {
  std::vector<std::int64_t> positions(units.size());
  std::iota(positions.begin(), positions.end(), std::int64_t{0});
  for (std::size_t i = 0; i < units.size(); ++i) {
    require_unit_index(argument, static_cast<std::int64_t>(i), units[i], extent);
  }
  std::stable_sort(positions.begin(), positions.end(),
                   [&](std::int64_t a, std::int64_t b) { return units[a] < units[b]; });
  std::vector<std::int64_t> sorted;
  sorted.reserve(units.size());
  for (std::size_t i = 0; i < positions.size(); ++i) {
    const std::int64_t value = units[positions[i]];
    if (i > 0 && value == sorted.back()) {
      fail_argument(argument, "duplicate value " + std::to_string(value) + " at " +
                                  at_index(std::max(positions[i - 1], positions[i])));
    }
    sorted.push_back(value);
  }
  return sorted;
}

}  // namespace detail

/// Checks that `keep` is strictly ascending and inside [0, extent); empty only when
/// allowed. Used for MLP channels and any other one-dimensional keep-list.
inline void validate_keep_list(std::string_view argument, std::span<const std::int64_t> keep,
                               std::int64_t extent, bool allow_empty = false) {
  if (keep.empty() && !allow_empty) {
    detail::fail_argument(argument, "keep-list is empty (the structure would be removed entirely)");
  }
  for (std::size_t i = 0; i < keep.size(); ++i) {
    detail::require_unit_index(argument, static_cast<std::int64_t>(i), keep[i], extent);
    if (i > 0 && keep[i] <= keep[i - 1]) {
      detail::fail_argument(argument, (keep[i] == keep[i - 1] ? "duplicate value " : "value ") +
                                          std::to_string(keep[i]) + " at " +
                                          detail::at_index(static_cast<std::int64_t>(i)) +
                                          (keep[i] == keep[i - 1] ? "" : " is not in ascending order"));
    }
  }
}

/// The units of [0, extent) that are not in the ascending list `units`.
[[nodiscard]] inline std::vector<std::int64_t> complement_units(std::span<const std::int64_t> units,
                                                               std::int64_t extent) {
  std::vector<std::int64_t> rest;
  rest.reserve(static_cast<std::size_t>(std::max<std::int64_t>(0, extent - static_cast<std::int64_t>(units.size()))));
  std::size_t next = 0;
  for (std::int64_t u = 0; u < extent; ++u) {
    if (next < units.size() && units[next] == u) {
      ++next;
    } else {
      rest.push_back(u);
    }
  }
  return rest;
}

/// Merges ascending units of `unit_size` elements each into maximal contiguous ranges,
/// e.g. kept heads {0, 1, 3} of head_dim 8 -> [0, 16), [24, 32).
[[nodiscard]] inline std::vector<index_range> unit_ranges(std::span<const std::int64_t> units,
                                                         std::int64_t unit_size) {
  std::vector<index_range> ranges;
  for (const std::int64_t u : units) {
    const std::int64_t begin = u * unit_size;
    if (!ranges.empty() && ranges.back().end() == begin) {
      ranges.back().size += unit_size;
    } else {
      ranges.push_back({begin, unit_size});
    }
  }
  return ranges;
}

class attention_geometry {
 public:
  /// head_dim_v = 0 means "same as head_dim". Throws std::invalid_argument when a count
  /// is not positive or n_head is not a multiple of n_head_kv.
  attention_geometry(std::int64_t n_head, std::int64_t n_head_kv, std::int64_t head_dim,
                     std::int64_t head_dim_v = 0)
      : n_head_(n_head), n_head_kv_(n_head_kv), head_dim_(head_dim),
        head_dim_v_(head_dim_v == 0 ? head_dim : head_dim_v) {
    detail::require(n_head > 0, "n_head", "must be positive, got " + std::to_string(n_head));
    detail::require(n_head_kv > 0, "n_head_kv", "must be positive, got " + std::to_string(n_head_kv));
    detail::require(n_head % n_head_kv == 0, "n_head_kv",
                    std::to_string(n_head_kv) + " does not divide n_head = " + std::to_string(n_head));
    detail::require(head_dim > 0, "head_dim", "must be positive, got " + std::to_string(head_dim));
    detail::require(head_dim_v >= 0, "head_dim_v", "must not be negative, got " + std::to_string(head_dim_v));
  }

  [[nodiscard]] std::int64_t n_head() const { return n_head_; }
  [[nodiscard]] std::int64_t n_head_kv() const { return n_head_kv_; }
  [[nodiscard]] std::int64_t head_dim() const { return head_dim_; }
  [[nodiscard]] std::int64_t head_dim_v() const { return head_dim_v_; }
  /// Query heads per kv head (the GQA ratio; 1 for multi-head attention).
  [[nodiscard]] std::int64_t group_size() const { return n_head_ / n_head_kv_; }
  [[nodiscard]] bool is_multi_head() const { return n_head_ == n_head_kv_; }

  [[nodiscard]] std::int64_t kv_head_of(std::int64_t q_head) const {
    detail::require_unit_index("q_head", 0, q_head, n_head_);
    return q_head / group_size();
  }

  [[nodiscard]] index_range q_heads_of_group(std::int64_t group) const {
    detail::require_unit_index("group", 0, group, n_head_kv_);
    return {group * group_size(), group_size()};
  }

  /// Units along the head axis of the tensor: q: n_head·d, k: n_head_kv·d,
  /// v: n_head_kv·d_v, o: n_head·d_v.
  [[nodiscard]] std::int64_t extent(tensor_role role) const {
    return heads_along(role) * unit_size(role);
  }

  /// Rows/columns (along structure_axis(role, ...)) owned by head `head` of the tensor:
  /// a query head for q and o, a kv head for k and v.
  [[nodiscard]] index_range head_span(tensor_role role, std::int64_t head) const {
    detail::require_unit_index("head", 0, head, heads_along(role));
    return {head * unit_size(role), unit_size(role)};
  }

  /// Rows/columns owned by kv group `group`: its query heads in q and o, its kv head in k and v.
  [[nodiscard]] index_range group_span(tensor_role role, std::int64_t group) const {
    detail::require_unit_index("group", 0, group, n_head_kv_);
    const std::int64_t heads = is_query_side(role) ? group_size() : 1;
    return {group * heads * unit_size(role), heads * unit_size(role)};
  }

  /// The maximal contiguous ranges a plan keeps in the tensor of `role` (validates the plan).
  [[nodiscard]] std::vector<index_range> kept_ranges(const head_keep_plan& plan, tensor_role role,
                                                     bool allow_empty = false) const {
    (void)validate(plan, allow_empty);
    return unit_ranges(is_query_side(role) ? plan.q_heads : plan.kv_heads, unit_size(role));
  }

  /// Checks a plan against the rules in the header comment and returns the layer's new
  /// head counts. An empty plan (no heads left) is an error unless `allow_empty`.
  head_counts validate(const head_keep_plan& plan, bool allow_empty = false) const {
    validate_keep_list("plan.q_heads", plan.q_heads, n_head_, /*allow_empty=*/true);
    validate_keep_list("plan.kv_heads", plan.kv_heads, n_head_kv_, /*allow_empty=*/true);
    if (plan.q_heads.empty() || plan.kv_heads.empty()) {
      if (!plan.q_heads.empty() || !plan.kv_heads.empty()) {
        detail::fail_argument(plan.q_heads.empty() ? "plan.kv_heads" : "plan.q_heads",
                              "keeps heads although the other list is empty");
      }
      if (!allow_empty) detail::fail_argument("plan", "keeps no heads (layer left empty; not allowed)");
      return {0, 0};
    }
    std::vector<std::int64_t> kept_per_kv(static_cast<std::size_t>(n_head_kv_), 0);
    for (std::size_t i = 0; i < plan.q_heads.size(); ++i) {
      const std::int64_t kv = plan.q_heads[i] / group_size();
      if (!std::binary_search(plan.kv_heads.begin(), plan.kv_heads.end(), kv)) {
        detail::fail_argument("plan.q_heads", "q head " + std::to_string(plan.q_heads[i]) + " at " +
                                                  detail::at_index(static_cast<std::int64_t>(i)) +
                                                  " reads kv head " + std::to_string(kv) +
                                                  ", which the plan removes");
      }
      ++kept_per_kv[static_cast<std::size_t>(kv)];
    }
    const std::int64_t per_group = kept_per_kv[static_cast<std::size_t>(plan.kv_heads.front())];
    for (std::size_t i = 0; i < plan.kv_heads.size(); ++i) {
      const std::int64_t kept = kept_per_kv[static_cast<std::size_t>(plan.kv_heads[i])];
      if (kept != per_group) {
        detail::fail_argument("plan.kv_heads",
                              "kv head " + std::to_string(plan.kv_heads[i]) + " at " +
                                  detail::at_index(static_cast<std::int64_t>(i)) + " keeps " +
                                  std::to_string(kept) + " q heads but kv head " +
                                  std::to_string(plan.kv_heads.front()) + " keeps " +
                                  std::to_string(per_group) +
                                  " (every kept group must keep the same number, so the Q:KV ratio stays an integer)");
      }
    }
    return {static_cast<std::int64_t>(plan.q_heads.size()), static_cast<std::int64_t>(plan.kv_heads.size())};
  }

  /// Query heads one removal step of this granularity takes: a whole group, one head
  /// of every group (the Q:KV ratio stays an integer), or one head.
  [[nodiscard]] std::int64_t query_heads_per_step(head_granularity granularity) const {
    return granularity == head_granularity::heads_per_group ? n_head_kv_
           : granularity == head_granularity::whole_groups  ? group_size()
                                                            : 1;
  }

  /// Query-head counts a plan of this granularity can remove, ascending from 0.
  [[nodiscard]] std::vector<std::int64_t> removable_q_head_counts(head_granularity granularity) const {
    require_supported(granularity);
    const std::int64_t step = query_heads_per_step(granularity);
    std::vector<std::int64_t> counts;
    for (std::int64_t c = 0; c <= n_head_; c += step) counts.push_back(c);
    return counts;
  }

  /// The plan that removes `removed_units`: kv group ids for whole_groups, query heads
  /// otherwise (heads_per_group: the same number from every group).
  [[nodiscard]] head_keep_plan plan_removing(head_granularity granularity,
                                             std::span<const std::int64_t> removed_units,
                                             bool allow_empty = false) const {
    require_supported(granularity);
    const bool by_group = granularity == head_granularity::whole_groups;
    const auto removed =
        detail::sorted_unique_units("removed_units", removed_units, by_group ? n_head_kv_ : n_head_);
    head_keep_plan plan;
    if (by_group) {
      plan.kv_heads = complement_units(removed, n_head_kv_);
      for (const std::int64_t g : plan.kv_heads) {
        for (std::int64_t h = g * group_size(); h < (g + 1) * group_size(); ++h) plan.q_heads.push_back(h);
      }
    } else {
      plan.q_heads = complement_units(removed, n_head_);
      if (granularity == head_granularity::single_heads) {
        plan.kv_heads = plan.q_heads;  // multi-head attention: head h is kv head h
      } else {
        std::vector<std::int64_t> removed_per_group(static_cast<std::size_t>(n_head_kv_), 0);
        for (const std::int64_t h : removed) ++removed_per_group[static_cast<std::size_t>(h / group_size())];
        for (std::int64_t g = 0; g < n_head_kv_; ++g) {
          if (removed_per_group[static_cast<std::size_t>(g)] != removed_per_group[0]) {
            detail::fail_argument("removed_units",
                                  "removes " + std::to_string(removed_per_group[static_cast<std::size_t>(g)]) +
                                      " q heads from group " + std::to_string(g) + " but " +
                                      std::to_string(removed_per_group[0]) +
                                      " from group 0 (heads_per_group needs the same number in every group)");
          }
        }
        if (!plan.q_heads.empty()) {
          plan.kv_heads.resize(static_cast<std::size_t>(n_head_kv_));
          std::iota(plan.kv_heads.begin(), plan.kv_heads.end(), std::int64_t{0});
        }
      }
    }
    (void)validate(plan, allow_empty);
    return plan;
  }

  /// Removes the `q_heads_to_remove` query heads of lowest score, at the granularity
  /// given: whole groups ranked by the sum of their query heads' scores, or the lowest
  /// heads of every group, or the lowest heads. Ties go to the lower index (removed
  /// first), so the result is deterministic. The count must be one of
  /// removable_q_head_counts(granularity).
  template <typename Derived>
  [[nodiscard]] head_keep_plan plan_by_scores(head_granularity granularity,
                                              const Eigen::MatrixBase<Derived>& head_scores,
                                              std::int64_t q_heads_to_remove,
                                              bool allow_empty = false) const {
    detail::require_size("head_scores", head_scores.size(), n_head_);
    detail::require_finite("head_scores", head_scores);
    const auto counts = removable_q_head_counts(granularity);
    if (!std::binary_search(counts.begin(), counts.end(), q_heads_to_remove)) {
      detail::fail_argument("q_heads_to_remove",
                            std::to_string(q_heads_to_remove) +
                                " q heads cannot be removed at this granularity (allowed: multiples of " +
                                std::to_string(counts.size() > 1 ? counts[1] : n_head_) + " up to " +
                                std::to_string(n_head_) + ")");
    }
    auto lowest_first = [](std::vector<std::int64_t>& ids, const auto& score_of) {
      std::stable_sort(ids.begin(), ids.end(),
                       [&](std::int64_t a, std::int64_t b) { return score_of(a) < score_of(b); });
    };
    std::vector<std::int64_t> removed;
    if (granularity == head_granularity::whole_groups) {
      std::vector<double> group_score(static_cast<std::size_t>(n_head_kv_), 0.0);
      for (std::int64_t h = 0; h < n_head_; ++h) {
        group_score[static_cast<std::size_t>(h / group_size())] += static_cast<double>(head_scores(h));
      }
      std::vector<std::int64_t> groups(static_cast<std::size_t>(n_head_kv_));
      std::iota(groups.begin(), groups.end(), std::int64_t{0});
      lowest_first(groups, [&](std::int64_t g) { return group_score[static_cast<std::size_t>(g)]; });
      removed.assign(groups.begin(), groups.begin() + q_heads_to_remove / group_size());
    } else {
      const bool per_group = granularity == head_granularity::heads_per_group;
      const std::int64_t pools = per_group ? n_head_kv_ : 1;
      const std::int64_t pool_size = n_head_ / pools;
      for (std::int64_t p = 0; p < pools; ++p) {
        std::vector<std::int64_t> heads(static_cast<std::size_t>(pool_size));
        std::iota(heads.begin(), heads.end(), p * pool_size);
        lowest_first(heads, [&](std::int64_t h) { return static_cast<double>(head_scores(h)); });
        removed.insert(removed.end(), heads.begin(), heads.begin() + q_heads_to_remove / pools);
      }
    }
    return plan_removing(granularity, removed, allow_empty);
  }

  /// How many removal sets of `q_heads_to_remove` query heads `granularity` allows:
  /// C(n_head_kv, count/g) whole groups, C(g, count/n_head_kv)^n_head_kv heads per
  /// group, C(n_head, count) single heads (a double: it may exceed any integer).
  [[nodiscard]] double removal_set_count(head_granularity granularity, std::int64_t q_heads_to_remove) const {
    const auto [pools, pool_size, take] = removal_pools(granularity, q_heads_to_remove);
    double per_pool = 1;
    for (std::int64_t k = 0; k < take; ++k) per_pool = per_pool * static_cast<double>(pool_size - k) / static_cast<double>(k + 1);
    return std::pow(per_pool, static_cast<double>(pools));
  }

  /// Calls visit(removed) for every removal of `q_heads_to_remove` query heads that
  /// `granularity` allows (removed: the query heads, ascending; whole groups give
  /// all their heads), in lexicographic order of the chosen units. Throws
  /// std::invalid_argument when the count is not removable at that granularity or the
  /// sets number more than `max_sets`.
  template <typename Visit>
  void for_each_removal(head_granularity granularity, std::int64_t q_heads_to_remove, std::int64_t max_sets,
                        Visit&& visit) const {
    const double sets = removal_set_count(granularity, q_heads_to_remove);
    if (sets > static_cast<double>(max_sets)) {
      detail::fail_argument("max_sets", "the enumeration needs " + detail::describe_value(sets) + " sets, more than " +
                                            std::to_string(max_sets));
    }
    // Named copies, not a structured binding: clang 14 refuses bindings captured by a lambda.
    const pool_layout layout = removal_pools(granularity, q_heads_to_remove);
    const std::int64_t pools = layout.pools, pool_size = layout.pool_size, take = layout.take;
    // A unit is a whole group (pool_size groups of g heads) or one head of the pool.
    const std::int64_t unit_heads = granularity == head_granularity::whole_groups ? group_size() : 1;
    std::vector<std::int64_t> chosen;
    const auto descend = [&](auto&& self, std::int64_t pool, std::int64_t from, std::int64_t left) -> void {
      if (left == 0) {
        if (pool + 1 < pools) return self(self, pool + 1, 0, take);
        visit(static_cast<const std::vector<std::int64_t>&>(chosen));
        return;
      }
      for (std::int64_t u = from; u + left <= pool_size; ++u) {
        const std::int64_t first = (pool * pool_size + u) * unit_heads;
        for (std::int64_t h = first; h < first + unit_heads; ++h) chosen.push_back(h);
        self(self, pool, u + 1, left - 1);
        chosen.resize(chosen.size() - static_cast<std::size_t>(unit_heads));
      }
    };
    descend(descend, 0, 0, take);
  }

 private:
  struct pool_layout {
    std::int64_t pools;      ///< independent pools (groups for heads_per_group, else 1)
    std::int64_t pool_size;  ///< units per pool
    std::int64_t take;       ///< units removed from every pool
  };

  [[nodiscard]] pool_layout removal_pools(head_granularity granularity, std::int64_t q_heads_to_remove) const {
    const auto counts = removable_q_head_counts(granularity);
    if (!std::binary_search(counts.begin(), counts.end(), q_heads_to_remove)) {
      detail::fail_argument("q_heads_to_remove",
                            std::to_string(q_heads_to_remove) + " heads cannot be removed at this granularity");
    }
    if (granularity == head_granularity::whole_groups) return {1, n_head_kv_, q_heads_to_remove / group_size()};
    if (granularity == head_granularity::heads_per_group) return {n_head_kv_, group_size(), q_heads_to_remove / n_head_kv_};
    return {1, n_head_, q_heads_to_remove};
  }

  [[nodiscard]] static bool is_query_side(tensor_role role) {
    return role == tensor_role::q || role == tensor_role::o;
  }

  [[nodiscard]] std::int64_t heads_along(tensor_role role) const {
    require_attention(role);
    return is_query_side(role) ? n_head_ : n_head_kv_;
  }

  [[nodiscard]] std::int64_t unit_size(tensor_role role) const {
    require_attention(role);
    return (role == tensor_role::q || role == tensor_role::k) ? head_dim_ : head_dim_v_;
  }

  static void require_attention(tensor_role role) {
    if (role == tensor_role::gate || role == tensor_role::up || role == tensor_role::down) {
      detail::fail_argument("role", "is an MLP role; attention_geometry describes q, k, v and o only");
    }
  }

  void require_supported(head_granularity granularity) const {
    if (granularity == head_granularity::single_heads && !is_multi_head()) {
      detail::fail_argument("granularity",
                            "single_heads needs n_head_kv == n_head (multi-head attention); this layer has " +
                                std::to_string(n_head_) + " q heads over " + std::to_string(n_head_kv_) +
                                " kv heads: use whole_groups or heads_per_group");
    }
  }

  std::int64_t n_head_;
  std::int64_t n_head_kv_;
  std::int64_t head_dim_;
  std::int64_t head_dim_v_;
};

NASHPRUNE_END_NAMESPACE
