// --redundancy output: heads chosen by the energy of the change their removal
// makes to each layer's attention output (nashprune/output_perturbation.hpp),
// measured by `nashprune calibrate` (P per layer, version-2 statistics).
#pragma once

#include <calibrate/calibration_stats.hpp>
#include <gguf/llama_model.hpp>
#include <gguf/prune_plan.hpp>
#include <nashprune/attention_geometry.hpp>
#include <nashprune/nash_decisions.hpp>

#include <Eigen/Core>

#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace nashprune_tool {

/// How the output-perturbation selection went (printed by prune).
struct perturbation_report {
  std::string method;          // nash (price search) or exact (enumeration + allocation)
  double price = 0;            // nash: the price μ found (P relative to the residual stream, per token)
  std::int64_t requested = 0;  // heads the target asks for (a budget: the plans remove at most this)
  std::int64_t removed = 0;    // heads the plans remove
  double energy = 0;           // Σ_l E_l(S_l) of the plans, in the unit of the price
  std::int64_t solves = 0;
};

/// One layer in scope: its index, GQA geometry and the granularity of its cuts.
struct perturbation_scope {
  std::int64_t layer = 0;
  nashprune::attention_geometry geometry;
  nashprune::head_granularity granularity = nashprune::head_granularity::single_heads;
};

struct perturbation_choice {
  std::vector<nashprune::head_keep_plan> plans;  // per scope entry
  std::vector<Eigen::VectorXd> participation;    // per scope entry: the equilibrium (nash) or 1/0 (exact)
  std::vector<Eigen::MatrixXd> scaled_gram;      // per scope entry: P_l relative to the residual stream, per token
  perturbation_report report;
};

/// Chooses the heads to remove in the layers of `scope`, at most `requested` (the
/// most whole GQA steps within it): method "nash" searches one price μ
/// over all layers, "exact" enumerates each layer's best sets and allocates
/// counts exactly. Throws usage_error for statistics without P (version 1).
[[nodiscard]] perturbation_choice choose_by_output_perturbation(const calibrate::calibration_stats& calibration,
                                                                const std::vector<perturbation_scope>& scope,
                                                                std::int64_t requested, const std::string& method,
                                                                const nashprune::nash_decision_options<double>& decisions);

}  // namespace nashprune_tool
