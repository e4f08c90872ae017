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
/// plus the defaults of restart_with_environment_defaults that are unset.
/// `while_running`, when given, is called about five times a second until the child ends.
int run_to_file(std::vector<std::string> argv, const std::filesystem::path& log, const std::function<void()>& while_running = {});

/// Two settings that are read once, when the process loads, before main runs; so,
/// for each the caller left unset, this sets it and executes the tool again with
/// the same arguments, from /proc/self/exe (if that fails, the process goes on as
/// it was):
///  - OMP_WAIT_POLICY=PASSIVE. llama.cpp's CPU backend runs each graph evaluation
///    in an OpenMP parallel region, and libgomp's threads spin after one ends.
///    With an evaluation callback (calibrate, ablate, measured sensitivities) a
///    graph is evaluated in many short pieces, and the threads spin through all of
///    the callback's work: on stories260K that was 90 % of calibrate's CPU time
///    (89 s against 13 s with passive waits, the statistics identical).
///  - GLIBC_TUNABLES=glibc.malloc.hugetlb=1: glibc asks for transparent huge pages
///    for its large allocations (where the kernel grants them on request, the
///    default "madvise" mode). The input moments take gigabytes (1.66 GiB per
///    Llama-3-8B layer), and faulting them in 4 KiB pages cost calibrate 1.2
///    million page faults and 11.6 s of system time on 256 tokens of a 2-layer
///    model at Llama-3-8B widths, against 23 thousand and 7.2 s with the tunable.
/// Children (run_to_file) get the same defaults.
void restart_with_environment_defaults(char** argv);

/// A new empty file in the temporary folder named `prefix` + a unique suffix, for a
/// child's log. Throws std::runtime_error when none can be made.
[[nodiscard]] std::filesystem::path temporary_log(const std::string& prefix);

/// "exit code N" / "signal N" for a wait status.
[[nodiscard]] std::string describe_status(int status);

}  // namespace nashprune_tool
