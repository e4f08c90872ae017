// nashprune/hgsp_priors.hpp — H-GSP: layer- and block-level priors that reweight the
// global selection's scores.
//
// Source: llama-pruning-toolkit.en.md (and the original's "H-GSP" section):
//     S_base = I / c,   S_final = S_base · M,   M = B^T,   B = ln(1 + prior),
// with prior = a layer's or a block's importance 1 - cos(x_in, x_out) (ShortGPT).
// The seed leaves the gating vague; nashprune defines it as follows (pinned in
// tests/test_hgsp_priors.cpp):
//  - prior of an item in layer l: if l is "layer dominant" the layer importance L_l;
//    otherwise the importance of the item's block, A_l for attention kinds
//    (attention_group, q_head, attention_block) and P_l for MLP kinds (mlp_channel,
//    mlp_block). A whole_layer item always takes L_l.
//  - tau gating: layer l is layer dominant iff L_l < tau (strict). tau = 0: no layer
//    (block-wise everywhere, as L_l >= 0); tau = +inf: every layer (layer-wise
//    everywhere); tau unset (automatic): the 25th percentile of L, numpy's linear
//    rule, so the least important quarter of the layers uses the layer prior.
//  - epsilon collapse: a prior strictly below epsilon collapses to M = 0, so those
//    items are removed before any item with M > 0 (epsilon = 0, the default, never
//    collapses since priors are >= 0).
//  - temperature T >= 0: M = ln(1 + prior)^T. T = 0 disables the priors entirely
//    (M = 1 for every item, no collapse; the seed's "pure Taylor"). For T > 0 a zero
//    prior gives M = 0 (the layer is an identity map and goes first).
// The reweighted table carries I · M as importance (S_final = I · M / c), so the
// selection's objective is then the prior-weighted importance.
#pragma once

#include <Eigen/Core>

#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <vector>

#include "config.hpp"
#include "detail/quantile.hpp"
#include "detail/validate.hpp"
#include "global_selection.hpp"

NASHPRUNE_BEGIN_NAMESPACE

struct hgsp_options {
  double temperature = 1.0;    // T; 0 = pure importance (priors off)
  std::optional<double> tau;   // unset = automatic (25th percentile of layer importance)
  double epsilon = 0.0;        // collapse threshold
};

template <typename Scalar>
struct hgsp_result {
  std::vector<Scalar> multiplier;    // M per item
  std::vector<bool> layer_dominant;  // per layer
  double tau = 0;                    // the threshold used (after the automatic rule)
  std::int64_t collapsed = 0;        // items whose prior fell below epsilon
};

template <typename Scalar>
using layer_vector_ref = Eigen::Ref<const Eigen::Matrix<Scalar, Eigen::Dynamic, 1>, 0, Eigen::InnerStride<>>;

/// The multiplier M of every item; the three importance vectors have one entry per layer.
template <typename Scalar>
[[nodiscard]] hgsp_result<Scalar> hgsp_multipliers(std::span<const selection_item<Scalar>> items,
                                                   const layer_vector_ref<Scalar>& layer_importance,
                                                   const layer_vector_ref<Scalar>& attention_block_importance,
                                                   const layer_vector_ref<Scalar>& mlp_block_importance,
                                                   const hgsp_options& options = {}) {
  const Eigen::Index n_layers = layer_importance.size();
  if (n_layers == 0) detail::fail_argument("layer_importance", "is empty");
  detail::require_size("attention_block_importance", attention_block_importance.size(), n_layers);
  detail::require_size("mlp_block_importance", mlp_block_importance.size(), n_layers);
  detail::require_finite_nonnegative("layer_importance", layer_importance);
  detail::require_finite_nonnegative("attention_block_importance", attention_block_importance);
  detail::require_finite_nonnegative("mlp_block_importance", mlp_block_importance);
  if (!(std::isfinite(options.temperature) && options.temperature >= 0)) {
    detail::fail_argument("temperature", "must be finite and >= 0, got " + detail::describe_value(options.temperature));
  }
  if (!(std::isfinite(options.epsilon) && options.epsilon >= 0)) {
    detail::fail_argument("epsilon", "must be finite and >= 0, got " + detail::describe_value(options.epsilon));
  }
  if (options.tau && !(*options.tau >= 0)) {
    detail::fail_argument("tau", "must be >= 0 or +inf, got " + detail::describe_value(*options.tau));
  }
  hgsp_result<Scalar> r;
  if (options.tau) {
    r.tau = *options.tau;
  } else {
    std::vector<double> values(static_cast<std::size_t>(n_layers));
    for (Eigen::Index l = 0; l < n_layers; ++l) values[static_cast<std::size_t>(l)] = static_cast<double>(layer_importance[l]);
    r.tau = detail::linear_quantile(std::move(values), 0.25);
  }
  r.layer_dominant.resize(static_cast<std::size_t>(n_layers));
  for (Eigen::Index l = 0; l < n_layers; ++l) r.layer_dominant[static_cast<std::size_t>(l)] = static_cast<double>(layer_importance[l]) < r.tau;
  r.multiplier.assign(items.size(), Scalar(1));
  for (std::size_t i = 0; i < items.size(); ++i) {
    const auto& it = items[i];
    if (it.layer < 0 || it.layer >= n_layers) {
      detail::fail_argument("items", "layer " + std::to_string(it.layer) + " has no layer importance at " + detail::at_index(static_cast<std::int64_t>(i)));
    }
    if (options.temperature == 0) continue;
    const auto l = static_cast<Eigen::Index>(it.layer);
    Scalar prior = layer_importance[l];
    if (it.kind != item_kind::whole_layer && !r.layer_dominant[static_cast<std::size_t>(l)]) {
      const bool attention = it.kind == item_kind::attention_group || it.kind == item_kind::q_head || it.kind == item_kind::attention_block;
      prior = attention ? attention_block_importance[l] : mlp_block_importance[l];
    }
    if (static_cast<double>(prior) < options.epsilon) {
      r.multiplier[i] = 0;
      ++r.collapsed;
      continue;
    }
    r.multiplier[i] = static_cast<Scalar>(std::pow(std::log1p(static_cast<double>(prior)), options.temperature));
  }
  return r;
}

/// The table with importance I · M, ready for select_greedy / solve_exact.
template <typename Scalar>
[[nodiscard]] std::vector<selection_item<Scalar>> apply_hgsp_priors(std::span<const selection_item<Scalar>> items,
                                                                   const hgsp_result<Scalar>& priors) {
  detail::require_size("priors.multiplier", static_cast<std::int64_t>(priors.multiplier.size()), static_cast<std::int64_t>(items.size()));
  std::vector<selection_item<Scalar>> weighted(items.begin(), items.end());
  for (std::size_t i = 0; i < weighted.size(); ++i) weighted[i].importance *= priors.multiplier[i];
  return weighted;
}

NASHPRUNE_END_NAMESPACE
