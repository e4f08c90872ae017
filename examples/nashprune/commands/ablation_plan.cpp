// `nashprune ablation-plan MODEL.gguf --ablation ABLATION.json [--game ablation|none]
// [--selector greedy|exact] --target F -o PLAN.json`: chooses the query
// heads to remove (at most F of all heads, whole GQA steps, as `prune --unit
// heads`) from the loss model measured by `nashprune ablate`
// (nashprune/loss_interaction.hpp): the greedy selector searches the price of one
// game over every head (cross-layer interactions included), the exact selector
// enumerates the GQA-consistent sets of each layer jointly for the least modelled
// loss, and --game none drops the interactions (the single score δ_i alone).
// An ablation measured with heads removed already (ablate --given) keeps them
// removed and chooses among the others (the conditional, re-linearised model).
// Apply the plan with `nashprune prune MODEL OUT --plan PLAN.json` (or prune
// --redundancy ablation --ablation ABLATION.json in one step).
// An ablation of whole blocks (`ablate --units layers|attn-blocks|mlp-blocks`)
// chooses --count blocks instead (block_ablation.hpp: exact over the measured
// singles and pairs, or the singles alone with --game none), layer 0 frozen
// unless --freeze-first 0.
#include <cmath>
#include <iostream>
#include <memory>

#include "planning/ablation_model.hpp"
#include "planning/block_ablation.hpp"
#include "planning/prune_planner.hpp"
#include "command.hpp"
#include "io/json_io.hpp"
#include "io/plan_io.hpp"

namespace {

namespace np = nashprune;
using nashprune_tool::usage_error;

struct plan_args {
  std::string model, ablation, plan_out;
  nashprune_tool::loss_method_args method;
  nashprune_tool::loss_method choice;  // the selector defaults to greedy for heads, exact for blocks
  double target = 0.25;
  nashprune_tool::block_plan_options blocks;  // block units only
};

int run_blocks(const plan_args& a, const nlohmann::json& doc) {
  if (!(a.target >= 0 && a.target < 1)) throw usage_error("--target must be in [0, 1)");
  const auto model = gguf::reader::open(a.model);
  auto options = a.blocks;
  options.target = a.target;
  options.method = a.choice;
  const auto plan = nashprune_tool::plan_block_ablation(gguf::llama_shape::read(model), doc, options);
  nashprune_tool::write_plan_json(a.plan_out, plan);
  std::cout << "wrote " << a.plan_out << '\n';
  return 0;
}

int run(plan_args a) {
  const auto doc = nashprune_tool::json_io::read_document(a.ablation);
  if (doc.contains("unit_kind")) return run_blocks(a, doc);
  if (!(a.target >= 0 && a.target < 1)) throw usage_error("--target must be in [0, 1)");
  const auto model = gguf::reader::open(a.model);
  const auto shape = gguf::llama_shape::read(model);
  const np::nash_decision_options<double> decisions{};
  const auto layout = nashprune_tool::make_ablation_layout(shape, decisions);
  const auto loss = nashprune_tool::loss_model_from_json(doc, layout);
  const auto requested = static_cast<std::int64_t>(std::floor(a.target * static_cast<double>(layout.units) + 1e-9));
  const auto choice = nashprune_tool::choose_by_loss(loss, layout, a.choice, requested, decisions, a.method.lowest_price);
  std::cout << choice.how << '\n';
  std::cout << "requested " << requested << " heads, removing " << choice.removed.size() << "; modelled loss increase " << choice.modelled << " (L0 " << loss.l0
            << (loss.given.empty() ? "" : ", given " + std::to_string(loss.given.size()) + " heads removed") << ")\n";
  for (std::size_t l = 0; l < choice.plans.size(); ++l) {
    std::cout << "  layer " << l << ": heads removed [";
    const char* sep = "";
    for (const auto u : choice.removed)
      if (u >= layout.layers[l].first && u < layout.layers[l].first + layout.layers[l].geometry.n_head()) std::cout << sep << u - layout.layers[l].first, sep = " ";
    std::cout << "]\n";
  }
  std::cout << "removed: " << nashprune_tool::head_list(layout, choice.removed) << '\n';
  nashprune_tool::write_head_plan(a.plan_out, model, shape, choice, a.target);
  return 0;
}

void add_options(CLI::App& app, plan_args& a) {
  app.add_option("model", a.model, "the GGUF the ablation was measured on")->required();
  app.add_option("--ablation", a.ablation, "output of `nashprune ablate`")->required();
  nashprune_tool::add_loss_method_options(app, a.method);
  app.add_option("--target", a.target, "fraction of the query heads to remove at most (whole GQA steps)")->capture_default_str();
  app.add_option("-o,--output,--plan-out", a.plan_out, "plan JSON to write")->required();
  app.add_option("--count", a.blocks.count, "block units: how many to remove (default: --target of them)");
  app.add_option("--freeze-first", a.blocks.freeze_first, "block units: never remove the first N layers' blocks")->capture_default_str();
  app.add_option("--freeze-last", a.blocks.freeze_last, "block units: never remove the last N layers' blocks")->capture_default_str();
}

// The options parsed into their types, then the run.
int parse_and_run(plan_args& a) {
  a.choice = nashprune_tool::parse_loss_method(a.method);
  return run(a);
}

const nashprune_tool::register_command ablation_plan_command{nashprune_tool::make_command<plan_args>(
    "ablation-plan", "Choose heads or blocks to remove from an ablation loss model and write a plan for prune --plan",
    "nashprune ablation-plan stories260K.gguf --ablation ablation.json --target 0.25 -o plan.json", add_options, parse_and_run)};

}  // namespace
