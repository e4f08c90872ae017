// The subcommand registry of the nashprune tool.
//
// A subcommand is one .cpp file that defines a static `register_command`
// object; main.cpp builds the CLI11 application from the registry, so adding a
// subcommand never touches another file.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

namespace nashprune_tool {

/// Bad input from the user (malformed file, invalid field, unusable option):
/// main prints "nashprune: error: <what>" on one line and exits with code 2.
struct usage_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct command {
  std::string name;
  std::string description;
  /// One typical command line, shown under "Example:" in the subcommand's --help.
  std::string example;
  /// Adds the subcommand's options to `app` and returns the function that runs
  /// it after parsing; that function returns the process exit code.
  std::function<std::function<int()>(CLI::App& app)> configure;
};

/// The exit codes every subcommand returns, as its --help states them.
inline constexpr const char* exit_codes_help =
    "Exit codes: 0 success; 1 runtime failure (I/O, llama.cpp, a failed check); 2 usage error or bad input";

inline std::vector<command>& command_registry() {
  static std::vector<command> commands;
  return commands;
}

struct register_command {
  explicit register_command(command c) { command_registry().push_back(std::move(c)); }
};

/// The command whose `add_options(app, args)` declares its options into a fresh
/// `Args` and whose `run(args)` runs it once they are parsed.
template <typename Args, typename AddOptions, typename Run>
[[nodiscard]] command make_command(std::string name, std::string description, std::string example, AddOptions add_options, Run run) {
  return {std::move(name), std::move(description), std::move(example), [add_options, run](CLI::App& app) -> std::function<int()> {
            auto args = std::make_shared<Args>();
            add_options(app, *args);
            return [args, run] { return run(*args); };
          }};
}

/// The refusal of a command that runs llama.cpp in a tool built without it.
[[noreturn]] inline void requires_llama_cpp(const std::string& command) {
  throw usage_error("this nashprune was built without llama.cpp: configure with -DNASHPRUNE_LLAMA_CPP_DIR=<tree from "
                    "cmake/provision-llama-cpp.sh> to use " + command);
}

/// The text a command runs through llama.cpp, and how.
struct text_run_args {
  std::string text;
  std::int64_t tokens = 2048;
  std::int64_t context = 128;
  std::int64_t score_from = 0;  // losses only
  int threads = 0;
};

/// The model (positional), --text, --tokens, -c/--ctx, -t/--threads, and with
/// `losses` --score-from.
inline void add_text_run_options(CLI::App& app, std::string& model, text_run_args& a, const std::string& text_help, bool losses) {
  app.add_option("model", model, "input GGUF (llama or deci architecture)")->required();
  app.add_option("--text", a.text, text_help)->required();
  app.add_option("--tokens", a.tokens, "at most this many tokens (0: every whole context of the text)")->capture_default_str();
  app.add_option("-c,--ctx", a.context, "tokens per evaluated chunk")->capture_default_str();
  if (losses) {
    app.add_option("--score-from", a.score_from, "predictions from this position of each chunk on count (llama-perplexity's: ctx/2)")
        ->capture_default_str();
  }
  app.add_option("-t,--threads", a.threads, "CPU threads (0: all)")->capture_default_str();
}

}  // namespace nashprune_tool
