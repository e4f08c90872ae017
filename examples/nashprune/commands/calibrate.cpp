// `nashprune calibrate MODEL.gguf --text FILE [--tokens N] [--ctx N] -o STATS.gguf`:
// runs calibration text through the model with llama.cpp and writes the
// activation statistics (head Gram/cosine matrices, activation energies, block
// influence, the input moments of attn_output and ffn_down; format in calibrate/calibration_stats.hpp) that
// `nashprune prune --calibration STATS.gguf` reads. Built with the llama.cpp the
// project provisions (NASHPRUNE_LLAMA_CPP_DIR); without it the command says so.
#include <filesystem>
#include <iostream>
#include <memory>

#include <unistd.h>

#include "command.hpp"
#include "io/calibration_file.hpp"
#include "io/calibration_run.hpp"
#include "io/plan_io.hpp"

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
  std::uint64_t max_memory = 0;  // 0: default_moment_budget()
};

// A quarter of the physical memory: the model's weights and llama.cpp's buffers need the rest.
std::uint64_t default_moment_budget() {
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page_size = sysconf(_SC_PAGE_SIZE);
  if (pages <= 0 || page_size <= 0) return std::uint64_t{4} << 30;
  return static_cast<std::uint64_t>(pages) * static_cast<std::uint64_t>(page_size) / 4;
}

// The groups of layers whose input moments each run of the text records, printed.
calibrate::moment_plan moment_plan_for(const calibrate_args& a) {
  const auto model = calibrate::fingerprint::of(gguf::llama_shape::read(gguf::reader::open(a.model)));
  const std::uint64_t budget = a.max_memory > 0 ? a.max_memory : default_moment_budget();
  const std::uint64_t smallest = calibrate::smallest_moment_budget(model);
  if (budget < smallest) {
    throw usage_error("--max-memory " + nashprune_tool::human_bytes(budget) +
                      " cannot hold one layer's input moments (the mean and second moment of attn_output's and ffn_down's "
                      "inputs, 8·(n + n²) bytes each, and their staged rows); the smallest budget that works is " + std::to_string(smallest) + " bytes (" +
                      nashprune_tool::human_bytes(smallest) + "), or --no-moments leaves the moments out");
  }
  auto plan = calibrate::plan_moment_passes(model, budget);
  std::cout << "input moments: " << nashprune_tool::human_bytes(plan.total_bytes) << " for " << model.layers.size() << " layers, budget "
            << nashprune_tool::human_bytes(budget) << (a.max_memory > 0 ? "" : " (a quarter of the physical memory)") << ": "
            << plan.groups.size() << (plan.groups.size() == 1 ? " group, 1 pass" : " groups, " + std::to_string(plan.groups.size()) + " passes")
            << " of the text, at most " << nashprune_tool::human_bytes(plan.largest_group_bytes) << " at once\n";
  if (plan.groups.size() > 1) {
    for (std::size_t g = 0; g < plan.groups.size(); ++g) {
      std::cout << "  pass " << g + 1 << ": layers " << plan.groups[g].front() << "-" << plan.groups[g].back() << '\n';
    }
  }
  return plan;
}

int run(const calibrate_args& a) {
  namespace fs = std::filesystem;
  if (fs::exists(a.output) && !a.force) throw usage_error("the output " + a.output + " exists (use --force to replace it)");
  std::error_code ec;
  if (fs::equivalent(a.output, a.model, ec)) throw usage_error("the output must not be the model");
  calibrate::calibration_stats stats;
  if (a.no_moments) {
    stats = nashprune_tool::measure_calibration(a.model, a.run, false, "calibrate");
    calibrate::write_stats(a.output, stats, a.force);
  } else {
    const auto plan = moment_plan_for(a);
    stats = nashprune_tool::calibrate_into_file(a.model, a.run, plan, a.output, a.force, "calibrate");
  }
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
  app.add_option("--max-memory", a.max_memory,
                 "most memory for the input moments (bytes, or with a suffix: 512M, 8G; default a quarter of the physical "
                 "memory); when every layer's do not fit, the text is run once per group of layers")
      ->transform(CLI::AsSizeValue(false));
}

const nashprune_tool::register_command calibrate_command{nashprune_tool::make_command<calibrate_args>(
    "calibrate", "Measure head redundancy, activation energy and block influence by running text through the model (llama.cpp)",
    "nashprune calibrate stories260K.gguf --text calibration.txt --tokens 4096 -o stats.gguf", add_options, run)};

}  // namespace
