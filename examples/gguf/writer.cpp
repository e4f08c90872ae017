// The GGUF writer: header first, then tensor bytes streamed through a buffer
// into a temporary file beside the output, renamed onto the output on commit.
#include "gguf/gguf.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>

namespace gguf {
namespace {

constexpr std::size_t buffer_size = std::size_t{4} << 20;
// Pieces at least this large skip the buffer (one copy fewer); smaller ones are
// gathered so that scattered rows do not cost a system call each.
constexpr std::size_t write_through_size = std::size_t{64} << 10;

[[noreturn]] void fail_io(const std::filesystem::path& path, const char* what) {
  throw std::runtime_error(path.string() + ": " + what + ": " + std::strerror(errno));
}

}  // namespace

writer::writer(std::filesystem::path output, options opts) : output_(std::move(output)) {
  std::error_code ec;
  for (const auto& input : opts.protect) {
    if (std::filesystem::equivalent(input, output_, ec)) {
      throw std::invalid_argument(output_.string() + ": the output is the input file; choose another output");
    }
  }
  if (std::filesystem::exists(output_, ec) && !opts.force) {
    throw std::invalid_argument(output_.string() + ": already exists (pass --force to replace it)");
  }
  std::filesystem::path dir = output_.parent_path();
  if (dir.empty()) dir = ".";
  std::string pattern = (dir / ("." + output_.filename().string() + ".tmp.XXXXXX")).string();
  fd_ = ::mkstemp(pattern.data());
  if (fd_ < 0) fail_io(dir, "cannot create a temporary file");
  temporary_ = pattern;
  const mode_t mask = ::umask(0);
  ::umask(mask);
  ::fchmod(fd_, 0666 & ~mask);
  buffer_.reserve(buffer_size);
}

writer::~writer() {
  if (fd_ >= 0) {
    ::close(fd_);
    std::error_code ec;
    std::filesystem::remove(temporary_, ec);
  }
}

void writer::begin(const gguf::metadata& kv, std::vector<tensor_spec> tensors) {
  if (begun_) throw std::logic_error("gguf::writer::begin called twice");
  alignment_ = alignment_of(kv);
  const auto header = encode_header(kv, tensors, alignment_);
  tensors_ = std::move(tensors);
  begun_ = true;
  reserve_space(header.size());
  put(header);
  advance_completed_tensors();
}

void writer::reserve_space(std::uint64_t header_bytes) {
  std::uint64_t total = header_bytes;
  for (const auto& t : tensors_) total += align_up(t.bytes(), alignment_);
  // Blocks allocated up front spare ext4 a delayed-allocation reservation per
  // written block (about a third of its write cost). KEEP_SIZE: the file grows
  // only as bytes arrive, so a short count cannot leave stray zeros behind. A
  // hint: where unsupported (or the disk is full) the writes report it.
  if (total > 0) (void)::fallocate(fd_, FALLOC_FL_KEEP_SIZE, 0, static_cast<off_t>(total));
}

void writer::advance_completed_tensors() {
  while (current_ < tensors_.size() && current_written_ == tensors_[current_].bytes()) {
    pad_to_alignment();
    ++current_;
    current_written_ = 0;
  }
}

std::size_t writer::room_in_current_tensor(std::size_t wanted) const {
  if (!begun_ || current_ >= tensors_.size()) {
    throw std::logic_error("gguf::writer: more tensor bytes than the tensor table declares");
  }
  const std::uint64_t room = tensors_[current_].bytes() - current_written_;
  return static_cast<std::size_t>(std::min<std::uint64_t>(room, wanted));
}

void writer::write(std::span<const std::byte> bytes) {
  while (!bytes.empty()) {
    const std::size_t n = room_in_current_tensor(bytes.size());
    put(bytes.first(n));
    current_written_ += n;
    bytes = bytes.subspan(n);
    advance_completed_tensors();
  }
}

void writer::write_zeros(std::uint64_t count) {
  static const std::vector<std::byte> zeros(std::size_t{1} << 16);
  while (count > 0) {
    const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(count, zeros.size()));
    write(std::span(zeros).first(n));
    count -= n;
  }
}

void writer::pad_to_alignment() {
  static const std::byte zeros[256] = {};
  std::uint64_t padding = align_up(position_, alignment_) - position_;
  while (padding > 0) {
    const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(padding, sizeof zeros));
    put(std::span(zeros, n));
    padding -= n;
  }
}

void writer::copy(std::span<const std::byte> bytes, const file_extent& from) {
  std::uint64_t source = from.offset;
  while (!bytes.empty()) {
    const std::size_t n = room_in_current_tensor(bytes.size());
    std::size_t copied = 0;
    if (copy_in_kernel_ && n >= kernel_copy_size) {
      flush();
      auto offset = static_cast<off_t>(source);
      while (copied < n) {
        const ssize_t done = ::copy_file_range(from.fd, &offset, fd_, nullptr, n - copied, 0);
        if (done < 0 && errno == EINTR) continue;
        if (done <= 0) {
          // Not supported here (other file systems, old kernels, EOF): write the rest.
          if (done < 0 && errno != EXDEV && errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP) {
            fail_io(temporary_, "copy_file_range failed");
          }
          copy_in_kernel_ = false;
          break;
        }
        copied += static_cast<std::size_t>(done);
      }
      position_ += copied;
    }
    if (copied < n) put(bytes.subspan(copied, n - copied));
    source += n;
    current_written_ += n;
    bytes = bytes.subspan(n);
    advance_completed_tensors();
  }
}

void writer::write_gathered(std::span<const std::span<const std::byte>> pieces) {
  std::uint64_t total = 0;
  for (const auto& p : pieces) total += p.size();
  if (total < write_through_size) {
    for (const auto& p : pieces) write(p);
    return;
  }
  // Only whole pieces of the current tensor go out as one batch; a piece that
  // crosses a tensor's end (or the table's) takes the checked path. Padding and
  // such pieces pass through the buffer, which is flushed before each batch.
  std::vector<iovec> batch;
  batch.reserve(std::min<std::size_t>(pieces.size(), IOV_MAX));
  const auto send = [&] {
    flush();
    std::size_t first = 0;
    while (first < batch.size()) {
      const ssize_t n = ::writev(fd_, batch.data() + first, static_cast<int>(batch.size() - first));
      if (n < 0) {
        if (errno == EINTR) continue;
        fail_io(temporary_, "write failed");
      }
      auto left = static_cast<std::size_t>(n);
      while (first < batch.size() && left >= batch[first].iov_len) left -= batch[first++].iov_len;
      if (left > 0) {
        batch[first].iov_base = static_cast<std::byte*>(batch[first].iov_base) + left;
        batch[first].iov_len -= left;
      }
    }
    batch.clear();
  };
  for (const auto& p : pieces) {
    if (room_in_current_tensor(p.size()) < p.size()) {
      send();
      write(p);
      continue;
    }
    batch.push_back({const_cast<std::byte*>(p.data()), p.size()});
    position_ += p.size();
    current_written_ += p.size();
    if (batch.size() == IOV_MAX) send();
    if (current_written_ == tensors_[current_].bytes()) {
      send();
      advance_completed_tensors();
    }
  }
  send();
}

void writer::put(std::span<const std::byte> bytes) {
  position_ += bytes.size();
  if (buffer_.size() + bytes.size() > buffer_size) flush();
  if (bytes.size() >= write_through_size) {
    flush();
    write_through(bytes);
    return;
  }
  buffer_.insert(buffer_.end(), bytes.begin(), bytes.end());
}

void writer::write_through(std::span<const std::byte> bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd_, bytes.data(), bytes.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      fail_io(temporary_, "write failed");
    }
    bytes = bytes.subspan(static_cast<std::size_t>(n));
  }
}

void writer::flush() {
  write_through(buffer_);
  buffer_.clear();
}

void writer::commit() {
  if (!begun_) throw std::logic_error("gguf::writer::commit before begin");
  if (current_ != tensors_.size()) {
    throw std::logic_error("gguf::writer: tensor '" + tensors_[current_].name + "' received " +
                           std::to_string(current_written_) + " of its " + std::to_string(tensors_[current_].bytes()) +
                           " bytes");
  }
  flush();
  if (::close(fd_) != 0) {
    fd_ = -1;
    std::error_code ec;
    std::filesystem::remove(temporary_, ec);
    fail_io(temporary_, "close failed");
  }
  fd_ = -1;
  if (::rename(temporary_.c_str(), output_.c_str()) != 0) {
    const int e = errno;
    std::error_code ec;
    std::filesystem::remove(temporary_, ec);
    errno = e;
    fail_io(output_, "cannot rename the temporary file onto the output");
  }
}

}  // namespace gguf
