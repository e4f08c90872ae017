// The ablation loss model and the choice on it (see ablation_model.hpp).
#include "ablation_model.hpp"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "command.hpp"

namespace nashprune_tool {
namespace {

namespace np = nashprune;

/// Every removal set of `g` that `granularity` allows and keeps at least `min_keep` heads
/// (by subset enumeration: layers of at most 20 heads).
np::loss_slot layer_options(const np::attention_geometry& g, np::head_granularity granularity, std::int64_t min_keep, std::int64_t first) {
  const std::int64_t n = g.n_head();
  if (n > 20) throw usage_error("the ablation choice enumerates the removal sets of a layer: at most 20 heads, got " + std::to_string(n));
  np::loss_slot out;
  for (std::uint32_t mask = 0; mask < (1U << n); ++mask) {
    std::vector<std::int64_t> per_group(static_cast<std::size_t>(g.n_head_kv()), 0);
    std::vector<std::int64_t> set;
    for (std::int64_t h = 0; h < n; ++h)
      if (mask >> h & 1U) set.push_back(first + h), ++per_group[static_cast<std::size_t>(h / g.group_size())];
    if (n - static_cast<std::int64_t>(set.size()) < min_keep) continue;
    bool allowed = true;
    for (const auto c : per_group) {
      if (granularity == np::head_granularity::heads_per_group) allowed = allowed && c == per_group.front();
      if (granularity == np::head_granularity::whole_groups) allowed = allowed && (c == 0 || c == g.group_size());
    }
    if (allowed) out.push_back(set);
  }
  return out;
}

/// The layer holding unit u.
std::size_t layer_of(const ablation_layout& layout, std::int64_t u) {
  std::size_t l = 0;
  while (l + 1 < layout.layers.size() && layout.layers[l + 1].first <= u) ++l;
  return l;
}

}  // namespace

ablation_layout make_ablation_layout(const gguf::llama_shape& shape, const np::nash_decision_options<double>& decisions) {
  ablation_layout out;
  for (const auto& s : shape.layers) {
    const np::attention_geometry g(s.n_head, s.n_head_kv, shape.head_dim_k, shape.head_dim_v);
    const auto granularity = g.is_multi_head() ? np::head_granularity::single_heads : np::head_granularity::heads_per_group;
    out.layers.push_back({out.units, g, granularity});
    out.slots.push_back(layer_options(g, granularity, np::seed_min_keep(s.n_head, decisions), out.units));
    out.units += s.n_head;
  }
  return out;
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

loss_choice choose_by_loss(const loss_model& model, const ablation_layout& layout, const std::string& method, std::int64_t requested,
                           const np::nash_decision_options<double>& decisions, bool lowest_price) {
  if (method != "nash" && method != "exact" && method != "greedy") throw usage_error("--method must be nash, exact or greedy, got '" + method + "'");
  const auto given_count = static_cast<std::int64_t>(model.given.size());
  if (requested < given_count) {
    throw usage_error("the target asks for " + std::to_string(requested) + " heads, fewer than the " + std::to_string(given_count) + " removed already");
  }
  loss_choice out;
  if (method == "nash") {
    np::price_search_options<double> search;
    search.decisions = decisions;
    search.lowest_price = lowest_price;
    const auto found = np::search_loss_price(model.delta, model.interaction, std::span<const np::loss_layer>(layout.layers), requested, search,
                                             np::active_set_newton<double>(), std::span<const std::int64_t>(model.given));
    out.plans = found.plans;
    out.price = found.price;
    std::ostringstream how;
    how << "nash: price " << found.price << " after " << found.solves << " solves";
    out.how = how.str();
  } else {
    // The options of each layer that hold its given units (all of them, or the layer cannot be cut so).
    std::vector<np::loss_slot> slots(layout.slots.size());
    for (std::size_t l = 0; l < slots.size(); ++l) {
      std::vector<std::int64_t> need;
      for (const auto u : model.given)
        if (layer_of(layout, u) == l) need.push_back(u);
      for (const auto& option : layout.slots[l])
        if (std::includes(option.begin(), option.end(), need.begin(), need.end())) slots[l].push_back(option);
      if (slots[l].empty()) throw usage_error("the given heads of layer " + std::to_string(l) + " are not a removal its GQA structure allows");
    }
    const Eigen::MatrixXd used = method == "exact" ? model.interaction : Eigen::MatrixXd::Zero(model.delta.size(), model.delta.size());
    np::exact_loss_result<double> best;
    for (std::int64_t size = requested; size >= given_count && !std::isfinite(best.loss); --size) {
      best = np::exact_loss_choice(model.delta, used, std::span<const np::loss_slot>(slots), size);
    }
    if (!std::isfinite(best.loss)) throw usage_error("no GQA-consistent removal of at most " + std::to_string(requested) + " heads holds the given heads");
    out.how = method + ": " + std::to_string(best.candidates) + " sets enumerated";
    for (std::size_t l = 0; l < layout.layers.size(); ++l) {
      std::vector<std::int64_t> local;
      for (const auto u : slots[l][best.choice[l]]) local.push_back(u - layout.layers[l].first);
      out.plans.push_back(layout.layers[l].geometry.plan_removing(layout.layers[l].granularity, local));
    }
  }
  for (std::size_t l = 0; l < out.plans.size(); ++l) {
    const auto& layer = layout.layers[l];
    for (std::int64_t h = 0; h < layer.geometry.n_head(); ++h)
      if (!std::binary_search(out.plans[l].q_heads.begin(), out.plans[l].q_heads.end(), h)) out.removed.push_back(layer.first + h);
  }
  for (const auto u : model.given) {
    if (!std::binary_search(out.removed.begin(), out.removed.end(), u)) {
      throw usage_error("the given heads are not a GQA-consistent removal: head " + head_list(layout, {u}) + " stays in the plan");
    }
  }
  out.modelled = np::removal_loss(model.delta, model.interaction, std::span<const std::int64_t>(out.removed));
  return out;
}

gguf::prune_plan plan_of(const gguf::llama_shape& shape, const loss_choice& choice) {
  auto plan = gguf::keep_all(shape);
  for (std::size_t l = 0; l < choice.plans.size(); ++l) plan.layers[l].heads = choice.plans[l];
  return plan;
}

std::string head_list(const ablation_layout& layout, const std::vector<std::int64_t>& units) {
  std::string out;
  for (const auto u : units) {
    const auto l = layer_of(layout, u);
    out += (out.empty() ? "" : ",") + std::to_string(l) + ":" + std::to_string(u - layout.layers[l].first);
  }
  return out;
}

}  // namespace nashprune_tool
