// Choosing what to prune, with the library doing every step:
//  1. importance (importance.hpp): per-line magnitude or Wanda scores of each
//     projection, summed per query head (q_head_scores) and per MLP channel
//     (mlp_channel_scores), or the activation energy per head/channel, read from
//     `nashprune calibrate` statistics (--calibration) or an imatrix (--imatrix);
//  2. Nash (nash_game.hpp, nash_solvers.hpp; --method nash or both): per layer,
//     the game with c = head importance / max and R = cosine redundancy of the
//     heads: measured on calibration activations when --calibration is given,
//     else head_redundancy.hpp over the heads' attn_output columns (the
//     directions they write into the residual stream). Negative cosines are
//     clipped to 0 (an anti-correlated head does not substitute for another) and
//     the diagonal is 1, also for a dead head. Participation s_i scales
//     each head's importance, and s_i < --threshold counts as importance 0;
//  3. global selection (global_selection.hpp): items from attention_items.hpp,
//     MLP channels (in chunks of the quantization block), blocks and layers, under
//     the budget --target of parameters or heads; greedy (nash, knapsack) or the
//     exact 0/1 solver (both), then mapped back to per-layer keep-lists.
//     A whole layer, attention block or MLP block is scored by its heads' and
//     channels' importance; with --calibration by its measured block influence
//     1 - cos(x_in, x_out) instead (depth_pruning.hpp, ShortGPT), scaled, when
//     the table also holds heads, groups or channels, by one factor per kind so
//     that its total equals the total score of what those blocks hold (the order
//     among blocks is the measurement's, the scale the finer items'). H-GSP priors
//     then leave these items alone: their importance already is the prior.
// With --lambda auto (--unit heads, --method nash) step 3 is replaced: one λ shared
// by the unfrozen layers is searched (lambda_search.hpp) so that the
// GQA-consistent keep plans of its equilibria (nash_decisions.hpp) remove the
// target's count of heads: the search counts with the rule that builds the plans.
// With --redundancy output (--unit heads) steps 2-3 are replaced by the
// output-perturbation selection over all unfrozen layers (perturbation_selection.hpp).
#include "selection.hpp"

#include <gguf/tensor_floats.hpp>
#include <nashprune/attention_items.hpp>
#include <nashprune/global_selection.hpp>
#include <nashprune/head_redundancy.hpp>
#include <nashprune/hgsp_priors.hpp>
#include <nashprune/importance.hpp>
#include <nashprune/lambda_search.hpp>
#include <nashprune/nash_decisions.hpp>
#include <nashprune/nash_solvers.hpp>

#include <algorithm>
#include <atomic>
#include <exception>
#include <limits>
#include <numeric>
#include <thread>

#include "command.hpp"

namespace nashprune_tool {
namespace {

namespace np = nashprune;
using vector_d = Eigen::VectorXd;

const std::set<std::string> known_structures = {"heads", "groups", "mlp", "attn-blocks", "mlp-blocks", "layers"};

struct layer_scores {
  vector_d heads;     // per query head (after Nash when enabled)
  vector_d raw_heads;  // before Nash
  vector_d channels;  // per FFN channel
  vector_d participation;
  vector_d redundancy_sum;
};

vector_d to_double(const np::score_vector<float>& v) { return v.cast<double>(); }

// Per-input-column activation energy Σ_tokens x_j² of a layer's weights, from the
// calibration statistics when given, else from the imatrix.
struct activation_source {
  const gguf::imatrix* imatrix = nullptr;
  const calibrate::calibration_stats* calibration = nullptr;

  [[nodiscard]] double tokens() const {
    const auto n = calibration != nullptr ? calibration->tokens : imatrix != nullptr ? imatrix->tokens() : 0;
    return static_cast<double>(std::max<std::uint64_t>(n, 1));
  }

  /// Calibration statistics hold the input energies of attn_output and ffn_down only
  /// (an imatrix's missing entry is an error in energy(), not a gap to work around).
  [[nodiscard]] bool calibration_lacks_energy(const std::string& name) const {
    if (calibration == nullptr) return false;
    const auto parts = gguf::split_layer_name(name);
    return !(parts && (parts->suffix == "attn_output.weight" || parts->suffix == "ffn_down.weight"));
  }

  [[nodiscard]] Eigen::VectorXf energy(const std::string& name) const {
    if (calibration != nullptr) {
      if (calibration_lacks_energy(name)) throw usage_error("the calibration statistics have no input energies for " + name);
      const auto parts = gguf::split_layer_name(name);
      const auto& l = calibration->layers.at(static_cast<std::size_t>(parts->layer));
      const Eigen::VectorXd& e = parts->suffix == "attn_output.weight" ? l.attn_in_sum2 : l.ffn_in_sum2;
      return e.cast<float>();
    }
    auto e = imatrix->column_energy(name);
    if (!e) throw usage_error("the imatrix has no entry for " + name + " (was it computed on this model?)");
    return Eigen::Map<const Eigen::VectorXf>(e->data(), static_cast<Eigen::Index>(e->size()));
  }
};

// The weights of one tensor as floats, for one read: its pages mapped in one
// call up front and released when done (scoring streams the model).
class streamed_weights {
 public:
  streamed_weights(const gguf::reader& model, const std::string& name)
      : model_(model), tensor_(populated(model, model.tensor(name))), weights_(tensor_) {}
  ~streamed_weights() { model_.release(tensor_.data); }
  streamed_weights(const streamed_weights&) = delete;
  streamed_weights& operator=(const streamed_weights&) = delete;
  [[nodiscard]] Eigen::Map<const gguf::row_major_matrix> map() const { return weights_.map(); }

 private:
  const gguf::reader& model_;
  const gguf::tensor_view& tensor_;
  gguf::float_matrix weights_;

  static const gguf::tensor_view& populated(const gguf::reader& model, const gguf::tensor_view& t) {
    model.populate(t.data);
    return t;
  }
};

// Per-line scores of one projection (weights `w` of `tensor`) along its structure axis.
np::score_vector<float> line_scores(const Eigen::Map<const gguf::row_major_matrix>& w, const std::string& tensor,
                                    np::tensor_role role, const activation_source& im, const std::string& score) {
  const auto axis = np::structure_axis(role, np::matrix_orientation::out_by_in);
  np::score_vector<float> lines;
  if (score == "wanda" && im.calibration_lacks_energy(tensor)) {
    // Calibration statistics measure only the inputs of attn_output and ffn_down, so
    // Wanda then scores heads by their attn_output columns (q lines are left out) and
    // channels by their ffn_down columns (gate/up lines count 0).
    if (role != np::tensor_role::q) lines.setZero(axis == np::matrix_axis::rows ? w.rows() : w.cols());
  } else if (score == "wanda") {
    const auto norms = np::activation_norms(im.energy(tensor), im.tokens());
    lines = np::wanda_line_scores(w, norms, np::matrix_axis::cols, axis);
  } else {
    lines = np::magnitude_line_scores(w, axis);
  }
  return lines;
}

np::score_vector<float> line_scores(const gguf::reader& model, const std::string& tensor, np::tensor_role role,
                                    const activation_source& im, const std::string& score) {
  const streamed_weights w(model, tensor);
  return line_scores(w.map(), tensor, role, im, score);
}

// Cosine redundancy of the heads' output directions: their columns of attn_output.
Eigen::MatrixXd head_cosine(const Eigen::Map<const gguf::row_major_matrix>& wo, std::int64_t n_head, std::int64_t head_dim_v) {
  np::head_redundancy<float> acc(n_head, head_dim_v);
  acc.add_batch(wo);
  return acc.cosine();
}

np::attention_geometry geometry_of(const gguf::llama_shape& shape, std::int64_t layer) {
  const auto& l = shape.layers[static_cast<std::size_t>(layer)];
  return {l.n_head, l.n_head_kv, shape.head_dim_k, shape.head_dim_v};
}

// Scores one layer's heads and channels. With `weight_cosine`, also the heads'
// cosine redundancy from attn_output (head_cosine) when its weights are read
// for the scores anyway (left empty otherwise): one read of the tensor for both.
layer_scores score_layer(const gguf::reader& model, const gguf::llama_shape& shape, std::int64_t layer,
                         const activation_source& im, const selection_options& o, Eigen::MatrixXd* weight_cosine) {
  const auto& l = shape.layers[static_cast<std::size_t>(layer)];
  const auto name = [&](const char* suffix) { return gguf::layer_tensor(layer, suffix); };
  const double tokens = im.tokens();
  layer_scores s;
  if (l.has_attention()) {
    const auto g = geometry_of(shape, layer);
    if (o.score == "activation") {
      // One range per head (unit_ranges would merge adjacent heads into one run).
      std::vector<np::index_range> ranges;
      for (std::int64_t h = 0; h < l.n_head; ++h) ranges.push_back(g.head_span(np::tensor_role::o, h));
      s.heads = to_double(np::activation_energy(im.energy(name("attn_output.weight")), tokens, ranges));
    } else {
      np::attention_line_scores<float> lines;
      lines.q = line_scores(model, name("attn_q.weight"), np::tensor_role::q, im, o.score);
      const streamed_weights wo(model, name("attn_output.weight"));
      lines.o = line_scores(wo.map(), name("attn_output.weight"), np::tensor_role::o, im, o.score);
      if (weight_cosine != nullptr) *weight_cosine = head_cosine(wo.map(), l.n_head, shape.head_dim_v);
      s.heads = to_double(np::q_head_scores(g, lines));
    }
  }
  s.raw_heads = s.heads;
  if (o.score == "activation") {
    std::vector<np::index_range> ranges;
    for (std::int64_t c = 0; c < l.n_ff; ++c) ranges.push_back({c, 1});
    s.channels = to_double(np::activation_energy(im.energy(name("ffn_down.weight")), tokens, ranges));
  } else {
    s.channels = to_double(np::mlp_channel_scores(line_scores(model, name("ffn_gate.weight"), np::tensor_role::gate, im, o.score),
                                                  line_scores(model, name("ffn_up.weight"), np::tensor_role::up, im, o.score),
                                                  line_scores(model, name("ffn_down.weight"), np::tensor_role::down, im, o.score)));
  }
  return s;
}

// Cosine redundancy of the heads' output directions, read on its own (when the
// scores came from activations, not from the weights).
Eigen::MatrixXd weight_redundancy(const gguf::reader& model, const gguf::llama_shape& shape, std::int64_t layer) {
  const streamed_weights wo(model, gguf::layer_tensor(layer, "attn_output.weight"));
  return head_cosine(wo.map(), shape.layers[static_cast<std::size_t>(layer)].n_head, shape.head_dim_v);
}

// Cosine similarity -> the game's redundancy (see the comment at the top).
Eigen::MatrixXd redundancy_from_cosine(const Eigen::MatrixXd& cosine) {
  Eigen::MatrixXd r = cosine.cwiseMax(0.0);
  r.diagonal().setOnes();
  return r;
}

// Threads for the scoring pass: as asked, else one per core but at most 4 (each
// holds one tensor mapped, and a few saturate the memory bandwidth).
int scoring_threads(int requested) {
  return requested > 0 ? requested : static_cast<int>(std::clamp(std::thread::hardware_concurrency(), 1U, 4U));
}

// Runs work(0) .. work(n - 1) on up to `threads` threads, the calling one
// included, handing out indices in order; rethrows the failure of the lowest
// failing index once all are done.
template <typename Work>
void for_each_in_parallel(std::int64_t n, int threads, const Work& work) {
  const std::int64_t count = std::clamp<std::int64_t>(threads, 1, std::max<std::int64_t>(n, 1));
  std::vector<std::exception_ptr> failures(static_cast<std::size_t>(std::max<std::int64_t>(n, 0)));
  std::atomic<std::int64_t> next{0};
  const auto run = [&] {
    for (std::int64_t i = next++; i < n; i = next++) {
      try {
        work(i);
      } catch (...) {
        failures[static_cast<std::size_t>(i)] = std::current_exception();
      }
    }
  };
  {
    std::vector<std::jthread> helpers;
    for (std::int64_t t = 1; t < count; ++t) helpers.emplace_back(run);
    run();
  }
  for (const auto& failure : failures) {
    if (failure) std::rethrow_exception(failure);
  }
}

// The game's incentives: head importance scaled to a maximum of 1.
vector_d game_importance(const layer_scores& s) {
  const double top = s.heads.maxCoeff();
  return top > 0 ? vector_d(s.heads / top) : s.heads;
}

// Participation of every head scales its importance (below --threshold: 0).
void apply_participation(layer_scores& s, const vector_d& participation, const Eigen::MatrixXd& redundancy,
                         const selection_options& o) {
  s.participation = participation;
  s.redundancy_sum = redundancy.rowwise().sum() - redundancy.diagonal();
  for (Eigen::Index h = 0; h < s.heads.size(); ++h) {
    s.heads[h] = s.participation[h] < o.threshold ? 0.0 : s.heads[h] * s.participation[h];
  }
}

// The Nash step at the fixed --lambda.
void apply_nash(layer_scores& s, const Eigen::MatrixXd& redundancy, const selection_options& o) {
  const vector_d c = game_importance(s);
  const auto game = np::make_nash_game(c, redundancy, o.lambda);
  const std::vector<np::nash_game<double>> games{game};
  const auto solution = np::solve_nash_layers<double>(np::nash_solver_kind::active_set_newton, games, std::nullopt,
                                                      static_cast<std::int64_t>(o.iterations))
                            .front();
  apply_participation(s, solution.s, redundancy, o);
}

// --lambda auto: one layer's game, kept until the shared λ is searched.
struct pending_game {
  std::int64_t layer = 0;
  vector_d importance;
  Eigen::MatrixXd redundancy;
};

class planner {
 public:
  planner(const gguf::reader& model, const gguf::llama_shape& shape, const activation_source& im, const selection_options& o)
      : model_(model), shape_(shape), o_(o), calibration_(im.calibration) {
    const bool heads_wanted = o.structures.contains("heads") || o.structures.contains("groups");
    const auto game = [&](std::int64_t i) {
      return o.method != "knapsack" && o.redundancy == "cosine" && heads_wanted && shape.layers[static_cast<std::size_t>(i)].n_head > 1;
    };
    // Reading the weights is most of the work, and each layer's is its own.
    std::vector<layer_scores> scored(static_cast<std::size_t>(shape.n_layer()));
    std::vector<Eigen::MatrixXd> cosines(scored.size());
    for_each_in_parallel(shape.n_layer(), scoring_threads(o.threads), [&](std::int64_t i) {
      const auto at = static_cast<std::size_t>(i);
      scored[at] = score_layer(model, shape, i, im, o, game(i) && im.calibration == nullptr ? &cosines[at] : nullptr);
    });
    for (std::int64_t i = 0; i < shape.n_layer(); ++i) {
      auto& s = scored[static_cast<std::size_t>(i)];
      auto& cosine = cosines[static_cast<std::size_t>(i)];
      if (game(i)) {
        if (im.calibration != nullptr) {
          cosine = im.calibration->layers[static_cast<std::size_t>(i)].head_cosine;
        } else if (cosine.size() == 0) {
          try {
            cosine = weight_redundancy(model, shape, i);
          } catch (const std::invalid_argument& e) {
            throw usage_error(std::string(e.what()) + "; the Nash redundancy reads attn_output weights: use --method knapsack or --calibration");
          }
        }
        if (o.lambda_auto) {
          if (!frozen(i)) pending_.push_back({i, game_importance(s), redundancy_from_cosine(cosine)});
        } else {
          apply_nash(s, redundancy_from_cosine(cosine), o);
        }
      }
      scores_.push_back(std::move(s));
    }
  }

  selection run() {
    if (o_.lambda_auto) return run_lambda_auto();
    if (o_.redundancy == "output") return run_output_perturbation();
    build_items();
    use_measured_influence();
    if (items_.empty()) throw usage_error("nothing to prune: --structures offers no removable structure in unfrozen layers");
    const std::int64_t total = o_.unit_heads ? total_heads() : gguf::totals(model_.tensors()).parameters;
    const std::int64_t budget = np::budget_from_fraction(o_.target, total);
    np::selection_constraints constraints;
    constraints.n_layers = shape_.n_layer();
    constraints.freeze_first_layers = std::min<std::int64_t>(o_.freeze_first, shape_.n_layer());
    constraints.freeze_last_layers = std::min<std::int64_t>(o_.freeze_last, shape_.n_layer() - constraints.freeze_first_layers);
    constraints.min_kept = min_kept_;
    const auto weighted = prior_weighted_items();
    if (wants("layers") && o_.structures.size() > 1) return finish(layers_and_finer(weighted, budget, constraints));
    const auto result = select(weighted, budget, constraints);
    std::vector<np::selection_item<double>> removed;
    for (auto position : result.pruned) removed.push_back(items_[static_cast<std::size_t>(position)]);
    return finish(removed);
  }

 private:
  np::selection_result<double> select(std::span<const np::selection_item<double>> table, std::int64_t budget,
                                      const np::selection_constraints& constraints) const {
    return o_.method == "both" ? np::solve_exact<double>(table, budget, constraints)
                               : np::select_greedy<double>(table, budget, constraints);
  }

  // --structures layers with finer structures. A table must not hold a layer and
  // items inside it (a parameter would count twice), so the layers compete here:
  // for n = 0, 1, ... the n unfrozen layers of least importance per parameter are
  // removed, the finer items of the other layers are selected with the budget
  // left, and the plan removing the least importance per unit of budget spent
  // wins. A removed layer takes its heads and channels with it; the budget is
  // counted once.
  std::vector<np::selection_item<double>> layers_and_finer(const std::vector<np::selection_item<double>>& weighted,
                                                           std::int64_t budget,
                                                           const np::selection_constraints& constraints) const {
    std::vector<std::size_t> layers;
    std::vector<std::size_t> finer;
    for (std::size_t k = 0; k < items_.size(); ++k) {
      if (items_[k].kind != np::item_kind::whole_layer) {
        finer.push_back(k);
      } else if (!frozen(items_[k].layer)) {
        layers.push_back(k);
      }
    }
    const auto per_cost = [&](std::size_t k) { return weighted[k].importance / static_cast<double>(std::max<std::int64_t>(weighted[k].cost, 1)); };
    std::stable_sort(layers.begin(), layers.end(), [&](auto a, auto b) { return per_cost(a) < per_cost(b); });
    std::set<std::int64_t> out;
    std::vector<np::selection_item<double>> removed_layers;
    std::int64_t spent = 0;
    double layer_importance = 0;
    std::vector<np::selection_item<double>> best;
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
      std::vector<np::selection_item<double>> table;
      for (auto k : finer) {
        if (out.contains(items_[k].layer)) continue;
        offered.push_back(k);
        table.push_back(weighted[k]);
      }
      auto rules = constraints;
      std::erase_if(rules.min_kept, [&](const np::min_kept_rule& r) { return out.contains(r.layer); });
      auto removed = removed_layers;
      double importance = layer_importance;
      std::int64_t cost = spent;
      if (!table.empty()) {
        for (auto position : select(table, budget - spent, rules).pruned) {
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

  const gguf::reader& model_;
  const gguf::llama_shape& shape_;
  const selection_options& o_;
  const calibrate::calibration_stats* calibration_;
  std::vector<layer_scores> scores_;
  std::vector<np::selection_item<double>> items_;
  std::vector<np::min_kept_rule> min_kept_;
  std::vector<pending_game> pending_;  // --lambda auto: the unfrozen layers' games

  bool frozen(std::int64_t layer) const {
    return layer < o_.freeze_first || layer >= shape_.n_layer() - o_.freeze_last;
  }

  // Layer pending_[k]'s GQA-consistent keep plan at participation s, and the heads it removes.
  np::head_keep_plan layer_plan(std::size_t k, const vector_d& participation,
                                const np::nash_decision_options<double>& decisions) const {
    const auto i = pending_[k].layer;
    return np::gqa_prune_plan(geometry_of(shape_, i), granularity(i), participation, decisions);
  }
  std::int64_t removed_by(std::size_t k, const np::head_keep_plan& heads) const {
    return shape_.layers[static_cast<std::size_t>(pending_[k].layer)].n_head - static_cast<std::int64_t>(heads.q_heads.size());
  }

  // The GQA-consistent keep plans of one λ's equilibria; returns the heads they remove.
  std::int64_t plan_equilibria(const np::lambda_search_result<double>& found,
                               const np::nash_decision_options<double>& decisions, gguf::prune_plan& plan) const {
    plan = gguf::keep_all(shape_);
    std::int64_t removed = 0;
    for (std::size_t k = 0; k < pending_.size(); ++k) {
      auto& heads = plan.layers[static_cast<std::size_t>(pending_[k].layer)].heads;
      heads = layer_plan(k, found.equilibria[k].s, decisions);
      removed += removed_by(k, heads);
    }
    return removed;
  }

  // One λ over the pending games, searched on the count the GQA-consistent plans
  // remove, then each layer's plan at that λ.
  selection run_lambda_auto() {
    if (pending_.empty()) throw usage_error("--lambda auto: no unfrozen layer has two or more attention heads to play the game");
    std::vector<np::nash_game<double>> games;
    for (const auto& g : pending_) games.push_back(np::make_nash_game(g.importance, g.redundancy, o_.lambda));
    np::lambda_search_options<double> options;
    options.decisions = {o_.threshold, o_.min_heads, o_.max_prune};
    np::active_set_newton_options<double> solver_options;
    solver_options.max_iterations = static_cast<std::int64_t>(o_.iterations);
    const auto count_plan = [this](std::size_t k, const vector_d& s, const np::nash_decision_options<double>& decisions) {
      return removed_by(k, layer_plan(k, s, decisions));
    };
    const auto requested = np::budget_from_fraction(o_.target, total_heads());
    const auto found = np::search_lambda_over_layers<double>(games, np::prune_target::heads(requested), options,
                                                                np::active_set_newton<double>(solver_options), count_plan);
    selection out;
    lambda_report report{found.lambda, requested, 0, 0, found.reachable, found.solves};
    report.plan_pruned = plan_equilibria(found, options.decisions, out.plan);
    for (std::size_t k = 0; k < pending_.size(); ++k) {
      report.equilibrium_pruned +=
          static_cast<std::int64_t>(np::seed_pruned_heads(found.equilibria[k].s, options.decisions).size());
      apply_participation(scores_[static_cast<std::size_t>(pending_[k].layer)], found.equilibria[k].s, pending_[k].redundancy, o_);
    }
    record_heads(out);
    out.lambda = report;
    return out;
  }

  // --redundancy output: the unfrozen layers with two or more heads, cut as one.
  selection run_output_perturbation() {
    std::vector<perturbation_scope> scope;
    for (std::int64_t i = 0; i < shape_.n_layer(); ++i) {
      if (!frozen(i) && shape_.layers[static_cast<std::size_t>(i)].n_head > 1) scope.push_back({i, geometry_of(shape_, i), granularity(i)});
    }
    const auto requested = np::budget_from_fraction(o_.target, total_heads());
    auto choice = choose_by_output_perturbation(*calibration_, scope, requested, o_.method, {o_.threshold, o_.min_heads, o_.max_prune});
    selection out;
    out.plan = gguf::keep_all(shape_);
    for (std::size_t k = 0; k < scope.size(); ++k) {
      const auto i = static_cast<std::size_t>(scope[k].layer);
      out.plan.layers[i].heads = choice.plans[k];
      auto& s = scores_[i];
      s.participation = choice.participation[k];
      s.redundancy_sum = choice.scaled_gram[k].rowwise().sum() - choice.scaled_gram[k].diagonal();
    }
    record_heads(out);
    out.perturbation = choice.report;
    return out;
  }

  bool wants(const char* s) const { return o_.structures.contains(s); }

  // The calibration's influence 1 - cos(x_in, x_out) of a layer's block (or whole layer).
  double influence(std::int64_t layer, np::item_kind kind) const {
    const auto& stats = calibration_->layers[static_cast<std::size_t>(layer)];
    const double measured = kind == np::item_kind::whole_layer       ? stats.layer_influence
                            : kind == np::item_kind::attention_block ? stats.attn_influence
                                                                     : stats.mlp_influence;
    return std::max(measured, 0.0);
  }

  // --calibration: layers and blocks are scored by their measured influence (see the top).
  void use_measured_influence() {
    if (calibration_ == nullptr) return;
    const bool finer = wants("heads") || wants("groups") || wants("mlp");
    for (const auto kind : {np::item_kind::whole_layer, np::item_kind::attention_block, np::item_kind::mlp_block}) {
      double scored = 0, measured = 0;
      for (const auto& it : items_) {
        if (it.kind == kind) scored += it.importance, measured += influence(it.layer, kind);
      }
      const double scale = finer && measured > 0 ? scored / measured : 1.0;
      for (auto& it : items_) {
        if (it.kind == kind) it.importance = scale * influence(it.layer, kind);
      }
    }
  }

  // H-GSP: each item's importance times ln(1 + prior)^T, the prior being its layer's
  // or block's measured influence 1 - cos(x_in, x_out) (hgsp_priors.hpp for the gating).
  std::vector<np::selection_item<double>> prior_weighted_items() const {
    if (calibration_ == nullptr || o_.temperature == 0.0) return items_;
    const auto n = static_cast<Eigen::Index>(calibration_->layers.size());
    Eigen::VectorXd layer(n), attention(n), mlp(n);
    for (Eigen::Index l = 0; l < n; ++l) {
      layer(l) = influence(l, np::item_kind::whole_layer);
      attention(l) = influence(l, np::item_kind::attention_block);
      mlp(l) = influence(l, np::item_kind::mlp_block);
    }
    const np::hgsp_options options{o_.temperature, o_.tau, 0.0};
    const auto priors = np::hgsp_multipliers<double>(items_, layer, attention, mlp, options);
    auto weighted = np::apply_hgsp_priors<double>(items_, priors);
    // Layers and blocks are scored by their influence already (use_measured_influence).
    for (std::size_t k = 0; k < items_.size(); ++k) {
      if (np::is_container(items_[k].kind)) weighted[k] = items_[k];
    }
    return weighted;
  }

  std::int64_t total_heads() const {
    std::int64_t n = 0;
    for (const auto& l : shape_.layers) n += l.n_head;
    return n;
  }

  np::head_granularity granularity(std::int64_t layer) const {
    if (!wants("heads")) return np::head_granularity::whole_groups;
    return geometry_of(shape_, layer).is_multi_head() ? np::head_granularity::single_heads : np::head_granularity::heads_per_group;
  }

  std::int64_t mlp_chunk(std::int64_t layer) const {
    return nashprune::traits_of(model_.tensor(gguf::layer_tensor(layer, "ffn_down.weight")).type).block_size;
  }

  // Channels of a layer, least important first (ties: lower index first).
  std::vector<std::int64_t> channel_order(std::int64_t layer) const {
    const auto& sc = scores_[static_cast<std::size_t>(layer)].channels;
    std::vector<std::int64_t> order(static_cast<std::size_t>(sc.size()));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](auto a, auto b) { return sc[a] < sc[b]; });
    return order;
  }

  void build_items() {
    for (std::int64_t i = 0; i < shape_.n_layer(); ++i) {
      const auto& l = shape_.layers[static_cast<std::size_t>(i)];
      const auto& s = scores_[static_cast<std::size_t>(i)];
      const std::int64_t attention_params = l.n_head * shape_.n_embd * (shape_.head_dim_k + shape_.head_dim_v) +
                                            l.n_head_kv * shape_.n_embd * (shape_.head_dim_k + shape_.head_dim_v);
      const std::int64_t mlp_params = l.n_ff * np::mlp_channel_cost(shape_.n_embd);
      if (wants("layers") && i >= o_.keep_first_layers) {
        items_.push_back({i, np::item_kind::whole_layer, 0, s.heads.sum() + s.channels.sum(),
                          o_.unit_heads ? std::max<std::int64_t>(l.n_head, 1) : attention_params + mlp_params});
        if (o_.structures.size() == 1) continue;  // layers alone; else layers_and_finer() keeps them apart
      }
      if (l.has_attention()) {
        const auto g = geometry_of(shape_, i);
        if (wants("heads") || wants("groups")) {
          const auto gran = granularity(i);
          auto layer_items = np::attention_items<double>(g, gran, i, s.heads, shape_.n_embd);
          for (auto& it : layer_items) {
            if (o_.unit_heads) {
              it.cost = gran == np::head_granularity::whole_groups    ? g.group_size()
                        : gran == np::head_granularity::heads_per_group ? g.n_head_kv()
                                                                        : 1;
            }
          }
          // --min-heads: cap how many heads each layer may lose.
          const std::int64_t per_item = gran == np::head_granularity::whole_groups    ? g.group_size()
                                        : gran == np::head_granularity::heads_per_group ? g.n_head_kv()
                                                                                        : 1;
          const auto offered = static_cast<std::int64_t>(layer_items.size());
          const std::int64_t removable_by_min = (l.n_head - o_.min_heads) / per_item;
          const std::int64_t removable_by_ratio = static_cast<std::int64_t>(o_.max_prune * static_cast<double>(l.n_head) + 1e-9) / per_item;
          const std::int64_t removable = std::max<std::int64_t>(0, std::min({offered, removable_by_min, removable_by_ratio}));
          const auto kind = gran == np::head_granularity::whole_groups ? np::item_kind::attention_group : np::item_kind::q_head;
          if (offered - removable > 0) min_kept_.push_back({kind, offered - removable, i});
          items_.insert(items_.end(), layer_items.begin(), layer_items.end());
        } else if (wants("attn-blocks")) {
          items_.push_back({i, np::item_kind::attention_block, 0, s.heads.sum(), o_.unit_heads ? l.n_head : attention_params});
        }
      }
      if (o_.unit_heads) continue;
      if (wants("mlp")) {
        const auto order = channel_order(i);
        const std::int64_t chunk = mlp_chunk(i);
        for (std::int64_t c = 0; c + chunk <= l.n_ff; c += chunk) {
          double importance = 0;
          for (std::int64_t k = c; k < c + chunk; ++k) importance += s.channels[order[static_cast<std::size_t>(k)]];
          items_.push_back({i, np::item_kind::mlp_channel, c / chunk, importance, chunk * np::mlp_channel_cost(shape_.n_embd)});
        }
      } else if (wants("mlp-blocks")) {
        items_.push_back({i, np::item_kind::mlp_block, 0, s.channels.sum(), mlp_params});
      }
    }
  }

  selection finish(const std::vector<np::selection_item<double>>& removed) {
    selection out;
    out.plan = gguf::keep_all(shape_);
    for (std::int64_t i = 0; i < shape_.n_layer(); ++i) {
      auto& p = out.plan.layers[static_cast<std::size_t>(i)];
      const auto& l = shape_.layers[static_cast<std::size_t>(i)];
      std::int64_t chunks = 0;
      for (const auto& it : removed) {
        if (it.layer != i) continue;
        if (it.kind == np::item_kind::whole_layer) p.keep_layer = false;
        if (it.kind == np::item_kind::attention_block) p.heads = {};
        if (it.kind == np::item_kind::mlp_block) p.channels.clear();
        if (it.kind == np::item_kind::mlp_channel) ++chunks;
      }
      if (p.keep_layer && l.has_attention() && (wants("heads") || wants("groups"))) {
        p.heads = np::attention_plan<double>(geometry_of(shape_, i), granularity(i), i, scores_[static_cast<std::size_t>(i)].heads, removed);
      }
      if (chunks > 0) {
        const auto order = channel_order(i);
        std::vector<std::int64_t> drop(order.begin(), order.begin() + chunks * mlp_chunk(i));
        std::sort(drop.begin(), drop.end());
        p.channels = np::complement_units(drop, l.n_ff);
      }
    }
    record_heads(out);
    return out;
  }

  // The seed's per-head statistics of the chosen plan.
  void record_heads(selection& out) const {
    for (std::int64_t i = 0; i < shape_.n_layer(); ++i) {
      const auto& p = out.plan.layers[static_cast<std::size_t>(i)];
      const auto& s = scores_[static_cast<std::size_t>(i)];
      for (Eigen::Index h = 0; h < s.raw_heads.size(); ++h) {
        const bool kept = p.keep_layer && std::binary_search(p.heads.q_heads.begin(), p.heads.q_heads.end(), static_cast<std::int64_t>(h));
        out.heads.push_back({i, static_cast<std::int64_t>(h), s.raw_heads[h],
                             s.participation.size() > 0 ? s.participation[h] : 1.0,
                             s.redundancy_sum.size() > 0 ? s.redundancy_sum[h] : 0.0, !kept});
      }
    }
  }
};

}  // namespace

void check_options(const selection_options& o, bool have_activations, bool have_calibration) {
  if (!(o.target >= 0.0 && o.target < 1.0)) throw usage_error("--target must be in [0, 1), got " + std::to_string(o.target));
  if (o.structures.empty()) throw usage_error("--structures needs at least one of heads, groups, mlp, attn-blocks, mlp-blocks, layers");
  for (const auto& s : o.structures) {
    if (!known_structures.contains(s)) throw usage_error("--structures: unknown structure '" + s + "' (heads, groups, mlp, attn-blocks, mlp-blocks, layers)");
  }
  const auto has = [&](const char* s) { return o.structures.contains(s); };
  if (has("attn-blocks") && (has("heads") || has("groups"))) {
    throw usage_error("--structures attn-blocks overlaps heads/groups (both remove attention heads); choose one");
  }
  if (has("mlp-blocks") && has("mlp")) throw usage_error("--structures mlp-blocks overlaps mlp; choose one");
  if (o.unit_heads && !(has("heads") || has("groups") || has("attn-blocks") || has("layers"))) {
    throw usage_error("--unit heads counts attention heads: add heads, groups, attn-blocks or layers to --structures");
  }
  if (o.score != "magnitude" && o.score != "wanda" && o.score != "activation") {
    throw usage_error("--score must be magnitude, wanda or activation, got '" + o.score + "'");
  }
  if (o.score != "magnitude" && !have_activations) {
    throw usage_error("--score " + o.score +
                      " reads activations: pass --calibration FILE (nashprune calibrate) or --imatrix FILE (llama-imatrix)");
  }
  if (o.method != "nash" && o.method != "knapsack" && o.method != "both" && o.method != "exact") {
    throw usage_error("--method must be nash, knapsack, both or exact, got '" + o.method + "'");
  }
  if (o.redundancy != "cosine" && o.redundancy != "output" && o.redundancy != "ablation") {
    throw usage_error("--redundancy must be cosine, output or ablation, got '" + o.redundancy + "'");
  }
  if (o.method == "exact" && o.redundancy == "cosine") throw usage_error("--method exact needs --redundancy output or ablation");
  if (o.redundancy == "ablation") {
    if (!o.unit_heads || (o.method != "nash" && o.method != "exact")) throw usage_error("--redundancy ablation needs --unit heads and --method nash or exact");
    if (o.lambda_auto) throw usage_error("--redundancy ablation searches its own price for the target: drop --lambda auto");
    if (o.structures != std::set<std::string>{"heads"}) throw usage_error("--redundancy ablation prunes query heads only: drop --structures");
    if (o.freeze_first != 0 || o.freeze_last != 0) throw usage_error("--redundancy ablation plays one game over every layer: drop --freeze-first/--freeze-last");
  }
  if (o.redundancy == "output") {
    if (!have_calibration) throw usage_error("--redundancy output reads the heads' measured outputs: pass --calibration FILE (nashprune calibrate)");
    if (!o.unit_heads || (o.method != "nash" && o.method != "exact")) {
      throw usage_error("--redundancy output needs --unit heads and --method nash or exact");
    }
    if (o.lambda_auto) throw usage_error("--redundancy output searches its own price for the target: drop --lambda auto");
    for (const auto& s : o.structures) {
      if (s != "heads" && s != "groups") throw usage_error("--redundancy output prunes heads or groups only; drop '" + s + "' from --structures");
    }
  }
  if (!(o.lambda > 0.0)) throw usage_error("--lambda must be positive");
  if (o.lambda_auto) {
    if (!o.unit_heads || o.method != "nash") throw usage_error("--lambda auto needs --unit heads and --method nash");
    for (const auto& s : o.structures) {
      if (s != "heads" && s != "groups") throw usage_error("--lambda auto prunes heads or groups only; drop '" + s + "' from --structures");
    }
  }
  if (o.min_heads < 1) throw usage_error("--min-heads must be at least 1");
  if (!(o.max_prune > 0.0 && o.max_prune <= 1.0)) throw usage_error("--max-prune must be in (0, 1]");
  if (o.keep_first_layers < 0) throw usage_error("keep_first_layers must not be negative");
  if (o.freeze_first < 0 || o.freeze_last < 0) throw usage_error("--freeze-first/--freeze-last must not be negative");
  if (o.iterations < 1) throw usage_error("--iterations must be positive");
  if (!(std::isfinite(o.temperature) && o.temperature >= 0.0)) throw usage_error("--temperature must be finite and >= 0");
  if (o.tau && !(*o.tau >= 0.0)) throw usage_error("--tau must be >= 0, inf or auto");
  if (o.priors_requested && o.temperature > 0.0 && !have_calibration) {
    throw usage_error("--temperature/--tau weight the selection by H-GSP layer and block priors, measured by "
                      "nashprune calibrate: pass --calibration FILE (or --temperature 0)");
  }
}

selection choose_plan(const gguf::reader& model, const gguf::llama_shape& shape, const gguf::imatrix* imatrix,
                      const selection_options& options, const calibrate::calibration_stats* calibration) {
  return planner(model, shape, {imatrix, calibration}, options).run();
}

}  // namespace nashprune_tool
