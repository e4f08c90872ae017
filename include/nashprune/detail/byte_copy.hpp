// nashprune/detail/byte_copy.hpp — copying runs of bytes for tensor gathers.
//
// Not part of the public API. A gather writes an output far larger than the
// caches in many pieces (one per kept range and row). Ordinary stores first read
// each destination cache line (read-for-ownership), so a gather would move 1.5×
// the bytes a large memcpy moves (memcpy switches to non-temporal stores above a
// size threshold, per call, which the small pieces never reach). copy_bytes
// therefore uses non-temporal stores itself when the caller says the whole
// output is large; finish_copies() orders them before the gather returns.
// The stores are as wide as the CPU allows (AVX-512, AVX2, else SSE2; chosen at
// run time, detail/simd_dispatch.hpp). Without SSE2 (non-x86 targets) both fall
// back to memcpy.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "../config.hpp"
#include "simd_dispatch.hpp"

NASHPRUNE_BEGIN_NAMESPACE
namespace detail {

/// Outputs at least this large are written with non-temporal stores: they do
/// not fit the caches, so reading their lines before writing them is wasted.
inline constexpr std::int64_t streaming_threshold_bytes = std::int64_t{8} << 20;

/// Bytes of a streaming copy until `to` reaches an `alignment` boundary (at most n).
[[nodiscard]] inline std::size_t bytes_to_alignment(const std::byte* to, std::size_t alignment, std::size_t n) {
  const std::size_t head = (alignment - (reinterpret_cast<std::uintptr_t>(to) & (alignment - 1))) & (alignment - 1);
  return head < n ? head : n;
}

}  // namespace detail
NASHPRUNE_END_NAMESPACE

#if defined(NASHPRUNE_SIMD_X86)
// Streaming loops with whole-vector non-temporal stores, the widest the CPU has:
// on the AMD EPYC (Zen 4) test machine a contiguous 48 MiB copy with 64-byte
// stores takes 2/3 of glibc memcpy's time, and the f32 head-column gather of
// bench_slicing went from 0.62 to 0.80 of memcpy with them.
NASHPRUNE_TARGET_REGION_BEGIN("avx512f")
NASHPRUNE_BEGIN_NAMESPACE
namespace detail::copy_avx512 {
inline void stream_64(std::byte* to, const std::byte* from) {
  _mm512_stream_si512(reinterpret_cast<__m512i*>(to), _mm512_loadu_si512(from));
}
#include "byte_copy_simd.inl"
}  // namespace detail::copy_avx512
NASHPRUNE_END_NAMESPACE
NASHPRUNE_TARGET_REGION_END

NASHPRUNE_TARGET_REGION_BEGIN("avx2")
NASHPRUNE_BEGIN_NAMESPACE
namespace detail::copy_avx2 {
inline void stream_64(std::byte* to, const std::byte* from) {
  const __m256i low = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(from));
  const __m256i high = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(from + 32));
  _mm256_stream_si256(reinterpret_cast<__m256i*>(to), low);
  _mm256_stream_si256(reinterpret_cast<__m256i*>(to + 32), high);
}
#include "byte_copy_simd.inl"
}  // namespace detail::copy_avx2
NASHPRUNE_END_NAMESPACE
NASHPRUNE_TARGET_REGION_END
#endif  // NASHPRUNE_SIMD_X86

NASHPRUNE_BEGIN_NAMESPACE
namespace detail {

/// The widest non-temporal store (64, 32 or 16 bytes) worth using for a copy
/// from `from` to `to` on this CPU: once `to` is aligned to it, `from` must be
/// too, or every load would straddle two cache lines (a 544-byte q8_0 head
/// span 32 bytes off runs ~2x slower with 64-byte vectors than with 32-byte ones).
[[nodiscard]] inline std::size_t streaming_width(const std::byte* to, const std::byte* from) {
#if defined(NASHPRUNE_SIMD_X86)
  const auto& cpu = detected_cpu_features();
  const std::size_t widest = cpu.avx512 ? 64 : cpu.avx2_fma ? 32 : 16;
  const auto offset = static_cast<std::size_t>(reinterpret_cast<std::uintptr_t>(to) - reinterpret_cast<std::uintptr_t>(from));
  for (std::size_t width = widest; width > 16; width /= 2) {
    if (offset % width == 0) return width;
  }
  return offset % 16 == 0 ? 16 : widest;
#else
  (void)to, (void)from;
  return 16;
#endif
}

#if defined(__SSE2__)
inline void stream_16(std::byte* to, const std::byte* from) {
  _mm_stream_si128(reinterpret_cast<__m128i*>(to), _mm_loadu_si128(reinterpret_cast<const __m128i*>(from)));
}
#endif

/// Copies n bytes; when `streaming`, with non-temporal stores: ordinary stores
/// up to 16-byte alignment of `to`, 16-byte ones up to the alignment of the
/// wider streaming_width ones, and 16-byte ones and ordinary stores for the
/// tail. A cache line written partly by ordinary and partly by non-temporal
/// stores is costly (~2x for 544-byte q8_0 head spans), so the wide stores are
/// reached through 16-byte ones rather than through an ordinary head.
inline void copy_bytes(std::byte* to, const std::byte* from, std::size_t n, bool streaming) {
#if defined(__SSE2__)
  if (streaming && n >= 64) {
    std::size_t i = bytes_to_alignment(to, 16, n);
    std::memcpy(to, from, i);
    const std::size_t width = streaming_width(to, from);
    for (; i + 16 <= n && (reinterpret_cast<std::uintptr_t>(to + i) & (width - 1)) != 0; i += 16) {
      stream_16(to + i, from + i);
    }
#if defined(NASHPRUNE_SIMD_X86)
    if (width == 64) {
      i += copy_avx512::stream_blocks(to + i, from + i, n - i);
    } else if (width == 32) {
      i += copy_avx2::stream_blocks(to + i, from + i, n - i);
    }
#endif
    for (; i + 16 <= n; i += 16) stream_16(to + i, from + i);
    std::memcpy(to + i, from + i, n - i);
    return;
  }
#else
  (void)streaming;
#endif
  std::memcpy(to, from, n);
}

/// Copies n < 64 bytes as two fixed-size moves, from the start and to the end,
/// which may overlap (inlined, no call): gathers of F32 MLP channels copy runs of
/// a few floats, where a memcpy call per run costs more than the copy itself.
inline void copy_short(std::byte* to, const std::byte* from, std::size_t n) {
  const auto both_ends = [&]<std::size_t Width>(std::integral_constant<std::size_t, Width>) {
    std::memcpy(to, from, Width);
    std::memcpy(to + n - Width, from + n - Width, Width);
  };
  if (n >= 32) {
    both_ends(std::integral_constant<std::size_t, 32>{});
  } else if (n >= 16) {
    both_ends(std::integral_constant<std::size_t, 16>{});
  } else if (n >= 8) {
    both_ends(std::integral_constant<std::size_t, 8>{});
  } else if (n >= 4) {
    both_ends(std::integral_constant<std::size_t, 4>{});
  } else {
    for (std::size_t i = 0; i < n; ++i) to[i] = from[i];
  }
}

/// Makes non-temporal stores visible in program order to later loads and stores.
inline void finish_copies() {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

}  // namespace detail
NASHPRUNE_END_NAMESPACE
