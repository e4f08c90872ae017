// Reading a model into the planner's scores (nashprune/pruning_plan.hpp states
// the pipeline): per-line magnitude or Wanda scores of each projection summed
// per query head and per MLP channel (importance.hpp), or the activation energy
// per head and channel, from `nashprune calibrate` statistics or an imatrix; the
// heads' cosine similarity for the cosine game, measured on calibration
// activations when given, else over the heads' attn_output columns (the
// directions they write into the residual stream); the measured block influence
// and the output game's Gram matrices from the calibration statistics. Reading
// the weights is most of the work, and each layer's is its own: the layers are
// read in parallel.
#include "planning/prune_planner.hpp"

#include <gguf/tensor_floats.hpp>
#include <nashprune/head_redundancy.hpp>
#include <nashprune/importance.hpp>

#include <algorithm>
#include <atomic>
#include <exception>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <thread>

#include "command.hpp"
#include "planning/compensate.hpp"

namespace nashprune_tool {
namespace {

namespace np = nashprune;
using vector_d = Eigen::VectorXd;

struct layer_scores {
  vector_d heads;     // per query head
  vector_d channels;  // per FFN channel
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
                                    np::tensor_role role, const activation_source& im, score_kind score) {
  const auto axis = np::structure_axis(role, np::matrix_orientation::out_by_in);
  np::score_vector<float> lines;
  if (score == score_kind::wanda && im.calibration_lacks_energy(tensor)) {
    // Calibration statistics measure only the inputs of attn_output and ffn_down, so
    // Wanda then scores heads by their attn_output columns (q lines are left out) and
    // channels by their ffn_down columns (gate/up lines count 0).
    if (role != np::tensor_role::q) lines.setZero(axis == np::matrix_axis::rows ? w.rows() : w.cols());
  } else if (score == score_kind::wanda) {
    const auto norms = np::activation_norms(im.energy(tensor), im.tokens());
    lines = np::wanda_line_scores(w, norms, np::matrix_axis::cols, axis);
  } else {
    lines = np::magnitude_line_scores(w, axis);
  }
  return lines;
}

np::score_vector<float> line_scores(const gguf::reader& model, const std::string& tensor, np::tensor_role role,
                                    const activation_source& im, score_kind score) {
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
                         const activation_source& im, score_kind score, Eigen::MatrixXd* weight_cosine) {
  const auto& l = shape.layers[static_cast<std::size_t>(layer)];
  const auto name = [&](const char* suffix) { return gguf::layer_tensor(layer, suffix); };
  const double tokens = im.tokens();
  layer_scores s;
  if (l.has_attention()) {
    const auto g = geometry_of(shape, layer);
    if (score == score_kind::activation) {
      // One range per head (unit_ranges would merge adjacent heads into one run).
      std::vector<np::index_range> ranges;
      for (std::int64_t h = 0; h < l.n_head; ++h) ranges.push_back(g.head_span(np::tensor_role::o, h));
      s.heads = to_double(np::activation_energy(im.energy(name("attn_output.weight")), tokens, ranges));
    } else {
      np::attention_line_scores<float> lines;
      lines.q = line_scores(model, name("attn_q.weight"), np::tensor_role::q, im, score);
      const streamed_weights wo(model, name("attn_output.weight"));
      lines.o = line_scores(wo.map(), name("attn_output.weight"), np::tensor_role::o, im, score);
      if (weight_cosine != nullptr) *weight_cosine = head_cosine(wo.map(), l.n_head, shape.head_dim_v);
      s.heads = to_double(np::q_head_scores(g, lines));
    }
  }
  if (score == score_kind::activation) {
    std::vector<np::index_range> ranges;
    for (std::int64_t c = 0; c < l.n_ff; ++c) ranges.push_back({c, 1});
    s.channels = to_double(np::activation_energy(im.energy(name("ffn_down.weight")), tokens, ranges));
  } else {
    s.channels = to_double(np::mlp_channel_scores(line_scores(model, name("ffn_gate.weight"), np::tensor_role::gate, im, score),
                                                  line_scores(model, name("ffn_up.weight"), np::tensor_role::up, im, score),
                                                  line_scores(model, name("ffn_down.weight"), np::tensor_role::down, im, score)));
  }
  return s;
}

// Cosine redundancy of the heads' output directions, read on its own (when the
// scores came from activations, not from the weights).
Eigen::MatrixXd weight_redundancy(const gguf::reader& model, const gguf::llama_shape& shape, std::int64_t layer) {
  const streamed_weights wo(model, gguf::layer_tensor(layer, "attn_output.weight"));
  return head_cosine(wo.map(), shape.layers[static_cast<std::size_t>(layer)].n_head, shape.head_dim_v);
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

// P of a layer relative to the residual stream, token by token (Σ_t <y_i, y_j>/‖h_t‖²,
// per token of calibration): the next RMSNorm sees each token's change relative to
// its residual, so one price compares layers whose activations differ in scale.
Eigen::MatrixXd scaled_gram(const calibrate::calibration_stats& calibration, std::int64_t layer) {
  const auto& l = calibration.layers.at(static_cast<std::size_t>(layer));
  if (l.head_relative_gram.size() == 0) {
    throw usage_error("--game output needs the heads' projected Gram, which layer " + std::to_string(layer) +
                      " lacks (statistics version " + std::to_string(calibration.version) +
                      "; version 2 records it when attn_output is F32, F16, BF16 or Q8_0): run nashprune calibrate again");
  }
  return l.head_relative_gram / static_cast<double>(std::max<std::uint64_t>(calibration.tokens, 1));
}

// Every layer's head and channel scores, read in parallel; `cosines` receives the
// weight-space cosine of the layers that play the cosine game when the weights
// are read for the scores anyway (one read of attn_output for both).
std::vector<layer_scores> score_layers(const gguf::reader& model, const gguf::llama_shape& shape, const activation_source& im,
                                       const np::pruning_options& o, const scoring_options& scoring,
                                       std::vector<Eigen::MatrixXd>& cosines) {
  std::vector<layer_scores> scored(static_cast<std::size_t>(shape.n_layer()));
  cosines.assign(scored.size(), {});
  for_each_in_parallel(shape.n_layer(), scoring_threads(scoring.threads), [&](std::int64_t i) {
    const auto at = static_cast<std::size_t>(i);
    const bool cosine_from_weights = np::plays_cosine_game(o, shape.layers[at].n_head) && im.calibration == nullptr;
    scored[at] = score_layer(model, shape, i, im, scoring.score, cosine_from_weights ? &cosines[at] : nullptr);
  });
  return scored;
}

// The cosine of each layer that plays the cosine game: measured, or from the weights.
np::cosine_game cosine_of(const gguf::reader& model, const gguf::llama_shape& shape, const activation_source& im,
                          const np::pruning_options& o, std::vector<Eigen::MatrixXd> cosines) {
  for (std::int64_t i = 0; i < shape.n_layer(); ++i) {
    const auto at = static_cast<std::size_t>(i);
    if (!np::plays_cosine_game(o, shape.layers[at].n_head)) continue;
    if (im.calibration != nullptr) {
      cosines[at] = im.calibration->layers[at].head_cosine;
    } else if (cosines[at].size() == 0) {
      try {
        cosines[at] = weight_redundancy(model, shape, i);
      } catch (const std::invalid_argument& e) {
        throw usage_error(std::string(e.what()) + "; the cosine game reads attn_output weights: use --game none or --calibration");
      }
    }
  }
  return {std::move(cosines)};
}

// The output game's Gram of each unfrozen layer with two or more heads.
np::output_perturbation_game output_game_of(const calibrate::calibration_stats& calibration, const gguf::llama_shape& shape,
                                            const np::pruning_options& o) {
  np::output_perturbation_game game;
  game.scaled_gram.resize(shape.layers.size());
  for (std::int64_t i = 0; i < shape.n_layer(); ++i) {
    if (!o.frozen(i, shape.n_layer()) && shape.layers[static_cast<std::size_t>(i)].n_head > 1) {
      game.scaled_gram[static_cast<std::size_t>(i)] = scaled_gram(calibration, i);
    }
  }
  return game;
}

// The quantization block of a layer's ffn_down: a column slice must keep whole blocks.
std::int64_t ffn_down_block(const gguf::reader& model, const gguf::layer_shape& layer, std::int64_t index) {
  if (layer.n_ff == 0) return 1;
  return nashprune::traits_of(model.tensor(gguf::layer_tensor(index, "ffn_down.weight")).type).block_size;
}

// The channels removed together in a layer: whole quantization blocks of ffn_down,
// and in a float ffn_down whose width is a multiple of aligned_channel_step (and wide
// enough to leave 32 steps) that many, so the kept width stays a multiple of it.
// llama.cpp's fast F16/F32 matrix products need the inner dimension a multiple of the
// SIMD width (8 floats on AVX2, 16 on AVX-512) and fall back to a slower path
// otherwise (a 25 % parameter cut of an 8B-width model with widths like 10269 ran
// prompts at 0.75x the original, with multiples of 64 at 1.22x); 32 is also ggml's
// q4_0-q8_0 block, so the pruned model quantizes without fallbacks.
std::int64_t mlp_chunk(const gguf::reader& model, const gguf::layer_shape& layer, std::int64_t index) {
  const auto block = ffn_down_block(model, layer, index);
  if (block == 1 && layer.n_ff % aligned_channel_step == 0 && layer.n_ff >= 32 * aligned_channel_step) return aligned_channel_step;
  return block;
}

}  // namespace

np::head_game parse_game(const std::string& text) { return parse_name<np::head_game>(np::head_game_names, "--game", text); }
np::selector parse_selector(const std::string& text) { return parse_name<np::selector>(np::selector_names, "--selector", text); }
score_kind parse_score(const std::string& text) { return parse_name<score_kind>(score_names, "--score", text); }

np::structure_set parse_structures(const std::vector<std::string>& names) {
  np::structure_set out;
  for (const auto& name : names) {
    const auto s = np::find_structure(name);
    if (!s) throw usage_error("--structures: unknown structure '" + name + "' (heads, groups, mlp, attn-blocks, mlp-blocks, layers)");
    out.insert(*s);
  }
  return out;
}

std::string structure_list(np::structure_set structures) {
  std::vector<std::string> names;
  for (std::size_t k = 0; k < np::structure_count; ++k) {
    if (structures.contains(static_cast<np::structure>(k))) names.emplace_back(np::structure_names[k]);
  }
  std::sort(names.begin(), names.end());
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ",") + n;
  return out;
}

game_and_selector legacy_method(const std::string& method, const std::string& redundancy) {
  using np::head_game;
  using np::selector;
  if (method != "nash" && method != "knapsack" && method != "both" && method != "exact") {
    throw usage_error("--method must be nash, knapsack, both or exact, got '" + method + "'");
  }
  game_and_selector out;
  if (redundancy == "cosine") {
    if (method == "exact") throw usage_error("--method exact needs --redundancy output or ablation");
    out = {method == "knapsack" ? head_game::none : head_game::cosine, method == "both" ? selector::exact : selector::greedy};
  } else if (redundancy == "output" || redundancy == "ablation") {
    if (method != "nash" && method != "exact") throw usage_error("--redundancy " + redundancy + " needs --method nash or exact");
    out = {redundancy == "output" ? head_game::output : head_game::ablation, method == "exact" ? selector::exact : selector::greedy};
  } else if (redundancy == "obs") {
    // The enumeration of each layer's sets, as --redundancy obs always did.
    if (method != "nash" && method != "exact") throw usage_error("--redundancy obs needs --method nash or exact");
    out = {head_game::obs, selector::exact};
  } else {
    throw usage_error("--redundancy must be cosine, output, ablation or obs, got '" + redundancy + "'");
  }
  warn_deprecated("--method and --redundancy are", out);
  return out;
}

void warn_deprecated(const std::string& spelling, game_and_selector replacement) {
  std::cerr << "nashprune: warning: " << spelling << " deprecated: use --game " << np::head_game_names[static_cast<std::size_t>(replacement.game)]
            << " --selector " << np::selector_names[static_cast<std::size_t>(replacement.selection)] << '\n';
}

std::string method_name(np::head_game game, np::selector selection) {
  const bool exact = selection == np::selector::exact;
  switch (game) {
    case np::head_game::none:
      return exact ? "knapsack-exact" : "knapsack";
    case np::head_game::cosine:
      return exact ? "both" : "nash";
    case np::head_game::output:
    case np::head_game::ablation:
      break;
    case np::head_game::obs:
      return "obs";
  }
  return exact ? "exact" : "nash";
}

void check_options(const np::pruning_options& o, score_kind score, const option_check& given) {
  using np::structure;
  if (!(o.target >= 0.0 && o.target < 1.0)) throw usage_error("--target must be in [0, 1), got " + std::to_string(o.target));
  if (o.structures.empty()) throw usage_error("--structures needs at least one of heads, groups, mlp, attn-blocks, mlp-blocks, layers");
  const auto has = [&](structure s) { return o.structures.contains(s); };
  if (has(structure::attention_blocks) && o.wants_heads()) {
    throw usage_error("--structures attn-blocks overlaps heads/groups (both remove attention heads); choose one");
  }
  if (has(structure::mlp_blocks) && has(structure::mlp)) throw usage_error("--structures mlp-blocks overlaps mlp; choose one");
  const bool unit_heads = o.unit == np::budget_unit::heads;
  if (unit_heads && !(o.wants_heads() || has(structure::attention_blocks) || has(structure::layers))) {
    throw usage_error("--unit heads counts attention heads: add heads, groups, attn-blocks or layers to --structures");
  }
  if (score != score_kind::magnitude && !given.have_activations) {
    throw usage_error("--score " + std::string(score_names[static_cast<std::size_t>(score)]) +
                      " reads activations: pass --text FILE or --calibration FILE (nashprune calibrate) or --imatrix FILE (llama-imatrix)");
  }
  const np::structure_set heads_or_groups{structure::heads, structure::groups};
  if (o.game == np::head_game::ablation) {
    if (!unit_heads) throw usage_error("--game ablation needs --unit heads");
    if (o.lambda_auto) throw usage_error("--game ablation searches its own price for the target: drop --lambda auto");
    if (o.structures != np::structure_set{structure::heads}) throw usage_error("--game ablation prunes query heads only: drop --structures");
    if (o.freeze_first != 0 || o.freeze_last != 0) throw usage_error("--game ablation plays one game over every layer: drop --freeze-first/--freeze-last");
  }
  if (o.game == np::head_game::output) {
    if (!given.have_calibration) throw usage_error("--game output reads the heads' measured outputs: pass --text FILE or --calibration FILE (nashprune calibrate)");
    if (!unit_heads) throw usage_error("--game output needs --unit heads");
    if (o.lambda_auto) throw usage_error("--game output searches its own price for the target: drop --lambda auto");
    if (!o.structures.within(heads_or_groups)) throw usage_error("--game output prunes heads or groups only: --structures heads or groups");
  }
  if (o.game == np::head_game::obs) {
    if (!given.have_calibration) {
      throw usage_error("--game obs reads the input moments of attn_output and ffn_down: pass --calibration FILE (nashprune calibrate)");
    }
    if (!o.structures.within({structure::heads, structure::groups, structure::mlp})) {
      throw usage_error("--game obs prunes heads, groups and mlp: --structures from those");
    }
    if (unit_heads && has(structure::mlp)) throw usage_error("--game obs with --unit heads counts heads: drop mlp from --structures or use --unit params");
    if (o.lambda_auto) throw usage_error("--game obs chooses by the error after the refit: drop --lambda auto");
  }
  if (!(o.lambda > 0.0)) throw usage_error("--lambda must be positive");
  if (o.lambda_auto) {
    if (!unit_heads || o.game != np::head_game::cosine || o.selection != np::selector::greedy) {
      throw usage_error("--lambda auto needs --unit heads, --game cosine and --selector greedy");
    }
    if (!o.structures.within(heads_or_groups)) throw usage_error("--lambda auto prunes heads or groups only: --structures heads or groups");
  }
  if (o.min_heads < 1) throw usage_error("--min-heads must be at least 1");
  if (!(o.max_prune > 0.0 && o.max_prune <= 1.0)) throw usage_error("--max-prune must be in (0, 1]");
  if (o.keep_first_layers < 0) throw usage_error("keep_first_layers must not be negative");
  if (o.freeze_first < 0 || o.freeze_last < 0) throw usage_error("--freeze-first/--freeze-last must not be negative");
  if (o.iterations < 1) throw usage_error("--iterations must be positive");
  if (!(std::isfinite(o.temperature) && o.temperature >= 0.0)) throw usage_error("--temperature must be finite and >= 0");
  if (o.tau && !(*o.tau >= 0.0)) throw usage_error("--tau must be >= 0, inf or auto");
  if (given.priors_requested && o.temperature > 0.0 && !given.have_calibration) {
    throw usage_error("--temperature/--tau weight the selection by H-GSP layer and block priors, measured by "
                      "nashprune calibrate: pass --calibration FILE (or --temperature 0)");
  }
}

np::model_scores shape_scores(const gguf::llama_shape& shape) {
  np::model_scores out;
  out.n_embd = shape.n_embd;
  out.head_dim_k = shape.head_dim_k;
  out.head_dim_v = shape.head_dim_v;
  for (const auto& l : shape.layers) {
    out.layers.push_back({l.n_head, l.n_head_kv, l.n_ff, 1, Eigen::VectorXd::Zero(l.n_head), Eigen::VectorXd::Zero(l.n_ff)});
  }
  return out;
}

selection selection_of(np::pruning_result result) {
  selection out;
  out.plan.layers = std::move(result.layers);
  out.heads = std::move(result.heads);
  out.lambda = result.lambda;
  out.game = result.game;
  out.compensated = result.compensated;
  return out;
}

np::model_scores unscored_model(const gguf::reader& model, const gguf::llama_shape& shape) {
  auto scores = shape_scores(shape);
  scores.total_parameters = gguf::totals(model.tensors()).parameters;
  for (std::int64_t i = 0; i < shape.n_layer(); ++i) {
    scores.layers[static_cast<std::size_t>(i)].mlp_chunk = mlp_chunk(model, shape.layers[static_cast<std::size_t>(i)], i);
  }
  return scores;
}

np::structure_set default_structures(np::budget_unit unit, const std::string& model_path) {
  np::structure_set out;
  bool heads_fit = true;
  bool groups_fit = true;
  bool channels_fit = true;
  if (!model_path.empty()) {
    const auto model = gguf::reader::open(model_path);
    const auto shape = gguf::llama_shape::read(model);
    for (std::int64_t i = 0; i < shape.n_layer(); ++i) {
      const auto& l = shape.layers[static_cast<std::size_t>(i)];
      if (l.has_attention()) {
        const auto block = nashprune::traits_of(model.tensor(gguf::layer_tensor(i, "attn_output.weight")).type).block_size;
        heads_fit = heads_fit && shape.head_dim_v % block == 0;
        groups_fit = groups_fit && (l.n_head / l.n_head_kv) * shape.head_dim_v % block == 0;
      }
      if (l.n_ff > 0) channels_fit = channels_fit && ffn_down_block(model, l, i) == 1;
    }
  }
  out.insert(heads_fit || !groups_fit ? np::structure::heads : np::structure::groups);
  if (unit == np::budget_unit::parameters) out.insert(channels_fit ? np::structure::mlp : np::structure::mlp_blocks);
  return out;
}

namespace {

std::string percent(double fraction) {
  std::ostringstream text;
  text << std::fixed << std::setprecision(1) << 100.0 * fraction << " %";
  return text.str();
}

// The --structures worth naming when a target is out of reach, finest first.
std::vector<np::structure_set> alternative_structures(const np::pruning_options& o) {
  using np::structure;
  if (o.lambda_auto || o.game == np::head_game::output || o.game == np::head_game::ablation) {
    return {{structure::heads}, {structure::groups}};
  }
  if (o.unit == np::budget_unit::heads) {
    return {{structure::heads}, {structure::groups}, {structure::heads, structure::layers}, {structure::attention_blocks}, {structure::layers}};
  }
  return {{structure::heads, structure::mlp},
          {structure::groups, structure::mlp},
          {structure::heads, structure::mlp, structure::layers},
          {structure::attention_blocks, structure::mlp_blocks},
          {structure::attention_blocks, structure::mlp_blocks, structure::layers},
          {structure::layers}};
}

}  // namespace

np::target_reach check_target(const np::model_scores& scores, const np::pruning_options& options) {
  const auto reach = np::reach_of(scores, options);
  if (reach.reachable()) return reach;
  const bool heads = reach.unit == np::budget_unit::heads;
  std::ostringstream message;
  message << "--target " << options.target << " asks for " << reach.requested << " of the " << reach.total
          << (heads ? " heads" : " parameters") << "; --structures " << structure_list(options.structures) << " can remove at most "
          << reach.largest << " (" << percent(reach.largest_fraction()) << ") under --min-heads " << options.min_heads
          << " and --max-prune " << options.max_prune;
  if (options.freeze_first > 0 || options.freeze_last > 0) message << " with the frozen layers";
  std::optional<np::structure_set> reaching;
  np::structure_set widest = options.structures;
  double widest_fraction = reach.largest_fraction();
  for (const auto& candidate : alternative_structures(options)) {
    if (candidate == options.structures) continue;
    auto o = options;
    o.structures = candidate;
    if (!candidate.contains(np::structure::layers)) o.keep_first_layers = 0;
    const auto r = np::reach_of(scores, o);
    if (r.reachable() && !reaching) reaching = candidate;
    if (r.largest_fraction() > widest_fraction) widest = candidate, widest_fraction = r.largest_fraction();
  }
  if (reaching) {
    message << ": --structures " << structure_list(*reaching) << " reaches it";
  } else {
    message << ": no --structures reaches it (the most is " << percent(widest_fraction) << " with --structures " << structure_list(widest)
            << "); lower --target, or raise --max-prune / lower --min-heads";
  }
  throw usage_error(message.str());
}

target_outcome outcome_of(const np::pruning_options& options, const np::target_reach& reach, const gguf::llama_shape& before_shape,
                          const gguf::llama_shape& after_shape, const gguf::tensor_totals& before, const gguf::tensor_totals& after) {
  const auto heads_of = [](const gguf::llama_shape& s) {
    std::int64_t n = 0;
    for (const auto& l : s.layers) n += l.n_head;
    return n;
  };
  target_outcome o;
  o.heads = reach.unit == np::budget_unit::heads;
  o.target = options.target;
  o.requested = reach.requested;
  o.heads_before = heads_of(before_shape);
  o.heads_after = heads_of(after_shape);
  o.removed = o.heads ? o.heads_before - o.heads_after : before.parameters - after.parameters;
  o.before = before;
  o.after = after;
  return o;
}

void print_target(std::ostream& out, const target_outcome& o) {
  out << "target " << percent(o.target) << " of " << (o.heads ? "heads" : "parameters") << ": requested " << o.requested << ", removed "
      << o.removed;
  if (o.removed < o.requested) {
    out << (o.heads ? " (the most GQA-consistent plans reach below the request)" : " (the budget is a bound: heads and channel blocks are whole units)");
  }
  out << "; heads " << o.heads_before << " -> " << o.heads_after << ", parameters " << o.before.parameters << " -> " << o.after.parameters
      << ", tensor bytes " << o.before.bytes << " -> " << o.after.bytes << '\n';
}

nlohmann::json target_summary(const std::optional<target_outcome>& o) {
  if (!o) return nlohmann::json::object();
  const auto totals = [](const gguf::tensor_totals& t) { return nlohmann::json{{"parameters", t.parameters}, {"tensor_bytes", t.bytes}}; };
  return {{"target", {{"unit", o->heads ? "heads" : "params"}, {"fraction", o->target}, {"requested", o->requested}, {"removed", o->removed}}},
          {"head_count", {{"before", o->heads_before}, {"after", o->heads_after}}},
          {"before", totals(o->before)},
          {"after", totals(o->after)}};
}

namespace {

np::model_scores scored_model(const gguf::reader& model, const gguf::llama_shape& shape, const activation_source& im,
                              const np::pruning_options& options, const scoring_options& scoring,
                              const calibrate::calibration_stats* calibration, std::vector<Eigen::MatrixXd>& cosines) {
  auto scores = unscored_model(model, shape);
  auto scored = score_layers(model, shape, im, options, scoring, cosines);
  for (std::int64_t i = 0; i < shape.n_layer(); ++i) {
    const auto at = static_cast<std::size_t>(i);
    auto& l = scores.layers[at];
    l.heads = std::move(scored[at].heads);
    l.channels = std::move(scored[at].channels);
  }
  if (calibration != nullptr) {
    for (const auto& l : calibration->layers) scores.influence.push_back({l.layer_influence, l.attn_influence, l.mlp_influence});
  }
  return scores;
}

}  // namespace

np::model_scores scored_model(const gguf::reader& model, const gguf::llama_shape& shape, const gguf::imatrix* imatrix,
                              const np::pruning_options& options, const scoring_options& scoring,
                              const calibrate::calibration_stats* calibration) {
  std::vector<Eigen::MatrixXd> cosines;
  return scored_model(model, shape, activation_source{imatrix, calibration}, options, scoring, calibration, cosines);
}

selection choose_plan(const gguf::reader& model, const gguf::llama_shape& shape, const gguf::imatrix* imatrix,
                      const np::pruning_options& options, const scoring_options& scoring,
                      const calibrate::calibration_stats* calibration) {
  const auto reach = check_target(unscored_model(model, shape), options);
  const activation_source im{imatrix, calibration};
  std::vector<Eigen::MatrixXd> cosines;
  const auto scores = scored_model(model, shape, im, options, scoring, calibration, cosines);
  const auto planned = [&]() -> np::pruning_result {
    switch (options.game) {
      case np::head_game::cosine:
        return np::plan_pruning(scores, cosine_of(model, shape, im, options, std::move(cosines)), options);
      case np::head_game::output:
        return np::plan_pruning(scores, output_game_of(*calibration, shape, options), options);
      case np::head_game::none:
        return np::plan_pruning(scores, options);
      case np::head_game::ablation:
        throw usage_error("--game ablation reads its loss model from --ablation FILE");
      case np::head_game::obs:
        break;
    }
    throw usage_error("--game obs reads the input moments of --calibration FILE and is planned by choose_by_compensated_error");
  };
  auto chosen = selection_of(planned());
  chosen.reach = reach;
  return chosen;
}

selection choose_by_compensated_error(const gguf::reader& model, const gguf::llama_shape& shape, const np::pruning_options& options,
                                      const calibrate::calibration_stats& calibration, double damping) {
  auto scores = unscored_model(model, shape);
  const auto reach = check_target(scores, options);
  auto chosen = selection_of(np::plan_pruning(std::move(scores), compensated_error_game_of(model, shape, calibration, options, damping), options));
  chosen.reach = reach;
  return chosen;
}

}  // namespace nashprune_tool
