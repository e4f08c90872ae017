// Reading the shape of a llama-family model from its metadata and tensors.
#include "gguf/llama_model.hpp"

#include <charconv>

namespace gguf {
namespace {

[[noreturn]] void fail(const reader& model, const std::string& what) {
  throw format_error(model.name() + ": " + what);
}

std::int64_t require_int(const reader& model, const std::string& key) {
  const value* v = model.find(key);
  if (v == nullptr) fail(model, "missing metadata key '" + key + "'");
  if (!is_integer(v->type)) fail(model, "metadata key '" + key + "' is a " + std::string(type_name(v->type)) + ", expected an integer");
  return v->as_int();
}

// A per-layer count: a scalar (same for every layer) or an array of n_layer integers.
std::vector<std::int64_t> per_layer(const reader& model, const std::string& key, std::int64_t n_layer,
                                    const std::vector<std::int64_t>* fallback) {
  const value* v = model.find(key);
  if (v == nullptr) {
    if (fallback != nullptr) return *fallback;
    fail(model, "missing metadata key '" + key + "'");
  }
  if (!v->is_array()) return std::vector<std::int64_t>(static_cast<std::size_t>(n_layer), require_int(model, key));
  const auto& items = v->as_array();
  if (static_cast<std::int64_t>(items.size()) != n_layer) {
    fail(model, "metadata key '" + key + "' has " + std::to_string(items.size()) + " entries, expected block_count = " +
                    std::to_string(n_layer));
  }
  if (!is_integer(v->element_type)) fail(model, "metadata key '" + key + "' is not an array of integers");
  std::vector<std::int64_t> out;
  for (const auto& item : items) {
    const auto n = item.as_int();
    if (n < 0) fail(model, "metadata key '" + key + "' holds a negative count");
    out.push_back(n);
  }
  return out;
}

void expect_dims(const reader& model, const std::string& name, std::vector<std::int64_t> dims, bool required) {
  const tensor_view* t = model.find_tensor(name);
  if (t == nullptr) {
    if (required) fail(model, "missing tensor '" + name + "'");
    return;
  }
  if (t->dims != dims) {
    std::string want;
    std::string have;
    for (auto d : dims) want += (want.empty() ? "" : " x ") + std::to_string(d);
    for (auto d : t->dims) have += (have.empty() ? "" : " x ") + std::to_string(d);
    fail(model, "tensor '" + name + "' is " + have + ", expected " + want + " from the metadata");
  }
}

}  // namespace

bool llama_shape::uniform() const {
  for (const auto& l : layers) {
    if (!(l == layers.front())) return false;
  }
  return true;
}

llama_shape llama_shape::read(const reader& model) {
  llama_shape s;
  const value* arch = model.find("general.architecture");
  if (arch == nullptr || arch->type != value_type::string) fail(model, "missing general.architecture");
  s.architecture = arch->as_string();
  if (s.architecture != "llama" && s.architecture != "deci") {
    fail(model, "architecture '" + s.architecture + "' is not supported (llama and deci are)");
  }
  const std::int64_t n_layer = require_int(model, s.key("block_count"));
  if (n_layer < 1 || n_layer > 4096) fail(model, s.key("block_count") + " = " + std::to_string(n_layer) + " is out of range");
  s.n_embd = require_int(model, s.key("embedding_length"));
  if (s.n_embd < 1) fail(model, s.key("embedding_length") + " must be positive");
  const auto heads = per_layer(model, s.key("attention.head_count"), n_layer, nullptr);
  const auto kv = per_layer(model, s.key("attention.head_count_kv"), n_layer, &heads);
  const auto ff = per_layer(model, s.key("feed_forward_length"), n_layer, nullptr);
  for (std::int64_t i = 0; i < n_layer; ++i) {
    const auto u = static_cast<std::size_t>(i);
    s.layers.push_back({heads[u], kv[u], ff[u]});
    if (kv[u] > 0 && heads[u] % kv[u] != 0) {
      fail(model, "layer " + std::to_string(i) + ": head_count " + std::to_string(heads[u]) +
                      " is not a multiple of head_count_kv " + std::to_string(kv[u]));
    }
    if (heads[u] > 0 && kv[u] == 0) fail(model, "layer " + std::to_string(i) + ": linear-attention layers are not supported");
  }
  if (heads[0] == 0) fail(model, "layer 0 has no attention heads (llama.cpp derives the head size from layer 0)");
  s.head_dim_k = model.find(s.key("attention.key_length")) ? require_int(model, s.key("attention.key_length")) : s.n_embd / heads[0];
  s.head_dim_v = model.find(s.key("attention.value_length")) ? require_int(model, s.key("attention.value_length")) : s.n_embd / heads[0];
  if (s.head_dim_k < 1 || s.head_dim_v < 1) fail(model, "head size must be positive");

  const tensor_view& embd = model.tensor("token_embd.weight");
  if (embd.dims.size() != 2 || embd.dims[0] != s.n_embd) fail(model, "token_embd.weight does not have n_embd rows of length " + std::to_string(s.n_embd));
  s.n_vocab = embd.dims[1];

  for (std::int64_t i = 0; i < n_layer; ++i) {
    const auto& l = s.layers[static_cast<std::size_t>(i)];
    const bool attention = l.has_attention();
    expect_dims(model, layer_tensor(i, "attn_norm.weight"), {s.n_embd}, attention);
    expect_dims(model, layer_tensor(i, "attn_q.weight"), {s.n_embd, s.head_dim_k * l.n_head}, attention);
    expect_dims(model, layer_tensor(i, "attn_k.weight"), {s.n_embd, s.head_dim_k * l.n_head_kv}, attention);
    expect_dims(model, layer_tensor(i, "attn_v.weight"), {s.n_embd, s.head_dim_v * l.n_head_kv}, attention);
    expect_dims(model, layer_tensor(i, "attn_output.weight"), {s.head_dim_v * l.n_head, s.n_embd}, attention);
    expect_dims(model, layer_tensor(i, "ffn_gate.weight"), {s.n_embd, l.n_ff}, true);
    expect_dims(model, layer_tensor(i, "ffn_up.weight"), {s.n_embd, l.n_ff}, true);
    expect_dims(model, layer_tensor(i, "ffn_down.weight"), {l.n_ff, s.n_embd}, true);
  }
  for (const auto& t : model.tensors()) {
    if (auto split = split_layer_name(t.name); split && (split->layer < 0 || split->layer >= n_layer)) {
      fail(model, "tensor '" + t.name + "' belongs to no layer (block_count " + std::to_string(n_layer) + ")");
    }
  }
  return s;
}

std::optional<layer_tensor_name> split_layer_name(std::string_view name) {
  if (!name.starts_with("blk.")) return std::nullopt;
  const std::string_view rest = name.substr(4);
  std::int64_t layer = 0;
  const auto [end, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), layer);
  if (ec != std::errc() || end == rest.data() || end == rest.data() + rest.size() || *end != '.') return std::nullopt;
  return layer_tensor_name{layer, std::string(end + 1, rest.data() + rest.size())};
}

std::string layer_tensor(std::int64_t layer, std::string_view suffix) {
  return "blk." + std::to_string(layer) + "." + std::string(suffix);
}

}  // namespace gguf
