// See block_ablation.hpp.
#include "planning/block_ablation.hpp"

#include <nashprune/loss_interaction.hpp>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <limits>

#include "command.hpp"

namespace nashprune_tool {
namespace {

// C(n, k), saturating at the int64 maximum.
std::int64_t choose(std::int64_t n, std::int64_t k) {
  double c = 1;
  for (std::int64_t i = 1; i <= k; ++i) c = c * static_cast<double>(n - k + i) / static_cast<double>(i);
  return c >= 9e18 ? std::numeric_limits<std::int64_t>::max() : static_cast<std::int64_t>(std::llround(c));
}

}  // namespace

bool is_block_kind(const std::string& kind) { return kind == "layers" || kind == "attn-blocks" || kind == "mlp-blocks"; }

std::vector<std::int64_t> block_unit_layers(const gguf::llama_shape& shape, const std::string& kind) {
  if (!is_block_kind(kind)) throw usage_error("unknown block kind '" + kind + "' (layers, attn-blocks, mlp-blocks)");
  std::vector<std::int64_t> layers;
  for (std::int64_t l = 0; l < shape.n_layer(); ++l) {
    const auto& s = shape.layers[static_cast<std::size_t>(l)];
    if (kind == "layers" || (kind == "attn-blocks" ? s.n_head : s.n_ff) > 0) layers.push_back(l);
  }
  return layers;
}

gguf::prune_plan plan_block_ablation(const gguf::llama_shape& shape, const nlohmann::json& doc, const block_plan_options& o) {
  const auto kind = doc.at("unit_kind").get<std::string>();
  const auto layers = block_unit_layers(shape, kind);
  std::vector<std::vector<std::int64_t>> expected;
  for (const auto l : layers) expected.push_back({l});
  const auto n = static_cast<std::int64_t>(layers.size());
  auto terms = read_loss_terms(doc, expected, std::to_string(doc.at("units").size()) + " " + kind + " units, the model has " + std::to_string(n));
  if (o.method.selection == nashprune::selector::greedy) throw usage_error("--selector greedy is the price search over heads: " + kind + " units take --selector exact");
  const bool interactions = o.method.game == nashprune::head_game::ablation;
  if (o.freeze_first < 0 || o.freeze_last < 0) throw usage_error("--freeze-first/--freeze-last must not be negative");
  const auto seen = doc.at("measured").get<std::vector<std::vector<int>>>();
  if (static_cast<std::int64_t>(seen.size()) != n) throw usage_error("the ablation file's measured does not have one entry per unit");
  for (std::size_t i = 0; i < seen.size(); ++i) {
    if (static_cast<std::int64_t>(seen[i].size()) != n) throw usage_error("measured row " + std::to_string(i) + " has the wrong length");
  }
  const Eigen::VectorXd& delta = terms.delta;
  const Eigen::MatrixXd interaction = interactions ? terms.interaction : Eigen::MatrixXd::Zero(n, n);
  // One slot per unfrozen unit: keep it, or remove it.
  std::vector<nashprune::loss_slot> slots;
  for (std::int64_t u = 0; u < n; ++u) {
    const auto l = layers[static_cast<std::size_t>(u)];
    if (l >= o.freeze_first && l < shape.n_layer() - o.freeze_last) slots.push_back({{}, {u}});
  }
  const auto open = static_cast<std::int64_t>(slots.size());
  const std::int64_t k = o.count ? *o.count : static_cast<std::int64_t>(std::floor(o.target * static_cast<double>(n) + 1e-9));
  if (k < 0 || k > open) {
    throw usage_error("cannot remove " + std::to_string(k) + " " + kind + ": " + std::to_string(open) + " are not frozen (--freeze-first " +
                      std::to_string(o.freeze_first) + ", --freeze-last " + std::to_string(o.freeze_last) + ")");
  }
  constexpr std::int64_t most_sets = std::int64_t{1} << 24;
  if (choose(open, k) > most_sets) throw usage_error("the exact choice of " + std::to_string(k) + " of " + std::to_string(open) + " units enumerates more than 2^24 sets");
  const auto best = k == 0 ? nashprune::exact_loss_result<double>{{}, {}, 0.0, 1}
                           : nashprune::exact_loss_choice(delta, interaction, std::span<const nashprune::loss_slot>(slots), k,
                                                          open >= 62 ? std::numeric_limits<std::int64_t>::max() : std::int64_t{1} << open);
  bool pairs_measured = true;
  for (const auto i : best.removed)
    for (const auto j : best.removed) pairs_measured = pairs_measured && (i == j || seen[static_cast<std::size_t>(i)][static_cast<std::size_t>(j)] != 0);
  std::vector<std::int64_t> removed_layers;
  for (const auto u : best.removed) removed_layers.push_back(layers[static_cast<std::size_t>(u)]);
  const auto full = nashprune::removal_loss(delta, interaction, std::span<const std::int64_t>(best.removed));
  std::cout << "game " << nashprune::head_game_names[static_cast<std::size_t>(o.method.game)] << ", selector exact: removing " << k << " of " << n << " " << kind << " (" << best.candidates << " sets of the " << open
            << " unfrozen compared): layers [";
  for (std::size_t i = 0; i < removed_layers.size(); ++i) std::cout << (i ? " " : "") << removed_layers[i];
  std::cout << "]; loss increase " << full << " (L0 " << doc.at("l0").get<double>() << ")";
  if (interactions && k <= 2 && pairs_measured) {
    std::cout << ", measured: for k <= 2 the singles and pairs are the exact losses, so this is the best choice on the calibration text\n";
  } else {
    std::cout << (interactions ? ", modelled from singles and pairs\n" : ", the sum of single losses\n");
  }
  auto plan = gguf::keep_all(shape);
  for (const auto l : removed_layers) {
    auto& p = plan.layers[static_cast<std::size_t>(l)];
    if (kind == "layers") p.keep_layer = false;
    if (kind == "attn-blocks") p.heads = {};
    if (kind == "mlp-blocks") p.channels.clear();
  }
  return plan;
}

}  // namespace nashprune_tool
