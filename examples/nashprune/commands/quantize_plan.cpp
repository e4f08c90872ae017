// `nashprune quantize-plan MODEL (--bpw B | --size BYTES) [--calibration STATS | --imatrix FILE]
//  [--types q4_0,q5_0,...] [--method hull|quantile] [--sensitivity energy|measured|scaled --text FILE [--tokens N]]
//  -o PLAN.txt [--run OUT.gguf]`:
// one quantization type per weight tensor under a size budget, from errors measured
// with ggml's own quantizers (quantize/quantize_plan.hpp), weighted by input energy or
// replaced by the loss each costs on a text, written as llama-quantize's
// --tensor-type-file; prints the llama-quantize command, and with --run runs it and
// checks the file it writes. Built with the llama.cpp the project provisions
// (NASHPRUNE_LLAMA_CPP_DIR); without it the command says so.
#include <cmath>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "command.hpp"

#ifdef NASHPRUNE_HAVE_QUANTIZE_PLAN
#include <sys/wait.h>

#include "gguf/gguf.hpp"
#include "io/llama_program.hpp"
#include "quantize/quantize_plan.hpp"
#endif

namespace {

using nashprune_tool::usage_error;

struct quantize_plan_args {
  std::string model;
  std::optional<double> bpw;
  std::optional<std::int64_t> size;
  std::string calibration;
  std::string imatrix;
  std::string types = "q4_0,q4_1,q5_0,q5_1,q8_0,f16";
  std::string method = "hull";
  std::string sensitivity = "energy";
  std::string costs, save_costs;
  nashprune_tool::text_run_args loss;  // --sensitivity measured (its threads are -t)
  std::string output;
  std::string run;
  std::string llama_bin;
  std::int64_t sample_weights = 1 << 20;
  int threads = 0;
};

#ifdef NASHPRUNE_HAVE_QUANTIZE_PLAN
namespace fs = std::filesystem;

std::string shell_quoted(const std::string& s) {
  if (!s.empty() && s.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./=+,:") == std::string::npos) return s;
  std::string q = "'";
  for (const char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

/// llama-quantize's arguments after the program.
std::vector<std::string> quantize_arguments(const quantize_plan_args& a, const quantize::quantization_plan& plan, const std::string& out) {
  std::vector<std::string> args;
  if (plan.requantize) args.emplace_back("--allow-requantize");
  if (!a.imatrix.empty()) {
    args.emplace_back("--imatrix");
    args.push_back(a.imatrix);
  }
  args.emplace_back("--tensor-type-file");
  args.push_back(a.output);
  args.push_back(a.model);
  args.push_back(out);
  args.push_back(plan.base_type);
  return args;
}

std::string scientific(double v) {
  std::ostringstream s;
  s << std::setprecision(4) << v;
  return s.str();
}

int run_llama_quantize(const quantize_plan_args& a, const quantize::quantization_plan& plan) {
  const std::string program = nashprune_tool::find_llama_program("llama-quantize", a.llama_bin);
  std::vector<std::string> argv{program};
  for (auto& arg : quantize_arguments(a, plan, a.run)) argv.push_back(std::move(arg));
  const fs::path log = a.run + ".log";
  const int status = nashprune_tool::run_to_file(argv, log);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    throw std::runtime_error("llama-quantize ended with " + nashprune_tool::describe_status(status) + "; its output is in " + log.string());
  }
  const auto written = gguf::reader::open(a.run);
  std::size_t mismatched = 0;
  for (const auto& p : plan.tensors) {
    const auto& t = written.tensor(p.name);
    if (t.type != p.chosen) {
      std::cerr << "  " << p.name << ": planned " << nashprune::traits_of(p.chosen).name << ", llama-quantize wrote "
                << nashprune::traits_of(t.type).name << '\n';
      ++mismatched;
    }
  }
  const auto bytes = static_cast<std::int64_t>(fs::file_size(a.run));
  std::cout << "llama-quantize wrote " << a.run << ": " << bytes << " bytes (predicted " << plan.predicted_file_bytes << ")";
  if (plan.requested_file_bytes > 0) std::cout << ", budget " << plan.requested_file_bytes;
  std::cout << "\n";
  if (mismatched > 0) throw std::runtime_error(std::to_string(mismatched) + " tensor(s) of " + a.run + " differ from the plan; see " + log.string());
  if (plan.requested_file_bytes > 0 && bytes > plan.requested_file_bytes) {
    throw std::runtime_error(a.run + " has " + std::to_string(bytes) + " bytes, over the --size budget of " +
                             std::to_string(plan.requested_file_bytes));
  }
  fs::remove(log);
  return 0;
}
#endif

int run(const quantize_plan_args& a) {
  if (a.bpw.has_value() == a.size.has_value()) throw usage_error("give exactly one of --bpw and --size");
  if (a.method != "hull" && a.method != "quantile") throw usage_error("--method must be hull or quantile, got '" + a.method + "'");
  if (a.sensitivity != "energy" && a.sensitivity != "measured" && a.sensitivity != "scaled") {
    throw usage_error("--sensitivity must be energy, measured or scaled, got '" + a.sensitivity + "'");
  }
  const bool measured = a.sensitivity != "energy";
  if (measured && !a.costs.empty()) throw usage_error("give at most one of --costs and --sensitivity " + a.sensitivity);
  if (measured && a.loss.text.empty()) throw usage_error("--sensitivity " + a.sensitivity + " needs --text (the text whose loss it measures)");
  if (!measured && !a.loss.text.empty()) throw usage_error("--text is read only with --sensitivity measured or scaled");
#ifdef NASHPRUNE_HAVE_QUANTIZE_PLAN
  std::error_code ec;
  if (!a.run.empty() && fs::equivalent(a.run, a.model, ec)) throw usage_error("--run: the output must not be the model");
  if (fs::equivalent(a.output, a.model, ec)) throw usage_error("-o: the plan must not overwrite the model");
  quantize::plan_options o;
  o.model = a.model;
  o.bits_per_weight = a.bpw;
  o.file_bytes = a.size;
  o.calibration = a.calibration;
  o.imatrix = a.imatrix;
  o.types = quantize::parse_types(a.types);
  o.quantile = a.method == "quantile";
  o.sample_weights = a.sample_weights;
  o.threads = a.threads;
  if (measured) {
    if (!fs::is_regular_file(a.loss.text)) throw usage_error("--text: cannot read " + a.loss.text);
    o.loss = calibrate::text_source{a.model, a.loss.text, a.loss.tokens, a.loss.context, a.threads};
    o.score_from = a.loss.score_from;
    o.scale_energy = a.sensitivity == "scaled";
  }
  o.costs = a.costs;
  if (!a.save_costs.empty() && fs::equivalent(a.save_costs, a.model, ec)) throw usage_error("--save-costs must not overwrite the model");
  const auto plan = quantize::make_plan(o);
  if (!a.save_costs.empty()) quantize::write_costs(a.save_costs, plan);
  for (const auto& note : plan.notes) std::cout << "note: " << note << '\n';
  std::cout << std::left << std::setw(28) << "tensor" << std::setw(14) << "shape" << std::setw(20) << "weighting" << std::setw(8) << "type"
            << "error\n";
  for (const auto& p : plan.tensors) {
    double error = 0;
    for (std::size_t k = 0; k < plan.types.size(); ++k) {
      if (plan.types[k] == p.chosen) error = p.errors[k];
    }
    std::cout << std::setw(28) << p.name << std::setw(14) << (std::to_string(p.row_length) + "x" + std::to_string(p.rows)) << std::setw(20)
              << p.weighting << std::setw(8) << nashprune::traits_of(p.chosen).name << (p.fixed ? "(fixed)" : scientific(error)) << '\n';
  }
  std::cout << std::right;
  const auto& al = plan.allocation;
  const double bits = 8.0 * static_cast<double>(plan.planned_bytes) / static_cast<double>(plan.planned_weights);
  std::cout << "method " << a.method << ": " << plan.tensors.size() << " tensors, " << plan.planned_weights << " weights, "
            << plan.planned_bytes << " bytes (" << std::setprecision(4) << bits << " bits per weight), budget " << plan.budget_bytes
            << " bytes for the tensors with a choice\n";
  const double relative_gap = al.error > 0 ? al.gap_bound / al.error : 0.0;
  std::cout << "predicted error " << scientific(al.error) << ", LP lower bound " << scientific(al.lower_bound) << ", gap <= "
            << scientific(al.gap_bound) << " (" << scientific(100.0 * relative_gap) << " %)\n";
  if (measured) {
    std::cout << "sensitivity: the loss increase with each tensor alone quantized (W+d and W-d averaged"
              << (o.scale_energy ? "; at its type of fewest bits, scaling the energy errors" : "") << "), over " << plan.predicted_tokens
              << " predicted tokens of " << a.loss.text << " (unquantized mean NLL " << std::setprecision(10) << plan.baseline_nll << ", "
              << plan.loss_passes << " passes)\n";
  }
  std::cout << "predicted file " << plan.predicted_file_bytes << " bytes";
  if (plan.requested_file_bytes > 0) std::cout << " (--size " << plan.requested_file_bytes << ")";
  std::cout << "; measured " << plan.tensors.size() << " tensors x " << plan.types.size() << " types in " << std::setprecision(3)
            << plan.seconds_measuring << " s\n";
  if (plan.requested_file_bytes > 0 && plan.predicted_file_bytes > plan.requested_file_bytes) {
    std::cout << "warning: the " << a.method << " plan's file exceeds the --size budget\n";
  }
  quantize::write_tensor_type_file(a.output, plan);
  std::cout << "wrote " << a.output << "\nllama-quantize";
  for (const auto& arg : quantize_arguments(a, plan, a.run.empty() ? "OUT.gguf" : a.run)) std::cout << ' ' << shell_quoted(arg);
  std::cout << '\n';
  if (!a.run.empty()) return run_llama_quantize(a, plan);
  return 0;
#else
  throw usage_error("this nashprune was built without llama.cpp: configure with -DNASHPRUNE_LLAMA_CPP_DIR=<tree from cmake/provision-llama-cpp.sh> to use quantize-plan (it measures errors with ggml's quantizers)");
#endif
}

void add_options(CLI::App& app, quantize_plan_args& a) {
  app.add_option("model", a.model, "input GGUF (F32, F16 or already quantized: then llama-quantize requantizes)")->required();
  auto* bpw = app.add_option("--bpw", a.bpw, "average bits per weight over the tensors llama-quantize quantizes");
  auto* size = app.add_option("--size", a.size, "the output file's size in bytes");
  bpw->excludes(size);
  auto* calibration = app.add_option("--calibration", a.calibration, "statistics from nashprune calibrate (input energies)");
  auto* imatrix = app.add_option("--imatrix", a.imatrix, "llama-imatrix output (input energies; passed to ggml and llama-quantize)");
  calibration->excludes(imatrix);
  app.add_option("--types", a.types, "candidate types, comma-separated")->capture_default_str();
  app.add_option("--sensitivity", a.sensitivity,
                 "a tensor's cost per type: energy (its squared error weighted by its input's energy), measured (the loss on "
                 "--text with that tensor alone quantized, W+d and W-d averaged: 1 + 2 x tensors x types passes through llama.cpp) "
                 "or scaled (that loss at each tensor's type of fewest bits, times its energy errors' ratios: 1 + 2 x tensors passes)")
      ->capture_default_str();
  app.add_option("--text", a.loss.text, "calibration text whose loss --sensitivity measured or scaled measures");
  app.add_option("--tokens", a.loss.tokens, "--sensitivity measured or scaled: at most this many tokens of --text (0: every whole context)")
      ->capture_default_str();
  app.add_option("-c,--ctx", a.loss.context, "--sensitivity measured or scaled: tokens per evaluated chunk")->capture_default_str();
  app.add_option("--score-from", a.loss.score_from, "--sensitivity measured or scaled: predictions from this position of each chunk on count")
      ->capture_default_str();
  app.add_option("--save-costs", a.save_costs, "write every tensor's cost per type (tab-separated) for --costs");
  app.add_option("--costs", a.costs, "costs written by --save-costs for this model and --types, instead of measuring");
  app.add_option("--method", a.method, "hull (convex-hull allocator with LP bound) or quantile (the seed's rule)")->capture_default_str();
  app.add_option("-o,--output", a.output, "tensor type file to write (llama-quantize --tensor-type-file)")->required();
  app.add_option("--run", a.run, "run llama-quantize to write this GGUF and check it");
  app.add_option("--llama-bin", a.llama_bin, "llama-quantize, or its folder (default: $NASHPRUNE_LLAMA_BIN, then the provisioned build, then $PATH)");
  app.add_option("--sample-weights", a.sample_weights, "measure each tensor on evenly spaced rows holding about this many weights (0: all)")->capture_default_str();
  app.add_option("-t,--threads", a.threads, "threads measuring (0: all cores)")->capture_default_str();
}

const nashprune_tool::register_command quantize_plan_command{nashprune_tool::make_command<quantize_plan_args>(
    "quantize-plan", "Choose a quantization type per tensor under a size budget, from errors measured with ggml, for llama-quantize",
    "nashprune quantize-plan model-f16.gguf --bpw 5 -o tensor-types.txt --run model-5bpw.gguf", add_options, run)};

}  // namespace
