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
// Speed: the score order is built lazily. Validation stores each item's score key;
// one pass spreads compact copies over about a thousand buckets by the leading key
// bits; a bucket is ordered (stable radix on the lower bits) only when the walk
// reaches it. The walk ends once nothing can fit, so only about the budget's share
// of the table is ever ordered: 10^6 items with every constraint in about a quarter
// of the time of a std::sort of the scores (benchmarks/bench_selection.cpp).
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
//    false.
// Both are optimal to a relative 1e-12 on the objective.
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
//
// Constraints (checked at the boundary; impossible ones name the layer):
//  - freeze_first_layers / freeze_last_layers: items there are never removed;
//  - max_layer_prune_ratio (or one ratio per layer): removed cost of a layer <=
//    floor(ratio * the layer's cost, a container counted once: see below);
//  - min_kept rules: in a layer (or every layer holding that kind), keep at least
//    `count` items of a kind; a layer with fewer items than the rule asks is an error;
//  - the GQA-consistent granularities of the structural core map as attention_group =
//    a KV head with its Q heads (whole groups), q_head = one query head (single
//    heads), mlp_channel = gate/up row plus down column. attention_group and q_head
//    may not share a layer (which heads form which group is not given).
//
// Mixed granularities (containers). attention_block holds the attention_group /
// q_head items of its layer, mlp_block the mlp_channel items, whole_layer everything
// else in the layer. A container that holds items must be its layer's only item of
// that kind and cost at least what it holds (its cost includes theirs; the rest,
// e.g. norms or o_proj, is its own). Semantics:
//  - a selection never holds an item together with a container around it: the
//    result lists the container, the items inside are removed through it;
//  - cost is counted once: a layer costs its whole_layer item if it has one, else
//    the sum of its parts, a part costing its block if it has one, else the sum of
//    its items. total_cost (and selection_total_cost, the base of a budget fraction)
//    is the sum of the layers' costs; achieved and objective are the sums over the
//    listed items;
//  - the greedy walks one score order over all kinds. An item inside an already
//    removed container is skipped (not counted as refused). A container reached
//    after some of its items costs its marginal cost (its cost minus theirs) against
//    the budget and the layer's ratio, and adds its importance minus theirs;
//  - min_kept rules apply to what remains: removing a container removes every item
//    inside it, so a container is never removed while a rule on a kind it holds
//    asks to keep any of it (or on the container's own kind);
//  - max_layer_prune_ratio caps the removed cost against the layer's counted cost;
//  - the certificate F relaxes the nesting (every item on its own), so it stays a
//    valid lower bound; the exact solver's branch and bound enforces the nesting
//    (an item and a container around it are never both taken) and remains exact;
//    dynamic programming cannot express it (automatic picks branch and bound,
//    an explicit request is refused).
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
#include <utility>
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
  std::int64_t total_cost = 0;       // the layers' costs, a container counted once (selection_total_cost)
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

/// The part of a layer an item lies in: attention, MLP, or the whole layer.
enum class layer_part : std::uint8_t { attention, mlp, whole };

[[nodiscard]] constexpr layer_part part_of(item_kind kind) {
  switch (kind) {
    case item_kind::attention_group:
    case item_kind::q_head:
    case item_kind::attention_block: return layer_part::attention;
    case item_kind::mlp_channel:
    case item_kind::mlp_block: return layer_part::mlp;
    default: return layer_part::whole;
  }
}

[[nodiscard]] constexpr bool is_block(item_kind kind) { return kind == item_kind::attention_block || kind == item_kind::mlp_block; }

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

/// The items in ascending score order, ties by table position, produced lazily and
/// carrying what the greedy reads, so that its walk is sequential rather than a random
/// walk through the table. The validation pass stores each item's score key; one pass
/// then spreads the items over buckets by the leading bits of key - smallest key, and
/// a bucket is sorted only when the walk first reaches it. The greedy stops once
/// nothing fits any more (about the budget's share of the table), so only that prefix
/// is ever ordered.
template <typename Scalar>
class score_walk {
  using key_type = decltype(score_key(std::declval<const selection_item<Scalar>&>()));
  static constexpr std::size_t items_per_bucket = 1024;
  static constexpr int max_bucket_bits = 14;
  // One integer compare orders (key, position): 64 bits for float, 128 for double.
  __extension__ typedef unsigned __int128 wide_record;
  using record = std::conditional_t<sizeof(key_type) == 4, std::uint64_t, wide_record>;

 public:
  struct step {
    record order;  // key << 32 | position
    std::int64_t cost;
    Scalar importance;
    std::uint32_t slot;  // layer * item_kind_count + kind
    [[nodiscard]] std::uint32_t position() const { return static_cast<std::uint32_t>(order); }
    [[nodiscard]] std::size_t layer() const { return slot / item_kind_count; }
    [[nodiscard]] item_kind kind() const { return static_cast<item_kind>(slot % item_kind_count); }
    [[nodiscard]] bool operator<(const step& other) const { return order < other.order; }
  };

  explicit score_walk(std::size_t n) : keys_(n) {}

  /// Called by the validation pass for every item.
  void set(std::size_t i, const selection_item<Scalar>& it) {
    const key_type key = score_key(it);
    keys_[i] = key;
    low_ = std::min(low_, key);
    high_ = std::max(high_, key);
  }

  /// Spreads the items over the buckets once every item is set.
  void spread(std::span<const selection_item<Scalar>> items) {
    const std::size_t n = items.size();
    const int bucket_bits = std::min(max_bucket_bits, static_cast<int>(std::bit_width(n / items_per_bucket)));
    shift_ = std::max(0, static_cast<int>(std::bit_width(static_cast<key_type>(high_ - low_))) - bucket_bits);
    const auto bucket_of = [low = low_, shift = shift_](key_type key) { return static_cast<std::size_t>((key - low) >> shift); };
    bucket_begin_.assign(bucket_of(high_) + 2, 0);
    for (const key_type key : keys_) ++bucket_begin_[bucket_of(key) + 1];
    std::partial_sum(bucket_begin_.begin(), bucket_begin_.end(), bucket_begin_.begin());
    std::vector<std::size_t> cursor(bucket_begin_.begin(), bucket_begin_.end() - 1);
    steps_.resize(n);
    for (std::size_t i = 0; i < n; ++i) {
      const auto& it = items[i];
      steps_[cursor[bucket_of(keys_[i])]++] = {(record{keys_[i]} << 32) | i, it.cost, it.importance,
                                               static_cast<std::uint32_t>(slot_of(it.layer, it.kind))};
    }
    keys_ = {};
  }

  [[nodiscard]] std::size_t size() const { return steps_.size(); }

  /// The k-th item in score order (orders the buckets up to k on first use).
  [[nodiscard]] const step& operator[](std::size_t k) {
    while (k >= sorted_) {
      sort_bucket(bucket_begin_[next_bucket_], bucket_begin_[next_bucket_ + 1]);
      sorted_ = bucket_begin_[++next_bucket_];
    }
    return steps_[k];
  }

  /// Every position in score order.
  [[nodiscard]] std::vector<std::uint32_t> all() {
    std::vector<std::uint32_t> order(size());
    for (std::size_t k = 0; k < order.size(); ++k) order[k] = (*this)[k].position();
    return order;
  }

 private:
  /// The spread kept table order inside a bucket, so a stable sort on the key bits
  /// below the bucket's (LSD radix, 8-bit digits, skipping digits all keys share)
  /// yields (key, position) order; small buckets take std::sort.
  void sort_bucket(std::size_t begin, std::size_t end) {
    const auto first = steps_.begin() + static_cast<std::ptrdiff_t>(begin);
    const std::size_t m = end - begin;
    if (m <= 64 || shift_ == 0) {
      std::sort(first, first + static_cast<std::ptrdiff_t>(m));
      return;
    }
    scratch_.resize(m);
    step* from = &*first;
    step* to = scratch_.data();
    const auto low_bits = [low = low_](const step& s) { return static_cast<key_type>(static_cast<key_type>(s.order >> 32) - low); };
    for (int bit = 0; bit < shift_; bit += 8) {
      std::array<std::uint32_t, 256> count{};
      for (std::size_t i = 0; i < m; ++i) ++count[(low_bits(from[i]) >> bit) & 255U];
      if (count[(low_bits(from[0]) >> bit) & 255U] == m) continue;
      std::uint32_t sum = 0;
      for (auto& c : count) sum += std::exchange(c, sum);
      for (std::size_t i = 0; i < m; ++i) to[count[(low_bits(from[i]) >> bit) & 255U]++] = from[i];
      std::swap(from, to);
    }
    if (from != &*first) std::copy(from, from + m, first);
  }

  std::vector<key_type> keys_;
  key_type low_ = std::numeric_limits<key_type>::max(), high_ = 0;
  int shift_ = 0;
  std::vector<step> steps_, scratch_;
  std::vector<std::size_t> bucket_begin_;
  std::size_t next_bucket_ = 0, sorted_ = 0;
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

/// Validates the table, the budget and the constraints (see the header comment),
/// precomputes the caps and fills `walk`.
template <typename Scalar>
[[nodiscard]] selection_problem prepare_selection(std::span<const selection_item<Scalar>> items, std::int64_t budget,
                                                  const selection_constraints& constraints, score_walk<Scalar>& walk) {
  if (items.empty()) fail_argument("items", "the item table is empty");
  if (items.size() >= std::numeric_limits<std::uint32_t>::max()) fail_argument("items", "more than 2^32 - 1 items");
  selection_problem p;
  p.min_marginal_cost = std::numeric_limits<std::int64_t>::max();
  std::int64_t top_layer = 0, raw_total = 0;
  std::vector<std::int64_t> slot_count, slot_cost, slot_top;  // per (layer, kind), grown as layers appear
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
    top_layer = std::max(top_layer, it.layer);
    p.min_marginal_cost = std::min(p.min_marginal_cost, it.cost);
    walk.set(i, it);
    const std::size_t s = slot_of(it.layer, it.kind);
    if (s >= slot_count.size()) {
      const std::size_t size = (static_cast<std::size_t>(it.layer) + 1) * item_kind_count;
      slot_count.resize(size, 0);
      slot_cost.resize(size, 0);
      slot_top.resize(size, -1);
    }
    ++slot_count[s];
    slot_cost[s] += it.cost;
    slot_top[s] = std::max(slot_top[s], it.index);
  }
  p.n_layers = constraints.n_layers > 0 ? constraints.n_layers : top_layer + 1;
  if (constraints.n_layers < 0) fail_argument("constraints.n_layers", "negative");
  if (p.n_layers > max_selection_layers) fail_argument("constraints.n_layers", "more than 2^22 layers");
  if (top_layer >= p.n_layers) {
    fail_argument("items", "layer " + std::to_string(top_layer) + " is not below n_layers " + std::to_string(p.n_layers));
  }
  const auto n_layers = static_cast<std::size_t>(p.n_layers);
  const std::size_t n_slots = n_layers * item_kind_count;
  slot_count.resize(n_slots, 0);
  slot_cost.resize(n_slots, 0);
  slot_top.resize(n_slots, -1);
  duplicate_check<Scalar> duplicates(items, slot_count, slot_top);
  for (std::size_t i = 0; i < items.size(); ++i) duplicates(i);
  duplicates.finish();
  walk.spread(items);

  std::vector<std::int64_t> layer_cost(n_layers, 0);
  for (std::size_t l = 0; l < n_layers; ++l) {
    const auto kind_cost = [&](item_kind k) { return slot_cost[l * item_kind_count + static_cast<std::size_t>(k)]; };
    const auto kind_count = [&](item_kind k) { return slot_count[l * item_kind_count + static_cast<std::size_t>(k)]; };
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
  if (budget < 0 || budget > p.total_cost) {
    fail_argument("budget", std::to_string(budget) + " lies outside [0, total cost " + std::to_string(p.total_cost) + "]");
  }
  p.budget = budget;

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
  // Removing a container removes what it holds: a min_kept rule that binds inside it
  // (on any kind it holds) forbids removing the container.
  for (std::size_t l = 0; l < n_layers; ++l) {
    const std::size_t base = l * item_kind_count;
    const auto binds = [&](item_kind k) { return p.slot_cap[base + static_cast<std::size_t>(k)] < slot_count[base + static_cast<std::size_t>(k)]; };
    bool below = false;
    for (std::size_t k = 0; k < item_kind_count; ++k) {
      if (static_cast<item_kind>(k) != item_kind::whole_layer) below = below || binds(static_cast<item_kind>(k));
    }
    if (below) p.slot_cap[base + static_cast<std::size_t>(item_kind::whole_layer)] = 0;
    if (binds(item_kind::attention_group) || binds(item_kind::q_head)) p.slot_cap[base + static_cast<std::size_t>(item_kind::attention_block)] = 0;
    if (binds(item_kind::mlp_channel)) p.slot_cap[base + static_cast<std::size_t>(item_kind::mlp_block)] = 0;
  }
  return p;
}

/// F(amount) from the unfrozen items the greedy visited, in score order (its walk
/// always passes the point where their cumulative cost reaches what it removed).
template <typename Scalar>
[[nodiscard]] Scalar fractional_lower_bound(const std::vector<std::int64_t>& cost, const std::vector<Scalar>& importance,
                                            std::int64_t amount) {
  long double bound = 0;
  std::int64_t need = amount;
  for (std::size_t k = 0; k < cost.size() && need > 0; ++k) {
    const std::int64_t take = std::min(need, cost[k]);
    bound += static_cast<long double>(importance[k]) * take / cost[k];
    need -= take;
  }
  return static_cast<Scalar>(bound);
}

/// What the greedy has removed inside each layer, for containers: the marginal cost
/// and importance of removing a container are its own minus what is already removed
/// inside it, and an item inside a removed container is gone already.
class nesting_state {
 public:
  explicit nesting_state(std::size_t n_layers)
      : fine_cost_(2 * n_layers, 0), below_cost_(n_layers, 0), fine_importance_(2 * n_layers, 0), below_importance_(n_layers, 0),
        gone_(n_layers, 0) {}

  /// False when a removed container already holds the item; otherwise its marginal cost and importance.
  bool marginal(std::size_t layer, item_kind kind, std::int64_t& cost, long double& importance) const {
    const auto part = static_cast<unsigned>(part_of(kind));
    if (part == static_cast<unsigned>(layer_part::whole)) {
      cost -= below_cost_[layer];
      importance -= below_importance_[layer];
      return true;
    }
    if (gone_[layer] & whole_gone) return false;
    if (is_block(kind)) {
      cost -= fine_cost_[2 * layer + part];
      importance -= fine_importance_[2 * layer + part];
      return true;
    }
    return (gone_[layer] & (1U << part)) == 0;
  }

  void remove(std::size_t layer, item_kind kind, std::int64_t cost, long double importance) {
    const auto part = static_cast<unsigned>(part_of(kind));
    if (part == static_cast<unsigned>(layer_part::whole)) {
      gone_[layer] |= whole_gone;
      return;
    }
    below_cost_[layer] += cost;
    below_importance_[layer] += importance;
    if (is_block(kind)) {
      gone_[layer] |= static_cast<std::uint8_t>(1U << part);
    } else {
      fine_cost_[2 * layer + part] += cost;
      fine_importance_[2 * layer + part] += importance;
    }
  }

  /// True when the item lies inside a removed container (it is reported through the container).
  [[nodiscard]] bool subsumed(std::size_t layer, item_kind kind) const {
    const auto part = static_cast<unsigned>(part_of(kind));
    if (part == static_cast<unsigned>(layer_part::whole)) return false;
    if (gone_[layer] & whole_gone) return true;
    return !is_block(kind) && (gone_[layer] & (1U << part)) != 0;
  }

 private:
  static constexpr std::uint8_t whole_gone = 4;
  std::vector<std::int64_t> fine_cost_, below_cost_;
  std::vector<long double> fine_importance_, below_importance_;
  std::vector<std::uint8_t> gone_;
};

}  // namespace detail

/// Total cost of a table: the sum of its layers' costs, where a container that holds
/// finer items (see the header comment) counts once. The base of a budget fraction.
template <typename Scalar>
[[nodiscard]] std::int64_t selection_total_cost(std::span<const selection_item<Scalar>> items) {
  detail::score_walk<Scalar> walk(items.size());
  return detail::prepare_selection(items, 0, {}, walk).total_cost;
}

/// The greedy of the header comment. `budget` is the most cost that may be removed.
template <typename Scalar>
[[nodiscard]] selection_result<Scalar> select_greedy(std::span<const selection_item<Scalar>> items, std::int64_t budget,
                                                     const selection_constraints& constraints = {},
                                                     const selection_options& options = {}) {
  detail::score_walk<Scalar> walk(items.size());
  const detail::selection_problem p = detail::prepare_selection(items, budget, constraints, walk);
  selection_result<Scalar> r;
  r.budget = budget;
  r.total_cost = p.total_cost;
  std::vector<std::int64_t> layer_removed(p.layer_cap.size(), 0), slot_removed(p.slot_cap.size(), 0);
  detail::nesting_state nesting(p.nested ? p.layer_cap.size() : 0);
  std::vector<std::int64_t> visited_cost;  // unfrozen items walked past, for the certificate F
  std::vector<Scalar> visited_importance;
  std::size_t taken_count = 0;
  std::int64_t remaining = budget;
  long double objective = 0;
  std::vector<std::uint8_t> taken(items.size(), 0);
  const std::size_t n = walk.size();
  for (std::size_t k = 0; k < n; ++k) {
    if (remaining < p.min_marginal_cost) break;  // nothing else can fit
    const auto& it = walk[k];
    const std::size_t layer = it.layer();
    if (p.layer_cap[layer] > 0) {
      visited_cost.push_back(it.cost);
      visited_importance.push_back(it.importance);
    }
    std::int64_t cost = it.cost;
    long double gain = it.importance;
    if (p.nested && !nesting.marginal(layer, it.kind(), cost, gain)) continue;
    if (cost > remaining) {
      if (options.rule == greedy_rule::stop_at_first_misfit) break;
      continue;
    }
    if (layer_removed[layer] + cost > p.layer_cap[layer] || slot_removed[it.slot] >= p.slot_cap[it.slot]) {
      ++r.refused_by_constraints;
      continue;
    }
    layer_removed[layer] += cost;
    ++slot_removed[it.slot];
    remaining -= cost;
    objective += gain;
    taken[it.position()] = 1;
    ++taken_count;
    if (p.nested) nesting.remove(layer, it.kind(), cost, gain);
  }
  // Positions in table order without a branch per item (one write per item, kept when taken).
  r.pruned.resize(taken_count + 1);
  std::size_t written = 0;
  for (std::size_t i = 0; i < taken.size(); ++i) {
    r.pruned[written] = static_cast<std::int64_t>(i);
    written += taken[i];
  }
  r.pruned.resize(taken_count);
  if (p.nested) {
    std::erase_if(r.pruned, [&](std::int64_t i) {
      const auto& it = items[static_cast<std::size_t>(i)];
      return nesting.subsumed(static_cast<std::size_t>(it.layer), it.kind);
    });
  }
  r.achieved = budget - remaining;
  r.objective = static_cast<Scalar>(objective);
  r.lower_bound = detail::fractional_lower_bound(visited_cost, visited_importance, r.achieved);
  r.proven_optimal = r.objective <= r.lower_bound;
  return r;
}

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
    const auto p = static_cast<unsigned>(part_of(kind));
    if (p == static_cast<unsigned>(layer_part::whole)) return part[0] + part[1] + part[2] + part[3] == 0;
    return whole_taken_[layer] == 0 && part[2 * p + (is_block(kind) ? 0 : 1)] == 0;
  }

  void count_taken(std::size_t layer, item_kind kind, std::int64_t delta) {
    const auto p = static_cast<unsigned>(part_of(kind));
    if (p == static_cast<unsigned>(layer_part::whole)) {
      whole_taken_[layer] += delta;
    } else {
      part_taken_[4 * layer + 2 * p + (is_block(kind) ? 1 : 0)] += delta;
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

}  // namespace detail

namespace detail {

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
                                                   const selection_options& options = {}) {
  selection_options greedy_options = options;
  greedy_options.rule = greedy_rule::fill;
  const selection_result<Scalar> greedy = select_greedy(items, budget, constraints, greedy_options);
  const std::int64_t low = options.exact_min_removed.value_or(greedy.achieved);
  if (low < 0 || low > budget) {
    detail::fail_argument("exact_min_removed", std::to_string(low) + " lies outside [0, budget " + std::to_string(budget) + "]");
  }
  if (options.max_nodes < 1) detail::fail_argument("max_nodes", "must be positive");
  detail::score_walk<Scalar> walk(items.size());
  const detail::selection_problem p = detail::prepare_selection(items, budget, constraints, walk);
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
    detail::fail_argument("algorithm", binds ? "dynamic programming cannot honour per-layer ratio or min_kept constraints that bind here, nor nested granularities"
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
