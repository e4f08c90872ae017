// nashprune/layer_importance_plans.hpp — pruning plans driven by one importance per
// layer: unbalanced per-layer head rates, then the heads within each layer by score
// (the GAQ seed's pipeline), and the depth presets that drop whole layers (DenseCore).
//
// Sources: gqa-aware-prune.md ("Unbalanced Pruning Strategy", "Pruning Rate Calculator",
// Stage 4 of the main pipeline: per layer, keep the GQA groups of highest importance)
// and densecore-model-optimization.md ("Depth Pruning", DEPTH_PRUNE_25_CFG / _50_CFG).
//
// plan_unbalanced_rates: each layer in the scope loses the same rate of its heads and,
// with mlp offered, of its MLP channels (the seed's --prune_mlp), rate_l from
// layer_rates.hpp; the structures are heads or groups, optionally with mlp.
//  - scope: the unfrozen layers with attention (heads or groups offered) or an FFN
//    (mlp offered). The units a rate applies to in layer l: a_l = n_head_l / h_l
//    attention units, each a step of h_l query heads, h_l = the group size (groups),
//    n_head_kv (the same heads from every group of a GQA layer) or 1 (multi-head
//    attention); and m_l = n_ff_l / c_l channel steps of c_l = mlp_chunk channels;
//  - target: the rates of layer_rates.hpp are solved for the overall rate
//    ρ = R / Σ_l w_l over the scope, weighted by w_l:
//      budget_unit::heads:      R = floor(target × all heads), w_l = n_head_l; the
//                               channels follow each layer's rate (they count for
//                               nothing in the heads' target);
//      budget_unit::parameters: R = floor(target × total_parameters) and w_l the
//                               parameters the rate applies to, a_l·p_att + m_l·p_mlp,
//                               p_att the parameters of one attention unit
//                               (attention_items.hpp: q, o rows of its heads, and k, v
//                               of a whole group) and p_mlp = c_l·3·n_embd; so
//                               Σ_l rate_l·w_l = R, the rates scaled until the removed
//                               parameter share is the target.
//    Frozen layers keep everything and the others carry the whole target;
//  - counts: per entry e (a layer's attention, or its MLP) x_e = rate_l·a_l (or
//    rate_l·m_l) units are wanted, at most cap_e (attention: what min_heads and
//    max_prune leave, never a layer's last group or a group's last query head,
//    nash_decisions.hpp; MLP: removable_channels of pruning_plan.hpp, at most
//    max_prune of the channels and never the last); k_e = min(cap_e, floor x_e),
//    then one unit at a time goes to the entry of largest remainder x_e − k_e that
//    has room (ties, from rates clipped alike: the less important layer with
//    inverse rates, the more important with proportional ones, then the lower
//    layer, attention before MLP) and whose cost still fits in what is left of the
//    budget. The budgets: with heads, R heads for the attention entries (a unit
//    costs h_l) and floor(Σ_l x_MLP,l·c_l) channels for the MLP entries (a unit
//    costs c_l); with parameters, R parameters for all entries together (a unit
//    costs p_att or p_mlp). With heads each count is the floor or the ceiling of its
//    wanted units unless caps bind, and the plan removes R heads whenever the steps
//    allow it, else the most below. With parameters a head step that no longer fits
//    leaves its share to the finer channel steps, which take it up by the same rule
//    (a layer may then lose a few channels more than its rate), so the plan removes
//    R parameters to within one channel step whenever the caps allow it. The seed
//    keeps floor((1 − rate) · kv heads) instead, which overshoots the target by up
//    to one group per layer; meeting R makes the plan comparable with the global
//    ones at the same budget;
//  - choice: in each layer the k·h_l heads of least importance at that granularity
//    (attention_geometry::plan_by_scores: whole groups by the sum of their heads'
//    importance, or the lowest heads of every group) and the k·c_l channels of least
//    importance (channels_least_first, the order of every score-driven plan).
// A layer importance that is not finite or is negative is refused (layer_rates.hpp),
// and a target the clipped rates cannot reach raises layer_rates' std::domain_error,
// which names the reachable interval (of the overall rate ρ over the scope).
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
#include <iterator>
#include <string>
#include <vector>

#include "config.hpp"
#include "depth_pruning.hpp"
#include "detail/validate.hpp"
#include "attention_items.hpp"
#include "layer_rates.hpp"
#include "pruning_plan.hpp"

NASHPRUNE_BEGIN_NAMESPACE

/// How the unbalanced rates went (every vector has one entry per layer).
struct unbalanced_rates_report {
  budget_unit unit = budget_unit::heads;       ///< what requested and removed_total count
  Eigen::VectorXd rates;                       ///< the solved rate (0 outside the scope)
  std::vector<std::int64_t> removed;           ///< query heads each layer loses
  std::vector<std::int64_t> removed_channels;  ///< MLP channels each layer loses (0 without mlp)
  std::int64_t requested = 0;                  ///< R: floor(target × heads, or × parameters)
  std::int64_t removed_total = 0;              ///< heads, or parameters, the plan removes
  double overall_rate = 0;                     ///< ρ, what the rates were solved for
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

// One layer's attention or MLP as the rates round it (see the header comment).
struct rate_entry {
  std::size_t scope_index = 0;  // the layer's position in the scope
  bool attention = true;
  double wanted = 0;            // x_e, in units
  std::int64_t cap = 0;         // most units
  std::int64_t cost = 0;        // budget per unit
  std::int64_t units = 0;       // k_e
};

// The counts of `entries` (see the header comment): floors within the caps, then one
// unit at a time by largest remainder while its cost fits in `budget`. `before(a, b)`
// orders two entries of equal remainder.
template <typename Before>
void round_to_budget(std::vector<rate_entry>& entries, std::int64_t budget, const Before& before) {
  std::int64_t left = budget;
  for (auto& e : entries) {
    e.units = std::min(e.cap, static_cast<std::int64_t>(std::floor(e.wanted + 1e-9)));
    left -= e.units * e.cost;
  }
  const auto first = [&](std::size_t a, std::size_t b) {
    const double ra = entries[a].wanted - static_cast<double>(entries[a].units);
    const double rb = entries[b].wanted - static_cast<double>(entries[b].units);
    if (std::abs(ra - rb) > 1e-12) return ra > rb;
    return before(entries[a], entries[b]);
  };
  for (;;) {
    std::size_t best = entries.size();
    for (std::size_t k = 0; k < entries.size(); ++k) {
      if (entries[k].units >= entries[k].cap || entries[k].cost > left) continue;
      if (best == entries.size() || first(k, best)) best = k;
    }
    if (best == entries.size()) break;
    ++entries[best].units;
    left -= entries[best].cost;
  }
}

// The plan with `removed[l]` heads and `removed_channels[l]` MLP channels of least
// importance gone from each layer l.
inline pruning_result plan_removing_least_important(const model_scores& model, const pruning_options& o,
                                                    const std::vector<std::int64_t>& removed,
                                                    const std::vector<std::int64_t>& removed_channels) {
  pruning_result out;
  out.layers = keep_everything(model);
  for (std::int64_t i = 0; i < model.n_layer(); ++i) {
    const auto& l = model.layers[static_cast<std::size_t>(i)];
    auto& layer = out.layers[static_cast<std::size_t>(i)];
    if (removed[static_cast<std::size_t>(i)] > 0) {
      const auto g = model.geometry(i);
      layer.heads = g.plan_by_scores(obs_granularity(o, g), l.heads, removed[static_cast<std::size_t>(i)]);
    }
    if (removed_channels[static_cast<std::size_t>(i)] > 0) layer.channels = channels_kept(l.channels, removed_channels[static_cast<std::size_t>(i)]);
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
/// `options.target`, of the heads or of the parameters as `options.unit` says).
/// Throws std::invalid_argument naming the argument for structures other than heads,
/// groups and mlp (heads or groups among them with budget_unit::heads), scores or an
/// importance that do not fit, or nothing to prune; std::domain_error (from
/// layer_pruning_rates) for a target the clipped rates cannot reach.
[[nodiscard]] inline unbalanced_rates_result plan_unbalanced_rates(const model_scores& model, const Eigen::VectorXd& layer_importance,
                                                                   const pruning_options& options, const layer_rate_options& rate_options) {
  const bool by_heads = options.unit == budget_unit::heads;
  if (options.structures.empty() || !options.structures.within({structure::heads, structure::groups, structure::mlp})) {
    detail::fail_argument("structures", "unbalanced rates prune heads, groups and mlp channels only");
  }
  if (by_heads && !options.wants_heads()) {
    detail::fail_argument("structures", "budget_unit::heads counts heads: offer heads or groups, or count parameters");
  }
  if (!(options.target >= 0.0 && options.target < 1.0)) detail::fail_argument("target", "must lie in [0, 1), got " + detail::describe_value(options.target));
  detail::require_size("layer_importance", layer_importance.size(), model.n_layer(), "layer count");
  if (!by_heads && model.total_parameters <= 0) detail::fail_argument("total_parameters", "must be positive, got " + std::to_string(model.total_parameters));
  const bool mlp = options.wants(structure::mlp);
  for (std::int64_t i = 0; i < model.n_layer(); ++i) {
    const auto& l = model.layers[static_cast<std::size_t>(i)];
    const std::string at = "layers[" + std::to_string(i) + "]";
    detail::require_size(at + ".heads", l.heads.size(), l.n_head, "size");
    detail::require_finite(at + ".heads", l.heads);
    if (!mlp) continue;
    detail::require_size(at + ".channels", l.channels.size(), l.n_ff, "size");
    detail::require_finite(at + ".channels", l.channels);
    if (l.mlp_chunk < 1) detail::fail_argument(at + ".mlp_chunk", "must be positive, got " + std::to_string(l.mlp_chunk));
  }
  std::vector<std::int64_t> scope;
  for (std::int64_t i = 0; i < model.n_layer(); ++i) {
    const auto& l = model.layers[static_cast<std::size_t>(i)];
    const bool offers = (options.wants_heads() && l.n_head > 0) || (mlp && l.n_ff > 0);
    if (offers && !options.frozen(i, model.n_layer())) scope.push_back(i);
  }
  if (scope.empty()) detail::fail_argument("structures", "nothing to prune: no unfrozen layer has the structures offered");

  // The entries, each layer's weight w_l and the budget R.
  std::vector<detail::rate_entry> attention, channels;
  const auto n = static_cast<Eigen::Index>(scope.size());
  Eigen::VectorXd importance(n), weight = Eigen::VectorXd::Zero(n);
  for (std::size_t k = 0; k < scope.size(); ++k) {
    const auto i = scope[k];
    const auto& l = model.layers[static_cast<std::size_t>(i)];
    importance[static_cast<Eigen::Index>(k)] = layer_importance[i];
    if (options.wants_heads() && l.n_head > 0) {
      const auto g = model.geometry(i);
      const auto how = detail::obs_granularity(options, g);
      const std::int64_t step = g.query_heads_per_step(how);
      const std::int64_t cost = by_heads ? step : attention_items<double>(g, how, i, l.heads, model.n_embd).front().cost;
      attention.push_back({k, true, static_cast<double>(g.n_head() / step), detail::unit_cap(g, how, options), cost, 0});
      weight[static_cast<Eigen::Index>(k)] += by_heads ? static_cast<double>(l.n_head) : static_cast<double>(g.n_head() / step * cost);
    }
    if (mlp && l.n_ff > 0) {
      const std::int64_t cost = by_heads ? l.mlp_chunk : l.mlp_chunk * mlp_channel_cost(model.n_embd);
      channels.push_back({k, false, static_cast<double>(l.n_ff) / static_cast<double>(l.mlp_chunk),
                          detail::removable_channels(l, options) / l.mlp_chunk, cost, 0});
      if (!by_heads) weight[static_cast<Eigen::Index>(k)] += static_cast<double>(l.n_ff * mlp_channel_cost(model.n_embd));
    }
  }
  if (!(weight.sum() > 0)) detail::fail_argument("structures", "nothing to prune: no unfrozen layer has attention");
  unbalanced_rates_report report;
  report.unit = options.unit;
  report.requested = budget_from_fraction(options.target, by_heads ? model.total_heads() : model.total_parameters);
  report.overall_rate = static_cast<double>(report.requested) / weight.sum();
  auto solve = rate_options;
  solve.target = std::min(1.0, report.overall_rate);
  const auto rates = layer_pruning_rates<double>(importance, weight, solve);
  report.at_min_rate = rates.at_min_rate;
  report.at_max_rate = rates.at_max_rate;
  report.rates = Eigen::VectorXd::Zero(model.n_layer());
  for (std::size_t k = 0; k < scope.size(); ++k) report.rates[scope[k]] = rates.rates[static_cast<Eigen::Index>(k)];
  // x_e: the layer's rate of its units (entries hold their unit count until here).
  for (auto* entries : {&attention, &channels}) {
    for (auto& e : *entries) e.wanted *= rates.rates[static_cast<Eigen::Index>(e.scope_index)];
  }

  // Equal remainders come from rates clipped to the same bound, which hides the
  // importance: the strategy's own order breaks the tie, then the layer order.
  const auto before = [&](const detail::rate_entry& a, const detail::rate_entry& b) {
    const double ia = importance[static_cast<Eigen::Index>(a.scope_index)], ib = importance[static_cast<Eigen::Index>(b.scope_index)];
    if (rate_options.strategy == rate_strategy::inverse && ia != ib) return ia < ib;
    if (rate_options.strategy == rate_strategy::proportional && ia != ib) return ia > ib;
    if (a.scope_index != b.scope_index) return a.scope_index < b.scope_index;
    return a.attention && !b.attention;
  };
  if (by_heads) {
    detail::round_to_budget(attention, report.requested, before);
    double wanted_channels = 0;
    for (const auto& e : channels) wanted_channels += e.wanted * static_cast<double>(e.cost);
    detail::round_to_budget(channels, static_cast<std::int64_t>(std::floor(wanted_channels + 1e-9)), before);
  } else {
    std::vector<detail::rate_entry> all;
    // Layer order, attention before MLP: the entries' order breaks the last ties.
    std::merge(attention.begin(), attention.end(), channels.begin(), channels.end(), std::back_inserter(all),
               [](const auto& a, const auto& b) { return a.scope_index < b.scope_index; });
    detail::round_to_budget(all, report.requested, before);
    attention.clear();
    channels.clear();
    for (const auto& e : all) (e.attention ? attention : channels).push_back(e);
  }
  report.removed.assign(static_cast<std::size_t>(model.n_layer()), 0);
  report.removed_channels.assign(static_cast<std::size_t>(model.n_layer()), 0);
  for (const auto& e : attention) {
    const auto i = static_cast<std::size_t>(scope[e.scope_index]);
    const auto g = model.geometry(scope[e.scope_index]);
    report.removed[i] = e.units * g.query_heads_per_step(detail::obs_granularity(options, g));
    report.removed_total += by_heads ? report.removed[i] : e.units * e.cost;
  }
  for (const auto& e : channels) {
    const auto i = static_cast<std::size_t>(scope[e.scope_index]);
    report.removed_channels[i] = e.units * model.layers[i].mlp_chunk;
    report.removed_total += by_heads ? 0 : e.units * e.cost;
  }
  return {detail::plan_removing_least_important(model, options, report.removed, report.removed_channels), std::move(report)};
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
