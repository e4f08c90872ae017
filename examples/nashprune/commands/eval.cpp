// `nashprune eval ORIGINAL.gguf PRUNED.gguf --text FILE [-c N] [--chunks N]`:
// the quality check of the seed's §8.3. Runs stock llama.cpp's llama-perplexity
// on both models over the same text and prints both perplexities and their ratio.
//
// llama-perplexity writes its "Final estimate: PPL = x +/- e" line last, through
// an asynchronous logger that the program never flushes before it exits (it
// leaks the logger on purpose), so that line can be lost:
// always through a pipe, and to a file too when the machine is busy. So each run
// writes into a temporary file that is parsed afterwards (and kept, named in the
// error, when the run fails); a run that ended cleanly without the line is
// repeated; and OpenMP's threads are told to sleep rather than spin while idle
// (OMP_WAIT_POLICY=PASSIVE unless set), which on shared cores both lets the
// logger run and makes llama-perplexity several times faster.
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <system_error>
#include <vector>

#include "command.hpp"
#include "io/llama_program.hpp"

namespace {

namespace fs = std::filesystem;
using nashprune_tool::usage_error;

constexpr const char* perplexity_program = "llama-perplexity";

struct eval_options {
  std::string original;
  std::string pruned;
  std::string text;
  int ctx = 128;
  int chunks = 0;  // 0: the whole text
  int threads = 0;  // 0: llama-perplexity's default
  std::string llama_bin;
  bool json = false;
  bool keep_logs = false;
};

struct perplexity_result {
  double perplexity;
  double error;  // llama-perplexity's "+/-": the standard error of the estimate
};

/// The last "Final estimate: PPL = x +/- e" of a llama-perplexity log, and the
/// log's last lines (for error messages).
std::optional<perplexity_result> parse_final_estimate(const fs::path& log, std::string& tail) {
  std::ifstream in(log);
  std::optional<perplexity_result> found;
  std::vector<std::string> last;
  for (std::string line; std::getline(in, line);) {
    constexpr std::string_view marker = "Final estimate: PPL = ";
    if (const auto at = line.find(marker); at != std::string::npos) {
      std::istringstream fields(line.substr(at + marker.size()));
      perplexity_result r{};
      std::string plus_minus;
      if (fields >> r.perplexity >> plus_minus >> r.error && plus_minus == "+/-") found = r;
    }
    if (!line.empty()) last.push_back(line);
    if (last.size() > 6) last.erase(last.begin());
  }
  for (const auto& line : last) tail += "\n  | " + line;
  return found;
}

perplexity_result measure(const eval_options& o, const std::string& program, const std::string& model,
                          const std::string& role) {
  std::string pattern = (fs::temp_directory_path() / ("nashprune-eval-" + role + "-XXXXXX")).string();
  const int fd = ::mkstemp(pattern.data());
  if (fd < 0) throw std::runtime_error("cannot create a temporary log file: " + std::string(std::strerror(errno)));
  ::close(fd);
  const fs::path log = pattern;

  std::vector<std::string> argv{program, "-m", model, "-f", o.text, "-c", std::to_string(o.ctx),
                                "-b", std::to_string(o.ctx)};
  if (o.chunks > 0) argv.insert(argv.end(), {"--chunks", std::to_string(o.chunks)});
  if (o.threads > 0) argv.insert(argv.end(), {"-t", std::to_string(o.threads)});
  constexpr int attempts = 5;
  int status = 0;
  std::string tail;
  std::optional<perplexity_result> result;
  bool exited_cleanly = false;
  for (int attempt = 1; attempt <= attempts; ++attempt) {
    status = nashprune_tool::run_to_file(argv, log);
    tail.clear();
    result = parse_final_estimate(log, tail);
    exited_cleanly = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (!exited_cleanly || result) break;
    if (attempt < attempts) {
      std::cerr << "nashprune: " << perplexity_program << " lost its final estimate on the " << role
                << " model; running it again\n";
    }
  }
  if (!exited_cleanly || !result || !std::isfinite(result->perplexity)) {
    std::string why = !exited_cleanly           ? "ended with " + nashprune_tool::describe_status(status)
                      : !result                 ? "printed no final estimate"
                                                : "reported a non-finite perplexity";
    throw std::runtime_error(std::string(perplexity_program) + " on the " + role + " model '" + model + "' " +
                             why + " (full log: " + log.string() + "):" + tail);
  }
  if (!o.keep_logs) {
    std::error_code ignored;
    fs::remove(log, ignored);
  } else {
    std::cerr << "nashprune: " << role << " log: " << log.string() << '\n';
  }
  return *result;
}

void require_readable_file(const std::string& path, const std::string& what) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) throw usage_error(what + " '" + path + "' is not a readable file");
  if (fs::file_size(path, ec) == 0) throw usage_error(what + " '" + path + "' is empty");
}

int run_eval(const eval_options& o) {
  require_readable_file(o.original, "original model");
  require_readable_file(o.pruned, "pruned model");
  require_readable_file(o.text, "--text");
  const std::string program = nashprune_tool::find_llama_program(perplexity_program, o.llama_bin);

  const auto original = measure(o, program, o.original, "original");
  const auto pruned = measure(o, program, o.pruned, "pruned");
  const double ratio = pruned.perplexity / original.perplexity;

  if (o.json) {
    nlohmann::json out = {
        {"text", o.text},
        {"ctx", o.ctx},
        {"chunks", o.chunks},
        {"original", {{"model", o.original}, {"perplexity", original.perplexity}, {"error", original.error}}},
        {"pruned", {{"model", o.pruned}, {"perplexity", pruned.perplexity}, {"error", pruned.error}}},
        {"ratio", ratio}};
    std::cout << out.dump(2) << '\n';
    return 0;
  }
  std::cout << "text " << o.text << ", context " << o.ctx << ", "
            << (o.chunks > 0 ? std::to_string(o.chunks) + " chunks" : std::string("all chunks")) << '\n'
            << std::fixed << std::setprecision(4) << std::left << std::setw(10) << "model" << std::right
            << std::setw(14) << "perplexity" << std::setw(12) << "+/-" << "  file\n";
  auto row = [](const char* name, const perplexity_result& r, const std::string& file) {
    std::cout << std::left << std::setw(10) << name << std::right << std::setw(14) << r.perplexity
              << std::setw(12) << r.error << "  " << file << '\n';
  };
  row("original", original, o.original);
  row("pruned", pruned, o.pruned);
  std::cout << std::left << std::setw(10) << "ratio" << std::right << std::setw(14) << ratio
            << "  (pruned / original)\n";
  return 0;
}

void add_options(CLI::App& app, eval_options& a) {
  app.add_option("original", a.original, "The original GGUF model")->required();
  app.add_option("pruned", a.pruned, "The pruned GGUF model")->required();
  app.add_option("--text", a.text, "Evaluation text (never the calibration text)")->required();
  app.add_option("-c,--ctx", a.ctx, "Context length of each chunk")->check(CLI::Range(8, 1 << 20));
  app.add_option("--chunks", a.chunks, "Evaluate only the first N chunks (0: the whole text)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("-t,--threads", a.threads, "Threads for llama-perplexity (0: its default)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--llama-bin", a.llama_bin,
                 "llama-perplexity, or its folder (default: $NASHPRUNE_LLAMA_BIN, then the "
                 "provisioned llama.cpp, then $PATH)");
  app.add_flag("--json", a.json, "Print the result as JSON");
  app.add_flag("--keep-logs", a.keep_logs, "Keep llama-perplexity's logs and name them on stderr");
}

const nashprune_tool::register_command eval_command{nashprune_tool::make_command<eval_options>(
    "eval", "Compare the perplexity of an original and a pruned model with llama.cpp's llama-perplexity",
    "nashprune eval stories260K.gguf pruned.gguf --text evaluation.txt -c 128", add_options, run_eval)};

}  // namespace
