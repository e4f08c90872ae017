// The second-order loss model that `nashprune ablate` measures (ABLATION.json)
// and the choice of heads on it (nashprune/loss_interaction.hpp), shared by
// ablation-plan, ablation-prune and prune --redundancy ablation.
#pragma once

#include <gguf/llama_model.hpp>
#include <gguf/prune_plan.hpp>
#include <nashprune/loss_interaction.hpp>

#include <nlohmann/json.hpp>

#include <Eigen/Core>

#include <cstdint>
#include <string>
#include <vector>

namespace nashprune_tool {

/// The units of a model in ablation order (layer by layer, head by head) and how each layer may be cut
/// (every layer's query heads; GQA layers lose the same count from every group, as prune --unit heads).
struct ablation_layout {
  std::vector<nashprune::loss_layer> layers;
  std::vector<nashprune::loss_slot> slots;  // per layer: every allowed removal set (exact / greedy)
  std::int64_t units = 0;
};

/// Throws usage_error for a layer of more than 20 heads (the slots enumerate subsets).
[[nodiscard]] ablation_layout make_ablation_layout(const gguf::llama_shape& shape, const nashprune::nash_decision_options<double>& decisions);

/// C(z) = δᵀz + ½·zᵀIz measured with the units `given` removed first (L0 = L(given);
/// their own δ and I entries are 0).
struct loss_model {
  double l0 = 0;
  Eigen::VectorXd delta;
  Eigen::MatrixXd interaction;
  std::vector<std::int64_t> given;  // ascending
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

struct loss_choice {
  std::vector<nashprune::head_keep_plan> plans;  // per layer
  std::vector<std::int64_t> removed;             // units, ascending (the given ones included)
  double modelled = 0;                           // C(removed): the modelled loss increase over L0
  std::string how;                               // one line: price and solves, or sets enumerated
  double price = 0;                              // nash: the price found (0 otherwise)
};

/// The heads to remove, at most `requested` units in all (the given ones included):
/// "nash" searches the price of one game over the units not given, "exact"
/// enumerates the GQA-consistent sets of every layer jointly (those holding the
/// given units), "greedy" does the same with the interactions dropped. Throws
/// usage_error for another method or given units no allowed set holds.
/// `lowest_price` (nash): the lowest price whose plans reach the count (price_search_options::lowest_price).
[[nodiscard]] loss_choice choose_by_loss(const loss_model& model, const ablation_layout& layout, const std::string& method,
                                         std::int64_t requested, const nashprune::nash_decision_options<double>& decisions,
                                         bool lowest_price = false);

/// The plan of `shape` with the chosen query heads removed (everything else kept).
[[nodiscard]] gguf::prune_plan plan_of(const gguf::llama_shape& shape, const loss_choice& choice);

/// "LAYER:HEAD,LAYER:HEAD,..." of units (the syntax of ablate --remove / --given).
[[nodiscard]] std::string head_list(const ablation_layout& layout, const std::vector<std::int64_t>& units);

}  // namespace nashprune_tool
