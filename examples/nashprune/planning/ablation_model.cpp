// The ablation loss model and the choice on it (see ablation_model.hpp).
#include "planning/ablation_model.hpp"

#include <algorithm>
#include <cmath>
#include <iostream>
#include <sstream>
#include <tuple>

#include "command.hpp"
#include "io/plan_io.hpp"
#include "planning/prune_planner.hpp"

namespace nashprune_tool {

namespace np = nashprune;

ablation_layout make_ablation_layout(const gguf::llama_shape& shape, const np::nash_decision_options<double>& decisions) {
  std::vector<np::attention_geometry> geometries;
  for (const auto& s : shape.layers) geometries.emplace_back(s.n_head, s.n_head_kv, shape.head_dim_k, shape.head_dim_v);
  return np::make_loss_layout(geometries, decisions);
}

loss_terms read_loss_terms(const nlohmann::json& doc, const std::vector<std::vector<std::int64_t>>& expected, const std::string& count_mismatch) {
  const auto units = doc.at("units").get<std::vector<std::vector<std::int64_t>>>();
  if (units.size() != expected.size()) throw usage_error("the ablation file does not match the model: " + count_mismatch);
  for (std::size_t u = 0; u < expected.size(); ++u) {
    if (units[u] == expected[u]) continue;
    std::string should;
    for (const auto v : expected[u]) should += (should.empty() ? "" : ", ") + std::to_string(v);
    throw usage_error("the ablation file does not match the model: unit " + std::to_string(u) + " should be [" + should + "]");
  }
  const auto n = static_cast<Eigen::Index>(expected.size());
  const auto d = doc.at("delta").get<std::vector<double>>();
  const auto inter = doc.at("interaction").get<std::vector<std::vector<double>>>();
  if (static_cast<Eigen::Index>(d.size()) != n || static_cast<Eigen::Index>(inter.size()) != n) throw usage_error("the ablation file's delta/interaction do not have one entry per unit");
  loss_terms out{Eigen::VectorXd(n), Eigen::MatrixXd(n, n)};
  for (Eigen::Index i = 0; i < n; ++i) {
    out.delta(i) = d[static_cast<std::size_t>(i)];
    if (static_cast<Eigen::Index>(inter[static_cast<std::size_t>(i)].size()) != n) throw usage_error("interaction row " + std::to_string(i) + " has the wrong length");
    for (Eigen::Index j = 0; j < n; ++j) out.interaction(i, j) = inter[static_cast<std::size_t>(i)][static_cast<std::size_t>(j)];
  }
  return out;
}

loss_model loss_model_from_json(const nlohmann::json& doc, const ablation_layout& layout) {
  std::vector<std::vector<std::int64_t>> expected;
  for (std::size_t l = 0; l < layout.layers.size(); ++l)
    for (std::int64_t h = 0; h < layout.layers[l].geometry.n_head(); ++h) expected.push_back({static_cast<std::int64_t>(l), h});
  const auto units_in_file = doc.at("units").size();
  auto terms = read_loss_terms(doc, expected, std::to_string(units_in_file) + " units, the model has " + std::to_string(layout.units) + " heads");
  loss_model out;
  out.l0 = doc.at("l0").get<double>();
  out.delta = std::move(terms.delta);
  out.interaction = std::move(terms.interaction);
  const auto& units = expected;
  // "given" (conditional ablation): [layer, head] pairs removed before measuring.
  for (const auto& g : doc.value("given", std::vector<std::vector<std::int64_t>>{})) {
    const auto at = std::find(units.begin(), units.end(), g);
    if (g.size() != 2 || at == units.end()) throw usage_error("the ablation file's given head " + nlohmann::json(g).dump() + " is not a unit of the model");
    out.given.push_back(at - units.begin());
  }
  std::sort(out.given.begin(), out.given.end());
  if (std::adjacent_find(out.given.begin(), out.given.end()) != out.given.end()) throw usage_error("the ablation file repeats a given head");
  return out;
}

void add_loss_method_options(CLI::App& app, loss_method_args& args) {
  app.add_option("--game", args.game, "ablation (default): the single losses and their interactions; none: the single losses alone");
  app.add_option("--selector", args.selector,
                 "greedy: the price search of the game (the default for heads); exact: the enumeration of the "
                 "GQA-consistent sets (the default with --game none, and the only one for blocks)");
  app.add_option("--method", args.method, "deprecated: --game and --selector");
  app.add_flag("--lowest-price", args.lowest_price, "--selector greedy: the lowest price whose plans reach the target (not the first found)");
}

loss_method parse_loss_method(const loss_method_args& args) {
  const auto& [game, selector, method] = std::tie(args.game, args.selector, args.method);
  loss_method out;
  if (!method.empty()) {
    if (!game.empty() || !selector.empty()) throw usage_error("--method is the deprecated spelling of --game and --selector: give one or the other");
    if (method != "nash" && method != "exact" && method != "greedy") throw usage_error("--method must be nash, exact or greedy, got '" + method + "'");
    out = {method == "greedy" ? np::head_game::none : np::head_game::ablation, method == "nash" ? np::selector::greedy : np::selector::exact};
    warn_deprecated("--method is", {out.game, *out.selection});
    return out;
  }
  if (!game.empty()) out.game = parse_game(game);
  if (out.game != np::head_game::ablation && out.game != np::head_game::none) {
    throw usage_error("--game must be ablation or none on the loss model of nashprune ablate, got '" + game + "'");
  }
  if (!selector.empty()) out.selection = parse_selector(selector);
  if (out.game == np::head_game::none && out.selection == np::selector::greedy) {
    throw usage_error("--game none (the single losses alone) chooses by enumeration: --selector exact");
  }
  return out;
}

loss_choice choose_by_loss(const loss_model& model, const ablation_layout& layout, const loss_method& method, std::int64_t requested,
                           const np::nash_decision_options<double>& decisions, bool lowest_price) {
  const auto how = method.selection.value_or(method.game == np::head_game::ablation ? np::selector::greedy : np::selector::exact);
  loss_choice out{np::choose_heads_by_loss(model, layout, method.game, how, requested, decisions, lowest_price), {}};
  std::ostringstream line;
  line << "game " << np::head_game_names[static_cast<std::size_t>(method.game)] << ", selector " << np::selector_names[static_cast<std::size_t>(how)];
  if (how == np::selector::greedy) {
    line << ": price " << out.price << " after " << out.solves << " solves";
  } else {
    line << ": " << out.candidates << " sets enumerated";
  }
  out.how = line.str();
  return out;
}

gguf::prune_plan plan_of(const gguf::llama_shape& shape, const loss_choice& choice) {
  auto plan = gguf::keep_all(shape);
  for (std::size_t l = 0; l < choice.plans.size(); ++l) plan.layers[l].heads = choice.plans[l];
  return plan;
}

void write_head_plan(const std::string& path, const gguf::reader& model, const gguf::llama_shape& shape, const loss_choice& choice,
                     double fraction) {
  const auto plan = plan_of(shape, choice);
  np::pruning_options target;
  target.unit = np::budget_unit::heads;
  target.target = fraction;
  target.structures = {np::structure::heads};
  const auto result = gguf::plan_output(model, shape, plan, {});
  const auto outcome = outcome_of(target, np::reach_of(shape_scores(shape), target), shape, result.shape, gguf::totals(model.tensors()),
                                  gguf::totals(result.tensors));
  print_target(std::cout, outcome);
  write_plan_json(path, plan, target_summary(outcome));
  std::cout << "wrote " << path << '\n';
}

std::string head_list(const ablation_layout& layout, const std::vector<std::int64_t>& units) {
  std::string out;
  for (const auto u : units) {
    const auto l = layout.layer_of(u);
    out += (out.empty() ? "" : ",") + std::to_string(l) + ":" + std::to_string(u - layout.layers[l].first);
  }
  return out;
}

}  // namespace nashprune_tool
