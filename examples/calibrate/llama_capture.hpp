// Calibration through llama.cpp: runs text through a llama-family model (archs
// "llama" and "deci") with llama.cpp's evaluation callback (cb_eval) and feeds
// the activations, one evaluated chunk at a time, to nashprune's accumulators.
//
// What is captured in llama.cpp's graph (src/models/llama.cpp, deci.cpp,
// src/llama-graph.cpp build_ffn / build_attn), per layer N:
//   - the input of attn_output: the MUL_MAT node whose weight is
//     blk.N.attn_output.weight reads the concatenated head outputs ("kqv_out-N",
//     tokens × n_head·head_dim) -> head_redundancy (Gram, cosine) and Σ x_j²;
//   - the input of ffn_down: the MUL_MAT node whose weight is blk.N.ffn_down.weight
//     (the SwiGLU product "ffn_swiglu-N", tokens × n_ff) -> Σ x_j² per channel;
//   - the residual stream: the input of "attn_norm-N" (the layer input), of
//     "ffn_norm-N" (attention output + residual) and "l_out-N" (the layer output)
//     -> block_influence of the attention block, the MLP block and the layer.
// Memory is one chunk's activations plus n_head² + widths per layer, whatever
// the number of tokens, plus (n_head·head_dim)² + n_ff² per layer for the input
// moments (capture_options::moments).
#pragma once

#include <Eigen/Core>

#include "calibrate/calibration_stats.hpp"
#include "calibrate/moment_passes.hpp"
#include "calibrate/text_source.hpp"

#include <functional>
#include <vector>

namespace calibrate {

using row_major_block = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using activation_view = Eigen::Map<const row_major_block, 0, Eigen::OuterStride<>>;

enum class activation { head_outputs, ffn_inner, layer_in, attn_block_out, layer_out };

struct capture_options : text_source {
  /// Also record the mean and centred second moment of attn_output's and ffn_down's
  /// inputs ((n_head·head_dim)² + n_ff² doubles per layer while running).
  bool moments = true;
  /// The layers whose moments this run records (empty: every layer), so that a
  /// calibration whose moments exceed a memory budget records them in groups of
  /// layers over several runs of the same text (moment_passes.hpp).
  std::vector<bool> moment_layers;
  /// Also the head Grams, activation energies and block influence. false: a run
  /// that records moments only, evaluating only the selected layers' captures.
  bool summaries = true;
  /// Called after each chunk with tokens done and total.
  std::function<void(std::uint64_t, std::uint64_t)> progress;
  /// Sees every captured block (tokens × width) before it is accumulated; for tests.
  std::function<void(std::int64_t layer, activation kind, const activation_view&)> observe;
};

/// Runs the calibration. Layers outside options.moment_layers come back without
/// moments; with options.summaries false, only the moments are filled. Throws std::invalid_argument before any evaluation for
/// an unsupported architecture, a text shorter than one context or bad options;
/// std::runtime_error when llama.cpp fails or its graph lacks a captured tensor.
[[nodiscard]] calibration_stats run_calibration(const capture_options& options);

/// Calibrates into the stats file `output`, recording the input moments group by
/// group as `plan` says: one run of the text per group, the first also recording
/// every other statistic, each group written as soon as it is done. `pass_started`
/// (may be empty) is called with the group's index before each run. Needs
/// options.moments and options.moment_layers empty. Leaves no file on failure.
/// Returns the statistics without their moments.
calibration_stats calibrate_to_file(const capture_options& options, const moment_plan& plan, const std::filesystem::path& output,
                                    bool force, const std::function<void(std::size_t)>& pass_started);

}  // namespace calibrate
