// `nashprune generate OUT.gguf` (or -o OUT.gguf): writes the synthetic llama model with planted
// duplicate and near-zero heads (the embedded default of `nashprune prune`).
#include <gguf/synthetic.hpp>

#include <iostream>

#include "command.hpp"

namespace {

struct generate_args {
  std::string output;
  std::string type = "f32";
  gguf::synthetic_options synthetic;
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
  app.add_option("--type", a.type, "type of the matrices: f32 | f16 | bf16 (norm weights stay f32)")->capture_default_str();
  app.add_option("--planted-layers", o.planted_layers, "layers with planted heads (default 1 2)");
  app.add_flag("--force", a.force, "replace an existing output");
}

int run(generate_args a) {
  if (a.type == "f32") {
    a.synthetic.weight_type = nashprune::ggml_type::f32;
  } else if (a.type == "f16") {
    a.synthetic.weight_type = nashprune::ggml_type::f16;
  } else if (a.type == "bf16") {
    a.synthetic.weight_type = nashprune::ggml_type::bf16;
  } else {
    throw nashprune_tool::usage_error("--type must be f32, f16 or bf16, got '" + a.type + "'");
  }
  const auto planted = gguf::generate_synthetic(a.output, a.synthetic, {.force = a.force, .protect = {}});
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
