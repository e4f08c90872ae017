// `nashprune generate OUT.gguf`: writes the synthetic llama model with planted
// duplicate and near-zero heads (the embedded default of `nashprune prune`).
#include <gguf/synthetic.hpp>

#include <iostream>

#include "command.hpp"

namespace {

const nashprune_tool::register_command generate_command{{
    "generate", "Write a synthetic llama GGUF with planted duplicate and near-zero heads",
    [](CLI::App& app) -> std::function<int()> {
      auto path = std::make_shared<std::string>();
      auto o = std::make_shared<gguf::synthetic_options>();
      auto force = std::make_shared<bool>(false);
      app.add_option("output", *path, "GGUF file to write")->required();
      app.add_option("--layers", o->n_layer, "number of layers")->capture_default_str();
      app.add_option("--embd", o->n_embd, "embedding width")->capture_default_str();
      app.add_option("--heads", o->n_head, "query heads per layer")->capture_default_str();
      app.add_option("--kv-heads", o->n_head_kv, "KV heads per layer")->capture_default_str();
      app.add_option("--ffn", o->n_ff, "FFN width")->capture_default_str();
      app.add_option("--vocab", o->n_vocab, "vocabulary size (>= 259)")->capture_default_str();
      app.add_option("--seed", o->seed, "random seed")->capture_default_str();
      app.add_option("--planted-layers", o->planted_layers, "layers with planted heads (default 1 2)");
      app.add_flag("--force", *force, "replace an existing output");
      return [=] {
        const auto planted = gguf::generate_synthetic(*path, *o, {.force = *force, .protect = {}});
        std::cout << "wrote " << *path << '\n';
        for (const auto& p : planted) {
          std::cout << "  layer " << p.layer << " head " << p.head
                    << (p.duplicate ? " duplicates head " + std::to_string(p.twin) : std::string(" is near zero")) << '\n';
        }
        return 0;
      };
    }}};

}  // namespace
