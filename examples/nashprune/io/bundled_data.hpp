// The real model and texts bundled in the repository's examples/data, which
// `nashprune prune` without a model prunes, calibrates on and evaluates with.
#pragma once

#include <filesystem>

namespace nashprune_tool {

struct bundled_data {
  std::filesystem::path model;             ///< stories260K.gguf
  std::filesystem::path calibration_text;  ///< tinystories-calibration.txt
  std::filesystem::path evaluation_text;   ///< tinystories-evaluation.txt
};

/// The files in $NASHPRUNE_DATA_DIR when set, else in the examples/data of the
/// source tree this tool was built from. Throws std::runtime_error naming the
/// folder and the file when one is missing.
[[nodiscard]] bundled_data find_bundled_data();

}  // namespace nashprune_tool
