// nashprune/pruning_plan.hpp — from per-structure scores to a pruning plan: which
// query heads, KV heads, FFN channels and whole layers every layer keeps.
//
// Inputs (model_scores): per layer the GQA geometry, one importance per query head
// and per FFN channel (importance.hpp), the channels removed together (mlp_chunk,
// the quantization block of ffn_down), optionally the measured block influence
// 1 - cos(x_in, x_out) of each layer, attention block and MLP block; the model's
// total parameter count. Options (pruning_options) are typed: the structures
// offered, what the target counts, the head game and the selector.
//
// The pipeline:
//  1. Head game (the redundancy source is the policy argument of plan_pruning):
//     - cosine_game: per layer, the game of nash_game.hpp with incentives
//       c = head importance / max and redundancy R = the heads' cosine similarity,
//       negative entries clipped to 0 (an anti-correlated head does not substitute
//       for another) and the diagonal 1. Participation s_i scales each head's
//       importance; s_i < threshold counts as importance 0. With lambda_auto one λ
//       shared by the unfrozen layers is searched (lambda_search.hpp) so that
//       the GQA-consistent keep plans of its equilibria (nash_decisions.hpp) remove
//       the target's count of heads, and those plans are the result (step 2 is
//       skipped).
//     - output_perturbation_game / ablation_loss_game: one game over all unfrozen
//       layers on the energy of the change removing heads makes to the attention
//       output (output_perturbation.hpp), or on the second-order loss model
//       measured by ablation (loss_interaction.hpp). selector::greedy searches one
//       price for the target's count of heads, selector::exact enumerates each
//       layer's GQA-consistent removal sets and allocates exactly. Their plans are
//       the result (step 2 is skipped).
//     - compensated_error_game (head_game::obs): one choice over the unfrozen
//       layers of query heads (or groups) and MLP channels by the error left after
//       attn_output and ffn_down are refit on what stays (compensated_selection.hpp):
//       per layer and count the set of least OBS cost (exact enumeration of the
//       GQA-consistent sets when they number at most max_sets with selector::exact,
//       greedy_max_sets with selector::greedy; SlimGPT's greedy beyond; MLP
//       channels greedy in steps), then exact_allocation of the
//       counts over layers minimising Σ_l scale_l·E_l within the target's budget
//       (heads or parameters); a head count it misses is met as in step 3, costed
//       by scale_l·E_l of each set. The plans are the result (step 2 is skipped).
//     - no_head_game: the importance as given.
//  2. Global selection (global_selection.hpp): items from attention_items.hpp
//     (heads or whole GQA groups), MLP channels in chunks of mlp_chunk (least
//     important first), attention and MLP blocks and whole layers, under the budget
//     target × (total parameters, or total heads with budget_unit::heads); greedy
//     or the exact 0/1 solver. A block or layer is scored by the importance of what
//     it holds; with measured influence by that influence instead, scaled (when
//     finer structures are offered too) by one factor per kind so that the total
//     equals the total importance of the blocks' contents. With influence and a
//     temperature > 0 the finer items are weighted by their H-GSP priors
//     (hgsp_priors.hpp). Whole layers offered with finer structures compete as
//     follows: for n = 0, 1, ... the n unfrozen layers of least importance per unit
//     of cost are removed, the finer items of the other layers are selected with
//     the budget left, and the plan removing the least importance per unit of
//     budget spent wins (a removed layer takes its heads and channels with it).
//     This is not global_selection's container formulation: its one greedy walk
//     over layers and their items chooses other plans on real models.
//  3. Exact head counts (budget_unit::heads with heads or groups, no layers or
//     attention blocks; and every game above): a plan that does not remove the
//     target's count of heads, floor(target × heads), is replaced by the exact
//     allocation over every layer's GQA-consistent removals, whole groups, the same
//     heads per group and mixes (head_count_allocation.hpp), costed by what the path
//     scores: the importance after the game, the output energy, or the loss model
//     within the layer. So the count is met whenever any consistent plan reaches it,
//     else the most below; a plan that meets it is kept as its path chose it. A
//     target beyond what the structures can remove under the caps (reach_of) is
//     refused, naming the most they can.
//  4. Per-head statistics of the plan (importance, participation, redundancy sum).
//
// No I/O, no threads: the caller computes the scores (in parallel if it likes) and
// hands them in.
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <numeric>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "attention_geometry.hpp"
#include "attention_items.hpp"
#include "compensated_selection.hpp"
#include "config.hpp"
#include "detail/validate.hpp"
#include "global_selection.hpp"
#include "head_count_allocation.hpp"
#include "hgsp_priors.hpp"
#include "lambda_search.hpp"
#include "layer_plan.hpp"
#include "loss_interaction.hpp"
#include "nash_decisions.hpp"
#include "nash_solvers.hpp"
#include "output_perturbation.hpp"

NASHPRUNE_BEGIN_NAMESPACE

/// The structures a plan may remove.
enum class structure : std::uint8_t { heads, groups, mlp, attention_blocks, mlp_blocks, layers };
inline constexpr std::size_t structure_count = 6;
/// The command-line spelling of each structure.
inline constexpr std::array<std::string_view, structure_count> structure_names{"heads",      "groups",     "mlp",
                                                                               "attn-blocks", "mlp-blocks", "layers"};

[[nodiscard]] constexpr std::optional<structure> find_structure(std::string_view name) {
  for (std::size_t k = 0; k < structure_count; ++k) {
    if (structure_names[k] == name) return static_cast<structure>(k);
  }
  return std::nullopt;
}

class structure_set {
 public:
  constexpr structure_set() = default;
  constexpr structure_set(std::initializer_list<structure> structures) {
    for (const auto s : structures) insert(s);
  }
  constexpr void insert(structure s) { bits_ = static_cast<std::uint8_t>(bits_ | bit(s)); }
  [[nodiscard]] constexpr bool contains(structure s) const { return (bits_ & bit(s)) != 0; }
  [[nodiscard]] constexpr std::size_t size() const { return static_cast<std::size_t>(std::popcount(bits_)); }
  [[nodiscard]] constexpr bool empty() const { return bits_ == 0; }
  [[nodiscard]] constexpr bool operator==(const structure_set&) const = default;
  /// True when every member is one of `allowed`.
  [[nodiscard]] constexpr bool within(structure_set allowed) const { return (bits_ & ~allowed.bits_) == 0; }

 private:
  static constexpr std::uint8_t bit(structure s) { return static_cast<std::uint8_t>(1U << static_cast<unsigned>(s)); }
  std::uint8_t bits_ = 0;
};

/// What the target counts.
enum class budget_unit : std::uint8_t { parameters, heads };

/// The redundancy source of the head game (none: importance alone).
enum class head_game : std::uint8_t { none, cosine, output, ablation, obs };
inline constexpr std::array<std::string_view, 5> head_game_names{"none", "cosine", "output", "ablation", "obs"};

/// greedy: the score-ordered greedy (global selection) or the price search (output,
/// ablation); exact: the exact 0/1 solver or the exact enumeration and allocation.
enum class selector : std::uint8_t { greedy, exact };
inline constexpr std::array<std::string_view, 2> selector_names{"greedy", "exact"};

struct pruning_options {
  double target = 0.25;  ///< fraction removed: of the parameters, or of the heads with budget_unit::heads
  budget_unit unit = budget_unit::parameters;
  structure_set structures{structure::heads};
  head_game game = head_game::cosine;
  selector selection = selector::greedy;
  double lambda = 0.5;       ///< the game's redundancy weight
  bool lambda_auto = false;  ///< search one λ over the unfrozen layers for the head target
  double threshold = 0.1;    ///< participation below which a head counts as pruned
  std::int64_t iterations = 100;
  std::int64_t min_heads = 1;  ///< never keep fewer heads in a layer
  double max_prune = 0.7;      ///< largest fraction of a layer's heads removed
  std::int64_t freeze_first = 0;
  std::int64_t freeze_last = 0;
  std::int64_t keep_first_layers = 0;  ///< never remove these first layers whole
  double temperature = 1.0;            ///< H-GSP prior temperature (0: priors off)
  std::optional<double> tau;           ///< H-GSP gate (unset: automatic)

  [[nodiscard]] bool frozen(std::int64_t layer, std::int64_t n_layer) const {
    return layer < freeze_first || layer >= n_layer - freeze_last;
  }
  [[nodiscard]] bool wants(structure s) const { return structures.contains(s); }
  [[nodiscard]] bool wants_heads() const { return wants(structure::heads) || wants(structure::groups); }
  [[nodiscard]] nash_decision_options<double> decisions() const { return {threshold, min_heads, max_prune}; }
};

/// One layer as the planner sees it.
struct layer_scores {
  std::int64_t n_head = 0;  ///< 0: attention-free
  std::int64_t n_head_kv = 0;
  std::int64_t n_ff = 0;  ///< 0: FFN-free
  std::int64_t mlp_chunk = 1;
  Eigen::VectorXd heads;     ///< importance per query head
  Eigen::VectorXd channels;  ///< importance per FFN channel
};

/// 1 - cos(x_in, x_out) of a layer, of its attention block and of its MLP block.
struct measured_influence {
  double layer = 0;
  double attention = 0;
  double mlp = 0;
};

struct model_scores {
  std::int64_t n_embd = 0;
  std::int64_t head_dim_k = 0;
  std::int64_t head_dim_v = 0;
  std::int64_t total_parameters = 0;  ///< the budget's base with budget_unit::parameters
  std::vector<layer_scores> layers;
  std::vector<measured_influence> influence;  ///< per layer, or empty (not measured)

  [[nodiscard]] std::int64_t n_layer() const { return static_cast<std::int64_t>(layers.size()); }
  [[nodiscard]] attention_geometry geometry(std::int64_t layer) const {
    const auto& l = layers[static_cast<std::size_t>(layer)];
    return {l.n_head, l.n_head_kv, head_dim_k, head_dim_v};
  }
  [[nodiscard]] std::int64_t total_heads() const {
    std::int64_t n = 0;
    for (const auto& l : layers) n += l.n_head;
    return n;
  }
};

// ---------------------------------------------------------------------------
// Head games (the policy argument of plan_pruning)

/// Per-layer game on the heads' cosine similarity (n_head × n_head per layer; an
/// empty matrix for a layer that plays_cosine_game says plays none).
struct cosine_game {
  std::vector<Eigen::MatrixXd> cosine;
};

/// One game over the unfrozen layers on the output-perturbation energy: per layer
/// P relative to the residual stream, per token (empty for a layer with fewer than
/// two heads or a frozen one).
struct output_perturbation_game {
  std::vector<Eigen::MatrixXd> scaled_gram;
};

/// One game over every layer's query heads (units numbered layer by layer) on the
/// loss model C(z) = δᵀz + ½·zᵀIz measured with the units `given` removed first.
struct ablation_loss_game {
  Eigen::VectorXd delta;
  Eigen::MatrixXd interaction;
  std::vector<std::int64_t> given;  ///< ascending
};

/// True when layer `n_head` heads play the cosine game under `options` (the caller
/// then provides its cosine matrix).
[[nodiscard]] inline bool plays_cosine_game(const pruning_options& options, std::int64_t n_head) {
  return options.game == head_game::cosine && options.wants_heads() && n_head > 1;
}

// ---------------------------------------------------------------------------
// Results

struct head_statistics {
  std::int64_t layer = 0;
  std::int64_t head = 0;
  double importance = 0;
  double participation = 1;
  double redundancy_sum = 0;
  bool pruned = false;
};

/// lambda_auto: the λ found and how close its equilibria came to the target.
struct lambda_search_report {
  double lambda = 0;
  std::int64_t requested = 0;           ///< heads the target asks for
  std::int64_t equilibrium_pruned = 0;  ///< heads with participation < threshold (caps included)
  std::int64_t plan_pruned = 0;         ///< heads the GQA-consistent plans remove
  bool reachable = true;                ///< false: beyond the caps or below what the smallest λ prunes
  std::int64_t solves = 0;
};

/// How a game over all layers (output perturbation, ablation loss) went.
struct head_game_report {
  selector selection = selector::greedy;
  double price = 0;            ///< greedy: the price found (0 for exact)
  std::int64_t requested = 0;  ///< heads the target asks for (a budget: the plans remove at most this)
  std::int64_t removed = 0;    ///< heads the plans remove
  double energy = 0;           ///< output: Σ_l E_l(S_l); ablation: the modelled loss increase
  std::int64_t solves = 0;
};

/// How the compensation-aware choice (compensated_error_game) went.
struct compensated_choice_report {
  budget_unit unit = budget_unit::parameters;
  std::int64_t requested = 0;      ///< budget units the target allows (heads or parameters)
  std::int64_t removed = 0;        ///< budget units the plans remove
  double error = 0;                ///< Σ_l scale_l·E_l(S_l) of the chosen sets
  std::int64_t exact_choices = 0;  ///< chosen head sets that are least by enumeration (the others greedy)
  std::int64_t damping_raised = 0; ///< maps whose damping was raised (numerically singular moments)
};

struct pruning_result {
  std::vector<layer_plan> layers;
  std::vector<head_statistics> heads;  ///< empty for the ablation and obs games
  std::optional<lambda_search_report> lambda;
  std::optional<head_game_report> game;
  std::optional<compensated_choice_report> compensated;
};

/// A target in its unit: what it asks for and the most the offered structures can
/// remove under min_heads, max_prune and the frozen layers (reach_of).
struct target_reach {
  budget_unit unit = budget_unit::parameters;
  std::int64_t total = 0;      ///< heads, or parameters
  std::int64_t requested = 0;  ///< floor(target × total)
  std::int64_t largest = 0;    ///< the most any plan of these structures removes
  [[nodiscard]] bool reachable() const { return requested <= largest; }
  [[nodiscard]] double largest_fraction() const { return total > 0 ? static_cast<double>(largest) / static_cast<double>(total) : 0.0; }
};

/// The plan keeping everything of `model`.
[[nodiscard]] inline std::vector<layer_plan> keep_everything(const model_scores& model) {
  std::vector<layer_plan> plan;
  for (const auto& l : model.layers) {
    layer_plan p;
    for (std::int64_t h = 0; h < l.n_head; ++h) p.heads.q_heads.push_back(h);
    for (std::int64_t h = 0; h < l.n_head_kv; ++h) p.heads.kv_heads.push_back(h);
    for (std::int64_t c = 0; c < l.n_ff; ++c) p.channels.push_back(c);
    plan.push_back(std::move(p));
  }
  return plan;
}

// ---------------------------------------------------------------------------
// Global selection shared by the planner and plain item tables

/// The greedy or the exact 0/1 solver of global_selection.hpp on one table.
template <typename Scalar>
[[nodiscard]] selection_result<Scalar> select_items(std::span<const selection_item<Scalar>> items, std::int64_t budget,
                                                    const selection_constraints& constraints, selector how,
                                                    const exact_options& options = {}) {
  return how == selector::exact ? solve_exact<Scalar>(items, budget, constraints, options)
                                : select_greedy<Scalar>(items, budget, constraints);
}

// ---------------------------------------------------------------------------
// The ablation loss model's layout and choice (also used on its own by ablation plans)

/// The units of a model in ablation order (layer by layer, head by head) and every
/// removal set each layer allows (GQA layers lose the same count from every group).
struct loss_layout {
  std::vector<loss_layer> layers;
  std::vector<loss_slot> slots;
  std::int64_t units = 0;

  /// The layer holding unit u.
  [[nodiscard]] std::size_t layer_of(std::int64_t u) const {
    std::size_t l = 0;
    while (l + 1 < layers.size() && layers[l + 1].first <= u) ++l;
    return l;
  }
};

namespace detail {

/// Every removal set of `g` that `granularity` allows and keeps at least `min_keep`
/// heads (by subset enumeration: layers of at most 20 heads), units from `first`.
inline loss_slot layer_removal_sets(const attention_geometry& g, head_granularity granularity, std::int64_t min_keep,
                                    std::int64_t first) {
  const std::int64_t n = g.n_head();
  require(n <= 20, "n_head", "the loss choice enumerates the removal sets of a layer: at most 20 heads, got " + std::to_string(n));
  loss_slot out;
  for (std::uint32_t mask = 0; mask < (1U << n); ++mask) {
    std::vector<std::int64_t> per_group(static_cast<std::size_t>(g.n_head_kv()), 0);
    std::vector<std::int64_t> set;
    for (std::int64_t h = 0; h < n; ++h) {
      if (mask >> h & 1U) set.push_back(first + h), ++per_group[static_cast<std::size_t>(h / g.group_size())];
    }
    if (n - static_cast<std::int64_t>(set.size()) < min_keep) continue;
    bool allowed = true;
    for (const auto c : per_group) {
      if (granularity == head_granularity::heads_per_group) allowed = allowed && c == per_group.front();
      if (granularity == head_granularity::whole_groups) allowed = allowed && (c == 0 || c == g.group_size());
    }
    if (allowed) out.push_back(set);
  }
  return out;
}

inline std::vector<std::int64_t> removed_q_heads(const head_keep_plan& plan, std::int64_t n_head) {
  std::vector<std::int64_t> removed;
  for (std::int64_t h = 0; h < n_head; ++h) {
    if (!std::binary_search(plan.q_heads.begin(), plan.q_heads.end(), h)) removed.push_back(h);
  }
  return removed;
}

/// When `plans` (one per geometry) do not remove `requested` query heads in all,
/// replaces them by the allocation over every GQA-consistent removal of each layer
/// (head_count_allocation.hpp; groups_only: whole groups alone) under the caps of
/// `decisions`, with cost_of(l) the removal_cost of layer l: the count exactly when
/// any plan reaches it, else the most below. Plans short of the count are kept when
/// the allocation gets no closer; plans that meet it are kept as their game chose
/// them, unless `replace` (they miss heads the costs require). A shape of more than
/// max_sets sets is searched in closed form (least_cost_curve). Returns whether the
/// plans were replaced.
template <typename CostOf>
bool meet_head_count(std::span<const attention_geometry> geometries, bool groups_only, const nash_decision_options<double>& decisions,
                     std::vector<head_keep_plan>& plans, std::int64_t requested, const CostOf& cost_of, bool replace = false,
                     std::int64_t max_sets = std::int64_t{1} << 16) {
  std::int64_t removed = 0;
  for (std::size_t l = 0; l < plans.size(); ++l) removed += geometries[l].n_head() - static_cast<std::int64_t>(plans[l].q_heads.size());
  if (plans.empty() || (removed == requested && !replace)) return false;
  std::vector<head_count_curve<double>> curves;
  for (std::size_t l = 0; l < plans.size(); ++l) {
    const auto& g = geometries[l];
    curves.push_back(least_cost_curve<double>(g, groups_only, seed_min_keep(g.n_head(), decisions), cost_of(l), max_sets));
  }
  const auto allocation = allocate_head_count<double>(curves, requested);
  if (!replace && removed < requested && allocation.total <= removed) return false;
  for (std::size_t l = 0; l < plans.size(); ++l) {
    const auto& g = geometries[l];
    plans[l] = plan_without(g, allocation.removed[l], seed_min_keep(g.n_head(), decisions) == 0);
  }
  return true;
}

}  // namespace detail

/// The ablation layout of layers with these geometries (single heads for multi-head
/// attention, the same heads of every group for GQA).
template <int deferred = 0>
[[nodiscard]] inline loss_layout make_loss_layout(std::span<const attention_geometry> layers,
                                                  const nash_decision_options<double>& decisions) {
  loss_layout out;
  for (const auto& g : layers) {
    const auto granularity = g.is_multi_head() ? head_granularity::single_heads : head_granularity::heads_per_group;
    out.layers.push_back({out.units, g, granularity});
    out.slots.push_back(detail::layer_removal_sets(g, granularity, seed_min_keep(g.n_head(), decisions), out.units));
    out.units += g.n_head();
  }
  return out;
}

struct loss_choice {
  std::vector<head_keep_plan> plans;  ///< per layer
  std::vector<std::int64_t> removed;  ///< units, ascending (the given ones included)
  double modelled = 0;                ///< C(removed): the modelled loss increase over L0
  double price = 0;                   ///< price search: the price found (0 otherwise)
  std::int64_t solves = 0;            ///< price search: equilibrium solves
  std::int64_t candidates = 0;        ///< enumeration: sets compared
};

/// The heads to remove, at most `requested` units in all (the given ones included).
/// game ablation with selector greedy searches the price of one game over the units
/// not given (`lowest_price`: price_search_options::lowest_price); selector exact
/// enumerates the GQA-consistent sets of every layer jointly (those holding the given
/// units); game none with selector exact does the same with the interactions dropped.
/// Throws std::invalid_argument naming `requested`, `given` or `game`.
template <int deferred = 0>
[[nodiscard]] inline loss_choice choose_heads_by_loss(const ablation_loss_game& model, const loss_layout& layout, head_game game,
                                                      selector how, std::int64_t requested,
                                                      const nash_decision_options<double>& decisions, bool lowest_price = false) {
  const bool price_search = game == head_game::ablation && how == selector::greedy;
  detail::require(price_search || (how == selector::exact && (game == head_game::ablation || game == head_game::none)), "game",
                  "the loss choice is the price search (ablation, greedy) or an enumeration (ablation or none, exact)");
  const auto given_count = static_cast<std::int64_t>(model.given.size());
  if (requested < given_count) {
    detail::fail_argument("requested", "the target asks for " + std::to_string(requested) + " heads, fewer than the " +
                                           std::to_string(given_count) + " removed already");
  }
  loss_choice out;
  if (price_search) {
    price_search_options<double> search;
    search.decisions = decisions;
    search.lowest_price = lowest_price;
    const auto found = search_loss_price(model.delta, model.interaction, std::span<const loss_layer>(layout.layers), requested,
                                         search, active_set_newton<double>(), std::span<const std::int64_t>(model.given));
    out.plans = found.plans;
    out.price = found.price;
    out.solves = found.solves;
  } else {
    // The options of each layer that hold its given units (all of them, or the layer cannot be cut so).
    std::vector<loss_slot> slots(layout.slots.size());
    for (std::size_t l = 0; l < slots.size(); ++l) {
      std::vector<std::int64_t> need;
      for (const auto u : model.given) {
        if (layout.layer_of(u) == l) need.push_back(u);
      }
      for (const auto& option : layout.slots[l]) {
        if (std::includes(option.begin(), option.end(), need.begin(), need.end())) slots[l].push_back(option);
      }
      if (slots[l].empty() && !need.empty()) {
        // Given units that mix whole groups and heads per group (an earlier exact count):
        // every consistent removal of the layer that holds them.
        const auto& layer = layout.layers[l];
        for (const auto shape : consistent_shapes(layer.geometry, false, seed_min_keep(layer.geometry.n_head(), decisions))) {
          if (shape.kept_groups * shape.kept_per_group == layer.geometry.n_head()) continue;
          for_each_shape_removal(layer.geometry, shape, [&](const std::vector<std::int64_t>& removed) {
            std::vector<std::int64_t> option;
            for (const auto h : removed) option.push_back(layer.first + h);
            if (std::includes(option.begin(), option.end(), need.begin(), need.end())) slots[l].push_back(option);
          });
        }
      }
      if (slots[l].empty()) {
        detail::fail_argument("given", "the given heads of layer " + std::to_string(l) + " are not a removal its GQA structure allows");
      }
    }
    const auto n = model.delta.size();
    const Eigen::MatrixXd used = game == head_game::ablation ? model.interaction : Eigen::MatrixXd::Zero(n, n);
    exact_loss_result<double> best;
    for (std::int64_t size = requested; size >= given_count && !std::isfinite(best.loss); --size) {
      best = exact_loss_choice(model.delta, used, std::span<const loss_slot>(slots), size);
    }
    if (!std::isfinite(best.loss)) {
      detail::fail_argument("given", "no GQA-consistent removal of at most " + std::to_string(requested) + " heads holds the given heads");
    }
    out.candidates = best.candidates;
    for (std::size_t l = 0; l < layout.layers.size(); ++l) {
      std::vector<std::int64_t> local;
      for (const auto u : slots[l][best.choice[l]]) local.push_back(u - layout.layers[l].first);
      out.plans.push_back(plan_without(layout.layers[l].geometry, local));
    }
  }
  // Short of the request (GQA steps), or missing given units a mix of whole groups and
  // heads per group removed: every consistent removal of each layer, costed by the loss
  // model within the layer (δ_S + ½·1_SᵀI_SS1_S), holding its given units.
  std::vector<attention_geometry> geometries;
  for (const auto& layer : layout.layers) geometries.push_back(layer.geometry);
  bool given_kept = false;
  for (const auto u : model.given) {
    const auto l = layout.layer_of(u);
    const auto& q = out.plans[l].q_heads;
    given_kept = given_kept || std::binary_search(q.begin(), q.end(), u - layout.layers[l].first);
  }
  (void)detail::meet_head_count(std::span<const attention_geometry>(geometries), false, decisions, out.plans, requested, [&](std::size_t l) {
    const auto& layer = layout.layers[l];
    const auto n = layer.geometry.n_head();
    removal_cost<double> cost{model.delta.segment(layer.first, n), model.interaction.block(layer.first, layer.first, n, n) / 2.0, {}};
    for (const auto u : model.given) {
      if (layout.layer_of(u) == l) cost.required.push_back(u - layer.first);
    }
    return cost;
  }, given_kept);
  for (std::size_t l = 0; l < out.plans.size(); ++l) {
    const auto& layer = layout.layers[l];
    for (const auto h : detail::removed_q_heads(out.plans[l], layer.geometry.n_head())) out.removed.push_back(layer.first + h);
  }
  for (const auto u : model.given) {
    if (!std::binary_search(out.removed.begin(), out.removed.end(), u)) {
      const auto l = layout.layer_of(u);
      detail::fail_argument("given", "the given heads are not a GQA-consistent removal: head " + std::to_string(l) + ":" +
                                         std::to_string(u - layout.layers[l].first) + " stays in the plan");
    }
  }
  out.modelled = removal_loss(model.delta, model.interaction, std::span<const std::int64_t>(out.removed));
  return out;
}

// ---------------------------------------------------------------------------
// The planner

namespace detail {

/// The game's redundancy from a cosine similarity (negative entries 0, diagonal 1).
inline Eigen::MatrixXd redundancy_from_cosine(const Eigen::MatrixXd& cosine) {
  Eigen::MatrixXd r = cosine.cwiseMax(0.0);
  r.diagonal().setOnes();
  return r;
}

/// A layer's MLP channels, least important first (ties: lower index first): the
/// order in which every score-driven plan removes them.
inline std::vector<std::int64_t> channels_least_first(const Eigen::VectorXd& channels) {
  std::vector<std::int64_t> order(static_cast<std::size_t>(channels.size()));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](auto a, auto b) { return channels[a] < channels[b]; });
  return order;
}

/// The channels kept (ascending) when the `removed` first of channels_least_first go.
inline std::vector<std::int64_t> channels_kept(const Eigen::VectorXd& channels, std::int64_t removed) {
  const auto order = channels_least_first(channels);
  std::vector<std::int64_t> drop(order.begin(), order.begin() + removed);
  std::sort(drop.begin(), drop.end());
  return complement_units(drop, channels.size());
}

/// The most MLP channels a plan with a per-layer cap may remove from layer `l`:
/// at most max_prune of them and never the last (a refit needs kept channels to
/// stand in), in whole steps of mlp_chunk.
inline std::int64_t removable_channels(const layer_scores& l, const pruning_options& o) {
  const std::int64_t by_ratio = static_cast<std::int64_t>(std::floor(o.max_prune * static_cast<double>(l.n_ff) + 1e-9));
  return std::max<std::int64_t>(0, std::min(by_ratio, l.n_ff - 1) / l.mlp_chunk * l.mlp_chunk);
}

/// One layer's scores as the plan goes: importance after the game and before it.
struct planned_layer {
  Eigen::VectorXd heads;
  Eigen::VectorXd raw_heads;
  Eigen::VectorXd channels;
  Eigen::VectorXd participation;
  Eigen::VectorXd redundancy_sum;
};

/// The planner, and every function here that runs a solver, is a template on an
/// unused parameter (`deferred`): a translation unit that includes this header for
/// its types compiles none of the solvers (g++: ~4 s for the header alone,
/// against ~16 s when they were ordinary inline functions).
template <int deferred = 0>
class basic_planner {
 public:
  basic_planner(const model_scores& model, const pruning_options& options) : model_(model), o_(options) {
    validate();
    for (const auto& l : model.layers) scores_.push_back({l.heads, l.heads, l.channels, {}, {}});
  }

  /// Per-layer games at the fixed λ, or (lambda_auto) kept for the λ search.
  void play_cosine_games(const cosine_game& game) {
    require_size("cosine", static_cast<std::int64_t>(game.cosine.size()), model_.n_layer(), "layer count");
    for (std::int64_t i = 0; i < model_.n_layer(); ++i) {
      const auto& l = model_.layers[static_cast<std::size_t>(i)];
      if (!plays_cosine_game(o_, l.n_head)) continue;
      const auto& cosine = game.cosine[static_cast<std::size_t>(i)];
      if (cosine.rows() != l.n_head || cosine.cols() != l.n_head) {
        fail_argument("cosine", "layer " + std::to_string(i) + " needs an n_head x n_head = " + std::to_string(l.n_head) + " x " +
                                    std::to_string(l.n_head) + " matrix, got " + std::to_string(cosine.rows()) + " x " +
                                    std::to_string(cosine.cols()));
      }
      auto& s = scores_[static_cast<std::size_t>(i)];
      if (o_.lambda_auto) {
        if (!o_.frozen(i, model_.n_layer())) pending_.push_back({i, game_importance(s), redundancy_from_cosine(cosine)});
      } else {
        apply_nash(s, redundancy_from_cosine(cosine));
      }
    }
  }

  /// The selection over the item table (or the λ search's plans).
  pruning_result select() {
    if (o_.lambda_auto) {
      require_reachable();
      return run_lambda_auto();
    }
    build_items();
    use_measured_influence();
    if (items_.empty()) fail_argument("structures", "nothing to prune: no removable structure offered in unfrozen layers");
    require_reachable();
    const std::int64_t total = o_.unit == budget_unit::heads ? model_.total_heads() : model_.total_parameters;
    const std::int64_t budget = budget_from_fraction(o_.target, total);
    selection_constraints constraints;
    constraints.n_layers = model_.n_layer();
    constraints.freeze_first_layers = std::min<std::int64_t>(o_.freeze_first, model_.n_layer());
    constraints.freeze_last_layers = std::min<std::int64_t>(o_.freeze_last, model_.n_layer() - constraints.freeze_first_layers);
    constraints.min_kept = min_kept_;
    const auto weighted = prior_weighted_items();
    if (o_.wants(structure::layers) && o_.structures.size() > 1) return finish(layers_and_finer(weighted, budget, constraints));
    // The items offer heads per group or whole groups, not their mixes: their selection
    // may stop below a count the allocation then meets.
    std::int64_t item_budget = budget;
    if (counts_heads_exactly()) {
      std::int64_t offered = 0;
      for (const auto& it : items_) offered += it.cost;
      item_budget = std::min(budget, offered);
    }
    const auto result = select_items<double>(weighted, item_budget, constraints, o_.selection);
    std::vector<selection_item<double>> removed;
    for (auto position : result.pruned) removed.push_back(items_[static_cast<std::size_t>(position)]);
    auto out = finish(removed);
    if (counts_heads_exactly()) {
      const auto scope = head_scope(1);
      auto plans = plans_of(out, scope);
      if (meet_head_count(scope, plans, budget, [&](std::size_t k) {
            return removal_cost<double>{scores_[static_cast<std::size_t>(scope[k])].heads, {}, {}};
          })) {
        for (std::size_t k = 0; k < scope.size(); ++k) out.layers[static_cast<std::size_t>(scope[k])].heads = plans[k];
        out.heads.clear();
        record_heads(out);
      }
    }
    return out;
  }

  /// What the target asks for and the most the offered structures remove.
  target_reach reach() const {
    target_reach r;
    r.unit = head_game_plans() ? budget_unit::heads : o_.unit;
    r.total = r.unit == budget_unit::heads ? model_.total_heads() : model_.total_parameters;
    r.requested = budget_from_fraction(o_.target, r.total);
    if (head_game_plans() || counts_heads_exactly()) {
      for (const auto i : head_scope(1)) {
        const auto g = model_.geometry(i);
        r.largest += most_removable_heads(g, !o_.wants(structure::heads), seed_min_keep(g.n_head(), o_.decisions()));
      }
      return r;
    }
    basic_planner items(model_, o_);
    items.build_items();
    // Per unfrozen layer: the whole layer, or its finer items but the cheapest ones min_kept holds.
    for (std::int64_t i = 0; i < model_.n_layer(); ++i) {
      if (o_.frozen(i, model_.n_layer())) continue;
      std::int64_t whole = 0;
      std::int64_t finer = 0;
      for (const auto kind : {item_kind::attention_group, item_kind::q_head, item_kind::mlp_channel, item_kind::attention_block,
                              item_kind::mlp_block, item_kind::whole_layer}) {
        std::vector<std::int64_t> costs;
        for (const auto& it : items.items_) {
          if (it.layer == i && it.kind == kind) costs.push_back(it.cost);
        }
        std::sort(costs.begin(), costs.end());
        std::size_t held = 0;
        for (const auto& rule : items.min_kept_) {
          if (rule.layer == i && rule.kind == kind) held = std::max(held, static_cast<std::size_t>(rule.count));
        }
        for (std::size_t k = std::min(held, costs.size()); k < costs.size(); ++k) (kind == item_kind::whole_layer ? whole : finer) += costs[k];
      }
      r.largest += std::max(whole, finer);
    }
    return r;
  }

  /// The output-perturbation game over the unfrozen layers with two or more heads.
  pruning_result play_output_game(const output_perturbation_game& game) {
    require_size("scaled_gram", static_cast<std::int64_t>(game.scaled_gram.size()), model_.n_layer(), "layer count");
    std::vector<std::int64_t> scope;
    for (std::int64_t i = 0; i < model_.n_layer(); ++i) {
      if (!o_.frozen(i, model_.n_layer()) && model_.layers[static_cast<std::size_t>(i)].n_head > 1) scope.push_back(i);
    }
    require(!scope.empty(), "layers", "the output game needs an unfrozen layer with two or more attention heads");
    require_reachable();
    const auto decisions = o_.decisions();
    head_game_report report{o_.selection, 0, budget_from_fraction(o_.target, model_.total_heads()), 0, 0, 0};
    std::vector<Eigen::MatrixXd> gram;
    for (const auto i : scope) {
      const auto& p = game.scaled_gram[static_cast<std::size_t>(i)];
      const auto n = model_.layers[static_cast<std::size_t>(i)].n_head;
      if (p.rows() != n || p.cols() != n) {
        fail_argument("scaled_gram", "layer " + std::to_string(i) + " needs an n_head x n_head = " + std::to_string(n) + " x " +
                                         std::to_string(n) + " matrix, got " + std::to_string(p.rows()) + " x " + std::to_string(p.cols()));
      }
      gram.push_back(p);
    }
    std::vector<head_keep_plan> plans;
    std::vector<Eigen::VectorXd> participation;
    if (o_.selection == selector::greedy) {
      std::vector<perturbation_layer<double>> layers;
      for (std::size_t k = 0; k < scope.size(); ++k) layers.push_back({gram[k], model_.geometry(scope[k]), granularity(scope[k])});
      auto found = search_price<double>(layers, report.requested, {decisions, 200});
      plans = std::move(found.plans);
      for (auto& e : found.equilibria) participation.push_back(std::move(e.s));
      report.price = found.price;
      report.solves = found.solves;
    } else {
      exact_output_choice(scope, gram, report.requested, plans, participation);
    }
    if (meet_head_count(scope, plans, report.requested, [&](std::size_t k) {
          return removal_cost<double>{Eigen::VectorXd::Zero(gram[k].rows()), gram[k], {}};
        })) {
      for (std::size_t k = 0; k < scope.size(); ++k) {
        participation[k] = Eigen::VectorXd::Ones(gram[k].rows());
        for (const auto h : removed_q_heads(plans[k], gram[k].rows())) participation[k][h] = 0;
      }
    }
    pruning_result out;
    out.layers = keep_everything(model_);
    for (std::size_t k = 0; k < scope.size(); ++k) {
      const auto i = static_cast<std::size_t>(scope[k]);
      out.layers[i].heads = plans[k];
      scores_[i].participation = participation[k];
      scores_[i].redundancy_sum = gram[k].rowwise().sum() - gram[k].diagonal();
      const auto removed = removed_q_heads(plans[k], model_.layers[i].n_head);
      report.removed += static_cast<std::int64_t>(removed.size());
      report.energy += removal_energy(gram[k], removed);
    }
    record_heads(out);
    out.game = report;
    return out;
  }

 private:
  struct pending_game {
    std::int64_t layer = 0;
    Eigen::VectorXd importance;
    Eigen::MatrixXd redundancy;
  };

  const model_scores& model_;
  const pruning_options& o_;
  std::vector<planned_layer> scores_;
  std::vector<selection_item<double>> items_;
  std::vector<min_kept_rule> min_kept_;
  std::vector<pending_game> pending_;

  void validate() const {
    require(!model_.layers.empty(), "layers", "is empty");
    require(model_.n_embd > 0, "n_embd", "must be positive, got " + std::to_string(model_.n_embd));
    require(!o_.structures.empty(), "structures", "is empty");
    require(o_.target >= 0.0 && o_.target < 1.0, "target", "must lie in [0, 1), got " + describe_value(o_.target));
    require(o_.lambda > 0.0, "lambda", "must be positive, got " + describe_value(o_.lambda));
    require(o_.iterations >= 1, "iterations", "must be positive");
    require(o_.min_heads >= 1, "min_heads", "must be at least 1");
    require(o_.max_prune > 0.0 && o_.max_prune <= 1.0, "max_prune", "must lie in (0, 1]");
    require(o_.freeze_first >= 0 && o_.freeze_last >= 0 && o_.keep_first_layers >= 0, "freeze_first",
            "freeze_first, freeze_last and keep_first_layers must not be negative");
    require(std::isfinite(o_.temperature) && o_.temperature >= 0.0, "temperature", "must be finite and >= 0");
    require(o_.unit == budget_unit::parameters || model_.total_heads() > 0 || o_.target == 0.0, "unit",
            "counts heads, and the model has none");
    require(o_.unit == budget_unit::heads || model_.total_parameters > 0, "total_parameters", "must be positive");
    require(model_.influence.empty() || model_.influence.size() == model_.layers.size(), "influence",
            "has " + std::to_string(model_.influence.size()) + " layers, expected " + std::to_string(model_.layers.size()));
    for (std::size_t i = 0; i < model_.layers.size(); ++i) {
      const auto& l = model_.layers[i];
      const std::string at = "layers[" + std::to_string(i) + "]";
      if (l.n_head > 0) (void)model_.geometry(static_cast<std::int64_t>(i));
      require(l.n_head >= 0 && l.n_ff >= 0, at, "negative head or channel count");
      require(l.heads.size() == l.n_head, at + ".heads", "has " + std::to_string(l.heads.size()) + " scores, expected n_head = " + std::to_string(l.n_head));
      require(l.channels.size() == l.n_ff, at + ".channels",
              "has " + std::to_string(l.channels.size()) + " scores, expected n_ff = " + std::to_string(l.n_ff));
      require(l.mlp_chunk >= 1, at + ".mlp_chunk", "must be positive, got " + std::to_string(l.mlp_chunk));
      require_finite(at + ".heads", l.heads);
      require_finite(at + ".channels", l.channels);
      require((l.heads.array() >= 0).all() && (l.channels.array() >= 0).all(), at, "importance must be >= 0");
    }
  }

  // The game's incentives: head importance scaled to a maximum of 1.
  static Eigen::VectorXd game_importance(const planned_layer& s) {
    const double top = s.heads.maxCoeff();
    return top > 0 ? Eigen::VectorXd(s.heads / top) : s.heads;
  }

  // Participation of every head scales its importance (below the threshold: 0).
  void apply_participation(planned_layer& s, const Eigen::VectorXd& participation, const Eigen::MatrixXd& redundancy) const {
    s.participation = participation;
    s.redundancy_sum = redundancy.rowwise().sum() - redundancy.diagonal();
    for (Eigen::Index h = 0; h < s.heads.size(); ++h) {
      s.heads[h] = s.participation[h] < o_.threshold ? 0.0 : s.heads[h] * s.participation[h];
    }
  }

  void apply_nash(planned_layer& s, const Eigen::MatrixXd& redundancy) const {
    const Eigen::VectorXd c = game_importance(s);
    const std::vector<nash_game<double>> games{make_nash_game(c, redundancy, o_.lambda)};
    const auto solution = solve_nash_layers<double>(nash_solver_kind::active_set_newton, games, std::nullopt, o_.iterations).front();
    apply_participation(s, solution.s, redundancy);
  }

  // The planner meets a head count exactly (head_count_allocation.hpp) when heads or
  // groups are the only structures that count: whole layers and attention blocks
  // remove all of a layer's heads and stay with the item selection's budget.
  bool counts_heads_exactly() const {
    return o_.unit == budget_unit::heads && o_.wants_heads() && !o_.wants(structure::layers) && !o_.wants(structure::attention_blocks);
  }
  // The games that plan heads themselves (their target counts heads whatever the unit).
  bool head_game_plans() const {
    return o_.lambda_auto || o_.game == head_game::output || o_.game == head_game::ablation;
  }

  // Unfrozen layers with more than `fewer_heads` heads: where a head plan may cut.
  std::vector<std::int64_t> head_scope(std::int64_t fewer_heads) const {
    std::vector<std::int64_t> scope;
    for (std::int64_t i = 0; i < model_.n_layer(); ++i) {
      if (!o_.frozen(i, model_.n_layer()) && model_.layers[static_cast<std::size_t>(i)].n_head > fewer_heads) scope.push_back(i);
    }
    return scope;
  }
  static std::vector<head_keep_plan> plans_of(const pruning_result& out, const std::vector<std::int64_t>& scope) {
    std::vector<head_keep_plan> plans;
    for (const auto i : scope) plans.push_back(out.layers[static_cast<std::size_t>(i)].heads);
    return plans;
  }
  template <typename CostOf>
  bool meet_head_count(const std::vector<std::int64_t>& scope, std::vector<head_keep_plan>& plans, std::int64_t requested,
                       const CostOf& cost_of) const {
    std::vector<attention_geometry> geometries;
    for (const auto i : scope) geometries.push_back(model_.geometry(i));
    return detail::meet_head_count(std::span<const attention_geometry>(geometries), !o_.wants(structure::heads), o_.decisions(), plans,
                                   requested, cost_of);
  }

  // A target beyond what the structures can remove is refused, naming the most they can.
 public:
  void require_reachable() const {
    const auto r = reach();
    if (r.reachable()) return;
    const bool heads = r.unit == budget_unit::heads;
    fail_argument("target", describe_value(o_.target) + " of the " + (heads ? "heads" : "parameters") + " asks for " +
                                std::to_string(r.requested) + (heads ? " heads" : " parameters") +
                                "; the structures offered remove at most " + std::to_string(r.largest) + " (a fraction of " +
                                describe_value(r.largest_fraction()) + ") under min_heads, max_prune and the frozen layers");
  }

 private:
  head_granularity granularity(std::int64_t layer) const {
    if (!o_.wants(structure::heads)) return head_granularity::whole_groups;
    return model_.geometry(layer).is_multi_head() ? head_granularity::single_heads : head_granularity::heads_per_group;
  }

  // Layer pending_[k]'s GQA-consistent keep plan at participation s.
  head_keep_plan layer_plan_at(std::size_t k, const Eigen::VectorXd& participation, const nash_decision_options<double>& decisions) const {
    const auto i = pending_[k].layer;
    return gqa_prune_plan(model_.geometry(i), granularity(i), participation, decisions);
  }
  std::int64_t removed_by(std::size_t k, const head_keep_plan& heads) const {
    return model_.layers[static_cast<std::size_t>(pending_[k].layer)].n_head - static_cast<std::int64_t>(heads.q_heads.size());
  }

  // One λ over the pending games, searched on the count the GQA-consistent plans
  // remove, then each layer's plan at that λ.
  pruning_result run_lambda_auto() {
    require(!pending_.empty(), "layers", "the λ search needs an unfrozen layer with two or more attention heads to play the game");
    std::vector<nash_game<double>> games;
    for (const auto& g : pending_) games.push_back(make_nash_game(g.importance, g.redundancy, o_.lambda));
    lambda_search_options<double> options;
    options.decisions = o_.decisions();
    active_set_newton_options<double> solver_options;
    solver_options.max_iterations = o_.iterations;
    const auto count_plan = [this](std::size_t k, const Eigen::VectorXd& s, const nash_decision_options<double>& decisions) {
      return removed_by(k, layer_plan_at(k, s, decisions));
    };
    const auto requested = budget_from_fraction(o_.target, model_.total_heads());
    const auto found = search_lambda_over_layers<double>(games, prune_target::heads(requested), options,
                                                         active_set_newton<double>(solver_options), count_plan);
    pruning_result out;
    out.layers = keep_everything(model_);
    lambda_search_report report{found.lambda, requested, 0, 0, found.reachable, found.solves};
    for (std::size_t k = 0; k < pending_.size(); ++k) {
      auto& heads = out.layers[static_cast<std::size_t>(pending_[k].layer)].heads;
      heads = layer_plan_at(k, found.equilibria[k].s, options.decisions);
      report.plan_pruned += removed_by(k, heads);
    }
    for (std::size_t k = 0; k < pending_.size(); ++k) {
      report.equilibrium_pruned += static_cast<std::int64_t>(seed_pruned_heads(found.equilibria[k].s, options.decisions).size());
      apply_participation(scores_[static_cast<std::size_t>(pending_[k].layer)], found.equilibria[k].s, pending_[k].redundancy);
    }
    // Short of the count (GQA steps): the allocation on the importance the equilibria leave.
    std::vector<std::int64_t> scope;
    for (const auto& g : pending_) scope.push_back(g.layer);
    auto plans = plans_of(out, scope);
    if (meet_head_count(scope, plans, requested, [&](std::size_t k) {
          return removal_cost<double>{scores_[static_cast<std::size_t>(scope[k])].heads, {}, {}};
        })) {
      report.plan_pruned = 0;
      for (std::size_t k = 0; k < scope.size(); ++k) {
        out.layers[static_cast<std::size_t>(scope[k])].heads = plans[k];
        report.plan_pruned += removed_by(k, plans[k]);
      }
    }
    record_heads(out);
    out.lambda = report;
    return out;
  }

  // Every count the caps allow, each with its least-energy set, then the allocation.
  void exact_output_choice(const std::vector<std::int64_t>& scope, const std::vector<Eigen::MatrixXd>& gram, std::int64_t requested,
                           std::vector<head_keep_plan>& plans, std::vector<Eigen::VectorXd>& participation) const {
    const auto decisions = o_.decisions();
    std::vector<allocation_choices<double>> choices(scope.size());
    std::vector<std::vector<std::vector<std::int64_t>>> sets(scope.size());
    for (std::size_t k = 0; k < scope.size(); ++k) {
      const auto g = model_.geometry(scope[k]);
      const auto min_keep = seed_min_keep(g.n_head(), decisions);
      for (const auto count : g.removable_q_head_counts(granularity(scope[k]))) {
        if (g.n_head() - count < min_keep) continue;
        auto best = exact_best_removal(gram[k], g, granularity(scope[k]), count);
        choices[k].removed.push_back(count);
        choices[k].energy.push_back(best.energy);
        sets[k].push_back(std::move(best.removed));
      }
    }
    const auto allocation = exact_allocation<double>(choices, requested);
    for (std::size_t k = 0; k < scope.size(); ++k) {
      const auto g = model_.geometry(scope[k]);
      const auto how = granularity(scope[k]);
      const auto& removed = sets[k][allocation.choice[k]];
      std::vector<std::int64_t> units = removed;
      if (how == head_granularity::whole_groups) {
        units.clear();
        for (const auto h : removed) {
          if (h % g.group_size() == 0) units.push_back(h / g.group_size());
        }
      }
      plans.push_back(g.plan_removing(how, units, seed_min_keep(g.n_head(), decisions) == 0));
      Eigen::VectorXd s = Eigen::VectorXd::Ones(g.n_head());
      for (const auto h : removed) s[h] = 0;
      participation.push_back(std::move(s));
    }
  }

  // The measured influence 1 - cos(x_in, x_out) of a layer's block (or whole layer), at least 0.
  double influence(std::int64_t layer, item_kind kind) const {
    const auto& m = model_.influence[static_cast<std::size_t>(layer)];
    const double measured = kind == item_kind::whole_layer ? m.layer : kind == item_kind::attention_block ? m.attention : m.mlp;
    return std::max(measured, 0.0);
  }

  // Layers and blocks scored by their measured influence (see the top).
  void use_measured_influence() {
    if (model_.influence.empty()) return;
    const bool finer = o_.wants(structure::heads) || o_.wants(structure::groups) || o_.wants(structure::mlp);
    for (const auto kind : {item_kind::whole_layer, item_kind::attention_block, item_kind::mlp_block}) {
      double scored = 0;
      double measured = 0;
      for (const auto& it : items_) {
        if (it.kind == kind) scored += it.importance, measured += influence(it.layer, kind);
      }
      const double scale = finer && measured > 0 ? scored / measured : 1.0;
      for (auto& it : items_) {
        if (it.kind == kind) it.importance = scale * influence(it.layer, kind);
      }
    }
  }

  // H-GSP: each finer item's importance times ln(1 + prior)^T (hgsp_priors.hpp);
  // layers and blocks keep their measured influence.
  std::vector<selection_item<double>> prior_weighted_items() const {
    if (model_.influence.empty() || o_.temperature == 0.0) return items_;
    const auto n = static_cast<Eigen::Index>(model_.influence.size());
    Eigen::VectorXd layer(n);
    Eigen::VectorXd attention(n);
    Eigen::VectorXd mlp(n);
    for (Eigen::Index l = 0; l < n; ++l) {
      layer(l) = influence(l, item_kind::whole_layer);
      attention(l) = influence(l, item_kind::attention_block);
      mlp(l) = influence(l, item_kind::mlp_block);
    }
    const hgsp_options options{o_.temperature, o_.tau, 0.0};
    const auto priors = hgsp_multipliers<double>(items_, layer, attention, mlp, options);
    auto weighted = apply_hgsp_priors<double>(items_, priors);
    for (std::size_t k = 0; k < items_.size(); ++k) {
      if (is_container(items_[k].kind)) weighted[k] = items_[k];
    }
    return weighted;
  }

  void add_attention_items(std::int64_t i) {
    const auto& l = model_.layers[static_cast<std::size_t>(i)];
    const auto g = model_.geometry(i);
    const auto how = granularity(i);
    auto layer_items = attention_items<double>(g, how, i, scores_[static_cast<std::size_t>(i)].heads, model_.n_embd);
    const std::int64_t per_item = g.query_heads_per_step(how);
    if (o_.unit == budget_unit::heads) {
      for (auto& it : layer_items) it.cost = per_item;
    }
    // min_heads and max_prune cap how many heads each layer may lose.
    const auto offered = static_cast<std::int64_t>(layer_items.size());
    const std::int64_t removable_by_min = (l.n_head - o_.min_heads) / per_item;
    const std::int64_t removable_by_ratio = static_cast<std::int64_t>(o_.max_prune * static_cast<double>(l.n_head) + 1e-9) / per_item;
    const std::int64_t removable = std::max<std::int64_t>(0, std::min({offered, removable_by_min, removable_by_ratio}));
    const auto kind = how == head_granularity::whole_groups ? item_kind::attention_group : item_kind::q_head;
    if (offered - removable > 0) min_kept_.push_back({kind, offered - removable, i});
    items_.insert(items_.end(), layer_items.begin(), layer_items.end());
  }

  void add_mlp_chunks(std::int64_t i) {
    const auto& l = model_.layers[static_cast<std::size_t>(i)];
    const auto& channels = scores_[static_cast<std::size_t>(i)].channels;
    const auto order = channels_least_first(channels);
    const std::int64_t chunk = l.mlp_chunk;
    for (std::int64_t c = 0; c + chunk <= l.n_ff; c += chunk) {
      double importance = 0;
      for (std::int64_t k = c; k < c + chunk; ++k) importance += channels[order[static_cast<std::size_t>(k)]];
      items_.push_back({i, item_kind::mlp_channel, c / chunk, importance, chunk * mlp_channel_cost(model_.n_embd)});
    }
  }

  void build_items() {
    const bool unit_heads = o_.unit == budget_unit::heads;
    for (std::int64_t i = 0; i < model_.n_layer(); ++i) {
      const auto& l = model_.layers[static_cast<std::size_t>(i)];
      const auto& s = scores_[static_cast<std::size_t>(i)];
      const std::int64_t head_width = model_.n_embd * (model_.head_dim_k + model_.head_dim_v);
      const std::int64_t attention_params = l.n_head * head_width + l.n_head_kv * head_width;
      const std::int64_t mlp_params = l.n_ff * mlp_channel_cost(model_.n_embd);
      if (o_.wants(structure::layers) && i >= o_.keep_first_layers) {
        items_.push_back({i, item_kind::whole_layer, 0, s.heads.sum() + s.channels.sum(),
                          unit_heads ? std::max<std::int64_t>(l.n_head, 1) : attention_params + mlp_params});
        if (o_.structures.size() == 1) continue;  // layers alone; else layers_and_finer keeps them apart
      }
      if (l.n_head > 0) {
        if (o_.wants_heads()) {
          add_attention_items(i);
        } else if (o_.wants(structure::attention_blocks)) {
          items_.push_back({i, item_kind::attention_block, 0, s.heads.sum(), unit_heads ? l.n_head : attention_params});
        }
      }
      if (unit_heads) continue;
      if (o_.wants(structure::mlp)) {
        add_mlp_chunks(i);
      } else if (o_.wants(structure::mlp_blocks)) {
        items_.push_back({i, item_kind::mlp_block, 0, s.channels.sum(), mlp_params});
      }
    }
  }

  // Whole layers with finer structures (see the top): for n = 0, 1, ... the n
  // unfrozen layers of least importance per cost go, the finer items of the others
  // are selected with the budget left; the least importance per budget spent wins.
  std::vector<selection_item<double>> layers_and_finer(const std::vector<selection_item<double>>& weighted, std::int64_t budget,
                                                       const selection_constraints& constraints) const {
    std::vector<std::size_t> layers;
    std::vector<std::size_t> finer;
    for (std::size_t k = 0; k < items_.size(); ++k) {
      if (items_[k].kind != item_kind::whole_layer) {
        finer.push_back(k);
      } else if (!o_.frozen(items_[k].layer, model_.n_layer())) {
        layers.push_back(k);
      }
    }
    const auto per_cost = [&](std::size_t k) { return weighted[k].importance / static_cast<double>(std::max<std::int64_t>(weighted[k].cost, 1)); };
    std::stable_sort(layers.begin(), layers.end(), [&](auto a, auto b) { return per_cost(a) < per_cost(b); });
    std::set<std::int64_t> out;
    std::vector<selection_item<double>> removed_layers;
    std::int64_t spent = 0;
    double layer_importance = 0;
    std::vector<selection_item<double>> best;
    double best_score = std::numeric_limits<double>::infinity();
    for (std::size_t n = 0; n <= layers.size(); ++n) {
      if (n > 0) {
        const auto k = layers[n - 1];
        if (spent + items_[k].cost > budget) break;
        out.insert(items_[k].layer);
        removed_layers.push_back(items_[k]);
        spent += items_[k].cost;
        layer_importance += weighted[k].importance;
      }
      std::vector<std::size_t> offered;
      std::vector<selection_item<double>> table;
      for (auto k : finer) {
        if (out.contains(items_[k].layer)) continue;
        offered.push_back(k);
        table.push_back(weighted[k]);
      }
      auto rules = constraints;
      std::erase_if(rules.min_kept, [&](const min_kept_rule& r) { return out.contains(r.layer); });
      auto removed = removed_layers;
      double importance = layer_importance;
      std::int64_t cost = spent;
      if (!table.empty()) {
        for (auto position : select_items<double>(table, budget - spent, rules, o_.selection).pruned) {
          const auto k = offered[static_cast<std::size_t>(position)];
          removed.push_back(items_[k]);
          importance += weighted[k].importance;
          cost += items_[k].cost;
        }
      }
      const double score = cost > 0 ? importance / static_cast<double>(cost) : std::numeric_limits<double>::infinity();
      if (best.empty() || score < best_score) {
        best_score = score;
        best = std::move(removed);
      }
    }
    return best;
  }

  pruning_result finish(const std::vector<selection_item<double>>& removed) {
    pruning_result out;
    out.layers = keep_everything(model_);
    for (std::int64_t i = 0; i < model_.n_layer(); ++i) {
      auto& p = out.layers[static_cast<std::size_t>(i)];
      const auto& l = model_.layers[static_cast<std::size_t>(i)];
      std::int64_t chunks = 0;
      for (const auto& it : removed) {
        if (it.layer != i) continue;
        if (it.kind == item_kind::whole_layer) p.keep_layer = false;
        if (it.kind == item_kind::attention_block) p.heads = {};
        if (it.kind == item_kind::mlp_block) p.channels.clear();
        if (it.kind == item_kind::mlp_channel) ++chunks;
      }
      if (p.keep_layer && l.n_head > 0 && o_.wants_heads()) {
        p.heads = attention_plan<double>(model_.geometry(i), granularity(i), i, scores_[static_cast<std::size_t>(i)].heads, removed);
      }
      if (chunks > 0) p.channels = channels_kept(scores_[static_cast<std::size_t>(i)].channels, chunks * l.mlp_chunk);
    }
    record_heads(out);
    return out;
  }

  void record_heads(pruning_result& out) const {
    for (std::int64_t i = 0; i < model_.n_layer(); ++i) {
      const auto& p = out.layers[static_cast<std::size_t>(i)];
      const auto& s = scores_[static_cast<std::size_t>(i)];
      for (Eigen::Index h = 0; h < s.raw_heads.size(); ++h) {
        const bool kept = p.keep_layer && std::binary_search(p.heads.q_heads.begin(), p.heads.q_heads.end(), static_cast<std::int64_t>(h));
        out.heads.push_back({i, static_cast<std::int64_t>(h), s.raw_heads[h], s.participation.size() > 0 ? s.participation[h] : 1.0,
                             s.redundancy_sum.size() > 0 ? s.redundancy_sum[h] : 0.0, !kept});
      }
    }
  }
};

}  // namespace detail

/// What `options.target` asks for on `model` and the most the structures offered
/// remove (the plans below refuse a target beyond it). Throws std::invalid_argument
/// as plan_pruning does for invalid scores or options.
template <int deferred = 0>
[[nodiscard]] inline target_reach reach_of(const model_scores& model, const pruning_options& options) {
  return detail::basic_planner<deferred>(model, options).reach();
}

/// The plan from the importance alone (no head game). Throws std::invalid_argument
/// naming the argument for scores that do not match their layer, options out of
/// range, or structures that offer nothing to remove.
template <int deferred = 0>
[[nodiscard]] inline pruning_result plan_pruning(const model_scores& model, const pruning_options& options) {
  return detail::basic_planner<deferred>(model, options).select();
}

/// The plan with each layer's cosine game (or, with lambda_auto, one λ searched).
template <int deferred = 0>
[[nodiscard]] inline pruning_result plan_pruning(const model_scores& model, const cosine_game& game, const pruning_options& options) {
  detail::basic_planner<deferred> p(model, options);
  p.play_cosine_games(game);
  return p.select();
}

/// The plan of the output-perturbation game over the unfrozen layers (heads only).
template <int deferred = 0>
[[nodiscard]] inline pruning_result plan_pruning(const model_scores& model, const output_perturbation_game& game,
                                                 const pruning_options& options) {
  return detail::basic_planner<deferred>(model, options).play_output_game(game);
}

/// The plan of the ablation loss game over every layer's query heads: floor(target ×
/// heads) units when a GQA-consistent plan reaches it, else the most below (no head
/// statistics).
template <int deferred = 0>
[[nodiscard]] inline pruning_result plan_pruning(const model_scores& model, const ablation_loss_game& game, const pruning_options& options) {
  std::vector<attention_geometry> geometries;
  for (std::int64_t i = 0; i < model.n_layer(); ++i) geometries.push_back(model.geometry(i));
  const auto layout = make_loss_layout(geometries, options.decisions());
  detail::require_size("delta", game.delta.size(), layout.units, "size");
  auto heads_game = options;
  heads_game.game = head_game::ablation;
  heads_game.unit = budget_unit::heads;
  detail::basic_planner<deferred>(model, heads_game).require_reachable();
  const auto requested = static_cast<std::int64_t>(std::floor(options.target * static_cast<double>(layout.units) + 1e-9));
  const auto choice = choose_heads_by_loss(game, layout, head_game::ablation, options.selection, requested, options.decisions());
  pruning_result out;
  out.layers = keep_everything(model);
  for (std::size_t l = 0; l < choice.plans.size(); ++l) out.layers[l].heads = choice.plans[l];
  out.game = head_game_report{options.selection, choice.price, requested, static_cast<std::int64_t>(choice.removed.size()), choice.modelled, 0};
  return out;
}

// ---------------------------------------------------------------------------
// Compensation-aware selection (head_game::obs)

/// One layer of the obs game: the OBS cost after refit (compensated_selection.hpp)
/// of removing inputs of its attn_output (n_head·head_dim_v coordinates, a query
/// head's head_dim_v at a time) and of its ffn_down (n_ff coordinates, one per MLP
/// channel), each unset where the plan removes nothing there (attention-free or
/// FFN-free, frozen, or the structure not offered), and the layer's weight in the sum
/// (e.g. 1 / mean ‖h‖² of the residual stream entering it, so that layers of
/// different activation scale compare).
struct compensated_layer {
  std::optional<obs_cost<double>> attention;
  std::optional<obs_cost<double>> mlp;
  double scale = 1;
};

/// The choice of heads (or groups) and MLP channels by the error their removal leaves
/// after the refit: one entry per layer.
struct compensated_error_game {
  std::vector<compensated_layer> layers;
  std::int64_t max_sets = std::int64_t{1} << 12;  ///< selector::exact enumerates a head count's sets up to this many
  /// selector::greedy enumerates a head count's sets up to this many: every count of
  /// layers of up to 4 groups of 2 (stories260K, 32 sets at most), so that the
  /// greedy's choices there are the least, and few enough that a set's cost,
  /// O(n_embd·|S|²) for |S| removed coordinates, stays cheap where it is used.
  std::int64_t greedy_max_sets = 64;
  std::int64_t channel_batch = 0;                 ///< MLP channels per greedy step (0: max(1, n_ff / 256)), a multiple of mlp_chunk
};

namespace detail {

/// One layer's removal curve in the obs game, with each entry's cost in budget units.
struct compensated_option {
  std::int64_t layer = 0;
  bool attention = true;
  head_granularity granularity = head_granularity::whole_groups;
  removal_curve<double> curve;
  std::vector<std::int64_t> budget;
};

inline head_granularity obs_granularity(const pruning_options& o, const attention_geometry& g) {
  if (!o.wants(structure::heads)) return head_granularity::whole_groups;
  return g.is_multi_head() ? head_granularity::single_heads : head_granularity::heads_per_group;
}

// The attention curve of layer i: counts up to what min_heads and max_prune leave.
template <int deferred = 0>
inline compensated_option obs_attention_option(const model_scores& model, const obs_cost<double>& cost, std::int64_t i,
                                               const pruning_options& o, std::int64_t max_sets) {
  const auto g = model.geometry(i);
  const auto how = obs_granularity(o, g);
  const std::int64_t limit = g.n_head() - seed_min_keep(g.n_head(), o.decisions());
  compensated_option out{i, true, how, obs_head_curve(cost, g, how, max_sets, limit), {}};
  const std::int64_t head_parameters = model.n_embd * (model.head_dim_k + model.head_dim_v);  // q rows and o columns, or k and v rows
  for (const auto c : out.curve.count) {
    const std::int64_t kv = how == head_granularity::whole_groups ? c / g.group_size() : how == head_granularity::single_heads ? c : 0;
    out.budget.push_back(o.unit == budget_unit::heads ? c : (c + kv) * head_parameters);
  }
  return out;
}

// The MLP curve of layer i: channels in steps of a multiple of mlp_chunk, up to
// removable_channels.
template <int deferred = 0>
inline compensated_option obs_mlp_option(const model_scores& model, const obs_cost<double>& cost, std::int64_t i,
                                         const pruning_options& o, std::int64_t channel_batch) {
  const auto& l = model.layers[static_cast<std::size_t>(i)];
  const std::int64_t chunk = l.mlp_chunk;
  const std::int64_t limit = removable_channels(l, o);
  const std::int64_t wanted = channel_batch > 0 ? channel_batch : std::max<std::int64_t>(1, l.n_ff / 256);
  const std::int64_t batch = (wanted + chunk - 1) / chunk * chunk;
  compensated_option out{i, false, head_granularity::whole_groups, obs_channel_curve(cost, limit, batch), {}};
  for (const auto c : out.curve.count) out.budget.push_back(c * mlp_channel_cost(model.n_embd));
  return out;
}

// The head count of the obs game met as every other game meets it (meet_head_count):
// the allocation over each layer's GQA-consistent removals, mixes of whole groups and
// heads per group included, costed by scale_l·E_l(S). Updates the plans and `report`
// when they change.
template <int deferred = 0>
inline void meet_obs_head_count(const model_scores& model, const compensated_error_game& game, const pruning_options& o,
                                const std::vector<compensated_option>& attention_options, std::int64_t max_sets, pruning_result& out,
                                compensated_choice_report& report) {
  std::vector<std::int64_t> scope;
  std::vector<attention_geometry> geometries;
  std::vector<head_keep_plan> plans;
  for (const auto& option : attention_options) {
    scope.push_back(option.layer);
    geometries.push_back(model.geometry(option.layer));
    plans.push_back(out.layers[static_cast<std::size_t>(option.layer)].heads);
  }
  const std::int64_t d = model.head_dim_v;
  const auto layer_error = [&](std::size_t k, std::span<const std::int64_t> heads) {
    const auto& layer = game.layers[static_cast<std::size_t>(scope[k])];
    const auto& cost = *layer.attention;
    return layer.scale * obs_cost<double>::block_cost(cost.weight(), cost.inverse(), unit_coordinates(heads, d));
  };
  const bool groups_only = !o.wants(structure::heads);
  const auto cost_of = [&](std::size_t k) {
    const auto of_set = [&layer_error, k](std::span<const std::int64_t> heads) { return layer_error(k, heads); };
    set_removal_cost<double, decltype(of_set)> cost{Eigen::VectorXd(geometries[k].n_head()), of_set};
    for (std::int64_t h = 0; h < geometries[k].n_head(); ++h) cost.singles(h) = layer_error(k, std::span<const std::int64_t>(&h, 1));
    return cost;
  };
  if (!meet_head_count(std::span<const attention_geometry>(geometries), groups_only, o.decisions(), plans, report.requested, cost_of, false,
                       max_sets)) {
    return;
  }
  report.removed = 0;
  report.error = 0;
  report.exact_choices = 0;
  for (std::size_t k = 0; k < scope.size(); ++k) {
    const auto& g = geometries[k];
    const auto removed = removed_q_heads(plans[k], g.n_head());
    const auto count = static_cast<std::int64_t>(removed.size());
    bool enumerated = true;  // every shape of this count searched set by set (least_cost_curve)
    for (const auto shape : consistent_shapes(g, groups_only, seed_min_keep(g.n_head(), o.decisions()))) {
      if (g.n_head() - shape.kept_groups * shape.kept_per_group == count && count > 0) {
        enumerated = enumerated && shape_removal_count(g, shape) <= static_cast<double>(max_sets);
      }
    }
    report.removed += count;
    report.error += layer_error(k, removed);
    report.exact_choices += enumerated ? 1 : 0;
    out.layers[static_cast<std::size_t>(scope[k])].heads = plans[k];
  }
}

inline void require_obs_width(const std::string& name, const std::optional<obs_cost<double>>& cost, std::int64_t width,
                              const std::string& what) {
  if (!cost) fail_argument(name, "is unset, but the layer offers " + what);
  require_size(name, cost->width(), width, "input width");
}

}  // namespace detail

/// The plan of least summed refit error (Σ_l scale_l·E_l over attn_output and
/// ffn_down) removing at most floor(target × (heads, or parameters)) of the heads
/// (heads, or whole groups with only groups offered) and MLP channels of the
/// unfrozen layers (see the top). Throws std::invalid_argument naming the argument
/// for structures other than heads, groups and mlp, mlp with budget_unit::heads,
/// lambda_auto, a layer whose cost is unset or of the wrong width, or nothing to remove.
template <int deferred = 0>
[[nodiscard]] inline pruning_result plan_pruning(const model_scores& model, const compensated_error_game& game,
                                                 const pruning_options& options) {
  (void)detail::basic_planner<deferred>(model, options);  // validates the model and the options
  using detail::require;
  const structure_set offered{structure::heads, structure::groups, structure::mlp};
  require(options.structures.within(offered), "structures", "the obs game removes heads, groups and mlp channels only");
  require(!(options.unit == budget_unit::heads && options.wants(structure::mlp)), "structures",
          "budget_unit::heads counts heads: MLP channels cost none, so drop mlp or count parameters");
  require(!options.lambda_auto, "lambda_auto", "the obs game has no λ to search");
  detail::require_size("layers", static_cast<std::int64_t>(game.layers.size()), model.n_layer(), "layer count");
  require(game.max_sets >= 1, "max_sets", "must be positive, got " + std::to_string(game.max_sets));
  require(game.greedy_max_sets >= 1, "greedy_max_sets", "must be positive, got " + std::to_string(game.greedy_max_sets));
  require(game.channel_batch >= 0, "channel_batch", "must be >= 0, got " + std::to_string(game.channel_batch));
  const std::int64_t max_sets = options.selection == selector::exact ? game.max_sets : game.greedy_max_sets;
  std::vector<detail::compensated_option> options_by_layer;
  compensated_choice_report report;
  for (std::int64_t i = 0; i < model.n_layer(); ++i) {
    if (options.frozen(i, model.n_layer())) continue;
    const auto& l = model.layers[static_cast<std::size_t>(i)];
    const auto& costs = game.layers[static_cast<std::size_t>(i)];
    const std::string at = "layers[" + std::to_string(i) + "]";
    if (!(std::isfinite(costs.scale) && costs.scale >= 0)) detail::fail_argument(at + ".scale", "must be finite and >= 0, got " + detail::describe_value(costs.scale));
    if (options.wants_heads() && l.n_head > 1) {
      detail::require_obs_width(at + ".attention", costs.attention, l.n_head * model.head_dim_v, std::to_string(l.n_head) + " heads");
      options_by_layer.push_back(detail::obs_attention_option(model, *costs.attention, i, options, max_sets));
      report.damping_raised += costs.attention->damping_raised() ? 1 : 0;
    }
    if (options.wants(structure::mlp) && l.n_ff > 1) {
      detail::require_obs_width(at + ".mlp", costs.mlp, l.n_ff, std::to_string(l.n_ff) + " MLP channels");
      options_by_layer.push_back(detail::obs_mlp_option(model, *costs.mlp, i, options, game.channel_batch));
      report.damping_raised += costs.mlp->damping_raised() ? 1 : 0;
    }
  }
  require(!options_by_layer.empty(), "structures", "nothing to prune: no unfrozen layer offers the structures asked for");
  const std::int64_t total = options.unit == budget_unit::heads ? model.total_heads() : model.total_parameters;
  report.unit = options.unit;
  report.requested = budget_from_fraction(options.target, total);
  // Budget units in multiples of their common divisor: the allocation's table is that much narrower.
  std::int64_t step = 0;
  for (const auto& option : options_by_layer)
    for (const auto b : option.budget) step = std::gcd(step, b);
  step = std::max<std::int64_t>(step, 1);
  std::vector<allocation_choices<double>> choices;
  for (const auto& option : options_by_layer) {
    const double scale = game.layers[static_cast<std::size_t>(option.layer)].scale;
    allocation_choices<double> c;
    for (std::size_t k = 0; k < option.budget.size(); ++k) {
      c.removed.push_back(option.budget[k] / step);
      c.energy.push_back(option.curve.cost[k] * scale);
    }
    choices.push_back(std::move(c));
  }
  const auto allocation = exact_allocation<double>(choices, report.requested / step);
  report.removed = allocation.removed * step;
  report.error = allocation.energy;
  pruning_result out;
  out.layers = keep_everything(model);
  for (std::size_t k = 0; k < options_by_layer.size(); ++k) {
    const auto& option = options_by_layer[k];
    const auto choice = allocation.choice[k];
    const auto& removed = option.curve.removed[choice];
    auto& layer = out.layers[static_cast<std::size_t>(option.layer)];
    if (option.attention) {
      report.exact_choices += option.curve.exact[choice];
      const auto g = model.geometry(option.layer);
      std::vector<std::int64_t> units;
      for (const auto h : removed) {
        const auto u = option.granularity == head_granularity::whole_groups ? h / g.group_size() : h;
        if (units.empty() || units.back() != u) units.push_back(u);
      }
      layer.heads = g.plan_removing(option.granularity, units);
    } else {
      layer.channels = complement_units(removed, model.layers[static_cast<std::size_t>(option.layer)].n_ff);
    }
  }
  if (options.unit == budget_unit::heads && report.removed != report.requested) {
    detail::meet_obs_head_count(model, game, options, options_by_layer, max_sets, out, report);
  }
  out.compensated = report;
  return out;
}

NASHPRUNE_END_NAMESPACE
