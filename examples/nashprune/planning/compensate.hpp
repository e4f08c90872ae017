// prune --compensate none|bias|refit: after a plan removes heads (inputs of
// attn_output) or MLP channels (inputs of ffn_down), rewrite those two tensors
// and add F32 biases blk.N.attn_output.bias / blk.N.ffn_down.bias so the layer's
// output changes as little as the calibration's input moments allow
// (nashprune/compensation.hpp). And --game obs: the OBS costs of those inputs
// (nashprune/compensated_selection.hpp) that choose what to remove.
#pragma once

#include <calibrate/calibration_stats.hpp>
#include <gguf/gguf.hpp>
#include <gguf/llama_model.hpp>
#include <gguf/prune_plan.hpp>

#include <nashprune/compensation.hpp>
#include <nashprune/pruning_plan.hpp>

#include <iosfwd>
#include <optional>
#include <string>


namespace nashprune_tool {

/// --compensate: "none", "bias" or "refit"; throws usage_error otherwise.
[[nodiscard]] nashprune::compensation_kind parse_compensation(const std::string& text);
[[nodiscard]] std::string compensation_name(nashprune::compensation_kind kind);

/// Whether every attn_output and ffn_down of `model` is F32, F16 or BF16 (what
/// compensation rewrites).
[[nodiscard]] bool compensable_weights(const gguf::reader& model);

/// Whether `stats` hold the input moments compensation needs (calibrate version 3
/// without --no-moments).
[[nodiscard]] bool has_input_moments(const calibrate::calibration_stats& stats);

/// Rewrites, in `result` (plan_output of `plan` on `model`), every attn_output and
/// ffn_down that lost inputs, in the input's float type, and appends their F32
/// biases and general.pruning.compensation. Prints one line per tensor with the
/// expected output error of none, bias and refit relative to E‖W x‖². Throws
/// usage_error when the stats lack the moments or a weight is not F32/F16/BF16,
/// std::runtime_error naming the tensor when a value to be written is not finite.
void apply_compensation(const gguf::reader& model, const gguf::llama_shape& shape, const gguf::prune_plan& plan,
                        const calibrate::calibration_stats& stats, nashprune::compensation_kind kind, double damping,
                        gguf::pruned_model& result, std::ostream& report);

/// The obs game of `model` (nashprune::compensated_error_game): for every unfrozen
/// layer whose heads (n_head > 1) or MLP channels (n_ff > 1) `options` offers, the
/// OBS cost of attn_output's or ffn_down's inputs from the moments in `stats`, and
/// the layer's scale tokens / Σ‖h‖² of its residual stream (1 when not measured).
/// Throws usage_error when the stats lack the moments.
[[nodiscard]] nashprune::compensated_error_game compensated_error_game_of(const gguf::reader& model, const gguf::llama_shape& shape,
                                                                          const calibrate::calibration_stats& stats,
                                                                          const nashprune::pruning_options& options, double damping);

}  // namespace nashprune_tool
