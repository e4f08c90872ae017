// nashprune/compensation.hpp — compensated removal: when a linear map y = W x loses
// some of its input coordinates, refit what stays so its output changes as little
// as possible, and say by how much it still changes.
//
// Setting. W is m × n, stored out_by_in (row = output unit, as ggml stores
// attn_output and ffn_down). Its input x ∈ ℝⁿ loses the coordinates S and keeps K
// (disjoint, S ∪ K = [0, n)). Attention heads remove blocks of head_dim coordinates
// of attn_output's input (head h: [h·d, (h+1)·d), unit_coordinates); MLP channels
// remove single coordinates of ffn_down's input. Calibration gives the second
// moment H = E[x xᵀ] and the mean μ = E[x]; C = H − μμᵀ is the centred moment.
// The replacement is affine, ŷ = W'_K x_K + b, and every error here is
//     e(W'_K, b) = E‖W x − ŷ‖² = tr(B M Bᵀ),   M = [[H, μ], [μᵀ, 1]],
//     B = [W − W'_K↑, −b]  (m × (n+1); W'_K↑ is W'_K in the columns K, zero in S),
// the moment of the input augmented by a constant 1: computed from H, μ and W only,
// it equals the mean of ‖W x − ŷ‖² over the samples that gave H and μ, exactly
// (expected_output_error).
//
// The three variants (compensation_kind):
//   none   W'_K = W_K, b = 0;                          e = tr(W_S H_SS W_Sᵀ).
//   bias   FLAP (An et al., "Fluctuation-based Adaptive Structured Pruning for Large
//          Language Models", AAAI 2024): the removed coordinates' mean contribution
//          moves into the bias, W'_K = W_K, b = W_S μ_S;  e = tr(W_S C_SS W_Sᵀ).
//   refit  SlimGPT (Ling et al., NeurIPS 2024), structured Optimal Brain Surgeon
//          (Hassibi & Stork, NeurIPS 1992): least squares of W x on [x_K; 1]. The
//          normal equations of the augmented problem give b = Wμ − W'_K μ_K; putting
//          that back leaves the centred system, whose solution is
//              W'_K = W_K + Δ,   Δ = W_S C_SK (C_KK + λI)⁻¹,   b = W_S μ_S − Δ μ_K.
//          At λ = 0 it is the exact minimiser of e, and its error is the OBS error
//              E(S) = tr(W_S (C_SS − C_SK C_KK⁻¹ C_KS) W_Sᵀ) = tr(W_S ((C⁻¹)_SS)⁻¹ W_Sᵀ).
//
// Damping. λ = δ·mean(diag H_KK), δ = compensation_options::damping (0.001 by default;
// 0 gives the exact least-squares refit). It is a ridge on the change: the refit
// minimises e + λ‖Δ‖²_F, which is the exact refit for the damped moment C + λI (the
// way SparseGPT and SlimGPT damp H), so an empty S leaves W unchanged. When C_KK + λI
// is numerically singular (a kept coordinate that is an exact linear combination of
// other kept ones, with δ = 0; reciprocal condition below 16·|K|·ε), λ is raised, to
// 1e-6·mean(diag H_KK) first and then tenfold, and the result says so
// (compensated_map::damping_raised; the library prints nothing). The error reported
// is always the true e of the W'_K and b returned, not the damped objective.
//
// Validation. W, H, μ finite; H square and symmetric; M positive semidefinite
// (equivalently C ⪰ 0: H_ii ≥ μ_i² and a pivoted LDLᵀ of C with no pivot below
// −max(√ε·max diag C, n·r·max diag H)); kept and removed ascending, in range,
// disjoint and covering. r = compensation_options::moment_rounding says how exact
// the moments are: each entry of H within r·max diag H. Moments measured in float
// or stored as float (r ≈ 70·2⁻²⁴ for moment_accumulator.hpp's, plus 2⁻²⁴ for the
// file) make a singular C, which fewer samples than coordinates always give, an
// indefinite one: a perturbation E with |E_ij| ≤ r·max diag H has ‖E‖₂ ≤ n·r·max
// diag H, and so moves C's zero eigenvalues down by as much. Such a C is the
// moment the samples had, so it is accepted, and the damping absorbs it (λ above,
// raised while C_KK + λI is not numerically positive definite). Shapes
// and index lists throw std::invalid_argument; values (non-finite, not PSD) throw
// std::domain_error, as everywhere in nashprune, each naming the argument. A result
// that is not finite is refused (std::domain_error naming "result").
#pragma once

#include <Eigen/Cholesky>
#include <Eigen/Core>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "attention_geometry.hpp"
#include "config.hpp"
#include "detail/validate.hpp"

NASHPRUNE_BEGIN_NAMESPACE

enum class compensation_kind : std::uint8_t { none, bias, refit };
inline constexpr std::array<std::string_view, 3> compensation_kind_names{"none", "bias", "refit"};

template <typename Scalar>
struct compensation_options {
  Scalar damping = Scalar(0.001);  ///< δ: the refit's ridge is δ·mean(diag H_KK)
  /// r: every entry of H is within r·max diag H of the exact moment (0: exact in
  /// Scalar); C's pivots down to −n·r·max diag H are taken for rounding (see the header).
  Scalar moment_rounding = Scalar(0);
};

/// The affine replacement of a map that lost coordinates, and its error.
template <typename Scalar>
struct compensated_map {
  Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic> kept_weight;  ///< W'_K, m × |K|, columns in kept order
  Eigen::Matrix<Scalar, Eigen::Dynamic, 1> bias;                      ///< b, m
  Scalar error = 0;             ///< E‖W x − (W'_K x_K + b)‖² of this replacement
  Scalar damping = 0;           ///< λ the refit used (absolute; 0 for none and bias)
  bool damping_raised = false;  ///< C_KK + δ·mean(diag H_KK)·I was singular: λ was raised
};

/// The coordinates of ascending units of `unit_size` coordinates each (head h of
/// head_dim d: [h·d, (h+1)·d)), ascending.
[[nodiscard]] inline std::vector<std::int64_t> unit_coordinates(std::span<const std::int64_t> units,
                                                                std::int64_t unit_size) {
  std::vector<std::int64_t> coordinates;
  for (const index_range& r : unit_ranges(units, unit_size)) {
    for (std::int64_t c = r.begin; c < r.end(); ++c) coordinates.push_back(c);
  }
  return coordinates;
}

namespace detail {

template <typename Scalar>
using dense_matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
template <typename Scalar>
using dense_vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;

/// Checks H (n × n) and μ (n): finite, H symmetric, M = [[H, μ], [μᵀ, 1]] ⪰ 0 up to
/// the rounding r of H's entries (compensation_options::moment_rounding).
/// Returns the centred moment C = H − μμᵀ.
template <typename DerivedH, typename DerivedMu, typename Scalar = typename DerivedH::Scalar>
[[nodiscard]] dense_matrix<Scalar> centred_moment(const Eigen::MatrixBase<DerivedH>& second_moment,
                                                  const Eigen::MatrixBase<DerivedMu>& mean,
                                                  Scalar moment_rounding = Scalar(0)) {
  if (!(moment_rounding >= 0) || !std::isfinite(moment_rounding)) {
    fail_domain("moment_rounding", "must be finite and >= 0, got " + describe_value(moment_rounding));
  }
  require(second_moment.rows() > 0, "second_moment", "is empty");
  require_size("second_moment", second_moment.cols(), second_moment.rows(), "column count");
  require(mean.cols() == 1, "mean", "must be a column vector");
  require_size("mean", mean.rows(), second_moment.rows(), "size");
  require_finite("second_moment", second_moment);
  require_finite("mean", mean);
  const Eigen::Index n = second_moment.rows();
  const Scalar scale = second_moment.diagonal().cwiseAbs().maxCoeff();
  const Scalar tolerance = std::sqrt(std::numeric_limits<Scalar>::epsilon()) * scale;
  for (Eigen::Index j = 0; j < n; ++j) {
    for (Eigen::Index i = j + 1; i < n; ++i) {
      if (std::abs(second_moment(i, j) - second_moment(j, i)) > tolerance) {
        fail_domain("second_moment", "is not symmetric at " + at_entry(i, j) + " (" +
                                         describe_value(second_moment(i, j)) + " vs " +
                                         describe_value(second_moment(j, i)) + ")");
      }
    }
  }
  dense_matrix<Scalar> centred = second_moment - mean * mean.transpose();
  centred = (centred + centred.transpose()).eval() / Scalar(2);
  for (Eigen::Index i = 0; i < n; ++i) {
    if (centred(i, i) < -tolerance) {
      fail_domain("second_moment", "is not positive semidefinite with the mean: H_ii = " +
                                       describe_value(second_moment(i, i)) + " < mean_i² = " +
                                       describe_value(mean(i) * mean(i)) + " at " + at_index(i));
    }
  }
  const Eigen::LDLT<dense_matrix<Scalar>> ldlt(centred);
  const auto pivots = ldlt.vectorD();
  const Scalar centred_scale = std::max(centred.diagonal().maxCoeff(), Scalar(0));
  const Scalar pivot_floor = -std::max(std::sqrt(std::numeric_limits<Scalar>::epsilon()) * centred_scale,
                                       static_cast<Scalar>(n) * moment_rounding * scale);
  for (Eigen::Index i = 0; i < n; ++i) {
    if (!(pivots(i) >= pivot_floor)) {
      fail_domain("second_moment", "is not positive semidefinite with the mean: the centred moment H − μμᵀ has a "
                                   "negative pivot " + describe_value(pivots(i)) + " (step " + std::to_string(i) + ")");
    }
  }
  return centred;
}

/// Checks that kept and removed are ascending, in [0, n), disjoint and cover [0, n).
inline void validate_partition(std::span<const std::int64_t> kept, std::span<const std::int64_t> removed, std::int64_t n) {
  validate_keep_list("kept", kept, n, /*allow_empty=*/true);
  validate_keep_list("removed", removed, n, /*allow_empty=*/true);
  std::vector<char> seen(static_cast<std::size_t>(n), 0);
  for (const std::int64_t k : kept) seen[static_cast<std::size_t>(k)] = 1;
  for (std::size_t i = 0; i < removed.size(); ++i) {
    if (seen[static_cast<std::size_t>(removed[i])] != 0) {
      fail_argument("removed", "value " + std::to_string(removed[i]) + " at " +
                                   at_index(static_cast<std::int64_t>(i)) + " is also in kept");
    }
    seen[static_cast<std::size_t>(removed[i])] = 1;
  }
  for (std::int64_t c = 0; c < n; ++c) {
    if (seen[static_cast<std::size_t>(c)] == 0) {
      fail_argument("kept", "kept and removed leave out coordinate " + std::to_string(c) + " of [0, " +
                                std::to_string(n) + ")");
    }
  }
}

template <typename Derived>
void validate_weight(const Eigen::MatrixBase<Derived>& weight, Eigen::Index n) {
  require(weight.rows() > 0, "weight", "has no rows");
  require_size("weight", weight.cols(), n, "column count (the input width of second_moment)");
  require_finite("weight", weight);
}

template <typename Derived>
[[nodiscard]] dense_matrix<typename Derived::Scalar> columns_of(const Eigen::MatrixBase<Derived>& m,
                                                                std::span<const std::int64_t> columns) {
  dense_matrix<typename Derived::Scalar> out(m.rows(), static_cast<Eigen::Index>(columns.size()));
  for (std::size_t j = 0; j < columns.size(); ++j) out.col(static_cast<Eigen::Index>(j)) = m.col(columns[j]);
  return out;
}

template <typename Derived>
[[nodiscard]] dense_matrix<typename Derived::Scalar> block_of(const Eigen::MatrixBase<Derived>& m,
                                                              std::span<const std::int64_t> rows,
                                                              std::span<const std::int64_t> columns) {
  dense_matrix<typename Derived::Scalar> out(static_cast<Eigen::Index>(rows.size()), static_cast<Eigen::Index>(columns.size()));
  for (std::size_t j = 0; j < columns.size(); ++j)
    for (std::size_t i = 0; i < rows.size(); ++i)
      out(static_cast<Eigen::Index>(i), static_cast<Eigen::Index>(j)) = m(rows[i], columns[j]);
  return out;
}

/// Whether a Cholesky factorisation is usable: it succeeded and its reciprocal
/// condition is above 16·size·ε (below that, the solve amplifies rounding without bound).
template <typename Scalar>
[[nodiscard]] bool well_conditioned(const Eigen::LLT<dense_matrix<Scalar>>& llt, Eigen::Index size) {
  if (llt.info() != Eigen::Success) return false;
  const Scalar rcond = llt.rcond();
  return std::isfinite(rcond) && rcond > Scalar(16) * static_cast<Scalar>(size) * std::numeric_limits<Scalar>::epsilon();
}

/// e = tr(B M Bᵀ) for B = [W − W'_K↑, −b] (see the header), with the validated C, μ.
template <typename DerivedW, typename DerivedMu, typename Scalar = typename DerivedW::Scalar>
[[nodiscard]] Scalar affine_error(const Eigen::MatrixBase<DerivedW>& weight, const dense_matrix<Scalar>& centred,
                                  const Eigen::MatrixBase<DerivedMu>& mean, std::span<const std::int64_t> kept,
                                  const dense_matrix<Scalar>& kept_weight, const dense_vector<Scalar>& bias) {
  // With D = W − W'_K↑ and the mean residual r̄ = D μ − b: e = tr(D C Dᵀ) + ‖r̄‖²
  // (the same as tr(B M Bᵀ), in the better-conditioned centred form).
  dense_matrix<Scalar> difference = weight;
  for (std::size_t j = 0; j < kept.size(); ++j) difference.col(kept[j]) -= kept_weight.col(static_cast<Eigen::Index>(j));
  const dense_vector<Scalar> mean_residual = difference * mean - bias;
  // Only the columns D changes enter tr(D C Dᵀ): none and bias change the removed
  // ones alone, so their error costs m·|S|² instead of m·n² (n = 14336 for
  // Llama-3-8B's ffn_down, 20 % removed: 25 times less).
  std::vector<std::int64_t> changed;
  for (Eigen::Index j = 0; j < difference.cols(); ++j) {
    if ((difference.col(j).array() != Scalar(0)).any()) changed.push_back(j);
  }
  Scalar spread = 0;
  if (static_cast<Eigen::Index>(changed.size()) == difference.cols()) {
    spread = (difference * centred).cwiseProduct(difference).sum();
  } else {
    const dense_matrix<Scalar> changed_difference = columns_of(difference, changed);
    spread = (changed_difference * block_of(centred, changed, changed)).cwiseProduct(changed_difference).sum();
  }
  return std::max(spread, Scalar(0)) + mean_residual.squaredNorm();
}

}  // namespace detail

/// The expected squared output change E‖W x − (W'_K x_K + b)‖² of any affine
/// replacement (kept_weight = W'_K, m × |K|, columns in kept order; bias = b), from
/// the moments H = E[x xᵀ] and μ = E[x] only. Throws as described in the header.
template <typename DerivedW, typename DerivedH, typename DerivedMu, typename DerivedK, typename DerivedB,
          typename Scalar = typename DerivedW::Scalar>
[[nodiscard]] Scalar expected_output_error(const Eigen::MatrixBase<DerivedW>& weight,
                                           const Eigen::MatrixBase<DerivedH>& second_moment,
                                           const Eigen::MatrixBase<DerivedMu>& mean,
                                           std::span<const std::int64_t> kept,
                                           const Eigen::MatrixBase<DerivedK>& kept_weight,
                                           const Eigen::MatrixBase<DerivedB>& bias) {
  const auto centred = detail::centred_moment(second_moment, mean);
  detail::validate_weight(weight, second_moment.rows());
  validate_keep_list("kept", kept, second_moment.rows(), /*allow_empty=*/true);
  detail::require_size("kept_weight", kept_weight.rows(), weight.rows(), "row count");
  detail::require_size("kept_weight", kept_weight.cols(), static_cast<std::int64_t>(kept.size()), "column count");
  detail::require(bias.cols() == 1, "bias", "must be a column vector");
  detail::require_size("bias", bias.rows(), weight.rows(), "size");
  detail::require_finite("kept_weight", kept_weight);
  detail::require_finite("bias", bias);
  return detail::affine_error<DerivedW, DerivedMu, Scalar>(weight, centred, mean, kept, kept_weight.template cast<Scalar>(),
                                                           bias.template cast<Scalar>());
}

/// The replacement of `kind` for y = W x losing the coordinates `removed` (keeping
/// `kept`), with its error; see the header for the math and the damping.
template <typename DerivedW, typename DerivedH, typename DerivedMu, typename Scalar = typename DerivedW::Scalar>
[[nodiscard]] compensated_map<Scalar> compensate(compensation_kind kind, const Eigen::MatrixBase<DerivedW>& weight,
                                                 const Eigen::MatrixBase<DerivedH>& second_moment,
                                                 const Eigen::MatrixBase<DerivedMu>& mean,
                                                 std::span<const std::int64_t> kept,
                                                 std::span<const std::int64_t> removed,
                                                 const compensation_options<Scalar>& options = {}) {
  if (!(options.damping >= 0) || !std::isfinite(options.damping)) {
    detail::fail_domain("options.damping", "must be finite and >= 0, got " + detail::describe_value(options.damping));
  }
  const auto centred = detail::centred_moment(second_moment, mean, options.moment_rounding);
  const Eigen::Index n = second_moment.rows();
  detail::validate_weight(weight, n);
  detail::validate_partition(kept, removed, n);
  const detail::dense_vector<Scalar> mu = mean;

  compensated_map<Scalar> out;
  out.kept_weight = detail::columns_of(weight, kept);
  out.bias = detail::dense_vector<Scalar>::Zero(weight.rows());
  if (kind != compensation_kind::none && !removed.empty()) {
    const detail::dense_matrix<Scalar> removed_weight = detail::columns_of(weight, removed);
    detail::dense_vector<Scalar> removed_mean(static_cast<Eigen::Index>(removed.size()));
    for (std::size_t i = 0; i < removed.size(); ++i) removed_mean(static_cast<Eigen::Index>(i)) = mu(removed[i]);
    out.bias = removed_weight * removed_mean;
    if (kind == compensation_kind::refit && !kept.empty()) {
      const auto kk = static_cast<Eigen::Index>(kept.size());
      detail::dense_matrix<Scalar> kept_centred = detail::block_of(centred, kept, kept);
      Scalar mean_diagonal = 0;
      for (const std::int64_t k : kept) mean_diagonal += second_moment(k, k);
      mean_diagonal /= static_cast<Scalar>(kk);
      const Scalar unit = mean_diagonal > 0 ? mean_diagonal : Scalar(1);
      Scalar lambda = options.damping * unit;
      Eigen::LLT<detail::dense_matrix<Scalar>> llt;
      for (int attempt = 0;; ++attempt) {
        detail::dense_matrix<Scalar> damped = kept_centred;
        damped.diagonal().array() += lambda;
        llt.compute(damped);
        if (detail::well_conditioned<Scalar>(llt, kk)) break;
        if (attempt == 40) detail::fail_domain("second_moment", "the kept block stays singular under any damping");
        out.damping_raised = true;
        lambda = std::max(lambda * Scalar(10), Scalar(1e-6) * unit);
      }
      out.damping = lambda;
      // Δ = W_S C_SK (C_KK + λI)⁻¹, solved as (C_KK + λI) Δᵀ = C_KS W_Sᵀ.
      const detail::dense_matrix<Scalar> cross = detail::block_of(centred, kept, removed);  // C_KS
      const detail::dense_matrix<Scalar> change = llt.solve(cross * removed_weight.transpose()).transpose();
      detail::dense_vector<Scalar> kept_mean(kk);
      for (Eigen::Index j = 0; j < kk; ++j) kept_mean(j) = mu(kept[static_cast<std::size_t>(j)]);
      out.kept_weight += change;
      out.bias -= change * kept_mean;
    }
  }
  out.error = detail::affine_error<DerivedW, detail::dense_vector<Scalar>, Scalar>(weight, centred, mu, kept, out.kept_weight, out.bias);
  if (!out.kept_weight.allFinite() || !out.bias.allFinite() || !std::isfinite(out.error)) {
    detail::fail_domain("result", "the compensation is not finite (kept_weight, bias or error)");
  }
  return out;
}

NASHPRUNE_END_NAMESPACE
