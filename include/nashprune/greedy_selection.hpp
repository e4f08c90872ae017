// nashprune/greedy_selection.hpp — the greedy global selection: remove items in
// ascending importance per cost until the budget or the constraints stop it.
//
// Source: llama-pruning-toolkit.en.md, "Global score (fractional knapsack)". With a
// budget B (the most we may remove), the seed's fractional relaxation is
//
//     minimise sum_i I_i x_i   subject to   sum_i c_i x_i = B,  0 <= x_i <= 1,
//
// solved by removing items in ascending score s_i = I_i / c_i. Its value at a removed
// amount A is the convex, piecewise-linear F(A) ("lower_bound" below): no 0/1
// selection that removes at least A can remove less importance.
//
// select_greedy walks the items by ascending score (ties: table position, so the
// order is deterministic) and removes each one that fits the remaining budget and
// every constraint (selection_problem.hpp). greedy_rule::stop_at_first_misfit is the
// seed's reference, which stops at the first item that does not fit the budget;
// greedy_rule::fill (ours, default) keeps going with the later items that still
// fit, so it removes at least as much.
// Guarantee: the result removes A <= B, and every eligible item it kept either costs
// more than B - A or is refused by a constraint. Optimality gap: for any selection
// removing at least A, greedy objective - optimum <= objective - F(A); the result
// carries F(A) as a certificate. Without constraints the gap is zero when nothing was
// skipped, and at most I(Q) - s_k c(Q) otherwise (Q = items taken after the first
// misfit k), since F has slope >= s_k beyond the prefix.
//
// Containers (selection_items.hpp): the walk is one score order over all kinds. An
// item inside an already removed container is skipped (not counted as refused). A
// container reached after some of its items costs its marginal cost (its cost minus
// theirs) against the budget and the layer's ratio, and adds its importance minus
// theirs. The certificate F relaxes the nesting (every item on its own), so it stays
// a valid lower bound.
//
// Speed: the score order is built lazily. Validation stores each item's score key;
// one pass spreads compact copies over about a thousand buckets by the leading key
// bits; a bucket is ordered (stable radix on the lower bits) only when the walk
// reaches it. The walk ends once nothing can fit, so only about the budget's share
// of the table is ever ordered: 10^6 items with every constraint in about a quarter
// of the time of a std::sort of the scores (benchmarks/bench_selection.cpp).
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

#include "config.hpp"
#include "selection_items.hpp"
#include "selection_problem.hpp"

NASHPRUNE_BEGIN_NAMESPACE

enum class greedy_rule { fill, stop_at_first_misfit };

struct greedy_options {
  greedy_rule rule = greedy_rule::fill;
};

namespace detail {

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
    const item_kind block = block_of(kind);
    if (block == item_kind::whole_layer) {
      cost -= below_cost_[layer];
      importance -= below_importance_[layer];
      return true;
    }
    if (gone_[layer] & whole_gone) return false;
    const unsigned part = block_index(block);
    if (is_block(kind)) {
      cost -= fine_cost_[2 * layer + part];
      importance -= fine_importance_[2 * layer + part];
      return true;
    }
    return (gone_[layer] & (1U << part)) == 0;
  }

  void remove(std::size_t layer, item_kind kind, std::int64_t cost, long double importance) {
    const item_kind block = block_of(kind);
    if (block == item_kind::whole_layer) {
      gone_[layer] |= whole_gone;
      return;
    }
    const unsigned part = block_index(block);
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
    const item_kind block = block_of(kind);
    if (block == item_kind::whole_layer) return false;
    if (gone_[layer] & whole_gone) return true;
    const unsigned part = block_index(block);
    return !is_block(kind) && (gone_[layer] & (1U << part)) != 0;
  }

 private:
  static constexpr std::uint8_t whole_gone = 4;
  std::vector<std::int64_t> fine_cost_, below_cost_;
  std::vector<long double> fine_importance_, below_importance_;
  std::vector<std::uint8_t> gone_;
};

}  // namespace detail

/// The greedy of the header comment. `budget` is the most cost that may be removed.
template <typename Scalar>
[[nodiscard]] selection_result<Scalar> select_greedy(std::span<const selection_item<Scalar>> items, std::int64_t budget,
                                                     const selection_constraints& constraints = {},
                                                     const greedy_options& options = {}) {
  detail::score_walk<Scalar> walk(items.size());
  const detail::selection_problem p =
      detail::prepare_selection(items, budget, constraints, [&walk](std::size_t i, const selection_item<Scalar>& it) { walk.set(i, it); });
  walk.spread(items);
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

NASHPRUNE_END_NAMESPACE
