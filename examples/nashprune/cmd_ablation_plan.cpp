// `nashprune ablation-plan MODEL.gguf --ablation ABLATION.json --method nash|exact|greedy --target F --plan-out PLAN.json`:
// chooses the query heads to remove (at most F of all heads, whole GQA steps, as
// `prune --unit heads`) from the loss model measured by `nashprune ablate`
// (nashprune/loss_interaction.hpp): nash searches the price of one game over
// every head (cross-layer interactions included), exact enumerates the
// GQA-consistent sets of each layer jointly for the least modelled loss, greedy
// does the same with the interactions dropped (the single score δ_i alone).
// Apply the plan with `nashprune prune MODEL OUT --plan PLAN.json`.
// An ablation of whole blocks (`ablate --units layers|attn-blocks|mlp-blocks`)
// chooses --count blocks instead (block_ablation.hpp: exact over the measured
// singles and pairs, or greedy), layer 0 frozen unless --freeze-first 0.
#include <nashprune/loss_interaction.hpp>

#include <gguf/llama_model.hpp>
#include <gguf/prune_plan.hpp>

#include <cmath>
#include <iostream>
#include <memory>

#include "block_ablation.hpp"
#include "command.hpp"
#include "json_io.hpp"
#include "report.hpp"

namespace {

namespace np = nashprune;
using nashprune_tool::usage_error;

struct plan_args {
  std::string model, ablation, method, plan_out;  // method: nash for heads, exact for blocks when not given
  double target = 0.25;
  nashprune_tool::block_plan_options blocks;  // block units only
};

/// Every removal set of `g` that `granularity` allows and keeps at least `min_keep` heads
/// (by subset enumeration: layers of at most 20 heads).
np::loss_slot layer_options(const np::attention_geometry& g, np::head_granularity granularity, std::int64_t min_keep, std::int64_t first) {
  const std::int64_t n = g.n_head();
  if (n > 20) throw usage_error("ablation-plan enumerates the removal sets of a layer: at most 20 heads, got " + std::to_string(n));
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

int run_blocks(const plan_args& a, const nlohmann::json& doc) {
  if (!(a.target >= 0 && a.target < 1)) throw usage_error("--target must be in [0, 1)");
  const auto model = gguf::reader::open(a.model);
  auto options = a.blocks;
  options.target = a.target;
  if (!a.method.empty()) options.method = a.method;
  const auto plan = nashprune_tool::plan_block_ablation(gguf::llama_shape::read(model), doc, options);
  nashprune_tool::write_plan_json(a.plan_out, plan);
  std::cout << "wrote " << a.plan_out << '\n';
  return 0;
}

int run(plan_args a) {
  const auto doc = nashprune_tool::json_io::read_document(a.ablation);
  if (doc.contains("unit_kind")) return run_blocks(a, doc);
  if (a.method.empty()) a.method = "nash";
  if (a.method != "nash" && a.method != "exact" && a.method != "greedy") throw usage_error("--method must be nash, exact or greedy, got '" + a.method + "'");
  if (!(a.target >= 0 && a.target < 1)) throw usage_error("--target must be in [0, 1)");
  const auto model = gguf::reader::open(a.model);
  const auto shape = gguf::llama_shape::read(model);
  const std::vector<std::vector<std::int64_t>> units = doc.at("units").get<std::vector<std::vector<std::int64_t>>>();
  const np::nash_decision_options<double> decisions{};
  std::vector<np::loss_layer> layers;
  std::vector<np::loss_slot> slots;
  std::int64_t next = 0;
  for (std::size_t l = 0; l < shape.layers.size(); ++l) {
    const auto& s = shape.layers[l];
    const np::attention_geometry g(s.n_head, s.n_head_kv, shape.head_dim_k, shape.head_dim_v);
    const auto granularity = g.is_multi_head() ? np::head_granularity::single_heads : np::head_granularity::heads_per_group;
    for (std::int64_t h = 0; h < s.n_head; ++h) {
      const auto u = static_cast<std::size_t>(next + h);
      if (u >= units.size() || units[u] != std::vector<std::int64_t>{static_cast<std::int64_t>(l), h}) {
        throw usage_error("the ablation file does not match the model: unit " + std::to_string(u) + " should be [" + std::to_string(l) + ", " + std::to_string(h) + "]");
      }
    }
    layers.push_back({next, g, granularity});
    slots.push_back(layer_options(g, granularity, np::seed_min_keep(s.n_head, decisions), next));
    next += s.n_head;
  }
  if (static_cast<std::size_t>(next) != units.size()) throw usage_error("the ablation file does not match the model: " + std::to_string(units.size()) + " units, the model has " + std::to_string(next) + " heads");
  const auto n = static_cast<Eigen::Index>(next);
  Eigen::VectorXd delta(n);
  Eigen::MatrixXd interaction(n, n);
  const auto d = doc.at("delta").get<std::vector<double>>();
  const auto inter = doc.at("interaction").get<std::vector<std::vector<double>>>();
  if (static_cast<Eigen::Index>(d.size()) != n || static_cast<Eigen::Index>(inter.size()) != n) throw usage_error("the ablation file's delta/interaction do not have one entry per unit");
  for (Eigen::Index i = 0; i < n; ++i) {
    delta(i) = d[static_cast<std::size_t>(i)];
    if (static_cast<Eigen::Index>(inter[static_cast<std::size_t>(i)].size()) != n) throw usage_error("interaction row " + std::to_string(i) + " has the wrong length");
    for (Eigen::Index j = 0; j < n; ++j) interaction(i, j) = inter[static_cast<std::size_t>(i)][static_cast<std::size_t>(j)];
  }
  const auto requested = static_cast<std::int64_t>(std::floor(a.target * static_cast<double>(n) + 1e-9));
  std::vector<np::head_keep_plan> plans;
  std::vector<std::int64_t> removed;
  if (a.method == "nash") {
    const auto found = np::search_loss_price(delta, interaction, std::span<const np::loss_layer>(layers), requested);
    plans = found.plans;
    std::cout << "nash: price " << found.price << " after " << found.solves << " solves\n";
  } else {
    const Eigen::MatrixXd used = a.method == "exact" ? interaction : Eigen::MatrixXd::Zero(n, n);
    np::exact_loss_result<double> best;
    for (std::int64_t size = requested; size >= 0 && !std::isfinite(best.loss); --size) best = np::exact_loss_choice(delta, used, std::span<const np::loss_slot>(slots), size);
    std::cout << a.method << ": " << best.candidates << " sets enumerated\n";
    for (std::size_t l = 0; l < layers.size(); ++l) {
      std::vector<std::int64_t> local;
      for (const auto u : slots[l][best.choice[l]]) local.push_back(u - layers[l].first);
      plans.push_back(layers[l].geometry.plan_removing(layers[l].granularity, local));
    }
  }
  auto plan = gguf::keep_all(shape);
  for (std::size_t l = 0; l < plans.size(); ++l) {
    plan.layers[l].heads = plans[l];
    std::vector<bool> kept(static_cast<std::size_t>(layers[l].geometry.n_head()), false);
    for (const auto h : plans[l].q_heads) kept[static_cast<std::size_t>(h)] = true;
    for (std::int64_t h = 0; h < layers[l].geometry.n_head(); ++h)
      if (!kept[static_cast<std::size_t>(h)]) removed.push_back(layers[l].first + h);
  }
  std::cout << "requested " << requested << " heads, removing " << removed.size() << "; modelled loss increase "
            << np::removal_loss(delta, interaction, std::span<const std::int64_t>(removed)) << " (L0 " << doc.at("l0").get<double>() << ")\n";
  for (std::size_t l = 0; l < plans.size(); ++l) {
    std::cout << "  layer " << l << ": heads removed [";
    const char* sep = "";
    for (const auto u : removed)
      if (u >= layers[l].first && u < layers[l].first + layers[l].geometry.n_head()) std::cout << sep << u - layers[l].first, sep = " ";
    std::cout << "]\n";
  }
  nashprune_tool::write_plan_json(a.plan_out, plan);
  std::cout << "wrote " << a.plan_out << '\n';
  return 0;
}

const nashprune_tool::register_command ablation_plan_command{{
    "ablation-plan", "Choose heads to remove from an ablation loss model (nash | exact | greedy) and write a plan for prune --plan",
    [](CLI::App& app) -> std::function<int()> {
      auto a = std::make_shared<plan_args>();
      app.add_option("model", a->model, "the GGUF the ablation was measured on")->required();
      app.add_option("--ablation", a->ablation, "output of `nashprune ablate`")->required();
      app.add_option("--method", a->method,
                     "nash | exact | greedy (greedy: the single score delta alone); default nash for heads, exact for blocks "
                     "(block units: exact or greedy)");
      app.add_option("--target", a->target, "fraction of the query heads to remove at most (whole GQA steps)")->capture_default_str();
      app.add_option("--plan-out", a->plan_out, "plan JSON to write")->required();
      app.add_option("--count", a->blocks.count, "block units: how many to remove (default: --target of them)");
      app.add_option("--freeze-first", a->blocks.freeze_first, "block units: never remove the first N layers' blocks")->capture_default_str();
      app.add_option("--freeze-last", a->blocks.freeze_last, "block units: never remove the last N layers' blocks")->capture_default_str();
      return [a] { return run(*a); };
    }}};

}  // namespace
