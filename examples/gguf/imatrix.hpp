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
  /// The mean x_j² per input column (first expert): in_sum2 divided by the tokens
  /// counted, as llama-quantize normalises it (1 where nothing was counted).
  [[nodiscard]] std::optional<std::vector<float>> mean_column_energy(const std::string& name) const;
  /// The weight names with an entry (each `<name>.in_sum2`).
  [[nodiscard]] std::vector<std::string> entries() const;
  /// imatrix.datasets (the calibration files' names), empty when absent.
  [[nodiscard]] std::vector<std::string> datasets() const;
  [[nodiscard]] const std::string& name() const { return file_.name(); }
  [[nodiscard]] std::uint64_t tokens() const { return tokens_; }

 private:
  reader file_;
  std::uint64_t tokens_ = 0;
};

}  // namespace gguf
