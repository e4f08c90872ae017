// The pipeline `nashprune prune` runs for the parts of it the user does not name:
// the importance score, the heads' game, the selector, the H-GSP prior
// temperature and the compensation, for a kind of target (what --unit counts,
// which --structures, how much) and whether calibration statistics are at hand.
//
// The choice is the one README.md's "default pipeline" table shows best on
// stories260K (llama-perplexity over the whole held-out text); a test reads that
// table and fails when the choice below is not the lowest perplexity of its row.
// Changing the evidence means changing one line of recommended_pipeline() and
// the README row it answers to.
#pragma once

#include <nashprune/compensation.hpp>
#include <nashprune/pruning_plan.hpp>

#include <optional>
#include <string>

#include "planning/prune_planner.hpp"

namespace nashprune_tool {

/// What the choice depends on.
struct pipeline_situation {
  double target = 0.25;  ///< fraction removed, of what `unit` counts
  nashprune::budget_unit unit = nashprune::budget_unit::parameters;
  nashprune::structure_set structures{nashprune::structure::heads};
  bool calibrated = false;  ///< calibration statistics (--text or --calibration) are available
};

struct pipeline {
  score_kind score = score_kind::magnitude;
  nashprune::head_game game = nashprune::head_game::cosine;
  nashprune::selector selection = nashprune::selector::greedy;
  double temperature = 0.0;  ///< H-GSP priors (0: off)
  nashprune::compensation_kind compensation = nashprune::compensation_kind::none;
  friend bool operator==(const pipeline&, const pipeline&) = default;
};

[[nodiscard]] pipeline recommended_pipeline(const pipeline_situation& situation);

/// The options given on the command line that only some games use.
struct given_options {
  std::optional<score_kind> score;  ///< --score
  bool imatrix = false;             ///< --imatrix (activations for the scores)
  bool priors = false;              ///< H-GSP priors on: --temperature > 0 or --tau given
  bool nash_game = false;           ///< --lambda, --threshold or --iterations (the cosine game's)
  bool ablation = false;            ///< --ablation FILE (the ablation game's loss model)
};

/// Whether `game` ranks by the importance score (and so reads --score, --imatrix
/// and the H-GSP priors): the cosine game and none do; the output, ablation and
/// obs games price removals by what they measurably do.
[[nodiscard]] bool uses_scores(nashprune::head_game game);

/// The game that runs when --game is not given: the recommended one, unless it
/// ignores an option given, then the one that uses it (the cosine game for its
/// own options, the ablation game for --ablation, none, importance alone, for a
/// score, an imatrix or priors), with
/// one line saying why ("" when the recommended game runs).
struct game_choice {
  nashprune::head_game game = nashprune::head_game::none;
  std::string reason;
};
[[nodiscard]] game_choice game_for(const pipeline& recommended, const given_options& given);

/// With --game given: the error for an option given that `game` ignores, or nothing.
[[nodiscard]] std::optional<std::string> ignored_by(nashprune::head_game game, const given_options& given);

/// The pipeline's name as the README's table heads its column and the run prints
/// it: "output game + refit", "activation + refit", "magnitude + cosine game",
/// with " (exact)" for the exact selector and ", priors T" for H-GSP priors.
[[nodiscard]] std::string pipeline_name(const pipeline& p);

}  // namespace nashprune_tool
