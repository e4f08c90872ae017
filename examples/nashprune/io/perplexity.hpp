// Perplexity with stock llama.cpp's llama-perplexity, run as a child process:
// what `nashprune eval` reports and `nashprune prune --eval-text` prints before
// and after.
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
#pragma once

#include <iosfwd>
#include <string>

namespace nashprune_tool {

struct perplexity_options {
  std::string text;
  int ctx = 128;     ///< tokens per chunk, and the batch (-c N -b N)
  int chunks = 0;    ///< 0: the whole text
  int threads = 0;   ///< 0: llama-perplexity's default
  std::string program;  ///< llama-perplexity (find_llama_program)
  bool keep_logs = false;
};

struct perplexity_result {
  double perplexity;
  double error;  ///< llama-perplexity's "+/-": the standard error of the estimate
};

/// The perplexity of `model` ("original" or "pruned" as `role` in messages and
/// progress). Throws std::runtime_error with the log's last lines when the run
/// fails or gives no finite estimate.
[[nodiscard]] perplexity_result measure_perplexity(const perplexity_options& o, const std::string& model, const std::string& role);

/// The table of both perplexities and their ratio (pruned / original).
void print_perplexities(std::ostream& out, const perplexity_options& o, const perplexity_result& original, const std::string& original_file,
                        const perplexity_result& pruned, const std::string& pruned_file);

}  // namespace nashprune_tool
