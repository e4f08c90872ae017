// `nashprune generate OUT.gguf` (or -o OUT.gguf): writes the synthetic llama model with planted
// duplicate and near-zero heads (the embedded default of `nashprune prune`).
#include <gguf/float_encode.hpp>
#include <gguf/synthetic.hpp>

#include <iostream>

#include "command.hpp"

namespace {

struct generate_args {
  std::string output;
  gguf::synthetic_options synthetic;
  std::string weight_type = "f32";
  bool force = false;
};

void add_options(CLI::App& app, generate_args& a) {
  auto& o = a.synthetic;
  app.add_option("output,-o,--output", a.output, "GGUF file to write")->required();
  app.add_option("--layers", o.n_layer, "number of layers")->capture_default_str();
  app.add_option("--embd", o.n_embd, "embedding width")->capture_default_str();
  app.add_option("--heads", o.n_head, "query heads per layer")->capture_default_str();
  app.add_option("--kv-heads", o.n_head_kv, "KV heads per layer")->capture_default_str();
  app.add_option("--ffn", o.n_ff, "FFN width")->capture_default_str();
  app.add_option("--vocab", o.n_vocab, "vocabulary size (>= 259)")->capture_default_str();
  app.add_option("--seed", o.seed, "random seed")->capture_default_str();
  app.add_option("--type", a.weight_type, "type of the weight matrices: f32, f16 or bf16 (norms stay F32)")->capture_default_str();
  app.add_option("--planted-layers", o.planted_layers, "layers with planted heads (default 1 2)");
  app.add_flag("--force", a.force, "replace an existing output");
}

int run(const generate_args& a) {
  auto options = a.synthetic;
  const auto type = nashprune::find_ggml_type(a.weight_type);
  if (!type || !gguf::can_encode(type->type)) throw nashprune_tool::usage_error("--type " + a.weight_type + ": the weights can be f32, f16 or bf16");
  options.weight_type = type->type;
  const auto planted = gguf::generate_synthetic(a.output, options, {.force = a.force, .protect = {}});
  std::cout << "wrote " << a.output << '\n';
  for (const auto& p : planted) {
    std::cout << "  layer " << p.layer << " head " << p.head
              << (p.duplicate ? " duplicates head " + std::to_string(p.twin) : std::string(" is near zero")) << '\n';
  }
  return 0;
}

const nashprune_tool::register_command generate_command{nashprune_tool::make_command<generate_args>(
    "generate", "Write a synthetic llama GGUF with planted duplicate and near-zero heads",
    "nashprune generate synthetic.gguf --layers 4 --heads 8 --kv-heads 4", add_options, run)};

}  // namespace
