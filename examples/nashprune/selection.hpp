// From a model (and optionally an imatrix) to a pruning plan: per-head and
// per-channel importance, then the removals that reach the target.
#pragma once

#include <calibrate/calibration_stats.hpp>
#include <gguf/imatrix.hpp>
#include <gguf/llama_model.hpp>
#include <gguf/prune_plan.hpp>

#include "perturbation_selection.hpp"

#include <optional>
#include <set>
#include <string>

namespace nashprune_tool {

struct selection_options {
  double target = 0.25;     // fraction of parameters (or of heads with unit_heads)
  bool unit_heads = false;
  std::set<std::string> structures{"heads"};  // heads, groups, mlp, attn-blocks, mlp-blocks, layers
  std::string score = "magnitude";            // magnitude | wanda | activation
  std::string method = "nash";                // nash | knapsack | both | exact (exact: --redundancy output only)
  // cosine: the seed's game per layer (importance --score, cosine redundancy);
  // output: heads' output-perturbation game over all layers (perturbation_selection.hpp);
  // ablation: the game on the measured loss model (ablation_model.hpp, prune --ablation FILE).
  std::string redundancy = "cosine";
  // The seed's options (nash-head-pruning-llama-cpp.md §3.1, §7.2).
  double lambda = 0.5;       // with lambda_auto: where the search starts
  bool lambda_auto = false;  // --lambda auto: one λ over all layers pruning the --unit heads target
  double threshold = 0.1;
  int iterations = 100;
  int min_heads = 1;
  double max_prune = 0.7;
  int freeze_first = 0;
  int freeze_last = 0;
  int keep_first_layers = 0;  // never remove these first layers whole (their heads and channels stay prunable)
  // H-GSP priors (hgsp_priors.hpp) from the calibration's block influence: on with
  // --calibration (temperature 1, tau automatic), off without it.
  double temperature = 1.0;
  std::optional<double> tau;      // unset: automatic (25th percentile of layer influence)
  bool priors_requested = false;  // --temperature or --tau given explicitly
  int threads = 0;                // threads reading the weights for their scores (0: one per core, at most 4)
};

/// The seed's llama_head_stats (§3.3).
struct head_stat {
  std::int64_t layer = 0;
  std::int64_t head = 0;
  double importance = 0;
  double participation = 1;
  double redundancy_sum = 0;
  bool pruned = false;
};

/// --lambda auto: the λ found and how close its equilibria came to the target.
struct lambda_report {
  double lambda = 0;
  std::int64_t requested = 0;           // heads the target asks for
  std::int64_t equilibrium_pruned = 0;  // heads with participation < --threshold (caps included)
  std::int64_t plan_pruned = 0;         // heads the GQA-consistent plans remove
  bool reachable = true;                // false: beyond the caps or below what the smallest λ prunes
  std::int64_t solves = 0;
};

struct selection {
  gguf::prune_plan plan;
  std::vector<head_stat> heads;
  std::optional<lambda_report> lambda;  // set with --lambda auto
  std::optional<perturbation_report> perturbation;  // set with --redundancy output or ablation (energy: the modelled loss)
};

/// Throws usage_error for unknown structures, scores or methods, a target out of
/// [0, 1), or wanda/activation without activation statistics (imatrix or calibration).
void check_options(const selection_options& options, bool have_activations, bool have_calibration);

/// With `calibration` (nashprune calibrate): wanda/activation read its per-column
/// energies instead of the imatrix, and the nash method plays each layer's head
/// game with the measured cosine matrix instead of the weight-space one.
[[nodiscard]] selection choose_plan(const gguf::reader& model, const gguf::llama_shape& shape,
                                    const gguf::imatrix* imatrix, const selection_options& options,
                                    const calibrate::calibration_stats* calibration = nullptr);

}  // namespace nashprune_tool
