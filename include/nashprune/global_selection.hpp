// nashprune/global_selection.hpp — global selection of structures to prune under a
// parameter (or byte) budget: the fractional-knapsack greedy and an exact 0/1 solver.
//
// Source: llama-pruning-toolkit.en.md, "Global score (fractional knapsack)".
// Every prunable structure of the model is one row of an item table: (layer, kind,
// index, importance I_i >= 0, cost c_i >= 1 in parameters or bytes). With a budget B
// (the most we may remove), the seed's fractional relaxation is
//
//     minimise sum_i I_i x_i   subject to   sum_i c_i x_i = B,  0 <= x_i <= 1,
//
// solved by removing items in ascending score s_i = I_i / c_i. Its value at a removed
// amount A is the convex, piecewise-linear F(A) ("lower_bound" below): no 0/1
// selection that removes at least A can remove less importance.
//
// Greedy (select_greedy): walk the items by ascending score (ties: table position,
// so the order is deterministic) and remove each one that fits the remaining budget
// and every constraint. rule::stop_at_first_misfit is the seed's reference, which
// stops at the first item that does not fit the budget; rule::fill (ours, default)
// keeps going with the later items that still fit, so it removes at least as much.
// Guarantee: the result removes A <= B, and every eligible item it kept either costs
// more than B - A or is refused by a constraint. Optimality gap: for any selection
// removing at least A, greedy objective - optimum <= objective - F(A); the result
// carries F(A) as a certificate. Without constraints the gap is zero when nothing was
// skipped, and at most I(Q) - s_k c(Q) otherwise (Q = items taken after the first
// misfit k), since F has slope >= s_k beyond the prefix.
//
// Exact (solve_exact): minimise the removed importance over all 0/1 selections that
// respect the constraints and remove an amount in [L, B], where L defaults to the
// greedy's achieved amount. The answer therefore removes at least as much as the
// greedy and no more importance. Two algorithms (automatic picks DP when it applies):
//  - dynamic programming over the removed cost in units of g = gcd of the eligible
//    costs (LLaMA costs share g = n_embd): O(n · B / g) time, n · B / g bits for the
//    decisions, at most dp_max_cells (default 2e8 = 25 MB). Only when the per-layer
//    ratio and min_kept constraints cannot bind (frozen layers are simply dropped);
//  - depth-first branch and bound over items by ascending score, pruned with the
//    bound F restricted to the undecided items, for every constraint: at most
//    exact_max_items (default 4096) eligible items and options.max_nodes nodes;
//    hitting the node limit returns the best selection found with proven_optimal =
//    false. Typical limits (benchmarks/bench_selection.cpp): thousands of items
//    with uncorrelated scores in milliseconds; strongly correlated instances
//    (I = c + 100) exhaust 2e7 nodes (about 0.25 s) from a few hundred items.
// Both are optimal to a relative 1e-12 on the objective.
//
// Constraints (checked at the boundary; impossible ones name the layer):
//  - freeze_first_layers / freeze_last_layers: items there are never removed;
//  - max_layer_prune_ratio (or one ratio per layer): removed cost of a layer <=
//    floor(ratio * cost of that layer's items);
//  - min_kept rules: in a layer (or every layer holding that kind), keep at least
//    `count` items of a kind; a layer with fewer items than the rule asks is an error;
//  - granularities may not overlap within a layer: a whole_layer item excludes every
//    other kind there, attention_block excludes attention_group and q_head,
//    attention_group excludes q_head, mlp_block excludes mlp_channel (otherwise a
//    parameter would be counted twice). The GQA-consistent granularities of the
//    structural core map as attention_group = a KV head with its Q heads (whole
//    groups), q_head = one query head (single heads), mlp_channel = gate/up row plus
//    down column.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <vector>

#include "config.hpp"
#include "detail/validate.hpp"

NASHPRUNE_BEGIN_NAMESPACE

enum class item_kind : std::uint8_t { attention_group, q_head, mlp_channel, attention_block, mlp_block, whole_layer };
inline constexpr std::size_t item_kind_count = 6;
inline constexpr std::array<std::string_view, item_kind_count> item_kind_names{
    "attention_group", "q_head", "mlp_channel", "attention_block", "mlp_block", "whole_layer"};

[[nodiscard]] constexpr std::string_view name_of(item_kind kind) {
  return item_kind_names[static_cast<std::size_t>(kind)];
}

[[nodiscard]] constexpr std::optional<item_kind> find_item_kind(std::string_view name) {
  for (std::size_t k = 0; k < item_kind_count; ++k) {
    if (item_kind_names[k] == name) return static_cast<item_kind>(k);
  }
  return std::nullopt;
}

template <typename Scalar>
struct selection_item {
  std::int64_t layer = 0;
  item_kind kind = item_kind::mlp_channel;
  std::int64_t index = 0;
  Scalar importance = 0;
  std::int64_t cost = 1;  // parameters or bytes; at least 1
};

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

enum class greedy_rule { fill, stop_at_first_misfit };

enum class exact_algorithm { automatic, branch_and_bound, dynamic_programming };

struct selection_options {
  greedy_rule rule = greedy_rule::fill;
  exact_algorithm algorithm = exact_algorithm::automatic;
  std::int64_t max_nodes = 20'000'000;              // branch and bound: search nodes before giving up
  std::int64_t exact_max_items = 4096;              // branch and bound: eligible items accepted
  std::int64_t dp_max_cells = 200'000'000;          // dynamic programming: items x (B / g + 1) decision bits
  std::optional<std::int64_t> exact_min_removed;    // exact: L (default: the greedy's amount)
};

template <typename Scalar>
struct selection_result {
  std::vector<std::int64_t> pruned;  // table positions, ascending
  std::int64_t budget = 0;
  std::int64_t achieved = 0;         // removed cost, <= budget
  std::int64_t total_cost = 0;
  Scalar objective = 0;              // removed importance
  Scalar lower_bound = 0;            // F(achieved) over unfrozen items: no selection removing >= achieved does better
  bool feasible = true;              // exact: a selection in [L, B] was found
  bool proven_optimal = false;       // greedy: objective == lower_bound; exact: search completed
  std::int64_t nodes = 0;            // exact: branch-and-bound nodes, or dynamic-programming cells
  exact_algorithm algorithm = exact_algorithm::automatic;  // exact: the algorithm that ran
  std::int64_t refused_by_constraints = 0;  // greedy: items that fit the budget but broke a constraint

  [[nodiscard]] double achieved_fraction() const {
    return total_cost > 0 ? static_cast<double>(achieved) / static_cast<double>(total_cost) : 0.0;
  }
};

/// floor(fraction * total), up to a relative 1e-9: the cost a budget fraction allows. fraction in [0, 1].
[[nodiscard]] inline std::int64_t budget_from_fraction(double fraction, std::int64_t total) {
  if (!(fraction >= 0.0 && fraction <= 1.0)) {
    detail::fail_argument("budget.fraction", "must lie in [0, 1], got " + detail::describe_value(fraction));
  }
  if (total < 0) detail::fail_argument("total", "negative total cost " + std::to_string(total));
  // A decimal fraction that stands for an exact count (0.3 of 10) lands on that count.
  const auto exact = static_cast<long double>(fraction) * static_cast<long double>(total);
  const long double nearest = std::round(exact);
  const long double rounded = std::fabs(exact - nearest) <= 1e-9L * std::max(1.0L, exact) ? nearest : std::floor(exact);
  return std::min(total, static_cast<std::int64_t>(rounded));
}

namespace detail {

inline constexpr std::int64_t max_selection_layers = std::int64_t{1} << 22;

/// Items are visited in score order, a random walk through the table: fetching this
/// many ahead hides most of the cache misses.
inline constexpr std::size_t prefetch_distance = 32;

/// The validated table: per-item slot (layer * kinds + kind), per-layer cost caps,
/// per-slot count caps, and the score order.
struct selection_problem {
  std::int64_t n_layers = 0;
  std::int64_t total_cost = 0;
  std::int64_t budget = 0;
  std::vector<std::int64_t> layer_cap;     // most removable cost per layer (0 if frozen)
  std::vector<std::int64_t> slot_cap;      // most removable items per (layer, kind)
  std::vector<std::uint32_t> order;        // positions by ascending score, ties by position
};

[[nodiscard]] inline std::string item_at(std::size_t position) { return at_index(static_cast<std::int64_t>(position)); }

inline std::size_t slot_of(std::int64_t layer, item_kind kind) {
  return static_cast<std::size_t>(layer) * item_kind_count + static_cast<std::size_t>(kind);
}

/// Fails when two items share (layer, kind, index): one bitmap per slot whose indices
/// are dense (the usual case, one pass), a sort for slots with sparse indices.
template <typename Scalar>
void require_unique_items(std::span<const selection_item<Scalar>> items, std::size_t n_slots) {
  std::vector<std::int64_t> count(n_slots, 0), top(n_slots, -1);
  for (const auto& it : items) {
    const std::size_t s = slot_of(it.layer, it.kind);
    ++count[s];
    top[s] = std::max(top[s], it.index);
  }
  auto duplicate = [&](std::size_t first, std::size_t second) {
    const auto& it = items[second];
    fail_argument("items", "item " + std::to_string(second) + " repeats layer " + std::to_string(it.layer) + ", kind " +
                               std::string(name_of(it.kind)) + ", index " + std::to_string(it.index) + " of item " +
                               std::to_string(first));
  };
  std::vector<std::int64_t> offset(n_slots, -1);
  std::int64_t bitmap_size = 0;
  bool any_sparse = false;
  for (std::size_t s = 0; s < n_slots; ++s) {
    if (count[s] < 2) continue;
    if (top[s] < 8 * count[s] + 64) {
      offset[s] = bitmap_size;
      bitmap_size += top[s] + 1;
    } else {
      any_sparse = true;
    }
  }
  std::vector<bool> seen(static_cast<std::size_t>(bitmap_size), false);
  for (std::size_t i = 0; i < items.size(); ++i) {
    const std::size_t s = slot_of(items[i].layer, items[i].kind);
    if (offset[s] < 0) continue;
    const auto bit = static_cast<std::size_t>(offset[s] + items[i].index);
    if (seen[bit]) {
      for (std::size_t j = 0; j < i; ++j) {
        if (items[j].layer == items[i].layer && items[j].kind == items[i].kind && items[j].index == items[i].index) duplicate(j, i);
      }
    }
    seen[bit] = true;
  }
  if (!any_sparse) return;
  std::vector<std::tuple<std::size_t, std::int64_t, std::size_t>> sparse;  // slot, index, position
  for (std::size_t i = 0; i < items.size(); ++i) {
    const std::size_t s = slot_of(items[i].layer, items[i].kind);
    if (offset[s] < 0 && count[s] >= 2) sparse.emplace_back(s, items[i].index, i);
  }
  std::sort(sparse.begin(), sparse.end());
  for (std::size_t k = 1; k < sparse.size(); ++k) {
    if (std::get<0>(sparse[k]) == std::get<0>(sparse[k - 1]) && std::get<1>(sparse[k]) == std::get<1>(sparse[k - 1])) {
      duplicate(std::get<2>(sparse[k - 1]), std::get<2>(sparse[k]));
    }
  }
}

/// Order-preserving key of a non-negative score computed in Scalar (IEEE bits:
/// 32 for float, 64 for double).
template <typename Scalar>
[[nodiscard]] inline auto score_key(const selection_item<Scalar>& it) {
  using key_type = std::conditional_t<sizeof(Scalar) <= 4, std::uint32_t, std::uint64_t>;
  using real = std::conditional_t<sizeof(Scalar) <= 4, float, double>;
  const real score = static_cast<real>(it.importance) / static_cast<real>(it.cost);
  key_type bits = 0;
  static_assert(sizeof(bits) == sizeof(score));
  std::memcpy(&bits, &score, sizeof(bits));
  return bits;
}

/// Positions sorted by ascending score, ties by position: a stable LSD radix sort on
/// 11-bit digits that skips every digit all keys share.
template <typename Scalar>
[[nodiscard]] std::vector<std::uint32_t> score_order(std::span<const selection_item<Scalar>> items) {
  using key_type = decltype(score_key(items[0]));
  constexpr int bits = 11;
  constexpr int digits = (8 * static_cast<int>(sizeof(key_type)) + bits - 1) / bits;
  constexpr std::size_t buckets = std::size_t{1} << bits;
  const std::size_t n = items.size();
  struct keyed {
    key_type key;
    std::uint32_t position;
  };
  std::vector<keyed> a(n), b(n);
  std::vector<std::uint32_t> histogram(digits * buckets, 0);
  for (std::size_t i = 0; i < n; ++i) {
    const key_type key = score_key(items[i]);
    a[i] = {key, static_cast<std::uint32_t>(i)};
    for (int d = 0; d < digits; ++d) ++histogram[static_cast<std::size_t>(d) * buckets + ((key >> (bits * d)) & (buckets - 1))];
  }
  for (int d = 0; d < digits; ++d) {
    std::uint32_t* h = histogram.data() + static_cast<std::size_t>(d) * buckets;
    if (h[(a[0].key >> (bits * d)) & (buckets - 1)] == n) continue;  // every key shares this digit
    std::uint32_t sum = 0;
    for (std::size_t k = 0; k < buckets; ++k) {
      const std::uint32_t c = h[k];
      h[k] = sum;
      sum += c;
    }
    for (const auto& k : a) b[h[(k.key >> (bits * d)) & (buckets - 1)]++] = k;
    a.swap(b);
  }
  std::vector<std::uint32_t> order(n);
  for (std::size_t i = 0; i < n; ++i) order[i] = a[i].position;
  return order;
}

inline std::int64_t floor_share(double ratio, std::int64_t cost) {
  return static_cast<std::int64_t>(std::floor(static_cast<long double>(ratio) * static_cast<long double>(cost)));
}

inline bool granularities_overlap(unsigned present) {
  auto has = [present](item_kind k) { return (present >> static_cast<unsigned>(k)) & 1U; };
  const unsigned count = static_cast<unsigned>(std::popcount(present));
  if (has(item_kind::whole_layer) && count > 1) return true;
  if (has(item_kind::attention_block) && (has(item_kind::attention_group) || has(item_kind::q_head))) return true;
  if (has(item_kind::attention_group) && has(item_kind::q_head)) return true;
  return has(item_kind::mlp_block) && has(item_kind::mlp_channel);
}

/// Validates the table, the budget and the constraints (see the header comment) and
/// precomputes the caps and the score order.
template <typename Scalar>
[[nodiscard]] selection_problem prepare_selection(std::span<const selection_item<Scalar>> items, std::int64_t budget,
                                                  const selection_constraints& constraints) {
  if (items.empty()) fail_argument("items", "the item table is empty");
  if (items.size() >= std::numeric_limits<std::uint32_t>::max()) fail_argument("items", "more than 2^32 - 1 items");
  selection_problem p;
  std::int64_t top_layer = 0;
  for (std::size_t i = 0; i < items.size(); ++i) {
    const auto& it = items[i];
    if (it.layer < 0) fail_argument("items", "negative layer " + std::to_string(it.layer) + " at " + item_at(i));
    if (static_cast<std::size_t>(it.kind) >= item_kind_count) fail_argument("items", "unknown kind at " + item_at(i));
    if (it.index < 0) fail_argument("items", "negative index " + std::to_string(it.index) + " at " + item_at(i));
    if (!std::isfinite(it.importance) || it.importance < 0) {
      fail_domain("items", "importance " + describe_value(it.importance) + " is not finite and non-negative at " + item_at(i));
    }
    if (it.cost <= 0) fail_domain("items", "cost " + std::to_string(it.cost) + " is not positive at " + item_at(i));
    if (__builtin_add_overflow(p.total_cost, it.cost, &p.total_cost)) fail_argument("items", "total cost overflows at " + item_at(i));
    top_layer = std::max(top_layer, it.layer);
  }
  p.n_layers = constraints.n_layers > 0 ? constraints.n_layers : top_layer + 1;
  if (constraints.n_layers < 0) fail_argument("constraints.n_layers", "negative");
  if (p.n_layers > max_selection_layers) fail_argument("constraints.n_layers", "more than 2^22 layers");
  if (top_layer >= p.n_layers) {
    fail_argument("items", "layer " + std::to_string(top_layer) + " is not below n_layers " + std::to_string(p.n_layers));
  }
  if (budget < 0 || budget > p.total_cost) {
    fail_argument("budget", std::to_string(budget) + " lies outside [0, total cost " + std::to_string(p.total_cost) + "]");
  }
  p.budget = budget;

  const auto n_layers = static_cast<std::size_t>(p.n_layers);
  const std::size_t n_slots = n_layers * item_kind_count;
  std::vector<std::int64_t> layer_cost(n_layers, 0), slot_count(n_slots, 0);
  std::vector<unsigned> present(n_layers, 0);
  for (const auto& it : items) {
    layer_cost[static_cast<std::size_t>(it.layer)] += it.cost;
    ++slot_count[slot_of(it.layer, it.kind)];
    present[static_cast<std::size_t>(it.layer)] |= 1U << static_cast<unsigned>(it.kind);
  }
  for (std::size_t l = 0; l < n_layers; ++l) {
    if (granularities_overlap(present[l])) {
      fail_argument("items", "layer " + std::to_string(l) + " mixes overlapping granularities (a parameter would count twice)");
    }
  }
  require_unique_items(items, n_slots);

  if (constraints.freeze_first_layers < 0) fail_argument("constraints.freeze_first_layers", "negative");
  if (constraints.freeze_last_layers < 0) fail_argument("constraints.freeze_last_layers", "negative");
  const bool per_layer = !constraints.layer_max_prune_ratio.empty();
  if (per_layer) require_size("constraints.layer_max_prune_ratio", static_cast<std::int64_t>(constraints.layer_max_prune_ratio.size()), p.n_layers);
  auto check_ratio = [](double r, const std::string& where) {
    if (!(r >= 0.0 && r <= 1.0)) fail_argument("constraints.max_layer_prune_ratio", "must lie in [0, 1], got " + describe_value(r) + where);
  };
  check_ratio(constraints.max_layer_prune_ratio, "");
  p.layer_cap.assign(n_layers, 0);
  for (std::size_t l = 0; l < n_layers; ++l) {
    const double ratio = per_layer ? constraints.layer_max_prune_ratio[l] : constraints.max_layer_prune_ratio;
    if (per_layer) check_ratio(ratio, " at layer " + std::to_string(l));
    const auto layer = static_cast<std::int64_t>(l);
    const bool frozen = layer < constraints.freeze_first_layers || layer >= p.n_layers - constraints.freeze_last_layers;
    p.layer_cap[l] = frozen ? 0 : floor_share(ratio, layer_cost[l]);
  }
  p.slot_cap = slot_count;
  for (std::size_t r = 0; r < constraints.min_kept.size(); ++r) {
    const auto& rule = constraints.min_kept[r];
    const std::string where = " (rule " + std::to_string(r) + ")";
    if (static_cast<std::size_t>(rule.kind) >= item_kind_count) fail_argument("constraints.min_kept", "unknown kind" + where);
    if (rule.count < 0) fail_argument("constraints.min_kept", "negative count" + where);
    if (rule.layer < -1 || rule.layer >= p.n_layers) fail_argument("constraints.min_kept", "layer " + std::to_string(rule.layer) + " out of range" + where);
    const std::size_t first = rule.layer < 0 ? 0 : static_cast<std::size_t>(rule.layer);
    const std::size_t last = rule.layer < 0 ? n_layers : first + 1;
    for (std::size_t l = first; l < last; ++l) {
      const std::size_t s = l * item_kind_count + static_cast<std::size_t>(rule.kind);
      if (rule.layer < 0 && slot_count[s] == 0) continue;
      if (slot_count[s] < rule.count) {
        fail_argument("constraints.min_kept", "layer " + std::to_string(l) + " has " + std::to_string(slot_count[s]) + " " +
                                                  std::string(name_of(rule.kind)) + " items, cannot keep " + std::to_string(rule.count) + where);
      }
      p.slot_cap[s] = std::min(p.slot_cap[s], slot_count[s] - rule.count);
    }
  }
  p.order = score_order(items);
  return p;
}

/// F(amount): the least importance a fractional selection of unfrozen items removes
/// to reach `amount`, walking the score order.
template <typename Scalar>
[[nodiscard]] Scalar fractional_lower_bound(std::span<const selection_item<Scalar>> items, const selection_problem& p,
                                            std::int64_t amount) {
  long double bound = 0;
  std::int64_t need = amount;
  const std::size_t n = p.order.size();
  for (std::size_t k = 0; k < n && need > 0; ++k) {
    if (k + prefetch_distance < n) __builtin_prefetch(&items[p.order[k + prefetch_distance]]);
    const auto& it = items[p.order[k]];
    if (p.layer_cap[static_cast<std::size_t>(it.layer)] == 0) continue;
    const std::int64_t take = std::min(need, it.cost);
    bound += static_cast<long double>(it.importance) * take / it.cost;
    need -= take;
  }
  return static_cast<Scalar>(bound);
}

}  // namespace detail

/// The greedy of the header comment. `budget` is the most cost that may be removed.
template <typename Scalar>
[[nodiscard]] selection_result<Scalar> select_greedy(std::span<const selection_item<Scalar>> items, std::int64_t budget,
                                                     const selection_constraints& constraints = {},
                                                     const selection_options& options = {}) {
  const detail::selection_problem p = detail::prepare_selection(items, budget, constraints);
  selection_result<Scalar> r;
  r.budget = budget;
  r.total_cost = p.total_cost;
  std::int64_t min_cost = std::numeric_limits<std::int64_t>::max();
  for (const auto& it : items) min_cost = std::min(min_cost, it.cost);
  std::vector<std::int64_t> layer_removed(p.layer_cap.size(), 0), slot_removed(p.slot_cap.size(), 0);
  std::int64_t remaining = budget;
  long double objective = 0;
  std::vector<std::uint8_t> taken(items.size(), 0);
  const std::size_t n = p.order.size();
  for (std::size_t k = 0; k < n; ++k) {
    if (remaining < min_cost) break;  // nothing else can fit
    if (k + detail::prefetch_distance < n) __builtin_prefetch(&items[p.order[k + detail::prefetch_distance]]);
    const std::uint32_t pos = p.order[k];
    const auto& it = items[pos];
    if (it.cost > remaining) {
      if (options.rule == greedy_rule::stop_at_first_misfit) break;
      continue;
    }
    const auto layer = static_cast<std::size_t>(it.layer);
    const std::size_t slot = detail::slot_of(it.layer, it.kind);
    if (layer_removed[layer] + it.cost > p.layer_cap[layer] || slot_removed[slot] >= p.slot_cap[slot]) {
      ++r.refused_by_constraints;
      continue;
    }
    layer_removed[layer] += it.cost;
    ++slot_removed[slot];
    remaining -= it.cost;
    objective += it.importance;
    taken[pos] = 1;
  }
  for (std::size_t i = 0; i < taken.size(); ++i) {
    if (taken[i]) r.pruned.push_back(static_cast<std::int64_t>(i));
  }
  r.achieved = budget - remaining;
  r.objective = static_cast<Scalar>(objective);
  r.lower_bound = detail::fractional_lower_bound(items, p, r.achieved);
  r.proven_optimal = r.objective <= r.lower_bound;
  return r;
}

namespace detail {

/// Depth-first branch and bound of solve_exact over the eligible items in score order.
template <typename Scalar>
class exact_search {
 public:
  exact_search(std::span<const selection_item<Scalar>> items, const selection_problem& p, std::int64_t low,
               std::int64_t high, std::int64_t max_nodes)
      : items_(items), p_(p), low_(low), high_(high), max_nodes_(max_nodes) {
    for (const std::uint32_t pos : p.order) {
      const auto& it = items[pos];
      if (p.layer_cap[static_cast<std::size_t>(it.layer)] > 0 && p.slot_cap[slot_of(it.layer, it.kind)] > 0) {
        candidates_.push_back(pos);
      }
    }
    prefix_cost_.assign(candidates_.size() + 1, 0);
    prefix_importance_.assign(candidates_.size() + 1, 0);
    for (std::size_t k = 0; k < candidates_.size(); ++k) {
      prefix_cost_[k + 1] = prefix_cost_[k] + items[candidates_[k]].cost;
      prefix_importance_[k + 1] = prefix_importance_[k] + static_cast<long double>(items[candidates_[k]].importance);
    }
    layer_removed_.assign(p.layer_cap.size(), 0);
    slot_removed_.assign(p.slot_cap.size(), 0);
  }

  [[nodiscard]] std::size_t candidate_count() const { return candidates_.size(); }
  [[nodiscard]] const std::vector<std::uint32_t>& candidates() const { return candidates_; }

  void set_incumbent(long double objective, std::vector<std::uint32_t> chosen) {
    best_ = objective;
    best_chosen_ = std::move(chosen);
    found_ = true;
  }

  /// Runs the search; false when the node limit stopped it.
  bool run() {
    search(0, 0, 0);
    return !aborted_;
  }

  [[nodiscard]] long double root_bound() const { return bound_from(0, low_); }
  [[nodiscard]] bool found() const { return found_; }
  [[nodiscard]] long double best() const { return best_; }
  [[nodiscard]] const std::vector<std::uint32_t>& best_chosen() const { return best_chosen_; }
  [[nodiscard]] std::int64_t nodes() const { return nodes_; }

 private:
  /// Least importance the candidates from `depth` on add to reach `need` (fractional).
  [[nodiscard]] long double bound_from(std::size_t depth, std::int64_t need) const {
    if (need <= 0) return 0;
    const std::int64_t target = prefix_cost_[depth] + need;
    const auto end = std::lower_bound(prefix_cost_.begin() + static_cast<std::ptrdiff_t>(depth), prefix_cost_.end(), target);
    const auto j = static_cast<std::size_t>(end - prefix_cost_.begin());  // prefix_cost_[j] >= target
    if (j >= prefix_cost_.size()) return std::numeric_limits<long double>::infinity();
    const auto& last = items_[candidates_[j - 1]];
    const std::int64_t over = prefix_cost_[j] - target;
    return prefix_importance_[j] - prefix_importance_[depth] -
           static_cast<long double>(last.importance) * static_cast<long double>(over) / static_cast<long double>(last.cost);
  }

  [[nodiscard]] bool worse_than_incumbent(long double value) const {
    return found_ && value >= best_ - 1e-12L * std::max(1.0L, std::fabs(best_));
  }

  void search(std::size_t depth, std::int64_t cost, long double importance) {
    if (aborted_) return;
    if (++nodes_ > max_nodes_) {
      aborted_ = true;
      return;
    }
    if (cost >= low_) {  // more removals only add importance
      if (!worse_than_incumbent(importance)) set_incumbent(importance, chosen_);
      return;
    }
    const long double bound = importance + bound_from(depth, low_ - cost);
    if (!std::isfinite(bound) || worse_than_incumbent(bound)) return;
    const auto& it = items_[candidates_[depth]];
    const auto layer = static_cast<std::size_t>(it.layer);
    const std::size_t slot = slot_of(it.layer, it.kind);
    if (cost + it.cost <= high_ && layer_removed_[layer] + it.cost <= p_.layer_cap[layer] &&
        slot_removed_[slot] < p_.slot_cap[slot]) {
      layer_removed_[layer] += it.cost;
      ++slot_removed_[slot];
      chosen_.push_back(candidates_[depth]);
      search(depth + 1, cost + it.cost, importance + static_cast<long double>(it.importance));
      chosen_.pop_back();
      --slot_removed_[slot];
      layer_removed_[layer] -= it.cost;
    }
    search(depth + 1, cost, importance);
  }

  std::span<const selection_item<Scalar>> items_;
  const selection_problem& p_;
  std::int64_t low_, high_, max_nodes_;
  std::vector<std::uint32_t> candidates_;
  std::vector<std::int64_t> prefix_cost_;
  std::vector<long double> prefix_importance_;
  std::vector<std::int64_t> layer_removed_, slot_removed_;
  std::vector<std::uint32_t> chosen_, best_chosen_;
  long double best_ = 0;
  bool found_ = false, aborted_ = false;
  std::int64_t nodes_ = 0;
};

}  // namespace detail

namespace detail {

/// True when a per-layer ratio or a min_kept rule could refuse some selection of the
/// eligible items (then only branch and bound is exact).
template <typename Scalar>
[[nodiscard]] bool constraints_can_bind(std::span<const selection_item<Scalar>> items, const selection_problem& p,
                                        const std::vector<std::uint32_t>& candidates) {
  std::vector<std::int64_t> layer_cost(p.layer_cap.size(), 0), slot_count(p.slot_cap.size(), 0);
  for (const std::uint32_t pos : candidates) {
    layer_cost[static_cast<std::size_t>(items[pos].layer)] += items[pos].cost;
    ++slot_count[slot_of(items[pos].layer, items[pos].kind)];
  }
  for (std::size_t l = 0; l < layer_cost.size(); ++l) {
    if (layer_cost[l] > p.layer_cap[l]) return true;
  }
  for (std::size_t s = 0; s < slot_count.size(); ++s) {
    if (slot_count[s] > p.slot_cap[s]) return true;
  }
  return false;
}

/// 0/1 knapsack by dynamic programming over the removed cost in units of the costs'
/// gcd: least importance removing exactly w units, for every w <= high; the best w in
/// [low, high] (ties: the larger removal), traced back through one decision bit per
/// (item, w). Nothing when no amount in [low, high] is reachable.
template <typename Scalar>
[[nodiscard]] std::optional<std::vector<std::uint32_t>> knapsack_by_cost(std::span<const selection_item<Scalar>> items,
                                                                         const std::vector<std::uint32_t>& candidates,
                                                                         std::int64_t unit, std::int64_t low, std::int64_t high) {
  const auto width = static_cast<std::size_t>(high / unit) + 1;
  const std::int64_t first = (low + unit - 1) / unit;
  std::vector<double> best(width, std::numeric_limits<double>::infinity());
  best[0] = 0;
  std::vector<std::uint64_t> decided((candidates.size() * width + 63) / 64, 0);
  for (std::size_t k = 0; k < candidates.size(); ++k) {
    const auto& it = items[candidates[k]];
    const auto w = static_cast<std::size_t>(it.cost / unit);
    const auto importance = static_cast<double>(it.importance);
    for (std::size_t c = width; c-- > w;) {
      const double v = best[c - w] + importance;
      if (v < best[c]) {
        best[c] = v;
        const std::size_t bit = k * width + c;
        decided[bit / 64] |= std::uint64_t{1} << (bit % 64);
      }
    }
  }
  std::size_t chosen = width;
  for (auto c = static_cast<std::size_t>(first); c < width; ++c) {
    if (std::isfinite(best[c]) && (chosen == width || best[c] <= best[chosen])) chosen = c;
  }
  if (chosen == width) return std::nullopt;
  std::vector<std::uint32_t> taken;
  for (std::size_t k = candidates.size(), c = chosen; k-- > 0;) {
    const std::size_t bit = k * width + c;
    if ((decided[bit / 64] >> (bit % 64)) & 1U) {
      taken.push_back(candidates[k]);
      c -= static_cast<std::size_t>(items[candidates[k]].cost / unit);
    }
  }
  return taken;
}

}  // namespace detail

/// The exact solver of the header comment: least removed importance among the
/// constrained selections removing between L (default: the greedy's amount) and B.
template <typename Scalar>
[[nodiscard]] selection_result<Scalar> solve_exact(std::span<const selection_item<Scalar>> items, std::int64_t budget,
                                                   const selection_constraints& constraints = {},
                                                   const selection_options& options = {}) {
  selection_options greedy_options = options;
  greedy_options.rule = greedy_rule::fill;
  const selection_result<Scalar> greedy = select_greedy(items, budget, constraints, greedy_options);
  const std::int64_t low = options.exact_min_removed.value_or(greedy.achieved);
  if (low < 0 || low > budget) {
    detail::fail_argument("exact_min_removed", std::to_string(low) + " lies outside [0, budget " + std::to_string(budget) + "]");
  }
  if (options.max_nodes < 1) detail::fail_argument("max_nodes", "must be positive");
  const detail::selection_problem p = detail::prepare_selection(items, budget, constraints);
  detail::exact_search<Scalar> search(items, p, low, budget, options.max_nodes);
  selection_result<Scalar> r;
  r.budget = budget;
  r.total_cost = p.total_cost;
  auto finish = [&](const std::vector<std::uint32_t>& chosen) {
    r.pruned.assign(chosen.begin(), chosen.end());
    std::sort(r.pruned.begin(), r.pruned.end());
    long double objective = 0;
    for (const auto pos : r.pruned) {
      r.achieved += items[static_cast<std::size_t>(pos)].cost;
      objective += items[static_cast<std::size_t>(pos)].importance;
    }
    r.objective = static_cast<Scalar>(objective);
  };
  auto fail_infeasible = [&] {
    detail::fail_domain("exact_min_removed", "no selection within the constraints removes between " + std::to_string(low) +
                                                 " and " + std::to_string(budget));
  };
  // Dynamic programming when it applies and fits.
  const auto& candidates = search.candidates();
  std::int64_t unit = 0;
  for (const std::uint32_t pos : candidates) unit = std::gcd(unit, items[pos].cost);
  if (unit == 0) unit = 1;
  const bool binds = detail::constraints_can_bind(items, p, candidates);
  const long double cells = static_cast<long double>(candidates.size()) * static_cast<long double>(budget / unit + 1);
  const bool dp_fits = cells <= static_cast<long double>(options.dp_max_cells);
  if (options.algorithm == exact_algorithm::dynamic_programming && (binds || !dp_fits)) {
    detail::fail_argument("algorithm", binds ? "dynamic programming cannot honour per-layer ratio or min_kept constraints that bind here"
                                             : "dynamic programming needs more than dp_max_cells cells here");
  }
  if (options.algorithm == exact_algorithm::dynamic_programming || (options.algorithm == exact_algorithm::automatic && !binds && dp_fits)) {
    r.algorithm = exact_algorithm::dynamic_programming;
    r.nodes = static_cast<std::int64_t>(cells);
    const auto chosen = detail::knapsack_by_cost(items, candidates, unit, low, budget);
    if (!chosen) fail_infeasible();
    finish(*chosen);
    r.proven_optimal = true;
    r.lower_bound = r.objective;
    return r;
  }
  r.algorithm = exact_algorithm::branch_and_bound;
  if (static_cast<std::int64_t>(search.candidate_count()) > options.exact_max_items) {
    detail::fail_argument("items", std::to_string(search.candidate_count()) + " eligible items exceed the exact solver's limit of " +
                                       std::to_string(options.exact_max_items));
  }
  if (greedy.achieved >= low) {
    std::vector<std::uint32_t> chosen(greedy.pruned.begin(), greedy.pruned.end());
    search.set_incumbent(static_cast<long double>(greedy.objective), std::move(chosen));
  }
  const bool complete = search.run();
  r.nodes = search.nodes();
  r.feasible = search.found();
  r.proven_optimal = complete && search.found();
  if (search.found()) finish(search.best_chosen());
  if (complete && !search.found()) fail_infeasible();
  r.lower_bound = r.proven_optimal ? r.objective : static_cast<Scalar>(search.root_bound());
  return r;
}

NASHPRUNE_END_NAMESPACE
