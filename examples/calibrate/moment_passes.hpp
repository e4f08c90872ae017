// Calibration under a memory budget for the input moments.
//
// The mean and second moment of attn_output's and ffn_down's inputs take
// (n_head·head_dim)² + n_ff² values per layer (Llama-3-8B: 4096² + 14336², about
// 1.8 GB per layer in the double-precision accumulators). When every layer's
// accumulators do not fit the budget, calibration runs the same text several
// times and records the moments of one group of consecutive layers per run,
// writing each group to the stats file as soon as it is done
// (llama_capture.hpp calibrate_to_file). The first run also records every other
// statistic, which needs little memory.
//
// Groups are filled greedily in layer order, which gives the fewest groups of
// consecutive layers: a layer starts a new group only when it does not fit the
// current one.
#pragma once

#include <nashprune/moment_accumulator.hpp>

#include "calibrate/calibration_stats.hpp"

#include <cstdint>
#include <vector>

namespace calibrate {

/// The options of every input-moment accumulator calibration makes, on `threads`
/// threads: the budget counts the staging block these options give.
[[nodiscard]] nashprune::moment_accumulator_options input_moment_options(int threads);

/// Bytes of the moment accumulators of one layer: for each of the two inputs
/// (n = n_head·head_dim and n = n_ff), Σx and Σxxᵀ in double, 8·(n + n²), and the
/// float rows staged before each update (moment_accumulator::memory_bytes).
[[nodiscard]] std::uint64_t moment_bytes(const gguf::layer_shape& layer, std::int64_t head_dim);

/// The smallest budget any plan fits: the largest layer's moment_bytes.
[[nodiscard]] std::uint64_t smallest_moment_budget(const fingerprint& model);

struct moment_plan {
  std::vector<std::vector<std::size_t>> groups;  // consecutive layers, one run of the text each
  std::uint64_t largest_group_bytes = 0;          // the most held at once
  std::uint64_t total_bytes = 0;                  // every layer's moments at once
};

/// The groups for `budget` bytes. Throws std::invalid_argument when the budget is
/// below smallest_moment_budget(model).
[[nodiscard]] moment_plan plan_moment_passes(const fingerprint& model, std::uint64_t budget);

}  // namespace calibrate
