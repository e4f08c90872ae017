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

/// The pipeline's name as the README's table heads its column and the run prints
/// it: "output game + refit", "activation + refit", "magnitude + cosine game",
/// with " (exact)" for the exact selector and ", priors T" for H-GSP priors.
[[nodiscard]] std::string pipeline_name(const pipeline& p);

}  // namespace nashprune_tool
