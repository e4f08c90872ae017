// Whole blocks as ablation units (`nashprune ablate --units`, `nashprune
// ablation-plan` on its file): which layers hold a block of each kind, and the
// choice of k blocks from the measured losses.
//
// The choice minimises the second-order loss model of loss_interaction.hpp,
// C(S) = Σ_{i∈S} δ_i + Σ_{i<j∈S} I_ij, exactly (exact_loss_choice: every set of k
// unfrozen units). With every pair measured, C(S) is the measured loss increase
// L_S − L0 itself for |S| <= 2, so for k <= 2 the choice is the exact best on the
// calibration text; beyond, the model extrapolates from pairs. --game none drops
// the interactions (the k smallest single losses).
#pragma once

#include <gguf/llama_model.hpp>
#include <gguf/prune_plan.hpp>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "planning/ablation_model.hpp"

namespace nashprune_tool {

/// The block kinds of --units: layers | attn-blocks | mlp-blocks.
[[nodiscard]] bool is_block_kind(const std::string& kind);

/// The layers holding a block of `kind`, ascending: every layer (layers), those
/// with attention (attn-blocks), those with an FFN (mlp-blocks).
[[nodiscard]] std::vector<std::int64_t> block_unit_layers(const gguf::llama_shape& shape, const std::string& kind);

struct block_plan_options {
  loss_method method;                  // --selector exact only (the default): blocks have no price search
  std::optional<std::int64_t> count;   // blocks to remove (else floor(target · units))
  double target = 0.25;
  std::int64_t freeze_first = 1;       // layer 0 reads the raw embeddings: never removed by default
  std::int64_t freeze_last = 0;
};

/// Chooses the blocks to remove from an ablation document whose "unit_kind" is a
/// block kind, prints the choice, and returns the plan removing them. Throws
/// usage_error when the document does not match `shape` or the options cannot be met.
[[nodiscard]] gguf::prune_plan plan_block_ablation(const gguf::llama_shape& shape, const nlohmann::json& doc,
                                                   const block_plan_options& options);

}  // namespace nashprune_tool
