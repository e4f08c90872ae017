// `nashprune calibrate MODEL.gguf --text FILE [--tokens N] [--ctx N] -o STATS.gguf`:
// runs calibration text through the model with llama.cpp and writes the
// activation statistics (head Gram/cosine matrices, activation energies, block
// influence, the input moments of attn_output and ffn_down; format in calibrate/calibration_stats.hpp) that
// `nashprune prune --calibration STATS.gguf` reads. Built with the llama.cpp the
// project provisions (NASHPRUNE_LLAMA_CPP_DIR); without it the command says so.
#include <filesystem>
#include <iostream>
#include <memory>

#include "command.hpp"
#include "io/calibration_run.hpp"

namespace {

using nashprune_tool::usage_error;

// Calibration reads the whole text unless --tokens says otherwise.
nashprune_tool::text_run_args every_token() {
  nashprune_tool::text_run_args run;
  run.tokens = 0;
  return run;
}

struct calibrate_args {
  std::string model;
  std::string output;
  nashprune_tool::text_run_args run = every_token();
  bool force = false;
  bool no_moments = false;
};

int run(const calibrate_args& a) {
  namespace fs = std::filesystem;
  if (fs::exists(a.output) && !a.force) throw usage_error("the output " + a.output + " exists (use --force to replace it)");
  std::error_code ec;
  if (fs::equivalent(a.output, a.model, ec)) throw usage_error("the output must not be the model");
  const auto stats = nashprune_tool::measure_calibration(a.model, a.run, !a.no_moments, "calibrate");
  calibrate::write_stats(a.output, stats, a.force);
  std::cout << "calibrated " << a.model << " on " << stats.tokens << " tokens of " << a.run.text << " (context " << stats.context
            << ")\nwrote " << a.output << '\n';
  for (std::size_t i = 0; i < stats.layers.size(); ++i) {
    const auto& l = stats.layers[i];
    std::cout << "  layer " << i << ": block influence attention " << l.attn_influence << ", mlp " << l.mlp_influence
              << ", layer " << l.layer_influence << '\n';
  }
  return 0;
}

void add_options(CLI::App& app, calibrate_args& a) {
  nashprune_tool::add_text_run_options(app, a.model, a.run, "calibration text file", false);
  app.add_option("-o,--output", a.output, "statistics file to write (GGUF)")->required();
  app.add_flag("--force", a.force, "replace an existing output");
  app.add_flag("--no-moments", a.no_moments,
               "leave out the mean and covariance of attn_output's and ffn_down's inputs (what prune --compensate "
               "refit|bias needs; (n_head·head_dim)² + n_ff² values per layer)");
}

const nashprune_tool::register_command calibrate_command{nashprune_tool::make_command<calibrate_args>(
    "calibrate", "Measure head redundancy, activation energy and block influence by running text through the model (llama.cpp)",
    "nashprune calibrate stories260K.gguf --text calibration.txt --tokens 4096 -o stats.gguf", add_options, run)};

}  // namespace
