// `nashprune ablation-prune MODEL.gguf --text FILE --target F --rounds K -o PLAN.json
//   [--game ablation|none] [--selector greedy|exact] [--tokens N] [-c N] [--pairs all|within-layer|none]
//   [--first ABLATION.json] [--rounds-out PREFIX] [-t N]`:
// the iterative (re-linearised) ablation plan. Round k measures the loss model
// (δ, I: nashprune ablate) on the model with everything chosen so far removed
// (L0 = L(R)), and the game on it (ablation-plan's choice with R given) brings
// the removed count to ⌊k/K⌋ of the target's heads (the most whole GQA steps
// within it). Effects beyond pairs enter through the re-measurement: the
// second-order model is only trusted for the part of the budget it chooses.
// Cost: Σ_k 1 + m_k + m_k(m_k−1)/2 forward passes (m_k heads left at round k;
// stories260K at 50 % in 3 rounds of 4/8/8 heads: 821 + 667 + 407); --pairs
// within-layer and --tokens cut it. --first reuses a measurement of the whole
// model (ablate without --given on the same text, tokens and context) as round 1.
// The last line measures L(R) of the plan itself (one pass) beside the model's prediction.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <memory>
#include <optional>

#include "planning/ablation_measure.hpp"
#include "planning/ablation_model.hpp"
#include "command.hpp"
#include "io/json_io.hpp"
#include "io/plan_io.hpp"

namespace {

using nashprune_tool::usage_error;

struct iterate_args {
  std::string model, pairs = "all", plan_out, first, rounds_out;
  nashprune_tool::loss_method_args method;
  nashprune_tool::loss_method choice;
  double target = 0.25;
  std::int64_t rounds = 2;
  nashprune_tool::text_run_args run;
};

#ifdef NASHPRUNE_HAVE_LLAMA_CAPTURE
int run(const iterate_args& a) {
  namespace fs = std::filesystem;
  if (!(a.target >= 0 && a.target < 1)) throw usage_error("--target must be in [0, 1)");
  if (a.rounds < 1) throw usage_error("--rounds must be at least 1, got " + std::to_string(a.rounds));
  nashprune_tool::check_pairs(a.pairs);
  const auto file = gguf::reader::open(a.model);
  const auto shape = gguf::llama_shape::read(file);
  const nashprune::nash_decision_options<double> decisions{};
  const auto layout = nashprune_tool::make_ablation_layout(shape, decisions);
  const auto requested = static_cast<std::int64_t>(std::floor(a.target * static_cast<double>(layout.units) + 1e-9));
  std::optional<nashprune_tool::loss_model> first;
  if (!a.first.empty()) {
    first = nashprune_tool::loss_model_from_json(nashprune_tool::json_io::read_document(a.first), layout);
    if (!first->given.empty()) throw usage_error("--first must measure the whole model (ablate without --given)");
  }
  calibrate::ablation_session session({{a.model, a.run.text, a.run.tokens, a.run.context, a.run.threads}, a.run.score_from});
  const nashprune_tool::ablation_measure_options measure{a.pairs, fs::path(a.model).filename().string(), fs::path(a.run.text).filename().string(), a.run.context, a.run.score_from};
  const auto heads_of = [&](const std::vector<std::int64_t>& units) {
    return nashprune_tool::parse_head_list("removed", nashprune_tool::head_list(layout, units), session.heads_per_layer());
  };
  std::vector<std::int64_t> removed;
  nashprune_tool::loss_model model;  // the last measurement (given: the heads removed when it was taken)
  nashprune_tool::loss_choice choice;
  double l0 = 0;
  for (std::int64_t k = 1; k <= a.rounds; ++k) {
    const auto goal = std::max(static_cast<std::int64_t>(removed.size()), requested * k / a.rounds);
    if (k == 1 && first) {
      model = *first;
      std::cout << "round 1: the whole model's ablation from " << a.first << '\n';
    } else if (k > 1 && model.given == removed) {
      std::cout << "round " << k << ": nothing removed since the last measurement, reused\n";  // a budget below one GQA step
    } else {
      auto label = measure;
      label.label = "round " + std::to_string(k) + "/" + std::to_string(a.rounds);
      const auto doc = nashprune_tool::measure_ablation(session, heads_of(removed), label);
      if (!a.rounds_out.empty()) nashprune_tool::json_io::write_document(a.rounds_out + "_round" + std::to_string(k) + ".json", doc);
      model = nashprune_tool::loss_model_from_json(doc, layout);
      std::cout << "round " << k << ": measured " << layout.units - static_cast<std::int64_t>(removed.size()) << " heads given " << removed.size() << " removed ("
                << doc.at("passes").get<std::uint64_t>() << " passes)\n";
    }
    if (k == 1) l0 = model.l0;
    choice = nashprune_tool::choose_by_loss(model, layout, a.choice, goal, decisions, a.method.lowest_price);
    std::cout << "  L(R) " << model.l0 << "; " << choice.how << "; removing " << choice.removed.size() << " of " << goal << " heads asked, modelled L "
              << model.l0 + choice.modelled << '\n';
    removed = choice.removed;
  }
  const double measured = session.mean_nll(heads_of(removed));
  std::cout << std::setprecision(10) << "requested " << requested << " heads, removing " << removed.size() << " in " << a.rounds << " round(s); L0 " << l0
            << ", measured L of the plan " << measured << " (+" << measured - l0 << ")\n";
  std::cout << "removed: " << nashprune_tool::head_list(layout, removed) << '\n';
  nashprune_tool::write_head_plan(a.plan_out, file, shape, choice, a.target);
  return 0;
}
#else
int run(const iterate_args&) { nashprune_tool::requires_llama_cpp("ablation-prune"); }
#endif

void add_options(CLI::App& app, iterate_args& a) {
  nashprune_tool::add_text_run_options(app, a.model, a.run, "calibration text file (never the evaluation text)", true);
  app.add_option("--target", a.target, "fraction of the query heads to remove at most (whole GQA steps)")->capture_default_str();
  app.add_option("--rounds", a.rounds, "measurement rounds: round k brings the removal to k/K of the target")->capture_default_str();
  nashprune_tool::add_loss_method_options(app, a.method);
  app.add_option("--pairs", a.pairs, "pairs measured each round: all | within-layer | none")->capture_default_str();
  app.add_option("--first", a.first, "round 1's measurement: an ablate output of the whole model on the same text, tokens and context");
  app.add_option("--rounds-out", a.rounds_out, "write round k's measurement (k >= 2, or 1 without --first) to PREFIX_roundk.json");
  app.add_option("-o,--output,--plan-out", a.plan_out, "plan JSON to write (apply with prune --plan)")->required();
}

// The options parsed into their types, then the run.
int parse_and_run(iterate_args& a) {
  a.choice = nashprune_tool::parse_loss_method(a.method);
  return run(a);
}

const nashprune_tool::register_command ablation_prune_command{nashprune_tool::make_command<iterate_args>(
    "ablation-prune", "Choose heads in rounds, re-measuring the ablation loss model given those removed so far (llama.cpp)",
    "nashprune ablation-prune stories260K.gguf --text calibration.txt --target 0.25 --rounds 2 -o plan.json", add_options,
    parse_and_run)};

}  // namespace
