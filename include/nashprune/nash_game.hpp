// nashprune/nash_game.hpp — the Nash head-pruning game of one layer: definition,
// validation, potential, exploitability, KKT residual and best response.
//
// Seed: nash-head-pruning-llama-cpp.md §1.2–1.3. Players are the n heads of a
// layer; head i plays s_i ∈ [0, 1] and earns
//
//     U_i(s) = s_i·c_i − λ·s_i·Σ_j s_j·r_ij
//            = s_i·(c_i − λ·Σ_{j≠i} r_ij·s_j) − λ·r_ii·s_i²,
//
// a concave quadratic in its own strategy when r_ii > 0, so its best response
// is closed-form:  BR_i(s_−i) = clamp((c_i − λ·Σ_{j≠i} r_ij·s_j) / (2λ·r_ii), 0, 1).
// (The seed's "gradient" c_i − λ·Σ_j r_ij·s_j drops the factor 2 of the own
// term, so its fixed points are not equilibria of U.)
//
// Potential game. For symmetric R let M = R + diag(r_ii) and
//     Φ(s) = cᵀs − ½λ·sᵀMs.
// Then ∂Φ/∂s_i = c_i − λ·(Ms)_i = c_i − λ·Σ_{j≠i} r_ij·s_j − 2λ·r_ii·s_i = ∂U_i/∂s_i,
// and Φ − U_i does not depend on s_i, so every unilateral change moves U_i and Φ
// by the same amount: Nash equilibria are exactly the points where no coordinate
// of Φ can improve, i.e. the KKT points of max Φ over the box [0,1]ⁿ. When R is
// positive semidefinite (a cosine-similarity Gram matrix always is), M ⪰ diag(r_ii)
// ≻ 0, Φ is strictly concave and the equilibrium is unique. An indefinite M is
// allowed: equilibria may then be many, and solvers report what they reached.
//
// Exploitability ε(s) = max_i [max_t U_i(t, s_−i) − U_i(s)] ≥ 0 is zero exactly at
// an equilibrium; with a_i = c_i − λ·Σ_{j≠i} r_ij·s_j, b_i = λ·r_ii and t* = BR_i,
// the gain of player i is (a_i·t* − b_i·t*²) − (a_i·s_i − b_i·s_i²).
// The KKT residual is ‖s − Π_[0,1](s + ∇Φ(s))‖_∞ (the natural residual).
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <string_view>
#include <type_traits>

#include "config.hpp"
#include "detail/validate.hpp"

NASHPRUNE_BEGIN_NAMESPACE

template <typename Scalar>
using nash_vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
template <typename Scalar>
using nash_matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;

/// A read-only view of one layer's game: importance c (n), redundancy R (n×n,
/// any strides) and the penalty weight λ. Build it with make_nash_game, which
/// accepts either storage order without copying.
template <typename Scalar>
struct nash_game {
  using vector_ref = Eigen::Ref<const nash_vector<Scalar>, 0, Eigen::InnerStride<>>;
  using matrix_ref = Eigen::Ref<const nash_matrix<Scalar>, 0, Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>>;

  vector_ref importance;
  matrix_ref redundancy;
  Scalar lambda;

  [[nodiscard]] Eigen::Index size() const { return importance.size(); }
};

/// Views c and R as a game. A row-major R is viewed through its transpose (a
/// column-major view of the same memory): R is symmetric within the validation
/// tolerance, so both read the same game.
template <typename VectorDerived, typename MatrixDerived>
[[nodiscard]] auto make_nash_game(const Eigen::MatrixBase<VectorDerived>& importance,
                                  const Eigen::MatrixBase<MatrixDerived>& redundancy,
                                  typename VectorDerived::Scalar lambda) {
  using Scalar = typename VectorDerived::Scalar;
  static_assert(std::is_same_v<Scalar, typename MatrixDerived::Scalar>,
                "importance and redundancy must share one scalar type");
  if constexpr (MatrixDerived::IsRowMajor) {
    return nash_game<Scalar>{importance, redundancy.transpose(), lambda};
  } else {
    return nash_game<Scalar>{importance, redundancy, lambda};
  }
}

/// Tolerances of validate_nash_game.
template <typename Scalar>
struct nash_validation_options {
  /// |r_ij − r_ji| ≤ symmetry_tolerance · max(1, |r_ij|, |r_ji|).
  Scalar symmetry_tolerance = Scalar(1e-5);
};

namespace detail {
/// The symmetry test of validate_nash_game: |a − b| > tolerance · max(1, |a|, |b|).
template <typename Scalar>
[[nodiscard]] inline bool asymmetric(Scalar a, Scalar b, Scalar tolerance) {
  return std::abs(a - b) > tolerance * std::max({Scalar(1), std::abs(a), std::abs(b)});
}
}  // namespace detail

/// Throws std::invalid_argument for a size mismatch or empty game, and
/// std::domain_error for non-finite c or R, R asymmetric beyond the tolerance,
/// r_ii ≤ 0 or λ ≤ 0 (λ non-finite), naming the argument and the index.
/// `prefix` is prepended to the argument names (e.g. "layers[3].").
template <typename Scalar>
void validate_nash_game(const nash_game<Scalar>& game, const nash_validation_options<Scalar>& options = {},
                        std::string_view prefix = {}) {
  const std::string p(prefix);
  const Eigen::Index n = game.importance.size();
  detail::require(n > 0, p + "importance", "is empty");
  detail::require_size(p + "redundancy", game.redundancy.rows(), n, "row count");
  detail::require_size(p + "redundancy", game.redundancy.cols(), n, "column count");
  detail::require_finite(p + "importance", game.importance);
  if (!game.redundancy.allFinite()) detail::require_finite(p + "redundancy", game.redundancy);
  if (!(std::isfinite(game.lambda) && game.lambda > 0)) {
    detail::fail_domain(p + "lambda", "must be finite and > 0, got " + detail::describe_value(game.lambda));
  }
  for (Eigen::Index i = 0; i < n; ++i) {
    if (!(game.redundancy(i, i) > 0)) {
      detail::fail_domain(p + "redundancy", "diagonal r_ii must be > 0, got " +
                                                detail::describe_value(game.redundancy(i, i)) + " at " +
                                                detail::at_entry(i, i));
    }
  }
  // Symmetry, tile by tile so both r_ij and r_ji stay in cache for large n;
  // contiguous columns (the common case) are read without stride arithmetic.
  const auto check_symmetry = [&](const auto& r) {
    constexpr Eigen::Index tile = 32;
    for (Eigen::Index i0 = 0; i0 < n; i0 += tile) {
      for (Eigen::Index j0 = i0; j0 < n; j0 += tile) {
        for (Eigen::Index i = i0; i < std::min(n, i0 + tile); ++i) {
          for (Eigen::Index j = std::max(j0, i + 1); j < std::min(n, j0 + tile); ++j) {
            const Scalar a = r(i, j);
            const Scalar b = r(j, i);
            if (detail::asymmetric(a, b, options.symmetry_tolerance)) {
              detail::fail_domain(p + "redundancy", "not symmetric: " + detail::describe_value(a) + " at " +
                                                        detail::at_entry(i, j) + " vs " + detail::describe_value(b) +
                                                        " at " + detail::at_entry(j, i));
            }
          }
        }
      }
    }
  };
  const auto& r = game.redundancy;
  if (r.innerStride() == 1) {
    check_symmetry(Eigen::Map<const nash_matrix<Scalar>, 0, Eigen::OuterStride<>>(
        r.data(), n, n, Eigen::OuterStride<>(r.outerStride())));
  } else {
    check_symmetry(r);
  }
}

namespace detail {

/// True when validate_nash_game would pass: the same predicates, in one
/// vectorised pass over `r`, a view of game.redundancy with the same values
/// (the solvers' contiguous view). `entries_checked`: the caller has already
/// found every entry finite and |r_ij − r_ji| ≤ symmetry_tolerance (a SIMD
/// pass), so only λ, c and the diagonal's sign remain. A false return is
/// followed by validate_nash_game, which names the first defect.
template <typename Scalar, typename Matrix>
[[nodiscard]] bool passes_validation(const nash_game<Scalar>& game, const Matrix& r,
                                     const nash_validation_options<Scalar>& options = {},
                                     bool entries_checked = false) {
  const Eigen::Index n = game.importance.size();
  if (n == 0 || r.rows() != n || r.cols() != n) return false;
  if (!(std::isfinite(game.lambda) && game.lambda > 0) || !game.importance.allFinite()) return false;
  if (!(r.diagonal().array() > 0).all()) return false;
  if (entries_checked) return true;
  // x − x is 0 for finite x and NaN otherwise: one vectorised sum finds any NaN/Inf.
  if ((r.array() - r.array()).sum() != Scalar(0)) return false;
  // |a − b| ≤ tolerance passes whatever the magnitudes (the bound is ≥ tolerance),
  // so the full test runs only for columns whose largest difference exceeds it.
  for (Eigen::Index j = 1; j < n; ++j) {
    bool exceeds = false;  // an OR, not a running max: no dependency chain through the loop
    for (Eigen::Index i = 0; i < j; ++i) exceeds |= std::abs(r(i, j) - r(j, i)) > options.symmetry_tolerance;
    if (exceeds) {
      for (Eigen::Index i = 0; i < j; ++i) {
        if (asymmetric(r(i, j), r(j, i), options.symmetry_tolerance)) return false;
      }
    }
  }
  return true;
}

}  // namespace detail

/// Player i's utility U_i(s).
template <typename Scalar, typename Derived>
[[nodiscard]] Scalar nash_utility(const nash_game<Scalar>& game, const Eigen::MatrixBase<Derived>& s, Eigen::Index i) {
  return s(i) * (game.importance(i) - game.lambda * game.redundancy.row(i).dot(s.derived()));
}

/// The potential Φ(s) = cᵀs − ½λ·sᵀMs with M = R + diag(r_ii).
template <typename Scalar, typename Derived>
[[nodiscard]] Scalar nash_potential(const nash_game<Scalar>& game, const Eigen::MatrixBase<Derived>& s) {
  const nash_vector<Scalar> x = s;
  const Scalar quadratic = x.dot(game.redundancy * x) + game.redundancy.diagonal().dot(x.cwiseAbs2());
  return game.importance.dot(x) - Scalar(0.5) * game.lambda * quadratic;
}

namespace detail {

/// Best response of one player from a_i = c_i − λ·Σ_{j≠i} r_ij·s_j and
/// b_i = λ·r_ii > 0 (shared by the public diagnostics and the solvers).
template <typename Scalar>
[[nodiscard]] inline Scalar best_response_from(Scalar a, Scalar b) {
  return std::clamp(a / (Scalar(2) * b), Scalar(0), Scalar(1));
}

/// ε(s) from the players' own derivatives g (= c − Q·s, Q = λM) and b_i = λ·r_ii.
/// With Δ_i = BR_i − s_i = clamp(s_i + g_i/(2b_i), 0, 1) − s_i, the gain of
/// player i is (a_i·t − b_i·t²) − (a_i·s_i − b_i·s_i²) = Δ_i·g_i − b_i·Δ_i².
template <typename Scalar, typename Step, typename G, typename B>
[[nodiscard]] Scalar exploitability_from_steps(const Step& step, const G& gradient, const B& half_diagonal) {
  const Scalar worst = (step * gradient.array() - half_diagonal.array() * step.square()).maxCoeff();
  return std::max(worst, Scalar(0));
}
template <typename Scalar, typename S, typename G, typename B>
[[nodiscard]] Scalar exploitability_from_gradient(const S& s, const G& gradient, const B& half_diagonal) {
  const auto x = s.array();
  const auto step = (x + gradient.array() / (Scalar(2) * half_diagonal.array())).max(Scalar(0)).min(Scalar(1)) - x;
  return exploitability_from_steps<Scalar>(step, gradient, half_diagonal);
}
/// The same with 1/(2b_i) given (the solvers keep it): no division per player.
template <typename Scalar, typename S, typename G, typename B, typename I>
[[nodiscard]] Scalar exploitability_from_gradient(const S& s, const G& gradient, const B& half_diagonal,
                                                  const I& inverse_diagonal) {
  const auto x = s.array();
  const auto step = (x + gradient.array() * inverse_diagonal.array()).max(Scalar(0)).min(Scalar(1)) - x;
  return exploitability_from_steps<Scalar>(step, gradient, half_diagonal);
}

/// Natural KKT residual ‖s − Π(s + g)‖_∞ for the potential's gradient g.
template <typename Scalar, typename S, typename G>
[[nodiscard]] Scalar kkt_residual_from(const S& s, const G& gradient) {
  Scalar worst = 0;
  for (Eigen::Index i = 0; i < s.size(); ++i) {
    const Scalar projected = std::clamp(s(i) + gradient(i), Scalar(0), Scalar(1));
    worst = std::max(worst, std::abs(s(i) - projected));
  }
  return worst;
}

}  // namespace detail

/// Each player's own derivative g_i = ∂U_i/∂s_i = c_i − λ·(Rs)_i − λ·r_ii·s_i,
/// i.e. ∇Φ(s) = c − λ·M·s (R symmetric within the validation tolerance).
template <typename Scalar, typename Derived>
[[nodiscard]] nash_vector<Scalar> nash_potential_gradient(const nash_game<Scalar>& game,
                                                          const Eigen::MatrixBase<Derived>& s) {
  const nash_vector<Scalar> x = s;
  return game.importance - game.lambda * (game.redundancy * x + game.redundancy.diagonal().cwiseProduct(x));
}

/// The exploitability ε(s) in closed form (0 exactly at a Nash equilibrium).
template <typename Scalar, typename Derived>
[[nodiscard]] Scalar nash_exploitability(const nash_game<Scalar>& game, const Eigen::MatrixBase<Derived>& s) {
  const nash_vector<Scalar> half_diagonal = game.lambda * game.redundancy.diagonal();
  return detail::exploitability_from_gradient<Scalar>(s.derived(), nash_potential_gradient(game, s), half_diagonal);
}

/// The KKT residual ‖s − Π_[0,1](s + ∇Φ(s))‖_∞.
template <typename Scalar, typename Derived>
[[nodiscard]] Scalar nash_kkt_residual(const nash_game<Scalar>& game, const Eigen::MatrixBase<Derived>& s) {
  return detail::kkt_residual_from<Scalar>(s.derived(), nash_potential_gradient(game, s));
}

/// Player i's best response to the others' strategies in s (s_i itself is ignored).
template <typename Scalar, typename Derived>
[[nodiscard]] Scalar nash_best_response(const nash_game<Scalar>& game, const Eigen::MatrixBase<Derived>& s,
                                        Eigen::Index i) {
  const Scalar b = game.lambda * game.redundancy(i, i);
  const Scalar a = game.importance(i) - game.lambda * game.redundancy.row(i).dot(s.derived()) + b * s(i);
  return detail::best_response_from(a, b);
}

NASHPRUNE_END_NAMESPACE
