#include "io/llama_bench.hpp"

#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <optional>
#include <ostream>
#include <sstream>
#include <stdexcept>
#include <vector>

#include "io/llama_program.hpp"
#include "io/progress.hpp"

namespace nashprune_tool {

namespace {

namespace fs = std::filesystem;

std::string last_lines(const std::string& text, std::size_t count) {
  std::vector<std::string> last;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    last.push_back(line);
    if (last.size() > count) last.erase(last.begin());
  }
  std::string out;
  for (const auto& line : last) out += "\n  | " + line;
  return out;
}

// The value of `key` in "key : value" lines of /proc/cpuinfo's first processor.
std::optional<std::string> cpuinfo_field(const std::string& text, const std::string& key) {
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) break;  // the first processor ends at the first blank line
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    auto name = line.substr(0, colon);
    name.erase(name.find_last_not_of(" \t") + 1);
    if (name != key) continue;
    auto value = line.substr(colon + 1);
    value.erase(0, value.find_first_not_of(" \t"));
    return value;
  }
  return std::nullopt;
}

}  // namespace

bench_result parse_bench_jsonl(const std::string& output) {
  std::optional<speed> prompt;
  std::optional<speed> generate;
  int threads = 0;
  std::istringstream in(output);
  for (std::string line; std::getline(in, line);) {
    const auto start = line.find_first_not_of(" \t");
    if (start == std::string::npos || line[start] != '{') continue;
    const auto test = nlohmann::json::parse(line.substr(start), nullptr, false);
    if (test.is_discarded() || !test.is_object()) continue;
    const auto number = [&](const char* key) -> std::optional<double> {
      const auto at = test.find(key);
      if (at == test.end() || !at->is_number()) return std::nullopt;
      return at->get<double>();
    };
    const auto n_prompt = number("n_prompt");
    const auto n_gen = number("n_gen");
    const auto mean = number("avg_ts");
    const auto deviation = number("stddev_ts");
    if (!n_prompt || !n_gen || !mean || !deviation) continue;
    if (!(std::isfinite(*mean) && *mean > 0) || !(std::isfinite(*deviation) && *deviation >= 0)) {
      throw std::runtime_error("llama-bench reported " + std::to_string(*mean) + " +/- " + std::to_string(*deviation) +
                               " tokens/s, not a finite positive speed");
    }
    if (const auto t = number("n_threads")) threads = static_cast<int>(*t);
    if (*n_prompt > 0 && *n_gen == 0) prompt = speed{*mean, *deviation};
    if (*n_prompt == 0 && *n_gen > 0) generate = speed{*mean, *deviation};
  }
  if (!prompt || !generate) {
    throw std::runtime_error(std::string("llama-bench printed no ") + (!prompt ? "prompt-processing" : "generation") +
                             " result (a JSON line with n_prompt, n_gen, avg_ts and stddev_ts)");
  }
  return {*prompt, *generate, threads};
}

bench_result measure_speed(const bench_options& o, const std::string& model, const std::string& role) {
  const fs::path log = temporary_log("nashprune-bench-" + role + "-");
  std::vector<std::string> argv{o.program, "-m", model, "-p", std::to_string(o.prompt), "-n", std::to_string(o.generate),
                                "-r", std::to_string(o.repetitions), "-o", "jsonl"};
  if (o.threads > 0) argv.insert(argv.end(), {"-t", std::to_string(o.threads)});
  progress_bar bar("speed of the " + role + " model", progress_bar::off_terminal::stage_line);
  const int status = run_to_file(argv, log);
  std::ifstream in(log);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const bool exited_cleanly = WIFEXITED(status) && WEXITSTATUS(status) == 0;
  try {
    if (!exited_cleanly) throw std::runtime_error("ended with " + describe_status(status));
    auto result = parse_bench_jsonl(text);
    bar.update(1, 1);
    std::error_code ignored;
    fs::remove(log, ignored);
    return result;
  } catch (const std::runtime_error& e) {
    throw std::runtime_error("llama-bench on the " + role + " model '" + model + "': " + e.what() + " (full log: " + log.string() +
                             "):" + last_lines(text, 6));
  }
}

std::string cpu_description() {
  std::ifstream in("/proc/cpuinfo");
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto name = cpuinfo_field(text, "model name");
  const auto family = cpuinfo_field(text, "cpu family");
  const auto model = cpuinfo_field(text, "model");
  if (!name && !family) return "unknown CPU";
  std::string out = name.value_or("unnamed CPU");
  if (family) out += " (cpu family " + *family + (model ? ", model " + *model : std::string()) + ")";
  return out;
}

void print_speeds(std::ostream& out, const bench_options& o, const bench_result& original, const bench_result& pruned) {
  const auto flags = out.flags();
  const auto precision = out.precision();
  out << "speed with llama-bench -p " << o.prompt << " -n " << o.generate << " -r " << o.repetitions
      << (original.threads > 0 ? ", " + std::to_string(original.threads) + " threads" : std::string()) << ", on " << cpu_description()
      << ":\n"
      << std::left << std::setw(10) << "model" << std::right << std::setw(14) << "prompt t/s" << std::setw(10) << "+/-" << std::setw(16)
      << "generation t/s" << std::setw(10) << "+/-" << '\n'
      << std::fixed << std::setprecision(2);
  const auto row = [&](const char* name, const bench_result& r) {
    out << std::left << std::setw(10) << name << std::right << std::setw(14) << r.prompt.mean << std::setw(10) << r.prompt.deviation
        << std::setw(16) << r.generate.mean << std::setw(10) << r.generate.deviation << '\n';
  };
  row("original", original);
  row("pruned", pruned);
  out << std::left << std::setw(10) << "ratio" << std::right << std::setprecision(3) << std::setw(14) << pruned.prompt.mean / original.prompt.mean
      << std::setw(26) << pruned.generate.mean / original.generate.mean << "  (pruned / original, same run)\n";
  out.flags(flags);
  out.precision(precision);
}

}  // namespace nashprune_tool
