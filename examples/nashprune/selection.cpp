// Choosing what to prune: importance per head and per MLP channel (from the
// weights, or from an imatrix), then removal steps taken in order of least
// importance lost per unit saved until the target is met.
#include "selection.hpp"

#include <gguf/tensor_floats.hpp>
#include <nashprune/nash_game.hpp>
#include <nashprune/nash_solvers.hpp>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <queue>

#include "command.hpp"

namespace nashprune_tool {
namespace {

using gguf::float_matrix;

const std::set<std::string> known_structures = {"heads", "groups", "mlp", "attn-blocks", "mlp-blocks", "layers"};

struct layer_scores {
  std::vector<double> heads;     // per query head
  std::vector<double> channels;  // per FFN channel
  std::vector<double> participation;   // Nash equilibrium per head (1 without a game)
  std::vector<double> redundancy_sum;  // Σ_j≠i r_ij per head (0 without calibration)
};

// Per-input-column activation energy Σ_tokens x_j² of a layer weight, from the
// calibration statistics when given, else from the imatrix.
struct activation_source {
  const gguf::imatrix* imatrix = nullptr;
  const calibrate::calibration_stats* calibration = nullptr;
};

std::vector<float> energy_or_fail(const activation_source& src, const std::string& name) {
  if (src.calibration != nullptr) {
    const auto parts = gguf::split_layer_name(name);
    const auto& l = src.calibration->layers.at(static_cast<std::size_t>(parts->layer));
    const Eigen::VectorXd& e = parts->suffix == "attn_output.weight" ? l.attn_in_sum2 : l.ffn_in_sum2;
    return {e.data(), e.data() + e.size()};
  }
  auto e = src.imatrix->column_energy(name);
  if (!e) throw usage_error("the imatrix has no entry for " + name + " (was it computed on this model?)");
  return *e;
}

// The Nash head game of one layer with measured redundancy (see choose_plan).
void play_head_game(layer_scores& s, const Eigen::MatrixXd& cosine, double lambda, int iterations) {
  const auto n = static_cast<Eigen::Index>(s.heads.size());
  Eigen::VectorXd c = Eigen::Map<const Eigen::VectorXd>(s.heads.data(), n);
  const double top = c.maxCoeff();
  if (!(top > 0)) return;
  c /= top;
  Eigen::MatrixXd r = cosine.cwiseMax(0.0);
  r.diagonal().setOnes();
  nashprune::active_set_newton_options<double> options;
  options.max_iterations = std::max(iterations, 1);
  const auto solution = nashprune::active_set_newton<double>(options).solve(nashprune::make_nash_game(c, r, lambda));
  for (Eigen::Index i = 0; i < n; ++i) {
    s.participation[static_cast<std::size_t>(i)] = solution.s(i);
    s.redundancy_sum[static_cast<std::size_t>(i)] = r.row(i).sum() - 1.0;
    s.heads[static_cast<std::size_t>(i)] *= solution.s(i);
  }
}

layer_scores score_layer(const gguf::reader& model, const gguf::llama_shape& shape, std::int64_t layer,
                         const activation_source& im, const std::string& score) {
  const auto& l = shape.layers[static_cast<std::size_t>(layer)];
  layer_scores s;
  const auto name = [&](const char* suffix) { return gguf::layer_tensor(layer, suffix); };
  const std::int64_t hd = shape.head_dim_v;
  if (l.has_attention()) {
    s.heads.assign(static_cast<std::size_t>(l.n_head), 0.0);
    if (score == "activation") {
      const auto e = energy_or_fail(im, name("attn_output.weight"));
      for (std::int64_t h = 0; h < l.n_head; ++h) {
        for (std::int64_t j = h * hd; j < (h + 1) * hd; ++j) s.heads[static_cast<std::size_t>(h)] += e[static_cast<std::size_t>(j)];
      }
    } else {
      const float_matrix o(model.tensor(name("attn_output.weight")));
      const auto wo = o.map();
      if (score == "wanda") {
        const auto e = energy_or_fail(im, name("attn_output.weight"));
        for (std::int64_t h = 0; h < l.n_head; ++h) {
          for (std::int64_t j = h * hd; j < (h + 1) * hd; ++j) {
            s.heads[static_cast<std::size_t>(h)] += std::sqrt(e[static_cast<std::size_t>(j)]) * wo.col(j).cwiseAbs().sum();
          }
        }
      } else {
        const float_matrix q(model.tensor(name("attn_q.weight")));
        const auto wq = q.map();
        for (std::int64_t h = 0; h < l.n_head; ++h) {
          s.heads[static_cast<std::size_t>(h)] = static_cast<double>(wq.middleRows(h * shape.head_dim_k, shape.head_dim_k).norm()) *
                                                 static_cast<double>(wo.middleCols(h * hd, hd).norm());
        }
      }
    }
  }
  s.channels.assign(static_cast<std::size_t>(l.n_ff), 0.0);
  if (score == "activation") {
    const auto e = energy_or_fail(im, name("ffn_down.weight"));
    for (std::int64_t c = 0; c < l.n_ff; ++c) s.channels[static_cast<std::size_t>(c)] = e[static_cast<std::size_t>(c)];
  } else {
    const float_matrix down(model.tensor(name("ffn_down.weight")));
    const auto wd = down.map();
    if (score == "wanda") {
      const auto e = energy_or_fail(im, name("ffn_down.weight"));
      for (std::int64_t c = 0; c < l.n_ff; ++c) {
        s.channels[static_cast<std::size_t>(c)] = std::sqrt(e[static_cast<std::size_t>(c)]) * wd.col(c).cwiseAbs().sum();
      }
    } else {
      const float_matrix up(model.tensor(name("ffn_up.weight")));
      const auto wu = up.map();
      for (std::int64_t c = 0; c < l.n_ff; ++c) {
        s.channels[static_cast<std::size_t>(c)] = static_cast<double>(wd.col(c).norm()) * static_cast<double>(wu.row(c).norm());
      }
    }
  }
  return s;
}

// One removal step available in a layer; steps of a kind are taken in order.
struct step {
  double cost = 0;  // importance lost, as a fraction of the layer's total
  double gain = 0;  // parameters or heads removed
  std::int64_t layer = 0;
  int kind = 0;
  std::int64_t index = 0;  // the how-many-th step of this kind
  bool operator<(const step& other) const { return cost / gain > other.cost / other.gain; }  // min-heap
};

enum kind_id { k_heads, k_groups, k_mlp, k_attn_block, k_mlp_block, k_layer };

class planner {
 public:
  planner(const gguf::reader& model, const gguf::llama_shape& shape, const activation_source& im, const selection_options& o)
      : model_(model), shape_(shape), o_(o), plan_(gguf::keep_all(shape)) {
    for (std::int64_t i = 0; i < shape.n_layer(); ++i) {
      auto s = score_layer(model, shape, i, im, o.score);
      s.participation.assign(s.heads.size(), 1.0);
      s.redundancy_sum.assign(s.heads.size(), 0.0);
      if (im.calibration != nullptr && o.method != "knapsack" && !s.heads.empty()) {
        play_head_game(s, im.calibration->layers[static_cast<std::size_t>(i)].head_cosine, o.lambda, o.iterations);
      }
      scores_.push_back(std::move(s));
    }
  }

  selection run() {
    const auto before = gguf::totals(model_.tensors());
    double total = 0;
    for (const auto& l : shape_.layers) total += static_cast<double>(o_.unit_heads ? l.n_head : 0);
    if (!o_.unit_heads) total = static_cast<double>(before.parameters);
    double goal = o_.target * total;
    std::priority_queue<step> queue;
    for (std::int64_t i = 0; i < shape_.n_layer(); ++i) {
      if (frozen(i)) continue;
      for (int k = k_heads; k <= k_layer; ++k) push_next(queue, i, k, 0);
    }
    double removed = 0;
    while (removed < goal && !queue.empty()) {
      const step s = queue.top();
      queue.pop();
      if (!still_valid(s)) continue;
      apply(s);
      removed += s.gain;
      push_next(queue, s.layer, s.kind, s.index + 1);
    }
    return finish();
  }

 private:
  const gguf::reader& model_;
  const gguf::llama_shape& shape_;
  const selection_options& o_;
  gguf::prune_plan plan_;
  std::vector<layer_scores> scores_;

  bool frozen(std::int64_t layer) const {
    return layer < o_.freeze_first || layer >= shape_.n_layer() - o_.freeze_last;
  }
  bool allowed(int kind) const {
    static const char* names[] = {"heads", "groups", "mlp", "attn-blocks", "mlp-blocks", "layers"};
    return o_.structures.contains(names[kind]);
  }
  nashprune::attention_geometry geometry(std::int64_t layer) const {
    const auto& l = shape_.layers[static_cast<std::size_t>(layer)];
    return {l.n_head, l.n_head_kv, shape_.head_dim_k, shape_.head_dim_v};
  }
  double head_params(std::int64_t layer) const {
    const auto& l = shape_.layers[static_cast<std::size_t>(layer)];
    return static_cast<double>(shape_.n_embd * (shape_.head_dim_k + shape_.head_dim_v)) +
           (l.group_size() > 0 ? static_cast<double>(shape_.n_embd * (shape_.head_dim_k + shape_.head_dim_v)) / static_cast<double>(l.group_size()) : 0.0);
  }
  double channel_params() const { return 3.0 * static_cast<double>(shape_.n_embd); }
  static double sum(const std::vector<double>& v) { return std::accumulate(v.begin(), v.end(), 0.0); }

  // Heads removed at step `index` of head pruning: the index-th lowest head of every
  // group (heads_per_group), or of the layer when attention is multi-head.
  std::vector<std::int64_t> heads_at(std::int64_t layer, int kind, std::int64_t index) const {
    const auto g = geometry(layer);
    const auto& sc = scores_[static_cast<std::size_t>(layer)].heads;
    std::vector<std::int64_t> out;
    if (kind == k_groups) {
      std::vector<std::int64_t> groups(static_cast<std::size_t>(g.n_head_kv()));
      std::iota(groups.begin(), groups.end(), 0);
      auto group_score = [&](std::int64_t j) {
        double s = 0;
        for (std::int64_t h = j * g.group_size(); h < (j + 1) * g.group_size(); ++h) s += sc[static_cast<std::size_t>(h)];
        return s;
      };
      std::stable_sort(groups.begin(), groups.end(), [&](auto a, auto b) { return group_score(a) < group_score(b); });
      if (index >= g.n_head_kv()) return {};
      for (std::int64_t h = groups[static_cast<std::size_t>(index)] * g.group_size(); h < (groups[static_cast<std::size_t>(index)] + 1) * g.group_size(); ++h) out.push_back(h);
      return out;
    }
    const std::int64_t pools = g.is_multi_head() ? 1 : g.n_head_kv();
    const std::int64_t pool = g.n_head() / pools;
    if (index >= pool) return {};
    for (std::int64_t p = 0; p < pools; ++p) {
      std::vector<std::int64_t> heads(static_cast<std::size_t>(pool));
      std::iota(heads.begin(), heads.end(), p * pool);
      std::stable_sort(heads.begin(), heads.end(), [&](auto a, auto b) { return sc[static_cast<std::size_t>(a)] < sc[static_cast<std::size_t>(b)]; });
      out.push_back(heads[static_cast<std::size_t>(index)]);
      if (g.is_multi_head()) break;
    }
    return out;
  }

  std::int64_t mlp_chunk(std::int64_t layer) const {
    const auto block = nashprune::traits_of(model_.tensor(gguf::layer_tensor(layer, "ffn_down.weight")).type).block_size;
    const auto n_ff = shape_.layers[static_cast<std::size_t>(layer)].n_ff;
    return std::max<std::int64_t>(block, (n_ff / 32) / block * block);
  }

  std::vector<std::int64_t> sorted_channels(std::int64_t layer) const {
    const auto& sc = scores_[static_cast<std::size_t>(layer)].channels;
    std::vector<std::int64_t> c(sc.size());
    std::iota(c.begin(), c.end(), 0);
    std::stable_sort(c.begin(), c.end(), [&](auto a, auto b) { return sc[static_cast<std::size_t>(a)] < sc[static_cast<std::size_t>(b)]; });
    return c;
  }

  void push_next(std::priority_queue<step>& queue, std::int64_t layer, int kind, std::int64_t index) const {
    if (!allowed(kind)) return;
    const auto& l = shape_.layers[static_cast<std::size_t>(layer)];
    const auto& sc = scores_[static_cast<std::size_t>(layer)];
    const double head_total = std::max(sum(sc.heads), 1e-30);
    const double channel_total = std::max(sum(sc.channels), 1e-30);
    step s{0, 0, layer, kind, index};
    if (kind == k_heads || kind == k_groups) {
      if (!l.has_attention()) return;
      const auto heads = heads_at(layer, kind, index);
      if (heads.empty()) return;
      for (auto h : heads) s.cost += sc.heads[static_cast<std::size_t>(h)] / head_total;
      s.gain = o_.unit_heads ? static_cast<double>(heads.size()) : static_cast<double>(heads.size()) * head_params(layer);
    } else if (kind == k_mlp) {
      if (o_.unit_heads) return;
      const auto order = sorted_channels(layer);
      const std::int64_t chunk = mlp_chunk(layer);
      const std::int64_t begin = index * chunk;
      if (begin + chunk >= l.n_ff) return;  // the last chunk goes with mlp-blocks
      for (std::int64_t i = begin; i < begin + chunk; ++i) s.cost += sc.channels[static_cast<std::size_t>(order[static_cast<std::size_t>(i)])] / channel_total;
      s.gain = static_cast<double>(chunk) * channel_params();
    } else if (index == 0) {
      const double heads = static_cast<double>(l.n_head);
      const double attention = o_.unit_heads ? heads : heads * head_params(layer);
      const double mlp = o_.unit_heads ? 0.0 : static_cast<double>(l.n_ff) * channel_params();
      if (kind == k_attn_block) {
        if (!l.has_attention()) return;
        s.cost = 1.0;
        s.gain = attention;
      } else if (kind == k_mlp_block) {
        if (o_.unit_heads) return;
        s.cost = 1.0;
        s.gain = mlp;
      } else {
        s.cost = 2.0;
        s.gain = attention + mlp;
      }
    } else {
      return;
    }
    if (s.gain > 0) queue.push(s);
  }

  bool still_valid(const step& s) const {
    const auto& p = plan_.layers[static_cast<std::size_t>(s.layer)];
    const auto& l = shape_.layers[static_cast<std::size_t>(s.layer)];
    if (!p.keep_layer) return false;
    if (s.kind == k_layer) return true;
    if (s.kind == k_mlp || s.kind == k_mlp_block) return !p.channels.empty();
    if (p.heads.q_heads.empty()) return false;
    if (s.kind == k_attn_block) return true;
    const auto heads = heads_at(s.layer, s.kind, s.index);
    std::int64_t remaining = static_cast<std::int64_t>(p.heads.q_heads.size());
    for (auto h : heads) remaining -= std::binary_search(p.heads.q_heads.begin(), p.heads.q_heads.end(), h) ? 1 : 0;
    const double pruned_fraction = 1.0 - static_cast<double>(remaining) / static_cast<double>(l.n_head);
    return remaining >= std::max(o_.min_heads, 1) && pruned_fraction <= o_.max_prune + 1e-12;
  }

  void apply(const step& s) {
    auto& p = plan_.layers[static_cast<std::size_t>(s.layer)];
    switch (s.kind) {
      case k_layer: p.keep_layer = false; break;
      case k_attn_block: p.heads = {}; break;
      case k_mlp_block: p.channels.clear(); break;
      case k_mlp: {
        const auto order = sorted_channels(s.layer);
        const std::int64_t chunk = mlp_chunk(s.layer);
        std::vector<std::int64_t> drop(order.begin() + s.index * chunk, order.begin() + (s.index + 1) * chunk);
        std::sort(drop.begin(), drop.end());
        std::erase_if(p.channels, [&](auto c) { return std::binary_search(drop.begin(), drop.end(), c); });
        break;
      }
      default: {
        auto drop = heads_at(s.layer, s.kind, s.index);
        std::sort(drop.begin(), drop.end());
        std::erase_if(p.heads.q_heads, [&](auto h) { return std::binary_search(drop.begin(), drop.end(), h); });
        // KV heads whose every query head went are removed with them.
        const auto g = geometry(s.layer);
        std::erase_if(p.heads.kv_heads, [&](auto kv) {
          return std::none_of(p.heads.q_heads.begin(), p.heads.q_heads.end(), [&](auto h) { return h / g.group_size() == kv; });
        });
      }
    }
  }

  selection finish() {
    selection out;
    for (std::int64_t i = 0; i < shape_.n_layer(); ++i) {
      const auto& p = plan_.layers[static_cast<std::size_t>(i)];
      const auto& layer = scores_[static_cast<std::size_t>(i)];
      const auto& sc = layer.heads;
      for (std::size_t h = 0; h < sc.size(); ++h) {
        const bool kept = p.keep_layer && std::binary_search(p.heads.q_heads.begin(), p.heads.q_heads.end(), static_cast<std::int64_t>(h));
        out.heads.push_back({i, static_cast<std::int64_t>(h), sc[h], layer.participation[h], layer.redundancy_sum[h], !kept});
      }
    }
    out.plan = std::move(plan_);
    return out;
  }
};

}  // namespace

void check_options(const selection_options& o, bool have_activations) {
  if (!(o.target >= 0.0 && o.target < 1.0)) throw usage_error("--target must be in [0, 1), got " + std::to_string(o.target));
  if (o.structures.empty()) throw usage_error("--structures needs at least one of heads, groups, mlp, attn-blocks, mlp-blocks, layers");
  for (const auto& s : o.structures) {
    if (!known_structures.contains(s)) throw usage_error("--structures: unknown structure '" + s + "' (heads, groups, mlp, attn-blocks, mlp-blocks, layers)");
  }
  if (o.score != "magnitude" && o.score != "wanda" && o.score != "activation") {
    throw usage_error("--score must be magnitude, wanda or activation, got '" + o.score + "'");
  }
  if (o.score != "magnitude" && !have_activations) {
    throw usage_error("--score " + o.score + " reads activations: pass --calibration FILE (nashprune calibrate) or --imatrix FILE (llama-imatrix)");
  }
  if (o.method != "nash" && o.method != "knapsack" && o.method != "both") {
    throw usage_error("--method must be nash, knapsack or both, got '" + o.method + "'");
  }
  if (o.min_heads < 1) throw usage_error("--min-heads must be at least 1");
  if (!(o.max_prune > 0.0 && o.max_prune <= 1.0)) throw usage_error("--max-prune must be in (0, 1]");
  if (o.freeze_first < 0 || o.freeze_last < 0) throw usage_error("--freeze-first/--freeze-last must not be negative");
  if (o.iterations < 1) throw usage_error("--iterations must be positive");
}

selection choose_plan(const gguf::reader& model, const gguf::llama_shape& shape, const gguf::imatrix* imatrix,
                      const selection_options& options, const calibrate::calibration_stats* calibration) {
  return planner(model, shape, {imatrix, calibration}, options).run();
}

}  // namespace nashprune_tool
