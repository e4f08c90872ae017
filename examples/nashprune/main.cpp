// nashprune — the command-line front end of the library (all I/O lives here).
#include <nashprune/config.hpp>

#include <algorithm>
#include <exception>
#include <string>
#include <iostream>
#include <map>
#include <string_view>

#include <nlohmann/json.hpp>

#include "command.hpp"
#include "io/llama_program.hpp"

namespace {
// One line on stderr. Library messages already start with "nashprune: ", so the
// prefix is not repeated.
void report_error(std::string_view kind, std::string_view what) {
  constexpr std::string_view library_prefix = "nashprune: ";
  if (what.starts_with(library_prefix)) what.remove_prefix(library_prefix.size());
  std::cerr << "nashprune: " << kind << ": " << what << '\n';
}
}  // namespace

int main(int argc, char** argv) {
#if defined(NASHPRUNE_HAVE_LLAMA_CAPTURE)
  nashprune_tool::restart_with_passive_openmp_waits(argv);
#endif
  using namespace nashprune_tool;
  CLI::App app{"nashprune: structured pruning of transformer LLMs (GGUF in, GGUF out)", "nashprune"};
  app.set_version_flag("--version", std::string("nashprune ") + nashprune::version_string);
  app.require_subcommand(1);
  app.footer(exit_codes_help);

  auto& commands = command_registry();
  std::sort(commands.begin(), commands.end(),
            [](const command& a, const command& b) { return a.name < b.name; });
  std::map<CLI::App*, std::function<int()>> runners;
  for (const auto& c : commands) {
    CLI::App* sub = app.add_subcommand(c.name, c.description);
    sub->footer("Example:\n  " + c.example + "\n\n" + exit_codes_help);
    runners[sub] = c.configure(*sub);
  }

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    report_error("error", std::string(e.what()) + " (see --help)");
    return 2;
  }

  try {
    for (auto& [sub, run] : runners) {
      if (sub->parsed()) return run();
    }
    return 2;
  } catch (const usage_error& e) {
    report_error("error", e.what());
    return 2;
  } catch (const std::invalid_argument& e) {
    report_error("error", e.what());
    return 2;
  } catch (const std::domain_error& e) {
    report_error("error", e.what());
    return 2;
  } catch (const nlohmann::json::exception& e) {  // every JSON the tool reads is input
    report_error("error", std::string("JSON input: ") + e.what());
    return 2;
  } catch (const std::exception& e) {
    report_error("failed", e.what());
    return 1;
  }
}
