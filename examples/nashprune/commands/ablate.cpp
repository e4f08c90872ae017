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
// `--given L:h,...` measures the conditional model: those heads are removed in
// every pass (L0 = L(given)), the units are the other m heads (1 + m + pairs passes).
//
// ABLATION.json (version 1): {"version", "model", "text", "context",
// "predicted_tokens", "pairs", "units": [[layer, head], ...] (unit index = row),
// "l0", "loss": [L_i], "delta": [L_i − L0], "interaction": n×n rows
// [I_ij = L_ij − L_i − L_j + L0; 0 on the diagonal and for pairs not measured],
// "measured": n×n rows of 0/1 (1: I_ij measured), "passes", "given": [[layer, head], ...]
// (removed in every pass; their loss is L0, delta 0, no pair measured)}. With block
// units the file also has "unit_kind" (layers | attn-blocks | mlp-blocks) and each unit is [layer].
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>

#include "planning/block_ablation.hpp"
#include "command.hpp"

#include "io/json_io.hpp"
#include "planning/ablation_measure.hpp"

namespace {

using nashprune_tool::usage_error;

struct ablate_args {
  std::string model, output, pairs = "all", remove, given, units = "heads";
  nashprune_tool::text_run_args run;
  bool force = false;
  bool evaluate = false;  // --remove given (possibly empty: the model as it is)
};

#ifdef NASHPRUNE_HAVE_LLAMA_CAPTURE
std::optional<nashprune::item_kind> block_kind_of(const std::string& units) {
  if (units == "heads") return std::nullopt;
  if (!nashprune_tool::is_block_kind(units)) throw usage_error("--units must be heads, layers, attn-blocks or mlp-blocks, got '" + units + "'");
  return units == "layers" ? nashprune::item_kind::whole_layer : units == "attn-blocks" ? nashprune::item_kind::attention_block : nashprune::item_kind::mlp_block;
}

/// --remove with block units: "LAYER,LAYER,..." (the layers' blocks of that kind).
std::vector<calibrate::block_ref> parse_blocks(const std::string& list, nashprune::item_kind part) {
  std::vector<calibrate::block_ref> out;
  std::stringstream in(list);
  std::string item;
  while (std::getline(in, item, ',')) {
    calibrate::block_ref b{0, part};
    std::stringstream one(item);
    if (!(one >> b.layer) || !one.eof()) throw usage_error("--remove: expected LAYER with block --units, got '" + item + "' at index " + std::to_string(out.size()));
    out.push_back(b);
  }
  return out;
}

int run(const ablate_args& a) {
  namespace fs = std::filesystem;
  nashprune_tool::check_pairs(a.pairs);
  if (!a.evaluate && a.output.empty()) throw usage_error("give -o ABLATION.json (or --remove to evaluate one set)");
  if (!a.output.empty() && fs::exists(a.output) && !a.force) throw usage_error("the output " + a.output + " exists (use --force to replace it)");
  const auto part = block_kind_of(a.units);
  calibrate::ablation_session session({{a.model, a.run.text, a.run.tokens, a.run.context, a.run.threads}, a.run.score_from});
  const auto given = nashprune_tool::parse_head_list("--given", a.given, session.heads_per_layer());
  if (a.evaluate && part) {
    const auto blocks = parse_blocks(a.remove, *part);
    const double loss = session.mean_nll(given, blocks);  // before printing: a refused unit leaves no half line
    std::cout << std::setprecision(10) << "mean NLL " << loss << " over " << session.predicted_tokens() << " predicted tokens\n";
    return 0;
  }
  if (a.evaluate) {
    const std::string list = a.given.empty() ? a.remove : a.remove.empty() ? a.given : a.remove + "," + a.given;
    const auto heads = nashprune_tool::parse_head_list(a.given.empty() ? "--remove" : "--remove,--given", list, session.heads_per_layer());
    std::cout << std::setprecision(10) << "mean NLL " << session.mean_nll(heads) << " over " << session.predicted_tokens() << " predicted tokens\n";
    return 0;
  }
  nashprune_tool::ablation_measure_options options{a.pairs, fs::path(a.model).filename().string(), fs::path(a.run.text).filename().string(), a.run.context, a.run.score_from};
  if (part) {
    options.block = part;
    options.unit_kind = a.units;
    options.block_layers = nashprune_tool::block_unit_layers(gguf::llama_shape::read(gguf::reader::open(a.model)), a.units);
  }
  const auto doc = nashprune_tool::measure_ablation(session, given, options);
  nashprune_tool::json_io::write_document(a.output, doc);
  std::cout << "ablated " << doc.at("units").size() - given.size() << " " << (part ? a.units : std::string("heads")) << (given.empty() ? "" : " given " + std::to_string(given.size()) + " removed")
            << " (" << doc.at("passes").get<std::uint64_t>() << " passes, pairs " << a.pairs << ") over " << session.predicted_tokens()
            << " predicted tokens; L0 " << doc.at("l0").get<double>() << "\nwrote " << a.output << '\n';
  return 0;
}
#else
int run(const ablate_args&) { nashprune_tool::requires_llama_cpp("ablate"); }
#endif

void add_options(CLI::App& app, ablate_args& a) {
  nashprune_tool::add_text_run_options(app, a.model, a.run, "calibration text file (never the evaluation text)", true);
  app.add_option("-o,--output", a.output, "ablation file to write (JSON)");
  app.add_option("--pairs", a.pairs, "pairs measured: all | within-layer | none")->capture_default_str();
  app.add_option("--units", a.units,
                 "what is removed: heads | layers | attn-blocks | mlp-blocks (a block is zeroed in the residual stream)")
      ->capture_default_str();
  app.add_option("--remove", a.remove,
                 "print the mean NLL with these removed instead: LAYER:HEAD,... (heads; \"\": none) or LAYER,... (block --units)")
      ->each([&a](const std::string&) { a.evaluate = true; });
  app.add_option("--given", a.given,
                 "heads removed before measuring (LAYER:HEAD,...): the conditional model, L0 = L(given); units are the other heads");
  app.add_flag("--force", a.force, "replace an existing output");
}

const nashprune_tool::register_command ablate_command{nashprune_tool::make_command<ablate_args>(
    "ablate", "Measure the loss with heads (or blocks) removed, alone and in pairs (llama.cpp): the ablation loss model",
    "nashprune ablate stories260K.gguf --text calibration.txt --tokens 256 -c 128 -t 1 -o ablation.json", add_options, run)};

}  // namespace
