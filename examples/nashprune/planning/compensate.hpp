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

#include "command.hpp"


namespace nashprune_tool {

/// --compensate: "none", "bias" or "refit"; throws usage_error otherwise.
[[nodiscard]] nashprune::compensation_kind parse_compensation(const std::string& text);
/// The kind as --compensate spells it.
[[nodiscard]] std::string compensation_name(nashprune::compensation_kind kind);

/// Whether every attn_output and ffn_down of `model` has a type compensation can
/// decode (gguf::can_dequantize).
[[nodiscard]] bool compensable_weights(const gguf::reader& model);

/// Whether `stats` hold the input moments compensation needs (calibrate version 3
/// without --no-moments).
[[nodiscard]] bool has_input_moments(const calibrate::calibration_stats& stats);

/// Rewrites, in `result` (plan_output of `plan` on `model`), every attn_output and
/// ffn_down that lost inputs, and appends their F32 biases and
/// general.pruning.compensation. A rewritten weight keeps the input's type when it
/// is F32, F16 or BF16, or a block type ggml quantizes exactly as llama-quantize
/// does (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, rows of whole blocks, when the tool has
/// ggml); otherwise it is written F16 and listed in result.retyped. With bias or
/// refit, each removed attention block, MLP block and layer adds its mean output
/// to the bias applied at the same point of the residual stream (one line each,
/// or a line saying it has none). Prints one line per tensor with the expected
/// output error of none, bias and refit relative to E‖W x‖². Throws usage_error
/// when the stats lack the moments or a weight has a type dequantize cannot
/// decode, std::runtime_error naming the tensor when a value to be written is not
/// finite in the type it is written in.
void apply_compensation(const gguf::reader& model, const gguf::llama_shape& shape, const gguf::prune_plan& plan,
                        const calibrate::calibration_stats& stats, nashprune::compensation_kind kind, double damping,
                        gguf::pruned_model& result, std::ostream& report);

/// `stats` with the input moments of every attn_output and ffn_down that `plan`
/// changes measured sequentially, as SparseGPT and SlimGPT do: those of layer l's
/// attn_output on `model` with the layers before l pruned by `plan` and compensated
/// by `kind`, those of its ffn_down with layer l's heads pruned and compensated too.
/// Each distinct such model is written to a temporary GGUF (removed afterwards) and
/// calibrated on `run` in this process; maps that no earlier change reaches keep the
/// moments of `stats`. Prints one line per pass to `report`. Throws usage_error in a
/// tool built without llama.cpp.
[[nodiscard]] calibrate::calibration_stats sequential_moments(const std::string& model_path, const gguf::reader& model,
                                                              const gguf::llama_shape& shape, const gguf::prune_plan& plan,
                                                              calibrate::calibration_stats stats, nashprune::compensation_kind kind,
                                                              double damping, const text_run_args& run, std::ostream& report);

/// The obs game of `model` (nashprune::compensated_error_game): for every unfrozen
/// layer whose heads (n_head > 1) or MLP channels (n_ff > 1) `options` offers, the
/// OBS cost of attn_output's or ffn_down's inputs from the moments in `stats`, and
/// the layer's scale tokens / Σ‖h‖² of its residual stream (1 when not measured).
/// Throws usage_error when the stats lack the moments.
[[nodiscard]] nashprune::compensated_error_game compensated_error_game_of(const gguf::reader& model, const gguf::llama_shape& shape,
                                                                          const calibrate::calibration_stats& stats,
                                                                          const nashprune::pruning_options& options, double damping);

}  // namespace nashprune_tool
