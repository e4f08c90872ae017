// nashprune/importance.hpp — importance of weights and of the structures they form.
//
// Seeds: llama-pruning-toolkit.en.md ("Importance metrics", "Importance of a
// group"), gqa-aware-prune.md ("Taylor Importance"), nash-head-pruning-llama-cpp.md
// §4.1 (head importance from the imatrix / from activations).
//
// Per-weight scores s_ij of a weight matrix W (gradient G, Hessian diagonal H):
//   magnitude L1    s = |w|
//   magnitude L2    s = w²             (a structure's L2 norm is sqrt of its Σ s)
//   Taylor 1st      s = |w·g|
//   Taylor 2nd      s = |w·g| + ½|w²·h|, with h = g² (Fisher) when H is not given
//   Wanda           s = |w_ij|·‖x_j‖₂, j the input unit of the weight
// A structure (head, GQA group, MLP channel, whole matrix, block) scores Σ s
// over its weights: I(group) = I(Q heads) + I(K head) + I(V head) + I(O columns),
// I(channel) = I(gate row) + I(up row) + I(down column).
//
// Scoring makes one pass over the weights: the *_line_scores functions reduce
// each matrix to one total per row or per column (the axis that holds the
// structures), and range_scores, mlp_channel_scores, q_head_scores and
// group_scores (with attention_geometry's spans) sum those totals. Inputs are any Eigen dense expressions (Map/Ref with
// strides, either storage order); nothing is copied. Totals accumulate in double.
//
// Targets. Line scores of float weights whose lines are contiguous (inner
// stride 1, all inputs in one storage order) run on explicit AVX-512 or
// AVX2+FMA kernels chosen at run time (detail/score_kernel.hpp); the last
// argument, a simd_target, forces one (tests, benchmarks). Other inputs, double
// weights (rare for LLM weights, and their Eigen loop is already as fast as
// memory allows with two lanes per 16 bytes) and simd_target::portable take the
// Eigen path. Both sum non-negative float scores in groups of at most 256 before
// adding into double, so results agree within a relative 256·2⁻²⁴ ≈ 1.5e-5
// (worst case; ~1e-7 on random data); they differ in summation order only.
//
// Activation statistics come as llama.cpp's imatrix stores them: per input
// column j the sum over tokens of x_j² (in_sum2) and the token count.
// ‖x_j‖₂ = sqrt(in_sum2_j); activation_norms returns the per-token RMS
// sqrt(in_sum2_j / count), the same ranking within a matrix and comparable
// across matrices seen by different numbers of tokens. The activation energy of
// a head is Σ_{j in head} in_sum2_j / count (mean squared output per token).
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "attention_geometry.hpp"
#include "config.hpp"
#include "detail/index_ranges.hpp"
#include "detail/score_kernel.hpp"
#include "detail/simd_dispatch.hpp"
#include "detail/taylor_score_ops.hpp"
#include "detail/validate.hpp"
#include "simd_target.hpp"

NASHPRUNE_BEGIN_NAMESPACE

template <typename Scalar>
using score_vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;

enum class magnitude_norm { l1, l2 };

namespace detail {

template <typename First, typename... Rest>
constexpr void require_same_floating_scalar() {
  using Scalar = typename First::Scalar;
  static_assert(std::is_floating_point_v<Scalar>, "nashprune: scores need a floating-point scalar");
  static_assert((std::is_same_v<Scalar, typename Rest::Scalar> && ...),
                "nashprune: all inputs of one score must share the scalar type");
}

template <typename Derived, typename Reference>
void require_same_shape(std::string_view argument, const Eigen::MatrixBase<Derived>& m,
                        const Eigen::MatrixBase<Reference>& reference) {
  require_size(argument, m.rows(), reference.rows(), "row count");
  require_size(argument, m.cols(), reference.cols(), "column count");
}

[[nodiscard]] inline std::int64_t extent_of(matrix_axis axis, std::int64_t rows, std::int64_t cols) {
  return axis == matrix_axis::rows ? rows : cols;
}

/// The storage lines of a matrix: `outer` lines of `inner` entries, rows when
/// `row_major`; line(o) is an array column expression of the scores of line o.
/// `factors_along` marks scores that multiply each entry by a factor of its
/// position (Wanda with the inputs along the lines): their line totals are
/// taken a pass of lines at a time, which amortises the factor loads.
template <typename LineFn>
struct score_lines_view {
  bool row_major;
  Eigen::Index outer;
  Eigen::Index inner;
  LineFn line;
  bool factors_along = false;
};

/// The storage lines of a lazy array expression over a whole matrix.
template <typename Expr>
[[nodiscard]] auto lines_of_expression(const Expr& scores) {
  auto line = [&scores](Eigen::Index o) {
    if constexpr (Expr::IsRowMajor) {
      return scores.row(o).transpose();
    } else {
      return scores.col(o);
    }
  };
  const bool row_major = Expr::IsRowMajor;
  return score_lines_view<decltype(line)>{row_major, row_major ? scores.rows() : scores.cols(),
                                          row_major ? scores.cols() : scores.rows(), line};
}

/// The totals in the scalar type; calls `on_non_finite(line)` for the first
/// non-finite one (it must throw).
template <typename Scalar, typename OnNonFinite>
[[nodiscard]] score_vector<Scalar> checked_totals(const Eigen::ArrayXd& totals, OnNonFinite&& on_non_finite) {
  score_vector<Scalar> result = totals.cast<Scalar>().matrix();
  if (!result.allFinite()) {
    Eigen::Index line = 0;
    while (std::isfinite(result[line])) ++line;
    on_non_finite(line);
  }
  return result;
}

/// The sum of the `Count` lines first, first + stride, ..., as one lazy
/// expression (a pairwise tree, so a single loop reads all of them concurrently).
template <Eigen::Index Count, typename LineFn>
[[nodiscard]] auto sum_of_lines(const LineFn& line, Eigen::Index first, Eigen::Index stride) {
  if constexpr (Count == 1) {
    return line(first);
  } else {
    return sum_of_lines<Count / 2>(line, first, stride) +
           sum_of_lines<Count - Count / 2>(line, first + Count / 2 * stride, stride);
  }
}

/// One pass over the scores of `Inputs` input matrices: the sum of each row
/// (lines == rows) or of each column (lines == cols), the chunks of lines
/// across the storage order summed in the scalar type (accumulation_chunk,
/// detail/score_kernel.hpp). Calls `on_non_finite(line)` for the first
/// non-finite total; it must throw.
template <int Inputs, typename LineFn, typename OnNonFinite>
[[nodiscard]] auto line_totals(const score_lines_view<LineFn>& view, matrix_axis lines, OnNonFinite&& on_non_finite) {
  using Scalar = typename std::decay_t<decltype(view.line(0))>::Scalar;
  Eigen::ArrayXd totals;
  if ((lines == matrix_axis::rows) == view.row_major && !view.factors_along) {
    // One total per storage line: a vectorised reduction each.
    totals.resize(view.outer);
    for (Eigen::Index o = 0; o < view.outer; ++o) totals[o] = static_cast<double>(view.line(o).sum());
  } else if ((lines == matrix_axis::rows) == view.row_major) {
    // One total per storage line, a pass of lines at a time: per line a
    // fixed-size accumulator (vectorised by Eigen) takes `block` entries per
    // step and is added into double every score_steps_per_flush steps; each
    // factor is loaded once per pass and the lines stream concurrently (~0.65
    // of the read bandwidth one line at a time, ~0.87 in passes; scores without
    // factors lost ~0.1 in passes, so they keep the simple reduction). Passes
    // of factor_lines_per_pass in interleaved_passes order: Wanda row totals at
    // Llama-3-8B shapes (SSE2 build, idle test machine) 0.71-0.85, eight lines 0.71-0.77.
    constexpr Eigen::Index pass = factor_lines_per_pass;
    constexpr Eigen::Index block = 16;
    totals.resize(view.outer);
    const Eigen::Index body = view.inner - view.inner % block;
    const interleaved_passes order(view.outer, pass);
    const auto add_lines = [&](Eigen::Index first, Eigen::Index stride, auto count) {
      constexpr Eigen::Index n = decltype(count)::value;
      Eigen::Array<Scalar, block, 1> acc[n];
      for (Eigen::Index i = 0; i < n; ++i) totals[first + i * stride] = 0;
      for (Eigen::Index k = 0; k < body;) {
        for (auto& a : acc) a.setZero();
        const Eigen::Index stop = std::min(body, k + score_steps_per_flush * block);
        for (; k < stop; k += block) {
          for (Eigen::Index i = 0; i < n; ++i) acc[i] += view.line(first + i * stride).template segment<block>(k);
        }
        for (Eigen::Index i = 0; i < n; ++i) totals[first + i * stride] += static_cast<double>(acc[i].sum());
      }
      if (body < view.inner) {
        for (Eigen::Index i = 0; i < n; ++i) {
          totals[first + i * stride] += static_cast<double>(view.line(first + i * stride).tail(view.inner - body).sum());
        }
      }
    };
    for (Eigen::Index step = 0; step < order.steps; ++step) {
      add_lines(order.line(step, 0), order.steps, std::integral_constant<Eigen::Index, pass>{});
    }
    for (Eigen::Index o = order.rest(); o < view.outer; ++o) add_lines(o, 0, std::integral_constant<Eigen::Index, 1>{});
  } else {
    // A total per position across the lines: add a pass of lines at a time into
    // a cache-resident chunk (fewer loads and stores of the chunk per weight,
    // and the lines stream from memory concurrently). About eight input streams
    // at once suit this path: with three inputs (Taylor 2nd, h given) two lines
    // a pass ran at 0.66-0.71 of the read bandwidth, four at 0.60-0.66 (loaded
    // test machine; with two inputs four lines beat two, 0.74-0.79 vs 0.65).
    constexpr Eigen::Index pass = Inputs >= 3 ? 2 : lines_per_pass(Inputs);
    totals = Eigen::ArrayXd::Zero(view.inner);
    Eigen::Array<Scalar, Eigen::Dynamic, 1> chunk(view.inner);
    const interleaved_passes order(view.outer, pass);
    constexpr Eigen::Index steps_per_chunk = accumulation_chunk / pass;
    for (Eigen::Index first = 0; first < order.steps; first += steps_per_chunk) {
      chunk.setZero();
      const Eigen::Index last = std::min(order.steps, first + steps_per_chunk);
      for (Eigen::Index step = first; step < last; ++step) chunk += sum_of_lines<pass>(view.line, step, order.steps);
      totals += chunk.template cast<double>();
    }
    if (order.rest() < view.outer) {
      chunk.setZero();
      for (Eigen::Index o = order.rest(); o < view.outer; ++o) chunk += view.line(o);
      totals += chunk.template cast<double>();
    }
  }
  return checked_totals<Scalar>(totals, on_non_finite);
}

/// Evaluates per-weight `scores` into `out` (same shape), then checks them.
template <typename Expr, typename DerivedOut, typename OnNonFinite>
void assign_scores(const Expr& scores, const Eigen::MatrixBase<DerivedOut>& out, OnNonFinite&& on_non_finite) {
  auto& target = const_cast<Eigen::MatrixBase<DerivedOut>&>(out);
  target.array() = scores;
  if (!target.allFinite()) on_non_finite(0);
}

/// The error path of a score that came out non-finite: names the first NaN/Inf
/// input entry, or else reports that finite inputs overflowed the scalar type.
template <typename... Named>
[[noreturn]] void explain_non_finite_score(const Named&... inputs) {
  (require_finite(inputs.first, inputs.second), ...);
  fail_domain("weights", "finite inputs give a score that overflows the scalar type; use double");
}

/// line_totals of a scores view, explaining a non-finite total by the named inputs.
template <typename LineFn, typename... Named>
[[nodiscard]] auto score_lines(const score_lines_view<LineFn>& view, matrix_axis lines, const Named&... inputs) {
  return line_totals<static_cast<int>(sizeof...(Named))>(view, lines,
                                                        [&](Eigen::Index) { explain_non_finite_score(inputs...); });
}

/// line_totals of a lazy score expression over the whole matrix.
template <typename Expr, typename... Named>
[[nodiscard]] auto score_lines(const Eigen::ArrayBase<Expr>& scores, matrix_axis lines, const Named&... inputs) {
  return score_lines(lines_of_expression(scores.derived()), lines, inputs...);
}

/// assign_scores of `scores` into `out`, explaining a non-finite score by the named inputs.
template <typename Expr, typename DerivedOut, typename... Named>
void score_weights(const Expr& scores, const Eigen::MatrixBase<DerivedOut>& out, const Named&... inputs) {
  assign_scores(scores, out, [&](Eigen::Index) { explain_non_finite_score(inputs...); });
}

template <typename Derived>
inline constexpr bool has_direct_access = (static_cast<unsigned>(Derived::Flags) & Eigen::DirectAccessBit) != 0;

/// The inputs as float planes for the SIMD kernels (with their storage order),
/// or nothing unless all are float, in one storage order, with contiguous lines.
template <typename First, typename... Rest>
[[nodiscard]] std::optional<std::pair<score_planes, bool>> float_planes(const Eigen::MatrixBase<First>& first,
                                                                        const Eigen::MatrixBase<Rest>&... rest) {
  constexpr bool row_major = First::IsRowMajor;
  if constexpr (std::is_same_v<typename First::Scalar, float> && has_direct_access<First> &&
                ((has_direct_access<Rest> && static_cast<bool>(Rest::IsRowMajor) == row_major) && ...)) {
    score_planes x;
    x.outer = first.outerSize();
    x.inner = first.innerSize();
    int i = 0;
    bool contiguous = true;
    const auto add = [&](const auto& m) {
      contiguous = contiguous && m.innerStride() == 1;
      x.data[i] = m.derived().data();
      x.outer_stride[i] = m.outerStride();
      ++i;
    };
    add(first);
    (add(rest), ...);
    if (!contiguous) return std::nullopt;
    return std::pair{x, row_major};
  } else {
    return std::nullopt;
  }
}

/// Factors of every score by its row (axis == rows) or column index, or none.
struct axis_factors {
  const float* factors = nullptr;
  matrix_axis axis = matrix_axis::rows;
};

/// Line totals on an explicit SIMD target: nothing when `requested` resolves to
/// the portable target or `planes` is empty (the caller takes the Eigen path);
/// a non-finite total is explained by the named inputs.
template <typename Scalar, typename... Named>
[[nodiscard]] std::optional<score_vector<Scalar>> simd_score_lines(
    simd_target requested, score_kind kind, matrix_axis lines,
    const std::optional<std::pair<score_planes, bool>>& planes, axis_factors factors, const Named&... inputs) {
  const simd_target target = resolve_simd_target<Scalar>(requested);
  if (!planes || target == simd_target::portable) return std::nullopt;
  const auto& [x, row_major] = *planes;
  score_scaling scaling;
  if (factors.factors != nullptr) {
    ((factors.axis == matrix_axis::rows) == row_major ? scaling.per_line : scaling.per_position) = factors.factors;
  }
  const bool along = (lines == matrix_axis::rows) == row_major;
  Eigen::ArrayXd totals(along ? x.outer : x.inner);
  if (!simd_score_totals(target, kind, x, scaling, along, totals.data())) return std::nullopt;
  return checked_totals<Scalar>(totals, [&](Eigen::Index) { explain_non_finite_score(inputs...); });
}

template <typename Derived>
[[nodiscard]] auto named(std::string_view name, const Eigen::MatrixBase<Derived>& m) {
  return std::pair<std::string_view, const Derived&>(name, m.derived());
}

/// Line totals of a per-weight score of same-shape operands: the SIMD kernel for
/// `kind` when it runs for them (simd_score_lines), else the portable Eigen
/// expression `portable()` summed per line. Both explain a non-finite total by
/// the named inputs.
template <typename Scalar, typename Portable, typename... Named>
[[nodiscard]] score_vector<Scalar> simd_or_portable_line_scores(simd_target target, score_kind kind, matrix_axis lines,
                                                                const std::optional<std::pair<score_planes, bool>>& planes,
                                                                const Portable& portable, const Named&... inputs) {
  if (auto totals = simd_score_lines<Scalar>(target, kind, lines, planes, {}, inputs...)) return *totals;
  return score_lines(portable(), lines, inputs...);
}

template <typename DerivedWeights, typename DerivedOut>
void require_output_shape(const Eigen::MatrixBase<DerivedOut>& out, const Eigen::MatrixBase<DerivedWeights>& w) {
  require_same_shape("out", out, w);
}

template <typename DerivedNorms>
void validate_input_norms(const Eigen::MatrixBase<DerivedNorms>& norms, std::int64_t expected) {
  require(norms.cols() == 1 || norms.rows() == 1, "input_norms", "must be a vector");
  require_size("input_norms", norms.size(), expected, "size (one norm per input unit)");
  require_finite_nonnegative("input_norms", norms);
}

inline void validate_token_count(double token_count) {
  if (!std::isfinite(token_count) || token_count <= 0) {
    fail_domain("token_count", "must be a positive finite number of tokens, got " + describe_value(token_count));
  }
}

// The per-weight score expressions, shared by the line and per-weight entry
// points. Those whose type depends on a run-time choice are handed to `use`.
template <typename DW, typename Use>
decltype(auto) with_magnitude_expression(const Eigen::MatrixBase<DW>& w, magnitude_norm norm, Use&& use) {
  if (norm == magnitude_norm::l2) return use(w.array().abs2());
  return use(w.array().abs());
}

template <typename DW, typename DG>
auto taylor_first_expression(const Eigen::MatrixBase<DW>& w, const Eigen::MatrixBase<DG>& g) {
  return (w.array() * g.array()).abs();
}

// The norms are one value per input unit: evaluating them once is cheap and
// lets any vector expression (e.g. sqrt of an imatrix row) be passed in.
template <typename DA>
[[nodiscard]] Eigen::Array<typename DA::Scalar, Eigen::Dynamic, 1> norms_array(const Eigen::MatrixBase<DA>& norms) {
  return norms.derived().reshaped();
}

template <typename DW, typename DA, typename Use>
decltype(auto) with_wanda_expression(const Eigen::MatrixBase<DW>& w, const Eigen::MatrixBase<DA>& norms,
                                     matrix_axis input_axis, Use&& use) {
  const auto column = norms_array(norms);
  if (input_axis == matrix_axis::cols) return use(w.array().abs().rowwise() * column.transpose());
  return use(w.array().abs().colwise() * column);
}

/// Wanda scores line by line: a broadcast expression evaluates poorly inside a
/// line reduction, so each storage line of |W| is scaled by the norms (inputs
/// along the line) or by its line's norm (inputs across the lines).
template <typename DW, typename DA, typename Use>
decltype(auto) with_wanda_lines(const Eigen::MatrixBase<DW>& w, const Eigen::MatrixBase<DA>& norms,
                                matrix_axis input_axis, Use&& use) {
  const auto column = norms_array(norms);
  constexpr bool row_major = DW::IsRowMajor;
  const Eigen::Index outer = row_major ? w.rows() : w.cols();
  const Eigen::Index inner = row_major ? w.cols() : w.rows();
  const auto weight_line = [&w](Eigen::Index o) {
    if constexpr (row_major) {
      return w.row(o).transpose().array().abs();
    } else {
      return w.col(o).array().abs();
    }
  };
  if ((input_axis == matrix_axis::cols) == row_major) {
    auto line = [&](Eigen::Index o) { return weight_line(o) * column; };
    return use(score_lines_view<decltype(line)>{row_major, outer, inner, line, true});
  }
  auto line = [&](Eigen::Index o) { return weight_line(o) * column[o]; };
  return use(score_lines_view<decltype(line)>{row_major, outer, inner, line});
}

// The two scores of the weights and their gradients alone, Σ|w·g| (taylor_first)
// and Σ(|w·g| + ½(w·g)²) (taylor_fisher): each entry point checks the inputs the
// same way and differs only in the score.
template <score_kind Kind, typename DW, typename DG>
auto gradient_expression(const Eigen::MatrixBase<DW>& w, const Eigen::MatrixBase<DG>& g) {
  static_assert(Kind == score_kind::taylor_first || Kind == score_kind::taylor_fisher);
  if constexpr (Kind == score_kind::taylor_first) {
    return taylor_first_expression(w, g);
  } else {
    return taylor_fisher_scores(w, g);
  }
}

template <score_kind Kind, typename DW, typename DG>
[[nodiscard]] score_vector<typename DW::Scalar> gradient_line_scores(const Eigen::MatrixBase<DW>& weights, const Eigen::MatrixBase<DG>& gradients,
                                                                     matrix_axis lines, simd_target target) {
  require_same_floating_scalar<DW, DG>();
  require_same_shape("gradients", gradients, weights);
  return simd_or_portable_line_scores<typename DW::Scalar>(target, Kind, lines, float_planes(weights, gradients),
                                                           [&] { return gradient_expression<Kind>(weights, gradients); },
                                                           named("weights", weights), named("gradients", gradients));
}

template <score_kind Kind, typename DW, typename DG, typename DO>
void gradient_weight_scores(const Eigen::MatrixBase<DW>& weights, const Eigen::MatrixBase<DG>& gradients, const Eigen::MatrixBase<DO>& out) {
  require_same_floating_scalar<DW, DG, DO>();
  require_same_shape("gradients", gradients, weights);
  require_output_shape(out, weights);
  score_weights(gradient_expression<Kind>(weights, gradients), out, named("weights", weights), named("gradients", gradients));
}

}  // namespace detail

// ---------------------------------------------------------------------------
// Line scores: one total per row (lines == rows) or per column (lines == cols).
// Choose the axis that holds the structures (structure_axis(role, orientation) in attention_geometry.hpp).

/// Σ|w| (L1) or Σw² (L2) of every row or column of `weights`.
template <typename DW>
[[nodiscard]] score_vector<typename DW::Scalar> magnitude_line_scores(const Eigen::MatrixBase<DW>& weights,
                                                                      matrix_axis lines,
                                                                      magnitude_norm norm = magnitude_norm::l1,
                                                                      simd_target target = simd_target::automatic) {
  detail::require_same_floating_scalar<DW>();
  const auto kind = norm == magnitude_norm::l1 ? detail::score_kind::abs : detail::score_kind::square;
  if (auto totals = detail::simd_score_lines<typename DW::Scalar>(target, kind, lines, detail::float_planes(weights), {},
                                                                  detail::named("weights", weights))) {
    return *totals;
  }
  return detail::with_magnitude_expression(weights, norm, [&](const auto& scores) {
    return detail::score_lines(scores, lines, detail::named("weights", weights));
  });
}

/// Σ|w·g| of every row or column.
template <typename DW, typename DG>
[[nodiscard]] score_vector<typename DW::Scalar> taylor_first_line_scores(const Eigen::MatrixBase<DW>& weights, const Eigen::MatrixBase<DG>& gradients,
                                                                         matrix_axis lines, simd_target target = simd_target::automatic) {
  return detail::gradient_line_scores<detail::score_kind::taylor_first>(weights, gradients, lines, target);
}

/// Σ(|w·g| + ½(w·g)²) of every row or column: second order with the Fisher
/// approximation h = g² of the Hessian diagonal.
template <typename DW, typename DG>
[[nodiscard]] score_vector<typename DW::Scalar> taylor_second_line_scores(const Eigen::MatrixBase<DW>& weights, const Eigen::MatrixBase<DG>& gradients,
                                                                          matrix_axis lines, simd_target target = simd_target::automatic) {
  return detail::gradient_line_scores<detail::score_kind::taylor_fisher>(weights, gradients, lines, target);
}

/// Σ(|w·g| + ½|w²·h|) of every row or column, h the given Hessian diagonal.
template <typename DW, typename DG, typename DH>
[[nodiscard]] score_vector<typename DW::Scalar> taylor_second_line_scores(const Eigen::MatrixBase<DW>& weights,
                                                                          const Eigen::MatrixBase<DG>& gradients,
                                                                          const Eigen::MatrixBase<DH>& hessian_diagonal,
                                                                          matrix_axis lines,
                                                                          simd_target target = simd_target::automatic) {
  detail::require_same_floating_scalar<DW, DG, DH>();
  detail::require_same_shape("gradients", gradients, weights);
  detail::require_same_shape("hessian_diagonal", hessian_diagonal, weights);
  return detail::simd_or_portable_line_scores<typename DW::Scalar>(
      target, detail::score_kind::taylor_hessian, lines, detail::float_planes(weights, gradients, hessian_diagonal),
      [&] { return detail::taylor_hessian_scores(weights, gradients, hessian_diagonal); }, detail::named("weights", weights),
      detail::named("gradients", gradients), detail::named("hessian_diagonal", hessian_diagonal));
}

/// Σ|w_ij|·‖x_j‖₂ of every row or column. `input_norms` holds one activation norm
/// per input unit, which lie along `input_axis` (cols for the out × in
/// orientation of ggml and Hugging Face, rows for in × out).
template <typename DW, typename DA>
[[nodiscard]] score_vector<typename DW::Scalar> wanda_line_scores(const Eigen::MatrixBase<DW>& weights,
                                                                  const Eigen::MatrixBase<DA>& input_norms,
                                                                  matrix_axis input_axis, matrix_axis lines,
                                                                  simd_target target = simd_target::automatic) {
  detail::require_same_floating_scalar<DW, DA>();
  detail::validate_input_norms(input_norms, detail::extent_of(input_axis, weights.rows(), weights.cols()));
  if constexpr (std::is_same_v<typename DW::Scalar, float>) {
    const auto norms = detail::norms_array(input_norms);
    if (auto totals = detail::simd_score_lines<float>(target, detail::score_kind::abs, lines,
                                                      detail::float_planes(weights), {norms.data(), input_axis},
                                                      detail::named("weights", weights))) {
      return *totals;
    }
  }
  if (lines == input_axis) {
    // Every score of a line carries the line's own input norm: Σ_k |w|·n = n·Σ_k |w|.
    const Eigen::ArrayXd totals =
        magnitude_line_scores(weights, lines, magnitude_norm::l1, target).template cast<double>().array() *
        detail::norms_array(input_norms).template cast<double>();
    return detail::checked_totals<typename DW::Scalar>(
        totals, [&](Eigen::Index) { detail::explain_non_finite_score(detail::named("weights", weights)); });
  }
  return detail::with_wanda_lines(weights, input_norms, input_axis, [&](const auto& view) {
    return detail::score_lines(view, lines, detail::named("weights", weights));
  });
}

// ---------------------------------------------------------------------------
// Per-weight scores, written into a caller-provided matrix of the weights' shape.

template <typename DW, typename DO>
void magnitude_weight_scores(const Eigen::MatrixBase<DW>& weights, magnitude_norm norm,
                             const Eigen::MatrixBase<DO>& out) {
  detail::require_same_floating_scalar<DW, DO>();
  detail::require_output_shape(out, weights);
  detail::with_magnitude_expression(weights, norm, [&](const auto& scores) {
    detail::score_weights(scores, out, detail::named("weights", weights));
  });
}

template <typename DW, typename DG, typename DO>
void taylor_first_weight_scores(const Eigen::MatrixBase<DW>& weights, const Eigen::MatrixBase<DG>& gradients, const Eigen::MatrixBase<DO>& out) {
  detail::gradient_weight_scores<detail::score_kind::taylor_first>(weights, gradients, out);
}

/// Fisher form: h = g².
template <typename DW, typename DG, typename DO>
void taylor_second_weight_scores(const Eigen::MatrixBase<DW>& weights, const Eigen::MatrixBase<DG>& gradients, const Eigen::MatrixBase<DO>& out) {
  detail::gradient_weight_scores<detail::score_kind::taylor_fisher>(weights, gradients, out);
}

template <typename DW, typename DG, typename DH, typename DO>
void taylor_second_weight_scores(const Eigen::MatrixBase<DW>& weights, const Eigen::MatrixBase<DG>& gradients,
                                 const Eigen::MatrixBase<DH>& hessian_diagonal, const Eigen::MatrixBase<DO>& out) {
  detail::require_same_floating_scalar<DW, DG, DH, DO>();
  detail::require_same_shape("gradients", gradients, weights);
  detail::require_same_shape("hessian_diagonal", hessian_diagonal, weights);
  detail::require_output_shape(out, weights);
  detail::score_weights(detail::taylor_hessian_scores(weights, gradients, hessian_diagonal), out,
                        detail::named("weights", weights), detail::named("gradients", gradients),
                        detail::named("hessian_diagonal", hessian_diagonal));
}

template <typename DW, typename DA, typename DO>
void wanda_weight_scores(const Eigen::MatrixBase<DW>& weights, const Eigen::MatrixBase<DA>& input_norms,
                         matrix_axis input_axis, const Eigen::MatrixBase<DO>& out) {
  detail::require_same_floating_scalar<DW, DA, DO>();
  detail::validate_input_norms(input_norms, detail::extent_of(input_axis, weights.rows(), weights.cols()));
  detail::require_output_shape(out, weights);
  detail::with_wanda_expression(weights, input_norms, input_axis, [&](const auto& scores) {
    detail::score_weights(scores, out, detail::named("weights", weights));
  });
}

// ---------------------------------------------------------------------------
// Activation statistics (llama.cpp imatrix form).

/// Per-token RMS activation of each input unit, sqrt(sum_squares_j / token_count),
/// for wanda_*_scores. Throws std::domain_error for a negative or non-finite sum
/// (naming its index) or a token count that is not positive.
template <typename DS>
[[nodiscard]] score_vector<typename DS::Scalar> activation_norms(const Eigen::MatrixBase<DS>& sum_squares,
                                                                 double token_count) {
  detail::require_same_floating_scalar<DS>();
  detail::require(sum_squares.cols() == 1 || sum_squares.rows() == 1, "sum_squares", "must be a vector");
  detail::require_finite_nonnegative("sum_squares", sum_squares);
  detail::validate_token_count(token_count);
  using Scalar = typename DS::Scalar;
  score_vector<Scalar> norms(sum_squares.size());
  for (Eigen::Index j = 0; j < sum_squares.size(); ++j) {
    norms[j] = static_cast<Scalar>(std::sqrt(static_cast<double>(sum_squares.derived().coeff(j)) / token_count));
  }
  return norms;
}

/// Σ over each range of `line_scores` (one score per structure). Throws
/// std::invalid_argument for an empty list or a range that is empty or out of
/// bounds, std::domain_error for a non-finite line score (naming the index).
template <typename DL>
[[nodiscard]] score_vector<typename DL::Scalar> range_scores(const Eigen::MatrixBase<DL>& line_scores,
                                                             std::span<const index_range> ranges) {
  detail::require_same_floating_scalar<DL>();
  detail::require(line_scores.cols() == 1 || line_scores.rows() == 1, "line_scores", "must be a vector");
  detail::require_finite("line_scores", line_scores);
  detail::validate_ranges("ranges", ranges, line_scores.size(), false);
  using Scalar = typename DL::Scalar;
  score_vector<Scalar> scores(static_cast<Eigen::Index>(ranges.size()));
  for (std::size_t i = 0; i < ranges.size(); ++i) {
    double total = 0;
    for (std::int64_t j = ranges[i].begin; j < ranges[i].begin + ranges[i].size; ++j) {
      total += static_cast<double>(line_scores.derived().coeff(j));
    }
    scores[static_cast<Eigen::Index>(i)] = static_cast<Scalar>(total);
  }
  return scores;
}

/// Mean squared activation per token of each structure: Σ_{j in range}
/// sum_squares_j / token_count (for attn_output's imatrix, a range is a head's
/// columns and this is the head's output energy).
template <typename DS>
[[nodiscard]] score_vector<typename DS::Scalar> activation_energy(const Eigen::MatrixBase<DS>& sum_squares,
                                                                  double token_count,
                                                                  std::span<const index_range> ranges) {
  detail::require_same_floating_scalar<DS>();
  detail::require(sum_squares.cols() == 1 || sum_squares.rows() == 1, "sum_squares", "must be a vector");
  detail::require_finite_nonnegative("sum_squares", sum_squares);
  detail::validate_token_count(token_count);
  using Scalar = typename DS::Scalar;
  score_vector<Scalar> energy = range_scores(sum_squares, ranges);
  return (energy.template cast<double>() / token_count).template cast<Scalar>();
}

/// I(channel i) = I(gate row i) + I(up row i) + I(down column i) of a SwiGLU MLP,
/// from the three matrices' line scores along their channel axis.
template <typename DG, typename DU, typename DD>
[[nodiscard]] score_vector<typename DG::Scalar> mlp_channel_scores(const Eigen::MatrixBase<DG>& gate_lines,
                                                                   const Eigen::MatrixBase<DU>& up_lines,
                                                                   const Eigen::MatrixBase<DD>& down_lines) {
  detail::require_same_floating_scalar<DG, DU, DD>();
  detail::require(gate_lines.cols() == 1 || gate_lines.rows() == 1, "gate_lines", "must be a vector");
  detail::require_size("up_lines", up_lines.size(), gate_lines.size());
  detail::require_size("down_lines", down_lines.size(), gate_lines.size());
  detail::require_finite("gate_lines", gate_lines);
  detail::require_finite("up_lines", up_lines);
  detail::require_finite("down_lines", down_lines);
  using Scalar = typename DG::Scalar;
  score_vector<Scalar> scores(gate_lines.size());
  for (Eigen::Index i = 0; i < scores.size(); ++i) {
    scores[i] = static_cast<Scalar>(static_cast<double>(gate_lines.derived().coeff(i)) +
                                    static_cast<double>(up_lines.derived().coeff(i)) +
                                    static_cast<double>(down_lines.derived().coeff(i)));
  }
  return scores;
}

/// Line scores of a layer's attention projections, each along its head axis
/// (structure_axis(role, orientation)). An empty vector leaves that projection
/// out of the sums; a non-empty one must have geometry.extent(role) entries.
template <typename Scalar>
struct attention_line_scores {
  score_vector<Scalar> q, k, v, o;
};

namespace detail {

template <typename Scalar>
void validate_attention_lines(const attention_geometry& geometry, const attention_line_scores<Scalar>& lines) {
  const auto check = [&](const char* name, const score_vector<Scalar>& role_lines, tensor_role role) {
    if (role_lines.size() == 0) return;
    require_size(name, role_lines.size(), geometry.extent(role), "size (the projection's head axis)");
    require_finite(name, role_lines);
  };
  check("lines.q", lines.q, tensor_role::q);
  check("lines.k", lines.k, tensor_role::k);
  check("lines.v", lines.v, tensor_role::v);
  check("lines.o", lines.o, tensor_role::o);
}

/// Σ of `role_lines` over `span`, or 0 when the projection is left out.
template <typename Scalar>
[[nodiscard]] double span_sum(const score_vector<Scalar>& role_lines, const index_range& span) {
  if (role_lines.size() == 0) return 0;
  return role_lines.segment(span.begin, span.size).template cast<double>().sum();
}

}  // namespace detail

/// Score of every query head: its rows/columns of q and o (k and v are shared by
/// the group, so they enter group_scores, not head scores).
template <typename Scalar>
[[nodiscard]] score_vector<Scalar> q_head_scores(const attention_geometry& geometry,
                                                 const attention_line_scores<Scalar>& lines) {
  detail::validate_attention_lines(geometry, lines);
  score_vector<Scalar> scores(geometry.n_head());
  for (std::int64_t h = 0; h < geometry.n_head(); ++h) {
    scores[h] = static_cast<Scalar>(detail::span_sum(lines.q, geometry.head_span(tensor_role::q, h)) +
                                    detail::span_sum(lines.o, geometry.head_span(tensor_role::o, h)));
  }
  return scores;
}

/// Score of every GQA group (kv head j with its query heads):
/// I(Q heads) + I(K head) + I(V head) + I(O columns). With multi-head attention
/// a group is one head, so these are the scores of single heads with their k and v.
template <typename Scalar>
[[nodiscard]] score_vector<Scalar> group_scores(const attention_geometry& geometry,
                                                const attention_line_scores<Scalar>& lines) {
  detail::validate_attention_lines(geometry, lines);
  score_vector<Scalar> scores(geometry.n_head_kv());
  for (std::int64_t g = 0; g < geometry.n_head_kv(); ++g) {
    double total = 0;
    for (const auto& [role_lines, role] : {std::pair{&lines.q, tensor_role::q}, std::pair{&lines.k, tensor_role::k},
                                           std::pair{&lines.v, tensor_role::v}, std::pair{&lines.o, tensor_role::o}}) {
      total += detail::span_sum(*role_lines, geometry.group_span(role, g));
    }
    scores[g] = static_cast<Scalar>(total);
  }
  return scores;
}

NASHPRUNE_END_NAMESPACE
