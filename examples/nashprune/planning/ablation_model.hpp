// The second-order loss model that `nashprune ablate` measures (ABLATION.json)
// and the choice of heads on it (nashprune/loss_interaction.hpp), shared by
// ablation-plan, ablation-prune and prune --redundancy ablation.
#pragma once

#include <gguf/llama_model.hpp>
#include <gguf/prune_plan.hpp>
#include <nashprune/pruning_plan.hpp>

#include <nlohmann/json.hpp>

#include <Eigen/Core>

#include <cstdint>
#include <string>
#include <vector>

namespace nashprune_tool {

/// The units of a model in ablation order (layer by layer, head by head) and every
/// removal set each layer allows (as prune --unit heads cuts it).
using ablation_layout = nashprune::loss_layout;

/// Throws std::invalid_argument for a layer of more than 20 heads (the sets are enumerated).
[[nodiscard]] ablation_layout make_ablation_layout(const gguf::llama_shape& shape, const nashprune::nash_decision_options<double>& decisions);

/// C(z) = δᵀz + ½·zᵀIz measured with the units `given` removed first, and L0 = L(given).
struct loss_model : nashprune::ablation_loss_game {
  double l0 = 0;
};

/// The δ and I of an ABLATION.json document whose "units" must equal `expected`
/// (row i = unit i): throws usage_error naming the first unit that differs, or
/// `count_mismatch` when the counts differ, or a delta/interaction of the wrong size.
struct loss_terms {
  Eigen::VectorXd delta;
  Eigen::MatrixXd interaction;
};
[[nodiscard]] loss_terms read_loss_terms(const nlohmann::json& doc, const std::vector<std::vector<std::int64_t>>& expected,
                                         const std::string& count_mismatch);

/// An ABLATION.json document checked against `layout` (unit order, sizes); throws usage_error naming what differs.
[[nodiscard]] loss_model loss_model_from_json(const nlohmann::json& doc, const ablation_layout& layout);

struct loss_choice : nashprune::loss_choice {
  std::string how;  // one line: price and solves, or sets enumerated
};

/// The heads to remove, at most `requested` units in all (the given ones included):
/// "nash" searches the price of one game over the units not given, "exact"
/// enumerates the GQA-consistent sets of every layer jointly (those holding the
/// given units), "greedy" does the same with the interactions dropped
/// (nashprune::choose_heads_by_loss). Throws usage_error for another method.
[[nodiscard]] loss_choice choose_by_loss(const loss_model& model, const ablation_layout& layout, const std::string& method,
                                         std::int64_t requested, const nashprune::nash_decision_options<double>& decisions,
                                         bool lowest_price = false);

/// The plan of `shape` with the chosen query heads removed (everything else kept).
[[nodiscard]] gguf::prune_plan plan_of(const gguf::llama_shape& shape, const loss_choice& choice);

/// "LAYER:HEAD,LAYER:HEAD,..." of units (the syntax of ablate --remove / --given).
[[nodiscard]] std::string head_list(const ablation_layout& layout, const std::vector<std::int64_t>& units);

}  // namespace nashprune_tool
