// Plans driven by one importance per layer (nashprune/layer_importance_plans.hpp):
// `prune --layer-rates inverse|proportional|uniform` (unbalanced per-layer rates, then
// each layer's least important groups or heads and, with mlp, MLP channels at the same
// rate) and `prune --depth-preset 25|50` (whole
// layers). The tool reads the layer importance, either the measured block influence
// 1 - cos(x_in, x_out) of the calibration statistics or the loss increase of removing
// each layer alone from `nashprune ablate --units layers`, and prints what the
// library chose.
#pragma once

#include <calibrate/calibration_stats.hpp>
#include <gguf/imatrix.hpp>
#include <gguf/llama_model.hpp>
#include <nashprune/layer_importance_plans.hpp>

#include <optional>
#include <string>

#include "planning/prune_planner.hpp"

namespace nashprune_tool {

/// --layer-importance: "block-influence" (needs calibration statistics) or an ablation file.
inline constexpr const char* block_influence_source = "block-influence";

struct layer_importance_request {
  std::string source = block_influence_source;
  std::optional<nashprune::rate_strategy> rates;  // --layer-rates
  nashprune::layer_rate_options rate_options;     // --alpha, --min-rate, --max-rate
  std::optional<nashprune::depth_preset> depth;   // --depth-preset
  nashprune::depth_selection depth_selection = nashprune::depth_selection::any_set;
  [[nodiscard]] bool wanted() const { return rates.has_value() || depth.has_value(); }
};

/// The command-line vocabulary: each throws usage_error naming the option and its values.
[[nodiscard]] nashprune::rate_strategy parse_rate_strategy(const std::string& text);
[[nodiscard]] nashprune::depth_preset parse_depth_preset(const std::string& text);
[[nodiscard]] nashprune::depth_selection parse_depth_selection(const std::string& text);

/// One importance per layer of `shape`: the calibration's measured layer influence, or
/// the loss increase of each layer removed alone in an `ablate --units layers` file
/// (an increase below 0, a layer whose removal helped, counts as 0). Throws
/// usage_error naming --layer-importance when the source is missing or belongs to
/// another model.
[[nodiscard]] Eigen::VectorXd layer_importance_of(const std::string& source, const gguf::llama_shape& shape,
                                                  const calibrate::calibration_stats* calibration);

/// The plan of --layer-rates or --depth-preset; prints the layer importance and, for
/// the rates, each layer's rate and the heads and MLP channels it loses. Throws usage_error naming the
/// option when the rates cannot reach --target or the preset cannot drop its layers.
[[nodiscard]] selection choose_by_layer_importance(const gguf::reader& model, const gguf::llama_shape& shape, const gguf::imatrix* imatrix,
                                                   const nashprune::pruning_options& options, const scoring_options& scoring,
                                                   const calibrate::calibration_stats* calibration, const layer_importance_request& request);

}  // namespace nashprune_tool
