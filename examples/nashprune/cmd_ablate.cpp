// `nashprune ablate MODEL.gguf --text FILE [--tokens N] [--ctx N] [--pairs all|within-layer|none]
//  [--units heads|layers|attn-blocks|mlp-blocks] -o ABLATION.json`:
// measures the loss (mean next-token NLL on calibration text, llama.cpp) with
// units removed: L0 (nothing removed), L_i (unit i alone) and L_ij (pairs:
// every pair, pairs within a layer, or none), and writes the second-order loss
// model of nashprune/loss_interaction.hpp. Cost: 1 + n + (pairs) forward passes
// over the text (stories260K, 40 heads: 821 with all pairs, 181 within layers;
// 5 layers: 16 with all pairs). The units are query heads (default), whole
// layers, attention blocks (layers with attention) or MLP blocks (layers with
// an FFN); a block is removed by zeroing its contribution to the residual stream
// (llama_ablation.hpp), which is the model pruned of it.
// `--remove L:h,L:h,...` instead prints the mean NLL with those heads removed
// (with block units: `--remove L,L,...`, those layers' blocks).
//
// ABLATION.json (version 1): {"version", "model", "text", "context",
// "predicted_tokens", "pairs", "units": [[layer, head], ...] (unit index = row),
// "l0", "loss": [L_i], "delta": [L_i − L0], "interaction": n×n rows
// [I_ij = L_ij − L_i − L_j + L0; 0 on the diagonal and for pairs not measured],
// "measured": n×n rows of 0/1 (1: I_ij measured)}. With block units the file also
// has "unit_kind" (layers | attn-blocks | mlp-blocks) and each unit is [layer].
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>

#include "block_ablation.hpp"
#include "command.hpp"
#include "progress.hpp"

#ifdef NASHPRUNE_HAVE_LLAMA_CAPTURE
#include <calibrate/llama_ablation.hpp>
#endif

namespace {

using nashprune_tool::usage_error;

struct ablate_args {
  std::string model, text, output, pairs = "all", remove, units = "heads";
  std::int64_t tokens = 2048, context = 128;
  int threads = 0;
  bool force = false;
};

#ifdef NASHPRUNE_HAVE_LLAMA_CAPTURE
// One unit of the measurement: a query head (head >= 0) or the --units block of a layer (head -1).
struct unit {
  std::int64_t layer = 0;
  std::int64_t head = -1;
};

std::optional<calibrate::block_part> block_part_of(const std::string& units) {
  if (units == "heads") return std::nullopt;
  if (!nashprune_tool::is_block_kind(units)) throw usage_error("--units must be heads, layers, attn-blocks or mlp-blocks, got '" + units + "'");
  return units == "layers" ? calibrate::block_part::layer : units == "attn-blocks" ? calibrate::block_part::attention : calibrate::block_part::mlp;
}

// Every unit of the model: its query heads, or each layer holding the --units block.
std::vector<unit> all_units(const calibrate::ablation_session& session, const std::string& model, const std::string& kind) {
  std::vector<unit> units;
  if (kind == "heads") {
    const auto heads = session.heads_per_layer();
    for (std::size_t l = 0; l < heads.size(); ++l)
      for (std::int64_t h = 0; h < heads[l]; ++h) units.push_back({static_cast<std::int64_t>(l), h});
  } else {
    for (const auto l : nashprune_tool::block_unit_layers(gguf::llama_shape::read(gguf::reader::open(model)), kind)) units.push_back({l, -1});
  }
  return units;
}

std::vector<unit> parse_layers(const std::string& list) {
  std::vector<unit> out;
  std::stringstream in(list);
  std::string item;
  while (std::getline(in, item, ',')) {
    unit u;
    std::stringstream one(item);
    if (!(one >> u.layer) || !one.eof()) throw usage_error("--remove: expected LAYER with block --units, got '" + item + "'");
    out.push_back(u);
  }
  return out;
}

std::vector<calibrate::head_ref> parse_heads(const std::string& list) {
  std::vector<calibrate::head_ref> out;
  std::stringstream in(list);
  std::string item;
  while (std::getline(in, item, ',')) {
    calibrate::head_ref h;
    char colon = 0;
    std::stringstream one(item);
    if (!(one >> h.layer >> colon >> h.head) || colon != ':' || !one.eof()) throw usage_error("--remove: expected LAYER:HEAD, got '" + item + "'");
    out.push_back(h);
  }
  return out;
}

int run(const ablate_args& a) {
  namespace fs = std::filesystem;
  if (a.pairs != "all" && a.pairs != "within-layer" && a.pairs != "none") throw usage_error("--pairs must be all, within-layer or none, got '" + a.pairs + "'");
  if (a.remove.empty() && a.output.empty()) throw usage_error("give -o ABLATION.json (or --remove to evaluate one set)");
  if (!a.output.empty() && fs::exists(a.output) && !a.force) throw usage_error("the output " + a.output + " exists (use --force to replace it)");
  const auto part = block_part_of(a.units);
  calibrate::ablation_session session({a.model, a.text, a.tokens, a.context, a.threads});
  const auto nll = [&](const std::vector<unit>& removed) {
    std::vector<calibrate::head_ref> heads;
    std::vector<calibrate::block_ref> blocks;
    for (const auto& u : removed) {
      if (u.head >= 0) heads.push_back({u.layer, u.head});
      if (u.head < 0) blocks.push_back({u.layer, *part});
    }
    return session.mean_nll(heads, blocks);
  };
  if (!a.remove.empty()) {
    std::vector<unit> removed;
    if (part) {
      removed = parse_layers(a.remove);
    } else {
      for (const auto& h : parse_heads(a.remove)) removed.push_back({h.layer, h.head});
    }
    const double loss = nll(removed);  // before printing: a refused unit leaves no half line
    std::cout << std::setprecision(10) << "mean NLL " << loss << " over " << session.predicted_tokens() << " predicted tokens\n";
    return 0;
  }
  const auto units = all_units(session, a.model, a.units);
  const auto n = units.size();
  const auto paired = [&](std::size_t i, std::size_t j) { return a.pairs == "all" || (a.pairs == "within-layer" && units[i].layer == units[j].layer); };
  std::uint64_t passes = 1 + n;
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t j = i + 1; j < n; ++j) passes += paired(i, j) ? 1 : 0;
  nashprune_tool::progress_bar bar("ablating (" + std::to_string(passes) + " passes)");
  std::uint64_t done = 0;
  const auto loss_of = [&](const std::vector<unit>& removed) {
    const double l = nll(removed);
    bar.update(++done, passes);
    return l;
  };
  const double l0 = loss_of({});
  std::vector<double> loss(n), delta(n);
  for (std::size_t i = 0; i < n; ++i) loss[i] = loss_of({units[i]}), delta[i] = loss[i] - l0;
  nlohmann::json interaction = nlohmann::json::array(), measured = nlohmann::json::array();
  std::vector<std::vector<double>> inter(n, std::vector<double>(n, 0.0));
  std::vector<std::vector<int>> seen(n, std::vector<int>(n, 0));
  for (std::size_t i = 0; i < n; ++i) {
    for (std::size_t j = i + 1; j < n; ++j) {
      if (!paired(i, j)) continue;
      inter[i][j] = inter[j][i] = loss_of({units[i], units[j]}) - loss[i] - loss[j] + l0;
      seen[i][j] = seen[j][i] = 1;
    }
  }
  nlohmann::json doc = {{"version", 1}, {"model", fs::path(a.model).filename().string()}, {"text", fs::path(a.text).filename().string()},
                        {"context", a.context}, {"predicted_tokens", session.predicted_tokens()}, {"pairs", a.pairs}, {"l0", l0},
                        {"loss", loss}, {"delta", delta}, {"interaction", inter}, {"measured", seen}};
  doc["units"] = nlohmann::json::array();
  for (const auto& u : units) doc["units"].push_back(u.head >= 0 ? nlohmann::json::array({u.layer, u.head}) : nlohmann::json::array({u.layer}));
  if (part) doc["unit_kind"] = a.units;
  // Written beside the output and renamed, so an interrupted run leaves no partial file.
  const std::string partial = a.output + ".partial";
  {
    std::ofstream out(partial);
    out << std::setprecision(17) << doc.dump() << '\n';
    if (!out) throw std::runtime_error("cannot write " + partial);
  }
  fs::rename(partial, a.output);
  std::cout << "ablated " << n << " " << (part ? a.units : std::string("heads")) << " (" << passes << " passes, pairs " << a.pairs << ") over " << session.predicted_tokens()
            << " predicted tokens; L0 " << l0 << "\nwrote " << a.output << '\n';
  return 0;
}
#else
int run(const ablate_args&) {
  throw usage_error("this nashprune was built without llama.cpp: configure with -DNASHPRUNE_LLAMA_CPP_DIR=<tree from cmake/provision-llama-cpp.sh> to use ablate");
}
#endif

const nashprune_tool::register_command ablate_command{{
    "ablate", "Measure the loss with heads, layers or blocks removed, alone and in pairs (llama.cpp): the ablation loss model",
    [](CLI::App& app) -> std::function<int()> {
      auto a = std::make_shared<ablate_args>();
      app.add_option("model", a->model, "input GGUF (llama or deci architecture)")->required();
      app.add_option("--text", a->text, "calibration text file (never the evaluation text)")->required();
      app.add_option("-o,--output", a->output, "ablation file to write (JSON)");
      app.add_option("--tokens", a->tokens, "at most this many tokens (0: every whole context of the text)")->capture_default_str();
      app.add_option("--ctx", a->context, "tokens per evaluated chunk")->capture_default_str();
      app.add_option("--pairs", a->pairs, "pairs measured: all | within-layer | none")->capture_default_str();
      app.add_option("--units", a->units,
                     "what is removed: heads | layers | attn-blocks | mlp-blocks (a block is zeroed in the residual stream)")
          ->capture_default_str();
      app.add_option("--remove", a->remove,
                     "print the mean NLL with these removed instead: LAYER:HEAD,... (heads) or LAYER,... (block --units)");
      app.add_option("--threads", a->threads, "CPU threads (0: all)")->capture_default_str();
      app.add_flag("--force", a->force, "replace an existing output");
      return [a] { return run(*a); };
    }}};

}  // namespace
