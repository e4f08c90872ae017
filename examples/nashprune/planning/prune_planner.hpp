// From a model (and optionally an imatrix or calibration statistics) to a
// pruning plan: the tool reads the weights and statistics into per-head and
// per-channel scores, and nashprune/pruning_plan.hpp turns them into the plan.
#pragma once

#include <calibrate/calibration_stats.hpp>
#include <gguf/imatrix.hpp>
#include <gguf/llama_model.hpp>
#include <gguf/prune_plan.hpp>
#include <nashprune/pruning_plan.hpp>

#include <array>

#include <nlohmann/json.hpp>

#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "command.hpp"

namespace nashprune_tool {

/// What scores a head or channel: its weights, its weights times its input
/// activations (Wanda), or its activation energy alone.
enum class score_kind { magnitude, wanda, activation };
inline constexpr std::array<std::string_view, 3> score_names{"magnitude", "wanda", "activation"};

/// MLP channels of a float ffn_down removed together where the width allows it (a
/// multiple of this, at least 32 of them), so the pruned FFN width stays a multiple
/// of it: see mlp_chunk in prune_planner.cpp.
inline constexpr std::int64_t aligned_channel_step = 32;

struct scoring_options {
  score_kind score = score_kind::magnitude;
  int threads = 0;  // threads reading the weights for their scores (0: one per core, at most 4)
};

struct selection {
  gguf::prune_plan plan;
  std::vector<nashprune::head_statistics> heads;
  std::optional<nashprune::lambda_search_report> lambda;  // set with lambda_auto
  std::optional<nashprune::head_game_report> game;        // set with the output or ablation game
  std::optional<nashprune::target_reach> reach;           // what the target asked for (not with --plan)
  std::optional<nashprune::compensated_choice_report> compensated;  // set with the obs game
};

/// "a, b or c" of a list of names.
template <std::size_t N>
[[nodiscard]] std::string one_of(const std::array<std::string_view, N>& names) {
  std::string out;
  for (std::size_t k = 0; k < N; ++k) out += std::string(k == 0 ? "" : k + 1 == N ? " or " : ", ") + std::string(names[k]);
  return out;
}

/// The enumerator whose spelling in `names` is `text`; usage_error naming `option` otherwise.
template <typename Enum, std::size_t N>
[[nodiscard]] Enum parse_name(const std::array<std::string_view, N>& names, const std::string& option, const std::string& text) {
  for (std::size_t k = 0; k < N; ++k) {
    if (names[k] == text) return static_cast<Enum>(k);
  }
  throw usage_error(option + " must be " + one_of(names) + ", got '" + text + "'");
}

/// The command-line vocabulary, parsed once: each throws usage_error naming the
/// option and the values it takes.
[[nodiscard]] nashprune::head_game parse_game(const std::string& text);
[[nodiscard]] nashprune::selector parse_selector(const std::string& text);
[[nodiscard]] score_kind parse_score(const std::string& text);
[[nodiscard]] nashprune::structure_set parse_structures(const std::vector<std::string>& names);
/// "heads,mlp": the names in alphabetical order (general.pruning.structures).
[[nodiscard]] std::string structure_list(nashprune::structure_set structures);

/// The deprecated spelling --method nash|knapsack|both|exact with --redundancy
/// cosine|output|ablation as a game and a selector (nash: the cosine game or the
/// price search, knapsack: no game, both: the cosine game with the exact solver,
/// exact: the exact choice of the output or ablation game). Prints one
/// deprecation line on stderr.
struct game_and_selector {
  nashprune::head_game game = nashprune::head_game::cosine;
  nashprune::selector selection = nashprune::selector::greedy;
};
[[nodiscard]] game_and_selector legacy_method(const std::string& method, const std::string& redundancy);
/// The deprecation line on stderr: "<spelling> deprecated: use --game G --selector S".
void warn_deprecated(const std::string& spelling, game_and_selector replacement);
/// The method recorded in general.pruning.method: nash, knapsack, both or exact as
/// the deprecated --method spelled it (knapsack-exact: no game, the exact solver).
[[nodiscard]] std::string method_name(nashprune::head_game game, nashprune::selector selection);

/// What the user asked on the command line, checked before anything is read:
/// throws usage_error naming the option.
struct option_check {
  bool have_activations = false;  // an imatrix or calibration statistics
  bool have_calibration = false;
  bool priors_requested = false;  // --temperature or --tau given
};
void check_options(const nashprune::pruning_options& options, score_kind score, const option_check& given);

/// The plan of `options` on `model`. With `calibration` (nashprune calibrate):
/// wanda/activation read its per-column energies instead of the imatrix, the
/// cosine game uses the measured cosine matrix instead of the weight-space one,
/// layers and blocks are scored by their measured influence, and the output game
/// reads its Gram matrices.
[[nodiscard]] selection choose_plan(const gguf::reader& model, const gguf::llama_shape& shape, const gguf::imatrix* imatrix,
                                    const nashprune::pruning_options& options, const scoring_options& scoring,
                                    const calibrate::calibration_stats* calibration = nullptr);

/// The planner's scores of `model` as choose_plan computes them (heads, channels and,
/// with `calibration`, the measured influence), without playing a game.
[[nodiscard]] nashprune::model_scores scored_model(const gguf::reader& model, const gguf::llama_shape& shape, const gguf::imatrix* imatrix,
                                                   const nashprune::pruning_options& options, const scoring_options& scoring,
                                                   const calibrate::calibration_stats* calibration);

/// The structures pruned when --structures is not given: heads with --unit heads,
/// heads and MLP channels with --unit params (attention alone holds too few of a
/// model's parameters for a usual target); GQA groups instead of query heads when
/// the model's attn_output quantization blocks are wider than a head but fit a
/// group, and whole MLP blocks instead of channels when ffn_down is block-quantized
/// (a slice of its columns would cut quantization blocks).
[[nodiscard]] nashprune::structure_set default_structures(nashprune::budget_unit unit, const std::string& model_path);

/// The planner's view of `model` without scores: shape, total parameters and the
/// MLP channels removed together (ffn_down's quantization block).
[[nodiscard]] nashprune::model_scores unscored_model(const gguf::reader& model, const gguf::llama_shape& shape);

/// What `options.target` asks for on `scores`; throws usage_error when the structures
/// cannot reach it, naming the largest reachable fraction and the --structures that
/// would reach the target (or, when none would, the caps to relax).
nashprune::target_reach check_target(const nashprune::model_scores& scores, const nashprune::pruning_options& options);

/// What a target asked for and what the written model achieved.
struct target_outcome {
  bool heads = false;  // the target counts heads (else parameters)
  double target = 0;   // the requested fraction
  std::int64_t requested = 0;
  std::int64_t removed = 0;
  std::int64_t heads_before = 0;
  std::int64_t heads_after = 0;
  gguf::tensor_totals before;
  gguf::tensor_totals after;
};
[[nodiscard]] target_outcome outcome_of(const nashprune::pruning_options& options, const nashprune::target_reach& reach,
                                        const gguf::llama_shape& before_shape, const gguf::llama_shape& after_shape,
                                        const gguf::tensor_totals& before, const gguf::tensor_totals& after);

/// One line: the target, what it requested and what the plan removed, with heads,
/// parameters and tensor bytes before and after.
void print_target(std::ostream& out, const target_outcome& outcome);

/// The outcome as plan and statistics files record it: {"target": {"unit",
/// "fraction", "requested", "removed"}, "head_count": {"before", "after"},
/// "before"/"after": {"parameters", "tensor_bytes"}}; an empty object without one.
[[nodiscard]] nlohmann::json target_summary(const std::optional<target_outcome>& outcome);

/// --game obs: the plan of least summed error after the refit of attn_output and
/// ffn_down (nashprune::compensated_error_game), from the weights and the input
/// moments in `calibration`, each layer's error divided by the mean ‖h‖² of the
/// residual stream entering it; `damping` as for --compensate. Throws usage_error
/// when the statistics lack the moments.
[[nodiscard]] selection choose_by_compensated_error(const gguf::reader& model, const gguf::llama_shape& shape,
                                                    const nashprune::pruning_options& options,
                                                    const calibrate::calibration_stats& calibration, double damping);

/// The tool's result of a library plan of `shape`.
[[nodiscard]] selection selection_of(nashprune::pruning_result result);

/// The model as the library's planner sees it, without scores (the ablation game needs only the shape).
[[nodiscard]] nashprune::model_scores shape_scores(const gguf::llama_shape& shape);

}  // namespace nashprune_tool
