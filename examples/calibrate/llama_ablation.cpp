// Ablation through llama.cpp's evaluation callback (see llama_ablation.hpp).
#include "calibrate/llama_ablation.hpp"

#include "calibrate/llama_text_run.hpp"
#include "gguf/llama_model.hpp"

#include <ggml-backend.h>
#include <ggml.h>
#include <llama.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace calibrate {

struct ablation_session::state {
  std::vector<std::int64_t> heads;  // query heads per layer
  std::vector<std::int64_t> ffn;    // FFN width per layer
  std::vector<bool> attn_bias, ffn_bias;  // per layer: attn_output / ffn_down has a bias
  std::int64_t head_dim_v = 0;
  std::int64_t score_from = 0;  // first scored position of each chunk
  std::vector<std::vector<std::int64_t>> zero;  // per layer, the heads removed in this pass
  std::vector<std::int64_t> seen;               // per layer, kqv_out nodes zeroed in this pass
  // Per layer and block (attention, MLP): removed in this pass, and projections zeroed.
  std::vector<std::array<bool, 2>> zero_block;
  std::vector<std::array<std::int64_t, 2>> seen_block;
  std::string error;
  std::optional<llama_text_run> run;  // constructed last: its context calls back into this state

  // The node to zero: a layer's kqv_out (heads), or the product of its attn_output
  // (block 0) or ffn_down (block 1) weight; block -1 for heads.
  struct target {
    std::int64_t layer = -1;
    int block = -1;
  };
  [[nodiscard]] std::optional<target> wanted(const ggml_tensor* t) const {
    const auto n_layer = static_cast<std::int64_t>(zero.size());
    const auto in_range = [&](std::int64_t l) { return l >= 0 && l < n_layer; };
    if (const auto l = suffix_number(ggml_get_name(t), "kqv_out-"); l && in_range(*l) && !zero[static_cast<std::size_t>(*l)].empty()) {
      return target{*l, -1};
    }
    if (t->op != GGML_OP_MUL_MAT || t->src[0] == nullptr) return std::nullopt;
    const char* weight = ggml_get_name(t->src[0]);
    for (int b = 0; b < 2; ++b) {
      const auto l = weight_layer(weight, b == 0 ? "attn_output.weight" : "ffn_down.weight");
      if (l && in_range(*l) && zero_block[static_cast<std::size_t>(*l)][static_cast<std::size_t>(b)]) return target{*l, b};
    }
    return std::nullopt;
  }

  static bool callback(ggml_tensor* t, bool ask, void* user) {
    auto* self = static_cast<state*>(user);
    const auto found = self->wanted(t);
    if (ask) return found.has_value();
    if (!found) return true;
    const auto layer = static_cast<std::size_t>(found->layer);
    const std::int64_t width = found->block >= 0 ? t->ne[0] : self->heads[layer] * self->head_dim_v;
    if (t->type != GGML_TYPE_F32 || t->ne[0] != width || t->nb[0] != sizeof(float) || t->ne[2] != 1 || t->ne[3] != 1 ||
        (t->buffer != nullptr && !ggml_backend_buffer_is_host(t->buffer))) {
      self->error = std::string(ggml_get_name(t)) + " is not a host F32 block of " +
                    (found->block >= 0 ? "rows" : "n_head·head_dim_v columns");
      return false;
    }
    auto* base = static_cast<char*>(t->data);
    for (std::int64_t row = 0; row < t->ne[1]; ++row) {
      auto* x = reinterpret_cast<float*>(base + row * static_cast<std::int64_t>(t->nb[1]));
      if (found->block >= 0) {
        std::fill_n(x, width, 0.0F);
      } else {
        for (const auto h : self->zero[layer]) std::fill_n(x + h * self->head_dim_v, self->head_dim_v, 0.0F);
      }
    }
    ++(found->block >= 0 ? self->seen_block[layer][static_cast<std::size_t>(found->block)] : self->seen[layer]);
    return true;
  }
};

ablation_session::ablation_session(const ablation_options& o) : state_(std::make_unique<state>()) {
  check_chunking(o.context, o.max_tokens);
  if (o.score_from < 0 || o.score_from > o.context - 2) {
    throw std::invalid_argument("--score-from must be in [0, " + std::to_string(o.context - 2) + "] (--ctx " + std::to_string(o.context) + " minus 2), got " +
                                std::to_string(o.score_from));
  }
  auto& s = *state_;
  s.score_from = o.score_from;
  {
    const auto file = gguf::reader::open(o.model);
    const auto shape = gguf::llama_shape::read(file);
    for (const auto& l : shape.layers) s.heads.push_back(l.n_head), s.ffn.push_back(l.n_ff);
    for (std::int64_t l = 0; l < shape.n_layer(); ++l) {
      s.attn_bias.push_back(file.find_tensor(gguf::layer_tensor(l, "attn_output.bias")) != nullptr);
      s.ffn_bias.push_back(file.find_tensor(gguf::layer_tensor(l, "ffn_down.bias")) != nullptr);
    }
    s.head_dim_v = shape.head_dim_v;
  }
  s.zero.resize(s.heads.size());
  s.seen.resize(s.heads.size());
  s.zero_block.resize(s.heads.size());
  s.seen_block.resize(s.heads.size());
  s.run.emplace(text_run_options{o, &state::callback, &s});
}

ablation_session::~ablation_session() = default;

std::int64_t ablation_session::predicted_tokens() const {
  return state_->run->chunks() * (state_->run->context() - 1 - state_->score_from);
}

std::span<const std::int64_t> ablation_session::heads_per_layer() const { return state_->heads; }

double ablation_session::mean_nll(std::span<const head_ref> removed) { return mean_nll(removed, {}); }

double ablation_session::mean_nll(std::span<const head_ref> removed, std::span<const block_ref> blocks) {
  auto& s = *state_;
  for (auto& z : s.zero) z.clear();
  for (auto& z : s.zero_block) z = {false, false};
  for (std::size_t k = 0; k < blocks.size(); ++k) {
    const auto [layer, part] = blocks[k];
    const auto at = " (removed block at index " + std::to_string(k) + ")";
    if (layer < 0 || layer >= static_cast<std::int64_t>(s.heads.size())) throw std::invalid_argument("removed block: layer " + std::to_string(layer) + " out of range" + at);
    if (!nashprune::is_container(part)) {
      throw std::invalid_argument("removed block: kind " + std::string(nashprune::name_of(part)) + " is not a block or a whole layer" + at);
    }
    const auto l = static_cast<std::size_t>(layer);
    const bool attention = part != nashprune::item_kind::mlp_block, mlp = part != nashprune::item_kind::attention_block;
    if (part == nashprune::item_kind::attention_block && s.heads[l] == 0) throw std::invalid_argument("layer " + std::to_string(layer) + " has no attention to remove" + at);
    if (part == nashprune::item_kind::mlp_block && s.ffn[l] == 0) throw std::invalid_argument("layer " + std::to_string(layer) + " has no MLP to remove" + at);
    if ((attention && s.attn_bias[l]) || (mlp && s.ffn_bias[l])) {
      throw std::invalid_argument("layer " + std::to_string(layer) + ": a projection with a bias cannot be ablated by zeroing its product" + at);
    }
    s.zero_block[l][0] = s.zero_block[l][0] || (attention && s.heads[l] > 0);
    s.zero_block[l][1] = s.zero_block[l][1] || (mlp && s.ffn[l] > 0);
  }
  for (std::size_t k = 0; k < removed.size(); ++k) {
    const auto [layer, head] = removed[k];
    if (layer < 0 || layer >= static_cast<std::int64_t>(s.heads.size()) || head < 0 || head >= s.heads[static_cast<std::size_t>(layer)]) {
      throw std::invalid_argument("removed head " + std::to_string(layer) + ":" + std::to_string(head) + " out of range at index " + std::to_string(k));
    }
    s.zero[static_cast<std::size_t>(layer)].push_back(head);
  }
  std::fill(s.seen.begin(), s.seen.end(), 0);
  for (auto& n : s.seen_block) n = {0, 0};
  double total = 0;
  auto& run = *s.run;
  for (std::int64_t c = 0; c < run.chunks(); ++c) {
    const auto status = run.decode_chunk(c);
    if (!s.error.empty()) throw std::runtime_error(s.error);
    if (status != 0) throw std::runtime_error("llama_decode failed with status " + std::to_string(status));
    total += run.chunk_nll(s.score_from);
  }
  for (std::size_t l = 0; l < s.zero.size(); ++l) {
    if (!s.zero[l].empty() && s.seen[l] != run.chunks()) throw std::runtime_error("layer " + std::to_string(l) + ": the evaluation never showed kqv_out-" + std::to_string(l));
    for (std::size_t b = 0; b < 2; ++b) {
      if (s.zero_block[l][b] && s.seen_block[l][b] != run.chunks()) {
        throw std::runtime_error("layer " + std::to_string(l) + ": the evaluation never showed the product of " + (b == 0 ? "attn_output" : "ffn_down"));
      }
    }
  }
  return total / static_cast<double>(predicted_tokens());
}

}  // namespace calibrate
