// `nashprune select`: global selection of the structures to prune under a budget.
//
// Input (a file, or standard input with "-"):
//   {"budget": {"fraction": f} | {"parameters": p},
//    "items": [{"layer": l, "kind": "mlp_channel", "index": i, "importance": x, "cost": c}, ...],
//             (kinds may be mixed: an attention_block, mlp_block or whole_layer item holds
//              the finer items of its layer, see global_selection.hpp; the fraction is
//              of the total with each container counted once)
//    "constraints": {"n_layers", "freeze_first_layers", "freeze_last_layers",
//                    "max_layer_prune_ratio", "layer_max_prune_ratio": [...],
//                    "min_kept": [{"kind", "count", "layer"}]},          (optional)
//    "exact": false, "max_nodes": 20000000}                             (optional)
// Output: {"pruned": [item positions], "achieved": {"parameters", "fraction"},
//          "objective", "lower_bound", "proven_optimal", "budget", "method", "nodes"}.
// A malformed field exits with code 2 and a one-line error naming it.
#include <nashprune/pruning_plan.hpp>

#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "command.hpp"
#include "io/json_io.hpp"

namespace {

using nashprune_tool::json_io::json;
namespace jio = nashprune_tool::json_io;
namespace np = nashprune;

np::item_kind parse_kind(const json& value, const std::string& path) {
  const std::string name = jio::as_string(value, path);
  if (const auto kind = np::find_item_kind(name)) return *kind;
  std::string known;
  for (const auto k : np::item_kind_names) known += (known.empty() ? "" : ", ") + std::string(k);
  jio::fail(path, "unknown kind '" + name + "' (expected one of " + known + ")");
}

std::vector<np::selection_item<double>> parse_items(const json& doc) {
  const json& array = jio::require_array(jio::field(doc, "", "items"), "items");
  if (array.empty()) jio::fail("items", "is empty");
  std::vector<np::selection_item<double>> items;
  items.reserve(array.size());
  for (std::size_t i = 0; i < array.size(); ++i) {
    const std::string path = jio::element("items", i);
    const json& it = array[i];
    jio::require_known_fields(it, path, {"layer", "kind", "index", "importance", "cost"});
    np::selection_item<double> item;
    item.layer = jio::as_integer(jio::field(it, path, "layer"), path + ".layer");
    item.kind = parse_kind(jio::field(it, path, "kind"), path + ".kind");
    item.index = jio::as_integer(jio::field(it, path, "index"), path + ".index");
    item.importance = jio::as_number(jio::field(it, path, "importance"), path + ".importance");
    item.cost = jio::as_integer(jio::field(it, path, "cost"), path + ".cost");
    if (item.layer < 0) jio::fail(path + ".layer", "negative");
    if (item.index < 0) jio::fail(path + ".index", "negative");
    if (item.importance < 0) jio::fail(path + ".importance", "negative");
    if (item.cost <= 0) jio::fail(path + ".cost", "must be positive, got " + std::to_string(item.cost));
    items.push_back(item);
  }
  return items;
}

np::selection_constraints parse_constraints(const json& doc) {
  np::selection_constraints c;
  const json* object = jio::optional_field(doc, "", "constraints");
  if (object == nullptr) return c;
  const std::string p = "constraints";
  jio::require_known_fields(*object, p, {"n_layers", "freeze_first_layers", "freeze_last_layers", "max_layer_prune_ratio",
                                         "layer_max_prune_ratio", "min_kept"});
  if (const json* v = jio::optional_field(*object, p, "n_layers")) c.n_layers = jio::as_integer(*v, p + ".n_layers");
  if (const json* v = jio::optional_field(*object, p, "freeze_first_layers")) c.freeze_first_layers = jio::as_integer(*v, p + ".freeze_first_layers");
  if (const json* v = jio::optional_field(*object, p, "freeze_last_layers")) c.freeze_last_layers = jio::as_integer(*v, p + ".freeze_last_layers");
  if (const json* v = jio::optional_field(*object, p, "max_layer_prune_ratio")) {
    c.max_layer_prune_ratio = jio::as_number(*v, p + ".max_layer_prune_ratio");
  }
  if (const json* v = jio::optional_field(*object, p, "layer_max_prune_ratio")) {
    const std::string path = p + ".layer_max_prune_ratio";
    for (std::size_t l = 0; l < jio::require_array(*v, path).size(); ++l) c.layer_max_prune_ratio.push_back(jio::as_number((*v)[l], jio::element(path, l)));
  }
  if (const json* v = jio::optional_field(*object, p, "min_kept")) {
    const std::string path = p + ".min_kept";
    for (std::size_t r = 0; r < jio::require_array(*v, path).size(); ++r) {
      const std::string rp = jio::element(path, r);
      jio::require_known_fields((*v)[r], rp, {"kind", "count", "layer"});
      np::min_kept_rule rule;
      rule.kind = parse_kind(jio::field((*v)[r], rp, "kind"), rp + ".kind");
      rule.count = jio::as_integer(jio::field((*v)[r], rp, "count"), rp + ".count");
      if (const json* layer = jio::optional_field((*v)[r], rp, "layer")) rule.layer = jio::as_integer(*layer, rp + ".layer");
      c.min_kept.push_back(rule);
    }
  }
  return c;
}

std::int64_t parse_budget(const json& doc, std::int64_t total) {
  const json& budget = jio::require_object(jio::field(doc, "", "budget"), "budget");
  jio::require_known_fields(budget, "budget", {"fraction", "parameters"});
  const json* fraction = jio::optional_field(budget, "budget", "fraction");
  const json* parameters = jio::optional_field(budget, "budget", "parameters");
  if ((fraction == nullptr) == (parameters == nullptr)) jio::fail("budget", "give exactly one of 'fraction' or 'parameters'");
  if (fraction != nullptr) {
    const double f = jio::as_number(*fraction, "budget.fraction");
    if (!(f >= 0.0 && f <= 1.0)) jio::fail("budget.fraction", "must lie in [0, 1], got " + jio::shown(*fraction));
    return np::budget_from_fraction(f, total);
  }
  const std::int64_t p = jio::as_integer(*parameters, "budget.parameters");
  if (p < 0 || p > total) jio::fail("budget.parameters", std::to_string(p) + " lies outside [0, total cost " + std::to_string(total) + "]");
  return p;
}

int run_select(const std::string& input, const std::string& output) {
  const json doc = jio::read_document(input);
  jio::require_known_fields(doc, "", {"budget", "items", "constraints", "exact", "max_nodes"});
  const auto items = parse_items(doc);
  const std::int64_t total = np::selection_total_cost<double>(items);  // a container counted once
  const std::int64_t budget = parse_budget(doc, total);
  const auto constraints = parse_constraints(doc);
  np::exact_options options;
  const json* exact_field = jio::optional_field(doc, "", "exact");
  const bool exact = exact_field != nullptr && jio::as_bool(*exact_field, "exact");
  if (const json* v = jio::optional_field(doc, "", "max_nodes")) options.max_nodes = jio::as_integer(*v, "max_nodes");
  const auto r = np::select_items<double>(items, budget, constraints, exact ? np::selector::exact : np::selector::greedy, options);
  nlohmann::ordered_json out;
  out["pruned"] = r.pruned;
  out["achieved"] = {{"parameters", r.achieved}, {"fraction", r.achieved_fraction()}};
  out["objective"] = r.objective;
  out["lower_bound"] = r.lower_bound;
  out["proven_optimal"] = r.proven_optimal;
  out["budget"] = {{"parameters", budget}, {"total", r.total_cost}};
  out["method"] = !exact ? "greedy"
                  : r.algorithm == np::exact_algorithm::dynamic_programming ? "exact (dynamic programming)"
                                                                             : "exact (branch and bound)";
  if (exact) out["nodes"] = r.nodes;
  jio::write_document(output, out);
  return 0;
}

struct select_args {
  std::string input = "-";
  std::string output;  // empty: standard output
};

void add_options(CLI::App& app, select_args& a) {
  app.add_option("input", a.input, "Selection problem as JSON ('-' = standard input)");
  app.add_option("-o,--output", a.output, "Write the result here instead of standard output");
}

const nashprune_tool::register_command select_command{nashprune_tool::make_command<select_args>(
    "select", "Choose the structures to prune under a parameter budget (JSON in, JSON out)",
    "nashprune select problem.json -o selection.json", add_options,
    [](const select_args& a) { return run_select(a.input, a.output); })};

}  // namespace
