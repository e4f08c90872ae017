// Measuring the ablation loss model through llama.cpp (nashprune ablate and
// ablation-prune): L0, L_i and L_ij on calibration text, optionally with a set
// of heads removed first (the conditional, re-linearised model given them).
// The units are the query heads, or one block kind (whole layers, attention or
// MLP blocks) of the layers that hold it.
// Cost: 1 + m + (pairs measured) forward passes over the text, m the units not
// given (all pairs: m(m−1)/2; within layers: far fewer).
#pragma once

#ifdef NASHPRUNE_HAVE_LLAMA_CAPTURE
#include <calibrate/llama_ablation.hpp>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace nashprune_tool {

/// "LAYER:HEAD,..." checked against the model's heads per layer: a malformed item, a head
/// out of range or a repeated head -> usage_error naming `option` and the item's index.
[[nodiscard]] std::vector<calibrate::head_ref> parse_head_list(const std::string& option, const std::string& list,
                                                               std::span<const std::int64_t> heads_per_layer);

/// --pairs must be all, within-layer or none (usage_error).
void check_pairs(const std::string& pairs);

struct ablation_measure_options {
  std::string pairs = "all";  // all | within-layer | none
  std::string model_name, text_name;
  std::int64_t context = 128;
  std::int64_t score_from = 0;  // the session's first scored position (written to the file)
  std::string label = "ablating";  // of the progress bar
  /// Block units instead of heads: the part removed and the layers holding it
  /// (block_ablation.hpp block_unit_layers); `unit_kind` is written to the file.
  std::optional<nashprune::item_kind> block{};  // attention_block, mlp_block or whole_layer
  std::vector<std::int64_t> block_layers{};
  std::string unit_kind{};
};

/// The forward passes a head measurement needs (1 + m + pairs).
[[nodiscard]] std::uint64_t ablation_passes(std::span<const std::int64_t> heads_per_layer, std::span<const calibrate::head_ref> given,
                                            const std::string& pairs);

/// Measures the model with `given` removed first and returns the ABLATION.json
/// document (see commands/ablate.cpp): every head of the model is a unit (or every
/// block of options.block_layers); given heads have loss L0, delta 0 and no
/// interactions measured.
[[nodiscard]] nlohmann::json measure_ablation(calibrate::ablation_session& session, std::span<const calibrate::head_ref> given,
                                              const ablation_measure_options& options);

}  // namespace nashprune_tool
#endif
