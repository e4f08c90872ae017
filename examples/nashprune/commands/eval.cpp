// `nashprune eval ORIGINAL.gguf PRUNED.gguf --text FILE [-c N] [--chunks N]`:
// the quality check of the seed's §8.3. Runs stock llama.cpp's llama-perplexity
// on both models over the same text (io/perplexity.hpp) and prints both
// perplexities and their ratio.
#include <filesystem>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "command.hpp"
#include "io/llama_program.hpp"
#include "io/perplexity.hpp"

namespace {

namespace fs = std::filesystem;
using nashprune_tool::usage_error;

struct eval_options {
  std::string original;
  std::string pruned;
  nashprune_tool::perplexity_options run;
  std::string llama_bin;
  bool json = false;
};

void require_readable_file(const std::string& path, const std::string& what) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) throw usage_error(what + " '" + path + "' is not a readable file");
  if (fs::file_size(path, ec) == 0) throw usage_error(what + " '" + path + "' is empty");
}

int run_eval(eval_options o) {
  require_readable_file(o.original, "original model");
  require_readable_file(o.pruned, "pruned model");
  require_readable_file(o.run.text, "--text");
  o.run.program = nashprune_tool::find_llama_program("llama-perplexity", o.llama_bin);

  const auto original = nashprune_tool::measure_perplexity(o.run, o.original, "original");
  const auto pruned = nashprune_tool::measure_perplexity(o.run, o.pruned, "pruned");
  if (o.json) {
    nlohmann::json out = {
        {"text", o.run.text},
        {"ctx", o.run.ctx},
        {"chunks", o.run.chunks},
        {"original", {{"model", o.original}, {"perplexity", original.perplexity}, {"error", original.error}}},
        {"pruned", {{"model", o.pruned}, {"perplexity", pruned.perplexity}, {"error", pruned.error}}},
        {"ratio", pruned.perplexity / original.perplexity}};
    std::cout << out.dump(2) << '\n';
    return 0;
  }
  nashprune_tool::print_perplexities(std::cout, o.run, original, o.original, pruned, o.pruned);
  return 0;
}

void add_options(CLI::App& app, eval_options& a) {
  app.add_option("original", a.original, "The original GGUF model")->required();
  app.add_option("pruned", a.pruned, "The pruned GGUF model")->required();
  app.add_option("--text", a.run.text, "Evaluation text (never the calibration text)")->required();
  app.add_option("-c,--ctx", a.run.ctx, "Context length of each chunk")->check(CLI::Range(8, 1 << 20));
  app.add_option("--chunks", a.run.chunks, "Evaluate only the first N chunks (0: the whole text)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("-t,--threads", a.run.threads, "Threads for llama-perplexity (0: its default)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--llama-bin", a.llama_bin,
                 "llama-perplexity, or its folder (default: $NASHPRUNE_LLAMA_BIN, then the "
                 "provisioned llama.cpp, then $PATH)");
  app.add_flag("--json", a.json, "Print the result as JSON");
  app.add_flag("--keep-logs", a.run.keep_logs, "Keep llama-perplexity's logs and name them on stderr");
}

const nashprune_tool::register_command eval_command{nashprune_tool::make_command<eval_options>(
    "eval", "Compare the perplexity of an original and a pruned model with llama.cpp's llama-perplexity",
    "nashprune eval stories260K.gguf pruned.gguf --text evaluation.txt -c 128", add_options, run_eval)};

}  // namespace
