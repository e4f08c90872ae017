// nashprune/layer_rates.hpp — unbalanced per-layer pruning rates from layer importance.
//
// Source: gqa-aware-prune.md, "Unbalanced Pruning Strategy" and "Pruning Rate
// Calculator" (strategies inverse / proportional / uniform, alpha, log transform,
// min_rate 0.15, max_rate 0.5, target 0.25). The seed scales and then clips, so its
// overall rate drifts from the target; nashprune defines the rates as
//
//     n_l = s_l / mean(s)                 (all n_l = 1 when every s_l is 0)
//     n_l <- ln(1 + n_l)                  (log transform, on by default: tames outliers)
//     w_l = n_l ^ alpha                   (contrast; alpha = 0 gives uniform rates)
//     raw_l = 1 / w_l (inverse: important layers are pruned less; w_l = 0 -> max_rate),
//             w_l     (proportional),  1 (uniform)
//     rate_l = clip(c · raw_l, min_rate, max_rate)
//
// with the scale c >= 0 chosen so that the parameter-weighted mean
// sum_l p_l rate_l / sum_l p_l equals the target exactly. That mean is continuous,
// piecewise linear and non-decreasing in c, so c is found exactly on the segment
// between two breakpoints (c = min_rate / raw_l or max_rate / raw_l). If the clip
// makes the target unreachable (it lies outside the means at c = 0 and c -> inf),
// std::domain_error names the reachable interval.
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "config.hpp"
#include "detail/validate.hpp"

NASHPRUNE_BEGIN_NAMESPACE

enum class rate_strategy { inverse, proportional, uniform };

struct layer_rate_options {
  double target = 0.25;  // overall (parameter-weighted) pruning rate
  rate_strategy strategy = rate_strategy::inverse;
  double alpha = 1.0;
  bool log_transform = true;
  double min_rate = 0.15;
  double max_rate = 0.5;
};

template <typename Scalar>
struct layer_rates_result {
  Eigen::Matrix<Scalar, Eigen::Dynamic, 1> rates;
  double scale = 0;              // c
  double weighted_mean = 0;      // equals the target up to rounding
  std::int64_t at_min_rate = 0;  // layers clipped to min_rate
  std::int64_t at_max_rate = 0;  // layers clipped to max_rate
};

/// Rates per layer; `parameters` weights the mean (empty: every layer weighs the same).
template <typename Scalar>
[[nodiscard]] layer_rates_result<Scalar> layer_pruning_rates(
    const Eigen::Ref<const Eigen::Matrix<Scalar, Eigen::Dynamic, 1>, 0, Eigen::InnerStride<>>& importance,
    const Eigen::Ref<const Eigen::Matrix<Scalar, Eigen::Dynamic, 1>, 0, Eigen::InnerStride<>>& parameters,
    const layer_rate_options& options = {}) {
  const Eigen::Index n = importance.size();
  if (n == 0) detail::fail_argument("importance", "is empty");
  detail::require_finite_nonnegative("importance", importance);
  if (parameters.size() != 0) {
    detail::require_size("parameters", parameters.size(), n);
    detail::require_finite_nonnegative("parameters", parameters);
    if (parameters.sum() <= 0) detail::fail_domain("parameters", "sum to zero");
  }
  auto in_unit = [](double v, const char* name) {
    if (!(v >= 0.0 && v <= 1.0)) detail::fail_argument(name, "must lie in [0, 1], got " + detail::describe_value(v));
  };
  in_unit(options.target, "target");
  in_unit(options.min_rate, "min_rate");
  in_unit(options.max_rate, "max_rate");
  if (options.min_rate > options.max_rate) detail::fail_argument("min_rate", "exceeds max_rate");
  if (!(std::isfinite(options.alpha) && options.alpha >= 0)) {
    detail::fail_argument("alpha", "must be finite and >= 0, got " + detail::describe_value(options.alpha));
  }
  const auto N = static_cast<std::size_t>(n);
  std::vector<double> weight(N, 1.0), raw(N, 1.0);
  double mean = 0;
  for (Eigen::Index l = 0; l < n; ++l) mean += static_cast<double>(importance[l]) / static_cast<double>(n);
  for (std::size_t l = 0; l < N; ++l) {
    if (parameters.size() != 0) weight[l] = static_cast<double>(parameters[static_cast<Eigen::Index>(l)]);
    double v = mean > 0 ? static_cast<double>(importance[static_cast<Eigen::Index>(l)]) / mean : 1.0;
    if (options.log_transform) v = std::log1p(v);
    const double w = std::pow(v, options.alpha);  // pow(0, 0) = 1
    if (options.strategy == rate_strategy::proportional) raw[l] = w;
    if (options.strategy == rate_strategy::inverse) raw[l] = w > 0 ? 1.0 / w : std::numeric_limits<double>::infinity();
  }
  const double lo = options.min_rate, hi = options.max_rate;
  double total_weight = 0;
  for (const double w : weight) total_weight += w;
  auto rate = [&](double c, std::size_t l) {
    if (std::isinf(raw[l])) return hi;
    return std::clamp(c * raw[l], lo, hi);
  };
  auto mean_at = [&](double c) {
    double s = 0;
    for (std::size_t l = 0; l < N; ++l) s += weight[l] * rate(c, l);
    return s / total_weight;
  };
  std::vector<double> breaks{0.0};
  for (std::size_t l = 0; l < N; ++l) {
    if (raw[l] > 0 && std::isfinite(raw[l])) {
      breaks.push_back(lo / raw[l]);
      breaks.push_back(hi / raw[l]);
    }
  }
  std::sort(breaks.begin(), breaks.end());
  const double least = mean_at(0.0), most = mean_at(breaks.back());
  const double target = options.target;
  const double slack = 1e-12;
  if (target < least - slack || target > most + slack) {
    detail::fail_domain("target", "overall rate " + std::to_string(target) + " is unreachable: clipping to [" + std::to_string(lo) +
                                      ", " + std::to_string(hi) + "] allows only [" + std::to_string(least) + ", " +
                                      std::to_string(most) + "] for these layers");
  }
  double c = breaks.back();
  for (std::size_t k = 1; k < breaks.size(); ++k) {
    const double f0 = mean_at(breaks[k - 1]), f1 = mean_at(breaks[k]);
    if (f1 >= target) {
      c = f1 > f0 ? breaks[k - 1] + (target - f0) * (breaks[k] - breaks[k - 1]) / (f1 - f0) : breaks[k - 1];
      c = std::clamp(c, breaks[k - 1], breaks[k]);
      break;
    }
  }
  if (least >= target) c = 0.0;
  layer_rates_result<Scalar> r;
  r.rates.resize(n);
  r.scale = c;
  for (std::size_t l = 0; l < N; ++l) {
    const double v = rate(c, l);
    r.rates[static_cast<Eigen::Index>(l)] = static_cast<Scalar>(v);
    r.at_min_rate += v <= lo ? 1 : 0;
    r.at_max_rate += v >= hi ? 1 : 0;
  }
  r.weighted_mean = mean_at(c);
  return r;
}

NASHPRUNE_END_NAMESPACE
