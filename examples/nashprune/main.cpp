// nashprune — the command-line front end of the library (all I/O lives here).
#include <nashprune/config.hpp>

#include <algorithm>
#include <exception>
#include <iostream>
#include <map>

#include "command.hpp"

int main(int argc, char** argv) {
  using namespace nashprune_tool;
  CLI::App app{"nashprune: structured pruning of transformer LLMs (GGUF in, GGUF out)", "nashprune"};
  app.set_version_flag("--version", std::string("nashprune ") + nashprune::version_string);
  app.require_subcommand(1);

  auto& commands = command_registry();
  std::sort(commands.begin(), commands.end(),
            [](const command& a, const command& b) { return a.name < b.name; });
  std::map<CLI::App*, std::function<int()>> runners;
  for (const auto& c : commands) {
    CLI::App* sub = app.add_subcommand(c.name, c.description);
    runners[sub] = c.configure(*sub);
  }

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }

  try {
    for (auto& [sub, run] : runners) {
      if (sub->parsed()) return run();
    }
    return 2;
  } catch (const usage_error& e) {
    std::cerr << "nashprune: error: " << e.what() << '\n';
    return 2;
  } catch (const std::invalid_argument& e) {
    std::cerr << "nashprune: error: " << e.what() << '\n';
    return 2;
  } catch (const std::domain_error& e) {
    std::cerr << "nashprune: error: " << e.what() << '\n';
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "nashprune: failed: " << e.what() << '\n';
    return 1;
  }
}
