// nashprune/selection_problem.hpp — the constraints of a global selection and the
// validated problem both selectors solve: the table checked, each layer's counted
// cost, and the most each layer and each (layer, kind) may lose.
//
// Constraints (checked at the boundary; impossible ones name the layer):
//  - freeze_first_layers / freeze_last_layers: items there are never removed;
//  - max_layer_prune_ratio (or one ratio per layer): removed cost of a layer <=
//    floor(ratio * the layer's counted cost);
//  - min_kept rules: in a layer (or every layer holding that kind), keep at least
//    `count` items of a kind; a layer with fewer items than the rule asks is an error;
//  - attention_group and q_head may not share a layer (which heads form which group
//    is not given).
//
// Counted cost (containers, see selection_items.hpp). A container that holds items
// must be its layer's only item of that kind and cost at least what it holds (its
// cost includes theirs; the rest, e.g. norms or o_proj, is its own). A layer costs
// its whole_layer item if it has one, else the sum of its parts, a part costing its
// block if it has one, else the sum of its items; the table's total is the sum of
// the layers' costs, so a container is counted once.
//
// Caps. layer_cap = floor(ratio · counted cost), 0 in a frozen layer; slot_cap per
// (layer, kind) = count minus the min_kept rule. Removing a container removes what
// it holds, so a container is never removed while a rule on a kind it holds asks to
// keep any of it: its slot_cap is then 0.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "config.hpp"
#include "detail/validate.hpp"
#include "selection_items.hpp"

NASHPRUNE_BEGIN_NAMESPACE

/// Keep at least `count` items of `kind` in `layer` (-1: in every layer holding that kind).
struct min_kept_rule {
  item_kind kind = item_kind::mlp_channel;
  std::int64_t count = 0;
  std::int64_t layer = -1;
};

struct selection_constraints {
  std::int64_t n_layers = 0;  // 0: one more than the largest layer in the table
  std::int64_t freeze_first_layers = 0;
  std::int64_t freeze_last_layers = 0;
  double max_layer_prune_ratio = 1.0;       // every layer, unless the vector below is given
  std::vector<double> layer_max_prune_ratio;  // empty, or one ratio per layer
  std::vector<min_kept_rule> min_kept;
};

namespace detail {

inline constexpr std::int64_t max_selection_layers = std::int64_t{1} << 22;

/// The validated table: per-item slot (layer * kinds + kind), per-layer cost caps and
/// per-slot count caps.
struct selection_problem {
  std::int64_t n_layers = 0;
  std::int64_t total_cost = 0;             // the layers' costs, a container counted once
  std::int64_t budget = 0;
  std::int64_t min_marginal_cost = 0;      // no removal adds less: the greedy stops below it
  bool nested = false;                     // some layer holds a container with finer items inside
  std::vector<std::int64_t> layer_cap;     // most removable cost per layer (0 if frozen)
  std::vector<std::int64_t> slot_cap;      // most removable items per (layer, kind)
};

[[nodiscard]] inline std::string item_at(std::size_t position) { return at_index(static_cast<std::int64_t>(position)); }

inline std::size_t slot_of(std::int64_t layer, item_kind kind) {
  return static_cast<std::size_t>(layer) * item_kind_count + static_cast<std::size_t>(kind);
}

/// Fails when two items share (layer, kind, index), given each slot's item count and
/// largest index: one bitmap per slot whose indices are dense (the usual case, checked
/// item by item during a pass the caller makes anyway), a sort for slots with sparse
/// indices (in finish()).
template <typename Scalar>
class duplicate_check {
 public:
  duplicate_check(std::span<const selection_item<Scalar>> items, const std::vector<std::int64_t>& count,
                  const std::vector<std::int64_t>& top)
      : items_(items), count_(count), offset_(count.size(), -1) {
    std::int64_t bitmap_size = 0;
    for (std::size_t s = 0; s < count.size(); ++s) {
      if (count[s] < 2) continue;
      if (top[s] < 8 * count[s] + 64) {
        offset_[s] = bitmap_size;
        bitmap_size += top[s] + 1;
      } else {
        any_sparse_ = true;
      }
    }
    seen_.assign(static_cast<std::size_t>(bitmap_size), false);
  }

  void operator()(std::size_t i) {
    const auto& it = items_[i];
    const std::int64_t offset = offset_[slot_of(it.layer, it.kind)];
    if (offset < 0) return;
    const auto bit = static_cast<std::size_t>(offset + it.index);
    if (seen_[bit]) {
      for (std::size_t j = 0; j < i; ++j) {
        if (items_[j].layer == it.layer && items_[j].kind == it.kind && items_[j].index == it.index) duplicate(j, i);
      }
    }
    seen_[bit] = true;
  }

  void finish() const {
    if (!any_sparse_) return;
    std::vector<std::tuple<std::size_t, std::int64_t, std::size_t>> sparse;  // slot, index, position
    for (std::size_t i = 0; i < items_.size(); ++i) {
      const std::size_t s = slot_of(items_[i].layer, items_[i].kind);
      if (offset_[s] < 0 && count_[s] >= 2) sparse.emplace_back(s, items_[i].index, i);
    }
    std::sort(sparse.begin(), sparse.end());
    for (std::size_t k = 1; k < sparse.size(); ++k) {
      if (std::get<0>(sparse[k]) == std::get<0>(sparse[k - 1]) && std::get<1>(sparse[k]) == std::get<1>(sparse[k - 1])) {
        duplicate(std::get<2>(sparse[k - 1]), std::get<2>(sparse[k]));
      }
    }
  }

 private:
  [[noreturn]] void duplicate(std::size_t first, std::size_t second) const {
    const auto& it = items_[second];
    fail_argument("items", "item " + std::to_string(second) + " repeats layer " + std::to_string(it.layer) + ", kind " +
                               std::string(name_of(it.kind)) + ", index " + std::to_string(it.index) + " of item " +
                               std::to_string(first));
  }

  std::span<const selection_item<Scalar>> items_;
  const std::vector<std::int64_t>& count_;
  std::vector<std::int64_t> offset_;
  std::vector<bool> seen_;
  bool any_sparse_ = false;
};

inline std::int64_t floor_share(double ratio, std::int64_t cost) {
  return static_cast<std::int64_t>(std::floor(static_cast<long double>(ratio) * static_cast<long double>(cost)));
}

/// The cost of one part of a layer (attention or MLP) from the costs and counts of its
/// fine kinds and its block: a block holding fine items is that layer's only block and
/// costs at least what it holds; it is counted once. Adds the block's least marginal
/// cost (its cost minus what it holds) to `least` and sets `nested`.
inline std::int64_t part_cost(std::size_t layer, std::string_view block, std::int64_t fine_cost, std::int64_t fine_count,
                              std::int64_t block_cost, std::int64_t block_count, std::int64_t& least, bool& nested) {
  if (fine_count == 0 || block_count == 0) return fine_cost + block_cost;
  const std::string where = "layer " + std::to_string(layer) + ": ";
  if (block_count > 1) fail_argument("items", where + "one " + std::string(block) + " holding finer items must be the layer's only one");
  if (block_cost < fine_cost) {
    fail_argument("items", where + std::string(block) + " cost " + std::to_string(block_cost) + " is below the " +
                               std::to_string(fine_cost) + " of the items inside it");
  }
  least = std::min(least, block_cost - fine_cost);
  nested = true;
  return block_cost;
}

/// Per (layer, kind) slot: how many items, their summed cost and the largest index.
struct slot_tally {
  std::vector<std::int64_t> count, cost, top;
  std::int64_t top_layer = 0;

  void grow(std::size_t slots) {
    count.resize(slots, 0);
    cost.resize(slots, 0);
    top.resize(slots, -1);
  }
};

/// The pass over the table: checks every item, sums the slots, finds the least cost
/// (no removal adds less) and hands each valid item to `visit(position, item)`.
template <typename Scalar, typename Visit>
[[nodiscard]] slot_tally tally_items(std::span<const selection_item<Scalar>> items, std::int64_t& least_cost, Visit&& visit) {
  if (items.empty()) fail_argument("items", "the item table is empty");
  if (items.size() >= std::numeric_limits<std::uint32_t>::max()) fail_argument("items", "more than 2^32 - 1 items");
  slot_tally t;
  least_cost = std::numeric_limits<std::int64_t>::max();
  std::int64_t raw_total = 0;
  for (std::size_t i = 0; i < items.size(); ++i) {
    const auto& it = items[i];
    if (it.layer < 0) fail_argument("items", "negative layer " + std::to_string(it.layer) + " at " + item_at(i));
    if (it.layer >= max_selection_layers) fail_argument("items", "layer " + std::to_string(it.layer) + " beyond 2^22 layers at " + item_at(i));
    if (static_cast<std::size_t>(it.kind) >= item_kind_count) fail_argument("items", "unknown kind at " + item_at(i));
    if (it.index < 0) fail_argument("items", "negative index " + std::to_string(it.index) + " at " + item_at(i));
    if (!std::isfinite(it.importance) || it.importance < 0) {
      fail_domain("items", "importance " + describe_value(it.importance) + " is not finite and non-negative at " + item_at(i));
    }
    if (it.cost <= 0) fail_domain("items", "cost " + std::to_string(it.cost) + " is not positive at " + item_at(i));
    if (__builtin_add_overflow(raw_total, it.cost, &raw_total)) fail_argument("items", "total cost overflows at " + item_at(i));
    t.top_layer = std::max(t.top_layer, it.layer);
    least_cost = std::min(least_cost, it.cost);
    visit(i, it);
    const std::size_t s = slot_of(it.layer, it.kind);
    if (s >= t.count.size()) t.grow((static_cast<std::size_t>(it.layer) + 1) * item_kind_count);
    ++t.count[s];
    t.cost[s] += it.cost;
    t.top[s] = std::max(t.top[s], it.index);
  }
  return t;
}

/// The number of layers: constraints.n_layers, or one more than the table's largest.
[[nodiscard]] inline std::int64_t layer_count(const selection_constraints& constraints, std::int64_t top_layer) {
  const std::int64_t n_layers = constraints.n_layers > 0 ? constraints.n_layers : top_layer + 1;
  if (constraints.n_layers < 0) fail_argument("constraints.n_layers", "negative");
  if (n_layers > max_selection_layers) fail_argument("constraints.n_layers", "more than 2^22 layers");
  if (top_layer >= n_layers) {
    fail_argument("items", "layer " + std::to_string(top_layer) + " is not below n_layers " + std::to_string(n_layers));
  }
  return n_layers;
}

/// Each layer's counted cost (a container once, see the header comment); adds the
/// containers' least marginal cost to p.min_marginal_cost, sets p.nested and p.total_cost.
[[nodiscard]] inline std::vector<std::int64_t> counted_layer_costs(const slot_tally& t, std::size_t n_layers, selection_problem& p) {
  std::vector<std::int64_t> layer_cost(n_layers, 0);
  for (std::size_t l = 0; l < n_layers; ++l) {
    const auto kind_cost = [&](item_kind k) { return t.cost[l * item_kind_count + static_cast<std::size_t>(k)]; };
    const auto kind_count = [&](item_kind k) { return t.count[l * item_kind_count + static_cast<std::size_t>(k)]; };
    if (kind_count(item_kind::attention_group) > 0 && kind_count(item_kind::q_head) > 0) {
      fail_argument("items", "layer " + std::to_string(l) + " mixes attention_group and q_head items (which query heads form a group is not given)");
    }
    const std::int64_t attention =
        part_cost(l, "attention_block", kind_cost(item_kind::attention_group) + kind_cost(item_kind::q_head),
                  kind_count(item_kind::attention_group) + kind_count(item_kind::q_head), kind_cost(item_kind::attention_block),
                  kind_count(item_kind::attention_block), p.min_marginal_cost, p.nested);
    const std::int64_t mlp = part_cost(l, "mlp_block", kind_cost(item_kind::mlp_channel), kind_count(item_kind::mlp_channel),
                                       kind_cost(item_kind::mlp_block), kind_count(item_kind::mlp_block), p.min_marginal_cost, p.nested);
    const std::int64_t below_count = kind_count(item_kind::attention_group) + kind_count(item_kind::q_head) +
                                     kind_count(item_kind::attention_block) + kind_count(item_kind::mlp_channel) +
                                     kind_count(item_kind::mlp_block);
    layer_cost[l] = part_cost(l, "whole_layer", attention + mlp, below_count, kind_cost(item_kind::whole_layer),
                              kind_count(item_kind::whole_layer), p.min_marginal_cost, p.nested);
    p.total_cost += layer_cost[l];
  }
  return layer_cost;
}

/// Most removable cost per layer: the ratio's share of its counted cost, 0 when frozen.
[[nodiscard]] inline std::vector<std::int64_t> layer_caps(const selection_constraints& constraints, std::int64_t n_layers,
                                                          const std::vector<std::int64_t>& layer_cost) {
  if (constraints.freeze_first_layers < 0) fail_argument("constraints.freeze_first_layers", "negative");
  if (constraints.freeze_last_layers < 0) fail_argument("constraints.freeze_last_layers", "negative");
  const bool per_layer = !constraints.layer_max_prune_ratio.empty();
  if (per_layer) require_size("constraints.layer_max_prune_ratio", static_cast<std::int64_t>(constraints.layer_max_prune_ratio.size()), n_layers);
  auto check_ratio = [](double r, const std::string& where) {
    if (!(r >= 0.0 && r <= 1.0)) fail_argument("constraints.max_layer_prune_ratio", "must lie in [0, 1], got " + describe_value(r) + where);
  };
  check_ratio(constraints.max_layer_prune_ratio, "");
  std::vector<std::int64_t> cap(layer_cost.size(), 0);
  for (std::size_t l = 0; l < cap.size(); ++l) {
    const double ratio = per_layer ? constraints.layer_max_prune_ratio[l] : constraints.max_layer_prune_ratio;
    if (per_layer) check_ratio(ratio, " at layer " + std::to_string(l));
    const auto layer = static_cast<std::int64_t>(l);
    const bool frozen = layer < constraints.freeze_first_layers || layer >= n_layers - constraints.freeze_last_layers;
    cap[l] = frozen ? 0 : floor_share(ratio, layer_cost[l]);
  }
  return cap;
}

/// Most removable items per (layer, kind): the count less what the min_kept rules keep.
[[nodiscard]] inline std::vector<std::int64_t> slot_caps(const selection_constraints& constraints, std::int64_t n_layers,
                                                         const std::vector<std::int64_t>& slot_count) {
  std::vector<std::int64_t> cap = slot_count;
  for (std::size_t r = 0; r < constraints.min_kept.size(); ++r) {
    const auto& rule = constraints.min_kept[r];
    const std::string where = " (rule " + std::to_string(r) + ")";
    if (static_cast<std::size_t>(rule.kind) >= item_kind_count) fail_argument("constraints.min_kept", "unknown kind" + where);
    if (rule.count < 0) fail_argument("constraints.min_kept", "negative count" + where);
    if (rule.layer < -1 || rule.layer >= n_layers) fail_argument("constraints.min_kept", "layer " + std::to_string(rule.layer) + " out of range" + where);
    const std::size_t first = rule.layer < 0 ? 0 : static_cast<std::size_t>(rule.layer);
    const std::size_t last = rule.layer < 0 ? static_cast<std::size_t>(n_layers) : first + 1;
    for (std::size_t l = first; l < last; ++l) {
      const std::size_t s = l * item_kind_count + static_cast<std::size_t>(rule.kind);
      if (rule.layer < 0 && slot_count[s] == 0) continue;
      if (slot_count[s] < rule.count) {
        fail_argument("constraints.min_kept", "layer " + std::to_string(l) + " has " + std::to_string(slot_count[s]) + " " +
                                                  std::string(name_of(rule.kind)) + " items, cannot keep " + std::to_string(rule.count) + where);
      }
      cap[s] = std::min(cap[s], slot_count[s] - rule.count);
    }
  }
  return cap;
}

/// Removing a container removes what it holds: a min_kept rule that binds inside it
/// (on any kind it holds) forbids removing the container.
inline void close_bound_containers(std::vector<std::int64_t>& cap, const std::vector<std::int64_t>& slot_count, std::size_t n_layers) {
  for (std::size_t l = 0; l < n_layers; ++l) {
    const std::size_t base = l * item_kind_count;
    const auto binds = [&](item_kind k) { return cap[base + static_cast<std::size_t>(k)] < slot_count[base + static_cast<std::size_t>(k)]; };
    bool below = false;
    for (std::size_t k = 0; k < item_kind_count; ++k) {
      if (static_cast<item_kind>(k) != item_kind::whole_layer) below = below || binds(static_cast<item_kind>(k));
    }
    if (below) cap[base + static_cast<std::size_t>(item_kind::whole_layer)] = 0;
    if (binds(item_kind::attention_group) || binds(item_kind::q_head)) cap[base + static_cast<std::size_t>(item_kind::attention_block)] = 0;
    if (binds(item_kind::mlp_channel)) cap[base + static_cast<std::size_t>(item_kind::mlp_block)] = 0;
  }
}

/// Validates the table, the budget and the constraints (see the header comment) and
/// precomputes the caps; `visit(position, item)` sees every item during the pass
/// that checks it (the greedy stores score keys there).
template <typename Scalar, typename Visit>
[[nodiscard]] selection_problem prepare_selection(std::span<const selection_item<Scalar>> items, std::int64_t budget,
                                                  const selection_constraints& constraints, Visit&& visit) {
  selection_problem p;
  slot_tally t = tally_items(items, p.min_marginal_cost, visit);
  p.n_layers = layer_count(constraints, t.top_layer);
  const auto n_layers = static_cast<std::size_t>(p.n_layers);
  t.grow(n_layers * item_kind_count);
  duplicate_check<Scalar> duplicates(items, t.count, t.top);
  for (std::size_t i = 0; i < items.size(); ++i) duplicates(i);
  duplicates.finish();
  const std::vector<std::int64_t> layer_cost = counted_layer_costs(t, n_layers, p);
  if (budget < 0 || budget > p.total_cost) {
    fail_argument("budget", std::to_string(budget) + " lies outside [0, total cost " + std::to_string(p.total_cost) + "]");
  }
  p.budget = budget;
  p.layer_cap = layer_caps(constraints, p.n_layers, layer_cost);
  p.slot_cap = slot_caps(constraints, p.n_layers, t.count);
  close_bound_containers(p.slot_cap, t.count, n_layers);
  return p;
}

}  // namespace detail

/// Total cost of a table: the sum of its layers' costs, where a container that holds
/// finer items (see the header comment) counts once. The base of a budget fraction.
template <typename Scalar>
[[nodiscard]] std::int64_t selection_total_cost(std::span<const selection_item<Scalar>> items) {
  return detail::prepare_selection(items, 0, {}, [](std::size_t, const selection_item<Scalar>&) {}).total_cost;
}

NASHPRUNE_END_NAMESPACE
