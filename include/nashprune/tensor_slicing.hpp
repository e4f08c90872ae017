// nashprune/tensor_slicing.hpp — gather the kept rows or columns of a tensor.
//
// Seed: nash-head-pruning-llama-cpp.md §4.5 ("Slice Attention Tensors": copy only
// the kept heads; wq loses rows, wo loses columns), llama-pruning-toolkit.en.md
// (q/k/v/gate/up lose output rows, o/down lose input columns, all kept together).
//
// A keep-list is a list of index ranges, disjoint and ascending, so the pruned
// tensor keeps the original order of its heads or channels. attention_geometry's
// kept_ranges(plan, role) gives them for a head plan; for MLP channels or other
// units, validate_keep_list + unit_ranges (attention_geometry.hpp) merge kept
// units into maximal runs, each copied in one go.
//
// Two forms:
//  * typed: any Eigen dense matrix or vector (Map/Ref with strides, either
//    storage order) into a caller-provided output of the kept size, or into a
//    new matrix of the source's storage order. Vectors (biases, per-head norm
//    weights) use gather_entries.
//  * raw bytes of a 2-D ggml tensor (ne0 = n_cols elements per row, ne1 = n_rows
//    rows, row_stride = nb1 bytes): whole rows of any type; column ranges of a
//    block-quantized type only when every kept range, hence every removed range,
//    starts and ends on a block boundary (a block's bytes cannot be split).
//    A column range of a ggml row occupies bytes [begin/bs·ts, end/bs·ts).
//
// Every gather reads the source once, line by line in memory order. Gathers on
// contiguous storage copy bytes (detail/byte_copy.hpp: large outputs prefetch
// across removed ranges and stream long runs with non-temporal stores where
// that beats plain copies on the CPU); short runs of typed columns use AVX-512
// compress or an element loop. A trailing simd_target argument forces the
// instruction set of the copies (tests, benchmarks); the bytes written are the same.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "attention_geometry.hpp"
#include "config.hpp"
#include "detail/byte_copy.hpp"
#include "detail/compress_copy.hpp"
#include "detail/index_ranges.hpp"
#include "detail/validate.hpp"
#include "ggml_types.hpp"

NASHPRUNE_BEGIN_NAMESPACE

namespace detail {

inline void require_disjoint(std::span<const std::byte> source, std::span<const std::byte> destination) {
  const auto* s = source.data();
  const auto* d = destination.data();
  const bool overlap = !source.empty() && !destination.empty() && std::less<>()(s, d + destination.size()) &&
                       std::less<>()(d, s + source.size());
  require(!overlap, "destination", "overlaps the source bytes");
}

/// The bytes a direct-access matrix or vector spans in memory.
template <typename Derived>
[[nodiscard]] std::span<const std::byte> storage_of(const Eigen::MatrixBase<Derived>& m) {
  if (m.size() == 0) return {};
  const Eigen::Index last = (m.outerSize() - 1) * m.outerStride() + (m.innerSize() - 1) * m.innerStride();
  return {reinterpret_cast<const std::byte*>(m.derived().data()),
          static_cast<std::size_t>(last + 1) * sizeof(typename Derived::Scalar)};
}

/// A gather into memory that overlaps its source would read what it already
/// wrote: rejected whenever both sides expose their storage.
template <typename DIn, typename DOut>
void require_no_alias(const Eigen::MatrixBase<DIn>& source, const Eigen::MatrixBase<DOut>& destination) {
  if constexpr ((static_cast<unsigned>(DIn::Flags) & Eigen::DirectAccessBit) != 0 &&
                (static_cast<unsigned>(DOut::Flags) & Eigen::DirectAccessBit) != 0) {
    require_disjoint(storage_of(source), storage_of(destination));
  }
}

/// Segments shorter than this are too short for a copy call: typed gathers whose
/// segments are this short on average copy element by element (or compress).
inline constexpr std::int64_t short_segment_bytes = 64;

/// Whether a gather writing `bytes` bytes is large: beyond the caches, so it
/// prefetches its source and streams its stores (detail/byte_copy.hpp).
[[nodiscard]] inline bool is_large_output(std::int64_t bytes) { return bytes >= streaming_threshold_bytes; }

/// Copies the kept lines (ranges of line indices, lines of `line_bytes` bytes)
/// of a source to consecutive lines of a destination. When both are packed
/// each range is a single run of bytes, so the prefetch runs ahead across the
/// removed ranges.
inline void gather_lines(const std::byte* from, std::int64_t from_stride, std::byte* to, std::int64_t to_stride,
                         std::int64_t line_bytes, std::span<const index_range> keep, simd_target target) {
  const bool large = is_large_output(total_size(keep) * line_bytes);
  if (from_stride == line_bytes && to_stride == line_bytes) {
    std::vector<byte_span> runs;
    runs.reserve(keep.size());
    for (const auto& r : keep) runs.push_back({r.begin * line_bytes, r.size * line_bytes});
    gather_line_spans(from, 0, to, 0, 1, runs, large, target);
    return;
  }
  const byte_span whole_line[] = {{0, line_bytes}};
  std::int64_t at = 0;
  for (const auto& r : keep) {
    gather_line_spans(from + r.begin * from_stride, from_stride, to + at * to_stride, to_stride, r.size, whole_line,
                      large, target);
    at += r.size;
  }
}

/// Both matrices expose their storage, in the same order.
template <typename DIn, typename DOut>
inline constexpr bool same_order_storage = (static_cast<unsigned>(DIn::Flags) & Eigen::DirectAccessBit) != 0 &&
                                           (static_cast<unsigned>(DOut::Flags) & Eigen::DirectAccessBit) != 0 &&
                                           static_cast<bool>(DIn::IsRowMajor) == static_cast<bool>(DOut::IsRowMajor);

/// The outer-axis gather on raw storage (kept units are whole storage lines),
/// when both matrices store their lines contiguously in the same order: byte
/// copies of the kept lines. False (nothing done) for other layouts.
template <typename DIn, typename DOut>
bool copy_lines_directly(const Eigen::MatrixBase<DIn>& source, std::span<const index_range> keep,
                         Eigen::MatrixBase<DOut>& out, simd_target target) {
  if constexpr (same_order_storage<DIn, DOut>) {
    if (source.innerStride() != 1 || out.innerStride() != 1) return false;
    constexpr auto scalar_bytes = static_cast<std::int64_t>(sizeof(typename DIn::Scalar));
    gather_lines(reinterpret_cast<const std::byte*>(source.derived().data()), source.outerStride() * scalar_bytes,
                 reinterpret_cast<std::byte*>(out.derived().data()), out.outerStride() * scalar_bytes,
                 source.innerSize() * scalar_bytes, keep, target);
    return true;
  } else {
    (void)target;
    return false;
  }
}

/// The inner-axis gather on raw storage, when both matrices store their lines
/// contiguously in the same order: byte copies of the kept segments, or an
/// element loop (AVX-512 compress where the CPU has it, detail/compress_copy.hpp)
/// when the segments are short (a call per few elements costs more than the
/// copy). False (nothing done) for other layouts.
template <typename DIn, typename DOut>
bool copy_segments_directly(const Eigen::MatrixBase<DIn>& source, std::span<const index_range> keep,
                            Eigen::MatrixBase<DOut>& out, simd_target target) {
  if constexpr (same_order_storage<DIn, DOut>) {
    using Scalar = typename DIn::Scalar;
    if (source.innerStride() != 1 || out.innerStride() != 1) return false;
    const Scalar* from = source.derived().data();
    Scalar* to = out.derived().data();
    const Eigen::Index lines = DIn::IsRowMajor ? source.rows() : source.cols();
    constexpr auto scalar_bytes = static_cast<std::int64_t>(sizeof(Scalar));
    std::vector<byte_span> spans;
    spans.reserve(keep.size());
    for (const auto& r : keep) spans.push_back({r.begin * scalar_bytes, r.size * scalar_bytes});
    const std::int64_t line_bytes = total_size(keep) * scalar_bytes;
    if (line_bytes >= short_segment_bytes * static_cast<std::int64_t>(keep.size())) {
      gather_line_spans(reinterpret_cast<const std::byte*>(from), source.outerStride() * scalar_bytes,
                        reinterpret_cast<std::byte*>(to), out.outerStride() * scalar_bytes, lines, spans,
                        is_large_output(lines * line_bytes), target);
      return true;
    }
    const Eigen::Index inner = DIn::IsRowMajor ? source.cols() : source.rows();
    if (compress_kept_elements<sizeof(Scalar)>(target, {from, source.outerStride(), to, out.outerStride(), lines},
                                               keep, inner, is_large_output(lines * line_bytes))) {
      return true;
    }
    for (Eigen::Index line = 0; line < lines; ++line) {
      const Scalar* source_line = from + line * source.outerStride();
      Scalar* destination = to + line * out.outerStride();
      for (const auto& r : keep) {
        for (std::int64_t k = 0; k < r.size; ++k) *destination++ = source_line[r.begin + k];
      }
    }
    return true;
  } else {
    (void)target;
    return false;
  }
}

/// The instruction set a gather's copies run on: `requested` resolved on this
/// CPU (detail/simd_dispatch.hpp); forcing one exists for tests and benchmarks.
[[nodiscard]] inline simd_target slicing_target(simd_target requested) {
  return choose_simd_target(requested, detected_cpu_features());
}

template <typename DIn, typename DOut>
void gather_along(const Eigen::MatrixBase<DIn>& source, matrix_axis axis, std::span<const index_range> keep,
                  const Eigen::MatrixBase<DOut>& destination, simd_target requested) {
  static_assert(std::is_same_v<typename DIn::Scalar, typename DOut::Scalar>, "nashprune: gather keeps the scalar type");
  const bool rows = axis == matrix_axis::rows;
  validate_ranges("keep", keep, rows ? source.rows() : source.cols(), true);
  const std::int64_t kept = total_size(keep);
  require_size("destination", destination.rows(), rows ? kept : source.rows(), "row count");
  require_size("destination", destination.cols(), rows ? source.cols() : kept, "column count");
  require_no_alias(source, destination);
  auto& out = const_cast<Eigen::MatrixBase<DOut>&>(destination);
  const simd_target target = slicing_target(requested);
  constexpr bool row_major = DIn::IsRowMajor;
  if (rows == row_major) {
    // The kept units are whole storage lines of the source: copy each range as a block.
    if (copy_lines_directly(source, keep, out, target)) return;
    Eigen::Index at = 0;
    for (const auto& r : keep) {
      if (rows) {
        out.middleRows(at, r.size) = source.middleRows(r.begin, r.size);
      } else {
        out.middleCols(at, r.size) = source.middleCols(r.begin, r.size);
      }
      at += r.size;
    }
    return;
  }
  // The kept units lie along the source's storage lines: walk each line once,
  // copying its kept segments, so the source streams through memory in order.
  if (copy_segments_directly(source, keep, out, target)) return;
  const Eigen::Index outer = row_major ? source.rows() : source.cols();
  for (Eigen::Index o = 0; o < outer; ++o) {
    Eigen::Index at = 0;
    for (const auto& r : keep) {
      if constexpr (row_major) {
        out.row(o).segment(at, r.size) = source.row(o).segment(r.begin, r.size);
      } else {
        out.col(o).segment(at, r.size) = source.col(o).segment(r.begin, r.size);
      }
      at += r.size;
    }
  }
}

template <typename Derived>
using gathered_matrix = Eigen::Matrix<typename Derived::Scalar, Eigen::Dynamic, Eigen::Dynamic,
                                      Derived::IsRowMajor ? Eigen::RowMajor : Eigen::ColMajor>;

}  // namespace detail

// ---------------------------------------------------------------------------
// Typed gathers.

/// destination = the kept rows of source, in order. destination must have
/// Σ sizes rows and source's column count; it must not alias source. `target`
/// forces the instruction set of the copies (the result is the same bytes).
template <typename DIn, typename DOut>
void gather_rows(const Eigen::MatrixBase<DIn>& source, std::span<const index_range> keep,
                 const Eigen::MatrixBase<DOut>& destination, simd_target target = simd_target::automatic) {
  detail::gather_along(source, matrix_axis::rows, keep, destination, target);
}

/// destination = the kept columns of source, in order.
template <typename DIn, typename DOut>
void gather_cols(const Eigen::MatrixBase<DIn>& source, std::span<const index_range> keep,
                 const Eigen::MatrixBase<DOut>& destination, simd_target target = simd_target::automatic) {
  detail::gather_along(source, matrix_axis::cols, keep, destination, target);
}

/// The kept rows of source as a new matrix of the source's storage order.
template <typename DIn>
[[nodiscard]] detail::gathered_matrix<DIn> gather_rows(const Eigen::MatrixBase<DIn>& source,
                                                       std::span<const index_range> keep,
                                                       simd_target target = simd_target::automatic) {
  detail::validate_ranges("keep", keep, source.rows(), true);
  detail::gathered_matrix<DIn> out(detail::total_size(keep), source.cols());
  gather_rows(source, keep, out, target);
  return out;
}

/// The kept columns of source as a new matrix of the source's storage order.
template <typename DIn>
[[nodiscard]] detail::gathered_matrix<DIn> gather_cols(const Eigen::MatrixBase<DIn>& source,
                                                       std::span<const index_range> keep,
                                                       simd_target target = simd_target::automatic) {
  detail::validate_ranges("keep", keep, source.cols(), true);
  detail::gathered_matrix<DIn> out(source.rows(), detail::total_size(keep));
  gather_cols(source, keep, out, target);
  return out;
}

/// The kept entries of a vector (a bias, per-head norm weights, per-head gates)
/// into destination, a vector of Σ sizes entries.
template <typename DIn, typename DOut>
void gather_entries(const Eigen::MatrixBase<DIn>& source, std::span<const index_range> keep,
                    const Eigen::MatrixBase<DOut>& destination) {
  static_assert(std::is_same_v<typename DIn::Scalar, typename DOut::Scalar>, "nashprune: gather keeps the scalar type");
  detail::require(source.cols() == 1 || source.rows() == 1, "source", "must be a vector");
  detail::require(destination.cols() == 1 || destination.rows() == 1, "destination", "must be a vector");
  detail::validate_ranges("keep", keep, source.size(), true);
  detail::require_size("destination", destination.size(), detail::total_size(keep));
  detail::require_no_alias(source, destination);
  auto& out = const_cast<Eigen::MatrixBase<DOut>&>(destination);
  Eigen::Index at = 0;
  for (const auto& r : keep) {
    // reshaped(): the entries in order, whether the vector is a row or a column.
    out.reshaped().segment(at, r.size) = source.reshaped().segment(r.begin, r.size);
    at += r.size;
  }
}

/// The kept entries of a vector as a new column vector.
template <typename DIn>
[[nodiscard]] Eigen::Matrix<typename DIn::Scalar, Eigen::Dynamic, 1> gather_entries(
    const Eigen::MatrixBase<DIn>& source, std::span<const index_range> keep) {
  detail::validate_ranges("keep", keep, source.size(), true);
  Eigen::Matrix<typename DIn::Scalar, Eigen::Dynamic, 1> out(detail::total_size(keep));
  gather_entries(source, keep, out);
  return out;
}

// ---------------------------------------------------------------------------
// Raw bytes of ggml tensors (for example mmapped GGUF tensor data).

/// A 2-D ggml tensor in memory: n_rows rows (ne1) of n_cols elements (ne0) of
/// `type`, consecutive rows row_stride bytes apart (nb1; 0 means packed, i.e.
/// row_bytes(type, n_cols)). `Byte` is const std::byte for a source.
template <typename Byte>
struct basic_ggml_matrix {
  ggml_type type = ggml_type::f32;
  std::int64_t n_cols = 0;
  std::int64_t n_rows = 0;
  std::int64_t row_stride = 0;
  std::span<Byte> bytes;
};
using ggml_matrix_view = basic_ggml_matrix<const std::byte>;
using ggml_matrix_span = basic_ggml_matrix<std::byte>;

namespace detail {

struct checked_ggml_layout {
  std::int64_t row_bytes;
  std::int64_t row_stride;
};

/// Validates a ggml matrix description against its buffer: a known type, whole
/// blocks per row, a stride that holds a row, and a buffer that holds every row.
template <typename Byte>
[[nodiscard]] checked_ggml_layout check_ggml_matrix(std::string_view argument, const basic_ggml_matrix<Byte>& m) {
  const std::string what(argument);
  require(m.n_rows >= 0, what + ".n_rows", "must not be negative, got " + std::to_string(m.n_rows));
  require(m.n_cols >= 0, what + ".n_cols", "must not be negative, got " + std::to_string(m.n_cols));
  const auto& t = traits_of(m.type);
  if (m.n_cols % t.block_size != 0) {
    fail_argument(what + ".n_cols", "row length " + std::to_string(m.n_cols) + " is not a multiple of the " +
                                        std::string(t.name) + " block size " + std::to_string(t.block_size));
  }
  const std::int64_t bytes_per_row = row_bytes(m.type, m.n_cols);
  const std::int64_t stride = m.row_stride == 0 ? bytes_per_row : m.row_stride;
  if (stride < bytes_per_row) {
    fail_argument(what + ".row_stride", std::to_string(stride) + " bytes is shorter than a row of " +
                                            std::to_string(bytes_per_row) + " bytes");
  }
  const std::int64_t needed = m.n_rows == 0 ? 0 : (m.n_rows - 1) * stride + bytes_per_row;
  if (static_cast<std::int64_t>(m.bytes.size()) < needed) {
    fail_argument(what + ".bytes",
                  "holds " + std::to_string(m.bytes.size()) + " bytes, the rows need " + std::to_string(needed));
  }
  return {bytes_per_row, stride};
}

inline void require_same_type(ggml_type source, ggml_type destination) {
  if (source != destination) {
    fail_argument("destination.type", std::string(traits_of(destination).name) + " differs from the source type " +
                                          std::string(traits_of(source).name));
  }
}

}  // namespace detail

namespace detail {

/// Every kept column range of a block-quantized type must start and end on a block boundary.
inline void require_block_aligned(ggml_type type, std::span<const index_range> keep) {
  const auto& t = traits_of(type);
  for (std::size_t i = 0; i < keep.size(); ++i) {
    if (keep[i].begin % t.block_size != 0 || keep[i].size % t.block_size != 0) {
      fail_argument("keep", "column range " + describe_range(keep[i]) + " at " +
                                at_index(static_cast<std::int64_t>(i)) + " does not start and end on a " +
                                std::string(t.name) + " block boundary (" + std::to_string(t.block_size) +
                                " columns): the removed columns must be whole blocks");
    }
  }
}

struct checked_ggml_gather {
  checked_ggml_layout source;
  checked_ggml_layout destination;
};

/// All checks of a raw gather along `axis`: both layouts, the keep-list, block
/// alignment of column ranges, matching type and kept shape, disjoint buffers.
inline checked_ggml_gather check_ggml_gather(const ggml_matrix_view& source, std::span<const index_range> keep,
                                             matrix_axis axis, const ggml_matrix_span& destination) {
  const bool rows = axis == matrix_axis::rows;
  const auto in = check_ggml_matrix("source", source);
  validate_ranges("keep", keep, rows ? source.n_rows : source.n_cols, true);
  if (!rows) require_block_aligned(source.type, keep);
  require_same_type(source.type, destination.type);
  const std::int64_t kept = total_size(keep);
  require_size("destination.n_rows", destination.n_rows, rows ? kept : source.n_rows, "row count");
  require_size("destination.n_cols", destination.n_cols, rows ? source.n_cols : kept, "row length");
  const auto out = check_ggml_matrix("destination", destination);
  require_disjoint(source.bytes, destination.bytes);
  return {in, out};
}

/// A column gather of a one-element-per-block type (F32, I32, F64) whose kept
/// runs are a few elements long on average (single MLP channels) goes through
/// the element compress path (detail/compress_copy.hpp) when the CPU has it and
/// both buffers hold whole, aligned elements; false (nothing done) otherwise.
inline bool compress_short_spans(const ggml_matrix_view& source, std::span<const index_range> keep,
                                 const checked_ggml_layout& in, const ggml_matrix_span& destination,
                                 const checked_ggml_layout& out, simd_target target) {
  const auto& t = traits_of(source.type);
  const std::int64_t size = t.type_size;
  if (t.block_size != 1 || total_size(keep) * size >= short_segment_bytes * static_cast<std::int64_t>(keep.size())) {
    return false;
  }
  const auto aligned = [size](const void* p, std::int64_t stride) {
    return reinterpret_cast<std::uintptr_t>(p) % static_cast<std::uintptr_t>(size) == 0 && stride % size == 0;
  };
  if (!aligned(source.bytes.data(), in.row_stride) || !aligned(destination.bytes.data(), out.row_stride)) return false;
  const masked_lines lines{source.bytes.data(), in.row_stride / size, destination.bytes.data(), out.row_stride / size,
                           source.n_rows};
  const bool large = is_large_output(source.n_rows * out.row_bytes);
  if (size == 4) return compress_kept_elements<4>(target, lines, keep, source.n_cols, large);
  if (size == 8) return compress_kept_elements<8>(target, lines, keep, source.n_cols, large);
  return false;
}

}  // namespace detail

/// Copies the kept rows of `source` into `destination` (same type and n_cols,
/// n_rows = Σ sizes, its own row_stride). Any ggml type: a row is whole blocks.
/// `target` forces the instruction set of the copies (the same bytes result).
inline void gather_ggml_rows(const ggml_matrix_view& source, std::span<const index_range> keep,
                             const ggml_matrix_span& destination, simd_target target = simd_target::automatic) {
  const auto [in, out] = detail::check_ggml_gather(source, keep, matrix_axis::rows, destination);
  detail::gather_lines(source.bytes.data(), in.row_stride, destination.bytes.data(), out.row_stride, in.row_bytes,
                       keep, detail::slicing_target(target));
}

/// Copies the kept column ranges of every row of `source` into `destination`
/// (same type and n_rows, n_cols = Σ sizes). For a block-quantized type every
/// kept range must start and end on a multiple of the block size; otherwise
/// std::invalid_argument names the range and the block size.
inline void gather_ggml_cols(const ggml_matrix_view& source, std::span<const index_range> keep,
                             const ggml_matrix_span& destination, simd_target target = simd_target::automatic) {
  const auto [in, out] = detail::check_ggml_gather(source, keep, matrix_axis::cols, destination);
  const simd_target resolved = detail::slicing_target(target);
  const auto& t = traits_of(source.type);
  // Byte spans of the kept ranges within a row, computed once; then each row is
  // walked once, in memory order.
  std::vector<detail::byte_span> spans;
  spans.reserve(keep.size());
  for (const auto& r : keep)
    spans.push_back({r.begin / t.block_size * t.type_size, r.size / t.block_size * t.type_size});
  if (detail::compress_short_spans(source, keep, in, destination, out, resolved)) return;
  detail::gather_line_spans(source.bytes.data(), in.row_stride, destination.bytes.data(), out.row_stride,
                            source.n_rows, spans, detail::is_large_output(source.n_rows * out.row_bytes), resolved);
}

/// The kept rows of `source`, packed (row_stride = row_bytes), as a new buffer.
[[nodiscard]] inline std::vector<std::byte> gather_ggml_rows(const ggml_matrix_view& source,
                                                             std::span<const index_range> keep,
                                                             simd_target target = simd_target::automatic) {
  detail::validate_ranges("keep", keep, source.n_rows, true);
  const std::int64_t rows = detail::total_size(keep);
  std::vector<std::byte> bytes(static_cast<std::size_t>(rows * detail::check_ggml_matrix("source", source).row_bytes));
  gather_ggml_rows(source, keep, ggml_matrix_span{source.type, source.n_cols, rows, 0, bytes}, target);
  return bytes;
}

/// The kept columns of `source`, packed, as a new buffer.
[[nodiscard]] inline std::vector<std::byte> gather_ggml_cols(const ggml_matrix_view& source,
                                                             std::span<const index_range> keep,
                                                             simd_target target = simd_target::automatic) {
  (void)detail::check_ggml_matrix("source", source);
  detail::validate_ranges("keep", keep, source.n_cols, true);
  const std::int64_t cols = detail::total_size(keep);
  const auto& t = traits_of(source.type);
  // A misaligned range is reported by gather_ggml_cols; size the buffer by whole blocks meanwhile.
  const std::int64_t bytes_per_row = (cols + t.block_size - 1) / t.block_size * t.type_size;
  std::vector<std::byte> bytes(static_cast<std::size_t>(source.n_rows * bytes_per_row));
  gather_ggml_cols(source, keep, ggml_matrix_span{source.type, cols, source.n_rows, bytes_per_row, bytes}, target);
  return bytes;
}

NASHPRUNE_END_NAMESPACE
