// The subcommand registry of the nashprune tool.
//
// A subcommand is one .cpp file that defines a static `register_command`
// object; main.cpp builds the CLI11 application from the registry, so adding a
// subcommand never touches another file.
#pragma once

#include <CLI/CLI.hpp>

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
  /// Adds the subcommand's options to `app` and returns the function that runs
  /// it after parsing; that function returns the process exit code.
  std::function<std::function<int()>(CLI::App& app)> configure;
};

inline std::vector<command>& command_registry() {
  static std::vector<command> commands;
  return commands;
}

struct register_command {
  explicit register_command(command c) { command_registry().push_back(std::move(c)); }
};

}  // namespace nashprune_tool
