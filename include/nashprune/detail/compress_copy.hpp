// nashprune/detail/compress_copy.hpp — gathering many short runs of every line
// (single MLP channels kept along a row-major line) with AVX-512 compress.
//
// Not part of the public API. A keep-list of short runs (a few elements each)
// costs a copy call or a loop turn per run; the same keep pattern applies to
// every line, though, so it is turned once into one bit mask per 16 (float) or
// 8 (double) elements of a line, and each line is then gathered a vector at a
// time: masked load of the kept lanes, vcompress into the low lanes, masked
// store of the popcount. Elements are moved as bits (no arithmetic), so any
// 4- or 8-byte trivially copyable type qualifies. Runs on AVX-512 CPUs only
// (detected_cpu_features, detail/simd_dispatch.hpp): elsewhere the caller's
// element loop does the job.
#pragma once

#include <bit>
#include <cstdint>
#include <span>
#include <type_traits>
#include <vector>

#include "../attention_geometry.hpp"
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

/// One vector of kept elements: masked load of the kept lanes, compress into the
/// low lanes, masked store of the `kept` count.
inline void compress(const float* from, float* to, __mmask16 mask, int kept) {
  _mm512_mask_storeu_ps(to, static_cast<__mmask16>((1u << kept) - 1u),
                        _mm512_maskz_compress_ps(mask, _mm512_maskz_loadu_ps(mask, from)));
}

inline void compress(const double* from, double* to, __mmask8 mask, int kept) {
  _mm512_mask_storeu_pd(to, static_cast<__mmask8>((1u << kept) - 1u),
                        _mm512_maskz_compress_pd(mask, _mm512_maskz_loadu_pd(mask, from)));
}

template <typename Element>
void compress_lines(const masked_lines& x, std::span<const std::uint32_t> masks) {
  using element = Element;
  using lane_mask = std::conditional_t<sizeof(Element) == 4, __mmask16, __mmask8>;
  constexpr std::int64_t lanes = 64 / static_cast<std::int64_t>(sizeof(Element));
  for (std::int64_t line = 0; line < x.lines; ++line) {
    const element* from = static_cast<const element*>(x.from) + line * x.from_stride;
    element* to = static_cast<element*>(x.to) + line * x.to_stride;
    for (std::size_t c = 0; c < masks.size(); ++c) {
      if (masks[c] == 0) continue;
      const int kept = std::popcount(masks[c]);
      compress(from + lanes * static_cast<std::int64_t>(c), to, static_cast<lane_mask>(masks[c]), kept);
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
/// lines of `inner` elements) back to back into the destination lines, when the
/// CPU has AVX-512; false (nothing done) otherwise.
template <std::size_t ElementBytes>
[[nodiscard]] bool compress_kept_elements(const masked_lines& x, std::span<const index_range> keep,
                                          std::int64_t inner) {
#if defined(NASHPRUNE_SIMD_X86)
  if constexpr (ElementBytes == 4 || ElementBytes == 8) {
    if (!detected_cpu_features().avx512) return false;
    constexpr std::int64_t lanes = 64 / static_cast<std::int64_t>(ElementBytes);
    const auto masks = kept_lane_masks(keep, inner, lanes);
    compress_avx512::compress_lines<std::conditional_t<ElementBytes == 4, float, double>>(x, masks);
    return true;
  }
#endif
  (void)x, (void)keep, (void)inner;
  return false;
}

}  // namespace detail
NASHPRUNE_END_NAMESPACE
