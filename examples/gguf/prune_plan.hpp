// Turning a pruning plan (which heads, KV heads, FFN channels and layers each
// layer keeps) into an output GGUF that stock llama.cpp loads: the output's
// metadata and tensor table are computed first (so every error comes before any
// byte is written), then the tensors are streamed slice by slice from the input
// mapping into the writer.
//
// What llama.cpp honours: uniform layers stay
// "llama" with attention.key_length/value_length written; layers that differ are
// written as "deci" (every llama.* key carried to deci.*, per-layer counts as
// INT32 arrays); layer 0 cannot be attention-free (it keeps one head and one KV
// head with an all-zero attn_output); an FFN-free layer keeps a zero FFN stub one
// quantization block wide; every per-layer array is trimmed when layers go.
//
// Provenance is recorded under general.pruning.* (architecture-independent, so
// it survives the llama -> deci rename): method, version, tool_version,
// structures, score, original_head_count, total_heads_pruned, prune_ratio
// (fraction of attention heads removed), parameter_ratio (fraction of parameters
// removed), original_block_count, layers_removed, lambda, threshold,
// calibration_tokens.
#pragma once

#include <nashprune/attention_geometry.hpp>
#include <nashprune/layer_plan.hpp>

#include "gguf/gguf.hpp"
#include "gguf/llama_model.hpp"

#include <functional>
#include <memory>

namespace gguf {

using nashprune::layer_plan;

struct prune_plan {
  std::vector<layer_plan> layers;
};

/// The plan that keeps everything.
[[nodiscard]] prune_plan keep_all(const llama_shape& shape);

/// A tensor of the output: where its bytes come from.
struct tensor_source {
  enum class kind { copy, rows, columns, zeros, bytes };
  kind how = kind::copy;
  const tensor_view* from = nullptr;          // unused for zeros and bytes
  std::vector<nashprune::index_range> ranges;  // rows: row ranges; columns: element ranges within each row
  std::shared_ptr<const std::vector<std::byte>> bytes;  // bytes: computed data (e.g. a compensated weight), spec.bytes() long
};

/// A tensor the output holds in another type than the input: F16 where a column
/// slice splits the input's quantization blocks, or where a computed tensor
/// cannot be written in the input's type.
struct retyped_tensor {
  std::string name;  // in the output
  nashprune::ggml_type original;
};

struct pruned_model {
  gguf::metadata metadata;
  std::vector<tensor_spec> tensors;
  std::vector<tensor_source> sources;
  llama_shape shape;  // the output's shape
  std::vector<retyped_tensor> retyped;
};

struct tensor_totals {
  std::int64_t parameters = 0;
  std::uint64_t bytes = 0;
};
[[nodiscard]] tensor_totals totals(std::span<const tensor_spec> tensors);
[[nodiscard]] tensor_totals totals(std::span<const tensor_view> tensors);

/// Computes the output of applying `plan` to `model`. `provenance` entries
/// (general.pruning.*) are appended to the metadata. Throws std::invalid_argument
/// for an invalid plan (naming the layer) and for column slices that a quantized
/// tensor of a type dequantize cannot decode cannot take (naming the --structures
/// choice that avoids them); a decodable one is written F16 and listed in
/// `retyped`.
[[nodiscard]] pruned_model plan_output(const reader& model, const llama_shape& shape, const prune_plan& plan,
                                       const gguf::metadata& provenance);

/// Streams the output tensors into `out` (after out.begin(result.metadata, result.tensors)).
/// `progress(done, total)` is called after each tensor with byte counts. Throws
/// std::runtime_error naming the tensor when a value converted to F16 is not finite. Each
/// source tensor's pages are released from `model` once copied (streaming).
void write_tensors(const reader& model, const pruned_model& result, writer& out,
                   const std::function<void(std::uint64_t, std::uint64_t)>& progress = {});

}  // namespace gguf
