// nashprune/detail/best_response_kernel.hpp — one Gauss–Seidel sweep of best
// responses of the Nash game (nash_solvers.hpp), as an explicit SIMD kernel.
//
// With Q = λ·(R + diag(r)) and g = c − Q·s kept current, player i moves to
//     t = clamp(s_i + g_i / Q_ii, 0, 1),   δ = t − s_i,
// and g −= λδ·R.col(i), g_i −= λδ·r_i. The column update is the whole cost (n
// multiply-adds per player that moves); Eigen built without -march uses SSE2,
// so the AVX2+FMA and AVX-512 versions here do it 2–4× wider: the sweep is
// written once in best_response_kernel_simd.inl, included inside a target region
// per instruction set (as gram_kernel.hpp does) and chosen at run time. Double only: float games
// take the portable loop. Rounding differs from the portable loop by the fused
// multiply-add only.
#pragma once

#include <Eigen/Core>
#include <algorithm>

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

}  // namespace detail
NASHPRUNE_END_NAMESPACE

#if defined(NASHPRUNE_SIMD_X86)

NASHPRUNE_TARGET_REGION_BEGIN("avx2,fma")
NASHPRUNE_BEGIN_NAMESPACE
namespace detail::best_response_avx2 {
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
};
#include "best_response_kernel_simd.inl"
}  // namespace detail::best_response_avx2
NASHPRUNE_END_NAMESPACE
NASHPRUNE_TARGET_REGION_END

NASHPRUNE_TARGET_REGION_BEGIN("avx512f,avx2,fma")
NASHPRUNE_BEGIN_NAMESPACE
namespace detail::best_response_avx512 {
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
};
#include "best_response_kernel_simd.inl"
}  // namespace detail::best_response_avx512
NASHPRUNE_END_NAMESPACE
NASHPRUNE_TARGET_REGION_END

#endif  // NASHPRUNE_SIMD_X86

NASHPRUNE_BEGIN_NAMESPACE
namespace detail {

/// Sweeps `a` on `target` (already resolved), or `a` and `b` with their steps
/// interleaved when `b` is given (each exactly as a sweep of its own); false
/// when `target` has no kernel here (portable), so the caller runs its own loop.
inline bool best_response_sweep_on(simd_target target, const best_response_sweep_data& a,
                                   const best_response_sweep_data* b = nullptr) {
#if defined(NASHPRUNE_SIMD_X86)
  if (target == simd_target::avx512) {
    b != nullptr ? best_response_avx512::sweep_pair(a, *b) : best_response_avx512::sweep(a);
    return true;
  }
  if (target == simd_target::avx2_fma) {
    b != nullptr ? best_response_avx2::sweep_pair(a, *b) : best_response_avx2::sweep(a);
    return true;
  }
#endif
  (void)target;
  (void)a;
  (void)b;
  return false;
}

}  // namespace detail
NASHPRUNE_END_NAMESPACE
