// Test driver for the llama integration cases: applies an explicit structural
// plan to a llama/deci GGUF through the tool's own plan application
// (examples/gguf/prune_plan.hpp), so that every structure llama.cpp must load
// is produced on purpose rather than left to what a score happens to choose.
//
//   llama_apply_plan IN.gguf OUT.gguf [--groups G,...] [--heads-per-group K]
//                    [--ffn N,...] [--drop L,...]
//
// --groups: KV groups each layer keeps (the last G groups, so slices are not
//   prefixes; 0 = an attention-free layer); --heads-per-group: query heads kept
//   in each kept group (its first K); --ffn: FFN channels each layer keeps (every
//   other channel first, then the rest; 0 = an FFN-free layer); --drop: layers
//   removed. A list of one value applies to every layer.
#include <gguf/llama_model.hpp>
#include <gguf/prune_plan.hpp>

#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

std::vector<std::int64_t> parse_list(const std::string& text) {
  std::vector<std::int64_t> values;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) values.push_back(std::stoll(item));
  return values;
}

std::int64_t for_layer(const std::vector<std::int64_t>& values, std::int64_t layer, std::int64_t fallback) {
  if (values.empty()) return fallback;
  if (values.size() == 1) return values.front();
  if (layer >= static_cast<std::int64_t>(values.size())) throw std::invalid_argument("list shorter than the layer count");
  return values[static_cast<std::size_t>(layer)];
}

gguf::prune_plan make_plan(const gguf::llama_shape& shape, const std::vector<std::int64_t>& groups,
                           std::int64_t heads_per_group, const std::vector<std::int64_t>& ffn,
                           const std::vector<std::int64_t>& drop) {
  auto plan = gguf::keep_all(shape);
  for (std::int64_t l = 0; l < shape.n_layer(); ++l) {
    const auto& in = shape.layers[static_cast<std::size_t>(l)];
    auto& out = plan.layers[static_cast<std::size_t>(l)];
    if (in.has_attention()) {
      const std::int64_t kept_groups = for_layer(groups, l, in.n_head_kv);
      const std::int64_t per_group = heads_per_group > 0 ? heads_per_group : in.group_size();
      out.heads = {};
      for (std::int64_t g = in.n_head_kv - kept_groups; g < in.n_head_kv; ++g) {
        out.heads.kv_heads.push_back(g);
        for (std::int64_t h = 0; h < per_group; ++h) out.heads.q_heads.push_back(g * in.group_size() + h);
      }
    }
    const std::int64_t kept_channels = for_layer(ffn, l, in.n_ff);
    out.channels.clear();
    for (std::int64_t parity : {0, 1}) {
      for (std::int64_t c = parity; c < in.n_ff; c += 2) {
        if (static_cast<std::int64_t>(out.channels.size()) < kept_channels) out.channels.push_back(c);
      }
    }
    std::sort(out.channels.begin(), out.channels.end());
  }
  for (auto l : drop) plan.layers.at(static_cast<std::size_t>(l)).keep_layer = false;
  return plan;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: llama_apply_plan IN.gguf OUT.gguf [--groups G,...] [--heads-per-group K] "
                 "[--ffn N,...] [--drop L,...]\n";
    return 2;
  }
  try {
    std::vector<std::int64_t> groups, ffn, drop;
    std::int64_t heads_per_group = 0;
    for (int i = 3; i + 1 < argc; i += 2) {
      const std::string option = argv[i], value = argv[i + 1];
      if (option == "--groups") groups = parse_list(value);
      else if (option == "--heads-per-group") heads_per_group = std::stoll(value);
      else if (option == "--ffn") ffn = parse_list(value);
      else if (option == "--drop") drop = parse_list(value);
      else throw std::invalid_argument("unknown option " + option);
    }
    const auto in = gguf::reader::open(argv[1]);
    const auto shape = gguf::llama_shape::read(in);
    const auto plan = make_plan(shape, groups, heads_per_group, ffn, drop);
    const auto result =
        gguf::plan_output(in, shape, plan, {{"general.pruning.method", gguf::value::string("explicit test plan")}});
    gguf::writer out(argv[2], {.force = true, .protect = {argv[1]}});
    out.begin(result.metadata, result.tensors);
    gguf::write_tensors(in, result, out);
    out.commit();
    std::cout << "llama_apply_plan: wrote " << argv[2] << " (" << result.shape.architecture << ", "
              << result.shape.n_layer() << " layers; heads";
    for (const auto& layer : result.shape.layers) std::cout << ' ' << layer.n_head << '/' << layer.n_head_kv;
    std::cout << "; ffn";
    for (const auto& layer : result.shape.layers) std::cout << ' ' << layer.n_ff;
    std::cout << ")\n";
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "llama_apply_plan: " << e.what() << '\n';
    return 1;
  }
}
