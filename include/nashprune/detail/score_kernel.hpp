// nashprune/detail/score_kernel.hpp — the explicit-SIMD line totals behind
// importance.hpp's *_line_scores for float weights.
//
// Not part of the public API. Scoring is one pass over the weights; with the
// default (SSE2) build the per-weight arithmetic of column totals and Wanda is
// slower than memory, so float planes get AVX2+FMA and AVX-512 kernels chosen at
// run time (detail/simd_dispatch.hpp; same scheme and vector interface as
// detail/gram_kernel.hpp, whose simd_ops this file extends rather than repeats).
//
// Input: up to three float planes (w, g, h) of one shape and storage order whose
// storage lines are contiguous (inner stride 1). A weight at storage line o,
// position k scores s = f(w, g, h) · per_line[o] · per_position[k] (each factor
// optional; Wanda passes its norms as one of them), f one of score_kind.
// Output: in double, either the total of every storage line (`along`) or the
// total at every position across all lines.
//
// Numerics. Along a line, float vector accumulators take at most
// score_steps_per_flush steps before they are added into a double total. Across
// lines, a float accumulator row sums at most accumulation_chunk lines before it
// is added into double totals. Each total therefore carries the rounding of float
// sums of at most 256 non-negative terms, relative error ≤ 256·2⁻²⁴ ≈ 1.5e-5
// (random data: ~1e-7), whatever the matrix size; the portable Eigen path has the
// same bound, but sums in another order, so results differ within it.
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "../config.hpp"
#include "gram_kernel.hpp"
#include "simd_dispatch.hpp"

NASHPRUNE_BEGIN_NAMESPACE
namespace detail {

/// The per-weight score f of a kernel pass.
enum class score_kind {
  abs,             // |w|
  square,          // w²
  taylor_first,    // |w·g|
  taylor_fisher,   // |w·g| + ½(w·g)²
  taylor_hessian,  // |w·g| + ½w²·|h|
};

[[nodiscard]] constexpr int inputs_of(score_kind kind) {
  return kind == score_kind::abs || kind == score_kind::square ? 1 : kind == score_kind::taylor_hessian ? 3 : 2;
}

/// Float planes of one shape: `outer` storage lines of `inner` contiguous
/// entries, line o of input i at data[i] + o·outer_stride[i].
struct score_planes {
  const float* data[3] = {nullptr, nullptr, nullptr};
  Eigen::Index outer_stride[3] = {0, 0, 0};
  Eigen::Index outer = 0;
  Eigen::Index inner = 0;
};

/// Optional factors of every score: by storage line and by position in the line.
struct score_scaling {
  const float* per_line = nullptr;
  const float* per_position = nullptr;
};

/// Lines summed in float before their sum is added into double totals (across
/// lines); the portable path uses the same chunk.
inline constexpr Eigen::Index accumulation_chunk = 256;

/// Storage lines one pass reads together across lines when a score reads
/// `inputs` planes: about eight concurrent streams kept the memory bus busiest
/// on the test machine (eight lines of one plane ~1.0 of the read bandwidth,
/// four ~0.87; eight lines of two planes fell back to ~0.75). A divisor of
/// accumulation_chunk.
[[nodiscard]] constexpr Eigen::Index lines_per_pass(int inputs) { return inputs == 1 ? 8 : 4; }
static_assert(accumulation_chunk % lines_per_pass(1) == 0 && accumulation_chunk % lines_per_pass(2) == 0);

/// Storage lines one pass reads together along lines with factors by position
/// (Wanda row totals), portable and SIMD: the factors are a fifth stream. At
/// Llama-3-8B shapes on the idle test machine (paired runs, medians of 3) four
/// lines ran at 0.81-0.84 of the read bandwidth on AVX2 and 0.89-0.97 on
/// AVX-512, eight 0.76-0.82 and 0.78-0.85, two 0.71-0.74 and 0.76-0.79.
inline constexpr Eigen::Index factor_lines_per_pass = 4;

/// Float vector steps an accumulator takes along a line before it is added into double.
inline constexpr Eigen::Index score_steps_per_flush = 64;

/// The order in which passes of `pass` storage lines visit `outer` lines: step j
/// reads lines j, j + steps, ..., j + (pass − 1)·steps (steps = outer / pass),
/// then the last outer % pass lines follow one at a time. Each of a pass's
/// concurrent streams thus walks its own contiguous share of the matrix (when
/// lines are stored back to back) from start to end, and the hardware
/// prefetchers keep every stream; with a pass of neighbouring lines each stream
/// jumps ahead by the pass at every line's end. Column totals of Taylor 2nd
/// (Fisher) at Llama-3-8B shapes, AVX-512, idle test machine: 0.80-0.82 of the
/// read bandwidth with neighbouring lines, 0.92-0.93 interleaved.
struct interleaved_passes {
  Eigen::Index pass;
  Eigen::Index steps;

  interleaved_passes(Eigen::Index outer, Eigen::Index lines_per_pass) : pass(lines_per_pass), steps(outer / lines_per_pass) {}

  /// Line i of step j.
  [[nodiscard]] Eigen::Index line(Eigen::Index step, Eigen::Index i) const { return step + i * steps; }

  /// The first line read one at a time after the passes.
  [[nodiscard]] Eigen::Index rest() const { return pass * steps; }
};

}  // namespace detail
NASHPRUNE_END_NAMESPACE

#if defined(NASHPRUNE_SIMD_X86)

NASHPRUNE_TARGET_REGION_BEGIN("avx2,fma")
NASHPRUNE_BEGIN_NAMESPACE
namespace detail::score_avx2 {
struct simd_ops : gram_avx2::simd_ops {
  static __m256i first_mask(Eigen::Index count) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(count)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static vec abs(vec v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }
  static vec mul(vec a, vec b) { return _mm256_mul_ps(a, b); }
  static vec broadcast(float x) { return _mm256_set1_ps(x); }
  static void store(float* p, vec v) { _mm256_storeu_ps(p, v); }
  static void store_first(float* p, Eigen::Index count, vec v) { _mm256_maskstore_ps(p, first_mask(count), v); }
};
#include "score_kernel_simd.inl"
}  // namespace detail::score_avx2
NASHPRUNE_END_NAMESPACE
NASHPRUNE_TARGET_REGION_END

NASHPRUNE_TARGET_REGION_BEGIN("avx512f,avx2,fma")
NASHPRUNE_BEGIN_NAMESPACE
namespace detail::score_avx512 {
struct simd_ops : gram_avx512::simd_ops {
  static vec abs(vec v) { return _mm512_abs_ps(v); }
  static vec mul(vec a, vec b) { return _mm512_mul_ps(a, b); }
  static vec broadcast(float x) { return _mm512_set1_ps(x); }
  static void store(float* p, vec v) { _mm512_storeu_ps(p, v); }
  static void store_first(float* p, Eigen::Index count, vec v) {
    _mm512_mask_storeu_ps(p, static_cast<__mmask16>((1u << count) - 1u), v);
  }
};
#include "score_kernel_simd.inl"
}  // namespace detail::score_avx512
NASHPRUNE_END_NAMESPACE
NASHPRUNE_TARGET_REGION_END

#endif  // NASHPRUNE_SIMD_X86

NASHPRUNE_BEGIN_NAMESPACE
namespace detail {

/// Fills `totals` (outer entries when `along`, else inner) on `target`, an
/// already resolved SIMD target; false (nothing done) when no kernel exists for
/// it (portable, or a build without target regions).
[[nodiscard]] inline bool simd_score_totals(simd_target target, score_kind kind, const score_planes& x,
                                            const score_scaling& scaling, bool along, double* totals) {
#if defined(NASHPRUNE_SIMD_X86)
  // Inputs the kind does not read point at the first plane: no null line pointers.
  score_planes planes = x;
  for (int i = inputs_of(kind); i < 3; ++i) {
    planes.data[i] = x.data[0];
    planes.outer_stride[i] = x.outer_stride[0];
  }
  if (target == simd_target::avx512) {
    score_avx512::score_totals(kind, planes, scaling, along, totals);
    return true;
  }
  if (target == simd_target::avx2_fma) {
    score_avx2::score_totals(kind, planes, scaling, along, totals);
    return true;
  }
#endif
  (void)target, (void)kind, (void)x, (void)scaling, (void)along, (void)totals;
  return false;
}

}  // namespace detail
NASHPRUNE_END_NAMESPACE
