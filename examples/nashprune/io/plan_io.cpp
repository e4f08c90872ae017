// Shared printing and plan files of the nashprune tool.
#include "io/plan_io.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <map>
#include <iomanip>
#include <sstream>

#include "command.hpp"
#include "io/json_io.hpp"

namespace nashprune_tool {

std::string human_bytes(std::uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024.0 && u < 4) {
    v /= 1024.0;
    ++u;
  }
  std::ostringstream s;
  s << std::fixed << std::setprecision(u == 0 ? 0 : 1) << v << ' ' << units[u];
  return s.str();
}

namespace {
// A --tensor-type pattern of llama-quantize (a regular expression searched in the
// tensor's name) that matches `name` alone.
std::string exact_pattern(const std::string& name) {
  std::string pattern = "^";
  for (const char c : name) {
    if (c == '.') pattern += '\\';
    pattern += c;
  }
  return pattern + "$";
}

std::string upper(std::string_view text) {
  std::string s(text);
  for (auto& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}
}  // namespace

void print_retyped(std::ostream& out, const gguf::pruned_model& result, const std::string& output) {
  if (result.retyped.empty()) return;
  std::map<std::string, nashprune::ggml_type> wanted;
  for (const auto& t : result.retyped) wanted[t.name] = t.original;
  // Those whose rows are whole blocks of their type can go back to it; the type
  // most of them had is the command's, every other weight keeps its own by an
  // explicit --tensor-type.
  std::map<nashprune::ggml_type, int> counts;
  std::vector<const gguf::tensor_spec*> restorable;
  std::vector<const gguf::tensor_spec*> staying;
  for (const auto& spec : result.tensors) {
    const auto w = wanted.find(spec.name);
    if (w == wanted.end()) continue;
    const bool whole_blocks = spec.dims[0] % nashprune::traits_of(w->second).block_size == 0;
    (whole_blocks ? restorable : staying).push_back(&spec);
    if (whole_blocks) ++counts[w->second];
  }
  out << "written F16 in place of their quantized type (a column slice splits its blocks, or compensation's values cannot be "
         "requantized here):";
  for (const auto& t : result.retyped) out << ' ' << t.name << " (" << nashprune::traits_of(t.original).name << ")";
  out << '\n';
  if (!staying.empty()) {
    out << "  stay F16 (rows not whole blocks of their type):";
    for (const auto* spec : staying) out << ' ' << spec->name << " (" << spec->dims[0] << " values a row)";
    out << '\n';
  }
  if (restorable.empty()) return;
  const auto target = std::ranges::max_element(counts, {}, [](const auto& c) { return c.second; })->first;
  const auto& target_traits = nashprune::traits_of(target);
  std::string overrides;
  for (const auto& spec : result.tensors) {
    const auto w = wanted.find(spec.name);
    const bool staying_f16 = std::ranges::find(staying, &spec) != staying.end();
    // llama-quantize would give every matrix weight the command's type: keep the one each has or had.
    const auto type = w != wanted.end() && !staying_f16 ? w->second : spec.type;
    if (spec.dims.size() >= 2 && spec.name.ends_with("weight") && type != target) {
      overrides += " --tensor-type '" + exact_pattern(spec.name) + "=" + std::string(nashprune::traits_of(type).name) + "'";
    }
  }
  const auto stem = output.ends_with(".gguf") ? output.substr(0, output.size() - 5) : output;
  out << "  to quantize them back: llama-quantize --allow-requantize --pure" << overrides << " '" << output << "' '" << stem << '-'
      << target_traits.name << ".gguf' " << upper(target_traits.name) << '\n';
}

void print_shape(std::ostream& out, const gguf::llama_shape& shape) {
  out << "architecture: " << shape.architecture << "  layers " << shape.n_layer() << ", n_embd " << shape.n_embd
      << ", vocab " << shape.n_vocab << ", head size " << shape.head_dim_k;
  if (shape.head_dim_v != shape.head_dim_k) out << " (v " << shape.head_dim_v << ")";
  out << '\n' << "  layer  heads  kv_heads  group  head_dim  ffn\n";
  for (std::int64_t i = 0; i < shape.n_layer(); ++i) {
    const auto& l = shape.layers[static_cast<std::size_t>(i)];
    out << "  " << std::setw(5) << i << "  " << std::setw(5) << l.n_head << "  " << std::setw(8) << l.n_head_kv << "  "
        << std::setw(5) << l.group_size() << "  " << std::setw(8) << shape.head_dim_k << "  " << std::setw(5) << l.n_ff
        << (l.has_attention() ? "" : "  (attention-free)") << '\n';
  }
}

void print_plan_summary(std::ostream& out, const gguf::llama_shape& shape, const gguf::prune_plan& plan,
                        const gguf::pruned_model& result, const gguf::tensor_totals& before) {
  std::int64_t heads_before = 0;
  std::int64_t heads_after = 0;
  for (std::size_t i = 0; i < plan.layers.size(); ++i) {
    const auto& p = plan.layers[i];
    const auto& l = shape.layers[i];
    heads_before += l.n_head;
    if (!p.keep_layer) {
      out << "  layer " << i << ": removed\n";
      continue;
    }
    heads_after += static_cast<std::int64_t>(p.heads.q_heads.size());
    const auto removed_heads = nashprune::complement_units(p.heads.q_heads, l.n_head);
    const auto removed_channels = l.n_ff - static_cast<std::int64_t>(p.channels.size());
    if (removed_heads.empty() && removed_channels == 0) continue;
    out << "  layer " << i << ":";
    if (!removed_heads.empty()) {
      out << " heads removed [";
      for (std::size_t k = 0; k < removed_heads.size(); ++k) out << (k ? " " : "") << removed_heads[k];
      out << "]";
      if (p.heads.q_heads.empty()) out << " (attention-free)";
    }
    if (removed_channels > 0) {
      out << " ffn channels removed " << removed_channels << " of " << l.n_ff << (p.channels.empty() ? " (FFN-free)" : "");
    }
    out << '\n';
  }
  const auto after = gguf::totals(result.tensors);
  const double saved = before.bytes == 0 ? 0.0 : 1.0 - static_cast<double>(after.bytes) / static_cast<double>(before.bytes);
  out << "  heads " << heads_before << " -> " << heads_after << ", parameters " << before.parameters << " -> "
      << after.parameters << ", tensor bytes " << human_bytes(before.bytes) << " -> " << human_bytes(after.bytes)
      << " (" << std::fixed << std::setprecision(1) << 100.0 * saved << " % saved), output architecture "
      << result.shape.architecture << '\n';
}

void write_plan_json(const std::string& path, const gguf::prune_plan& plan, const nlohmann::json& summary) {
  nlohmann::json layers = nlohmann::json::array();
  for (std::size_t i = 0; i < plan.layers.size(); ++i) {
    const auto& p = plan.layers[i];
    layers.push_back({{"layer", i}, {"keep", p.keep_layer}, {"q_heads", p.heads.q_heads},
                      {"kv_heads", p.heads.kv_heads}, {"channels", p.channels}});
  }
  auto document = summary;
  document["layers"] = std::move(layers);
  json_io::write_document(path, document, 1);
}

gguf::prune_plan read_plan_json(const std::string& path, const gguf::llama_shape& shape) {
  std::ifstream in(path);
  if (!in) throw usage_error("cannot read the plan file " + path);
  gguf::prune_plan plan;
  try {
    const auto json = nlohmann::json::parse(in);
    const auto& layers = json.at("layers");
    if (static_cast<std::int64_t>(layers.size()) != shape.n_layer()) {
      throw usage_error(path + ": plan has " + std::to_string(layers.size()) + " layers, the model " +
                        std::to_string(shape.n_layer()));
    }
    for (const auto& l : layers) {
      gguf::layer_plan p;
      p.keep_layer = l.at("keep").get<bool>();
      p.heads.q_heads = l.at("q_heads").get<std::vector<std::int64_t>>();
      p.heads.kv_heads = l.at("kv_heads").get<std::vector<std::int64_t>>();
      p.channels = l.at("channels").get<std::vector<std::int64_t>>();
      plan.layers.push_back(std::move(p));
    }
  } catch (const nlohmann::json::exception& e) {
    throw usage_error(path + ": not a plan file: " + e.what());
  }
  return plan;
}

}  // namespace nashprune_tool
