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
  const bool heads_or_groups = s.structures.within({structure::heads, structure::groups});
  if (s.calibrated && s.unit == np::budget_unit::heads && heads_or_groups) {
    return {score_kind::magnitude, head_game::output, selector::greedy, 0.0, compensation_kind::refit};
  }
  if (s.calibrated) return {score_kind::magnitude, head_game::none, selector::greedy, 0.0, compensation_kind::refit};
  // Without calibration the cosine game ties magnitude on query heads and loses
  // to it on whole groups and beside MLP channels.
  const head_game game = s.structures == np::structure_set{structure::heads} ? head_game::cosine : head_game::none;
  return {score_kind::magnitude, game, selector::greedy, 0.0, compensation_kind::none};
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
