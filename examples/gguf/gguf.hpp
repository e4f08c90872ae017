// GGUF v3 files: metadata values, a bounds-checked mmap reader with zero-copy
// tensor views, and a streaming writer that replaces its output atomically.
//
// Layout (ggml/docs/gguf.md): magic "GGUF", u32 version, u64 tensor count,
// u64 metadata count, the metadata (key string, u32 type, value), the tensor
// table (name, u32 n_dims, u64 dims[n_dims], u32 ggml type, u64 offset), padding
// to general.alignment (default 32), then the tensor data, each tensor starting
// at a multiple of the alignment. Strings are u64 length + bytes; arrays are
// u32 element type + u64 count + elements (arrays of arrays allowed).
//
// This is tool code (examples/): all file I/O of nashprune lives here, never
// in include/. Every malformed input raises gguf::format_error naming the file
// and the byte offset of the problem.
#pragma once

#include <nashprune/ggml_types.hpp>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace gguf {

/// A malformed, truncated or hostile file ("FILE: offset N: what"). Derives from
/// std::invalid_argument so the tool reports it as bad input (exit code 2).
struct format_error : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

inline constexpr std::uint32_t default_alignment = 32;
inline constexpr std::string_view alignment_key = "general.alignment";
/// Tensors have at most this many dimensions (GGML_MAX_DIMS).
inline constexpr std::size_t max_dims = 4;

enum class value_type : std::uint32_t {
  uint8 = 0, int8 = 1, uint16 = 2, int16 = 3, uint32 = 4, int32 = 5, float32 = 6,
  boolean = 7, string = 8, array = 9, uint64 = 10, int64 = 11, float64 = 12,
};

[[nodiscard]] std::string_view type_name(value_type type);
[[nodiscard]] bool is_integer(value_type type);
[[nodiscard]] bool is_signed(value_type type);
/// Bytes one value of `type` occupies in a file, at least (strings and arrays: their headers).
[[nodiscard]] std::uint64_t min_encoded_size(value_type type);

/// One metadata value. Integers are held widened (unsigned in `std::uint64_t`,
/// signed in `std::int64_t`), floats in double; `type` keeps the on-disk type so
/// a value round-trips bit-exactly.
struct value {
  value_type type = value_type::uint32;
  value_type element_type = value_type::uint8;  // arrays only
  std::variant<std::uint64_t, std::int64_t, double, bool, std::string, std::vector<value>> data{std::uint64_t{0}};

  [[nodiscard]] static value integer(value_type type, std::int64_t v);
  [[nodiscard]] static value u32(std::uint32_t v) { return integer(value_type::uint32, v); }
  [[nodiscard]] static value i32(std::int32_t v) { return integer(value_type::int32, v); }
  [[nodiscard]] static value u64(std::uint64_t v);
  [[nodiscard]] static value f32(float v);
  [[nodiscard]] static value f64(double v);
  [[nodiscard]] static value boolean(bool v);
  [[nodiscard]] static value string(std::string v);
  [[nodiscard]] static value array(value_type element_type, std::vector<value> items);
  /// An array of integers of one type (e.g. per-layer head counts).
  [[nodiscard]] static value int_array(value_type element_type, const std::vector<std::int64_t>& items);
  [[nodiscard]] static value f32_array(const std::vector<float>& items);
  [[nodiscard]] static value string_array(const std::vector<std::string>& items);

  [[nodiscard]] bool is_array() const { return type == value_type::array; }
  /// Any integer type as int64 (throws std::invalid_argument for other types or
  /// an unsigned value above INT64_MAX).
  [[nodiscard]] std::int64_t as_int() const;
  [[nodiscard]] double as_float() const;  // float32/float64 or any integer
  [[nodiscard]] bool as_bool() const;
  [[nodiscard]] const std::string& as_string() const;
  [[nodiscard]] const std::vector<value>& as_array() const;

  friend bool operator==(const value&, const value&) = default;
};

/// Human-readable form, arrays abbreviated after `max_items` entries.
[[nodiscard]] std::string to_string(const value& v, std::size_t max_items = 8);

using metadata = std::vector<std::pair<std::string, value>>;

/// Finds `key` in `kv` (nullptr when absent).
[[nodiscard]] const value* find(const metadata& kv, std::string_view key);
/// Sets `key` (replacing in place, or appending at the end).
void set(metadata& kv, std::string key, value v);
/// Removes `key` if present.
void erase(metadata& kv, std::string_view key);

/// A tensor's shape and type. dims[0] is the row length (contiguous), the rest
/// count rows, as ggml's ne[].
struct tensor_spec {
  std::string name;
  std::vector<std::int64_t> dims;
  nashprune::ggml_type type = nashprune::ggml_type::f32;

  [[nodiscard]] std::int64_t elements() const;
  [[nodiscard]] std::int64_t rows() const;  // product of dims[1..]
  [[nodiscard]] std::uint64_t row_bytes() const;
  [[nodiscard]] std::uint64_t bytes() const;
};

/// A tensor of an open file: its spec, its offset within the data section and a
/// view of its bytes inside the mapping (valid while the reader lives).
struct tensor_view : tensor_spec {
  std::uint64_t offset = 0;
  std::span<const std::byte> data;
};

/// Where bytes of a mapped file lie in that file (for in-kernel copies).
struct file_extent {
  int fd = -1;
  std::uint64_t offset = 0;
};

/// A parsed GGUF file. `open` maps the file read-only; `parse` reads a buffer the
/// caller keeps alive (fuzzing, tests). Both check every count, length, type,
/// alignment and tensor extent before use.
class reader {
 public:
  [[nodiscard]] static reader open(const std::filesystem::path& path);
  [[nodiscard]] static reader parse(std::span<const std::byte> bytes, std::string name);

  [[nodiscard]] const std::string& name() const { return name_; }
  [[nodiscard]] std::uint32_t version() const { return version_; }
  [[nodiscard]] std::uint64_t alignment() const { return alignment_; }
  [[nodiscard]] std::uint64_t data_offset() const { return data_offset_; }
  [[nodiscard]] std::uint64_t file_size() const { return bytes_.size(); }
  [[nodiscard]] const gguf::metadata& metadata() const { return metadata_; }
  [[nodiscard]] const value* find(std::string_view key) const { return gguf::find(metadata_, key); }
  [[nodiscard]] const std::vector<tensor_view>& tensors() const { return tensors_; }
  [[nodiscard]] const tensor_view* find_tensor(std::string_view name) const;
  /// Like find_tensor, but a missing tensor is a format_error naming it.
  [[nodiscard]] const tensor_view& tensor(std::string_view name) const;
  /// Drops the mapped pages of `bytes` (a tensor already consumed) from this
  /// process's resident set, so streaming a model never holds all of it; the
  /// data stays readable (it is paged in again from the file if touched).
  void release(std::span<const std::byte> bytes) const;
  /// Maps the pages of `bytes` in one call (MADV_POPULATE_READ) before they are
  /// read whole, instead of one page fault per few pages; a no-op where unsupported.
  void populate(std::span<const std::byte> bytes) const;
  /// The open file and offset of `bytes` when they lie in this reader's mapping
  /// (nothing for a parsed buffer), so a writer can copy them file to file.
  [[nodiscard]] std::optional<file_extent> extent_of(std::span<const std::byte> bytes) const;

 private:
  std::shared_ptr<const void> mapping_;  // keeps an mmap and its descriptor alive (empty for `parse`)
  int fd_ = -1;
  std::span<const std::byte> bytes_;
  std::string name_;
  std::uint32_t version_ = 0;
  std::uint64_t alignment_ = default_alignment;
  std::uint64_t data_offset_ = 0;
  gguf::metadata metadata_;
  std::vector<tensor_view> tensors_;

  void parse_all();
};

/// Streams a GGUF file: `begin` writes the header and tensor table, then each
/// tensor's bytes are appended in table order with `write` (in as many pieces as
/// the caller likes), and `commit` pads, flushes and renames the temporary file
/// (created beside the output) onto the output. Destroying an uncommitted writer
/// deletes the temporary file, so an interrupted run leaves nothing behind.
class writer {
 public:
  struct options {
    bool force = false;                              // replace an existing output
    std::vector<std::filesystem::path> protect;      // inputs never to overwrite
  };

  /// Pieces at least this large are worth an in-kernel copy (copy_file_range
  /// pays a set-up per call; below this, writing from memory is cheaper).
  static constexpr std::size_t kernel_copy_size = std::size_t{16} << 10;

  writer(std::filesystem::path output, options opts);
  ~writer();
  writer(const writer&) = delete;
  writer& operator=(const writer&) = delete;

  /// Alignment comes from general.alignment when present (UINT32, power of two).
  void begin(const gguf::metadata& kv, std::vector<tensor_spec> tensors);
  void write(std::span<const std::byte> bytes);
  /// Writes `bytes`, which also lie at `from` in an open file: large pieces are
  /// copied file to file by the kernel (copy_file_range, as cp does: no pass
  /// through this process's memory), small ones or where the kernel refuses
  /// are written from `bytes`.
  void copy(std::span<const std::byte> bytes, const file_extent& from);
  /// Writes the pieces one after the other with as few system calls as possible
  /// (writev straight from the callers' memory: no copy through the buffer).
  void write_gathered(std::span<const std::span<const std::byte>> pieces);
  /// Appends `count` zero bytes to the current tensor.
  void write_zeros(std::uint64_t count);
  void commit();

  [[nodiscard]] std::uint64_t bytes_written() const { return position_; }
  /// Index of the tensor the next `write` goes to (== tensor count when all are complete).
  [[nodiscard]] std::size_t current_tensor() const { return current_; }

 private:
  std::filesystem::path output_;
  std::filesystem::path temporary_;
  int fd_ = -1;
  std::vector<std::byte> buffer_;
  std::uint64_t position_ = 0;
  std::uint64_t alignment_ = default_alignment;
  std::vector<tensor_spec> tensors_;
  std::size_t current_ = 0;
  std::uint64_t current_written_ = 0;
  bool begun_ = false;

  bool copy_in_kernel_ = true;  // until copy_file_range refuses once

  // Preallocates the file's final size (header + aligned tensors) on disk.
  void reserve_space(std::uint64_t header_bytes);
  void put(std::span<const std::byte> bytes);
  // Writes bytes to the file at once (the buffer must be empty).
  void write_through(std::span<const std::byte> bytes);
  // How many of `wanted` bytes still fit the current tensor (throws past the last one).
  std::size_t room_in_current_tensor(std::size_t wanted) const;
  void flush();
  void pad_to_alignment();
  void advance_completed_tensors();
};

/// Encodes a value (type tag not included) the way GGUF stores it; used by the
/// writer and by tests that build hand-crafted files.
void encode(std::vector<std::byte>& out, const value& v);
void encode_string(std::vector<std::byte>& out, std::string_view s);
template <typename T>
void encode_pod(std::vector<std::byte>& out, T v) {
  const auto* p = reinterpret_cast<const std::byte*>(&v);
  out.insert(out.end(), p, p + sizeof(T));
}
/// The whole header (magic .. padding before the data section) of a file with
/// these metadata and tensors at their aligned offsets.
[[nodiscard]] std::vector<std::byte> encode_header(const gguf::metadata& kv,
                                                   const std::vector<tensor_spec>& tensors,
                                                   std::uint64_t alignment);
/// The alignment `kv` asks for (general.alignment or the default); throws
/// std::invalid_argument for a wrong type or a value that is not a power of two.
[[nodiscard]] std::uint64_t alignment_of(const gguf::metadata& kv);

[[nodiscard]] constexpr std::uint64_t align_up(std::uint64_t offset, std::uint64_t alignment) {
  return (offset + alignment - 1) / alignment * alignment;
}

}  // namespace gguf
