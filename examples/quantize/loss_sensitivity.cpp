// See loss_sensitivity.hpp.
#include "quantize/loss_sensitivity.hpp"

#include <ggml-backend.h>
#include <ggml.h>

#include <map>
#include <optional>
#include <stdexcept>

#include "calibrate/llama_text_run.hpp"

namespace quantize {

struct weight_swap_loss::state {
  std::map<std::string, ggml_tensor*, std::less<>> weights;  // name -> the model's tensor once the graph has read it
  std::int64_t score_from = 0;
  std::optional<calibrate::llama_text_run> run;  // constructed last: its context calls back into this state

  static bool callback(ggml_tensor* t, bool ask, void* user) {
    if (!ask) return true;
    auto* self = static_cast<state*>(user);
    for (auto* source : t->src) {
      if (source == nullptr) continue;
      if (const auto it = self->weights.find(std::string_view(ggml_get_name(source))); it != self->weights.end()) it->second = source;
    }
    return false;  // nothing to look at after the node: the graph stays whole
  }

  double mean_nll() {
    double total = 0;
    for (std::int64_t c = 0; c < run->chunks(); ++c) {
      if (const auto status = run->decode_chunk(c); status != 0) throw std::runtime_error("llama_decode failed with status " + std::to_string(status));
      total += run->chunk_nll(score_from);
    }
    return total / static_cast<double>(run->chunks() * (run->context() - 1 - score_from));
  }
};

weight_swap_loss::weight_swap_loss(const calibrate::text_source& source, std::int64_t score_from, std::vector<std::string> weights)
    : state_(std::make_unique<state>()) {
  calibrate::check_chunking(source.context, source.max_tokens);
  if (score_from < 0 || score_from > source.context - 2) {
    throw std::invalid_argument("--score-from must be in [0, " + std::to_string(source.context - 2) + "] (--ctx " + std::to_string(source.context) +
                                " minus 2), got " + std::to_string(score_from));
  }
  state_->score_from = score_from;
  for (auto& name : weights) state_->weights.emplace(std::move(name), nullptr);
  calibrate::text_run_options options{source, &state::callback, state_.get()};
  options.writable_weights = true;
  state_->run.emplace(options);
}

weight_swap_loss::~weight_swap_loss() = default;

double weight_swap_loss::mean_nll() { return state_->mean_nll(); }

std::int64_t weight_swap_loss::predicted_tokens() const {
  return state_->run->chunks() * (state_->run->context() - 1 - state_->score_from);
}

double weight_swap_loss::mean_nll_with(const std::string& name, std::span<const float> values) {
  auto& s = *state_;
  if (s.weights.find(name) == s.weights.end()) throw std::invalid_argument(name + " is not one of the weights this evaluation swaps");
  if (s.weights.at(name) == nullptr) (void)s.mean_nll();  // the first pass finds the weights
  ggml_tensor* t = s.weights.at(name);
  if (t == nullptr) throw std::invalid_argument("the evaluation never reads " + name);
  if (t->type != GGML_TYPE_F32 || ggml_nelements(t) != static_cast<std::int64_t>(values.size()) || !ggml_is_contiguous(t)) {
    throw std::invalid_argument(name + " is not a contiguous F32 tensor of " + std::to_string(values.size()) + " values in the loaded model");
  }
  std::vector<float> original(values.size());
  ggml_backend_tensor_get(t, original.data(), 0, ggml_nbytes(t));
  ggml_backend_tensor_set(t, values.data(), 0, ggml_nbytes(t));
  try {
    const double nll = s.mean_nll();
    ggml_backend_tensor_set(t, original.data(), 0, ggml_nbytes(t));
    return nll;
  } catch (...) {
    ggml_backend_tensor_set(t, original.data(), 0, ggml_nbytes(t));
    throw;
  }
}

}  // namespace quantize
