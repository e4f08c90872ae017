// nashprune/exact_selection.hpp — the exact global selection: the least removed
// importance over every 0/1 selection that respects the constraints.
//
// solve_exact minimises the removed importance over all 0/1 selections that respect
// the constraints (selection_problem.hpp) and remove an amount in [L, B], where L
// defaults to the greedy's achieved amount (greedy_selection.hpp). The answer
// therefore removes at least as much as the greedy and no more importance. Two
// algorithms (automatic picks DP when it applies):
//  - dynamic programming over the removed cost in units of g = gcd of the eligible
//    costs (LLaMA costs share g = n_embd): O(n · B / g) time, n · B / g bits for the
//    decisions, at most dp_max_cells (default 2e8 = 25 MB). Only when the per-layer
//    ratio and min_kept constraints cannot bind (frozen layers are simply dropped);
//  - depth-first branch and bound over items by ascending score, pruned with the
//    bound F restricted to the undecided items, for every constraint: at most
//    max_items (default 4096) eligible items and max_nodes nodes; hitting the node
//    limit returns the best selection found with proven_optimal = false.
// Both are optimal to a relative 1e-12 on the objective.
// Containers (selection_items.hpp): branch and bound enforces the nesting (an item
// and a container around it are never both taken) and remains exact; dynamic
// programming cannot express it (automatic picks branch and bound, an explicit
// request is refused).
// Practical limits (BM_exact_* in benchmarks/bench_selection.cpp: costs uniform in
// [1, 1000], budget 30 % of the total, one core, CPU time):
//    instance                         items  branch and bound         dynamic programming
//    uncorrelated I ~ U(0, 10)         1000  0.8 ms (4.4e4 nodes)     0.15 s (1.4e8 cells)
//                                      4000  3.9 ms (2.0e5 nodes)     refused (2.4e9 cells)
//    near-equal scores I = c U(1,1.01) 1000  0.13 ms (2.3e3 nodes)    0.13 s
//    strongly correlated I = c + 100,   100  0.02 ms (385 nodes)      1.3 ms
//      removal pinned to [B - 20, B]    300  2e7 nodes, 0.26 s, not   12 ms, proven
//                                            proven (best found kept)
//                                      1000  same                     0.14 s, proven
// So: dynamic programming costs about 1 ns per cell and proves anything within
// dp_max_cells (items x B / g); branch and bound proves thousands of items with
// ordinary scores in milliseconds, but correlated scores with a tight window defeat
// it from a few hundred items. Binding ratio or min_kept constraints and nested
// granularities leave only branch and bound.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "config.hpp"
#include "greedy_selection.hpp"
#include "selection_items.hpp"
#include "selection_problem.hpp"

NASHPRUNE_BEGIN_NAMESPACE

struct exact_options {
  exact_algorithm algorithm = exact_algorithm::automatic;
  std::int64_t max_nodes = 20'000'000;          // branch and bound: search nodes before giving up
  std::int64_t max_items = 4096;                // branch and bound: eligible items accepted
  std::int64_t dp_max_cells = 200'000'000;      // dynamic programming: items x (B / g + 1) decision bits
  std::optional<std::int64_t> min_removed;      // L (default: the greedy's amount)
};

namespace detail {

/// Depth-first branch and bound of solve_exact over the eligible items in score order.
template <typename Scalar>
class exact_search {
 public:
  exact_search(std::span<const selection_item<Scalar>> items, const selection_problem& p, const std::vector<std::uint32_t>& order,
               std::int64_t low, std::int64_t high, std::int64_t max_nodes)
      : items_(items), p_(p), low_(low), high_(high), max_nodes_(max_nodes) {
    for (const std::uint32_t pos : order) {
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
    if (p.nested) {
      part_taken_.assign(4 * p.layer_cap.size(), 0);
      whole_taken_.assign(p.layer_cap.size(), 0);
    }
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
        slot_removed_[slot] < p_.slot_cap[slot] && (!p_.nested || nests_with_nothing_taken(layer, it.kind))) {
      layer_removed_[layer] += it.cost;
      ++slot_removed_[slot];
      if (p_.nested) count_taken(layer, it.kind, 1);
      chosen_.push_back(candidates_[depth]);
      search(depth + 1, cost + it.cost, importance + static_cast<long double>(it.importance));
      chosen_.pop_back();
      if (p_.nested) count_taken(layer, it.kind, -1);
      --slot_removed_[slot];
      layer_removed_[layer] -= it.cost;
    }
    search(depth + 1, cost, importance);
  }

  // Nesting (mixed granularities): a selection never holds an item together with a
  // container around it. Per layer: [attention fine, attention block, MLP fine, MLP
  // block] counts taken, and whole-layer items taken.
  [[nodiscard]] bool nests_with_nothing_taken(std::size_t layer, item_kind kind) const {
    const std::int64_t* part = &part_taken_[4 * layer];
    const item_kind block = block_of(kind);
    if (block == item_kind::whole_layer) return part[0] + part[1] + part[2] + part[3] == 0;
    return whole_taken_[layer] == 0 && part[2 * block_index(block) + (is_block(kind) ? 0 : 1)] == 0;
  }

  void count_taken(std::size_t layer, item_kind kind, std::int64_t delta) {
    const item_kind block = block_of(kind);
    if (block == item_kind::whole_layer) {
      whole_taken_[layer] += delta;
    } else {
      part_taken_[4 * layer + 2 * block_index(block) + (is_block(kind) ? 1 : 0)] += delta;
    }
  }

  std::span<const selection_item<Scalar>> items_;
  const selection_problem& p_;
  std::int64_t low_, high_, max_nodes_;
  std::vector<std::uint32_t> candidates_;
  std::vector<std::int64_t> prefix_cost_;
  std::vector<long double> prefix_importance_;
  std::vector<std::int64_t> layer_removed_, slot_removed_, part_taken_, whole_taken_;
  std::vector<std::uint32_t> chosen_, best_chosen_;
  long double best_ = 0;
  bool found_ = false, aborted_ = false;
  std::int64_t nodes_ = 0;
};

/// True when a per-layer ratio, a min_kept rule or nesting could refuse some selection of the
/// eligible items (then only branch and bound is exact).
template <typename Scalar>
[[nodiscard]] bool constraints_can_bind(std::span<const selection_item<Scalar>> items, const selection_problem& p,
                                        const std::vector<std::uint32_t>& candidates) {
  if (p.nested) return true;
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
                                                   const exact_options& options = {}) {
  const selection_result<Scalar> greedy = select_greedy(items, budget, constraints, greedy_options{.rule = greedy_rule::fill});
  const std::int64_t low = options.min_removed.value_or(greedy.achieved);
  if (low < 0 || low > budget) {
    detail::fail_argument("options.min_removed", std::to_string(low) + " lies outside [0, budget " + std::to_string(budget) + "]");
  }
  if (options.max_nodes < 1) detail::fail_argument("options.max_nodes", "must be positive");
  detail::score_walk<Scalar> walk(items.size());
  const detail::selection_problem p =
      detail::prepare_selection(items, budget, constraints, [&walk](std::size_t i, const selection_item<Scalar>& it) { walk.set(i, it); });
  walk.spread(items);
  detail::exact_search<Scalar> search(items, p, walk.all(), low, budget, options.max_nodes);
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
    detail::fail_domain("options.min_removed", "no selection within the constraints removes between " + std::to_string(low) +
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
    detail::fail_argument("options.algorithm", binds ? "dynamic programming cannot honour per-layer ratio or min_kept constraints that bind here, nor nested granularities"
                                             : "dynamic programming needs more than options.dp_max_cells cells here");
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
  if (static_cast<std::int64_t>(search.candidate_count()) > options.max_items) {
    detail::fail_argument("items", std::to_string(search.candidate_count()) + " eligible items exceed the exact solver's limit of " +
                                       std::to_string(options.max_items));
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
