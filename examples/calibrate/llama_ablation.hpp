// Ablation through llama.cpp: the mean next-token negative log-likelihood of a
// text with chosen query heads removed from the forward pass (issue 7's loss
// measurement for nashprune/loss_interaction.hpp).
//
// A head is removed by zeroing its columns of "kqv_out-N" (the concatenated head
// outputs, tokens × n_head·head_dim_v, the input of attn_output) in llama.cpp's
// evaluation callback, which runs after the node is computed and before its
// consumers: attn_output has no bias, so this is exactly the forward pass of the
// model pruned of those heads (up to the summation order of the projection).
// The NLL averages −log softmax(logits_t)[token_{t+1}] over every position of
// every evaluated chunk (each chunk starts a sequence with BOS, as calibrate does).
// Memory: one context's logits, whatever the number of tokens.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <span>

namespace calibrate {

struct ablation_options {
  std::filesystem::path model;
  std::filesystem::path text;
  std::int64_t max_tokens = 0;  // 0: every whole chunk of the text
  std::int64_t context = 128;
  int threads = 0;  // 0: hardware concurrency
};

/// A query head of a layer.
struct head_ref {
  std::int64_t layer = 0;
  std::int64_t head = 0;
};

/// The model and the tokenised text, loaded once; mean_nll evaluates one removal set.
class ablation_session {
 public:
  /// Throws std::invalid_argument for bad options, an unsupported architecture or a
  /// text shorter than one context; std::runtime_error when llama.cpp fails.
  explicit ablation_session(const ablation_options& options);
  ~ablation_session();
  ablation_session(const ablation_session&) = delete;
  ablation_session& operator=(const ablation_session&) = delete;

  /// Mean NLL (nats per predicted token) with `removed` zeroed. Throws
  /// std::invalid_argument for a head out of range.
  [[nodiscard]] double mean_nll(std::span<const head_ref> removed);
  [[nodiscard]] std::int64_t predicted_tokens() const;
  /// Query heads per layer (0: attention-free).
  [[nodiscard]] std::span<const std::int64_t> heads_per_layer() const;

 private:
  struct state;
  std::unique_ptr<state> state_;
};

}  // namespace calibrate
