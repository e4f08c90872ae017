// The report of a `nashprune prune` run (html_report.hpp) from the model, the
// plan and what the plan makes of the model: which heads went, their scores,
// each layer's head redundancy, and every tensor's shape and type before and after.
#pragma once

#include <calibrate/calibration_stats.hpp>
#include <gguf/llama_model.hpp>
#include <gguf/prune_plan.hpp>

#include <map>
#include <optional>
#include <span>

#include "report/html_report.hpp"

namespace report {

/// The score the selection gave one query head (and its Nash participation when
/// a game was played).
struct head_score {
  std::int64_t layer = 0;
  std::int64_t head = 0;
  double score = 0;
  std::optional<double> participation;
};

/// Every tensor of `model` with its shape and type in `result` (found by name,
/// layers renumbered as the plan removes them; absent from the output: 0 rows),
/// or the type `retyped` gives its output name (a quantization plan of the output),
/// then every tensor the output adds (compensation's biases) as an added tensor
/// of zero bytes before.
[[nodiscard]] std::vector<tensor_entry> tensor_entries(const gguf::reader& model, const gguf::prune_plan& plan,
                                                       const gguf::pruned_model& result,
                                                       const std::map<std::string, nashprune::ggml_type>& retyped = {});

/// The report without the run's own facts (the caller adds method, target, files
/// and, when measured, the perplexity). Redundancy: with `calibration`, the
/// measured cosine of the heads' outputs; else the cosine of their attn_output
/// columns where the weights' type can be read (no map for a layer otherwise).
/// Throws std::invalid_argument for a score naming a head the model lacks.
[[nodiscard]] prune_report describe_prune(const gguf::reader& model, const gguf::llama_shape& shape, const gguf::prune_plan& plan,
                                          const gguf::pruned_model& result, std::span<const head_score> scores,
                                          const calibrate::calibration_stats* calibration);

}  // namespace report
