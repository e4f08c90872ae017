#include "planning/layer_importance_planner.hpp"

#include <algorithm>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <stdexcept>

#include "io/json_io.hpp"
#include "planning/ablation_model.hpp"

namespace nashprune_tool {
namespace {

namespace np = nashprune;

inline constexpr std::array<std::string_view, 3> rate_strategy_names{"inverse", "proportional", "uniform"};
inline constexpr std::array<std::string_view, 2> depth_preset_names{"25", "50"};
inline constexpr std::array<std::string_view, 2> depth_selection_names{"any", "contiguous"};

Eigen::VectorXd ablated_layer_losses(const std::string& path, const gguf::llama_shape& shape) {
  const auto doc = json_io::read_document(path);
  const auto kind = doc.value("unit_kind", std::string("heads"));
  if (kind != "layers") {
    throw usage_error("--layer-importance " + path + ": the ablation file's units are " + kind +
                      ", not layers (write it with nashprune ablate --units layers)");
  }
  std::vector<std::vector<std::int64_t>> expected;
  for (std::int64_t l = 0; l < shape.n_layer(); ++l) expected.push_back({l});
  try {
    auto terms = read_loss_terms(doc, expected, std::to_string(doc.at("units").size()) + " layers, the model has " + std::to_string(shape.n_layer()));
    return terms.delta.cwiseMax(0.0);
  } catch (const usage_error& e) {
    throw usage_error("--layer-importance " + path + ": " + e.what());
  }
}

// What the overall rate of --layer-rates is a share of.
std::string rate_base(const np::pruning_options& options) {
  if (options.unit == np::budget_unit::heads) return "unfrozen heads";
  if (!options.wants(np::structure::mlp)) return "unfrozen layers' head parameters";
  return options.wants_heads() ? "unfrozen layers' head and MLP parameters" : "unfrozen layers' MLP parameters";
}

void print_importance(std::ostream& out, const std::string& source, const Eigen::VectorXd& importance) {
  out << "layer importance (" << source << "):";
  for (Eigen::Index l = 0; l < importance.size(); ++l) out << ' ' << l << ':' << importance[l];
  out << '\n';
}

selection choose_by_rates(const gguf::reader& model, const gguf::llama_shape& shape, const gguf::imatrix* imatrix,
                          const np::pruning_options& options, const scoring_options& scoring,
                          const calibrate::calibration_stats* calibration, const layer_importance_request& request,
                          const Eigen::VectorXd& importance) {
  const auto reach = check_target(unscored_model(model, shape), options);
  const auto scores = scored_model(model, shape, imatrix, options, scoring, calibration);
  auto rate_options = request.rate_options;
  rate_options.strategy = *request.rates;
  np::unbalanced_rates_result result;
  try {
    result = np::plan_unbalanced_rates(scores, importance, options, rate_options);
  } catch (const std::domain_error& e) {
    std::ostringstream message;
    message << "--target " << options.target << " with --layer-rates " << rate_strategy_names[static_cast<std::size_t>(*request.rates)]
            << " --min-rate " << rate_options.min_rate << " --max-rate " << rate_options.max_rate
            << ": the clipped per-layer rates cannot reach it (" << e.what()
            << (options.unit == np::budget_unit::parameters ? "; with --unit params that overall rate is of the " + rate_base(options) : "")
            << "); change --target, or widen --min-rate/--max-rate";
    throw usage_error(message.str());
  }
  const auto& r = result.report;
  const bool by_heads = r.unit == np::budget_unit::heads;
  const bool mlp = options.wants(np::structure::mlp);
  std::cout << "layer rates (" << rate_strategy_names[static_cast<std::size_t>(*request.rates)] << ", alpha " << rate_options.alpha
            << ", rates in [" << rate_options.min_rate << ", " << rate_options.max_rate << "]): overall rate " << r.overall_rate << " of the "
            << rate_base(options)
            << (by_heads && mlp ? " (MLP channels at each layer's rate)" : "") << ", " << r.at_min_rate << " layers at --min-rate, "
            << r.at_max_rate << " at --max-rate; removes " << r.removed_total << " of the " << r.requested << (by_heads ? " heads" : " parameters")
            << " requested\n";
  for (std::int64_t l = 0; l < shape.n_layer(); ++l) {
    const auto& layer = shape.layers[static_cast<std::size_t>(l)];
    std::cout << "  layer " << l << ": rate " << std::fixed << std::setprecision(3) << r.rates[l] << std::defaultfloat;
    if (options.wants_heads()) std::cout << ", removes " << r.removed[static_cast<std::size_t>(l)] << " of " << layer.n_head << " heads";
    if (mlp) std::cout << (options.wants_heads() ? " and " : ", removes ") << r.removed_channels[static_cast<std::size_t>(l)] << " of " << layer.n_ff << " MLP channels";
    std::cout << '\n';
  }
  auto chosen = selection_of(std::move(result.plan));
  chosen.reach = reach;
  return chosen;
}

}  // namespace

np::rate_strategy parse_rate_strategy(const std::string& text) {
  return parse_name<np::rate_strategy>(rate_strategy_names, "--layer-rates", text);
}
np::depth_preset parse_depth_preset(const std::string& text) {
  return parse_name<np::depth_preset>(depth_preset_names, "--depth-preset", text);
}
np::depth_selection parse_depth_selection(const std::string& text) {
  return parse_name<np::depth_selection>(depth_selection_names, "--depth-selection", text);
}

Eigen::VectorXd layer_importance_of(const std::string& source, const gguf::llama_shape& shape, const calibrate::calibration_stats* calibration) {
  if (source != block_influence_source) return ablated_layer_losses(source, shape);
  if (calibration == nullptr) {
    throw usage_error("--layer-importance block-influence reads the measured influence 1 - cos(in, out) of each layer: pass --text FILE "
                      "or --calibration FILE (nashprune calibrate), or give an ablation file of nashprune ablate --units layers");
  }
  Eigen::VectorXd out(shape.n_layer());
  for (std::int64_t l = 0; l < shape.n_layer(); ++l) out[l] = calibration->layers.at(static_cast<std::size_t>(l)).layer_influence;
  return out;
}

selection choose_by_layer_importance(const gguf::reader& model, const gguf::llama_shape& shape, const gguf::imatrix* imatrix,
                                     const np::pruning_options& options, const scoring_options& scoring,
                                     const calibrate::calibration_stats* calibration, const layer_importance_request& request) {
  const auto importance = layer_importance_of(request.source, shape, calibration);
  print_importance(std::cout, request.source, importance);
  if (request.rates) return choose_by_rates(model, shape, imatrix, options, scoring, calibration, request, importance);
  const auto scores = unscored_model(model, shape);
  const auto k = np::preset_drop_count(*request.depth, shape.n_layer());
  np::pruning_result plan;
  try {
    plan = np::plan_depth_preset(scores, importance, *request.depth, request.depth_selection, options);
  } catch (const std::invalid_argument& e) {
    throw usage_error("--depth-preset " + std::string(depth_preset_names[static_cast<std::size_t>(*request.depth)]) + " removes " +
                      std::to_string(k) + " of " + std::to_string(shape.n_layer()) + " layers, more than the layers not frozen (" +
                      "--freeze-first " + std::to_string(std::max(options.freeze_first, options.keep_first_layers)) + ", --freeze-last " +
                      std::to_string(options.freeze_last) + "): " + e.what());
  }
  std::cout << "depth preset " << depth_preset_names[static_cast<std::size_t>(*request.depth)] << " % ("
            << depth_selection_names[static_cast<std::size_t>(request.depth_selection)] << "): removes layers";
  for (std::size_t l = 0; l < plan.layers.size(); ++l) {
    if (!plan.layers[l].keep_layer) std::cout << ' ' << l;
  }
  std::cout << " of " << shape.n_layer() << '\n';
  return selection_of(std::move(plan));
}

}  // namespace nashprune_tool
