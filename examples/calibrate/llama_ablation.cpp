// Ablation through llama.cpp's evaluation callback (see llama_ablation.hpp).
#include "calibrate/llama_ablation.hpp"

#include "calibrate/llama_text_run.hpp"
#include "gguf/llama_model.hpp"

#include <ggml-backend.h>
#include <ggml.h>
#include <llama.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace calibrate {

struct ablation_session::state {
  std::vector<std::int64_t> heads;  // query heads per layer
  std::int64_t head_dim_v = 0;
  std::vector<std::vector<std::int64_t>> zero;  // per layer, the heads removed in this pass
  std::vector<std::int64_t> seen;               // per layer, kqv_out nodes zeroed in this pass
  std::string error;
  std::optional<llama_text_run> run;  // constructed last: its context calls back into this state

  static bool callback(ggml_tensor* t, bool ask, void* user) {
    auto* self = static_cast<state*>(user);
    const auto layer = suffix_number(ggml_get_name(t), "kqv_out-").value_or(-1);
    const bool wanted = layer >= 0 && layer < static_cast<std::int64_t>(self->zero.size()) && !self->zero[static_cast<std::size_t>(layer)].empty();
    if (ask) return wanted;
    if (!wanted) return true;
    const std::int64_t width = self->heads[static_cast<std::size_t>(layer)] * self->head_dim_v;
    if (t->type != GGML_TYPE_F32 || t->ne[0] != width || t->nb[0] != sizeof(float) || t->ne[2] != 1 || t->ne[3] != 1 ||
        (t->buffer != nullptr && !ggml_backend_buffer_is_host(t->buffer))) {
      self->error = std::string(ggml_get_name(t)) + " is not a host F32 block of n_head·head_dim_v columns";
      return false;
    }
    auto* base = static_cast<char*>(t->data);
    for (std::int64_t row = 0; row < t->ne[1]; ++row) {
      auto* x = reinterpret_cast<float*>(base + row * static_cast<std::int64_t>(t->nb[1]));
      for (const auto h : self->zero[static_cast<std::size_t>(layer)]) std::fill_n(x + h * self->head_dim_v, self->head_dim_v, 0.0F);
    }
    ++self->seen[static_cast<std::size_t>(layer)];
    return true;
  }
};

ablation_session::ablation_session(const ablation_options& o) : state_(std::make_unique<state>()) {
  check_chunking(o.context, o.max_tokens);
  auto& s = *state_;
  {
    const auto file = gguf::reader::open(o.model);
    const auto shape = gguf::llama_shape::read(file);
    for (const auto& l : shape.layers) s.heads.push_back(l.n_head);
    s.head_dim_v = shape.head_dim_v;
  }
  s.zero.resize(s.heads.size());
  s.seen.resize(s.heads.size());
  s.run.emplace(text_run_options{o.model, o.text, o.max_tokens, o.context, o.threads, &state::callback, &s});
}

ablation_session::~ablation_session() = default;

std::int64_t ablation_session::predicted_tokens() const { return state_->run->chunks() * (state_->run->context() - 1); }

std::span<const std::int64_t> ablation_session::heads_per_layer() const { return state_->heads; }

double ablation_session::mean_nll(std::span<const head_ref> removed) {
  auto& s = *state_;
  for (auto& z : s.zero) z.clear();
  for (std::size_t k = 0; k < removed.size(); ++k) {
    const auto [layer, head] = removed[k];
    if (layer < 0 || layer >= static_cast<std::int64_t>(s.heads.size()) || head < 0 || head >= s.heads[static_cast<std::size_t>(layer)]) {
      throw std::invalid_argument("removed head " + std::to_string(layer) + ":" + std::to_string(head) + " out of range at index " + std::to_string(k));
    }
    s.zero[static_cast<std::size_t>(layer)].push_back(head);
  }
  std::fill(s.seen.begin(), s.seen.end(), 0);
  double total = 0;
  auto& run = *s.run;
  const std::int32_t n_vocab = run.n_vocab();
  for (std::int64_t c = 0; c < run.chunks(); ++c) {
    const auto status = run.decode_chunk(c);
    if (!s.error.empty()) throw std::runtime_error(s.error);
    if (status != 0) throw std::runtime_error("llama_decode failed with status " + std::to_string(status));
    const float* logits = run.logits();
    for (std::int64_t j = 0; j + 1 < run.context(); ++j) {
      const float* row = logits + j * n_vocab;
      const float top = *std::max_element(row, row + n_vocab);
      double sum = 0;
      for (std::int32_t v = 0; v < n_vocab; ++v) sum += std::exp(static_cast<double>(row[v] - top));
      total += std::log(sum) + top - row[run.token(j + 1)];
    }
  }
  for (std::size_t l = 0; l < s.zero.size(); ++l) {
    if (!s.zero[l].empty() && s.seen[l] != run.chunks()) throw std::runtime_error("layer " + std::to_string(l) + ": the evaluation never showed kqv_out-" + std::to_string(l));
  }
  return total / static_cast<double>(predicted_tokens());
}

}  // namespace calibrate
