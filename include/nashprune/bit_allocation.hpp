// nashprune/bit_allocation.hpp — mixed precision: one ggml type per tensor (or per
// row group) from a menu, under a byte or average-bits budget.
//
// Source: nash-swarm-quantization.md, "Adaptive Bit Allocation" (top 10 % of weights
// by importance -> 8 bits, next 20 % -> 4 bits, rest -> 2 bits; ~3 bits average).
//  - quantile_baseline: that rule over tensors, with numpy's linear quantiles of the
//    importance: I >= q90 -> q8_0, I >= q70 -> q4_K, else q2_K. A type whose block
//    does not divide the tensor's row falls back to the cheapest menu type with at
//    least as many bits per weight that fits (llama.cpp falls back similarly).
//  - allocate_bits: minimise the importance-weighted quantization error
//        E = sum_t I_t · n_t · 2^(-2 · bpw(type_t))
//    (high-rate MSE of a b-bit quantizer falls as 2^-2b; n_t weights of tensor t)
//    subject to sum_t bytes_t(type_t) <= budget. This is a multiple-choice knapsack.
//    Each tensor's (bytes, error) options are reduced to their lower convex hull;
//    starting from the cheapest plan, hull upgrades are applied in descending error
//    saved per byte while they fit (the Lagrangian / LP order), then any upgrade that
//    still fits is taken, best ratio first, until none fits ("meets the budget": the
//    unused bytes are smaller than every remaining upgrade). Bound: the LP relaxation
//    value is reported as lower_bound and E - optimum <= E - lower_bound <= the error
//    saved by the first upgrade that did not fit (gap_bound).
//  - allocate_bits_measured: the same allocator over errors measured per tensor and
//    type (e.g. by quantizing with ggml: quantization_error.hpp) instead of the
//    2^(-2·bpw) model; the hull, the LP bound and the gap are those above.
//  - tensor_type_overrides: the plan as llama-quantize `--tensor-type PATTERN=TYPE`
//    arguments (PATTERN is a regex searched in the tensor name: anchored and escaped).
// Byte counts use whole ggml blocks (ggml_types.hpp), so they are the file's bytes.
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <queue>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "config.hpp"
#include "detail/quantile.hpp"
#include "detail/validate.hpp"
#include "ggml_types.hpp"

NASHPRUNE_BEGIN_NAMESPACE

/// A tensor to quantize (ggml_types.hpp).
using quant_tensor = tensor_shape;

inline constexpr std::array<ggml_type, 7> default_quant_menu{ggml_type::q2_k, ggml_type::q3_k, ggml_type::q4_k, ggml_type::q5_k,
                                                             ggml_type::q6_k, ggml_type::q8_0, ggml_type::f16};

struct bit_allocation {
  std::vector<ggml_type> types;  // one per tensor
  std::int64_t bytes = 0;
  std::int64_t budget = 0;       // bytes (0 for the baseline, which has none)
  std::int64_t weights = 0;
  double error = 0;              // E of the header comment
  double lower_bound = 0;        // allocate_bits: LP bound on E at this budget
  double gap_bound = 0;          // allocate_bits: E - optimum <= gap_bound
  [[nodiscard]] double average_bits() const {
    return weights > 0 ? 8.0 * static_cast<double>(bytes) / static_cast<double>(weights) : 0.0;
  }
};

namespace detail {

inline void validate_quant_tensors(std::span<const quant_tensor> tensors) {
  if (tensors.empty()) fail_argument("tensors", "is empty");
  for (std::size_t t = 0; t < tensors.size(); ++t) {
    if (tensors[t].row_length <= 0 || tensors[t].rows <= 0) {
      fail_argument("tensors", "non-positive shape at " + at_index(static_cast<std::int64_t>(t)) + " ('" + tensors[t].name + "')");
    }
  }
}

inline std::vector<ggml_type> validated_menu(std::span<const ggml_type> menu) {
  if (menu.empty()) fail_argument("menu", "is empty");
  std::vector<ggml_type> sorted;
  for (std::size_t k = 0; k < menu.size(); ++k) {
    (void)traits_of(menu[k]);
    if (std::find(sorted.begin(), sorted.end(), menu[k]) != sorted.end()) fail_argument("menu", "repeats a type at " + at_index(static_cast<std::int64_t>(k)));
    sorted.push_back(menu[k]);
  }
  std::sort(sorted.begin(), sorted.end(), [](ggml_type a, ggml_type b) {
    return traits_of(a).bits_per_weight() < traits_of(b).bits_per_weight();
  });
  return sorted;
}

/// Menu types (ascending bits) whose block divides the tensor's rows; fails naming the tensor if none does.
inline std::vector<ggml_type> fitting_types(const std::vector<ggml_type>& menu, const quant_tensor& t, std::size_t position) {
  std::vector<ggml_type> fit;
  for (const ggml_type type : menu) {
    if (t.row_length % traits_of(type).block_size == 0) fit.push_back(type);
  }
  if (fit.empty()) {
    fail_argument("tensors", "row length " + std::to_string(t.row_length) + " fits no menu type at " +
                                 at_index(static_cast<std::int64_t>(position)) + " ('" + t.name + "')");
  }
  return fit;
}

inline std::int64_t tensor_bytes_of(const quant_tensor& t, ggml_type type) { return row_bytes(type, t.row_length) * t.rows; }

inline double tensor_error(double importance, const quant_tensor& t, ggml_type type) {
  return importance * static_cast<double>(t.row_length * t.rows) * std::exp2(-2.0 * traits_of(type).bits_per_weight());
}

template <typename Scalar>
std::vector<double> validated_importance(const Eigen::Ref<const Eigen::Matrix<Scalar, Eigen::Dynamic, 1>, 0, Eigen::InnerStride<>>& importance,
                                         std::size_t n) {
  require_size("importance", importance.size(), static_cast<std::int64_t>(n));
  require_finite_nonnegative("importance", importance);
  std::vector<double> v(n);
  for (std::size_t t = 0; t < n; ++t) v[t] = static_cast<double>(importance[static_cast<Eigen::Index>(t)]);
  return v;
}

/// Fills bytes, error and weights of `a` from its types; error_of(t, type) is tensor t's error.
template <typename ErrorOf>
void finish_allocation(bit_allocation& a, std::span<const quant_tensor> tensors, const ErrorOf& error_of) {
  a.bytes = 0;
  a.error = 0;
  a.weights = 0;
  for (std::size_t t = 0; t < tensors.size(); ++t) {
    a.bytes += tensor_bytes_of(tensors[t], a.types[t]);
    a.error += error_of(t, a.types[t]);
    a.weights += tensors[t].row_length * tensors[t].rows;
  }
}

}  // namespace detail

/// The bytes an average of `bits_per_weight` allows for these tensors (floor).
[[nodiscard]] inline std::int64_t bytes_for_average_bits(std::span<const quant_tensor> tensors, double bits_per_weight) {
  detail::validate_quant_tensors(tensors);
  if (!(std::isfinite(bits_per_weight) && bits_per_weight > 0)) {
    detail::fail_argument("bits_per_weight", "must be finite and positive, got " + detail::describe_value(bits_per_weight));
  }
  long double weights = 0;
  for (const auto& t : tensors) weights += static_cast<long double>(t.row_length) * static_cast<long double>(t.rows);
  return static_cast<std::int64_t>(std::floor(weights * bits_per_weight / 8.0L));
}

struct quantile_rule {
  double top_fraction = 0.10;   // -> high
  double next_fraction = 0.20;  // -> middle
  ggml_type high = ggml_type::q8_0;
  ggml_type middle = ggml_type::q4_k;
  ggml_type low = ggml_type::q2_k;
};

/// The seed's quantile rule (see the header comment).
template <typename Scalar>
[[nodiscard]] bit_allocation quantile_baseline(
    std::span<const quant_tensor> tensors,
    const Eigen::Ref<const Eigen::Matrix<Scalar, Eigen::Dynamic, 1>, 0, Eigen::InnerStride<>>& importance,
    const quantile_rule& rule = {}, std::span<const ggml_type> menu = default_quant_menu) {
  detail::validate_quant_tensors(tensors);
  const auto sorted_menu = detail::validated_menu(menu);
  const auto values = detail::validated_importance<Scalar>(importance, tensors.size());
  if (!(rule.top_fraction >= 0 && rule.next_fraction >= 0 && rule.top_fraction + rule.next_fraction <= 1)) {
    detail::fail_argument("rule", "fractions must be >= 0 and sum to at most 1");
  }
  const double q_high = detail::linear_quantile(values, 1.0 - rule.top_fraction);
  const double q_middle = detail::linear_quantile(values, 1.0 - rule.top_fraction - rule.next_fraction);
  bit_allocation a;
  for (std::size_t t = 0; t < tensors.size(); ++t) {
    const ggml_type wanted = values[t] >= q_high ? rule.high : values[t] >= q_middle ? rule.middle : rule.low;
    const auto fit = detail::fitting_types(sorted_menu, tensors[t], t);
    ggml_type chosen = fit.back();
    if (tensors[t].row_length % traits_of(wanted).block_size == 0) {
      chosen = wanted;
    } else {
      for (const ggml_type type : fit) {
        if (traits_of(type).bits_per_weight() >= traits_of(wanted).bits_per_weight()) {
          chosen = type;
          break;
        }
      }
    }
    a.types.push_back(chosen);
  }
  detail::finish_allocation(a, tensors, [&](std::size_t t, ggml_type type) { return detail::tensor_error(values[t], tensors[t], type); });
  return a;
}

namespace detail {

/// Tensor t's options by ascending bytes; equal bytes: the lower error first (the
/// hull keeps the first of equal bytes).
template <typename ErrorOf>
void sort_by_bytes(std::vector<ggml_type>& options, const quant_tensor& t, std::size_t position, const ErrorOf& error_of) {
  std::stable_sort(options.begin(), options.end(), [&](ggml_type x, ggml_type y) {
    const std::int64_t bx = tensor_bytes_of(t, x), by = tensor_bytes_of(t, y);
    return bx < by || (bx == by && error_of(position, x) < error_of(position, y));
  });
}

/// The options (by ascending bytes) on the lower convex hull of (bytes, error).
template <typename ErrorOf>
std::vector<ggml_type> lower_hull(const std::vector<ggml_type>& options, const quant_tensor& t, std::size_t position,
                                  const ErrorOf& error_of) {
  std::vector<ggml_type> h;
  for (const ggml_type type : options) {
    const auto b = static_cast<double>(tensor_bytes_of(t, type));
    const double e = error_of(position, type);
    if (!h.empty() && b <= static_cast<double>(tensor_bytes_of(t, h.back()))) continue;  // same bytes: keep the first
    if (!h.empty() && e >= error_of(position, h.back())) continue;                       // no gain
    while (h.size() >= 2) {
      const ggml_type p = h[h.size() - 2], q = h.back();
      const double bp = static_cast<double>(tensor_bytes_of(t, p)), bq = static_cast<double>(tensor_bytes_of(t, q));
      const double ep = error_of(position, p), eq = error_of(position, q);
      // q lies on or above the chord p -> (b, e): not on the lower hull.
      if ((eq - ep) * (b - bp) >= (e - ep) * (bq - bp)) {
        h.pop_back();
      } else {
        break;
      }
    }
    h.push_back(type);
  }
  return h;
}

/// Error saved per extra byte moving tensor t from `from` to `to`.
template <typename ErrorOf>
double upgrade_ratio(const quant_tensor& t, std::size_t position, const ErrorOf& error_of, ggml_type from, ggml_type to) {
  const double db = static_cast<double>(tensor_bytes_of(t, to) - tensor_bytes_of(t, from));
  return (error_of(position, from) - error_of(position, to)) / db;
}

/// From the cheapest hull point of every tensor (a.types), applies hull upgrades in
/// descending error saved per byte while they fit: the LP order. Sets lower_bound
/// (the LP value: the first upgrade that does not fit taken fractionally) and
/// gap_bound (that upgrade's saving); returns the bytes used.
template <typename ErrorOf>
std::int64_t climb_hulls(bit_allocation& a, std::span<const quant_tensor> tensors, const ErrorOf& error_of,
                         const std::vector<std::vector<ggml_type>>& hull, std::int64_t used) {
  const std::size_t n = tensors.size();
  std::vector<std::size_t> step(n, 0);  // position on the hull
  double error = 0;
  for (std::size_t t = 0; t < n; ++t) error += error_of(t, a.types[t]);
  struct upgrade {
    double ratio;
    std::size_t tensor;
    bool operator<(const upgrade& o) const { return ratio < o.ratio || (ratio == o.ratio && tensor > o.tensor); }
  };
  std::priority_queue<upgrade> queue;
  for (std::size_t t = 0; t < n; ++t) {
    if (hull[t].size() > 1) queue.push({upgrade_ratio(tensors[t], t, error_of, hull[t][0], hull[t][1]), t});
  }
  bool blocked = false;
  a.lower_bound = error;
  while (!queue.empty()) {
    const upgrade u = queue.top();
    queue.pop();
    const std::size_t t = u.tensor;
    const ggml_type from = hull[t][step[t]], to = hull[t][step[t] + 1];
    const std::int64_t extra = tensor_bytes_of(tensors[t], to) - tensor_bytes_of(tensors[t], from);
    const double saved = error_of(t, from) - error_of(t, to);
    if (used + extra > a.budget) {
      if (!blocked) {  // the LP takes this step fractionally and stops
        blocked = true;
        a.gap_bound = saved;
        a.lower_bound = error - saved * static_cast<double>(a.budget - used) / static_cast<double>(extra);
      }
      continue;
    }
    used += extra;
    error -= saved;
    ++step[t];
    a.types[t] = to;
    if (step[t] + 1 < hull[t].size()) queue.push({upgrade_ratio(tensors[t], t, error_of, to, hull[t][step[t] + 1]), t});
  }
  if (!blocked) a.lower_bound = error;
  return used;
}

/// Takes any upgrade (on the hull or not) that still fits, best error saved per
/// byte first, until none fits.
template <typename ErrorOf>
void fill_budget(bit_allocation& a, std::span<const quant_tensor> tensors, const ErrorOf& error_of,
                 const std::vector<std::vector<ggml_type>>& options, std::int64_t used) {
  const std::size_t n = tensors.size();
  for (;;) {
    double best = 0;
    std::size_t best_t = n;
    ggml_type best_type = ggml_type::f32;
    for (std::size_t t = 0; t < n; ++t) {
      const std::int64_t now = tensor_bytes_of(tensors[t], a.types[t]);
      for (const ggml_type type : options[t]) {
        const std::int64_t extra = tensor_bytes_of(tensors[t], type) - now;
        if (extra <= 0 || used + extra > a.budget) continue;
        const double ratio = upgrade_ratio(tensors[t], t, error_of, a.types[t], type);
        if (ratio > best) {
          best = ratio;
          best_t = t;
          best_type = type;
        }
      }
    }
    if (best_t == n) break;
    used += tensor_bytes_of(tensors[best_t], best_type) - tensor_bytes_of(tensors[best_t], a.types[best_t]);
    a.types[best_t] = best_type;
  }
}

/// The hull allocator of the header comment over any errors: tensor t may take the
/// types options[t] (non-empty), at the error error_of(t, type).
template <typename ErrorOf>
bit_allocation allocate_on_hulls(std::span<const quant_tensor> tensors, std::vector<std::vector<ggml_type>> options,
                                 const ErrorOf& error_of, std::int64_t budget_bytes) {
  const std::size_t n = tensors.size();
  std::vector<std::vector<ggml_type>> hull(n);
  std::int64_t least = 0;
  for (std::size_t t = 0; t < n; ++t) {
    sort_by_bytes(options[t], tensors[t], t, error_of);
    hull[t] = lower_hull(options[t], tensors[t], t, error_of);
    least += tensor_bytes_of(tensors[t], options[t].front());
  }
  if (budget_bytes < least) {
    fail_domain("budget", std::to_string(budget_bytes) + " bytes is below the smallest plan, " + std::to_string(least) + " bytes");
  }
  bit_allocation a;
  a.budget = budget_bytes;
  a.types.resize(n);
  for (std::size_t t = 0; t < n; ++t) a.types[t] = hull[t][0];
  const std::int64_t used = climb_hulls(a, tensors, error_of, hull, least);
  fill_budget(a, tensors, error_of, options, used);
  finish_allocation(a, tensors, error_of);
  a.gap_bound = std::max(0.0, a.error - a.lower_bound);
  return a;
}

}  // namespace detail

/// The optimal allocator of the header comment under a byte budget.
template <typename Scalar>
[[nodiscard]] bit_allocation allocate_bits(
    std::span<const quant_tensor> tensors,
    const Eigen::Ref<const Eigen::Matrix<Scalar, Eigen::Dynamic, 1>, 0, Eigen::InnerStride<>>& importance, std::int64_t budget_bytes,
    std::span<const ggml_type> menu = default_quant_menu) {
  detail::validate_quant_tensors(tensors);
  const auto sorted_menu = detail::validated_menu(menu);
  const auto values = detail::validated_importance<Scalar>(importance, tensors.size());
  std::vector<std::vector<ggml_type>> options(tensors.size());
  for (std::size_t t = 0; t < tensors.size(); ++t) options[t] = detail::fitting_types(sorted_menu, tensors[t], t);
  return detail::allocate_on_hulls(
      tensors, std::move(options), [&](std::size_t t, ggml_type type) { return detail::tensor_error(values[t], tensors[t], type); },
      budget_bytes);
}

/// The same allocator over measured errors: errors(t, k) is tensor t's error at
/// menu[k] (finite and >= 0; +infinity marks a type tensor t cannot take). Types
/// whose block does not divide a tensor's rows are skipped for it whatever its entry.
template <typename Scalar>
[[nodiscard]] bit_allocation allocate_bits_measured(std::span<const quant_tensor> tensors,
                                                    const Eigen::Ref<const Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>>& errors,
                                                    std::int64_t budget_bytes, std::span<const ggml_type> menu) {
  detail::validate_quant_tensors(tensors);
  (void)detail::validated_menu(menu);
  detail::require_size("errors rows", errors.rows(), static_cast<std::int64_t>(tensors.size()));
  detail::require_size("errors columns", errors.cols(), static_cast<std::int64_t>(menu.size()));
  std::vector<std::vector<ggml_type>> options(tensors.size());
  for (std::size_t t = 0; t < tensors.size(); ++t) {
    for (std::size_t k = 0; k < menu.size(); ++k) {
      const double e = static_cast<double>(errors(static_cast<Eigen::Index>(t), static_cast<Eigen::Index>(k)));
      if (std::isnan(e) || e < 0) {
        detail::fail_argument("errors", "not finite and >= 0 at (" + std::to_string(t) + ", " + std::to_string(k) + ") ('" +
                                            tensors[t].name + "', " + std::string(traits_of(menu[k]).name) + "): " +
                                            detail::describe_value(e));
      }
      if (std::isinf(e) || tensors[t].row_length % traits_of(menu[k]).block_size != 0) continue;
      options[t].push_back(menu[k]);
    }
    if (options[t].empty()) {
      detail::fail_argument("errors", "no menu type is available at " + detail::at_index(static_cast<std::int64_t>(t)) + " ('" +
                                          tensors[t].name + "')");
    }
  }
  const auto error_of = [&](std::size_t t, ggml_type type) {
    const auto k = static_cast<Eigen::Index>(std::find(menu.begin(), menu.end(), type) - menu.begin());
    return static_cast<double>(errors(static_cast<Eigen::Index>(t), k));
  };
  return detail::allocate_on_hulls(tensors, std::move(options), error_of, budget_bytes);
}

/// `--tensor-type` arguments for llama-quantize: "^<escaped name>$=<type>" for every
/// tensor whose type differs from `base` (pass the file's base type to shorten the list).
[[nodiscard]] inline std::vector<std::string> tensor_type_overrides(std::span<const quant_tensor> tensors,
                                                                    std::span<const ggml_type> types,
                                                                    std::optional<ggml_type> base = std::nullopt) {
  detail::require_size("types", static_cast<std::int64_t>(types.size()), static_cast<std::int64_t>(tensors.size()));
  std::vector<std::string> overrides;
  for (std::size_t t = 0; t < tensors.size(); ++t) {
    if (base && types[t] == *base) continue;
    std::string pattern = "^";
    for (const char c : tensors[t].name) {
      if (std::string_view(".^$|()[]{}*+?\\").find(c) != std::string_view::npos) pattern += '\\';
      pattern += c;
    }
    pattern += "$=";
    pattern += traits_of(types[t]).name;
    overrides.push_back(std::move(pattern));
  }
  return overrides;
}

NASHPRUNE_END_NAMESPACE
