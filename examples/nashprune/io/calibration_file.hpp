// Calibration into a stats file under a memory budget for the input moments
// (calibrate/moment_passes.hpp), with progress on stderr for each run of the text.
#pragma once

#include <calibrate/moment_passes.hpp>

#include <filesystem>
#include <string>

#include "command.hpp"

namespace nashprune_tool {

/// Calibrates `model` into the stats file `output` with every layer's input moments,
/// one run of the text per group of `plan`, and returns the statistics without the
/// moments. In a tool built without llama.cpp, throws usage_error naming `command`.
calibrate::calibration_stats calibrate_into_file(const std::string& model, const text_run_args& run, const calibrate::moment_plan& plan,
                                                 const std::filesystem::path& output, bool force, const std::string& command);

}  // namespace nashprune_tool
