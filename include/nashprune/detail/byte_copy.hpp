// nashprune/detail/byte_copy.hpp — copying runs of bytes for tensor gathers.
//
// Not part of the public API. A gather writes an output far larger than the
// caches in many pieces (one per kept range and row). Ordinary stores first read
// each destination cache line (read-for-ownership), so a gather would move 1.5×
// the bytes a large memcpy moves (memcpy switches to non-temporal stores above a
// size threshold, per call, which the small pieces never reach). copy_bytes
// therefore uses non-temporal stores itself when the caller says the whole
// output is large; finish_copies() orders them before the gather returns.
// The stores are as wide as the target allows (AVX-512, AVX2, else SSE2; the
// caller passes a resolved simd_target, detail/simd_dispatch.hpp). Without SSE2
// (non-x86 targets) both fall back to memcpy.
//
// gather_line_spans is the one byte gather (lines × spans of each line) under
// every raw and typed gather of tensor_slicing.hpp. A large output may be
// written through a streaming_writer (non-temporal stores, every destination
// cache line written by one kind of store; short spans may instead be
// assembled into whole cache lines in registers, assemble_line_spans), and its
// source read in one of two ways across the removed gaps: prefetched ahead of the copy (span_prefetcher),
// or read through (every cache line of a gap shorter than read_through_bytes is
// loaded, so the hardware prefetcher sees one unbroken stream). Which is fastest
// depends on the CPU and on the sizes of spans and gaps: on an AMD Zen 4,
// streaming with prefetch made head-column and q4_K row gathers 1.3-1.5x
// faster than plain copies; on a Zen 5 it was 1.2-1.4x slower, because each
// jump over a gap of 1 KiB or more halves that core's read bandwidth (20 to
// 10 GB/s for 12 KiB spans with 4 KiB gaps), while streaming and reading through
// the gaps is the fastest there. So it is decided by a timed probe once per
// process and kind of gather (fastest_way_slot): the first large gather of a
// kind copies its twelve pieces by each way in turn (the pieces are its own
// output, no extra work) and the fastest way is kept.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
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
// Streaming loops with whole-vector non-temporal stores, one per instruction
// set: a 64-byte store fills a cache line at once, so the write-combining buffer
// is flushed whole and no line is ever read for ownership; narrower stores need
// two or four per line and more of them in flight.
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
/// from `from` to `to` on `target` (resolved: detail/simd_dispatch.hpp): once `to` is aligned to it, `from` must be
/// too, or every load would straddle two cache lines (a 544-byte q8_0 head
/// span 32 bytes off runs ~2x slower with 64-byte vectors than with 32-byte ones).
[[nodiscard]] inline std::size_t streaming_width(const std::byte* to, const std::byte* from, simd_target target) {
#if defined(NASHPRUNE_SIMD_X86)
  const std::size_t widest = target == simd_target::avx512 ? 64 : target == simd_target::avx2_fma ? 32 : 16;
  const auto offset = static_cast<std::size_t>(reinterpret_cast<std::uintptr_t>(to) - reinterpret_cast<std::uintptr_t>(from));
  for (std::size_t width = widest; width > 16; width /= 2) {
    if (offset % width == 0) return width;
  }
  return offset % 16 == 0 ? 16 : widest;
#else
  (void)to, (void)from, (void)target;
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
inline void copy_bytes(std::byte* to, const std::byte* from, std::size_t n, bool streaming, simd_target target) {
#if defined(__SSE2__)
  if (streaming && n >= 64) {
    std::size_t i = bytes_to_alignment(to, 16, n);
    std::memcpy(to, from, i);
    const std::size_t width = streaming_width(to, from, target);
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
  (void)streaming, (void)target;
#endif
  std::memcpy(to, from, n);
}

/// Makes non-temporal stores visible in program order to later loads and stores.
inline void finish_copies() {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

/// A run of bytes within a line: [offset, offset + length).
struct byte_span {
  std::int64_t offset;
  std::int64_t length;
};

/// The bytes a gather of sorted, disjoint `spans` keeps and the bytes of the gaps
/// between them (what it skips), the two quantities its strategy depends on.
struct span_totals {
  std::int64_t kept = 0;
  std::int64_t gaps = 0;
};
[[nodiscard]] inline span_totals totals_of(std::span<const byte_span> spans) {
  span_totals t;
  for (std::size_t i = 0; i < spans.size(); ++i) {
    t.kept += spans[i].length;
    if (i > 0) t.gaps += spans[i].offset - (spans[i - 1].offset + spans[i - 1].length);
  }
  return t;
}

/// How far ahead of the copy a large gather prefetches its source, in bytes of
/// kept source. The hardware prefetcher loses the stream at every removed range
/// and needs several misses to find the next one; requests issued this far
/// ahead cover the memory latency across the jump (about 8 KiB at ~100 ns and
/// ~80 GB/s) and still leave the L2 room for the copy. Further ahead the
/// requests evict lines not yet copied (on an AMD Zen 4, f32 wo head columns:
/// 0.85-0.89 of memcpy 8 KiB ahead, 0.75-0.79 at 12 and 16 KiB).
inline constexpr std::int64_t prefetch_distance_bytes = 8192;

/// The bytes at the start of each span that a large gather prefetches: past
/// them the hardware prefetcher has found the stream, and requests for the rest
/// of a long span only cost time (q8_0 wq rows, runs of 2 MiB: 1.2 of memcpy
/// with every line requested, 1.45 without). Head columns of 2 to 6 KiB and
/// q4_K runs of a few 2304-byte rows are requested whole.
inline constexpr std::int64_t prefetch_span_bytes = 16384;

/// A large gather copies at most this many bytes between two prefetch rounds.
inline constexpr std::int64_t prefetch_step_bytes = 1024;

/// Requests the cache line holding `p` into L2 (a hint: no fault, no effect on results).
inline void prefetch_to_l2(const std::byte* p) {
#if defined(__SSE2__)
  _mm_prefetch(reinterpret_cast<const char*>(p), _MM_HINT_T1);
#elif defined(__GNUC__)
  __builtin_prefetch(p, 0, 2);
#else
  (void)p;
#endif
}

/// Walks the source bytes of a line-spans gather in copy order (line by line,
/// span by span), ahead of the copy, requesting into L2 the cache lines of the
/// first prefetch_span_bytes of each span.
class span_prefetcher {
 public:
  span_prefetcher(const std::byte* from, std::int64_t from_stride, std::int64_t lines, std::span<const byte_span> spans)
      : from_(from), from_stride_(from_stride), lines_(lines), spans_(spans) {}

  /// Requests the source through its first `bytes` bytes in copy order.
  void request_through(std::int64_t bytes) {
    while (requested_ < bytes && line_ < lines_) {
      const auto& span = spans_[span_];
      const std::byte* p = from_ + line_ * from_stride_ + span.offset + offset_;
      const std::int64_t left = span.length - offset_;
      const auto to_next_line = static_cast<std::int64_t>(64 - (reinterpret_cast<std::uintptr_t>(p) & 63));
      if (left > 0 && offset_ < prefetch_span_bytes) prefetch_to_l2(p);
      if (to_next_line < left && offset_ < prefetch_span_bytes) {
        offset_ += to_next_line;
        requested_ += to_next_line;
        continue;
      }
      requested_ += left;
      offset_ = 0;
      if (++span_ == spans_.size()) {
        span_ = 0;
        ++line_;
      }
    }
  }

  /// Bytes of source requested so far, in copy order.
  [[nodiscard]] std::int64_t requested() const { return requested_; }

 private:
  const std::byte* from_;
  std::int64_t from_stride_;
  std::int64_t lines_;
  std::span<const byte_span> spans_;
  std::int64_t line_ = 0;
  std::size_t span_ = 0;
  std::int64_t offset_ = 0;
  std::int64_t requested_ = 0;
};

/// The next piece of a large gather's copy to `to` with `left` bytes to go:
/// at most prefetch_step_bytes, ending on a 64-byte boundary of the destination
/// when it is not the last one (no cache line split between two streaming copies).
[[nodiscard]] inline std::int64_t next_piece(const std::byte* to, std::int64_t left) {
  if (left <= prefetch_step_bytes) return left;
  const auto end = reinterpret_cast<std::uintptr_t>(to) + static_cast<std::uintptr_t>(prefetch_step_bytes);
  return prefetch_step_bytes - static_cast<std::int64_t>(end & 63);
}

/// Spans shorter than this are copied inline by copy_short: a memcpy call costs
/// more than the copy (F32 MLP channels are runs of a few floats; q8_0 channel
/// blocks runs of 34 to a few hundred bytes, 1.15-1.2x faster inline than by
/// memcpy on a Zen 5).
inline constexpr std::int64_t inline_copy_bytes = 256;

/// Copies n bytes, n small, in fixed-size moves (the last one overlapping the
/// one before): the compiler turns a variable-length memcpy into a bounded
/// buffer into `rep movs`, which takes ~4x as long for pieces of ~100 bytes.
inline void copy_short(std::byte* to, const std::byte* from, std::int64_t n) {
  const auto move = [&](std::int64_t at, auto bytes) { std::memcpy(to + at, from + at, decltype(bytes)::value); };
  using std::integral_constant;
  if (n >= 32) {
    for (std::int64_t at = 0; at + 32 < n; at += 32) move(at, integral_constant<std::size_t, 32>{});
    move(n - 32, integral_constant<std::size_t, 32>{});
  } else if (n >= 8) {
    for (std::int64_t at = 0; at + 8 < n; at += 8) move(at, integral_constant<std::size_t, 8>{});
    move(n - 8, integral_constant<std::size_t, 8>{});
  } else {
    for (std::int64_t at = 0; at < n; ++at) to[at] = from[at];
  }
}

/// Writes a large gather's output with non-temporal stores, piece by piece in
/// destination order, so that no cache line is written partly by ordinary and
/// partly by non-temporal stores (on Zen 4 that costs 5x for q8_0 spans of
/// ~100 bytes). Short pieces are collected in an L1-resident buffer that mirrors
/// the destination's offset within a cache line and written out in whole
/// cache lines; long pieces are written directly from their source from the
/// first cache line boundary on, their ragged ends going through the buffer.
/// Ordinary stores remain only at the ends of each contiguous destination run.
class streaming_writer {
 public:
  /// Buffered bytes written out at once; pieces at least direct_bytes long skip the buffer.
  static constexpr std::int64_t flush_bytes = 2048;
  static constexpr std::int64_t direct_bytes = 256;

  /// Writes with the non-temporal stores of `target` (resolved).
  explicit streaming_writer(simd_target target) : target_(target) {}

  /// Makes `to` the next destination byte; what is buffered is written out
  /// first unless the new position continues it.
  void seek(std::byte* to) {
    if (to == position()) return;
    flush();
    start(to);
  }

  /// Writes n bytes from `from` at the current position and moves past them.
  void write(const std::byte* from, std::int64_t n) {
    if (n < direct_bytes) {
      append(from, n);
      return;
    }
    const auto head = static_cast<std::int64_t>((64 - (reinterpret_cast<std::uintptr_t>(position()) & 63)) & 63);
    append(from, head);
    flush();  // ends on a cache line boundary
    const std::int64_t middle = (n - head) & ~std::int64_t{63};
    copy_bytes(to_, from + head, static_cast<std::size_t>(middle), true, target_);
    start(to_ + middle);
    append(from + head + middle, n - head - middle);
  }

  /// Writes out everything buffered (the gather then calls finish_copies()).
  void flush() {
    if (end_ > begin_) copy_bytes(to_, buffer_ + begin_, static_cast<std::size_t>(end_ - begin_), true, target_);
    start(position());
  }

 private:
  [[nodiscard]] std::byte* position() const { return to_ + (end_ - begin_); }

  void start(std::byte* to) {
    to_ = to;
    begin_ = end_ = static_cast<std::int64_t>(reinterpret_cast<std::uintptr_t>(to) & 63);
  }

  /// Buffers n < direct_bytes bytes; writes out the whole cache lines once flush_bytes are buffered.
  void append(const std::byte* from, std::int64_t n) {
    copy_short(buffer_ + end_, from, n);
    end_ += n;
    if (end_ < flush_bytes) return;
    const std::int64_t whole = end_ & ~std::int64_t{63};
    copy_bytes(to_, buffer_ + begin_, static_cast<std::size_t>(whole - begin_), true, target_);
    to_ += whole - begin_;
    std::memcpy(buffer_, buffer_ + whole, static_cast<std::size_t>(end_ - whole));
    begin_ = 0;
    end_ -= whole;
  }

  alignas(64) std::byte buffer_[flush_bytes + direct_bytes + 64];
  std::byte* to_ = nullptr;
  std::int64_t begin_ = 0, end_ = 0;
  simd_target target_;
};

/// Removed gaps up to this long are read through by a read-through gather: the
/// bytes cost less than restarting the hardware prefetcher's stream after a
/// jump, which at ~10 GB/s lost (Zen 5, gaps of 1-4 KiB) is worth ~10-20 KiB
/// of copying. Longer gaps are jumped over.
inline constexpr std::int64_t read_through_bytes = 65536;

/// How a large gather copies: through a streaming_writer or with plain stores;
/// prefetching its source ahead (span_prefetcher) or reading through the
/// removed gaps (read_through_bytes). All off: plain copies, each span a
/// memcpy (copy_short below inline_copy_bytes).
struct gather_strategy {
  bool stream;
  bool prefetch;
  bool read_through = false;
  bool assemble = false;  // short spans: assemble_line_spans where it runs, else through a streaming_writer
  [[nodiscard]] bool plain() const { return !stream && !prefetch && !read_through && !assemble; }
};

/// What a large gather of `spans` per line may gain from: streaming stores when
/// the spans are long on average, and help across the removed gaps when they
/// are long on average (short gaps leave the hardware prefetcher on the
/// stream). Short spans with short gaps call for plain copies; their other way
/// is assemble_line_spans (~100-byte q8_0 blocks on a Zen 4, family 25 model
/// 17: plain copies 0.89-1.02 of memcpy, the streaming writer's line buffer
/// 0.66-0.92, assembled lines 1.16-1.32).
/// The strategy returned prefetches across long gaps; gather_line_spans may
/// read through them instead (large_gather_ways).
[[nodiscard]] inline gather_strategy choose_gather_strategy(std::span<const byte_span> spans) {
  const auto [kept, gaps] = totals_of(spans);
  const auto count = static_cast<std::int64_t>(spans.size());
  return {kept >= streaming_writer::direct_bytes * count,
          count > 1 && gaps >= streaming_writer::direct_bytes * (count - 1)};
}

}  // namespace detail
NASHPRUNE_END_NAMESPACE

#if defined(NASHPRUNE_SIMD_X86)
NASHPRUNE_TARGET_REGION_BEGIN("avx512f,avx512bw")
NASHPRUNE_BEGIN_NAMESPACE
namespace detail::assemble_avx512 {

/// The 64-bit lane mask of bytes [begin, begin + count) of a vector, count <= 64 - begin.
inline __mmask64 byte_lanes(std::int64_t begin, std::int64_t count) {
  const std::uint64_t low = count >= 64 ? ~std::uint64_t{0} : (std::uint64_t{1} << count) - 1;
  return static_cast<__mmask64>(low << begin);
}

/// Copies the spans of each line back to back into destination runs (one run
/// when the destination lines are contiguous, else one per line), assembling
/// every whole cache line of a run in a register and writing it with one
/// non-temporal store. Each piece of a span that falls in the line being
/// assembled is one byte-masked load from the source, placed so that its bytes
/// land in their lanes (the masked-off lanes are neither read nor faulted),
/// ORed into the line: no byte is stored twice and no stored byte is reloaded
/// (a line buffer in L1 reloads lines still in the store queue: slower than
/// plain copies for q8_0 blocks). The run's first and last cache lines, shared
/// with what lies around it, get masked plain stores.
inline void assemble_line_spans(const std::byte* from, std::int64_t from_stride, std::byte* to, std::int64_t to_stride,
                                std::int64_t lines, std::span<const byte_span> spans) {
  std::int64_t kept = 0;
  for (const auto& span : spans) kept += span.length;
  const bool contiguous = to_stride == kept;
  __m512i held = _mm512_setzero_si512();
  std::byte* line_start = nullptr;  // 64-byte aligned: the cache line being assembled
  std::int64_t filled = 0;          // its bytes so far, counting those before the run's start
  __mmask64 owned = 0;              // its bytes that belong to the run
  const auto write_partial = [&] { _mm512_mask_storeu_epi8(line_start, owned & byte_lanes(0, filled), held); };
  for (std::int64_t line = 0; line < lines; ++line) {
    if (line == 0 || !contiguous) {
      if (line > 0) write_partial();
      std::byte* run = to + line * to_stride;
      filled = static_cast<std::int64_t>(reinterpret_cast<std::uintptr_t>(run) & 63);
      line_start = run - filled;
      owned = byte_lanes(filled, 64 - filled);
      held = _mm512_setzero_si512();
    }
    const std::byte* source_line = from + line * from_stride;
    for (const auto& span : spans) {
      auto source = reinterpret_cast<std::uintptr_t>(source_line + span.offset);
      for (std::int64_t left = span.length; left > 0;) {
        const std::int64_t take = std::min(left, 64 - filled);
        const auto placed = reinterpret_cast<const void*>(source - static_cast<std::uintptr_t>(filled));
        held = _mm512_or_si512(held, _mm512_maskz_loadu_epi8(byte_lanes(filled, take), placed));
        source += static_cast<std::uintptr_t>(take);
        left -= take;
        filled += take;
        if (filled < 64) continue;
        if (owned == byte_lanes(0, 64)) {
          _mm512_stream_si512(reinterpret_cast<__m512i*>(line_start), held);
        } else {
          _mm512_mask_storeu_epi8(line_start, owned, held);
          owned = byte_lanes(0, 64);
        }
        line_start += 64;
        filled = 0;
        held = _mm512_setzero_si512();
      }
    }
  }
  if (lines > 0) write_partial();
  _mm_sfence();
}

}  // namespace detail::assemble_avx512
NASHPRUNE_END_NAMESPACE
NASHPRUNE_TARGET_REGION_END
#endif  // NASHPRUNE_SIMD_X86

NASHPRUNE_BEGIN_NAMESPACE
namespace detail {

/// Loads every cache line of the source in [from, to) (a gap the copy skips),
/// so that the hardware prefetcher keeps streaming across it.
inline void read_gap(const std::byte* from, const std::byte* to) {
  const auto first = (reinterpret_cast<std::uintptr_t>(from) + 63) & ~std::uintptr_t{63};
  for (auto line = first; line < reinterpret_cast<std::uintptr_t>(to); line += 64) {
    (void)*reinterpret_cast<const volatile std::byte*>(line);
  }
}

/// For each of `lines` lines, copies the spans of the source line back to back
/// to the start of the destination line, by `strategy` (streaming stores of
/// `target`, resolved); a streaming or prefetching strategy ends with finish_copies().
inline void copy_line_spans(const std::byte* from, std::int64_t from_stride, std::byte* to, std::int64_t to_stride,
                            std::int64_t lines, std::span<const byte_span> spans, gather_strategy strategy,
                            simd_target target) {
  if (strategy.assemble) {
#if defined(NASHPRUNE_SIMD_X86)
    if (target == simd_target::avx512 && detected_cpu_features().avx512bw) {
      return assemble_avx512::assemble_line_spans(from, from_stride, to, to_stride, lines, spans);
    }
#endif
    strategy = {true, false};
  }
  if (strategy.plain()) {
    for (std::int64_t line = 0; line < lines; ++line) {
      const std::byte* source_line = from + line * from_stride;
      std::byte* out = to + line * to_stride;
      for (const auto& span : spans) {
        if (span.length < inline_copy_bytes) {
          copy_short(out, source_line + span.offset, span.length);
        } else {
          std::memcpy(out, source_line + span.offset, static_cast<std::size_t>(span.length));
        }
        out += span.length;
      }
    }
    return;
  }
  span_prefetcher prefetcher(from, from_stride, lines, spans);
  streaming_writer writer(target);
  std::int64_t copied = 0;
  const std::byte* read_end = spans.empty() ? from : from + spans.front().offset;  // source read so far, in copy order
  for (std::int64_t line = 0; line < lines; ++line) {
    const std::byte* source_line = from + line * from_stride;
    std::byte* out = to + line * to_stride;
    writer.seek(out);
    for (const auto& span : spans) {
      const std::byte* source = source_line + span.offset;
      if (strategy.read_through && source > read_end && source - read_end <= read_through_bytes) {
        read_gap(read_end, source);
      }
      read_end = source + span.length;
      for (std::int64_t done = 0; done < span.length;) {
        // Pieces only pace the prefetch requests; without them a span is one piece.
        const std::int64_t piece = strategy.prefetch ? next_piece(out, span.length - done) : span.length - done;
        if (strategy.prefetch) prefetcher.request_through(copied + piece + prefetch_distance_bytes);
        if (strategy.stream) {
          writer.write(source + done, piece);
        } else {
          std::memcpy(out, source + done, static_cast<std::size_t>(piece));
        }
        out += piece;
        done += piece;
        copied += piece;
      }
    }
  }
  writer.flush();
  finish_copies();
}

/// The ways a large gather whose spans call for `strategy`
/// (choose_gather_strategy) may copy: plain copies; the strategy, or cache
/// lines assembled in registers and streamed (assemble_line_spans) where it is
/// plain copies; and, when it prefetches across long gaps,
/// the same stores reading through the gaps instead.
struct large_gather_ways {
  gather_strategy way[3];
  int count;
};

[[nodiscard]] inline large_gather_ways ways_of_large_gather(gather_strategy strategy) {
  const gather_strategy plain{false, false};
  if (strategy.plain()) return {{plain, {false, false, false, true}, plain}, 2};
  if (!strategy.prefetch) return {{plain, strategy, strategy}, 2};
  return {{plain, strategy, {strategy.stream, false, true}}, 3};
}

/// Per kind of large gather on this CPU: the fastest way found by the last
/// probe (1 + its index into ways_of_large_gather, 0 before the first) plus
/// way_slot_count_unit times the number of gathers of that kind so far.
/// A kind is the strategy the spans call for and the binary orders of
/// magnitude of their mean length and mean gap (64 bytes to 2 MiB and beyond):
/// which way wins depends on both (Zen 5: reading through 2 KiB gaps between
/// 4 KiB spans is 1.7x faster than prefetching, while rows of megabytes
/// separated by megabytes copy alike every way).
inline constexpr int large_gather_size_classes = 16;
inline constexpr std::uint32_t way_slot_count_unit = 4;  // divides 2^32: the count wraps harmlessly
/// Gathers of a kind between two probes: a probing gather copies part of its
/// output the slower ways, which costs less than 2 % over this many.
inline constexpr std::uint32_t reprobe_period = 32;
inline std::atomic<std::uint32_t>
    fastest_large_gather_way[4][large_gather_size_classes][large_gather_size_classes] = {};

/// The size class of a mean of `bytes` bytes: floor(log2) from 64 bytes on, capped.
[[nodiscard]] inline int large_gather_size_class(std::int64_t bytes) {
  int size_class = 0;
  for (std::int64_t b = bytes >> 6; b > 1 && size_class + 1 < large_gather_size_classes; b >>= 1) ++size_class;
  return size_class;
}

/// The slot holding the fastest way for gathers of `spans` that call for `strategy`.
[[nodiscard]] inline std::atomic<std::uint32_t>& fastest_way_slot(std::span<const byte_span> spans, gather_strategy strategy) {
  const auto [kept, gaps] = totals_of(spans);
  const auto count = std::max<std::int64_t>(1, static_cast<std::int64_t>(spans.size()));
  const int kind = (strategy.stream ? 2 : 0) + (strategy.prefetch ? 1 : 0);
  return fastest_large_gather_way[kind][large_gather_size_class(kept / count)]
                                 [large_gather_size_class(count > 1 ? gaps / (count - 1) : 0)];
}

/// Pieces a probing gather is cut into: six or four timed each way.
inline constexpr int probe_pieces = 12;

/// A gather cut into probe_pieces pieces of consecutive lines, or, for a single
/// line (packed rows), of consecutive spans; copy_piece(k, strategy) copies
/// piece k and returns its bytes. Returns false when there is too little to cut.
class gather_pieces {
 public:
  gather_pieces(const std::byte* from, std::int64_t from_stride, std::byte* to, std::int64_t to_stride,
                std::int64_t lines, std::span<const byte_span> spans, simd_target target)
      : from_(from), from_stride_(from_stride), to_(to), to_stride_(to_stride), lines_(lines), spans_(spans),
        target_(target) {}

  [[nodiscard]] bool cuttable() const {
    if (spans_.empty()) return false;
    return lines_ >= probe_pieces || (lines_ == 1 && static_cast<std::int64_t>(spans_.size()) >= probe_pieces);
  }

  /// Faults in the pages piece k reads and writes (a read of the source and a
  /// rewrite of the same destination byte per page), so that its timed copy
  /// measures the copy: a fresh buffer's page faults cost more than the copy.
  void touch_piece(int k) const {
    for_piece(k, [](const std::byte* from, std::int64_t from_bytes, std::byte* to, std::int64_t to_bytes) {
      for (std::int64_t at = 0; at < from_bytes; at += page_bytes) {
        (void)*static_cast<const volatile std::byte*>(from + at);
      }
      for (std::int64_t at = 0; at < to_bytes; at += page_bytes) {
        volatile std::byte* byte = to + at;
        *byte = *byte;
      }
    });
  }

  std::int64_t copy_piece(int k, gather_strategy strategy) {
    if (lines_ >= probe_pieces) {
      const std::int64_t begin = lines_ * k / probe_pieces, end = lines_ * (k + 1) / probe_pieces;
      copy_line_spans(from_ + begin * from_stride_, from_stride_, to_ + begin * to_stride_, to_stride_, end - begin,
                      spans_, strategy, target_);
      std::int64_t bytes = 0;
      for (const auto& span : spans_) bytes += span.length;
      return bytes * (end - begin);
    }
    const auto count = static_cast<std::int64_t>(spans_.size());
    const auto begin = static_cast<std::size_t>(count * k / probe_pieces);
    const auto end = static_cast<std::size_t>(count * (k + 1) / probe_pieces);
    std::int64_t offset = 0, bytes = 0;
    for (std::size_t i = 0; i < end; ++i) (i < begin ? offset : bytes) += spans_[i].length;
    copy_line_spans(from_, from_stride_, to_ + offset, to_stride_, 1, spans_.subspan(begin, end - begin), strategy,
                    target_);
    return bytes;
  }

 private:
  static constexpr std::int64_t page_bytes = 4096;

  /// Calls visit(from, from_bytes, to, to_bytes) for each contiguous run of
  /// piece k: per line, the source from its first kept byte to its last, and
  /// the destination line; a single line, the source and destination of its spans.
  template <typename Visit>
  void for_piece(int k, Visit&& visit) const {
    if (lines_ >= probe_pieces) {
      std::int64_t kept = 0;
      for (const auto& span : spans_) kept += span.length;
      const std::int64_t first = spans_.front().offset, last = spans_.back().offset + spans_.back().length;
      for (std::int64_t line = lines_ * k / probe_pieces; line < lines_ * (k + 1) / probe_pieces; ++line) {
        visit(from_ + line * from_stride_ + first, last - first, to_ + line * to_stride_, kept);
      }
      return;
    }
    const auto count = static_cast<std::int64_t>(spans_.size());
    const auto begin = static_cast<std::size_t>(count * k / probe_pieces);
    const auto end = static_cast<std::size_t>(count * (k + 1) / probe_pieces);
    std::int64_t offset = 0;
    for (std::size_t i = 0; i < begin; ++i) offset += spans_[i].length;
    for (std::size_t i = begin; i < end; ++i) {
      visit(from_ + spans_[i].offset, spans_[i].length, to_ + offset, spans_[i].length);
      offset += spans_[i].length;
    }
  }

  const std::byte* from_;
  std::int64_t from_stride_;
  std::byte* to_;
  std::int64_t to_stride_;
  std::int64_t lines_;
  std::span<const byte_span> spans_;
  simd_target target_;
};

/// Copies a large gather in probe_pieces pieces, each by one of `ways` in
/// turn (ABCABC...), timing each, and returns the index of the fastest per
/// byte (the least time per byte of each: a piece slowed by the machine does
/// not decide, and a burst of load spans pieces of every way).
[[nodiscard]] inline int probe_large_gather(gather_pieces& pieces, const large_gather_ways& ways) {
  double least[3] = {1e300, 1e300, 1e300};
  for (int k = 0; k < probe_pieces; ++k) {
    const int way = k % ways.count;
    pieces.touch_piece(k);
    const auto start = std::chrono::steady_clock::now();
    const std::int64_t bytes = pieces.copy_piece(k, ways.way[way]);
    const std::chrono::duration<double> seconds = std::chrono::steady_clock::now() - start;
    if (bytes > 0) least[way] = std::min(least[way], seconds.count() / static_cast<double>(bytes));
  }
  return static_cast<int>(std::min_element(least, least + ways.count) - least);
}

/// For each of `lines` lines, copies the spans of the source line back to back
/// to the start of the destination line. A gather that is not `large` copies
/// plainly. A `large` one (an output beyond the caches) copies the way that is
/// fastest on this CPU for its kind (ways_of_large_gather): the first large
/// gather of each kind in the process, and every reprobe_period-th after it,
/// times its own pieces each way (no extra work: every piece is part of the
/// copy) and the fastest is kept.
/// Streaming stores are those of `target` (resolved).
inline void gather_line_spans(const std::byte* from, std::int64_t from_stride, std::byte* to, std::int64_t to_stride,
                              std::int64_t lines, std::span<const byte_span> spans, bool large, simd_target target) {
  if (!large) return copy_line_spans(from, from_stride, to, to_stride, lines, spans, {false, false}, target);
  const auto strategy = choose_gather_strategy(spans);
  const auto ways = ways_of_large_gather(strategy);
  auto& slot = fastest_way_slot(spans, strategy);
  const std::uint32_t seen = slot.fetch_add(way_slot_count_unit, std::memory_order_relaxed);
  int way = static_cast<int>(seen % way_slot_count_unit) - 1;
  if (way < 0 || seen / way_slot_count_unit % reprobe_period == 0) {
    gather_pieces pieces(from, from_stride, to, to_stride, lines, spans, target);
    if (pieces.cuttable()) {
      const int fastest = probe_large_gather(pieces, ways);
      // Replaces the way, keeps the count (other threads may have added to it).
      std::uint32_t current = slot.load(std::memory_order_relaxed);
      while (!slot.compare_exchange_weak(current,
                                         current - current % way_slot_count_unit + static_cast<std::uint32_t>(fastest + 1),
                                         std::memory_order_relaxed)) {
      }
      return;
    }
    if (way < 0) way = strategy.plain() ? 0 : 1;  // the strategy the spans call for, until a gather of this kind can be timed
  }
  copy_line_spans(from, from_stride, to, to_stride, lines, spans, ways.way[way], target);
}

}  // namespace detail
NASHPRUNE_END_NAMESPACE
