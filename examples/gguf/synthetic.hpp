// A small llama-shaped GGUF with planted structure, for the tool's embedded
// default, its tests and benchmarks: random F32 weights in which some attention
// heads are exact duplicates of a neighbour (same query rows, same KV head, same
// attn_output columns) and some are near zero (query rows and attn_output
// columns scaled by 1e-3), plus a byte-level SentencePiece vocabulary
// (<unk>, <s>, </s>, <0x00>..<0xFF>) so llama.cpp loads it and runs any text.
#pragma once

#include "gguf/gguf.hpp"

#include <cstdint>
#include <filesystem>
#include <vector>

namespace gguf {

struct synthetic_options {
  std::int64_t n_layer = 4;
  std::int64_t n_embd = 64;
  std::int64_t n_head = 8;
  std::int64_t n_head_kv = 4;
  std::int64_t n_ff = 128;
  std::int64_t n_vocab = 259;  // at least the 259 byte-level tokens
  std::uint64_t seed = 1;
  /// The type of the matrices (F32, F16 or BF16); norm weights stay F32.
  nashprune::ggml_type weight_type = nashprune::ggml_type::f32;
  /// Layers that get planted heads (one per KV group: duplicates in even groups,
  /// near-zero heads in odd groups); empty: layers 1 and 2 (or the last layer).
  std::vector<std::int64_t> planted_layers;
};

struct planted_head {
  std::int64_t layer = 0;
  std::int64_t head = 0;
  bool duplicate = false;  // else near zero
  std::int64_t twin = -1;  // the head it duplicates
};

/// The heads `generate_synthetic` plants with these options.
[[nodiscard]] std::vector<planted_head> planted_heads(const synthetic_options& options);

/// Writes the model to `output` (streamed, one tensor in memory at a time).
std::vector<planted_head> generate_synthetic(const std::filesystem::path& output, const synthetic_options& options,
                                             writer::options write_options);

}  // namespace gguf
