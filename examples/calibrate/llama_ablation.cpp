// Ablation through llama.cpp's evaluation callback (see llama_ablation.hpp).
#include "calibrate/llama_ablation.hpp"

#include "gguf/llama_model.hpp"

#include <ggml-backend.h>
#include <ggml.h>
#include <llama.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace calibrate {
namespace {

void quiet_log(ggml_log_level level, const char* text, void*) {
  if (level == GGML_LOG_LEVEL_ERROR) std::fputs(text, stderr);
}

/// "kqv_out-12" -> 12.
std::int64_t kqv_out_layer(std::string_view name) {
  constexpr std::string_view prefix = "kqv_out-";
  if (!name.starts_with(prefix)) return -1;
  std::int64_t n = -1;
  const auto [end, ec] = std::from_chars(name.data() + prefix.size(), name.data() + name.size(), n);
  return ec == std::errc{} && end == name.data() + name.size() ? n : -1;
}

}  // namespace

struct ablation_session::state {
  std::vector<std::int64_t> heads;  // query heads per layer
  std::int64_t head_dim_v = 0;
  std::vector<std::vector<std::int64_t>> zero;  // per layer, the heads removed in this pass
  std::vector<std::int64_t> seen;               // per layer, kqv_out nodes zeroed in this pass
  std::string error;
  llama_model* model = nullptr;
  llama_context* ctx = nullptr;
  llama_batch batch{};
  std::vector<llama_token> tokens;
  std::int64_t chunks = 0, context = 0;
  bool add_bos = false;
  llama_token bos = 0;
  std::int32_t n_vocab = 0;

  static bool callback(ggml_tensor* t, bool ask, void* user) {
    auto* self = static_cast<state*>(user);
    const auto layer = kqv_out_layer(ggml_get_name(t));
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
  if (o.context < 8 || o.context > (1 << 20)) throw std::invalid_argument("--ctx must be in [8, 2^20], got " + std::to_string(o.context));
  if (o.max_tokens < 0) throw std::invalid_argument("--tokens must not be negative");
  if (o.max_tokens > 0 && o.max_tokens < o.context) throw std::invalid_argument("--tokens is less than one context (--ctx)");
  auto& s = *state_;
  {
    const auto file = gguf::reader::open(o.model);
    const auto shape = gguf::llama_shape::read(file);
    for (const auto& l : shape.layers) s.heads.push_back(l.n_head);
    s.head_dim_v = shape.head_dim_v;
  }
  s.zero.resize(s.heads.size());
  s.seen.resize(s.heads.size());
  std::ifstream in(o.text, std::ios::binary);
  if (!in) throw std::invalid_argument("cannot read the text file " + o.text.string());
  std::ostringstream text_stream;
  text_stream << in.rdbuf();
  const std::string text = text_stream.str();

  llama_log_set(quiet_log, nullptr);
  llama_backend_init();
  s.model = llama_model_load_from_file(o.model.c_str(), llama_model_default_params());
  if (s.model == nullptr) throw std::runtime_error("llama.cpp could not load " + o.model.string());
  const llama_vocab* vocab = llama_model_get_vocab(s.model);
  s.add_bos = llama_vocab_get_add_bos(vocab);
  s.bos = llama_vocab_bos(vocab);
  s.n_vocab = llama_vocab_n_tokens(vocab);
  const auto n_needed = -llama_tokenize(vocab, text.data(), static_cast<std::int32_t>(text.size()), nullptr, 0, s.add_bos, false);
  s.tokens.resize(static_cast<std::size_t>(std::max<std::int32_t>(n_needed, 0)));
  if (!s.tokens.empty() && llama_tokenize(vocab, text.data(), static_cast<std::int32_t>(text.size()), s.tokens.data(),
                                          static_cast<std::int32_t>(s.tokens.size()), s.add_bos, false) < 0) {
    throw std::runtime_error("llama.cpp could not tokenize " + o.text.string());
  }
  s.context = o.context;
  s.chunks = static_cast<std::int64_t>(s.tokens.size()) / o.context;
  if (s.chunks == 0) throw std::invalid_argument("the text " + o.text.string() + " is shorter than one context (--ctx " + std::to_string(o.context) + ")");
  if (o.max_tokens > 0) s.chunks = std::min(s.chunks, o.max_tokens / o.context);

  auto cparams = llama_context_default_params();
  cparams.n_ctx = cparams.n_batch = cparams.n_ubatch = static_cast<std::uint32_t>(o.context);
  cparams.n_seq_max = 1;
  const int threads = o.threads > 0 ? o.threads : static_cast<int>(std::max(1U, std::thread::hardware_concurrency()));
  cparams.n_threads = cparams.n_threads_batch = threads;
  cparams.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
  cparams.cb_eval = &state::callback;
  cparams.cb_eval_user_data = &s;
  cparams.no_perf = true;
  s.ctx = llama_init_from_model(s.model, cparams);
  if (s.ctx == nullptr) throw std::runtime_error("llama.cpp could not create a context of " + std::to_string(o.context) + " tokens");
  s.batch = llama_batch_init(static_cast<std::int32_t>(o.context), 0, 1);
}

ablation_session::~ablation_session() {
  if (state_->batch.token != nullptr) llama_batch_free(state_->batch);
  if (state_->ctx != nullptr) llama_free(state_->ctx);
  if (state_->model != nullptr) llama_model_free(state_->model);
}

std::int64_t ablation_session::predicted_tokens() const { return state_->chunks * (state_->context - 1); }

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
  auto& batch = s.batch;
  for (std::int64_t c = 0; c < s.chunks; ++c) {
    llama_memory_clear(llama_get_memory(s.ctx), true);
    batch.n_tokens = static_cast<std::int32_t>(s.context);
    for (std::int64_t j = 0; j < s.context; ++j) {
      batch.token[j] = s.tokens[static_cast<std::size_t>(c * s.context + j)];
      batch.pos[j] = static_cast<llama_pos>(j);
      batch.n_seq_id[j] = 1;
      batch.seq_id[j][0] = 0;
      batch.logits[j] = 1;
    }
    if (s.add_bos) batch.token[0] = s.bos;
    const auto status = llama_decode(s.ctx, batch);
    if (!s.error.empty()) throw std::runtime_error(s.error);
    if (status != 0) throw std::runtime_error("llama_decode failed with status " + std::to_string(status));
    const float* logits = llama_get_logits(s.ctx);
    for (std::int64_t j = 0; j + 1 < s.context; ++j) {
      const float* row = logits + j * s.n_vocab;
      const float top = *std::max_element(row, row + s.n_vocab);
      double sum = 0;
      for (std::int32_t v = 0; v < s.n_vocab; ++v) sum += std::exp(static_cast<double>(row[v] - top));
      total += std::log(sum) + top - row[batch.token[j + 1]];
    }
  }
  for (std::size_t l = 0; l < s.zero.size(); ++l) {
    if (!s.zero[l].empty() && s.seen[l] != s.chunks) throw std::runtime_error("layer " + std::to_string(l) + ": the evaluation never showed kqv_out-" + std::to_string(l));
  }
  return total / static_cast<double>(predicted_tokens());
}

}  // namespace calibrate
