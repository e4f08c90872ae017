// The shape of a llama-family GGUF model (architectures "llama" and "deci"),
// read from its metadata and checked against its tensors: per-layer head, KV
// head and FFN counts, head sizes, and which tensors belong to which layer.
#pragma once

#include "gguf/gguf.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace gguf {

struct layer_shape {
  std::int64_t n_head = 0;     // query heads (0: attention-free layer)
  std::int64_t n_head_kv = 0;  // KV heads
  std::int64_t n_ff = 0;       // FFN width

  [[nodiscard]] bool has_attention() const { return n_head > 0; }
  [[nodiscard]] std::int64_t group_size() const { return n_head_kv > 0 ? n_head / n_head_kv : 0; }
  friend bool operator==(const layer_shape&, const layer_shape&) = default;
};

struct llama_shape {
  std::string architecture;  // "llama" or "deci"
  std::int64_t n_embd = 0;
  std::int64_t n_vocab = 0;
  std::int64_t head_dim_k = 0;  // per-head size of Q and K
  std::int64_t head_dim_v = 0;  // per-head size of V
  std::vector<layer_shape> layers;

  [[nodiscard]] std::int64_t n_layer() const { return static_cast<std::int64_t>(layers.size()); }
  [[nodiscard]] bool uniform() const;
  /// The key `<architecture>.<suffix>`.
  [[nodiscard]] std::string key(std::string_view suffix) const { return architecture + "." + std::string(suffix); }

  /// Reads and checks the shape. Throws format_error (naming the file and key)
  /// for an unsupported architecture, a missing key, an array of the wrong
  /// length, head counts that are not a multiple of the KV head counts, or a
  /// layer tensor whose shape disagrees.
  [[nodiscard]] static llama_shape read(const reader& model);
};

/// "blk.7.attn_q.weight" -> {7, "attn_q.weight"}; nothing for non-layer tensors.
struct layer_tensor_name {
  std::int64_t layer;
  std::string suffix;
};
[[nodiscard]] std::optional<layer_tensor_name> split_layer_name(std::string_view name);
[[nodiscard]] std::string layer_tensor(std::int64_t layer, std::string_view suffix);

/// Per-layer metadata keys (arrays with one entry per layer in deci models).
inline constexpr std::string_view per_layer_keys[] = {"attention.head_count", "attention.head_count_kv",
                                                      "feed_forward_length"};

}  // namespace gguf
