// `nashprune eval ORIGINAL.gguf PRUNED.gguf --text FILE [-c N] [--chunks N]`:
// the quality check of the seed's §8.3. Runs stock llama.cpp's llama-perplexity
// on both models over the same text (io/perplexity.hpp) and prints both
// perplexities and their ratio; then llama-bench on both (io/llama_bench.hpp) and
// their prompt-processing and generation tokens per second beside the CPU. The
// speed runs are on by default: with the default test sizes they cost a fraction
// of the perplexity runs (on stories260K about a second against ten), and
// --no-speed leaves them out.
#include <filesystem>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>

#include "command.hpp"
#include "io/llama_bench.hpp"
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
  bool speed = true;  // llama-bench on both models
  nashprune_tool::bench_options bench;
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
  if (o.speed) {
    // --llama-bin may name llama-perplexity itself: llama-bench is then looked for beside it.
    std::error_code ec;
    const auto folder = o.llama_bin.empty() || fs::is_directory(o.llama_bin, ec) ? o.llama_bin : fs::path(o.llama_bin).parent_path().string();
    try {
      o.bench.program = nashprune_tool::find_llama_program("llama-bench", folder);
    } catch (const usage_error& e) {
      throw usage_error(std::string(e.what()) + "; or measure no speed: --no-speed");
    }
    o.bench.threads = o.run.threads;
  }

  const auto original = nashprune_tool::measure_perplexity(o.run, o.original, "original");
  const auto pruned = nashprune_tool::measure_perplexity(o.run, o.pruned, "pruned");
  std::optional<std::pair<nashprune_tool::bench_result, nashprune_tool::bench_result>> speeds;
  if (o.speed) {
    auto original_speed = nashprune_tool::measure_speed(o.bench, o.original, "original");
    auto pruned_speed = nashprune_tool::measure_speed(o.bench, o.pruned, "pruned");
    speeds.emplace(original_speed, pruned_speed);
  }
  if (o.json) {
    nlohmann::json out = {
        {"text", o.run.text},
        {"ctx", o.run.ctx},
        {"chunks", o.run.chunks},
        {"original", {{"model", o.original}, {"perplexity", original.perplexity}, {"error", original.error}}},
        {"pruned", {{"model", o.pruned}, {"perplexity", pruned.perplexity}, {"error", pruned.error}}},
        {"ratio", pruned.perplexity / original.perplexity}};
    if (speeds) {
      const auto figures = [](const nashprune_tool::bench_result& r) {
        return nlohmann::json{{"prompt_tokens_per_second", r.prompt.mean}, {"prompt_deviation", r.prompt.deviation},
                              {"generation_tokens_per_second", r.generate.mean}, {"generation_deviation", r.generate.deviation}};
      };
      out["speed"] = {{"cpu", nashprune_tool::cpu_description()},
                      {"prompt_tokens", o.bench.prompt},
                      {"generated_tokens", o.bench.generate},
                      {"repetitions", o.bench.repetitions},
                      {"threads", speeds->first.threads},
                      {"original", figures(speeds->first)},
                      {"pruned", figures(speeds->second)}};
    }
    std::cout << out.dump(2) << '\n';
    return 0;
  }
  nashprune_tool::print_perplexities(std::cout, o.run, original, o.original, pruned, o.pruned);
  if (speeds) nashprune_tool::print_speeds(std::cout, o.bench, speeds->first, speeds->second);
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
                 "the folder of llama-perplexity and llama-bench, or llama-perplexity itself (default: $NASHPRUNE_LLAMA_BIN, then the "
                 "provisioned llama.cpp, then $PATH)");
  app.add_flag("--speed,!--no-speed", a.speed,
               "also measure both models' prompt-processing and generation tokens/s with llama-bench (default on; "
               "--no-speed leaves it out)");
  app.add_option("--speed-prompt", a.bench.prompt, "llama-bench prompt tokens (-p)")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  app.add_option("--speed-gen", a.bench.generate, "llama-bench generated tokens (-n)")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  app.add_option("--speed-reps", a.bench.repetitions, "llama-bench repetitions (-r)")->capture_default_str()->check(CLI::Range(1, 1000));
  app.add_flag("--json", a.json, "Print the result as JSON");
  app.add_flag("--keep-logs", a.run.keep_logs, "Keep llama-perplexity's logs and name them on stderr");
}

const nashprune_tool::register_command eval_command{nashprune_tool::make_command<eval_options>(
    "eval", "Compare the perplexity of an original and a pruned model with llama.cpp's llama-perplexity",
    "nashprune eval stories260K.gguf pruned.gguf --text evaluation.txt -c 128", add_options, run_eval)};

}  // namespace
