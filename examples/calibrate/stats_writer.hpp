// Writing a calibration stats file (format in calibration_stats.hpp) one layer at
// a time.
#pragma once

#include "calibrate/calibration_stats.hpp"

#include <filesystem>
#include <vector>

namespace calibrate {

/// Writes a stats file one layer at a time, in layer order, so that a calibration
/// in several passes (moment_passes.hpp) holds one group of layers' moments at a
/// time. The file appears at commit(); destroyed before, it leaves nothing.
class stats_writer {
 public:
  /// Every statistic but the moments comes from `summary`. The moment tensors are
  /// those of `summary`'s layers, or, with moments_follow, those of every input
  /// of every layer (each given to write_layer).
  stats_writer(const std::filesystem::path& path, const calibration_stats& summary, bool force, bool moments_follow = false);
  /// Writes the next layer: its statistics from the summary, its moments from
  /// `moments` (only the moment fields are read; sizes are checked).
  void write_layer(const layer_stats& moments);
  /// Writes the whole-model tensors and renames the file into place.
  void commit();
  [[nodiscard]] std::size_t layers_written() const { return next_layer_; }

 private:
  fingerprint model_;
  std::vector<layer_stats> summaries_;  // without moments
  std::vector<bool> attn_moments_, ffn_moments_;
  gguf::writer out_;
  std::size_t next_layer_ = 0;
  void write_floats(const Eigen::Ref<const Eigen::MatrixXd>& values);
};

}  // namespace calibrate
