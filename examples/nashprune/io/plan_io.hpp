// Plan files and the printing of shapes and plans, shared by the nashprune tool's commands.
#pragma once

#include <gguf/llama_model.hpp>
#include <gguf/prune_plan.hpp>

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

/// Plan files: {"layers": [{"layer": i, "keep": bool, "q_heads": [...],
/// "kv_heads": [...], "channels": [...]}, ...]} with one entry per layer of the model.
void write_plan_json(const std::string& path, const gguf::prune_plan& plan);
[[nodiscard]] gguf::prune_plan read_plan_json(const std::string& path, const gguf::llama_shape& shape);

}  // namespace nashprune_tool
