// llama-imatrix output (GGUF form, general.type = "imatrix"): per weight matrix
// `<name>.in_sum2` (F32, the sum over tokens of x_j^2 for each input column j,
// one row per expert) and `<name>.counts` (tokens seen per expert).
#pragma once

#include "gguf/gguf.hpp"

#include <optional>
#include <span>

namespace gguf {

class imatrix {
 public:
  /// Throws format_error when the file is not a GGUF imatrix.
  explicit imatrix(const std::filesystem::path& path);

  /// Activation energy per input column of weight `name` (first expert), or
  /// nothing when the imatrix has no entry for it.
  [[nodiscard]] std::optional<std::vector<float>> column_energy(const std::string& name) const;
  [[nodiscard]] std::uint64_t tokens() const { return tokens_; }

 private:
  reader file_;
  std::uint64_t tokens_ = 0;
};

}  // namespace gguf
