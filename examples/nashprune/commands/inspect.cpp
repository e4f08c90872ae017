// `nashprune inspect MODEL.gguf [--plan PLAN.json] [--quant TYPES.txt] [--metadata]`:
// the model's architecture, per-layer heads / KV heads / head size / FFN width,
// tensor types, parameter and byte counts; with a plan (as `prune --dry-run
// --plan-out` writes it), what the plan would remove and save; with a tensor type
// file (llama-quantize --tensor-type-file, as `quantize-plan` writes it for the
// pruned model, or for the model itself without --plan), the bytes per tensor
// kind and in total before, after pruning and after quantizing too
// (nashprune/memory_savings.hpp through report::bytes_per_kind).
#include <gguf/llama_model.hpp>
#include <gguf/prune_plan.hpp>

#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>

#include "command.hpp"
#include "io/plan_io.hpp"
#include "report/prune_report.hpp"

namespace {

void print_tensor_types(std::span<const gguf::tensor_view> tensors) {
  std::map<std::string, std::pair<int, std::uint64_t>> by_type;
  for (const auto& t : tensors) {
    auto& [count, bytes] = by_type[std::string(nashprune::traits_of(t.type).name)];
    ++count;
    bytes += t.bytes();
  }
  std::cout << "tensor types:";
  for (const auto& [name, cb] : by_type) std::cout << "  " << name << " x" << cb.first << " (" << nashprune_tool::human_bytes(cb.second) << ")";
  std::cout << '\n';
}

using nashprune_tool::usage_error;

/// A --tensor-type-file of whole anchored names ("^blk\\.0\\.attn_q\\.weight$=q4_0",
/// as quantize-plan writes it): name -> type. Throws a usage error naming the file
/// and line for any other line, an unknown type, a name given twice or a name
/// that is no tensor of `output`.
std::map<std::string, nashprune::ggml_type> read_tensor_types(const std::string& path, std::span<const gguf::tensor_spec> output, bool pruned) {
  std::ifstream in(path);
  if (!in) throw usage_error("--quant: cannot read " + path);
  std::map<std::string, nashprune::ggml_type> types;
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    const std::string at = "--quant " + path + ": line " + std::to_string(number) + ": ";
    if (line.empty()) continue;
    const auto equals = line.rfind('=');
    if (!line.starts_with('^') || equals == std::string::npos || equals < 2 || line[equals - 1] != '$') {
      throw usage_error(at + "expected ^NAME$=TYPE (a tensor type file of whole names, as quantize-plan writes), got '" + line + "'");
    }
    std::string name;
    for (std::size_t i = 1; i + 1 < equals; ++i) {
      if (line[i] == '\\' && i + 2 < equals) ++i;
      name += line[i];
    }
    const auto type = nashprune::find_ggml_type(line.substr(equals + 1));
    if (!type) throw usage_error(at + "unknown type '" + line.substr(equals + 1) + "'");
    if (std::none_of(output.begin(), output.end(), [&](const gguf::tensor_spec& t) { return t.name == name; })) {
      throw usage_error(at + "'" + name + "' is no tensor of the model" + (pruned ? " after pruning" : "") + " (a type file of another model?)");
    }
    if (!types.emplace(name, type->type).second) throw usage_error(at + "'" + name + "' is given twice");
  }
  return types;
}

void print_bytes_per_kind(const gguf::reader& model, const gguf::prune_plan& plan, const gguf::pruned_model& result,
                          const std::string& quant_path, bool pruned) {
  const auto types = read_tensor_types(quant_path, result.tensors, pruned);
  const auto pruned_only = report::bytes_per_kind(report::tensor_entries(model, plan, result));
  std::vector<report::kind_bytes> quantized;
  try {
    quantized = report::bytes_per_kind(report::tensor_entries(model, plan, result, types));
  } catch (const std::invalid_argument& e) {
    throw usage_error("--quant " + quant_path + ": " + e.what());
  }
  std::cout << "\nbytes per tensor kind" << (pruned ? " (before, pruned, pruned and quantized):\n" : " (before, quantized):\n");
  std::cout << std::left << std::setw(24) << "kind" << std::right << std::setw(8) << "tensors" << std::setw(14) << "before";
  if (pruned) std::cout << std::setw(14) << "pruned";
  std::cout << std::setw(14) << "quantized" << std::setw(10) << "saved\n";
  nashprune::tensor_bytes total;
  std::int64_t total_pruned = 0, tensors = 0;
  auto row = [&](const std::string& kind, std::int64_t count, std::int64_t before, std::int64_t after_pruning, std::int64_t after) {
    const double saved = before > 0 ? 100.0 * static_cast<double>(before - after) / static_cast<double>(before) : 0.0;
    std::cout << std::left << std::setw(24) << kind << std::right << std::setw(8) << count << std::setw(14) << before;
    if (pruned) std::cout << std::setw(14) << after_pruning;
    std::cout << std::setw(14) << after << std::setw(8) << std::fixed << std::setprecision(1) << saved << " %\n" << std::defaultfloat;
  };
  for (std::size_t k = 0; k < quantized.size(); ++k) {
    const auto& q = quantized[k];
    row(q.kind, q.tensors, q.bytes.before, pruned_only[k].bytes.after, q.bytes.after);
    total.before += q.bytes.before;
    total.after += q.bytes.after;
    total_pruned += pruned_only[k].bytes.after;
    tensors += q.tensors;
  }
  row("total", tensors, total.before, total_pruned, total.after);
}

int run_inspect(const std::string& path, const std::string& plan_path, const std::string& quant_path, bool show_metadata) {
  const auto model = gguf::reader::open(path);
  if (show_metadata) {
    for (const auto& [key, v] : model.metadata()) std::cout << key << " = " << gguf::to_string(v) << '\n';
    std::cout << '\n';
  }
  const auto shape = gguf::llama_shape::read(model);
  std::cout << "model:        " << path << '\n';
  nashprune_tool::print_shape(std::cout, shape);
  print_tensor_types(model.tensors());
  const auto before = gguf::totals(model.tensors());
  std::cout << "tensors:      " << model.tensors().size() << '\n'
            << "parameters:   " << before.parameters << '\n'
            << "tensor bytes: " << before.bytes << " (" << nashprune_tool::human_bytes(before.bytes) << "), file "
            << model.file_size() << " bytes\n";
  const auto plan = plan_path.empty() ? gguf::keep_all(shape) : nashprune_tool::read_plan_json(plan_path, shape);
  const auto out = gguf::plan_output(model, shape, plan, {});
  if (!plan_path.empty()) {
    std::cout << "\nwith plan " << plan_path << ":\n";
    nashprune_tool::print_plan_summary(std::cout, shape, plan, out, before);
  }
  if (!quant_path.empty()) print_bytes_per_kind(model, plan, out, quant_path, !plan_path.empty());
  return 0;
}

struct inspect_args {
  std::string model;
  std::string plan;
  std::string quant;
  bool metadata = false;
};

void add_options(CLI::App& app, inspect_args& a) {
  app.add_option("model", a.model, "GGUF model file")->required();
  app.add_option("--plan", a.plan, "a plan JSON written by `nashprune prune --dry-run --plan-out`");
  app.add_option("--quant", a.quant,
                 "a tensor type file (quantize-plan -o) for the model, or with --plan for the pruned model: bytes per tensor kind "
                 "before and after");
  app.add_flag("--metadata", a.metadata, "also print every metadata key");
}

const nashprune_tool::register_command inspect_command{nashprune_tool::make_command<inspect_args>(
    "inspect", "Show a GGUF model's shape, tensor types and sizes (and what a pruning or quantization plan would save)",
    "nashprune inspect stories260K.gguf --plan plan.json --quant tensor-types.txt", add_options,
    [](const inspect_args& a) { return run_inspect(a.model, a.plan, a.quant, a.metadata); })};

}  // namespace
