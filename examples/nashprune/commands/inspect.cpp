// `nashprune inspect MODEL.gguf [--plan PLAN.json] [--metadata]`: the model's
// architecture, per-layer heads / KV heads / head size / FFN width, tensor
// types, parameter and byte counts; with a plan (as `prune --dry-run
// --plan-out` writes it), what the plan would remove and save.
#include <gguf/llama_model.hpp>
#include <gguf/prune_plan.hpp>

#include <iomanip>
#include <iostream>
#include <map>

#include "command.hpp"
#include "io/plan_io.hpp"

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

int run_inspect(const std::string& path, const std::string& plan_path, bool show_metadata) {
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
  if (!plan_path.empty()) {
    const auto plan = nashprune_tool::read_plan_json(plan_path, shape);
    const auto out = gguf::plan_output(model, shape, plan, {});
    std::cout << "\nwith plan " << plan_path << ":\n";
    nashprune_tool::print_plan_summary(std::cout, shape, plan, out, before);
  }
  return 0;
}

struct inspect_args {
  std::string model;
  std::string plan;
  bool metadata = false;
};

void add_options(CLI::App& app, inspect_args& a) {
  app.add_option("model", a.model, "GGUF model file")->required();
  app.add_option("--plan", a.plan, "a plan JSON written by `nashprune prune --dry-run --plan-out`");
  app.add_flag("--metadata", a.metadata, "also print every metadata key");
}

const nashprune_tool::register_command inspect_command{nashprune_tool::make_command<inspect_args>(
    "inspect", "Show a GGUF model's shape, tensor types and sizes (and what a plan would save)",
    "nashprune inspect stories260K.gguf --plan plan.json", add_options,
    [](const inspect_args& a) { return run_inspect(a.model, a.plan, a.metadata); })};

}  // namespace
