#include "planning/recommended_pipeline.hpp"

#include <sstream>

#include "planning/compensate.hpp"

namespace nashprune_tool {

namespace np = nashprune;

pipeline recommended_pipeline(const pipeline_situation& s) {
  using np::compensation_kind;
  using np::head_game;
  using np::selector;
  using np::structure;
  const pipeline output_refit{score_kind::magnitude, head_game::output, selector::greedy, 0.0, compensation_kind::refit};
  const pipeline magnitude_refit{score_kind::magnitude, head_game::none, selector::greedy, 0.0, compensation_kind::refit};
  const pipeline obs_refit{score_kind::magnitude, head_game::obs, selector::greedy, 0.0, compensation_kind::refit};
  const pipeline magnitude{score_kind::magnitude, head_game::none, selector::greedy, 0.0, compensation_kind::none};
  const pipeline magnitude_cosine{score_kind::magnitude, head_game::cosine, selector::greedy, 0.0, compensation_kind::none};
  const bool query_heads = s.structures == np::structure_set{structure::heads};
  const bool whole_groups = s.structures == np::structure_set{structure::groups};
  if (s.calibrated && s.unit == np::budget_unit::heads && query_heads) return output_refit;
  // Whole groups: the output game wins at 25 % of the heads, magnitude at 40 % and 50 %.
  if (s.calibrated && s.unit == np::budget_unit::heads && whole_groups) return s.target <= 0.3 ? output_refit : magnitude_refit;
  // Heads beside MLP channels: choosing by the error left after the refit keeps
  // far more than scoring first (9.94 against 15.60 at 20 % of the parameters).
  if (s.calibrated && s.unit == np::budget_unit::parameters && s.structures == np::structure_set{structure::heads, structure::mlp}) {
    return obs_refit;
  }
  if (s.calibrated) return magnitude_refit;
  // Without calibration the cosine game matches or beats magnitude on query
  // heads and loses to it on whole groups and beside MLP channels.
  return query_heads ? magnitude_cosine : magnitude;
}

std::string pipeline_name(const pipeline& p) {
  std::ostringstream out;
  // The output and ablation games price heads by what removing them measurably
  // does, so no importance score enters them.
  const bool scored = p.game == np::head_game::none || p.game == np::head_game::cosine;
  if (scored) out << score_names[static_cast<std::size_t>(p.score)];
  if (p.game != np::head_game::none) out << (scored ? " + " : "") << np::head_game_names[static_cast<std::size_t>(p.game)] << " game";
  if (p.selection == np::selector::exact) out << " (exact)";
  if (p.temperature > 0.0) out << ", priors " << p.temperature;
  if (p.compensation != np::compensation_kind::none) out << " + " << compensation_name(p.compensation);
  return out.str();
}

}  // namespace nashprune_tool
