// See llama_text_run.hpp.
#include "calibrate/llama_text_run.hpp"

#include "gguf/llama_model.hpp"

#include <ggml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <span>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>

namespace calibrate {
namespace {

std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::invalid_argument("cannot read the text file " + path.string());
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void quiet_log(ggml_log_level level, const char* text, void*) {
  if (level == GGML_LOG_LEVEL_ERROR) std::fputs(text, stderr);
}

// llama_tokenize into room for a token per byte (and the BOS), as llama-perplexity
// gives it; a second call only if llama.cpp asks for more room (it returns −count).
std::vector<llama_token> tokenize(const llama_vocab* vocab, std::string_view text, bool add_bos) {
  std::vector<llama_token> tokens(text.size() + 2);
  const auto call = [&] {
    return llama_tokenize(vocab, text.data(), static_cast<std::int32_t>(text.size()), tokens.data(), static_cast<std::int32_t>(tokens.size()),
                          add_bos, false);
  };
  std::int32_t count = call();
  if (count < 0) {
    tokens.resize(static_cast<std::size_t>(-count));
    count = call();
  }
  if (count < 0) throw std::runtime_error("llama.cpp could not tokenize " + std::to_string(text.size()) + " bytes");
  tokens.resize(static_cast<std::size_t>(count));
  return tokens;
}

}  // namespace

std::vector<llama_token> tokenize_text(const llama_vocab* vocab, std::string_view text, bool add_bos, std::size_t wanted) {
  if (wanted == 0) return tokenize(vocab, text, add_bos);
  // Prefixes ending at a line break, from about 4 bytes per wanted token on,
  // doubling: tokenizers merge within words, so only the last tokens of a prefix
  // depend on where it is cut; two cuts that agree on the first `wanted` tokens
  // show that neither cut reaches them.
  std::vector<llama_token> earlier;
  for (std::size_t length = 4 * wanted;; length *= 2) {
    const std::size_t line_end = length >= text.size() ? std::string_view::npos : text.find('\n', length);
    if (line_end == std::string_view::npos || line_end + 1 >= text.size()) {
      auto tokens = tokenize(vocab, text, add_bos);
      tokens.resize(std::min(tokens.size(), wanted));
      return tokens;
    }
    length = line_end + 1;
    auto tokens = tokenize(vocab, text.substr(0, length), add_bos);
    if (tokens.size() < wanted) continue;
    const auto first = [&](const std::vector<llama_token>& v) { return std::span(v).first(wanted); };
    if (earlier.size() >= wanted && std::ranges::equal(first(earlier), first(tokens))) {
      tokens.resize(wanted);
      return tokens;
    }
    earlier = std::move(tokens);
  }
}

std::optional<std::int64_t> suffix_number(std::string_view name, std::string_view prefix) {
  if (!name.starts_with(prefix)) return std::nullopt;
  std::int64_t n = 0;
  const auto* first = name.data() + prefix.size();
  const auto* last = name.data() + name.size();
  const auto [end, ec] = std::from_chars(first, last, n);
  if (ec != std::errc{} || end != last) return std::nullopt;
  return n;
}

std::optional<std::int64_t> weight_layer(std::string_view name, std::string_view suffix) {
  const auto parts = gguf::split_layer_name(name);
  if (!parts || parts->suffix != suffix) return std::nullopt;
  return parts->layer;
}

struct llama_text_run::handles {
  llama_model* model = nullptr;
  llama_context* ctx = nullptr;
  llama_batch batch{};
  ~handles() {
    if (batch.token != nullptr) llama_batch_free(batch);
    if (ctx != nullptr) llama_free(ctx);
    if (model != nullptr) llama_model_free(model);
  }
};

void check_chunking(std::int64_t context, std::int64_t max_tokens) {
  if (context < 8 || context > (1 << 20)) throw std::invalid_argument("--ctx must be in [8, 2^20], got " + std::to_string(context));
  if (max_tokens < 0) throw std::invalid_argument("--tokens must not be negative");
  if (max_tokens > 0 && max_tokens < context) {
    throw std::invalid_argument("--tokens " + std::to_string(max_tokens) + " is less than one context (--ctx " + std::to_string(context) + ")");
  }
}

llama_text_run::llama_text_run(const text_run_options& o, bool float_cache) : handles_(std::make_unique<handles>()), context_(o.context) {
  check_chunking(o.context, o.max_tokens);
  const std::string text = read_text(o.text);

  llama_log_set(quiet_log, nullptr);
  llama_backend_init();
  auto& h = *handles_;
  auto mparams = llama_model_default_params();
  if (o.writable_weights) {
    mparams.load_mode = LLAMA_LOAD_MODE_NONE;
    mparams.use_extra_bufts = false;
  }
  h.model = llama_model_load_from_file(o.model.c_str(), mparams);
  if (h.model == nullptr) throw std::runtime_error("llama.cpp could not load " + o.model.string());
  const llama_vocab* vocab = llama_model_get_vocab(h.model);
  const bool add_bos = llama_vocab_get_add_bos(vocab);
  n_vocab_ = llama_vocab_n_tokens(vocab);
  // Only as much of the text as the chunks need: llama.cpp's tokenizers can cost
  // more than the evaluation on a long text (its SPM byte fallback reallocates its
  // output per unknown character, quadratic in the text's length).
  const auto wanted = static_cast<std::size_t>(o.max_tokens / o.context * o.context);
  try {
    tokens_ = tokenize_text(vocab, text, add_bos, wanted);
  } catch (const std::runtime_error& e) {
    throw std::runtime_error(std::string(e.what()) + " of " + o.text.string());
  }
  chunks_ = static_cast<std::int64_t>(tokens_.size()) / o.context;
  if (chunks_ == 0) {
    throw std::invalid_argument("the text " + o.text.string() + " is shorter than one context: " + std::to_string(tokens_.size()) +
                                " tokens, --ctx " + std::to_string(o.context));
  }
  if (o.max_tokens > 0) chunks_ = std::min(chunks_, o.max_tokens / o.context);
  // Each chunk starts a sequence, as llama-perplexity does.
  if (add_bos) {
    for (std::int64_t c = 0; c < chunks_; ++c) tokens_[static_cast<std::size_t>(c * o.context)] = llama_vocab_bos(vocab);
  }

  auto cparams = llama_context_default_params();
  cparams.n_ctx = cparams.n_batch = cparams.n_ubatch = static_cast<std::uint32_t>(o.context);
  cparams.n_seq_max = 1;
  const int threads = o.threads > 0 ? o.threads : static_cast<int>(std::max(1U, std::thread::hardware_concurrency()));
  cparams.n_threads = cparams.n_threads_batch = threads;
  cparams.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
  if (float_cache) cparams.type_k = cparams.type_v = GGML_TYPE_F32;
  cparams.cb_eval = o.callback;
  cparams.cb_eval_user_data = o.callback_data;
  cparams.no_perf = true;
  h.ctx = llama_init_from_model(h.model, cparams);
  if (h.ctx == nullptr) throw std::runtime_error("llama.cpp could not create a context of " + std::to_string(o.context) + " tokens");
  h.batch = llama_batch_init(static_cast<std::int32_t>(o.context), 0, 1);
}

llama_text_run::~llama_text_run() = default;

int llama_text_run::decode_chunk(std::int64_t c) {
  auto& h = *handles_;
  llama_memory_clear(llama_get_memory(h.ctx), true);
  h.batch.n_tokens = static_cast<std::int32_t>(context_);
  for (std::int64_t j = 0; j < context_; ++j) {
    h.batch.token[j] = tokens_[static_cast<std::size_t>(c * context_ + j)];
    h.batch.pos[j] = static_cast<llama_pos>(j);
    h.batch.n_seq_id[j] = 1;
    h.batch.seq_id[j][0] = 0;
    h.batch.logits[j] = 1;  // every token is an output, so the last layer keeps every row
  }
  return llama_decode(h.ctx, h.batch);
}

llama_token llama_text_run::token(std::int64_t j) const { return handles_->batch.token[j]; }

const float* llama_text_run::logits() const { return llama_get_logits(handles_->ctx); }

double llama_text_run::chunk_nll(std::int64_t score_from) const {
  const float* all = logits();
  double total = 0;
  for (std::int64_t j = score_from; j + 1 < context_; ++j) {
    const float* row = all + j * n_vocab_;
    const float top = *std::max_element(row, row + n_vocab_);
    double sum = 0;
    for (std::int32_t v = 0; v < n_vocab_; ++v) sum += std::exp(static_cast<double>(row[v] - top));
    total += std::log(sum) + top - row[token(j + 1)];
  }
  return total;
}

}  // namespace calibrate
