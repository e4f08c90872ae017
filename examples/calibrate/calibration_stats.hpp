// Calibration statistics: what `nashprune calibrate` measures by running text
// through a model with llama.cpp, and what `nashprune prune --calibration` reads.
//
// File format: a GGUF v3 file (written by gguf::writer, so it appears atomically)
// with general.type = "nashprune.calibration" and these keys:
//   calibration.version              UINT32  format version (3; version 1 files, which lack
//                                            head_output_gram and residual_energy, and version 2
//                                            files, which lack the input moments, are still read)
//   calibration.architecture         STRING  the model's general.architecture
//   calibration.block_count          UINT32  n_layer of the model
//   calibration.embedding_length     UINT32  n_embd
//   calibration.head_dim             UINT32  per-head size of V (the attention output)
//   calibration.head_count           INT32[n_layer]  query heads per layer
//   calibration.head_count_kv        INT32[n_layer]  KV heads per layer
//   calibration.feed_forward_length  INT32[n_layer]  FFN width per layer
//   calibration.tokens               UINT64  tokens run through the model
//   calibration.context              UINT32  tokens per evaluated chunk
//   calibration.text                 STRING  name of the calibration text file
// The first seven form the model fingerprint: prune refuses stats whose
// fingerprint differs from the model's (check_matches).
// Tensors (all F32; ggml order, dims[0] the contiguous one), for each layer N
// with attention (n_head > 0):
//   calib.blk.N.head_gram      [n_head, n_head]  G_ij = Σ_tokens <x_i, x_j> of the heads'
//                                                outputs before attn_output (head_redundancy::gram)
//   calib.blk.N.head_cosine    [n_head, n_head]  head_redundancy::cosine()
//   calib.blk.N.head_output_gram [n_head, n_head] (v2) P_ij = Σ_tokens <y_i, y_j> of the heads'
//                                                contributions to the residual stream,
//                                                y_h = W_o[:, head h]·x_h (output_perturbation.hpp)
//   calib.blk.N.head_relative_gram [n_head, n_head] (v2) the same with each token's y_h(t)
//                                                divided by ‖h(t)‖, h the residual stream entering layer N
//                                                (both absent when attn_output's weight type does
//                                                not convert to float: F32, F16, BF16, Q8_0 do)
//   calib.blk.N.attn_in_sum2   [n_head·head_dim] Σ_tokens x_j² per attn_output input column
//   calib.blk.N.attn_in_mean   [n_head·head_dim] (v3) μ = mean over tokens of attn_output's input x
//   calib.blk.N.attn_in_covariance [n, n]        (v3) C = E[x xᵀ] − μμᵀ of the same input (n = n_head·head_dim);
//                                                the second moment is H = C + μμᵀ. Stored centred because
//                                                compensation.hpp needs C, which float H − μμᵀ would lose
// for each layer N with an FFN (n_ff > 0):
//   calib.blk.N.ffn_in_sum2    [n_ff]            Σ_tokens x_j² per ffn_down input channel
//   calib.blk.N.ffn_in_mean    [n_ff]            (v3) μ of ffn_down's input
//   calib.blk.N.ffn_in_covariance [n_ff, n_ff]   (v3) its centred moment C, as for attn_output
// (the four moment tensors are absent from files written with --no-moments)
// and for the whole model:
//   calib.block_influence      [3, n_layer]      row N: mean over tokens of 1 − cos(in, out)
//                                                of layer N's attention block, MLP block and
//                                                whole layer (depth_pruning.hpp block_influence)
//   calib.residual_energy      [n_layer]         (v2) Σ_tokens ‖h‖² of the residual stream entering
//                                                layer N (the input of attn_norm)
#pragma once

#include <Eigen/Core>

#include "gguf/gguf.hpp"
#include "gguf/llama_model.hpp"

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace calibrate {

inline constexpr std::uint32_t stats_version = 3;
inline constexpr std::string_view stats_type = "nashprune.calibration";

/// The model shape the statistics were measured on.
struct fingerprint {
  std::string architecture;
  std::int64_t n_embd = 0;
  std::int64_t head_dim = 0;
  std::vector<gguf::layer_shape> layers;

  [[nodiscard]] static fingerprint of(const gguf::llama_shape& shape);
  friend bool operator==(const fingerprint&, const fingerprint&) = default;
};

struct layer_stats {
  Eigen::MatrixXd head_gram;      // n_head × n_head (empty: attention-free layer)
  Eigen::MatrixXd head_cosine;    // n_head × n_head
  Eigen::MatrixXd head_output_gram;  // n_head × n_head, projected through W_o (empty: version 1 file or W_o type)
  Eigen::MatrixXd head_relative_gram;  // n_head × n_head, projected and divided per token by ‖h(t)‖ (idem)
  Eigen::VectorXd attn_in_sum2;   // n_head · head_dim
  Eigen::VectorXd ffn_in_sum2;    // n_ff (empty: FFN-free layer)
  double attn_influence = 0;      // 1 − cos over the attention block
  double mlp_influence = 0;       // 1 − cos over the MLP block
  double layer_influence = 0;     // 1 − cos over the whole layer
  double residual_energy = 0;     // Σ_tokens ‖layer input‖² (0: version 1 file)
  // Moments of attn_output's and ffn_down's inputs (empty: version 1/2 file or --no-moments).
  Eigen::VectorXd attn_in_mean;        // n_head · head_dim
  Eigen::MatrixXd attn_in_covariance;  // n_head · head_dim square
  Eigen::VectorXd ffn_in_mean;         // n_ff
  Eigen::MatrixXd ffn_in_covariance;   // n_ff square

  /// Σ_tokens ‖x_h‖² of each head's output (the Gram diagonal).
  [[nodiscard]] Eigen::VectorXd head_energy() const { return head_gram.diagonal(); }
};

struct calibration_stats {
  fingerprint model;
  std::uint64_t tokens = 0;
  std::uint32_t context = 0;
  std::string text;
  std::vector<layer_stats> layers;
  std::uint32_t version = stats_version;  // of the file read (read_stats)
};

/// Writes `stats` to `path` atomically (refusing an existing file unless force).
void write_stats(const std::filesystem::path& path, const calibration_stats& stats, bool force);

/// `stats` with every value as a stats file holds it (rounded to float, what
/// write_stats stores and read_stats returns), so statistics used straight from
/// a calibration choose and compensate exactly as their file would.
[[nodiscard]] calibration_stats as_stored(calibration_stats stats);

/// Reads a stats file; throws gguf::format_error naming the file and the key or
/// tensor that is missing or malformed.
[[nodiscard]] calibration_stats read_stats(const std::filesystem::path& path);

/// Throws std::invalid_argument when `stats` were measured on a model of another
/// shape, naming the first difference (e.g. "layer 2 has 8 heads in the model, 6 in STATS").
void check_matches(const calibration_stats& stats, const gguf::llama_shape& shape, const std::string& stats_name);

}  // namespace calibrate
