// One pass of a text through a model with llama.cpp, chunk by chunk, as both
// `nashprune calibrate` (llama_capture) and `nashprune ablate` (llama_ablation)
// need it: the options checked, the model loaded, the text tokenised, a context
// whose evaluation callback the caller chooses, and each chunk decoded as a
// sequence of its own that starts with BOS (as llama-perplexity does) with every
// position an output.
#pragma once

#include <llama.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string_view>
#include <vector>

#include "calibrate/text_source.hpp"

namespace calibrate {

/// "attn_norm-12" with prefix "attn_norm-" -> 12 (a graph node's layer).
std::optional<std::int64_t> suffix_number(std::string_view name, std::string_view prefix);

/// "blk.12.attn_output.weight" with suffix "attn_output.weight" -> 12 (a weight's layer).
std::optional<std::int64_t> weight_layer(std::string_view name, std::string_view suffix);

/// Throws std::invalid_argument naming --ctx or --tokens when they cannot chunk a text.
void check_chunking(std::int64_t context, std::int64_t max_tokens);

/// The tokens of `text` (after a BOS when add_bos), or, with wanted > 0, its first
/// `wanted` tokens (fewer when the whole text has fewer) as tokenizing the whole
/// text gives them, from a prefix: the shortest prefix ending at a line break, of
/// at least 4·wanted bytes doubling, whose first `wanted` tokens equal those of the
/// next such prefix (the whole text when no line break is left).
std::vector<llama_token> tokenize_text(const llama_vocab* vocab, std::string_view text, bool add_bos, std::size_t wanted);

struct text_run_options : text_source {
  ggml_backend_sched_eval_callback callback = nullptr;
  void* callback_data = nullptr;
  // The weights read into the process's own buffers, in the file's layout (no
  // mapping, no repacking), so ggml_backend_tensor_set can replace them.
  bool writable_weights = false;
};

class llama_text_run {
 public:
  /// Throws std::invalid_argument for bad --ctx/--tokens or a text shorter than
  /// one context, std::runtime_error when llama.cpp fails.
  /// float_cache: K and V cached in F32 (else F16, as llama-perplexity runs).
  explicit llama_text_run(const text_run_options& options, bool float_cache = false);
  ~llama_text_run();

  [[nodiscard]] std::int64_t chunks() const { return chunks_; }
  [[nodiscard]] std::int64_t context() const { return context_; }
  [[nodiscard]] std::int32_t n_vocab() const { return n_vocab_; }
  /// Decodes chunk `c` (the memory cleared first); llama_decode's status.
  [[nodiscard]] int decode_chunk(std::int64_t c);
  /// The token at position j of the chunk last decoded (BOS at 0 when the model adds it).
  [[nodiscard]] llama_token token(std::int64_t j) const;
  /// Logits of the chunk last decoded, context × n_vocab.
  [[nodiscard]] const float* logits() const;
  /// Σ over positions j in [score_from, context − 1) of −log softmax(logits_j)[token_{j+1}]
  /// for the chunk last decoded.
  [[nodiscard]] double chunk_nll(std::int64_t score_from) const;

 private:
  struct handles;
  std::unique_ptr<handles> handles_;  // owns the model and context: a run is not copied
  std::vector<llama_token> tokens_;
  std::int64_t chunks_ = 0;
  std::int64_t context_ = 0;
  std::int32_t n_vocab_ = 0;
};

}  // namespace calibrate
