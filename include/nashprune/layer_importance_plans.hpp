// nashprune/layer_importance_plans.hpp — pruning plans driven by one importance per
// layer: unbalanced per-layer head rates, then the heads within each layer by score
// (the GAQ seed's pipeline), and the depth presets that drop whole layers (DenseCore).
//
// Sources: gqa-aware-prune.md ("Unbalanced Pruning Strategy", "Pruning Rate Calculator",
// Stage 4 of the main pipeline: per layer, keep the GQA groups of highest importance)
// and densecore-model-optimization.md ("Depth Pruning", DEPTH_PRUNE_25_CFG / _50_CFG).
//
// plan_unbalanced_rates, with budget_unit::heads over heads or groups:
//  - scope: the unfrozen layers with attention; R = floor(target × all heads) heads are
//    requested, U heads lie in the scope, and the rates of layer_rates.hpp are solved
//    for the overall rate R / U weighted by each layer's head count (so frozen layers
//    keep their heads and the others carry the whole target);
//  - units: a layer loses heads in steps of h_l = the group size (groups), n_head_kv
//    (the same heads from every group of a GQA layer) or 1 (multi-head attention); at
//    most cap_l units, what min_heads and max_prune leave (nash_decisions.hpp);
//  - counts: x_l = rate_l · n_head_l / h_l units are wanted; k_l = min(cap_l, floor x_l),
//    then one unit at a time goes to the layer of largest remainder x_l − k_l that has
//    room (ties, from rates clipped alike: the less important layer with inverse rates,
//    the more important with proportional ones, then the lower layer) and whose step still fits in R − Σ k_l·h_l. So the plan
//    removes R heads whenever the steps allow it, else the most below. The seed keeps
//    floor((1 − rate) · kv heads) instead, which overshoots the target by up to one
//    group per layer; meeting R makes the plan comparable with the global ones at the
//    same head count;
//  - choice: in each layer the k_l·h_l heads of least importance at that granularity
//    (attention_geometry::plan_by_scores: whole groups by the sum of their heads'
//    importance, or the lowest heads of every group). FFN channels are kept.
// A layer importance that is not finite or is negative is refused (layer_rates.hpp),
// and a target the clipped rates cannot reach raises layer_rates' std::domain_error,
// which names the reachable interval (of the overall rate over the scope).
//
// plan_depth_preset: the layers select_layers_to_drop (depth_pruning.hpp) removes for
// the preset's count, floor(0.25 · n_layer) or floor(0.5 · n_layer), with the first
// max(freeze_first, keep_first_layers) and the last freeze_last layers never removed;
// everything else is kept whole.
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "config.hpp"
#include "depth_pruning.hpp"
#include "detail/validate.hpp"
#include "layer_rates.hpp"
#include "pruning_plan.hpp"

NASHPRUNE_BEGIN_NAMESPACE

/// How the unbalanced rates went (every vector has one entry per layer).
struct unbalanced_rates_report {
  Eigen::VectorXd rates;              ///< the solved rate (0 outside the scope)
  std::vector<std::int64_t> removed;  ///< query heads each layer loses
  std::int64_t requested = 0;         ///< floor(target × heads)
  std::int64_t removed_total = 0;
  double overall_rate = 0;            ///< R / U, what the rates were solved for
  std::int64_t at_min_rate = 0;
  std::int64_t at_max_rate = 0;
};

struct unbalanced_rates_result {
  pruning_result plan;
  unbalanced_rates_report report;
};

namespace detail {

// Units a layer may lose: what min_heads and max_prune leave, and never a whole group's
// last query head (heads_per_group) or the layer's last group.
inline std::int64_t unit_cap(const attention_geometry& g, head_granularity how, const pruning_options& o) {
  const std::int64_t step = g.query_heads_per_step(how);
  const std::int64_t by_caps = std::max<std::int64_t>(0, g.n_head() - seed_min_keep(g.n_head(), o.decisions())) / step;
  return std::min(by_caps, g.n_head() / step - 1);
}

// The plan with `removed[l]` heads of least importance gone from each layer l.
inline pruning_result plan_removing_least_important(const model_scores& model, const pruning_options& o,
                                                    const std::vector<std::int64_t>& removed) {
  pruning_result out;
  out.layers = keep_everything(model);
  for (std::int64_t i = 0; i < model.n_layer(); ++i) {
    const auto& l = model.layers[static_cast<std::size_t>(i)];
    auto& layer = out.layers[static_cast<std::size_t>(i)];
    if (removed[static_cast<std::size_t>(i)] > 0) {
      const auto g = model.geometry(i);
      layer.heads = g.plan_by_scores(obs_granularity(o, g), l.heads, removed[static_cast<std::size_t>(i)]);
    }
    std::vector<bool> kept(static_cast<std::size_t>(l.n_head), false);
    for (const auto h : layer.heads.q_heads) kept[static_cast<std::size_t>(h)] = true;
    for (std::int64_t h = 0; h < l.n_head; ++h) {
      out.heads.push_back({i, h, l.heads[h], 1.0, 0.0, !kept[static_cast<std::size_t>(h)]});
    }
  }
  return out;
}

}  // namespace detail

/// The GAQ pipeline (see the header comment). `layer_importance` has one entry per
/// layer (higher: more important); `rate_options.target` is ignored (the target is
/// `options.target` of the heads). Throws std::invalid_argument naming the argument for
/// a unit, structures or importance that do not fit, and std::domain_error (from
/// layer_pruning_rates) for a target the clipped rates cannot reach.
[[nodiscard]] inline unbalanced_rates_result plan_unbalanced_rates(const model_scores& model, const Eigen::VectorXd& layer_importance,
                                                                   const pruning_options& options, const layer_rate_options& rate_options) {
  if (options.unit != budget_unit::heads) detail::fail_argument("unit", "unbalanced rates count heads: use budget_unit::heads");
  if (options.structures.empty() || !options.structures.within({structure::heads, structure::groups})) {
    detail::fail_argument("structures", "unbalanced rates prune heads or groups only");
  }
  if (!(options.target >= 0.0 && options.target < 1.0)) detail::fail_argument("target", "must lie in [0, 1), got " + detail::describe_value(options.target));
  detail::require_size("layer_importance", layer_importance.size(), model.n_layer(), "layer count");
  for (std::int64_t i = 0; i < model.n_layer(); ++i) {
    const auto& l = model.layers[static_cast<std::size_t>(i)];
    detail::require_size("heads", l.heads.size(), l.n_head, "entries of layer " + std::to_string(i));
    detail::require_finite("heads", l.heads);
  }
  std::vector<std::int64_t> scope;
  for (std::int64_t i = 0; i < model.n_layer(); ++i) {
    if (model.layers[static_cast<std::size_t>(i)].n_head > 0 && !options.frozen(i, model.n_layer())) scope.push_back(i);
  }
  if (scope.empty()) detail::fail_argument("structures", "nothing to prune: no unfrozen layer has attention");
  const auto n = static_cast<Eigen::Index>(scope.size());
  Eigen::VectorXd importance(n), heads(n);
  for (Eigen::Index k = 0; k < n; ++k) {
    importance[k] = layer_importance[scope[static_cast<std::size_t>(k)]];
    heads[k] = static_cast<double>(model.layers[static_cast<std::size_t>(scope[static_cast<std::size_t>(k)])].n_head);
  }
  unbalanced_rates_report report;
  report.requested = budget_from_fraction(options.target, model.total_heads());
  report.overall_rate = static_cast<double>(report.requested) / heads.sum();
  auto solve = rate_options;
  solve.target = std::min(1.0, report.overall_rate);
  const auto rates = layer_pruning_rates<double>(importance, heads, solve);
  report.at_min_rate = rates.at_min_rate;
  report.at_max_rate = rates.at_max_rate;
  report.rates = Eigen::VectorXd::Zero(model.n_layer());
  report.removed.assign(static_cast<std::size_t>(model.n_layer()), 0);

  std::vector<double> wanted(scope.size());
  std::vector<std::int64_t> units(scope.size()), cap(scope.size()), step(scope.size());
  std::int64_t left = report.requested;
  for (std::size_t k = 0; k < scope.size(); ++k) {
    const auto g = model.geometry(scope[k]);
    const auto how = detail::obs_granularity(options, g);
    report.rates[scope[k]] = rates.rates[static_cast<Eigen::Index>(k)];
    step[k] = g.query_heads_per_step(how);
    cap[k] = detail::unit_cap(g, how, options);
    wanted[k] = rates.rates[static_cast<Eigen::Index>(k)] * static_cast<double>(g.n_head()) / static_cast<double>(step[k]);
    units[k] = std::min(cap[k], static_cast<std::int64_t>(std::floor(wanted[k] + 1e-9)));
    left -= units[k] * step[k];
  }
  // Equal remainders come from rates clipped to the same bound, which hides the
  // importance: the strategy's own order breaks the tie.
  const auto before = [&](std::size_t a, std::size_t b) {
    const double ra = wanted[a] - static_cast<double>(units[a]), rb = wanted[b] - static_cast<double>(units[b]);
    if (std::abs(ra - rb) > 1e-12) return ra > rb;
    const double ia = importance[static_cast<Eigen::Index>(a)], ib = importance[static_cast<Eigen::Index>(b)];
    if (rate_options.strategy == rate_strategy::inverse && ia != ib) return ia < ib;
    if (rate_options.strategy == rate_strategy::proportional && ia != ib) return ia > ib;
    return a < b;
  };
  for (;;) {
    std::size_t best = scope.size();
    for (std::size_t k = 0; k < scope.size(); ++k) {
      if (units[k] >= cap[k] || step[k] > left) continue;
      if (best == scope.size() || before(k, best)) best = k;
    }
    if (best == scope.size()) break;
    ++units[best];
    left -= step[best];
  }
  for (std::size_t k = 0; k < scope.size(); ++k) {
    report.removed[static_cast<std::size_t>(scope[k])] = units[k] * step[k];
    report.removed_total += units[k] * step[k];
  }
  return {detail::plan_removing_least_important(model, options, report.removed), std::move(report)};
}

/// The plan of a depth preset (see the header comment): `layer_scores` has one entry
/// per layer (higher: more important). Throws std::invalid_argument naming
/// layers_to_drop when the frozen layers leave fewer layers than the preset removes.
[[nodiscard]] inline pruning_result plan_depth_preset(const model_scores& model, const Eigen::VectorXd& layer_scores, depth_preset preset,
                                                      depth_selection selection, const pruning_options& options) {
  detail::require_size("layer_scores", layer_scores.size(), model.n_layer(), "layer count");
  depth_options depth;
  depth.layers_to_drop = preset_drop_count(preset, model.n_layer());
  depth.selection = selection;
  depth.freeze_first_layers = std::max(options.freeze_first, options.keep_first_layers);
  depth.freeze_last_layers = options.freeze_last;
  const auto chosen = select_layers_to_drop<double>(layer_scores, depth);
  pruning_result out;
  out.layers = keep_everything(model);
  for (const auto l : chosen.dropped) out.layers[static_cast<std::size_t>(l)].keep_layer = false;
  return out;
}

NASHPRUNE_END_NAMESPACE
