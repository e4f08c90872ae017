// nashprune/detail/byte_copy.hpp — copying runs of bytes for tensor gathers.
//
// Not part of the public API. A gather writes an output far larger than the
// caches in many pieces (one per kept range and row). Ordinary stores first read
// each destination cache line (read-for-ownership), so a gather would move 1.5×
// the bytes a large memcpy moves (memcpy switches to non-temporal stores above a
// size threshold, per call, which the small pieces never reach). copy_bytes
// therefore uses non-temporal stores itself when the caller says the whole
// output is large; finish_copies() orders them before the gather returns.
// Without SSE2 (non-x86 targets) both fall back to memcpy.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "../config.hpp"

NASHPRUNE_BEGIN_NAMESPACE
namespace detail {

/// Outputs at least this large are written with non-temporal stores: they do
/// not fit the caches, so reading their lines before writing them is wasted.
inline constexpr std::int64_t streaming_threshold_bytes = std::int64_t{8} << 20;

inline void copy_bytes(std::byte* to, const std::byte* from, std::size_t n, bool streaming) {
#if defined(__SSE2__)
  if (streaming && n >= 64) {
    const std::size_t head = (16 - (reinterpret_cast<std::uintptr_t>(to) & 15)) & 15;
    std::memcpy(to, from, head);
    std::size_t i = head;
    for (; i + 64 <= n; i += 64) {
      const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(from + i));
      const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(from + i + 16));
      const __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(from + i + 32));
      const __m128i d = _mm_loadu_si128(reinterpret_cast<const __m128i*>(from + i + 48));
      _mm_stream_si128(reinterpret_cast<__m128i*>(to + i), a);
      _mm_stream_si128(reinterpret_cast<__m128i*>(to + i + 16), b);
      _mm_stream_si128(reinterpret_cast<__m128i*>(to + i + 32), c);
      _mm_stream_si128(reinterpret_cast<__m128i*>(to + i + 48), d);
    }
    for (; i + 16 <= n; i += 16) {
      _mm_stream_si128(reinterpret_cast<__m128i*>(to + i), _mm_loadu_si128(reinterpret_cast<const __m128i*>(from + i)));
    }
    std::memcpy(to + i, from + i, n - i);
    return;
  }
#else
  (void)streaming;
#endif
  std::memcpy(to, from, n);
}

/// Makes non-temporal stores visible in program order to later loads and stores.
inline void finish_copies() {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

}  // namespace detail
NASHPRUNE_END_NAMESPACE
