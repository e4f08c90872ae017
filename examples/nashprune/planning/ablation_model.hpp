// The second-order loss model that `nashprune ablate` measures (ABLATION.json)
// and the choice of heads on it (nashprune/loss_interaction.hpp), shared by
// ablation-plan, ablation-prune and prune --redundancy ablation.
#pragma once

#include <gguf/llama_model.hpp>
#include <gguf/gguf.hpp>
#include <gguf/prune_plan.hpp>
#include <nashprune/pruning_plan.hpp>

#include <nlohmann/json.hpp>

#include <Eigen/Core>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace CLI {
class App;
}

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

/// How the loss model chooses: the game (ablation: the single losses and their
/// interactions; none: the single losses alone) and the selector (greedy: the
/// price search of the game; exact: the enumeration of the GQA-consistent sets).
/// An unset selector is the command's default.
struct loss_method {
  nashprune::head_game game = nashprune::head_game::ablation;
  std::optional<nashprune::selector> selection;
};

/// The choice's options as given on the command line (empty: not given).
struct loss_method_args {
  std::string game;
  std::string selector;
  std::string method;  // the deprecated spelling of game and selector
  bool lowest_price = false;
};

/// Declares --game, --selector, the deprecated --method and --lowest-price.
void add_loss_method_options(CLI::App& app, loss_method_args& args);

/// --game ablation|none and --selector greedy|exact, or the deprecated --method
/// nash|exact|greedy (nash: --game ablation --selector greedy, exact: --game
/// ablation --selector exact, greedy: --game none --selector exact) with one
/// deprecation line on stderr. Throws usage_error naming the option.
[[nodiscard]] loss_method parse_loss_method(const loss_method_args& args);

/// The heads to remove, at most `requested` units in all (the given ones included):
/// the price search of one game over the units not given (ablation, greedy; the
/// default), or the enumeration of the GQA-consistent sets of every layer jointly
/// (those holding the given units), with the interactions (ablation, exact) or
/// without them (none, exact) (nashprune::choose_heads_by_loss).
[[nodiscard]] loss_choice choose_by_loss(const loss_model& model, const ablation_layout& layout, const loss_method& method,
                                         std::int64_t requested, const nashprune::nash_decision_options<double>& decisions,
                                         bool lowest_price = false);

/// The plan of `shape` with the chosen query heads removed (everything else kept).
[[nodiscard]] gguf::prune_plan plan_of(const gguf::llama_shape& shape, const loss_choice& choice);

/// Writes the plan of `choice` to `path` (prune --plan reads it) with the target
/// summary of `fraction` of the query heads, as prune --plan-out records it, and
/// prints the target line and the file written.
void write_head_plan(const std::string& path, const gguf::reader& model, const gguf::llama_shape& shape, const loss_choice& choice,
                     double fraction);

/// "LAYER:HEAD,LAYER:HEAD,..." of units (the syntax of ablate --remove / --given).
[[nodiscard]] std::string head_list(const ablation_layout& layout, const std::vector<std::int64_t>& units);

}  // namespace nashprune_tool
