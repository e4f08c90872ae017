#include "io/perplexity.hpp"

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
#include <optional>
#include <sstream>
#include <vector>

#include "io/llama_program.hpp"
#include "io/progress.hpp"

namespace nashprune_tool {

namespace {

namespace fs = std::filesystem;

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

/// Chunks done and in all, from a running llama-perplexity's log: it announces
/// "calculating perplexity over N chunks", then prints "[k]value," per chunk.
std::pair<std::uint64_t, std::uint64_t> chunks_done(const fs::path& log) {
  std::ifstream in(log);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  constexpr std::string_view announce = "perplexity over ";
  const auto at = text.find(announce);
  if (at == std::string::npos) return {0, 0};
  const std::uint64_t total = std::strtoull(text.c_str() + at + announce.size(), nullptr, 10);
  std::uint64_t done = 0;
  for (auto open = text.rfind('['); open != std::string::npos && open > at; open = text.rfind('[', open - 1)) {
    char* end = nullptr;
    const auto k = std::strtoull(text.c_str() + open + 1, &end, 10);
    if (end != nullptr && *end == ']') {
      done = k;
      break;
    }
  }
  return {done, total};
}

}  // namespace

perplexity_result measure_perplexity(const perplexity_options& o, const std::string& model, const std::string& role) {
  const fs::path log = temporary_log("nashprune-eval-" + role + "-");

  std::vector<std::string> argv{o.program, "-m", model, "-f", o.text, "-c", std::to_string(o.ctx), "-b", std::to_string(o.ctx)};
  if (o.chunks > 0) argv.insert(argv.end(), {"--chunks", std::to_string(o.chunks)});
  if (o.threads > 0) argv.insert(argv.end(), {"-t", std::to_string(o.threads)});
  constexpr int attempts = 5;
  int status = 0;
  std::string tail;
  std::optional<perplexity_result> result;
  bool exited_cleanly = false;
  for (int attempt = 1; attempt <= attempts; ++attempt) {
    progress_bar bar("perplexity of the " + role + " model", progress_bar::off_terminal::stage_line);
    status = run_to_file(argv, log, [&] {
      const auto [done, total] = chunks_done(log);
      bar.update(done, total);
    });
    tail.clear();
    result = parse_final_estimate(log, tail);
    exited_cleanly = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (exited_cleanly && result) bar.update(1, 1);
    if (!exited_cleanly || result) break;
    if (attempt < attempts) {
      std::cerr << "nashprune: llama-perplexity lost its final estimate on the " << role << " model; running it again\n";
    }
  }
  if (!exited_cleanly || !result || !std::isfinite(result->perplexity)) {
    std::string why = !exited_cleanly ? "ended with " + describe_status(status)
                      : !result       ? "printed no final estimate"
                                      : "reported a non-finite perplexity";
    throw std::runtime_error("llama-perplexity on the " + role + " model '" + model + "' " + why + " (full log: " + log.string() +
                             "):" + tail);
  }
  if (!o.keep_logs) {
    std::error_code ignored;
    fs::remove(log, ignored);
  } else {
    std::cerr << "nashprune: " << role << " log: " << log.string() << '\n';
  }
  return *result;
}

void print_perplexities(std::ostream& out, const perplexity_options& o, const perplexity_result& original, const std::string& original_file,
                        const perplexity_result& pruned, const std::string& pruned_file) {
  const auto flags = out.flags();
  const auto precision = out.precision();
  out << "text " << o.text << ", context " << o.ctx << ", "
      << (o.chunks > 0 ? std::to_string(o.chunks) + " chunks" : std::string("all chunks")) << '\n'
      << std::fixed << std::setprecision(4) << std::left << std::setw(10) << "model" << std::right << std::setw(14) << "perplexity"
      << std::setw(12) << "+/-" << "  file\n";
  auto row = [&](const char* name, const perplexity_result& r, const std::string& file) {
    out << std::left << std::setw(10) << name << std::right << std::setw(14) << r.perplexity << std::setw(12) << r.error << "  " << file
        << '\n';
  };
  row("original", original, original_file);
  row("pruned", pruned, pruned_file);
  out << std::left << std::setw(10) << "ratio" << std::right << std::setw(14) << pruned.perplexity / original.perplexity
      << "  (pruned / original)\n";
  out.flags(flags);
  out.precision(precision);
}

}  // namespace nashprune_tool
