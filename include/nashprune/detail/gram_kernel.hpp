// nashprune/detail/gram_kernel.hpp — the Gram accumulation kernel behind
// head_redundancy.hpp: G_ij += Σ x_i · x_j and s_i += Σ x_i over strided head vectors.
//
// Not part of the public API. A batch of activations is described by a
// gram_layout: head i's values sit in `slices` contiguous runs of `slice_length`
// elements, run a of head i starting at base + a·slice_stride + i·head_stride.
// A token-major (row-major) tokens × (n·d) block is slices = tokens, run = one
// head's d values; a column-major block is slices = d, run = one column's tokens.
// Both storage orders therefore reach the same kernel without a copy.
//
// Targets. float batches run on AVX-512, AVX2+FMA or a portable loop, chosen at
// run time; double batches always run on the portable loop (they are rare and
// already accurate). Why compiler target regions rather than Highway or xsimd:
// the library is header-only and depends on Eigen alone, and the kernel needs
// only six vector operations (load, two masked part loads, FMA, add, reduce to
// double). gram_kernel_simd.inl holds the kernel once; it is included inside a
// "#pragma GCC target" (or "#pragma clang attribute") region per instruction set,
// so the build needs no -march flag and a binary built anywhere runs anywhere:
// an AVX-512 function is only called after the CPU reported AVX-512. The CPU
// check runs once (a function-local static: an immutable fact about the
// hardware, initialised thread-safely), not per batch. Defining NASHPRUNE_NO_SIMD
// before the include compiles the portable loop alone (non-GNU compilers and
// non-x86 machines get it anyway).
//
// Numerics. Products are summed in float vector registers for at most
// gram_steps_per_flush vector steps (≤ 64 products per lane), then the lanes are
// summed in float (a pairwise tree: 4 levels for 16 lanes, 3 for 8), converted
// to double and added to the double Gram; rounding therefore stays that of a
// ~70-term float sum however long the reduction (10^8 and beyond), instead of
// growing with it as a plain float accumulator does.
//
// Speed (AVX-512 on the 2-core Zen 4, family 25 model 17, this was tuned on):
// the flush reduces four accumulators at once (a third of the instructions of
// one at a time) and the diagonal tiles form only their lower triangle. A 4 × 6
// tile streams 10 vectors per 24 FMAs, from L2: a 64-step panel of every head
// sits there. Measured over a panel held in L2, the tiles run at 0.86–0.94 of
// the FMA peak for n = 32–128, whether the panel is token-major (rows of n·d
// floats, a multiple of 4 KiB, which alias in the L1) or packed head-major, and
// a 32-step panel is no faster; so the L1 misses cost little, and packing (a
// load and a store per activation) or shorter panels (more flushes) would not
// pay. What large panels lose is the wait for the next panel from L3 or memory:
// past n = 32 heads (or 32 heads in token rows of 16 KiB), it is requested into
// L2 during the current one, spread over its tiles (panel_prefetch in the .inl);
// below, the hardware prefetchers keep up and software requests only cost.
// These are choices by panel bytes and strides, not by CPU model; a core with
// full-width AVX-512 FMAs (Zen 5) needs its operands twice as fast, which makes
// the L2 requests matter more, not less. Figures: benchmarks/README.md.
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "../config.hpp"

#include "simd_dispatch.hpp"

NASHPRUNE_BEGIN_NAMESPACE

namespace detail {

template <typename Scalar>
struct gram_layout {
  const Scalar* base = nullptr;
  Eigen::Index heads = 0;
  Eigen::Index head_stride = 0;
  Eigen::Index slices = 0;
  Eigen::Index slice_stride = 0;
  Eigen::Index slice_length = 0;

  [[nodiscard]] const Scalar* run(Eigen::Index head, Eigen::Index slice) const {
    return base + slice * slice_stride + head * head_stride;
  }
};

/// Which part of the Gram one call adds, so that several threads can share a
/// batch: the columns are cut into blocks, and part p of `parts` owns the blocks
/// the snake order 0, 1, …, parts−1, parts−1, …, 1, 0, 0, 1, … gives it. Block b's
/// lower-triangle work falls with b, and the snake order evens it out. Each Gram
/// column, and each head sum (that of the diagonal column), has one owner: the
/// parts write disjoint memory.
struct gram_share {
  int part = 0;
  int parts = 1;
  [[nodiscard]] bool owns(Eigen::Index block) const {
    const Eigen::Index turn = block % (2 * Eigen::Index{parts});
    return (turn < parts ? turn : 2 * Eigen::Index{parts} - 1 - turn) == part;
  }
};

/// Columns per block of the portable kernel's share (the SIMD kernel uses its cache blocks).
inline constexpr Eigen::Index gram_portable_share_columns = 64;

/// Largest input magnitude the float SIMD kernels take: their float partial sums of
/// products overflow beyond about this; larger inputs go to the portable kernel.
inline constexpr double gram_float_safe_magnitude = 1e18;

/// Portable kernel: products formed and summed in double, so it is the most
/// accurate target and the fallback on every machine. Adds the lower triangle
/// (i >= j) of the batch Gram into `gram` (column-major n × n) and the head sums
/// into `sums`, those of the columns `share` owns.
template <typename Scalar>
void accumulate_gram_portable(const gram_layout<Scalar>& x, double* gram, double* sums,
                              gram_share share = {}) {
  const Eigen::Index n = x.heads;
  const auto owned = [&](Eigen::Index column) {
    return share.owns(column / gram_portable_share_columns);
  };
  for (Eigen::Index a = 0; a < x.slices; ++a) {
    for (Eigen::Index i = 0; i < n; ++i) {
      const Scalar* xi = x.run(i, a);
      if (owned(i)) {
        double sum_i = 0;
        for (Eigen::Index k = 0; k < x.slice_length; ++k) sum_i += static_cast<double>(xi[k]);
        sums[i] += sum_i;
      }
      for (Eigen::Index j = 0; j <= i; ++j) {
        if (!owned(j)) continue;
        const Scalar* xj = x.run(j, a);
        double dot = 0;
        for (Eigen::Index k = 0; k < x.slice_length; ++k) {
          dot += static_cast<double>(xi[k]) * static_cast<double>(xj[k]);
        }
        gram[i + j * n] += dot;
      }
    }
  }
}

/// Float vector steps a register accumulator takes before it is reduced into double.
inline constexpr Eigen::Index gram_steps_per_flush = 64;

/// Bytes of one panel's head block the kernel keeps in L2 (half of a 1 MiB L2):
/// 128 heads of a full 64-step AVX-512 panel, so head_redundancy's n ≤ 128 is
/// one block; head_cka's thousands of columns are cut into blocks.
inline constexpr Eigen::Index gram_block_bytes = Eigen::Index{512} * 1024;

/// Bytes of a panel of all heads beyond which the kernel requests the next panel
/// into L2 while computing the current one (panel_prefetch in the .inl): beyond
/// n = 32 heads of a 64-step AVX-512 panel; beyond half of it when a head's runs
/// lie at least gram_prefetch_slice_bytes apart (token rows of n·d ≥ 4096 floats).
inline constexpr Eigen::Index gram_prefetch_panel_bytes = Eigen::Index{128} * 1024;
inline constexpr Eigen::Index gram_prefetch_slice_bytes = Eigen::Index{16} * 1024;

}  // namespace detail
NASHPRUNE_END_NAMESPACE

#if defined(NASHPRUNE_SIMD_X86)

// Deliberately one simd_ops per instruction set, alike in shape: each member
// names one operation of the shared kernel (the .inl, written once) in that
// set's intrinsics, whose types, masks and widths differ; a common template
// would need a trait per intrinsic, as long as these structs and harder to read.

// ---- AVX2 + FMA: 8 lanes. Off-diagonal tiles of 3 × 4 heads (12 accumulators +
// 3 rows + 1 column = 16 ymm registers: 7 loads per 12 FMAs); diagonal tiles of
// 3 heads (6 accumulators + 3 rows + 3 sums).
NASHPRUNE_TARGET_REGION_BEGIN("avx2,fma")
NASHPRUNE_BEGIN_NAMESPACE
namespace detail::gram_avx2 {
// Deliberately alike in shape to the other targets' simd_ops (see the note above):
// the gram kernel's operations in AVX2 intrinsics.
struct simd_ops {
  using vec = __m256;
  static constexpr Eigen::Index lanes = 8;
  static constexpr Eigen::Index tile = 3;
  static constexpr Eigen::Index tile_columns = 4;
  static vec zero() { return _mm256_setzero_ps(); }
  static vec load(const float* p) { return _mm256_loadu_ps(p); }
  static __m256i lanes_below(Eigen::Index count) {
    const __m256i index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(count)), index);
  }
  static vec load_low(const float* p, Eigen::Index count) {
    return _mm256_maskload_ps(p, lanes_below(count));
  }
  static vec load_high(vec low, const float* p, Eigen::Index count) {
    const __m256i high = _mm256_xor_si256(lanes_below(count), _mm256_set1_epi32(-1));
    return _mm256_blendv_ps(low, _mm256_maskload_ps(p, high), _mm256_castsi256_ps(high));
  }
  static vec blend_low(vec low, vec high, Eigen::Index count) {
    return _mm256_blendv_ps(high, low, _mm256_castsi256_ps(lanes_below(count)));
  }
  static vec fma(vec a, vec b, vec acc) { return _mm256_fmadd_ps(a, b, acc); }
  static vec add(vec a, vec b) { return _mm256_add_ps(a, b); }
  /// The lane sums of a, b, c and d, in double.
  static __m256d four_sums(vec a, vec b, vec c, vec d) {
    const __m256 pairs = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
    return _mm256_cvtps_pd(_mm_add_ps(_mm256_castps256_ps128(pairs), _mm256_extractf128_ps(pairs, 1)));
  }
  static double reduce_to_double(vec v) {
    const __m256d d = _mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)),
                                    _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
    const __m128d h = _mm_add_pd(_mm256_castpd256_pd128(d), _mm256_extractf128_pd(d, 1));
    return _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)));
  }
};
#include "gram_kernel_simd.inl"
}  // namespace detail::gram_avx2
NASHPRUNE_END_NAMESPACE
NASHPRUNE_TARGET_REGION_END

// ---- AVX-512: 16 lanes. Off-diagonal tiles of 4 × 6 heads (24 accumulators +
// 4 rows + 1 column = 29 of 32 zmm registers: 10 loads per 24 FMAs); diagonal
// tiles of 4 heads (10 accumulators + 4 rows + 4 sums).
NASHPRUNE_TARGET_REGION_BEGIN("avx512f,avx2,fma")
NASHPRUNE_BEGIN_NAMESPACE
namespace detail::gram_avx512 {
// Deliberately alike in shape to the other targets' simd_ops (see the note above):
// the gram kernel's operations in AVX-512 intrinsics.
struct simd_ops {
  using vec = __m512;
  static constexpr Eigen::Index lanes = 16;
  static constexpr Eigen::Index tile = 4;
  static constexpr Eigen::Index tile_columns = 6;
  static vec zero() { return _mm512_setzero_ps(); }
  static vec load(const float* p) { return _mm512_loadu_ps(p); }
  static constexpr __mmask16 all = 0xffff;
  static __mmask16 lanes_below(Eigen::Index count) {
    return static_cast<__mmask16>((1u << count) - 1u);
  }
  static vec load_low(const float* p, Eigen::Index count) {
    return _mm512_maskz_loadu_ps(lanes_below(count), p);
  }
  static vec load_high(vec low, const float* p, Eigen::Index count) {
    return _mm512_mask_loadu_ps(low, static_cast<__mmask16>(~lanes_below(count)), p);
  }
  static vec blend_low(vec low, vec high, Eigen::Index count) {
    return _mm512_mask_blend_ps(lanes_below(count), high, low);
  }
  static vec fma(vec a, vec b, vec acc) { return _mm512_fmadd_ps(a, b, acc); }
  static vec add(vec a, vec b) { return _mm512_add_ps(a, b); }
  // Only maskz forms: GCC 12 implements the unmasked conversions, extracts and even
  // _mm512_cast*512_*256 on an "undefined" register that -Wuninitialized flags.
  static __m256d half_pd(__m512d v, int upper) {
    return upper ? _mm512_maskz_extractf64x4_pd(0xf, v, 1) : _mm512_maskz_extractf64x4_pd(0xf, v, 0);
  }
  /// The lane sums of a, b, c and d, in double: quarter-vector shuffles fold the
  /// four into one vector whose quarter k holds four partial sums of the k-th.
  static vec quarters(vec a, vec b, int imm) {
    return imm == 0 ? _mm512_maskz_shuffle_f32x4(all, a, b, _MM_SHUFFLE(1, 0, 1, 0))
         : imm == 1 ? _mm512_maskz_shuffle_f32x4(all, a, b, _MM_SHUFFLE(3, 2, 3, 2))
         : imm == 2 ? _mm512_maskz_shuffle_f32x4(all, a, b, _MM_SHUFFLE(2, 0, 2, 0))
                    : _mm512_maskz_shuffle_f32x4(all, a, b, _MM_SHUFFLE(3, 1, 3, 1));
  }
  static __m256d four_sums(vec a, vec b, vec c, vec d) {
    const vec ab = _mm512_add_ps(quarters(a, b, 0), quarters(a, b, 1));
    const vec cd = _mm512_add_ps(quarters(c, d, 0), quarters(c, d, 1));
    const vec folded = _mm512_add_ps(quarters(ab, cd, 2), quarters(ab, cd, 3));
    const vec halves =
        _mm512_add_ps(folded, _mm512_maskz_permute_ps(all, folded, _MM_SHUFFLE(1, 0, 3, 2)));
    const vec totals =
        _mm512_add_ps(halves, _mm512_maskz_permute_ps(all, halves, _MM_SHUFFLE(2, 3, 0, 1)));
    const vec gathered = _mm512_maskz_permutexvar_ps(
        all, _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), totals);
    return _mm256_cvtps_pd(_mm512_maskz_extractf32x4_ps(0xf, gathered, 0));
  }
  static double reduce_to_double(vec v) {
    const __m512d v_pd = _mm512_castps_pd(v);
    const __m512d d = _mm512_add_pd(_mm512_maskz_cvtps_pd(0xff, _mm256_castpd_ps(half_pd(v_pd, 0))),
                                    _mm512_maskz_cvtps_pd(0xff, _mm256_castpd_ps(half_pd(v_pd, 1))));
    const __m256d q = _mm256_add_pd(half_pd(d, 0), half_pd(d, 1));
    const __m128d h = _mm_add_pd(_mm256_castpd256_pd128(q), _mm256_extractf128_pd(q, 1));
    return _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)));
  }
};
#include "gram_kernel_simd.inl"
}  // namespace detail::gram_avx512
NASHPRUNE_END_NAMESPACE
NASHPRUNE_TARGET_REGION_END

#endif  // NASHPRUNE_SIMD_X86

NASHPRUNE_BEGIN_NAMESPACE
namespace detail {

/// Adds the batch's lower-triangle Gram and head sums, on `target` (already resolved).
/// `share` selects the part of the columns this call adds (gram_share).
template <typename Scalar>
void accumulate_gram(simd_target target, const gram_layout<Scalar>& x, double* gram,
                     double* sums, gram_share share = {}) {
#if defined(NASHPRUNE_SIMD_X86)
  if constexpr (std::is_same_v<Scalar, float>) {
    if (target == simd_target::avx512) return gram_avx512::accumulate_gram_simd(x, gram, sums, share);
    if (target == simd_target::avx2_fma) return gram_avx2::accumulate_gram_simd(x, gram, sums, share);
  }
#endif
  (void)target;
  accumulate_gram_portable(x, gram, sums, share);
}

}  // namespace detail
NASHPRUNE_END_NAMESPACE

