// Finding and running the llama.cpp programs (llama-perplexity, llama-quantize, ...)
// that the tool drives as child processes.
#pragma once

#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace nashprune_tool {

/// Where `program` is: the --llama-bin option (the program itself or its folder),
/// then $NASHPRUNE_LLAMA_BIN, then the provisioned tree this tool was built against,
/// then $PATH. Throws usage_error when an explicit location lacks it or none has it.
[[nodiscard]] std::string find_llama_program(std::string_view program, const std::string& option);

/// Runs `argv` (argv[0] a path) with stdout and stderr both written to `log` and
/// stdin from /dev/null; returns the wait status. The child's environment is ours
/// plus OMP_WAIT_POLICY=PASSIVE unless set (idle OpenMP threads sleep instead of
/// spinning, which on shared cores makes llama.cpp's programs several times faster).
/// `while_running`, when given, is called about five times a second until the child ends.
int run_to_file(std::vector<std::string> argv, const std::filesystem::path& log, const std::function<void()>& while_running = {});

/// llama.cpp's CPU backend runs each graph evaluation in an OpenMP parallel region,
/// and libgomp's threads spin after one ends. With an evaluation callback
/// (calibrate, ablate, measured sensitivities) a graph is evaluated in many short
/// pieces, and the threads spin through all of the callback's work: on stories260K
/// that was 90 % of calibrate's CPU time (89 s against 13 s with passive waits, the
/// statistics identical). libgomp reads OMP_WAIT_POLICY once, when it is loaded,
/// before main runs; so, unless the caller set the variable, this sets it to PASSIVE
/// (as run_to_file does for the children) and executes the tool again with the same
/// arguments, from /proc/self/exe. If that fails, the process goes on as it was.
void restart_with_passive_openmp_waits(char** argv);

/// A new empty file in the temporary folder named `prefix` + a unique suffix, for a
/// child's log. Throws std::runtime_error when none can be made.
[[nodiscard]] std::filesystem::path temporary_log(const std::string& prefix);

/// "exit code N" / "signal N" for a wait status.
[[nodiscard]] std::string describe_status(int status);

}  // namespace nashprune_tool
