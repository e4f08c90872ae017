// Measuring the ablation loss model (see ablation_measure.hpp).
#include "planning/ablation_measure.hpp"

#ifdef NASHPRUNE_HAVE_LLAMA_CAPTURE
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <sstream>

#include "command.hpp"
#include "io/progress.hpp"

namespace nashprune_tool {
namespace {

bool is_given(std::span<const calibrate::head_ref> given, const calibrate::head_ref& h) {
  for (const auto& g : given)
    if (g.layer == h.layer && g.head == h.head) return true;
  return false;
}

/// The units (every head, layer by layer; or one block per listed layer, head -1)
/// and whether pair (i, j) is measured.
struct measurement_plan {
  std::vector<calibrate::head_ref> units;
  std::vector<bool> free;  // not given
  std::string pairs;
  [[nodiscard]] bool paired(std::size_t i, std::size_t j) const {
    return free[i] && free[j] && (pairs == "all" || (pairs == "within-layer" && units[i].layer == units[j].layer));
  }
  [[nodiscard]] std::uint64_t passes() const {
    std::uint64_t n = 1;
    for (std::size_t i = 0; i < units.size(); ++i) {
      n += free[i] ? 1 : 0;
      for (std::size_t j = i + 1; j < units.size(); ++j) n += paired(i, j) ? 1 : 0;
    }
    return n;
  }
};

/// `block_layers` given: block units (head -1) on those layers instead of the heads.
measurement_plan plan_measurement(std::span<const std::int64_t> heads_per_layer, std::span<const calibrate::head_ref> given, const std::string& pairs,
                                  const std::vector<std::int64_t>* block_layers = nullptr) {
  check_pairs(pairs);
  measurement_plan p;
  p.pairs = pairs;
  if (block_layers != nullptr) {
    if (!given.empty()) throw usage_error("--given removes heads: measure block --units without it");
    for (const auto l : *block_layers) p.units.push_back({l, -1});
    p.free.assign(p.units.size(), true);
    return p;
  }
  for (std::size_t l = 0; l < heads_per_layer.size(); ++l) {
    for (std::int64_t h = 0; h < heads_per_layer[l]; ++h) {
      p.units.push_back({static_cast<std::int64_t>(l), h});
      p.free.push_back(!is_given(given, p.units.back()));
    }
  }
  return p;
}

}  // namespace

void check_pairs(const std::string& pairs) {
  if (pairs != "all" && pairs != "within-layer" && pairs != "none") throw usage_error("--pairs must be all, within-layer or none, got '" + pairs + "'");
}

std::vector<calibrate::head_ref> parse_head_list(const std::string& option, const std::string& list, std::span<const std::int64_t> heads_per_layer) {
  std::vector<calibrate::head_ref> out;
  std::stringstream in(list);
  std::string item;
  while (std::getline(in, item, ',')) {
    const std::string at = " at index " + std::to_string(out.size());
    calibrate::head_ref h;
    char colon = 0;
    std::stringstream one(item);
    if (!(one >> h.layer >> colon >> h.head) || colon != ':' || !one.eof()) throw usage_error(option + ": expected LAYER:HEAD, got '" + item + "'" + at);
    if (h.layer < 0 || h.layer >= static_cast<std::int64_t>(heads_per_layer.size()) || h.head < 0 || h.head >= heads_per_layer[static_cast<std::size_t>(h.layer)]) {
      throw usage_error(option + ": head " + item + " out of range" + at + " (the model has " + std::to_string(heads_per_layer.size()) + " layers)");
    }
    if (is_given(out, h)) throw usage_error(option + ": head " + item + " repeated" + at);
    out.push_back(h);
  }
  return out;
}

std::uint64_t ablation_passes(std::span<const std::int64_t> heads_per_layer, std::span<const calibrate::head_ref> given, const std::string& pairs) {
  return plan_measurement(heads_per_layer, given, pairs).passes();
}

nlohmann::json measure_ablation(calibrate::ablation_session& session, std::span<const calibrate::head_ref> given, const ablation_measure_options& o) {
  const auto p = plan_measurement(session.heads_per_layer(), given, o.pairs, o.block ? &o.block_layers : nullptr);
  const auto n = p.units.size();
  const auto passes = p.passes();
  progress_bar bar(o.label + " (" + std::to_string(passes) + " passes)");
  std::uint64_t done = 0;
  const auto loss_of = [&](const std::vector<calibrate::head_ref>& units) {
    std::vector<calibrate::head_ref> heads(given.begin(), given.end());
    std::vector<calibrate::block_ref> blocks;
    for (const auto& u : units) {
      if (u.head >= 0) heads.push_back(u);
      if (u.head < 0) blocks.push_back({u.layer, *o.block});
    }
    const double l = session.mean_nll(heads, blocks);
    bar.update(++done, passes);
    return l;
  };
  const double l0 = loss_of({});
  std::vector<double> loss(n, l0), delta(n, 0.0);
  for (std::size_t i = 0; i < n; ++i)
    if (p.free[i]) loss[i] = loss_of({p.units[i]}), delta[i] = loss[i] - l0;
  std::vector<std::vector<double>> inter(n, std::vector<double>(n, 0.0));
  std::vector<std::vector<int>> seen(n, std::vector<int>(n, 0));
  for (std::size_t i = 0; i < n; ++i) {
    for (std::size_t j = i + 1; j < n; ++j) {
      if (!p.paired(i, j)) continue;
      inter[i][j] = inter[j][i] = loss_of({p.units[i], p.units[j]}) - loss[i] - loss[j] + l0;
      seen[i][j] = seen[j][i] = 1;
    }
  }
  nlohmann::json doc = {{"version", 1}, {"model", o.model_name}, {"text", o.text_name}, {"context", o.context},
                        {"score_from", o.score_from}, {"predicted_tokens", session.predicted_tokens()}, {"pairs", o.pairs}, {"passes", passes}, {"l0", l0},
                        {"loss", loss}, {"delta", delta}, {"interaction", inter}, {"measured", seen}};
  doc["units"] = nlohmann::json::array();
  for (const auto& u : p.units) doc["units"].push_back(u.head >= 0 ? nlohmann::json::array({u.layer, u.head}) : nlohmann::json::array({u.layer}));
  if (o.block) doc["unit_kind"] = o.unit_kind;
  doc["given"] = nlohmann::json::array();
  for (const auto& g : given) doc["given"].push_back({g.layer, g.head});
  return doc;
}

}  // namespace nashprune_tool
#endif
