// --redundancy output (see perturbation_selection.hpp).
#include "perturbation_selection.hpp"

#include <nashprune/output_perturbation.hpp>

#include <algorithm>

#include "command.hpp"

namespace nashprune_tool {
namespace {

namespace np = nashprune;

// P of a layer relative to the residual stream, token by token (Σ_t <y_i, y_j>/‖h_t‖²,
// per token of calibration): the next RMSNorm sees each token's change relative to
// its residual, so one price compares layers whose activations differ in scale.
Eigen::MatrixXd scaled_gram(const calibrate::calibration_stats& calibration, std::int64_t layer) {
  const auto& l = calibration.layers.at(static_cast<std::size_t>(layer));
  if (l.head_relative_gram.size() == 0) {
    throw usage_error("--redundancy output needs the heads' projected Gram, which layer " + std::to_string(layer) +
                      " lacks (statistics version " + std::to_string(calibration.version) +
                      "; version 2 records it when attn_output is F32, F16, BF16 or Q8_0): run nashprune calibrate again");
  }
  return l.head_relative_gram / static_cast<double>(std::max<std::uint64_t>(calibration.tokens, 1));
}

std::vector<std::int64_t> removed_heads(const np::head_keep_plan& plan, std::int64_t n_head) {
  std::vector<std::int64_t> removed;
  for (std::int64_t h = 0; h < n_head; ++h)
    if (!std::binary_search(plan.q_heads.begin(), plan.q_heads.end(), h)) removed.push_back(h);
  return removed;
}

}  // namespace

perturbation_choice choose_by_output_perturbation(const calibrate::calibration_stats& calibration,
                                                  const std::vector<perturbation_scope>& scope, std::int64_t requested,
                                                  const std::string& method, const np::nash_decision_options<double>& decisions) {
  if (scope.empty()) throw usage_error("--redundancy output: no unfrozen layer has two or more attention heads");
  perturbation_choice out;
  out.report.method = method;
  out.report.requested = requested;
  for (const auto& s : scope) out.scaled_gram.push_back(scaled_gram(calibration, s.layer));
  if (method == "nash") {
    std::vector<np::perturbation_layer<double>> layers;
    for (std::size_t k = 0; k < scope.size(); ++k) layers.push_back({out.scaled_gram[k], scope[k].geometry, scope[k].granularity});
    auto found = np::search_price<double>(layers, requested, {decisions, 200});
    out.plans = std::move(found.plans);
    for (auto& e : found.equilibria) out.participation.push_back(std::move(e.s));
    out.report.price = found.price;
    out.report.solves = found.solves;
  } else {
    // Every count the caps allow, each with its least-energy set, then the allocation.
    std::vector<np::allocation_choices<double>> choices(scope.size());
    std::vector<std::vector<std::vector<std::int64_t>>> sets(scope.size());
    for (std::size_t k = 0; k < scope.size(); ++k) {
      const auto& g = scope[k].geometry;
      const auto min_keep = np::seed_min_keep(g.n_head(), decisions);
      for (const auto count : g.removable_q_head_counts(scope[k].granularity)) {
        if (g.n_head() - count < min_keep) continue;
        auto best = np::exact_best_removal(out.scaled_gram[k], g, scope[k].granularity, count);
        choices[k].removed.push_back(count);
        choices[k].energy.push_back(best.energy);
        sets[k].push_back(std::move(best.removed));
      }
    }
    const auto allocation = np::exact_allocation<double>(choices, requested);
    for (std::size_t k = 0; k < scope.size(); ++k) {
      const auto& g = scope[k].geometry;
      const auto& removed = sets[k][allocation.choice[k]];
      std::vector<std::int64_t> units = removed;
      if (scope[k].granularity == np::head_granularity::whole_groups) {
        units.clear();
        for (const auto h : removed)
          if (h % g.group_size() == 0) units.push_back(h / g.group_size());
      }
      out.plans.push_back(g.plan_removing(scope[k].granularity, units, np::seed_min_keep(g.n_head(), decisions) == 0));
      Eigen::VectorXd s = Eigen::VectorXd::Ones(g.n_head());
      for (const auto h : removed) s[h] = 0;
      out.participation.push_back(std::move(s));
    }
  }
  for (std::size_t k = 0; k < scope.size(); ++k) {
    const auto removed = removed_heads(out.plans[k], scope[k].geometry.n_head());
    out.report.removed += static_cast<std::int64_t>(removed.size());
    out.report.energy += np::removal_energy(out.scaled_gram[k], removed);
  }
  return out;
}

}  // namespace nashprune_tool
