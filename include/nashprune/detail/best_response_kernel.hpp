// nashprune/detail/best_response_kernel.hpp — one Gauss–Seidel sweep of best
// responses of the Nash game (nash_solvers.hpp), as an explicit SIMD kernel,
// and the solvers' two other passes over a layer: R's entries (finite, nearly
// symmetric) and the exploitability ε.
//
// With Q = λ·(R + diag(r)) and g = c − Q·s kept current, player i moves to
//     t = clamp(s_i + g_i / Q_ii, 0, 1),   δ = t − s_i,
// and g −= λδ·(R.col(i) + r_i·e_i). The column update is the whole cost (n
// multiply-adds per player that moves); Eigen built without -march uses SSE2,
// so the AVX2+FMA and AVX-512 versions here do it 2–4× wider: the kernels are
// written once in best_response_kernel_simd.inl, included inside a target region
// per instruction set (as gram_kernel.hpp does) and chosen at run time. Double only: float games
// take the portable loop. Rounding differs from the portable loop by fused
// multiply-adds only. What bounds a sweep of a small layer (measured on Zen 4):
// not the arithmetic but the round trips of g through memory (a vector store
// read back by the next player, and a scalar store inside it, which cannot be
// forwarded) and the sequential chain g_i → δ_i → g_{i+1}. So a layer of at
// most 4 vectors (n ≤ 32 on AVX-512, ≤ 16 on AVX2) keeps g in registers, the
// chain runs on scalars, and up to four layers of a batch are swept interleaved.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <utility>

#include "../config.hpp"
#include "simd_dispatch.hpp"

NASHPRUNE_BEGIN_NAMESPACE
namespace detail {

/// The pointers a sweep kernel works on: R column-major with leading dimension
/// `ld`, r_i, 1/Q_ii, λ, and s, g (n each, updated in place).
struct best_response_sweep_data {
  const double* r;
  Eigen::Index ld;
  Eigen::Index n;
  const double* diagonal;
  const double* inverse_diagonal;
  double lambda;
  double* s;
  double* g;
};

/// The most games one kernel call sweeps interleaved.
inline constexpr int max_sweep_group = 4;

}  // namespace detail
NASHPRUNE_END_NAMESPACE

#if defined(NASHPRUNE_SIMD_X86)

// The register kernel's lambdas must inline, or its vectors would live in memory.
#define NASHPRUNE_KERNEL_INLINE __attribute__((always_inline))

// Deliberately one simd_ops per instruction set, alike in shape: each member
// names one operation of the shared kernel (the .inl, written once) in that
// set's intrinsics, whose types, masks and widths differ; a common template
// would need a trait per intrinsic, as long as these structs and harder to read.

NASHPRUNE_TARGET_REGION_BEGIN("avx2,fma")
NASHPRUNE_BEGIN_NAMESPACE
namespace detail::best_response_avx2 {
// Deliberately alike in shape to the other targets' simd_ops (see the note above):
// the best-response kernel's operations in AVX2 intrinsics.
struct simd_ops {
  using vec = __m256d;
  static constexpr Eigen::Index lanes = 4;
  static __m256i first_mask(Eigen::Index count) {
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x(count), _mm256_setr_epi64x(0, 1, 2, 3));
  }
  static vec broadcast(double v) { return _mm256_set1_pd(v); }
  static vec load(const double* p) { return _mm256_loadu_pd(p); }
  static vec load_first(const double* p, Eigen::Index count) { return _mm256_maskload_pd(p, first_mask(count)); }
  static void store(double* p, vec v) { _mm256_storeu_pd(p, v); }
  static void store_first(double* p, Eigen::Index count, vec v) { _mm256_maskstore_pd(p, first_mask(count), v); }
  static vec fma(vec a, vec b, vec acc) { return _mm256_fmadd_pd(a, b, acc); }
  /// v with `value` added at `lane` (nothing when lane ∉ [0, lanes)).
  static vec add_at_lane(vec v, Eigen::Index lane, double value) {
    const __m256i hit = _mm256_cmpeq_epi64(_mm256_set1_epi64x(lane), _mm256_setr_epi64x(0, 1, 2, 3));
    return _mm256_blendv_pd(v, _mm256_add_pd(v, _mm256_set1_pd(value)), _mm256_castsi256_pd(hit));
  }
  /// Lane `lane` ∈ [0, lanes) of v.
  static double extract(vec v, Eigen::Index lane) {
    const auto low = static_cast<int>(2 * lane);
    const __m256i pick = _mm256_setr_epi32(low, low + 1, 0, 0, 0, 0, 0, 0);
    return _mm256_cvtsd_f64(_mm256_castps_pd(_mm256_permutevar8x32_ps(_mm256_castpd_ps(v), pick)));
  }
  /// p[0], p[stride], … (the first `count` of them; zeros after).
  static vec gather_first(const double* p, Eigen::Index stride, Eigen::Index count) {
    const __m256i lane = _mm256_setr_epi64x(0, 1, 2, 3);
    const __m256i offsets = _mm256_mul_epu32(lane, _mm256_set1_epi64x(stride));  // stride < 2³²: checked by the caller
    return _mm256_mask_i64gather_pd(_mm256_setzero_pd(), p, offsets, _mm256_castsi256_pd(_mm256_cmpgt_epi64(
                                                                         _mm256_set1_epi64x(count), lane)),
                                    8);
  }
  static vec add(vec a, vec b) { return _mm256_add_pd(a, b); }
  static vec sub(vec a, vec b) { return _mm256_sub_pd(a, b); }
  static vec mul(vec a, vec b) { return _mm256_mul_pd(a, b); }
  static vec max(vec a, vec b) { return _mm256_max_pd(a, b); }
  static vec min(vec a, vec b) { return _mm256_min_pd(a, b); }
  static double reduce_max(vec v) {
    const __m128d half = _mm_max_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_max_sd(half, _mm_unpackhi_pd(half, half)));
  }
  /// True when some lane has !(|a − b| ≤ bound) (a NaN or infinity included).
  static bool any_apart(vec a, vec b, vec bound) {
    const vec distance = _mm256_andnot_pd(_mm256_set1_pd(-0.0), _mm256_sub_pd(a, b));
    return _mm256_movemask_pd(_mm256_cmp_pd(distance, bound, _CMP_NLE_UQ)) != 0;
  }
};
#include "best_response_kernel_simd.inl"
}  // namespace detail::best_response_avx2
NASHPRUNE_END_NAMESPACE
NASHPRUNE_TARGET_REGION_END

NASHPRUNE_TARGET_REGION_BEGIN("avx512f,avx2,fma")
NASHPRUNE_BEGIN_NAMESPACE
namespace detail::best_response_avx512 {
// Deliberately alike in shape to the other targets' simd_ops (see the note above):
// the best-response kernel's operations in AVX-512 intrinsics.
struct simd_ops {
  using vec = __m512d;
  static constexpr Eigen::Index lanes = 8;
  static __mmask8 first_mask(Eigen::Index count) { return static_cast<__mmask8>((1u << count) - 1u); }
  static vec broadcast(double v) { return _mm512_set1_pd(v); }
  static vec load(const double* p) { return _mm512_loadu_pd(p); }
  static vec load_first(const double* p, Eigen::Index count) { return _mm512_maskz_loadu_pd(first_mask(count), p); }
  static void store(double* p, vec v) { _mm512_storeu_pd(p, v); }
  static void store_first(double* p, Eigen::Index count, vec v) { _mm512_mask_storeu_pd(p, first_mask(count), v); }
  static vec fma(vec a, vec b, vec acc) { return _mm512_fmadd_pd(a, b, acc); }
  static vec add_at_lane(vec v, Eigen::Index lane, double value) {
    const auto hit = static_cast<__mmask8>(static_cast<std::uint64_t>(lane) < lanes ? 1u << lane : 0u);
    return _mm512_mask_add_pd(v, hit, v, _mm512_set1_pd(value));
  }
  static double extract(vec v, Eigen::Index lane) {
    return _mm512_cvtsd_f64(_mm512_maskz_permutexvar_pd(0xFF, _mm512_set1_epi64(lane), v));  // maskz: GCC 12 warns on the unmasked form
  }
  static vec gather_first(const double* p, Eigen::Index stride, Eigen::Index count) {
    const __m512i offsets = _mm512_maskz_mul_epu32(0xFF, _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7), _mm512_set1_epi64(stride));
    return _mm512_mask_i64gather_pd(_mm512_setzero_pd(), first_mask(count), offsets, p, 8);
  }
  static vec add(vec a, vec b) { return _mm512_add_pd(a, b); }
  static vec sub(vec a, vec b) { return _mm512_sub_pd(a, b); }
  static vec mul(vec a, vec b) { return _mm512_mul_pd(a, b); }
  // maskz forms throughout: GCC 12 warns on the unmasked ones (an undefined source).
  static vec max(vec a, vec b) { return _mm512_maskz_max_pd(0xFF, a, b); }
  static vec min(vec a, vec b) { return _mm512_maskz_min_pd(0xFF, a, b); }
  static double reduce_max(vec v) {
    const __m256d half = _mm256_max_pd(_mm512_maskz_extractf64x4_pd(0xF, v, 0), _mm512_maskz_extractf64x4_pd(0xF, v, 1));
    const __m128d quarter = _mm_max_pd(_mm256_castpd256_pd128(half), _mm256_extractf128_pd(half, 1));
    return _mm_cvtsd_f64(_mm_max_sd(quarter, _mm_unpackhi_pd(quarter, quarter)));
  }
  static bool any_apart(vec a, vec b, vec bound) {
    const vec distance = _mm512_abs_pd(_mm512_sub_pd(a, b));
    return _mm512_cmp_pd_mask(distance, bound, _CMP_NLE_UQ) != 0;
  }
};
#include "best_response_kernel_simd.inl"
}  // namespace detail::best_response_avx512
NASHPRUNE_END_NAMESPACE
NASHPRUNE_TARGET_REGION_END

#undef NASHPRUNE_KERNEL_INLINE

#endif  // NASHPRUNE_SIMD_X86

NASHPRUNE_BEGIN_NAMESPACE
namespace detail {

/// Sweeps `count` games (1..max_sweep_group) on `target` (already resolved),
/// their steps interleaved, each exactly as a sweep of its own; false when
/// `target` has no kernel here (portable), so the caller runs its own loop.
inline bool best_response_sweep_on(simd_target target, const best_response_sweep_data* games, int count = 1) {
#if defined(NASHPRUNE_SIMD_X86)
  if (target == simd_target::avx512) {
    best_response_avx512::sweep(games, count);
    return true;
  }
  if (target == simd_target::avx2_fma) {
    best_response_avx2::sweep(games, count);
    return true;
  }
#endif
  (void)target;
  (void)games;
  (void)count;
  return false;
}

/// The exploitability ε = max(0, max_i Δ_i·g_i − b_i·Δ_i²), Δ_i = clamp(s_i + g_i/(2b_i), 0, 1) − s_i
/// (nash_game.hpp, exploitability_from_gradient) on `target` into `result`;
/// false when `target` has no kernel here.
inline bool exploitability_on(simd_target target, const double* s, const double* g, const double* half_diagonal,
                              const double* inverse_diagonal, Eigen::Index n, double& result) {
#if defined(NASHPRUNE_SIMD_X86)
  if (target == simd_target::avx512) {
    result = best_response_avx512::exploitability(s, g, half_diagonal, inverse_diagonal, n);
    return true;
  }
  if (target == simd_target::avx2_fma) {
    result = best_response_avx2::exploitability(s, g, half_diagonal, inverse_diagonal, n);
    return true;
  }
#endif
  (void)target;
  (void)s;
  (void)g;
  (void)half_diagonal;
  (void)inverse_diagonal;
  (void)n;
  (void)result;
  return false;
}

/// finite_and_nearly_symmetric on `target` (already resolved) into `result`;
/// false when `target` has no kernel here (portable) or ld ≥ 2³² (the gather's
/// offsets are 32-bit products), so the caller runs its own check.
inline bool finite_and_nearly_symmetric_on(simd_target target, const double* r, Eigen::Index ld, Eigen::Index n,
                                           double tolerance, bool& result) {
#if defined(NASHPRUNE_SIMD_X86)
  if (ld < (Eigen::Index(1) << 32)) {
    if (target == simd_target::avx512) {
      result = best_response_avx512::finite_and_nearly_symmetric(r, ld, n, tolerance);
      return true;
    }
    if (target == simd_target::avx2_fma) {
      result = best_response_avx2::finite_and_nearly_symmetric(r, ld, n, tolerance);
      return true;
    }
  }
#endif
  (void)target;
  (void)r;
  (void)ld;
  (void)n;
  (void)tolerance;
  (void)result;
  return false;
}

}  // namespace detail
NASHPRUNE_END_NAMESPACE
