// nashprune/detail/compress_copy.hpp — gathering many short runs of every line
// (single MLP channels kept along a row-major line) with AVX-512 compress.
//
// Not part of the public API. A keep-list of short runs (a few elements each)
// costs a copy call or a loop turn per run; the same keep pattern applies to
// every line, though, so it is turned once into one bit mask per 16 (float) or
// 8 (double) elements of a line, and each line is then gathered a vector at a
// time: load, vcompress of the kept lanes into the low lanes, store, advance by
// the popcount (compress_lines says why the loads and stores are plain).
// Elements are moved as bits (no arithmetic), so any 4- or 8-byte trivially
// copyable type qualifies. Runs on AVX-512 CPUs only (detected_cpu_features,
// detail/simd_dispatch.hpp; tests force a target): elsewhere the caller's
// element loop does the job.
#pragma once

#include <bit>
#include <cstdint>
#include <span>
#include <type_traits>
#include <vector>

#include "../index_range.hpp"
#include "../config.hpp"
#include "simd_dispatch.hpp"

NASHPRUNE_BEGIN_NAMESPACE
namespace detail {

/// One mask per chunk of `lanes` elements of a line of `inner` elements: bit j
/// set when element chunk·lanes + j is kept.
[[nodiscard]] inline std::vector<std::uint32_t> kept_lane_masks(std::span<const index_range> keep, std::int64_t inner,
                                                                std::int64_t lanes) {
  std::vector<std::uint32_t> masks(static_cast<std::size_t>((inner + lanes - 1) / lanes), 0u);
  for (const auto& r : keep) {
    for (std::int64_t i = r.begin; i < r.begin + r.size; ++i) {
      masks[static_cast<std::size_t>(i / lanes)] |= 1u << (i % lanes);
    }
  }
  return masks;
}

/// A line gather by masks: `lines` lines, strides in elements.
struct masked_lines {
  const void* from;
  std::int64_t from_stride;
  void* to;
  std::int64_t to_stride;
  std::int64_t lines;
};

}  // namespace detail
NASHPRUNE_END_NAMESPACE

#if defined(NASHPRUNE_SIMD_X86)
NASHPRUNE_TARGET_REGION_BEGIN("avx512f")
NASHPRUNE_BEGIN_NAMESPACE
namespace detail::compress_avx512 {

/// Plain and masked forms of a vector's load and store, and compress into the
/// low lanes (register to register: vcompress with a memory destination is
/// microcoded and slow on AMD Zen 4 and Zen 5).
inline __m512 load(const float* from) { return _mm512_loadu_ps(from); }
inline __m512d load(const double* from) { return _mm512_loadu_pd(from); }
inline __m512 load(const float* from, __mmask16 mask) { return _mm512_maskz_loadu_ps(mask, from); }
inline __m512d load(const double* from, __mmask8 mask) { return _mm512_maskz_loadu_pd(mask, from); }
inline __m512 compress(__m512 v, __mmask16 mask) { return _mm512_maskz_compress_ps(mask, v); }
inline __m512d compress(__m512d v, __mmask8 mask) { return _mm512_maskz_compress_pd(mask, v); }
inline void store(float* to, __m512 v) { _mm512_storeu_ps(to, v); }
inline void store(double* to, __m512d v) { _mm512_storeu_pd(to, v); }
inline void store(float* to, __m512 v, __mmask16 mask) { _mm512_mask_storeu_ps(to, mask, v); }
inline void store(double* to, __m512d v, __mmask8 mask) { _mm512_mask_storeu_pd(to, mask, v); }

/// Each line a vector at a time: load, compress the kept lanes into the low
/// ones, store the whole vector and advance by the kept count, so the lanes
/// past it are overwritten by the next store. Masked loads and stores are used
/// only where a plain one would leave the line (its last partial vector; the
/// last vectors of the destination line): on AMD Zen 5 a masked load and store
/// per vector made this gather 4x slower than plain ones (0.25 against 1.0 of
/// a memcpy of the bytes written, f32 4096 × 14336 keeping 70 % of single columns).
template <typename Element>
void compress_lines(const masked_lines& x, std::span<const std::uint32_t> masks, std::int64_t inner) {
  using lane_mask = std::conditional_t<sizeof(Element) == 4, __mmask16, __mmask8>;
  constexpr std::int64_t lanes = 64 / static_cast<std::int64_t>(sizeof(Element));
  const auto whole_vectors = static_cast<std::size_t>(inner / lanes);
  std::int64_t kept_per_line = 0;
  for (const std::uint32_t mask : masks) kept_per_line += std::popcount(mask);
  for (std::int64_t line = 0; line < x.lines; ++line) {
    const Element* from = static_cast<const Element*>(x.from) + line * x.from_stride;
    Element* to = static_cast<Element*>(x.to) + line * x.to_stride;
    const Element* const end = to + kept_per_line;
    for (std::size_t c = 0; c < masks.size(); ++c) {
      const auto mask = static_cast<lane_mask>(masks[c]);
      if (mask == 0) continue;
      const Element* source = from + lanes * static_cast<std::int64_t>(c);
      const auto packed = compress(c < whole_vectors ? load(source) : load(source, mask), mask);
      const int kept = std::popcount(masks[c]);
      if (end - to >= lanes) {
        store(to, packed);
      } else {
        store(to, packed, static_cast<lane_mask>((1u << kept) - 1u));
      }
      to += kept;
    }
  }
}

}  // namespace detail::compress_avx512
NASHPRUNE_END_NAMESPACE
NASHPRUNE_TARGET_REGION_END
#endif  // NASHPRUNE_SIMD_X86

NASHPRUNE_BEGIN_NAMESPACE
namespace detail {

/// Gathers the kept elements of every line (elements of `ElementBytes` bytes,
/// lines of `inner` elements) back to back into the destination lines, when
/// `target` (resolved) is AVX-512; false (nothing done) otherwise.
template <std::size_t ElementBytes>
[[nodiscard]] bool compress_kept_elements(simd_target target, const masked_lines& x,
                                          std::span<const index_range> keep, std::int64_t inner) {
#if defined(NASHPRUNE_SIMD_X86)
  if constexpr (ElementBytes == 4 || ElementBytes == 8) {
    if (target != simd_target::avx512) return false;
    constexpr std::int64_t lanes = 64 / static_cast<std::int64_t>(ElementBytes);
    const auto masks = kept_lane_masks(keep, inner, lanes);
    compress_avx512::compress_lines<std::conditional_t<ElementBytes == 4, float, double>>(x, masks, inner);
    return true;
  }
#endif
  (void)target, (void)x, (void)keep, (void)inner;
  return false;
}

}  // namespace detail
NASHPRUNE_END_NAMESPACE
