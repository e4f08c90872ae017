// `nashprune ablate MODEL.gguf --text FILE [--tokens N] [--ctx N] [--pairs all|within-layer|none] -o ABLATION.json`:
// measures the loss (mean next-token NLL on calibration text, llama.cpp) with
// query heads removed: L0 (nothing removed), L_i (head i alone) and L_ij (pairs:
// every pair, pairs within a layer, or none), and writes the second-order loss
// model of nashprune/loss_interaction.hpp. Cost: 1 + n + (pairs) forward passes
// over the text (stories260K, 40 heads: 821 with all pairs, 181 within layers).
// `--remove L:h,L:h,...` instead prints the mean NLL with those heads removed.
//
// ABLATION.json (version 1): {"version", "model", "text", "context",
// "predicted_tokens", "pairs", "units": [[layer, head], ...] (unit index = row),
// "l0", "loss": [L_i], "delta": [L_i − L0], "interaction": n×n rows
// [I_ij = L_ij − L_i − L_j + L0; 0 on the diagonal and for pairs not measured],
// "measured": n×n rows of 0/1 (1: I_ij measured)}.
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <memory>
#include <sstream>

#include "command.hpp"
#include "progress.hpp"

#ifdef NASHPRUNE_HAVE_LLAMA_CAPTURE
#include <calibrate/llama_ablation.hpp>
#endif

namespace {

using nashprune_tool::usage_error;

struct ablate_args {
  std::string model, text, output, pairs = "all", remove;
  std::int64_t tokens = 2048, context = 128;
  int threads = 0;
  bool force = false;
};

#ifdef NASHPRUNE_HAVE_LLAMA_CAPTURE
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
  calibrate::ablation_session session({a.model, a.text, a.tokens, a.context, a.threads});
  if (!a.remove.empty()) {
    const auto heads = parse_heads(a.remove);
    std::cout << std::setprecision(10) << "mean NLL " << session.mean_nll(heads) << " over " << session.predicted_tokens() << " predicted tokens\n";
    return 0;
  }
  std::vector<calibrate::head_ref> units;
  const auto per_layer = session.heads_per_layer();
  for (std::size_t l = 0; l < per_layer.size(); ++l)
    for (std::int64_t h = 0; h < per_layer[l]; ++h) units.push_back({static_cast<std::int64_t>(l), h});
  const auto n = units.size();
  const auto paired = [&](std::size_t i, std::size_t j) { return a.pairs == "all" || (a.pairs == "within-layer" && units[i].layer == units[j].layer); };
  std::uint64_t passes = 1 + n;
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t j = i + 1; j < n; ++j) passes += paired(i, j) ? 1 : 0;
  nashprune_tool::progress_bar bar("ablating (" + std::to_string(passes) + " passes)");
  std::uint64_t done = 0;
  const auto loss_of = [&](std::vector<calibrate::head_ref> removed) {
    const double l = session.mean_nll(removed);
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
  for (const auto& u : units) doc["units"].push_back({u.layer, u.head});
  // Written beside the output and renamed, so an interrupted run leaves no partial file.
  const std::string partial = a.output + ".partial";
  {
    std::ofstream out(partial);
    out << std::setprecision(17) << doc.dump() << '\n';
    if (!out) throw std::runtime_error("cannot write " + partial);
  }
  fs::rename(partial, a.output);
  std::cout << "ablated " << n << " heads (" << passes << " passes, pairs " << a.pairs << ") over " << session.predicted_tokens()
            << " predicted tokens; L0 " << l0 << "\nwrote " << a.output << '\n';
  return 0;
}
#else
int run(const ablate_args&) {
  throw usage_error("this nashprune was built without llama.cpp: configure with -DNASHPRUNE_LLAMA_CPP_DIR=<tree from cmake/provision-llama-cpp.sh> to use ablate");
}
#endif

const nashprune_tool::register_command ablate_command{{
    "ablate", "Measure the loss with heads removed, alone and in pairs (llama.cpp): the ablation loss model",
    [](CLI::App& app) -> std::function<int()> {
      auto a = std::make_shared<ablate_args>();
      app.add_option("model", a->model, "input GGUF (llama or deci architecture)")->required();
      app.add_option("--text", a->text, "calibration text file (never the evaluation text)")->required();
      app.add_option("-o,--output", a->output, "ablation file to write (JSON)");
      app.add_option("--tokens", a->tokens, "at most this many tokens (0: every whole context of the text)")->capture_default_str();
      app.add_option("--ctx", a->context, "tokens per evaluated chunk")->capture_default_str();
      app.add_option("--pairs", a->pairs, "pairs measured: all | within-layer | none")->capture_default_str();
      app.add_option("--remove", a->remove, "print the mean NLL with these heads removed (LAYER:HEAD,...) instead");
      app.add_option("--threads", a->threads, "CPU threads (0: all)")->capture_default_str();
      app.add_flag("--force", a->force, "replace an existing output");
      return [a] { return run(*a); };
    }}};

}  // namespace
