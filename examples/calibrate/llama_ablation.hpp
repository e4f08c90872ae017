// Ablation through llama.cpp: the mean next-token negative log-likelihood of a
// text with chosen query heads removed from the forward pass (the loss
// measurement for nashprune/loss_interaction.hpp).
//
// A head is removed by zeroing its columns of "kqv_out-N" (the concatenated head
// outputs, tokens × n_head·head_dim_v, the input of attn_output) in llama.cpp's
// evaluation callback, which runs after the node is computed and before its
// consumers: attn_output has no bias, so this is exactly the forward pass of the
// model pruned of those heads (up to the summation order of the projection).
// The NLL averages −log softmax(logits_t)[token_{t+1}] over the positions t ≥
// score_from of every evaluated chunk (each chunk starts a sequence with BOS, as
// calibrate does). llama-perplexity scores from t = n_ctx/2 on: with score_from =
// ctx/2 the NLL is the log of its perplexity on the same chunks (checked in tests).
// Memory: one context's logits, whatever the number of tokens.
//
// Whole blocks (block_ref) are removed by zeroing their contribution to the
// residual stream: the product of attn_output (attention block) or ffn_down (MLP
// block) with its input, found as the MUL_MAT node whose weight is
// blk.N.attn_output.weight / blk.N.ffn_down.weight (the names llama.cpp's llama and
// deci graphs give the weights; their result nodes have no common name). The
// residual add then passes its input through unchanged, exactly as in the model
// written by `nashprune prune --plan` without that block (an attention-free layer,
// a zero FFN stub, or the layer gone). A layer whose projection has a bias is
// refused: zeroing the product would leave the bias in.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <span>

#include <nashprune/selection_items.hpp>

#include "calibrate/text_source.hpp"

namespace calibrate {

struct ablation_options : text_source {
  std::int64_t score_from = 0;  // first position of a chunk whose prediction counts, in [0, context - 2]
};

/// A query head of a layer.
struct head_ref {
  std::int64_t layer = 0;
  std::int64_t head = 0;
};

/// A whole block of a layer: its attention (attention_block), its MLP (mlp_block),
/// or both (whole_layer); the container kinds of nashprune/selection_items.hpp.
struct block_ref {
  std::int64_t layer = 0;
  nashprune::item_kind part = nashprune::item_kind::whole_layer;
};

/// The model and the tokenised text, loaded once; mean_nll evaluates one removal set.
class ablation_session {
 public:
  /// Throws std::invalid_argument for bad options, an unsupported architecture or a
  /// text shorter than one context; std::runtime_error when llama.cpp fails.
  explicit ablation_session(const ablation_options& options);
  ~ablation_session();

  /// Mean NLL (nats per predicted token) with `removed` zeroed. Throws
  /// std::invalid_argument for a head out of range.
  [[nodiscard]] double mean_nll(std::span<const head_ref> removed);
  /// Mean NLL with `heads` and whole `blocks` removed. Throws std::invalid_argument
  /// for a layer out of range, a block the layer lacks (attention of an
  /// attention-free layer) or whose projection has a bias.
  [[nodiscard]] double mean_nll(std::span<const head_ref> heads, std::span<const block_ref> blocks);
  [[nodiscard]] std::int64_t predicted_tokens() const;
  /// Query heads per layer (0: attention-free).
  [[nodiscard]] std::span<const std::int64_t> heads_per_layer() const;

 private:
  struct state;
  std::unique_ptr<state> state_;  // owns the model and context: a session is not copied
};

}  // namespace calibrate
