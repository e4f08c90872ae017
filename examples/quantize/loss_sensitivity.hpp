// The loss of a text through a model with one weight tensor replaced at a time:
// what quantizing that tensor alone costs, measured as `nashprune ablate` measures
// a removal (mean next-token NLL over the chunks of calibrate::llama_text_run).
//
// The weights are read into the process's own buffers (no mapping, no repacking)
// and a replaced tensor is written with ggml_backend_tensor_set, evaluated, and
// restored. The tensors are found by name among the inputs of the graph's nodes
// (llama.cpp's evaluation callback, asked about every node and answering no, so
// the graph is not split). Every replaced tensor must be stored as F32 in the
// model the evaluation loads, so that it holds any values exactly.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "calibrate/text_source.hpp"

namespace quantize {

class weight_swap_loss {
 public:
  /// Throws std::invalid_argument for bad chunking or score_from outside
  /// [0, context − 2], std::runtime_error when llama.cpp fails.
  weight_swap_loss(const calibrate::text_source& source, std::int64_t score_from, std::vector<std::string> weights);
  ~weight_swap_loss();
  weight_swap_loss(const weight_swap_loss&) = delete;
  weight_swap_loss& operator=(const weight_swap_loss&) = delete;

  /// Mean NLL (nats per predicted token) of the model as loaded.
  [[nodiscard]] double mean_nll();
  /// Mean NLL with the weight `name` (one of those given at construction) holding `values`
  /// (ggml's order: row after row); the weight is restored afterwards. Throws
  /// std::invalid_argument when the evaluation never reads `name` or it is not
  /// an F32 tensor of values.size() elements.
  [[nodiscard]] double mean_nll_with(const std::string& name, std::span<const float> values);
  [[nodiscard]] std::int64_t predicted_tokens() const;

 private:
  struct state;
  std::unique_ptr<state> state_;
};

}  // namespace quantize
