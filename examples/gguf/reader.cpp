// The GGUF reader: every field is bounds-checked before it is read, every count
// is checked against the bytes that remain before anything is allocated, and
// decoded metadata is capped, so hostile input ends in a format_error naming the
// offset, never a crash, a hang or a huge allocation.
#include "gguf/gguf.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>
#include <numeric>
#include <unordered_set>

namespace gguf {
namespace {

// Decoded metadata may use at most this much memory (real models need tens of
// MB, mostly the vocabulary); arrays of arrays deeper than this are refused.
constexpr std::uint64_t metadata_memory_budget = std::uint64_t{1} << 29;
// Reservations from counts in the file are capped; vectors grow past this as
// entries are actually read.
constexpr std::uint64_t max_reserve = 1 << 16;
constexpr int max_array_depth = 16;

class cursor {
 public:
  cursor(std::span<const std::byte> bytes, const std::string& name) : bytes_(bytes), name_(name) {}

  [[nodiscard]] std::uint64_t position() const { return pos_; }
  [[nodiscard]] std::uint64_t remaining() const { return bytes_.size() - pos_; }

  [[noreturn]] void fail(std::uint64_t offset, const std::string& what) const {
    throw format_error(name_ + ": offset " + std::to_string(offset) + ": " + what);
  }

  void need(std::uint64_t n, std::string_view what) const {
    if (n > remaining()) {
      fail(pos_, "truncated " + std::string(what) + " (needs " + std::to_string(n) + " bytes, " +
                     std::to_string(remaining()) + " left in a file of " + std::to_string(bytes_.size()) + ")");
    }
  }

  template <typename T>
  T read(std::string_view what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, bytes_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  std::string read_string(std::string_view what) {
    const std::uint64_t at = pos_;
    const auto length = read<std::uint64_t>(what);
    if (length > remaining()) {
      fail(at, std::string(what) + " length " + std::to_string(length) + " exceeds the " +
                   std::to_string(remaining()) + " bytes left");
    }
    std::string s(reinterpret_cast<const char*>(bytes_.data() + pos_), length);
    pos_ += length;
    return s;
  }

 private:
  std::span<const std::byte> bytes_;
  const std::string& name_;
  std::uint64_t pos_ = 0;
};

class metadata_parser {
 public:
  explicit metadata_parser(cursor& in) : in_(in) {}

  value_type read_type(std::string_view what) {
    const std::uint64_t at = in_.position();
    const auto raw = in_.read<std::uint32_t>(what);
    if (raw > static_cast<std::uint32_t>(value_type::float64)) in_.fail(at, "unknown value type " + std::to_string(raw));
    return static_cast<value_type>(raw);
  }

  value read_value(value_type type, int depth) {
    charge(sizeof(value));
    value v;
    v.type = type;
    switch (type) {
      case value_type::uint8: v.data = std::uint64_t{in_.read<std::uint8_t>("UINT8 value")}; break;
      case value_type::int8: v.data = std::int64_t{in_.read<std::int8_t>("INT8 value")}; break;
      case value_type::uint16: v.data = std::uint64_t{in_.read<std::uint16_t>("UINT16 value")}; break;
      case value_type::int16: v.data = std::int64_t{in_.read<std::int16_t>("INT16 value")}; break;
      case value_type::uint32: v.data = std::uint64_t{in_.read<std::uint32_t>("UINT32 value")}; break;
      case value_type::int32: v.data = std::int64_t{in_.read<std::int32_t>("INT32 value")}; break;
      case value_type::uint64: v.data = in_.read<std::uint64_t>("UINT64 value"); break;
      case value_type::int64: v.data = in_.read<std::int64_t>("INT64 value"); break;
      case value_type::float32: v.data = static_cast<double>(in_.read<float>("FLOAT32 value")); break;
      case value_type::float64: v.data = in_.read<double>("FLOAT64 value"); break;
      case value_type::boolean: {
        const std::uint64_t at = in_.position();
        const auto b = in_.read<std::uint8_t>("BOOL value");
        if (b > 1) in_.fail(at, "BOOL value " + std::to_string(b) + " is neither 0 nor 1");
        v.data = b == 1;
        break;
      }
      case value_type::string: {
        std::string s = in_.read_string("string");
        charge(s.size());
        v.data = std::move(s);
        break;
      }
      case value_type::array: {
        const std::uint64_t at = in_.position();
        if (depth >= max_array_depth) in_.fail(at, "arrays nested deeper than " + std::to_string(max_array_depth));
        v.element_type = read_type("array element type");
        const std::uint64_t count_at = in_.position();
        const auto count = in_.read<std::uint64_t>("array length");
        if (count > in_.remaining() / min_encoded_size(v.element_type)) {
          in_.fail(count_at, "array of " + std::to_string(count) + " " + std::string(type_name(v.element_type)) +
                                 " cannot fit in the " + std::to_string(in_.remaining()) + " bytes left");
        }
        if (count > metadata_memory_budget / sizeof(value)) charge(metadata_memory_budget + 1);
        charge(count * sizeof(value));
        std::vector<value> items;
        items.reserve(std::min(count, max_reserve));
        for (std::uint64_t i = 0; i < count; ++i) items.push_back(read_value(v.element_type, depth + 1));
        v.data = std::move(items);
        break;
      }
    }
    return v;
  }

  /// Counts decoded memory against the budget (tensor entries count too).
  void charge(std::uint64_t bytes) {
    if (bytes > metadata_memory_budget - used_) {
      in_.fail(in_.position(), "metadata would need more than " + std::to_string(metadata_memory_budget >> 20) +
                                   " MiB of memory");
    }
    used_ += bytes;
  }

 private:
  cursor& in_;
  std::uint64_t used_ = 0;
};

// The mapped file and its descriptor (kept open so the writer can copy tensor
// bytes file to file inside the kernel, see writer::copy).
struct mapping {
  void* address = nullptr;
  std::size_t size = 0;
  int fd = -1;
  ~mapping() {
    if (address != nullptr) ::munmap(address, size);
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

reader reader::open(const std::filesystem::path& path) {
  const std::string name = path.string();
  const int fd = ::open(name.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw std::invalid_argument(name + ": cannot open: " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int e = errno;
    ::close(fd);
    throw std::invalid_argument(name + ": cannot stat: " + std::strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw std::invalid_argument(name + ": not a regular file");
  }
  auto map = std::make_shared<mapping>();
  map->fd = fd;
  map->size = static_cast<std::size_t>(st.st_size);
  if (map->size > 0) {
    void* address = ::mmap(nullptr, map->size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (address == MAP_FAILED) throw std::runtime_error(name + ": cannot map: " + std::strerror(errno));
    map->address = address;
  }
  reader r;
  r.fd_ = fd;
  r.bytes_ = std::span<const std::byte>(static_cast<const std::byte*>(map->address), map->size);
  r.mapping_ = map;
  r.name_ = name;
  r.parse_all();
  return r;
}

namespace {

// One tensor entry of the header (name, shape, type, offset), checked against the
// names seen before, the ggml type's block size, the alignment and the file size.
tensor_view read_tensor_entry(cursor& in, metadata_parser& values, std::unordered_set<std::string>& names, std::uint64_t alignment,
                              std::uint64_t file_size) {
  const std::uint64_t at = in.position();
  tensor_view t;
  t.name = in.read_string("tensor name");
  values.charge(sizeof(tensor_view) + t.name.size());
  if (!names.insert(t.name).second) in.fail(at, "duplicate tensor name '" + t.name + "'");
  const std::uint64_t dims_at = in.position();
  const auto n_dims = in.read<std::uint32_t>("tensor dimension count");
  if (n_dims == 0 || n_dims > max_dims) {
    in.fail(dims_at, "tensor '" + t.name + "' has " + std::to_string(n_dims) + " dimensions (1 to 4 allowed)");
  }
  std::int64_t elements = 1;
  for (std::uint32_t d = 0; d < n_dims; ++d) {
    const std::uint64_t dim_at = in.position();
    const auto dim = in.read<std::uint64_t>("tensor dimension");
    if (dim == 0 || dim > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max() / elements)) {
      in.fail(dim_at, "tensor '" + t.name + "' dimension " + std::to_string(d) + " = " + std::to_string(dim) +
                          " is zero or makes the element count overflow");
    }
    elements *= static_cast<std::int64_t>(dim);
    t.dims.push_back(static_cast<std::int64_t>(dim));
  }
  const std::uint64_t type_at = in.position();
  const auto type_id = in.read<std::uint32_t>("tensor type");
  const auto traits = nashprune::find_ggml_type(type_id);
  if (!traits) in.fail(type_at, "tensor '" + t.name + "' has unknown ggml type " + std::to_string(type_id));
  t.type = traits->type;
  if (t.dims[0] % traits->block_size != 0) {
    in.fail(dims_at, "tensor '" + t.name + "' row length " + std::to_string(t.dims[0]) + " is not a multiple of the " +
                         std::string(traits->name) + " block size " + std::to_string(traits->block_size));
  }
  const std::uint64_t offset_at = in.position();
  t.offset = in.read<std::uint64_t>("tensor offset");
  if (t.offset % alignment != 0) {
    in.fail(offset_at, "tensor '" + t.name + "' offset " + std::to_string(t.offset) + " is not a multiple of the alignment " +
                           std::to_string(alignment));
  }
  // bytes = elements / block * type_size, with elements < 2^63 and type_size
  // < 512 this cannot overflow 64 bits.
  const auto bytes = static_cast<std::uint64_t>(elements / traits->block_size) * static_cast<std::uint64_t>(traits->type_size);
  if (bytes > file_size) in.fail(dims_at, "tensor '" + t.name + "' needs " + std::to_string(bytes) + " bytes, more than the whole file");
  return t;
}

// Each tensor's bytes within the data section of `data_size` bytes at
// `data_offset`: inside it and not overlapping another (errors at the entry).
void place_tensors(cursor& in, std::vector<tensor_view>& tensors, std::span<const std::byte> file, std::uint64_t data_offset,
                   std::uint64_t data_size, const std::vector<std::uint64_t>& entry_offsets) {
  std::vector<std::size_t> order(tensors.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return tensors[a].offset < tensors[b].offset; });
  std::uint64_t previous_end = 0;
  const tensor_view* previous = nullptr;
  for (std::size_t index : order) {
    auto& t = tensors[index];
    // A hostile shape can make the byte count overflow: refuse it at the tensor's entry.
    std::uint64_t row_bytes = 0;
    try {
      row_bytes = t.row_bytes();
    } catch (const std::invalid_argument& e) {
      in.fail(entry_offsets[index], "tensor '" + t.name + "': " + e.what());
    }
    const std::uint64_t rows = t.rows();
    if (rows != 0 && row_bytes > std::numeric_limits<std::uint64_t>::max() / rows) {
      in.fail(entry_offsets[index], "tensor '" + t.name + "': its byte size overflows 64 bits");
    }
    const std::uint64_t bytes = row_bytes * rows;
    if (t.offset > data_size || bytes > data_size - t.offset) {
      in.fail(entry_offsets[index], "tensor '" + t.name + "' (" + std::to_string(bytes) + " bytes at data offset " +
                                        std::to_string(t.offset) + ") extends past the end of the file (data section of " +
                                        std::to_string(data_size) + " bytes starting at " + std::to_string(data_offset) + ")");
    }
    if (previous != nullptr && t.offset < previous_end) {
      in.fail(entry_offsets[index], "tensor '" + t.name + "' at data offset " + std::to_string(t.offset) +
                                        " overlaps tensor '" + previous->name + "' ending at " + std::to_string(previous_end));
    }
    t.data = file.subspan(data_offset + t.offset, bytes);
    previous_end = t.offset + bytes;
    previous = &t;
  }
}

}  // namespace

reader reader::parse(std::span<const std::byte> bytes, std::string name) {
  reader r;
  r.bytes_ = bytes;
  r.name_ = std::move(name);
  r.parse_all();
  return r;
}

void reader::parse_all() {
  cursor in(bytes_, name_);
  const auto magic = in.read<std::uint32_t>("magic");
  if (std::memcmp(&magic, "GGUF", 4) != 0) in.fail(0, "not a GGUF file (bad magic)");
  version_ = in.read<std::uint32_t>("version");
  if (version_ != 2 && version_ != 3) in.fail(4, "unsupported GGUF version " + std::to_string(version_) + " (expected 3)");

  const auto tensor_count = in.read<std::uint64_t>("tensor count");
  const auto kv_count = in.read<std::uint64_t>("metadata count");
  // Smallest metadata entry: key length + type + one byte; smallest tensor entry:
  // name length + n_dims + one dim + type + offset.
  if (kv_count > in.remaining() / 13) in.fail(16, "metadata count " + std::to_string(kv_count) + " cannot fit in the file");
  if (tensor_count > in.remaining() / 32) in.fail(8, "tensor count " + std::to_string(tensor_count) + " cannot fit in the file");

  metadata_parser values(in);
  std::unordered_set<std::string> keys;
  metadata_.reserve(std::min(kv_count, max_reserve));
  for (std::uint64_t i = 0; i < kv_count; ++i) {
    const std::uint64_t at = in.position();
    std::string key = in.read_string("metadata key");
    if (!keys.insert(key).second) in.fail(at, "duplicate metadata key '" + key + "'");
    const value_type type = values.read_type("value type of '" + key + "'");
    value v = values.read_value(type, 0);
    metadata_.emplace_back(std::move(key), std::move(v));
  }

  if (const value* a = find(alignment_key); a != nullptr) {
    if (a->type != value_type::uint32) in.fail(24, "general.alignment must be UINT32, found " + std::string(type_name(a->type)));
    alignment_ = static_cast<std::uint64_t>(a->as_int());
    if (alignment_ == 0 || !std::has_single_bit(alignment_)) {
      in.fail(24, "general.alignment " + std::to_string(alignment_) + " is not a power of two");
    }
  }

  std::unordered_set<std::string> names;
  std::vector<std::uint64_t> entry_offsets;
  tensors_.reserve(std::min(tensor_count, max_reserve));
  for (std::uint64_t i = 0; i < tensor_count; ++i) {
    entry_offsets.push_back(in.position());
    tensors_.push_back(read_tensor_entry(in, values, names, alignment_, bytes_.size()));
  }

  data_offset_ = align_up(in.position(), alignment_);
  if (data_offset_ > bytes_.size()) in.fail(in.position(), "file ends before the data section (padding to " + std::to_string(data_offset_) + ")");
  const std::uint64_t data_size = bytes_.size() - data_offset_;

  place_tensors(in, tensors_, bytes_, data_offset_, data_size, entry_offsets);
}

const tensor_view* reader::find_tensor(std::string_view name) const {
  for (const auto& t : tensors_) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

std::optional<file_extent> reader::extent_of(std::span<const std::byte> bytes) const {
  const auto first = reinterpret_cast<std::uintptr_t>(bytes_.data());
  const auto at = reinterpret_cast<std::uintptr_t>(bytes.data());
  if (fd_ < 0 || at < first || at - first > bytes_.size() || bytes.size() > bytes_.size() - (at - first)) return std::nullopt;
  return file_extent{fd_, at - first};
}

void reader::populate(std::span<const std::byte> bytes) const {
#ifdef MADV_POPULATE_READ
  if (!mapping_ || bytes.empty()) return;
  const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto begin = reinterpret_cast<std::uintptr_t>(bytes.data()) / page * page;
  const auto end = reinterpret_cast<std::uintptr_t>(bytes.data()) + bytes.size();
  (void)::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_POPULATE_READ);  // a hint: failure only costs faults
#else
  (void)bytes;
#endif
}

void reader::release(std::span<const std::byte> bytes) const {
  if (!mapping_ || bytes.empty()) return;
  const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto begin = (reinterpret_cast<std::uintptr_t>(bytes.data()) + page - 1) / page * page;
  const auto end = (reinterpret_cast<std::uintptr_t>(bytes.data()) + bytes.size()) / page * page;
  if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

const tensor_view& reader::tensor(std::string_view name) const {
  const tensor_view* t = find_tensor(name);
  if (t == nullptr) throw format_error(name_ + ": missing tensor '" + std::string(name) + "'");
  return *t;
}

}  // namespace gguf
