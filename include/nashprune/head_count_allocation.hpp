// nashprune/head_count_allocation.hpp — removing an exact number of query heads
// from several layers: every GQA-consistent removal of a layer, the least costly
// set for each count a layer allows, and the allocation of counts across layers.
//
// A layer of n query heads in G kv groups of g (attention_geometry.hpp) stays
// runnable iff it keeps k >= 1 whole groups that keep the same number m >= 1 of
// query heads each (llama.cpp reads one Q:KV ratio per layer; layers may differ).
// So its shapes are (k, m), 1 <= k <= G, 1 <= m <= g, removing n − k·m heads:
// whole groups (m = g), the same heads from every group (k = G) and their mixes
// (some groups out, the same number of heads out of each other group). With
// groups_only only m = g is offered. min_keep (seed_min_keep of nash_decisions.hpp:
// --min-heads and --max-prune) bounds k·m from below.
//
// The cost of removing a set S of the layer's heads:
//   additive   c(S) = Σ_{i∈S} a_i. The least-cost set of shape (k, m) keeps in
//              every group its m heads of largest a and keeps the k groups whose
//              m largest sum most: keeping is choosing the largest kept sum, the
//              groups are independent given m, and the k best group sums win (exact).
//   quadratic  c(S) = Σ_{i∈S} a_i + Σ_{i,j∈S} Q_ij (the output energy 1_SᵀP1_S, or
//              a loss model δᵀz + ½zᵀIz with Q = I/2): by enumeration of the
//              C(G, k)·C(g, m)^k sets of every shape, keeping only sets that hold
//              the `required` heads. When a shape has more than max_sets sets the
//              diagonal model a_i + Q_ii is used for it instead (additive, exact
//              for that model, an approximation of the quadratic one).
//   any set    c(S) given by a function of the set (set_removal_cost: e.g. the OBS
//              error left after a refit, compensated_selection.hpp), with each
//              head's cost alone s_i: like the quadratic cost, by enumeration, and
//              beyond max_sets the set the additive model s picks, costed by c.
// A layer's curve lists, for every count it allows (ascending, 0 first when it
// holds no required head), the least cost and its set (ties: the shape of more
// kept groups, then the first set in enumeration order).
// Across layers, exact_allocation (output_perturbation.hpp) picks one count per
// layer: the total equals the request whenever some allocation reaches it, else
// the largest total below it, and among those the least Σ cost.
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "attention_geometry.hpp"
#include "config.hpp"
#include "detail/validate.hpp"
#include "output_perturbation.hpp"

NASHPRUNE_BEGIN_NAMESPACE

/// A GQA-consistent shape of a pruned layer: k whole groups kept, m query heads in each.
struct kept_shape {
  std::int64_t kept_groups = 0;
  std::int64_t kept_per_group = 0;
  friend constexpr bool operator==(const kept_shape&, const kept_shape&) = default;
};

/// Every shape a layer may be cut to (see the header comment), by descending kept
/// heads (ties: more kept groups first). Throws std::invalid_argument for a
/// negative min_keep.
[[nodiscard]] inline std::vector<kept_shape> consistent_shapes(const attention_geometry& geometry, bool groups_only,
                                                               std::int64_t min_keep) {
  detail::require(min_keep >= 0, "min_keep", "must not be negative, got " + std::to_string(min_keep));
  std::vector<kept_shape> shapes;
  for (std::int64_t k = geometry.n_head_kv(); k >= 1; --k) {
    for (std::int64_t m = geometry.group_size(); m >= (groups_only ? geometry.group_size() : 1); --m) {
      if (k * m >= min_keep) shapes.push_back({k, m});
    }
  }
  std::stable_sort(shapes.begin(), shapes.end(), [](const kept_shape& a, const kept_shape& b) {
    return a.kept_groups * a.kept_per_group > b.kept_groups * b.kept_per_group;
  });
  return shapes;
}

/// The keep plan of a layer that loses the query heads `removed` (kv heads with no
/// query head left go with them). Throws std::invalid_argument when the rest is not
/// GQA-consistent (attention_geometry::validate).
[[nodiscard]] inline head_keep_plan plan_without(const attention_geometry& geometry, std::span<const std::int64_t> removed,
                                                 bool allow_empty = false) {
  head_keep_plan plan;
  plan.q_heads = complement_units(detail::sorted_unique_units("removed", removed, geometry.n_head()), geometry.n_head());
  for (const auto h : plan.q_heads) {
    const auto kv = h / geometry.group_size();
    if (plan.kv_heads.empty() || plan.kv_heads.back() != kv) plan.kv_heads.push_back(kv);
  }
  (void)geometry.validate(plan, allow_empty);
  return plan;
}

/// Calls visit(removed) for every removal that leaves `shape` (removed: ascending
/// query heads), in lexicographic order of the kept groups, then of the kept heads.
template <typename Visit>
void for_each_shape_removal(const attention_geometry& geometry, kept_shape shape, Visit&& visit) {
  const std::int64_t groups = geometry.n_head_kv(), g = geometry.group_size();
  detail::require(shape.kept_groups >= 1 && shape.kept_groups <= groups && shape.kept_per_group >= 1 && shape.kept_per_group <= g,
                  "shape", "must keep 1.." + std::to_string(groups) + " groups of 1.." + std::to_string(g) + " heads");
  std::vector<std::int64_t> kept_groups;
  std::vector<std::vector<std::int64_t>> kept_heads(static_cast<std::size_t>(groups));
  std::vector<std::int64_t> removed;
  const auto emit = [&] {
    removed.clear();
    std::size_t next = 0;
    for (std::int64_t j = 0; j < groups; ++j) {
      const bool kept = next < kept_groups.size() && kept_groups[next] == j;
      for (std::int64_t h = j * g; h < (j + 1) * g; ++h) {
        if (!kept || !std::binary_search(kept_heads[static_cast<std::size_t>(j)].begin(), kept_heads[static_cast<std::size_t>(j)].end(), h)) {
          removed.push_back(h);
        }
      }
      if (kept) ++next;
    }
    visit(static_cast<const std::vector<std::int64_t>&>(removed));
  };
  // Heads kept in the position-th kept group, then the next kept group.
  const auto heads = [&](auto&& self, std::size_t position, std::int64_t from, std::int64_t left) -> void {
    if (position == kept_groups.size()) return emit();
    auto& chosen = kept_heads[static_cast<std::size_t>(kept_groups[position])];
    if (left == 0) return self(self, position + 1, (position + 1 < kept_groups.size() ? kept_groups[position + 1] * g : 0), shape.kept_per_group);
    const std::int64_t end = (kept_groups[position] + 1) * g;
    for (std::int64_t h = from; h + left <= end; ++h) {
      chosen.push_back(h);
      self(self, position, h + 1, left - 1);
      chosen.pop_back();
    }
  };
  const auto pick_groups = [&](auto&& self, std::int64_t from, std::int64_t left) -> void {
    if (left == 0) return heads(heads, 0, kept_groups.front() * g, shape.kept_per_group);
    for (std::int64_t j = from; j + left <= groups; ++j) {
      kept_groups.push_back(j);
      self(self, j + 1, left - 1);
      kept_groups.pop_back();
    }
  };
  pick_groups(pick_groups, 0, shape.kept_groups);
}

/// How many removals leave `shape`: C(G, k)·C(g, m)^k (a double: it may exceed any integer).
[[nodiscard]] inline double shape_removal_count(const attention_geometry& geometry, kept_shape shape) {
  const auto choose = [](std::int64_t n, std::int64_t k) {
    double c = 1;
    for (std::int64_t i = 0; i < k; ++i) c = c * static_cast<double>(n - i) / static_cast<double>(i + 1);
    return c;
  };
  return choose(geometry.n_head_kv(), shape.kept_groups) *
         std::pow(choose(geometry.group_size(), shape.kept_per_group), static_cast<double>(shape.kept_groups));
}

/// One layer's least cost for every count of heads it may lose.
template <typename Scalar>
struct head_count_curve {
  std::vector<std::int64_t> removed;             ///< counts, ascending
  std::vector<Scalar> cost;                      ///< the least cost of each count
  std::vector<std::vector<std::int64_t>> sets;   ///< a set of that cost (query heads, ascending)
};

/// What removing a set of one layer's heads costs: additive (quadratic empty) or quadratic.
template <typename Scalar>
struct removal_cost {
  Eigen::Matrix<Scalar, Eigen::Dynamic, 1> linear;                 ///< a, one per query head
  Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic> quadratic;  ///< Q (n × n), or empty
  std::vector<std::int64_t> required;                              ///< heads every set must hold (quadratic only)
};

/// A cost given by any function of the removed set: of_set(removed) for ascending
/// query heads, and singles(i) = of_set({i}) for the closed form beyond max_sets.
template <typename Scalar, typename OfSet>
struct set_removal_cost {
  Eigen::Matrix<Scalar, Eigen::Dynamic, 1> singles;
  OfSet of_set;
};

namespace detail {

// The least-cost set of `shape` under c(S) = Σ a_i, in closed form (header comment).
template <typename Scalar>
std::pair<Scalar, std::vector<std::int64_t>> least_additive_removal(const attention_geometry& geometry, kept_shape shape,
                                                                    const Eigen::Matrix<Scalar, Eigen::Dynamic, 1>& a) {
  const std::int64_t groups = geometry.n_head_kv(), g = geometry.group_size();
  std::vector<std::vector<std::int64_t>> best_heads(static_cast<std::size_t>(groups));
  std::vector<Scalar> kept_sum(static_cast<std::size_t>(groups), Scalar(0));
  for (std::int64_t j = 0; j < groups; ++j) {
    auto& heads = best_heads[static_cast<std::size_t>(j)];
    heads.resize(static_cast<std::size_t>(g));
    std::iota(heads.begin(), heads.end(), j * g);
    // Largest a first; ties keep the lower head (removal goes to the higher one).
    std::stable_sort(heads.begin(), heads.end(), [&](std::int64_t x, std::int64_t y) { return a(x) > a(y); });
    heads.resize(static_cast<std::size_t>(shape.kept_per_group));
    for (const auto h : heads) kept_sum[static_cast<std::size_t>(j)] += a(h);
  }
  std::vector<std::int64_t> order(static_cast<std::size_t>(groups));
  std::iota(order.begin(), order.end(), std::int64_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](std::int64_t x, std::int64_t y) { return kept_sum[static_cast<std::size_t>(x)] > kept_sum[static_cast<std::size_t>(y)]; });
  std::vector<bool> kept(static_cast<std::size_t>(geometry.n_head()), false);
  for (std::int64_t r = 0; r < shape.kept_groups; ++r) {
    for (const auto h : best_heads[static_cast<std::size_t>(order[static_cast<std::size_t>(r)])]) kept[static_cast<std::size_t>(h)] = true;
  }
  std::pair<Scalar, std::vector<std::int64_t>> out{Scalar(0), {}};
  for (std::int64_t h = 0; h < geometry.n_head(); ++h) {
    if (!kept[static_cast<std::size_t>(h)]) out.first += a(h), out.second.push_back(h);
  }
  return out;
}

}  // namespace detail

namespace detail {

// The curve of one layer (see the header comment): `diagonal` ranks heads for the
// closed form; with `enumerate` every shape of at most max_sets sets is searched and
// every set is costed by set_cost, else the closed form's sum of `diagonal` is the cost.
template <typename Scalar, typename SetCost>
head_count_curve<Scalar> least_cost_curve_of(const attention_geometry& geometry, bool groups_only, std::int64_t min_keep,
                                             const Eigen::Matrix<Scalar, Eigen::Dynamic, 1>& diagonal, bool enumerate,
                                             const SetCost& set_cost, const std::vector<std::int64_t>& required, std::int64_t max_sets) {
  const std::int64_t n = geometry.n_head();
  require(required.empty() || enumerate, "cost.required", "needs a quadratic cost (the closed form holds no required heads)");
  head_count_curve<Scalar> curve;
  const auto offer = [&](Scalar c, const std::vector<std::int64_t>& set) {
    const auto count = static_cast<std::int64_t>(set.size());
    const auto at = std::lower_bound(curve.removed.begin(), curve.removed.end(), count);
    const auto k = at - curve.removed.begin();
    if (at != curve.removed.end() && *at == count) {
      if (c < curve.cost[static_cast<std::size_t>(k)]) curve.cost[static_cast<std::size_t>(k)] = c, curve.sets[static_cast<std::size_t>(k)] = set;
      return;
    }
    curve.removed.insert(at, count);
    curve.cost.insert(curve.cost.begin() + k, c);
    curve.sets.insert(curve.sets.begin() + k, set);
  };
  if (required.empty()) offer(Scalar(0), {});  // removing nothing is the full shape (k = G, m = g)
  for (const auto shape : consistent_shapes(geometry, groups_only, min_keep)) {
    if (shape.kept_groups * shape.kept_per_group == n) continue;
    if (!enumerate || shape_removal_count(geometry, shape) > static_cast<double>(max_sets)) {
      require(required.empty(), "cost.required",
              "shape of " + std::to_string(shape.kept_groups) + " groups of " + std::to_string(shape.kept_per_group) +
                  " heads has more than max_sets = " + std::to_string(max_sets) + " removals to search for the required heads");
      auto [c, set] = least_additive_removal<Scalar>(geometry, shape, diagonal);
      if (enumerate) c = set_cost(set);
      offer(c, set);
      continue;
    }
    Scalar best = std::numeric_limits<Scalar>::infinity();
    std::vector<std::int64_t> best_set;
    for_each_shape_removal(geometry, shape, [&](const std::vector<std::int64_t>& removed) {
      if (!std::includes(removed.begin(), removed.end(), required.begin(), required.end())) return;
      const Scalar c = set_cost(removed);
      if (c < best) best = c, best_set = removed;
    });
    if (!best_set.empty()) offer(best, best_set);
  }
  if (curve.removed.empty()) fail_argument("cost.required", "no GQA-consistent removal the caps allow holds the required heads");
  return curve;
}

}  // namespace detail

/// The curve of one layer under `cost` (see the header comment): every count that
/// `consistent_shapes(geometry, groups_only, min_keep)` allows, plus removing
/// nothing when min_keep permits. Throws std::invalid_argument for a cost of the
/// wrong size, a required head out of range, required heads with an over-large
/// shape, or required heads no allowed set holds.
template <typename Scalar>
[[nodiscard]] head_count_curve<Scalar> least_cost_curve(const attention_geometry& geometry, bool groups_only, std::int64_t min_keep,
                                                       const removal_cost<Scalar>& cost, std::int64_t max_sets = std::int64_t{1} << 16) {
  const std::int64_t n = geometry.n_head();
  detail::require_size("cost.linear", cost.linear.size(), n);
  detail::require_finite("cost.linear", cost.linear);
  const bool quadratic = cost.quadratic.size() > 0;
  if (quadratic) {
    detail::require_size("cost.quadratic", cost.quadratic.rows(), n, "row count");
    detail::require_size("cost.quadratic", cost.quadratic.cols(), n, "column count");
    detail::require_finite("cost.quadratic", cost.quadratic);
  }
  const auto required = detail::sorted_unique_units("cost.required", cost.required, n);
  Eigen::Matrix<Scalar, Eigen::Dynamic, 1> diagonal = cost.linear;
  if (quadratic) diagonal += cost.quadratic.diagonal();
  const auto set_cost = [&](const std::vector<std::int64_t>& set) {
    Scalar c = 0;
    for (const auto i : set) {
      c += cost.linear(i);
      for (const auto j : set) c += cost.quadratic(i, j);
    }
    return c;
  };
  return detail::least_cost_curve_of<Scalar>(geometry, groups_only, min_keep, diagonal, quadratic, set_cost, required, max_sets);
}

/// The curve of one layer under a cost of any set (see the header comment). Throws
/// std::invalid_argument for singles of the wrong size, std::domain_error for
/// singles that are not finite or an of_set value that is not (naming the set's size).
template <typename Scalar, typename OfSet>
[[nodiscard]] head_count_curve<Scalar> least_cost_curve(const attention_geometry& geometry, bool groups_only, std::int64_t min_keep,
                                                       const set_removal_cost<Scalar, OfSet>& cost,
                                                       std::int64_t max_sets = std::int64_t{1} << 16) {
  detail::require_size("cost.singles", cost.singles.size(), geometry.n_head());
  detail::require_finite("cost.singles", cost.singles);
  const auto set_cost = [&](const std::vector<std::int64_t>& set) {
    const Scalar c = cost.of_set(std::span<const std::int64_t>(set));
    if (!std::isfinite(c)) {
      detail::fail_domain("cost.of_set", "returned " + detail::describe_value(c) + " for a set of " + std::to_string(set.size()) + " heads");
    }
    return c;
  };
  return detail::least_cost_curve_of<Scalar>(geometry, groups_only, min_keep, cost.singles, true, set_cost, {}, max_sets);
}

/// One set per layer removing, in all, the request when any allocation reaches it,
/// else the most heads below it (the fewest possible when every total exceeds it).
template <typename Scalar>
struct head_count_allocation {
  std::vector<std::vector<std::int64_t>> removed;  ///< per layer, query heads ascending
  std::int64_t total = 0;
  Scalar cost = 0;
  bool reached = false;  ///< total == requested
};

/// exact_allocation over the curves (see the header comment). Throws
/// std::invalid_argument for an empty list of curves or an empty curve.
template <typename Scalar>
[[nodiscard]] head_count_allocation<Scalar> allocate_head_count(std::span<const head_count_curve<Scalar>> curves, std::int64_t requested) {
  std::vector<allocation_choices<Scalar>> choices;
  for (const auto& c : curves) choices.push_back({c.removed, c.cost});
  const auto allocation = exact_allocation<Scalar>(choices, requested);
  head_count_allocation<Scalar> out;
  out.total = allocation.removed;
  out.cost = allocation.energy;
  out.reached = allocation.reached;
  for (std::size_t l = 0; l < curves.size(); ++l) out.removed.push_back(curves[l].sets[allocation.choice[l]]);
  return out;
}

/// The most heads a layer may lose under the caps: n − the fewest kept heads of a shape.
[[nodiscard]] inline std::int64_t most_removable_heads(const attention_geometry& geometry, bool groups_only, std::int64_t min_keep) {
  const auto shapes = consistent_shapes(geometry, groups_only, min_keep);
  return shapes.empty() ? 0 : geometry.n_head() - shapes.back().kept_groups * shapes.back().kept_per_group;
}

NASHPRUNE_END_NAMESPACE
