// Calibration in this process: runs text through a model with llama.cpp
// (calibrate/llama_capture.hpp) with progress on stderr. `nashprune calibrate`
// writes the result; `nashprune prune --text` uses it at once.
#pragma once

#include <calibrate/calibration_stats.hpp>

#include <string>

#include "command.hpp"

namespace nashprune_tool {

#ifdef NASHPRUNE_HAVE_LLAMA_CAPTURE
inline constexpr bool built_with_llama_cpp = true;
#else
inline constexpr bool built_with_llama_cpp = false;
#endif

/// The statistics of `run` on `model`, with the input moments unless `moments` is
/// false. In a tool built without llama.cpp, throws usage_error naming `command`.
[[nodiscard]] calibrate::calibration_stats measure_calibration(const std::string& model, const text_run_args& run, bool moments,
                                                               const std::string& command);

}  // namespace nashprune_tool
