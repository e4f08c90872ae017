// Speed with stock llama.cpp's llama-bench, run as a child process: prompt
// processing and generation tokens per second of a model, what `nashprune eval`
// reports beside the perplexities, and the CPU they were measured on.
//
// llama-bench runs each test `repetitions` times after a warm-up and prints one
// JSON object per test with -o jsonl; avg_ts and stddev_ts are the mean and the
// standard deviation of the tokens per second over the repetitions.
#pragma once

#include <iosfwd>
#include <string>

namespace nashprune_tool {

struct bench_options {
  int prompt = 128;      ///< tokens of the prompt-processing test (-p)
  int generate = 32;     ///< tokens of the generation test (-n)
  int repetitions = 3;   ///< -r
  int threads = 0;       ///< 0: llama-bench's default
  std::string program;   ///< llama-bench (find_llama_program)
};

/// Tokens per second: mean and standard deviation over the repetitions.
struct speed {
  double mean = 0;
  double deviation = 0;
};

struct bench_result {
  speed prompt;    ///< prompt processing
  speed generate;  ///< generation
  int threads = 0;
};

/// The prompt-processing and generation results in llama-bench's -o jsonl output
/// (other lines are skipped). Throws std::runtime_error naming what is missing
/// when either test is absent or its figure is not a finite positive number.
[[nodiscard]] bench_result parse_bench_jsonl(const std::string& output);

/// llama-bench on `model` ("original" or "pruned" as `role` in messages).
/// Throws std::runtime_error with the log's last lines when the run fails.
[[nodiscard]] bench_result measure_speed(const bench_options& o, const std::string& model, const std::string& role);

/// The CPU the figures were measured on: "AMD EPYC (cpu family 26, model 2)",
/// from /proc/cpuinfo ("unknown CPU" where it is unreadable).
[[nodiscard]] std::string cpu_description();

/// The table of both models' tokens per second and their ratios (pruned / original),
/// with the CPU and the test sizes.
void print_speeds(std::ostream& out, const bench_options& o, const bench_result& original, const bench_result& pruned);

}  // namespace nashprune_tool
