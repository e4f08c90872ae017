#include "planning/recommended_pipeline.hpp"

#include <sstream>

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

bool uses_scores(np::head_game game) { return game == np::head_game::none || game == np::head_game::cosine; }

namespace {

// The scored options given, as the command line spells them ("" when none).
std::string scored_options(const given_options& given) {
  std::string out;
  const auto add = [&out](const std::string& option) { out += (out.empty() ? "" : ", ") + option; };
  if (given.score) add("--score " + std::string(score_names[static_cast<std::size_t>(*given.score)]));
  if (given.imatrix) add("--imatrix");
  if (given.priors) add("--temperature/--tau");
  return out;
}

std::string game_name(np::head_game game) { return std::string(np::head_game_names[static_cast<std::size_t>(game)]); }

}  // namespace

game_choice game_for(const pipeline& recommended, const given_options& given) {
  const auto recommended_name = pipeline_name(recommended);
  if (given.ablation) return {np::head_game::ablation, "--ablation: the ablation game runs in place of the recommended " + recommended_name};
  if (given.nash_game && recommended.game != np::head_game::cosine) {
    return {np::head_game::cosine, "--lambda/--threshold/--iterations tune the cosine game, which runs in place of the recommended " +
                                       recommended_name};
  }
  const auto scored = scored_options(given);
  if (!scored.empty() && !uses_scores(recommended.game)) {
    return {np::head_game::none, scored + ": the recommended " + recommended_name + " uses no importance score, so the scored pipeline runs"};
  }
  return {recommended.game, ""};
}

std::optional<std::string> ignored_by(np::head_game game, const given_options& given) {
  const auto name = game_name(game);
  if (given.nash_game && game != np::head_game::cosine) {
    return "--lambda, --threshold and --iterations tune the cosine game; --game " + name + " ignores them: drop them or use --game cosine";
  }
  const auto scored = scored_options(given);
  if (!scored.empty() && !uses_scores(game)) {
    const int count = (given.score ? 1 : 0) + (given.imatrix ? 1 : 0) + (given.priors ? 1 : 0);
    return scored + ": --game " + name + " uses no importance score or H-GSP priors; drop " + (count == 1 ? "it" : "them") +
           ", or use --game none or cosine";
  }
  return std::nullopt;
}

std::string pipeline_name(const pipeline& p) {
  std::ostringstream out;
  // The output and ablation games price heads by what removing them measurably
  // does, so no importance score enters them.
  const bool scored = uses_scores(p.game);
  if (scored) out << score_names[static_cast<std::size_t>(p.score)];
  if (p.game != np::head_game::none) out << (scored ? " + " : "") << np::head_game_names[static_cast<std::size_t>(p.game)] << " game";
  if (p.selection == np::selector::exact) out << " (exact)";
  if (p.temperature > 0.0) out << ", priors " << p.temperature;
  if (p.compensation != np::compensation_kind::none) out << " + " << np::compensation_kind_names[static_cast<std::size_t>(p.compensation)];
  return out.str();
}

}  // namespace nashprune_tool
