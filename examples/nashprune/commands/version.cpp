// `nashprune version`: prints the library version (also `nashprune --version`).
#include <nashprune/config.hpp>

#include <iostream>

#include "command.hpp"

namespace {
const nashprune_tool::register_command version_command{{
    "version", "Print the nashprune version",
    "nashprune version",
    [](CLI::App&) -> std::function<int()> {
      return [] {
        std::cout << "nashprune " << nashprune::version_string << '\n';
        return 0;
      };
    }}};
}  // namespace
