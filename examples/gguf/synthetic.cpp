// The synthetic llama model with planted duplicate and near-zero heads.
#include "gguf/synthetic.hpp"

#include <cmath>
#include <cstdio>
#include <stdexcept>

#include "gguf/float_encode.hpp"
#include "gguf/llama_model.hpp"

namespace gguf {
namespace {

// splitmix64: fast and reproducible on every platform.
class random_stream {
 public:
  explicit random_stream(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  /// Uniform in [-scale, scale).
  float uniform(float scale) {
    return scale * (static_cast<float>(next() >> 40) * (2.0F / 16777216.0F) - 1.0F);
  }

 private:
  std::uint64_t state_;
};

std::vector<float> random_matrix(random_stream& rng, std::int64_t row_length, std::int64_t rows) {
  // Uniform with variance 1 / row_length, like a trained projection's scale.
  const float scale = std::sqrt(3.0F / static_cast<float>(row_length));
  std::vector<float> m(static_cast<std::size_t>(row_length * rows));
  for (auto& x : m) x = rng.uniform(scale);
  return m;
}

std::span<const std::byte> bytes_of(const std::vector<float>& v) { return std::as_bytes(std::span(v)); }

metadata synthetic_metadata(const synthetic_options& o) {
  std::vector<std::string> tokens = {"<unk>", "<s>", "</s>"};
  std::vector<std::int64_t> types = {2, 3, 3};  // unknown, control, control
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    tokens.emplace_back(name);
    types.push_back(6);  // byte
  }
  for (auto i = static_cast<std::int64_t>(tokens.size()); i < o.n_vocab; ++i) {
    tokens.push_back("<unused" + std::to_string(i) + ">");
    types.push_back(5);  // unused
  }
  const std::int64_t head_dim = o.n_embd / o.n_head;
  metadata kv;
  kv.emplace_back("general.architecture", value::string("llama"));
  kv.emplace_back("general.name", value::string("nashprune synthetic"));
  kv.emplace_back("llama.context_length", value::u32(2048));
  kv.emplace_back("llama.embedding_length", value::u32(static_cast<std::uint32_t>(o.n_embd)));
  kv.emplace_back("llama.feed_forward_length", value::u32(static_cast<std::uint32_t>(o.n_ff)));
  kv.emplace_back("llama.attention.head_count", value::u32(static_cast<std::uint32_t>(o.n_head)));
  kv.emplace_back("llama.attention.head_count_kv", value::u32(static_cast<std::uint32_t>(o.n_head_kv)));
  kv.emplace_back("llama.block_count", value::u32(static_cast<std::uint32_t>(o.n_layer)));
  kv.emplace_back("llama.rope.dimension_count", value::u32(static_cast<std::uint32_t>(head_dim)));
  kv.emplace_back("llama.attention.layer_norm_rms_epsilon", value::f32(1e-5F));
  kv.emplace_back("tokenizer.ggml.model", value::string("llama"));
  kv.emplace_back("tokenizer.ggml.tokens", value::string_array(tokens));
  kv.emplace_back("tokenizer.ggml.scores", value::f32_array(std::vector<float>(tokens.size(), 0.0F)));
  kv.emplace_back("tokenizer.ggml.token_type", value::int_array(value_type::int32, types));
  kv.emplace_back("tokenizer.ggml.unknown_token_id", value::u32(0));
  kv.emplace_back("tokenizer.ggml.bos_token_id", value::u32(1));
  kv.emplace_back("tokenizer.ggml.eos_token_id", value::u32(2));
  return kv;
}

void check(const synthetic_options& o) {
  auto positive = [](std::int64_t v, const char* name) {
    if (v < 1) throw std::invalid_argument(std::string("synthetic model: ") + name + " must be positive");
  };
  positive(o.n_layer, "n_layer");
  positive(o.n_embd, "n_embd");
  positive(o.n_head, "n_head");
  positive(o.n_head_kv, "n_head_kv");
  positive(o.n_ff, "n_ff");
  if (o.n_embd % o.n_head != 0 || (o.n_embd / o.n_head) % 2 != 0) {
    throw std::invalid_argument("synthetic model: n_embd must be n_head times an even head size");
  }
  if (o.n_head % o.n_head_kv != 0) throw std::invalid_argument("synthetic model: n_head must be a multiple of n_head_kv");
  if (o.n_vocab < 259) throw std::invalid_argument("synthetic model: n_vocab must be at least 259 (byte tokens)");
  for (auto l : o.planted_layers) {
    if (l < 0 || l >= o.n_layer) throw std::invalid_argument("synthetic model: planted layer " + std::to_string(l) + " out of range");
  }
}

}  // namespace

std::vector<planted_head> planted_heads(const synthetic_options& o) {
  check(o);
  std::vector<std::int64_t> layers = o.planted_layers;
  if (layers.empty()) layers = o.n_layer >= 3 ? std::vector<std::int64_t>{1, 2} : std::vector<std::int64_t>{o.n_layer - 1};
  const std::int64_t group = o.n_head / o.n_head_kv;
  std::vector<planted_head> out;
  for (auto layer : layers) {
    for (std::int64_t g = 0; g < o.n_head_kv; ++g) {
      const std::int64_t first = g * group;
      if (group >= 2 && g % 2 == 0) {
        out.push_back({layer, first + 1, true, first});
      } else {
        out.push_back({layer, first + group - 1, false, -1});
      }
    }
  }
  return out;
}

std::vector<planted_head> generate_synthetic(const std::filesystem::path& output, const synthetic_options& o,
                                             writer::options write_options) {
  const auto planted = planted_heads(o);
  const std::int64_t head_dim = o.n_embd / o.n_head;
  const std::int64_t q_width = o.n_head * head_dim;
  const std::int64_t kv_width = o.n_head_kv * head_dim;
  if (!can_encode(o.weight_type)) throw std::invalid_argument("weight_type: the synthetic model's matrices are F32, F16 or BF16");
  const auto matrix = o.weight_type;
  std::vector<tensor_spec> specs;
  specs.push_back({"token_embd.weight", {o.n_embd, o.n_vocab}, matrix});
  specs.push_back({"output_norm.weight", {o.n_embd}, nashprune::ggml_type::f32});
  specs.push_back({"output.weight", {o.n_embd, o.n_vocab}, matrix});
  for (std::int64_t l = 0; l < o.n_layer; ++l) {
    specs.push_back({layer_tensor(l, "attn_norm.weight"), {o.n_embd}, nashprune::ggml_type::f32});
    specs.push_back({layer_tensor(l, "attn_q.weight"), {o.n_embd, q_width}, matrix});
    specs.push_back({layer_tensor(l, "attn_k.weight"), {o.n_embd, kv_width}, matrix});
    specs.push_back({layer_tensor(l, "attn_v.weight"), {o.n_embd, kv_width}, matrix});
    specs.push_back({layer_tensor(l, "attn_output.weight"), {q_width, o.n_embd}, matrix});
    specs.push_back({layer_tensor(l, "ffn_norm.weight"), {o.n_embd}, nashprune::ggml_type::f32});
    specs.push_back({layer_tensor(l, "ffn_gate.weight"), {o.n_embd, o.n_ff}, matrix});
    specs.push_back({layer_tensor(l, "ffn_up.weight"), {o.n_embd, o.n_ff}, matrix});
    specs.push_back({layer_tensor(l, "ffn_down.weight"), {o.n_ff, o.n_embd}, matrix});
  }

  writer out(output, std::move(write_options));
  out.begin(synthetic_metadata(o), specs);
  random_stream rng(o.seed);
  for (const auto& spec : specs) {
    std::vector<float> data;
    if (spec.dims.size() == 1) {
      data.assign(static_cast<std::size_t>(spec.dims[0]), 1.0F);  // norm weights
    } else {
      data = random_matrix(rng, spec.dims[0], spec.dims[1]);
    }
    const auto split = split_layer_name(spec.name);
    if (split && (split->suffix == "attn_q.weight" || split->suffix == "attn_output.weight")) {
      const bool q = split->suffix == "attn_q.weight";
      const std::int64_t row_length = spec.dims[0];
      for (const auto& p : planted) {
        if (p.layer != split->layer) continue;
        // q: the head's rows; attn_output: the head's columns in every row.
        const std::int64_t lines = q ? head_dim : spec.dims[1];
        for (std::int64_t i = 0; i < lines; ++i) {
          const std::int64_t row = q ? p.head * head_dim + i : i;
          const std::int64_t twin_row = q ? p.twin * head_dim + i : i;
          const std::int64_t begin = q ? 0 : p.head * head_dim;
          const std::int64_t twin_begin = q ? 0 : p.twin * head_dim;
          const std::int64_t count = q ? row_length : head_dim;
          for (std::int64_t c = 0; c < count; ++c) {
            auto& x = data[static_cast<std::size_t>(row * row_length + begin + c)];
            x = p.duplicate ? data[static_cast<std::size_t>(twin_row * row_length + twin_begin + c)] : x * 1e-3F;
          }
        }
      }
    }
    if (spec.type == nashprune::ggml_type::f32) {
      out.write(bytes_of(data));
    } else {
      out.write(encode_floats(spec.type, data));
    }
  }
  out.commit();
  return planted;
}

}  // namespace gguf
