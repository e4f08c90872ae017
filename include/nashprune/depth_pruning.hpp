// nashprune/depth_pruning.hpp — depth pruning: score whole layers, choose k to drop.
//
// Sources: densecore-model-optimization.md, "Depth Pruning" (score each layer by the
// L1 norm of its weights, remove the bottom 25 % or 50 %: DEPTH_PRUNE_25_CFG and
// DEPTH_PRUNE_50_CFG, 32 -> 24 and 32 -> 16 layers) and llama-pruning-toolkit.en.md
// (ShortGPT block influence: importance = 1 - cos(x_in, x_out)).
//  - block_influence: mean over tokens (rows) of 1 - cos(x_in[t], x_out[t]) for one
//    layer's input and output hidden states; a token whose input or output is the zero
//    vector counts as 0 if both are zero (an identity step) and 1 otherwise.
//  - weight_norm_scores: mean |w| per layer = L1 norm / parameter count (the seed's
//    raw L1 norm favours wide layers; with equal widths the order is the same).
//  - select_layers_to_drop: the k lowest-scoring layers (any set; ties: lower layer
//    first) or the contiguous block of k layers with the least total score (ties:
//    the earliest), never touching frozen first/last layers.
//  - preset_drop_count: k = floor(fraction · n_layers) for the 25 % and 50 % presets.
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <string>
#include <type_traits>
#include <vector>

#include "config.hpp"
#include "detail/validate.hpp"

NASHPRUNE_BEGIN_NAMESPACE

enum class depth_preset { drop_25_percent, drop_50_percent };
enum class depth_selection { any_set, contiguous_block };

/// Layers the preset removes from an `n_layers` model: floor(0.25 n) or floor(0.5 n).
[[nodiscard]] inline std::int64_t preset_drop_count(depth_preset preset, std::int64_t n_layers) {
  if (n_layers < 1) detail::fail_argument("n_layers", "must be positive, got " + std::to_string(n_layers));
  return preset == depth_preset::drop_25_percent ? n_layers / 4 : n_layers / 2;
}

/// Mean over rows (tokens) of 1 - cos(x_in row, x_out row) for one layer.
template <typename DerivedIn, typename DerivedOut>
[[nodiscard]] typename DerivedIn::Scalar block_influence(const Eigen::MatrixBase<DerivedIn>& x_in,
                                                         const Eigen::MatrixBase<DerivedOut>& x_out) {
  using Scalar = typename DerivedIn::Scalar;
  static_assert(std::is_same_v<Scalar, typename DerivedOut::Scalar>, "x_in and x_out must share a scalar type");
  if (x_in.rows() == 0 || x_in.cols() == 0) detail::fail_argument("x_in", "is empty");
  detail::require_size("x_out", x_out.rows(), x_in.rows(), "row count");
  detail::require_size("x_out", x_out.cols(), x_in.cols(), "column count");
  detail::require_finite("x_in", x_in);
  detail::require_finite("x_out", x_out);
  double total = 0;
  for (Eigen::Index t = 0; t < x_in.rows(); ++t) {
    const double a = static_cast<double>(x_in.row(t).norm()), b = static_cast<double>(x_out.row(t).norm());
    if (a == 0 || b == 0) {
      total += (a == 0 && b == 0) ? 0.0 : 1.0;
      continue;
    }
    const double cosine = static_cast<double>(x_in.row(t).dot(x_out.row(t))) / (a * b);
    total += 1.0 - std::clamp(cosine, -1.0, 1.0);
  }
  return static_cast<Scalar>(total / static_cast<double>(x_in.rows()));
}

/// Mean absolute weight per layer: l1_norms[l] / parameters[l].
template <typename Scalar>
[[nodiscard]] Eigen::Matrix<Scalar, Eigen::Dynamic, 1> weight_norm_scores(
    const Eigen::Ref<const Eigen::Matrix<Scalar, Eigen::Dynamic, 1>, 0, Eigen::InnerStride<>>& l1_norms,
    const Eigen::Ref<const Eigen::Matrix<Scalar, Eigen::Dynamic, 1>, 0, Eigen::InnerStride<>>& parameters) {
  detail::require_size("parameters", parameters.size(), l1_norms.size());
  detail::require_finite_nonnegative("l1_norms", l1_norms);
  detail::require_finite_nonnegative("parameters", parameters);
  for (Eigen::Index l = 0; l < parameters.size(); ++l) {
    if (parameters[l] <= 0) detail::fail_domain("parameters", "zero parameters at " + detail::at_index(l));
  }
  return l1_norms.cwiseQuotient(parameters);
}

struct depth_options {
  std::int64_t layers_to_drop = 0;
  depth_selection selection = depth_selection::any_set;
  std::int64_t freeze_first_layers = 0;
  std::int64_t freeze_last_layers = 0;
};

template <typename Scalar>
struct depth_plan {
  std::vector<std::int64_t> dropped;  // ascending
  std::vector<std::int64_t> kept;     // ascending
  Scalar dropped_score = 0;           // sum of the dropped layers' scores
};

/// The layers to drop (see the header comment); a higher score means more important.
template <typename Scalar>
[[nodiscard]] depth_plan<Scalar> select_layers_to_drop(
    const Eigen::Ref<const Eigen::Matrix<Scalar, Eigen::Dynamic, 1>, 0, Eigen::InnerStride<>>& scores, const depth_options& options) {
  const auto n = static_cast<std::int64_t>(scores.size());
  if (n == 0) detail::fail_argument("scores", "is empty");
  detail::require_finite("scores", scores);
  if (options.freeze_first_layers < 0 || options.freeze_last_layers < 0) detail::fail_argument("depth_options", "negative freeze count");
  const std::int64_t first = std::min(n, options.freeze_first_layers);
  const std::int64_t last = std::max(first, n - options.freeze_last_layers);  // droppable: [first, last)
  const std::int64_t k = options.layers_to_drop;
  if (k < 0 || k > last - first) {
    detail::fail_argument("layers_to_drop", std::to_string(k) + " lies outside [0, " + std::to_string(last - first) +
                                                "], the layers not frozen");
  }
  depth_plan<Scalar> plan;
  if (options.selection == depth_selection::any_set) {
    std::vector<std::int64_t> candidates(static_cast<std::size_t>(last - first));
    std::iota(candidates.begin(), candidates.end(), first);
    std::stable_sort(candidates.begin(), candidates.end(), [&](std::int64_t a, std::int64_t b) { return scores[a] < scores[b]; });
    plan.dropped.assign(candidates.begin(), candidates.begin() + k);
  } else if (k > 0) {
    double window = 0, best = std::numeric_limits<double>::infinity();
    std::int64_t best_start = first;
    for (std::int64_t l = first; l < last; ++l) {
      window += static_cast<double>(scores[l]);
      if (l - first >= k) window -= static_cast<double>(scores[l - k]);
      if (l - first + 1 >= k && window < best) {
        best = window;
        best_start = l - k + 1;
      }
    }
    for (std::int64_t l = best_start; l < best_start + k; ++l) plan.dropped.push_back(l);
  }
  std::sort(plan.dropped.begin(), plan.dropped.end());
  for (std::int64_t l = 0, d = 0; l < n; ++l) {
    if (d < k && plan.dropped[static_cast<std::size_t>(d)] == l) {
      plan.dropped_score += scores[l];
      ++d;
    } else {
      plan.kept.push_back(l);
    }
  }
  return plan;
}

NASHPRUNE_END_NAMESPACE
