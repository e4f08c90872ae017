// Helpers for the GGUF tests: scratch directories and small in-memory files.
#pragma once

#include <gguf/gguf.hpp>

#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

namespace gguf_test {

/// A fresh directory under the system temp dir, removed with its contents.
struct scratch_dir {
  std::filesystem::path path;
  scratch_dir() {
    std::random_device rd;
    path = std::filesystem::temp_directory_path() / ("nashprune-gguf-" + std::to_string(rd()) + std::to_string(rd()));
    std::filesystem::create_directories(path);
  }
  ~scratch_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  scratch_dir(const scratch_dir&) = delete;
  scratch_dir& operator=(const scratch_dir&) = delete;
  [[nodiscard]] std::filesystem::path operator/(const std::string& name) const { return path / name; }
};

inline std::vector<std::byte> read_bytes(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::vector<char> chars((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::byte> out(chars.size());
  for (std::size_t i = 0; i < chars.size(); ++i) out[i] = static_cast<std::byte>(chars[i]);
  return out;
}

/// Deterministic tensor bytes: byte i of tensor t is (i * 7 + t * 13) mod 251.
inline std::vector<std::byte> pattern_bytes(std::uint64_t n, std::uint64_t t) {
  std::vector<std::byte> out(n);
  for (std::uint64_t i = 0; i < n; ++i) out[i] = static_cast<std::byte>((i * 7 + t * 13) % 251);
  return out;
}

/// A complete file in memory (header, then each tensor's pattern bytes padded).
inline std::vector<std::byte> build_file(const gguf::metadata& kv, const std::vector<gguf::tensor_spec>& tensors) {
  const std::uint64_t alignment = gguf::alignment_of(kv);
  std::vector<std::byte> out = gguf::encode_header(kv, tensors, alignment);
  for (std::size_t t = 0; t < tensors.size(); ++t) {
    const auto bytes = pattern_bytes(tensors[t].bytes(), t);
    out.insert(out.end(), bytes.begin(), bytes.end());
    out.resize(gguf::align_up(out.size(), alignment), std::byte{0});
  }
  return out;
}

/// A small valid file: a few metadata values of several types and three tensors.
inline std::vector<std::byte> small_file() {
  gguf::metadata kv;
  kv.emplace_back("general.architecture", gguf::value::string("llama"));
  kv.emplace_back("llama.block_count", gguf::value::u32(1));
  kv.emplace_back("tokens", gguf::value::string_array({"a", "bc", ""}));
  kv.emplace_back("scores", gguf::value::f32_array({0.5F, -1.0F}));
  std::vector<gguf::tensor_spec> tensors = {
      {"a", {8, 2}, nashprune::ggml_type::f32},
      {"b", {32}, nashprune::ggml_type::q8_0},
      {"c", {3}, nashprune::ggml_type::f16},
  };
  return build_file(kv, tensors);
}

}  // namespace gguf_test
