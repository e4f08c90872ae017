// Plan files and the printing of shapes and plans, shared by the nashprune tool's commands.
#pragma once

#include <gguf/llama_model.hpp>
#include <gguf/prune_plan.hpp>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <ostream>
#include <string>

namespace nashprune_tool {

/// "1.5 MiB", "812 B".
[[nodiscard]] std::string human_bytes(std::uint64_t bytes);

/// Architecture line and the per-layer table (heads, KV heads, group, head size, FFN).
void print_shape(std::ostream& out, const gguf::llama_shape& shape);

/// What `plan` removes (layers, heads per layer, channels) and the resulting sizes.
void print_plan_summary(std::ostream& out, const gguf::llama_shape& shape, const gguf::prune_plan& plan,
                        const gguf::pruned_model& result, const gguf::tensor_totals& before);

/// The tensors `result` writes F16 in place of their quantized input type, and
/// the llama-quantize command that quantizes them back to it (written to
/// `output` stem + "-TYPE.gguf") while copying every other tensor as it is.
/// Nothing when no tensor changed type.
void print_retyped(std::ostream& out, const gguf::pruned_model& result, const std::string& output);

/// Plan files: {"layers": [{"layer": i, "keep": bool, "q_heads": [...],
/// "kv_heads": [...], "channels": [...]}, ...]} with one entry per layer of the
/// model, and the fields of `summary` (an object; read_plan_json reads "layers" only).
void write_plan_json(const std::string& path, const gguf::prune_plan& plan, const nlohmann::json& summary = nlohmann::json::object());
[[nodiscard]] gguf::prune_plan read_plan_json(const std::string& path, const gguf::llama_shape& shape);

}  // namespace nashprune_tool
