// nashprune/detail/compress_copy.hpp — gathering many short runs of every line
// (single MLP channels kept along a row-major line) with AVX-512 compress.
//
// Not part of the public API. A keep-list of short runs (a few elements each)
// costs a copy call or a loop turn per run; the same keep pattern applies to
// every line, though, so it is turned once into one bit mask per 16 (float) or
// 8 (double) elements of a line, and each line is then gathered a vector at a
// time: load, vcompress of the kept lanes into the low lanes, store, advance by
// the popcount (compress_lines says why the loads and stores are plain).
//
// An output beyond the caches is written with non-temporal stores instead
// (line_stream): with plain stores every destination cache line is first read
// for ownership, so the gather moves source (1/0.7 of the output when 70 % of
// single channels are kept: every source line holds a kept one) + 2 × output,
// against 2 × output + 1 for a memcpy below its non-temporal threshold
// (glibc 2.36 on a Zen 4: 240 MiB, above this 165 MB f32 ffn_down output).
// On an AMD Zen 4 (family 25 model 17) that took f32 4096 × 14336, 70 % of
// single columns, from 0.78-0.99 to 0.98-1.18 of a memcpy of the output; a
// loop that only reads the whole source and writes the output with
// non-temporal stores reached 0.94-1.20 in the same runs.
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
inline void stream(float* to, __m512 v) { _mm512_stream_ps(to, v); }
inline void stream(double* to, __m512d v) { _mm512_stream_pd(to, v); }
inline __m512 blend(__mmask16 mask, __m512 a, __m512 b) { return _mm512_mask_blend_ps(mask, a, b); }
inline __m512d blend(__mmask8 mask, __m512d a, __m512d b) { return _mm512_mask_blend_pd(mask, a, b); }
/// Lane j of the result is lane (j - by) mod lanes of v. (The masked form with
/// every lane set: GCC's unmasked one reads an uninitialized vector, which
/// -Werror=maybe-uninitialized refuses.)
inline __m512 rotate_up(__m512 v, int by) {
  const __m512i lanes = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
  const __m512i from = _mm512_and_epi32(_mm512_sub_epi32(lanes, _mm512_set1_epi32(by)), _mm512_set1_epi32(15));
  return _mm512_mask_permutexvar_ps(v, static_cast<__mmask16>(0xFFFF), from, v);
}
inline __m512d rotate_up(__m512d v, int by) {
  const __m512i lanes = _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0);
  const __m512i from = _mm512_and_epi64(_mm512_sub_epi64(lanes, _mm512_set1_epi64(by)), _mm512_set1_epi64(7));
  return _mm512_mask_permutexvar_pd(v, static_cast<__mmask8>(0xFF), from, v);
}

/// Packs vectors of kept lanes (each in its low lanes) back to back into a
/// destination run and writes every whole cache line of it with one
/// non-temporal store: the line is assembled in a register, the new lanes
/// rotated up behind those already held, and the lanes that overflow it start
/// the next line. Only the run's first and last cache lines, shared with what
/// lies around it, are written with masked plain stores.
template <typename Element>
class line_stream {
 public:
  using vector = decltype(load(static_cast<const Element*>(nullptr)));
  using lane_mask = std::conditional_t<sizeof(Element) == 4, __mmask16, __mmask8>;
  static constexpr int lanes = 64 / static_cast<int>(sizeof(Element));
  static constexpr lane_mask all = static_cast<lane_mask>((1u << lanes) - 1u);

  /// Starts a run at `to` (aligned to an element).
  void start(Element* to) {
    const auto lead = static_cast<int>(reinterpret_cast<std::uintptr_t>(to) & 63) / static_cast<int>(sizeof(Element));
    line_ = to - lead;
    filled_ = lead;
    owned_ = static_cast<lane_mask>(all << lead);
  }

  /// Appends the low `kept` lanes of `packed`.
  void put(vector packed, int kept) {
    const vector rotated = rotate_up(packed, filled_);
    held_ = blend(static_cast<lane_mask>(all << filled_), held_, rotated);
    filled_ += kept;
    if (filled_ < lanes) return;
    if (owned_ == all) {
      stream(line_, held_);
    } else {
      store(line_, held_, owned_);
      owned_ = all;
    }
    line_ += lanes;
    filled_ -= lanes;
    held_ = rotated;
  }

  /// Writes the run's last, partial cache line.
  void finish() {
    store(line_, held_, static_cast<lane_mask>(owned_ & ((1u << filled_) - 1u)));
  }

 private:
  Element* line_ = nullptr;  // 64-byte aligned: the cache line being assembled
  int filled_ = 0;           // its lanes held so far, counting those before the run's start
  lane_mask owned_ = all;    // its lanes that belong to the run
  vector held_{};
};

/// Each line a vector at a time: load, compress the kept lanes into the low
/// ones, store the whole vector and advance by the kept count, so the lanes
/// past it are overwritten by the next store. Masked loads and stores are used
/// only where a plain one would leave the line (its last partial vector; the
/// last vectors of the destination line): on AMD Zen 5 a masked load and store
/// per vector made this gather 4x slower than plain ones (0.25 against 1.0 of
/// a memcpy of the bytes written, f32 4096 × 14336 keeping 70 % of single columns).
/// When `streaming`, the packed vectors go through a line_stream instead.
template <typename Element>
void compress_lines(const masked_lines& x, std::span<const std::uint32_t> masks, std::int64_t inner, bool streaming) {
  using lane_mask = std::conditional_t<sizeof(Element) == 4, __mmask16, __mmask8>;
  constexpr std::int64_t lanes = 64 / static_cast<std::int64_t>(sizeof(Element));
  const auto whole_vectors = static_cast<std::size_t>(inner / lanes);
  std::int64_t kept_per_line = 0;
  for (const std::uint32_t mask : masks) kept_per_line += std::popcount(mask);
  if (streaming) {
    // One run when the destination lines are contiguous, else one per line.
    const bool contiguous = x.to_stride == kept_per_line;
    line_stream<Element> out;
    for (std::int64_t line = 0; line < x.lines; ++line) {
      const Element* from = static_cast<const Element*>(x.from) + line * x.from_stride;
      if (line == 0 || !contiguous) {
        if (line > 0) out.finish();
        out.start(static_cast<Element*>(x.to) + line * x.to_stride);
      }
      for (std::size_t c = 0; c < masks.size(); ++c) {
        const auto mask = static_cast<lane_mask>(masks[c]);
        if (mask == 0) continue;
        const Element* source = from + lanes * static_cast<std::int64_t>(c);
        out.put(compress(c < whole_vectors ? load(source) : load(source, mask), mask), std::popcount(masks[c]));
      }
    }
    if (x.lines > 0) out.finish();
    _mm_sfence();
    return;
  }
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
/// `target` (resolved) is AVX-512; false (nothing done) otherwise. `streaming`
/// (an output beyond the caches): whole cache lines by non-temporal stores.
template <std::size_t ElementBytes>
[[nodiscard]] bool compress_kept_elements(simd_target target, const masked_lines& x,
                                          std::span<const index_range> keep, std::int64_t inner, bool streaming) {
#if defined(NASHPRUNE_SIMD_X86)
  if constexpr (ElementBytes == 4 || ElementBytes == 8) {
    if (target != simd_target::avx512) return false;
    constexpr std::int64_t lanes = 64 / static_cast<std::int64_t>(ElementBytes);
    const auto masks = kept_lane_masks(keep, inner, lanes);
    compress_avx512::compress_lines<std::conditional_t<ElementBytes == 4, float, double>>(x, masks, inner, streaming);
    return true;
  }
#endif
  (void)target, (void)x, (void)keep, (void)inner, (void)streaming;
  return false;
}

}  // namespace detail
NASHPRUNE_END_NAMESPACE
