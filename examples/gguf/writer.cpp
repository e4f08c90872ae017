// The GGUF writer: header first, then tensor bytes streamed through a buffer
// into a temporary file beside the output, renamed onto the output on commit.
#include "gguf/gguf.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace gguf {
namespace {

constexpr std::size_t buffer_size = std::size_t{4} << 20;

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
  put(header);
  advance_completed_tensors();
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

void writer::put(std::span<const std::byte> bytes) {
  position_ += bytes.size();
  if (buffer_.size() + bytes.size() > buffer_size) flush();
  if (bytes.size() >= buffer_size) {
    // Large pieces skip the buffer.
    while (!bytes.empty()) {
      const ssize_t n = ::write(fd_, bytes.data(), bytes.size());
      if (n < 0) {
        if (errno == EINTR) continue;
        fail_io(temporary_, "write failed");
      }
      bytes = bytes.subspan(static_cast<std::size_t>(n));
    }
    return;
  }
  buffer_.insert(buffer_.end(), bytes.begin(), bytes.end());
}

void writer::flush() {
  std::span<const std::byte> pending(buffer_);
  while (!pending.empty()) {
    const ssize_t n = ::write(fd_, pending.data(), pending.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      fail_io(temporary_, "write failed");
    }
    pending = pending.subspan(static_cast<std::size_t>(n));
  }
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
