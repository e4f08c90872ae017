// Choosing what to prune, with the library doing every step:
//  1. importance (importance.hpp): per-line magnitude or Wanda scores of each
//     projection, summed per query head (q_head_scores) and per MLP channel
//     (mlp_channel_scores), or the imatrix's activation energy per head/channel;
//  2. Nash (nash_game.hpp, nash_solvers.hpp; --method nash or both): per layer,
//     the game with c = head importance / max and R = cosine redundancy of the
//     heads (head_redundancy.hpp over the heads' attn_output columns, the
//     directions they write into the residual stream); participation s_i scales
//     each head's importance, and s_i < --threshold counts as importance 0;
//  3. global selection (global_selection.hpp): items from attention_items.hpp,
//     MLP channels (in chunks of the quantization block), blocks and layers, under
//     the budget --target of parameters or heads; greedy (nash, knapsack) or the
//     exact 0/1 solver (both), then mapped back to per-layer keep-lists.
#include "selection.hpp"

#include <gguf/tensor_floats.hpp>
#include <nashprune/attention_items.hpp>
#include <nashprune/global_selection.hpp>
#include <nashprune/head_redundancy.hpp>
#include <nashprune/importance.hpp>
#include <nashprune/nash_solvers.hpp>

#include <algorithm>
#include <numeric>

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

Eigen::VectorXf energy_or_fail(const gguf::imatrix& im, const std::string& name) {
  auto e = im.column_energy(name);
  if (!e) throw usage_error("the imatrix has no entry for " + name + " (was it computed on this model?)");
  return Eigen::Map<const Eigen::VectorXf>(e->data(), static_cast<Eigen::Index>(e->size()));
}

// Per-line scores of one projection along its structure axis.
np::score_vector<float> line_scores(const gguf::reader& model, const std::string& tensor, np::tensor_role role,
                                    const gguf::imatrix* im, const std::string& score) {
  const gguf::float_matrix w(model.tensor(tensor));
  const auto axis = np::structure_axis(role, np::matrix_orientation::out_by_in);
  np::score_vector<float> lines;
  if (score == "wanda") {
    const auto norms = np::activation_norms(energy_or_fail(*im, tensor), static_cast<double>(std::max<std::uint64_t>(im->tokens(), 1)));
    lines = np::wanda_line_scores(w.map(), norms, np::matrix_axis::cols, axis);
  } else {
    lines = np::magnitude_line_scores(w.map(), axis);
  }
  model.release(model.tensor(tensor).data);
  return lines;
}

np::attention_geometry geometry_of(const gguf::llama_shape& shape, std::int64_t layer) {
  const auto& l = shape.layers[static_cast<std::size_t>(layer)];
  return {l.n_head, l.n_head_kv, shape.head_dim_k, shape.head_dim_v};
}

layer_scores score_layer(const gguf::reader& model, const gguf::llama_shape& shape, std::int64_t layer,
                         const gguf::imatrix* im, const selection_options& o) {
  const auto& l = shape.layers[static_cast<std::size_t>(layer)];
  const auto name = [&](const char* suffix) { return gguf::layer_tensor(layer, suffix); };
  const double tokens = im != nullptr ? static_cast<double>(std::max<std::uint64_t>(im->tokens(), 1)) : 1.0;
  layer_scores s;
  if (l.has_attention()) {
    const auto g = geometry_of(shape, layer);
    if (o.score == "activation") {
      const auto ranges = np::unit_ranges(std::vector<std::int64_t>([&] {
        std::vector<std::int64_t> all(static_cast<std::size_t>(l.n_head));
        std::iota(all.begin(), all.end(), 0);
        return all;
      }()), shape.head_dim_v);
      s.heads = to_double(np::activation_energy(energy_or_fail(*im, name("attn_output.weight")), tokens, ranges));
    } else {
      np::attention_line_scores<float> lines;
      lines.q = line_scores(model, name("attn_q.weight"), np::tensor_role::q, im, o.score);
      lines.o = line_scores(model, name("attn_output.weight"), np::tensor_role::o, im, o.score);
      s.heads = to_double(np::q_head_scores(g, lines));
    }
  }
  s.raw_heads = s.heads;
  if (o.score == "activation") {
    std::vector<np::index_range> ranges;
    for (std::int64_t c = 0; c < l.n_ff; ++c) ranges.push_back({c, 1});
    s.channels = to_double(np::activation_energy(energy_or_fail(*im, name("ffn_down.weight")), tokens, ranges));
  } else {
    s.channels = to_double(np::mlp_channel_scores(line_scores(model, name("ffn_gate.weight"), np::tensor_role::gate, im, o.score),
                                                  line_scores(model, name("ffn_up.weight"), np::tensor_role::up, im, o.score),
                                                  line_scores(model, name("ffn_down.weight"), np::tensor_role::down, im, o.score)));
  }
  return s;
}

// Cosine redundancy of the heads' output directions (their attn_output columns).
Eigen::MatrixXd weight_redundancy(const gguf::reader& model, const gguf::llama_shape& shape, std::int64_t layer) {
  const auto& l = shape.layers[static_cast<std::size_t>(layer)];
  const auto& tensor = model.tensor(gguf::layer_tensor(layer, "attn_output.weight"));
  const gguf::float_matrix wo(tensor);
  np::head_redundancy<float> acc(l.n_head, shape.head_dim_v);
  acc.add_batch(wo.map());
  model.release(tensor.data);
  return acc.cosine();
}

// The Nash step: participation of every head scales its importance.
void apply_nash(layer_scores& s, const Eigen::MatrixXd& redundancy, const selection_options& o) {
  const double top = s.heads.maxCoeff();
  const vector_d c = top > 0 ? vector_d(s.heads / top) : s.heads;
  const auto game = np::make_nash_game(c, redundancy, o.lambda);
  const std::vector<np::nash_game<double>> games{game};
  const auto solution = np::solve_nash_layers<double>(np::nash_solver_kind::active_set_newton, games, std::nullopt,
                                                      static_cast<std::int64_t>(o.iterations))
                            .front();
  s.participation = solution.s;
  s.redundancy_sum = redundancy.rowwise().sum() - redundancy.diagonal();
  for (Eigen::Index h = 0; h < s.heads.size(); ++h) {
    s.heads[h] = s.participation[h] < o.threshold ? 0.0 : s.heads[h] * s.participation[h];
  }
}

class planner {
 public:
  planner(const gguf::reader& model, const gguf::llama_shape& shape, const gguf::imatrix* im, const selection_options& o)
      : model_(model), shape_(shape), o_(o) {
    for (std::int64_t i = 0; i < shape.n_layer(); ++i) {
      auto s = score_layer(model, shape, i, im, o);
      const bool heads_wanted = o.structures.contains("heads") || o.structures.contains("groups");
      if (o.method != "knapsack" && heads_wanted && s.heads.size() > 1) {
        Eigen::MatrixXd redundancy;
        try {
          redundancy = weight_redundancy(model, shape, i);
        } catch (const std::invalid_argument& e) {
          throw usage_error(std::string(e.what()) + "; the Nash redundancy reads attn_output weights: use --method knapsack");
        }
        apply_nash(s, redundancy, o);
      }
      scores_.push_back(std::move(s));
    }
  }

  selection run() {
    build_items();
    if (items_.empty()) throw usage_error("nothing to prune: --structures offers no removable structure in unfrozen layers");
    const std::int64_t total = o_.unit_heads ? total_heads() : gguf::totals(model_.tensors()).parameters;
    const std::int64_t budget = np::budget_from_fraction(o_.target, total);
    np::selection_constraints constraints;
    constraints.n_layers = shape_.n_layer();
    constraints.freeze_first_layers = std::min<std::int64_t>(o_.freeze_first, shape_.n_layer());
    constraints.freeze_last_layers = std::min<std::int64_t>(o_.freeze_last, shape_.n_layer() - constraints.freeze_first_layers);
    constraints.min_kept = min_kept_;
    const auto result = o_.method == "both" ? np::solve_exact<double>(items_, budget, constraints)
                                            : np::select_greedy<double>(items_, budget, constraints);
    std::vector<np::selection_item<double>> removed;
    for (auto position : result.pruned) removed.push_back(items_[static_cast<std::size_t>(position)]);
    return finish(removed);
  }

 private:
  const gguf::reader& model_;
  const gguf::llama_shape& shape_;
  const selection_options& o_;
  std::vector<layer_scores> scores_;
  std::vector<np::selection_item<double>> items_;
  std::vector<np::min_kept_rule> min_kept_;

  bool wants(const char* s) const { return o_.structures.contains(s); }

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
      if (wants("layers")) {
        items_.push_back({i, np::item_kind::whole_layer, 0, s.heads.sum() + s.channels.sum(),
                          o_.unit_heads ? std::max<std::int64_t>(l.n_head, 1) : attention_params + mlp_params});
        continue;
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
      if (l.has_attention() && (wants("heads") || wants("groups")) && !wants("layers")) {
        p.heads = np::attention_plan<double>(geometry_of(shape_, i), granularity(i), i, scores_[static_cast<std::size_t>(i)].heads, removed);
      }
      if (chunks > 0) {
        const auto order = channel_order(i);
        std::vector<std::int64_t> drop(order.begin(), order.begin() + chunks * mlp_chunk(i));
        std::sort(drop.begin(), drop.end());
        p.channels = np::complement_units(drop, l.n_ff);
      }
      const auto& s = scores_[static_cast<std::size_t>(i)];
      for (Eigen::Index h = 0; h < s.raw_heads.size(); ++h) {
        const bool kept = p.keep_layer && std::binary_search(p.heads.q_heads.begin(), p.heads.q_heads.end(), static_cast<std::int64_t>(h));
        out.heads.push_back({i, static_cast<std::int64_t>(h), s.raw_heads[h],
                             s.participation.size() > 0 ? s.participation[h] : 1.0,
                             s.redundancy_sum.size() > 0 ? s.redundancy_sum[h] : 0.0, !kept});
      }
    }
    return out;
  }
};

}  // namespace

void check_options(const selection_options& o, bool have_imatrix) {
  if (!(o.target >= 0.0 && o.target < 1.0)) throw usage_error("--target must be in [0, 1), got " + std::to_string(o.target));
  if (o.structures.empty()) throw usage_error("--structures needs at least one of heads, groups, mlp, attn-blocks, mlp-blocks, layers");
  for (const auto& s : o.structures) {
    if (!known_structures.contains(s)) throw usage_error("--structures: unknown structure '" + s + "' (heads, groups, mlp, attn-blocks, mlp-blocks, layers)");
  }
  const auto has = [&](const char* s) { return o.structures.contains(s); };
  if (has("layers") && o.structures.size() > 1) {
    throw usage_error("--structures layers removes whole layers and cannot be mixed with finer structures in one run "
                      "(a parameter would be counted twice); prune layers first, then run again on the output");
  }
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
  if (o.score != "magnitude" && !have_imatrix) throw usage_error("--score " + o.score + " reads activations: pass --imatrix FILE (written by llama-imatrix)");
  if (o.method != "nash" && o.method != "knapsack" && o.method != "both") {
    throw usage_error("--method must be nash, knapsack or both, got '" + o.method + "'");
  }
  if (!(o.lambda >= 0.0)) throw usage_error("--lambda must not be negative");
  if (o.min_heads < 1) throw usage_error("--min-heads must be at least 1");
  if (!(o.max_prune > 0.0 && o.max_prune <= 1.0)) throw usage_error("--max-prune must be in (0, 1]");
  if (o.freeze_first < 0 || o.freeze_last < 0) throw usage_error("--freeze-first/--freeze-last must not be negative");
  if (o.iterations < 1) throw usage_error("--iterations must be positive");
}

selection choose_plan(const gguf::reader& model, const gguf::llama_shape& shape, const gguf::imatrix* imatrix,
                      const selection_options& options) {
  return planner(model, shape, imatrix, options).run();
}

}  // namespace nashprune_tool
