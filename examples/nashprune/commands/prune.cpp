// `nashprune prune [MODEL.gguf OUT.gguf] [options]`: removes attention heads,
// GQA groups, MLP channels, whole blocks or layers and writes a GGUF that stock
// llama.cpp runs. --text calibrates in this process, --eval-text measures the
// perplexity before and after, and the parts of the pipeline not given on the
// command line are the recommended ones (planning/recommended_pipeline.hpp).
// With no model it prunes the bundled stories260K that way.
#include <gguf/llama_model.hpp>
#include <gguf/prune_plan.hpp>
#include <report/prune_report.hpp>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <limits>
#include <optional>
#include <sstream>
#include <string>

#include "planning/ablation_model.hpp"
#include "command.hpp"
#include "io/bundled_data.hpp"
#include "io/calibration_run.hpp"
#include "io/json_io.hpp"
#include "io/llama_program.hpp"
#include "io/perplexity.hpp"
#include "io/progress.hpp"
#include "io/plan_io.hpp"
#include "planning/compensate.hpp"
#include "planning/layer_importance_planner.hpp"
#include "planning/prune_planner.hpp"
#include "planning/recommended_pipeline.hpp"

namespace {

namespace np = nashprune;
using nashprune_tool::usage_error;

struct prune_args {
  std::string model;
  std::string output;
  std::string imatrix;
  std::string calibration;
  std::string tau_text = "auto";
  std::string lambda_text = "0.5";
  std::string stats;
  std::string plan_in;
  std::string plan_out;
  std::string ablation;
  std::string report;
  std::string unit;  // empty: params, or heads for the bundled default
  std::vector<std::string> structures;
  std::string score;  // empty: the recommended pipeline's
  std::string game;
  std::string selector;
  std::string method;      // deprecated: --game and --selector
  std::string redundancy;  // deprecated: --game
  std::string compensate;  // none | bias | refit; empty: the recommended pipeline's, when the calibration allows it
  std::string eval_text;
  std::string llama_bin;
  // --text: calibration in this process, with the calibration studies' settings.
  nashprune_tool::text_run_args calibration_run{"", 16384, 128, 0, 0};
  double damping = nashprune::compensation_options<double>{}.damping;
  bool dry_run = false;
  bool sequential = false;  // --sequential: the input moments measured layer by layer on the pruned model
  bool force = false;
  bool freeze_first_given = false;
  bool priors_requested = false;  // --temperature or --tau given
  bool nash_game_options = false;  // --lambda, --threshold or --iterations given
  bool damping_given = false;
  np::pruning_options select;
  nashprune_tool::scoring_options scoring;
  // --layer-rates / --depth-preset: plans from one importance per layer.
  nashprune_tool::layer_importance_request by_layer;
  std::string layer_rates, depth_preset, depth_selection, layer_importance;
  bool target_given = false;
  bool rate_options_given = false;  // --alpha, --min-rate or --max-rate
};

gguf::metadata provenance(const prune_args& a, const gguf::llama_shape& shape, const gguf::pruned_model& result,
                          const gguf::reader& model, std::uint64_t calibration_tokens, bool from_plan_file, double lambda) {
  std::int64_t heads_before = 0;
  std::int64_t heads_after = 0;
  for (const auto& l : shape.layers) heads_before += l.n_head;
  for (const auto& l : result.shape.layers) heads_after += l.n_head;
  const auto before = gguf::totals(model.tensors()).parameters;
  const auto after = gguf::totals(result.tensors).parameters;
  gguf::metadata kv;
  auto add = [&](const char* key, gguf::value v) { kv.emplace_back(std::string("general.pruning.") + key, std::move(v)); };
  add("method", gguf::value::string(from_plan_file ? "plan_file" : nashprune_tool::method_name(a.select.game, a.select.selection)));
  add("version", gguf::value::u32(1));
  add("tool_version", gguf::value::string(std::string("nashprune ") + nashprune::version_string));
  add("structures", gguf::value::string(nashprune_tool::structure_list(a.select.structures)));
  add("score", gguf::value::string(std::string(nashprune_tool::score_names[static_cast<std::size_t>(a.scoring.score)])));
  add("original_head_count", gguf::value::u32(static_cast<std::uint32_t>(heads_before)));
  add("total_heads_pruned", gguf::value::u32(static_cast<std::uint32_t>(heads_before - heads_after)));
  add("prune_ratio", gguf::value::f32(heads_before == 0 ? 0.0F : static_cast<float>(heads_before - heads_after) / static_cast<float>(heads_before)));
  add("parameter_ratio", gguf::value::f32(static_cast<float>(before - after) / static_cast<float>(before)));
  add("original_block_count", gguf::value::u32(static_cast<std::uint32_t>(shape.n_layer())));
  add("lambda", gguf::value::f32(static_cast<float>(lambda)));
  add("threshold", gguf::value::f32(static_cast<float>(a.select.threshold)));
  add("calibration_tokens", gguf::value::u32(static_cast<std::uint32_t>(calibration_tokens)));
  return kv;
}

void write_stats(const std::string& path, const std::vector<np::head_statistics>& stats, const nlohmann::json& summary) {
  nlohmann::json heads = nlohmann::json::array();
  for (const auto& s : stats) {
    heads.push_back({{"layer", s.layer}, {"head", s.head}, {"importance", s.importance}, {"participation", s.participation},
                     {"redundancy_sum", s.redundancy_sum}, {"pruned", s.pruned}});
  }
  std::ofstream out(path);
  if (!out) throw usage_error("cannot write the stats file " + path);
  auto document = summary;
  document["heads"] = std::move(heads);
  out << document.dump(1) << '\n';
}

void print_lambda(const np::lambda_search_report& r) {
  std::cout << "lambda auto: " << r.lambda << " (" << r.solves << " solves); requested " << r.requested
            << " heads, equilibria prune " << r.equilibrium_pruned << ", plan removes " << r.plan_pruned << " heads";
  if (!r.reachable) {
    std::cout << " (target unreachable: beyond --min-heads/--max-prune or below what the smallest lambda prunes)";
  } else if (r.plan_pruned != r.requested) {
    std::cout << " (the nearest count the GQA-consistent plans reach)";
  }
  std::cout << '\n';
}

// --game ablation: the heads the loss model of `nashprune ablate` chooses (ablation_model.hpp).
nashprune_tool::selection choose_by_ablation(const prune_args& a, const gguf::llama_shape& shape) {
  const auto layout = nashprune_tool::make_ablation_layout(shape, a.select.decisions());
  const auto reach = nashprune_tool::check_target(nashprune_tool::shape_scores(shape), a.select);
  const auto loss = nashprune_tool::loss_model_from_json(nashprune_tool::json_io::read_document(a.ablation), layout);
  auto chosen = nashprune_tool::selection_of(np::plan_pruning(nashprune_tool::shape_scores(shape), static_cast<const np::ablation_loss_game&>(loss), a.select));
  chosen.reach = reach;
  return chosen;
}

// --report: the HTML page of this run (examples/report).
void write_report(const prune_args& a, const gguf::reader& model, const gguf::llama_shape& shape,
                  const nashprune_tool::selection& chosen, const gguf::pruned_model& result,
                  const calibrate::calibration_stats* calibration) {
  for (const auto& input : {a.model, a.output}) {
    std::error_code ec;
    if (!input.empty() && std::filesystem::equivalent(a.report, input, ec)) throw usage_error("--report " + a.report + " would replace " + input);
  }
  const bool game = a.plan_in.empty() && a.select.game != np::head_game::none;
  std::vector<report::head_score> scores;
  for (const auto& h : chosen.heads) scores.push_back({h.layer, h.head, h.importance, game ? std::optional(h.participation) : std::nullopt});
  auto page = report::describe_prune(model, shape, chosen.plan, result, scores, calibration);
  page.model = a.model;
  page.output = a.dry_run ? "" : a.output;
  std::ostringstream target;
  target << a.select.target << " of the " << (a.select.unit == np::budget_unit::heads ? "heads" : "parameters") << ", structures";
  target << ' ' << nashprune_tool::structure_list(a.select.structures);
  page.facts.insert(page.facts.begin(), {{"selection", a.plan_in.empty() ? "method " + nashprune_tool::method_name(a.select.game, a.select.selection) + ", score " + std::string(nashprune_tool::score_names[static_cast<std::size_t>(a.scoring.score)])
                                                                        : "plan file " + a.plan_in},
                                         {"target", target.str()}});
  report::write_html(a.report, page);
  std::cout << "report: " << a.report << '\n';
}

// --compensate: what was asked for, or the recommended kind when the calibration
// carries the input moments and the weights are float (none otherwise, said
// aloud); nothing without calibration statistics.
std::optional<nashprune::compensation_kind> compensation_of(const prune_args& a, const calibrate::calibration_stats* calibration,
                                                           const gguf::reader& model, nashprune::compensation_kind recommended) {
  if (a.compensate.empty()) {
    if (calibration == nullptr || recommended == nashprune::compensation_kind::none) return std::nullopt;
    if (!nashprune_tool::compensable_weights(model)) {
      std::cout << "compensation: none (attn_output / ffn_down are of a type compensation cannot decode)\n";
      return std::nullopt;
    }
    if (!nashprune_tool::has_input_moments(*calibration)) {
      std::cout << "compensation: none (" << a.calibration << " lacks the input moments; nashprune calibrate records them)\n";
      return std::nullopt;
    }
    return recommended;
  }
  const auto kind = nashprune_tool::parse_compensation(a.compensate);
  if (kind == nashprune::compensation_kind::none) return std::nullopt;
  if (calibration == nullptr) throw usage_error("--compensate " + a.compensate + " needs --text FILE or --calibration FILE (nashprune calibrate)");
  if (!nashprune_tool::has_input_moments(*calibration)) {
    throw usage_error("--compensate " + a.compensate + ": " + a.calibration +
                      " lacks the input moments of attn_output and ffn_down (a version 1/2 file or --no-moments): rerun nashprune calibrate");
  }
  return kind;
}

// The parts of the pipeline the command line leaves open, from the recommended
// pipeline for this kind of target (recommended_pipeline.hpp); the game is the
// recommended one unless it would ignore an option given. Returns why another
// game runs ("" when the recommended one does). A --game given that ignores an
// option given is refused.
std::string fill_in_pipeline(prune_args& a, const nashprune_tool::pipeline& recommended) {
  nashprune_tool::given_options given;
  if (!a.score.empty()) given.score = a.scoring.score;
  given.imatrix = !a.imatrix.empty();
  given.priors = a.priors_requested && a.select.temperature > 0.0;
  given.nash_game = a.nash_game_options;
  given.ablation = !a.ablation.empty();
  if (a.score.empty()) a.scoring.score = recommended.score;
  const bool legacy = !a.method.empty() || !a.redundancy.empty();
  std::string reason;
  if (a.game.empty() && !legacy) {
    const auto choice = nashprune_tool::game_for(recommended, given);
    a.select.game = choice.game;
    reason = choice.reason;
  }
  if (const auto error = nashprune_tool::ignored_by(a.select.game, given)) throw usage_error(*error);
  if (a.selector.empty() && !legacy) a.select.selection = recommended.selection;
  if (!a.priors_requested) a.select.temperature = recommended.temperature;
  return reason;
}

// --eval-text: the perplexity program and the text, checked before any work.
std::optional<nashprune_tool::perplexity_options> evaluation_of(const prune_args& a) {
  if (a.eval_text.empty()) return std::nullopt;
  if (a.dry_run) throw usage_error("--eval-text measures the written model: drop --dry-run");
  std::error_code ec;
  if (!std::filesystem::is_regular_file(a.eval_text, ec)) throw usage_error("--eval-text '" + a.eval_text + "' is not a readable file");
  nashprune_tool::perplexity_options o;
  o.text = a.eval_text;
  o.ctx = static_cast<int>(a.calibration_run.context);
  o.threads = a.calibration_run.threads;
  o.program = nashprune_tool::find_llama_program("llama-perplexity", a.llama_bin);
  return o;
}

// The calibration statistics: read from --calibration, measured from --text, or none.
std::unique_ptr<calibrate::calibration_stats> calibration_of(const prune_args& a, const gguf::llama_shape& shape) {
  if (!a.calibration.empty()) {
    auto stats = std::make_unique<calibrate::calibration_stats>(calibrate::read_stats(a.calibration));
    calibrate::check_matches(*stats, shape, a.calibration);
    return stats;
  }
  if (a.calibration_run.text.empty()) return nullptr;
  auto stats = nashprune_tool::measure_calibration(a.model, a.calibration_run, true, "prune --text");
  std::cout << "calibrated on " << stats.tokens << " tokens of " << a.calibration_run.text << " (context " << stats.context << ")\n";
  return std::make_unique<calibrate::calibration_stats>(calibrate::as_stored(std::move(stats)));
}

void prune_file(prune_args a) {
  if (a.output.empty() && !a.dry_run) throw usage_error("give an output file (or --dry-run)");
  if (!a.calibration_run.text.empty() && !a.calibration.empty()) {
    throw usage_error("--text and --calibration both give the calibration: --text FILE calibrates in this process, "
                      "--calibration FILE reads what nashprune calibrate wrote; give one");
  }
  if (a.sequential && a.calibration_run.text.empty()) {
    throw usage_error("--sequential calibrates the pruned model layer by layer in this process: it needs --text FILE, not --calibration");
  }
  if (a.sequential && a.compensate == "none") throw usage_error("--sequential measures the moments compensation uses: it needs --compensate bias or refit");
  if (!a.calibration_run.text.empty()) {
    std::error_code ec;
    if (!std::filesystem::is_regular_file(a.calibration_run.text, ec)) {
      throw usage_error("--text '" + a.calibration_run.text + "' is not a readable file");
    }
    if (a.calibration_run.tokens < 0) throw usage_error("--tokens must be >= 0 (0: the whole text), got " + std::to_string(a.calibration_run.tokens));
  }
  const auto evaluation = evaluation_of(a);
  const auto model = gguf::reader::open(a.model);
  const auto shape = gguf::llama_shape::read(model);
  std::unique_ptr<gguf::imatrix> im;
  if (!a.imatrix.empty()) im = std::make_unique<gguf::imatrix>(a.imatrix);
  const auto recommended = nashprune_tool::recommended_pipeline(
      {a.select.target, a.select.unit, a.select.structures, !a.calibration.empty() || !a.calibration_run.text.empty()});
  const auto why_not_recommended = fill_in_pipeline(a, recommended);
  // The layer's heads are chosen by their score alone (the GAQ pipeline), layers by the preset.
  if (a.by_layer.wanted()) a.select.game = np::head_game::none;
  const auto given = nashprune_tool::option_check{im != nullptr || !a.calibration.empty() || !a.calibration_run.text.empty(),
                                                  !a.calibration.empty() || !a.calibration_run.text.empty(), a.priors_requested};
  nashprune_tool::check_options(a.select, a.scoring.score, given);
  if ((a.select.game == np::head_game::ablation) != !a.ablation.empty()) throw usage_error("--game ablation and --ablation FILE go together");
  const auto calibration = calibration_of(a, shape);
  const auto compensation = compensation_of(a, calibration.get(), model, recommended.compensation);
  if (a.sequential && !compensation) throw usage_error("--sequential measures the moments compensation uses: it needs --compensate bias or refit");
  if (a.damping_given && !compensation && a.select.game != np::head_game::obs) {
    throw usage_error("--damping is the ridge of the refit, and nothing is refit here: add --compensate refit (with --text or --calibration) or drop it");
  }
  if (a.plan_in.empty()) {
    const nashprune_tool::pipeline running{a.scoring.score, a.select.game, a.select.selection, a.select.temperature,
                                           compensation.value_or(np::compensation_kind::none)};
    std::cout << "pipeline: " << nashprune_tool::pipeline_name(running) << (running == recommended ? " (recommended)" : "")
              << (why_not_recommended.empty() ? "" : " (" + why_not_recommended + ")") << '\n';
  }

  nashprune_tool::selection chosen;
  if (!a.plan_in.empty()) {
    chosen.plan = nashprune_tool::read_plan_json(a.plan_in, shape);
  } else if (!a.ablation.empty()) {
    chosen = choose_by_ablation(a, shape);
  } else if (a.by_layer.wanted()) {
    chosen = nashprune_tool::choose_by_layer_importance(model, shape, im.get(), a.select, a.scoring, calibration.get(), a.by_layer);
  } else if (a.select.game == np::head_game::obs) {
    chosen = nashprune_tool::choose_by_compensated_error(model, shape, a.select, *calibration, a.damping);
  } else {
    chosen = nashprune_tool::choose_plan(model, shape, im.get(), a.select, a.scoring, calibration.get());
  }
  const auto result = gguf::plan_output(model, shape, chosen.plan, {});
  const auto tokens = calibration ? calibration->tokens : im ? im->tokens() : 0;
  // λ of the cosine game; with the output or ablation game the price the search used (0 for exact).
  const double lambda = chosen.lambda ? chosen.lambda->lambda : chosen.game ? chosen.game->price : a.select.lambda;
  const auto kv = provenance(a, shape, result, model, tokens, !a.plan_in.empty(), lambda);
  auto final_result = gguf::plan_output(model, shape, chosen.plan, kv);
  if (compensation && a.sequential) {
    const auto measured = nashprune_tool::sequential_moments(a.model, model, shape, chosen.plan, *calibration, *compensation, a.damping,
                                                             a.calibration_run, std::cout);
    nashprune_tool::apply_compensation(model, shape, chosen.plan, measured, *compensation, a.damping, final_result, std::cout);
  } else if (compensation) {
    nashprune_tool::apply_compensation(model, shape, chosen.plan, *calibration, *compensation, a.damping, final_result, std::cout);
  }

  std::cout << "model:  " << a.model << '\n';
  nashprune_tool::print_shape(std::cout, shape);
  if (chosen.lambda) print_lambda(*chosen.lambda);
  if (const auto& p = chosen.game) {
    const bool ablation = a.select.game == np::head_game::ablation;
    std::cout << (ablation ? "ablation loss model (" : "output perturbation (") << nashprune_tool::method_name(a.select.game, p->selection) << "): price " << p->price << ", requested " << p->requested
              << " heads, plans remove " << p->removed << (ablation ? ", modelled loss increase " : ", energy ") << p->energy
              << (ablation ? " (nats per token)\n" : " (relative to the residual stream)\n");
  }
  if (const auto& c = chosen.compensated) {
    const char* unit = c->unit == np::budget_unit::heads ? " heads" : " parameters";
    std::cout << "compensation-aware choice (obs, " << np::selector_names[static_cast<std::size_t>(a.select.selection)] << "): requested "
              << c->requested << unit << ", plans remove " << c->removed << unit << ", summed refit error " << c->error
              << " (relative to the residual stream); " << c->exact_choices << " head choices least by enumeration"
              << (c->damping_raised > 0 ? ", damping raised in " + std::to_string(c->damping_raised) + " maps" : std::string()) << '\n';
  }
  std::cout << "plan:\n";
  nashprune_tool::print_plan_summary(std::cout, shape, chosen.plan, final_result, gguf::totals(model.tensors()));
  std::optional<nashprune_tool::target_outcome> outcome;
  if (chosen.reach) {
    outcome = nashprune_tool::outcome_of(a.select, *chosen.reach, shape, final_result.shape, gguf::totals(model.tensors()),
                                         gguf::totals(final_result.tensors));
    nashprune_tool::print_target(std::cout, *outcome);
  }
  nashprune_tool::print_retyped(std::cout, final_result, a.output);
  if (!a.stats.empty() && !chosen.heads.empty()) write_stats(a.stats, chosen.heads, nashprune_tool::target_summary(outcome));
  if (!a.plan_out.empty()) nashprune_tool::write_plan_json(a.plan_out, chosen.plan, nashprune_tool::target_summary(outcome));
  if (a.dry_run) {
    std::cout << "dry run: nothing written\n";
    if (!a.report.empty()) write_report(a, model, shape, chosen, final_result, calibration.get());
    return;
  }
  gguf::writer out(a.output, {.force = a.force, .protect = {a.model}});
  out.begin(final_result.metadata, final_result.tensors);
  nashprune_tool::progress_bar bar("writing " + a.output);
  gguf::write_tensors(model, final_result, out, [&](std::uint64_t done, std::uint64_t total) { bar.update(done, total); });
  out.commit();
  std::cout << "wrote " << a.output << " (" << out.bytes_written() << " bytes, architecture " << final_result.shape.architecture << ")\n";
  if (!a.report.empty()) write_report(a, model, shape, chosen, final_result, calibration.get());
  if (evaluation) {
    const auto before = nashprune_tool::measure_perplexity(*evaluation, a.model, "original");
    const auto after = nashprune_tool::measure_perplexity(*evaluation, a.output, "pruned");
    std::cout << "perplexity with llama-perplexity -c " << evaluation->ctx << " -b " << evaluation->ctx << ":\n";
    nashprune_tool::print_perplexities(std::cout, *evaluation, before, a.model, after, a.output);
  }
}

// The bundled default: stories260K pruned by 25 % of its heads with the
// recommended pipeline, calibrated on the bundled calibration text and evaluated
// on the bundled evaluation text when this tool has llama.cpp; by its weights
// alone otherwise.
constexpr const char* bundled_output = "stories260K-pruned.gguf";

int run_bundled_default(prune_args a) {
  const auto data = nashprune_tool::find_bundled_data();
  a.model = data.model.string();
  if (a.output.empty() && !a.dry_run) {
    a.output = bundled_output;
    a.force = true;
  }
  const bool measure = nashprune_tool::built_with_llama_cpp;
  if (measure && a.calibration_run.text.empty() && a.calibration.empty()) a.calibration_run.text = data.calibration_text.string();
  if (measure && a.eval_text.empty() && !a.dry_run) a.eval_text = data.evaluation_text.string();
  std::cout << "No model given: pruning the bundled " << a.model << " (--target " << a.select.target << " of the "
            << (a.select.unit == np::budget_unit::heads ? "heads" : "parameters") << ")"
            << (a.output == bundled_output ? std::string(" into ./") + bundled_output + " (replaced on each run)" : std::string()) << '\n';
  if (!measure) {
    std::cout << "This nashprune was built without llama.cpp: the plan uses the weights alone and no perplexity is measured.\n"
                 "For the calibrated pipeline and perplexities, configure with -DNASHPRUNE_LLAMA_CPP_DIR=$(bash "
                 "cmake/provision-llama-cpp.sh) and rebuild.\n";
  }
  std::cout << '\n';
  prune_file(a);
  return 0;
}

// Layers never removed whole when --structures has layers and --freeze-first is
// not given (their heads and channels stay prunable). Layer 0 reads the raw
// embeddings: its weights are small, so weight scores rank it the cheapest
// layer, yet removing it ruins the model (stories260K, 20 chunks of 128:
// perplexity 66 without layer 0, 12.5 without layer 2, 5.0 whole).
constexpr int kept_first_layers = 1;

// The whole text as a number >= 0, or nothing.
std::optional<double> nonnegative_number(const std::string& text) {
  std::size_t used = 0;
  double value = 0;
  try {
    value = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != text.size() || !(value >= 0)) return std::nullopt;
  return value;
}

// --lambda: "auto" (calibrated to the target) or a number > 0 (the game needs λ > 0).
void parse_lambda(const std::string& text, np::pruning_options& select) {
  select.lambda_auto = text == "auto";
  if (select.lambda_auto) return;
  const auto value = nonnegative_number(text);
  if (!value || !(*value > 0) || !std::isfinite(*value)) {
    throw usage_error("--lambda must be auto or a finite number > 0, got '" + text + "'");
  }
  select.lambda = *value;
}

// --tau: "auto" (25th percentile of layer influence), "inf", or a number >= 0.
std::optional<double> parse_tau(const std::string& text) {
  if (text == "auto") return std::nullopt;
  if (text == "inf") return std::numeric_limits<double>::infinity();
  const auto value = nonnegative_number(text);
  if (!value) throw usage_error("--tau must be auto, inf or a number >= 0, got '" + text + "'");
  return value;
}

// --layer-rates, --depth-preset and their options, checked against the rest of the command line.
void choose_layer_importance(prune_args& a) {
  auto& r = a.by_layer;
  if (!a.layer_rates.empty()) r.rates = nashprune_tool::parse_rate_strategy(a.layer_rates);
  if (!a.depth_preset.empty()) r.depth = nashprune_tool::parse_depth_preset(a.depth_preset);
  if (!a.depth_selection.empty()) r.depth_selection = nashprune_tool::parse_depth_selection(a.depth_selection);
  if (!a.layer_importance.empty()) r.source = a.layer_importance;
  if (r.rates && r.depth) throw usage_error("--layer-rates prunes heads in every layer, --depth-preset removes whole layers: give one");
  if (!r.wanted()) {
    if (!a.layer_importance.empty()) throw usage_error("--layer-importance scores layers for --layer-rates or --depth-preset: give one of them");
    if (a.rate_options_given) throw usage_error("--alpha, --min-rate and --max-rate shape the rates of --layer-rates: add --layer-rates");
    if (!a.depth_selection.empty()) throw usage_error("--depth-selection chooses the layers of --depth-preset: add --depth-preset 25 or 50");
    return;
  }
  const char* option = r.rates ? "--layer-rates" : "--depth-preset";
  if (!a.plan_in.empty()) throw usage_error(std::string(option) + " chooses the plan: drop --plan");
  if (!a.game.empty() && a.game != "none") throw usage_error(std::string(option) + " chooses by layer importance and score alone: drop --game " + a.game);
  if (!a.method.empty() || !a.redundancy.empty() || !a.ablation.empty() || a.select.lambda_auto) {
    throw usage_error(std::string(option) + " plays no game: drop --method, --redundancy, --ablation and --lambda auto");
  }
  if (r.rates) {
    if (!a.depth_selection.empty()) throw usage_error("--depth-selection goes with --depth-preset, not --layer-rates");
    using np::structure;
    if (!a.select.structures.within({structure::heads, structure::groups, structure::mlp})) {
      throw usage_error("--layer-rates removes GQA groups or the same heads of every group, and MLP channels at the same rate: "
                        "--structures groups, heads, groups,mlp or heads,mlp (got " + nashprune_tool::structure_list(a.select.structures) + ")");
    }
    if (a.select.unit == np::budget_unit::heads && !a.select.wants_heads()) {
      throw usage_error("--layer-rates with --unit heads sets each layer's rate of heads: add groups or heads to --structures, or use --unit params");
    }
    return;
  }
  if (a.rate_options_given) throw usage_error("--alpha, --min-rate and --max-rate shape the rates of --layer-rates, not --depth-preset");
  if (a.target_given) throw usage_error("--depth-preset " + a.depth_preset + " sets how many layers go (floor of that share of the layers): drop --target");
  if (a.structures.empty()) {
    a.select.structures = {np::structure::layers};
  } else if (a.select.structures != np::structure_set{np::structure::layers}) {
    throw usage_error("--depth-preset removes whole layers: --structures layers (or leave --structures out)");
  }
}

// --game and --selector, or their deprecated spelling --method with --redundancy.
void choose_game(prune_args& a) {
  const bool legacy = !a.method.empty() || !a.redundancy.empty();
  if (legacy && (!a.game.empty() || !a.selector.empty())) {
    throw usage_error("--method and --redundancy are the deprecated spelling of --game and --selector: give one or the other");
  }
  if (legacy) {
    const auto chosen = nashprune_tool::legacy_method(a.method.empty() ? "nash" : a.method, a.redundancy.empty() ? "cosine" : a.redundancy);
    a.select.game = chosen.game;
    a.select.selection = chosen.selection;
    return;
  }
  if (!a.game.empty()) a.select.game = nashprune_tool::parse_game(a.game);
  if (!a.selector.empty()) a.select.selection = nashprune_tool::parse_selector(a.selector);
}

const nashprune_tool::register_command prune_command{{
    "prune", "Prune heads, groups, MLP channels, blocks or layers of a GGUF model",
    "nashprune prune stories260K.gguf pruned.gguf --unit heads --target 0.25",
    [](CLI::App& app) -> std::function<int()> {
      auto a = std::make_shared<prune_args>();
      auto& s = a->select;
      app.add_option("model", a->model, "input GGUF (omit to prune the bundled stories260K with its texts)");
      app.add_option("output,-o,--output", a->output, "output GGUF");
      app.add_option("--target", s.target, "fraction to remove: of parameters, or of heads with --unit heads")
          ->capture_default_str()
          ->each([a](const std::string&) { a->target_given = true; });
      app.add_option("--unit", a->unit, "what --target counts: params | heads (default params; heads without a model)");
      app.add_option("--structures", a->structures, "any of heads, groups, mlp, attn-blocks, mlp-blocks, layers; layers mix with the others (default: heads with --unit heads, "
                     "heads,mlp with --unit params; groups for heads and mlp-blocks for mlp where quantization blocks are wider)")->delimiter(',');
      app.add_option("--score", a->score, "importance: magnitude | wanda | activation (default: the recommended pipeline's; given, and the recommended game "
                     "scores nothing, the scored pipeline runs: --game none)");
      app.add_option("--text", a->calibration_run.text,
                     "calibration text: run it through the model with llama.cpp in this process (what nashprune calibrate "
                     "measures, without a file), then plan and compensate with the recommended pipeline");
      app.add_option("--tokens", a->calibration_run.tokens, "with --text: at most this many calibration tokens (0: the whole text)")
          ->capture_default_str();
      app.add_option("-c,--ctx", a->calibration_run.context, "tokens per chunk of --text and of --eval-text")
          ->capture_default_str()
          ->check(CLI::Range(8, 1 << 20));
      app.add_option("--eval-text", a->eval_text,
                     "held-out text: after writing, measure the perplexity of the input and the output with llama-perplexity "
                     "-c CTX -b CTX and print both and their ratio");
      app.add_option("--llama-bin", a->llama_bin,
                     "llama-perplexity, or its folder (default: $NASHPRUNE_LLAMA_BIN, then the provisioned llama.cpp, then $PATH)");
      app.add_option("--imatrix", a->imatrix, "llama-imatrix output (GGUF) for wanda / activation");
      app.add_option("--calibration", a->calibration,
                     "nashprune calibrate output: activation energies for wanda / activation, measured head redundancy for nash, "
                     "and the measured block influence 1 - cos(in, out) as the score of layers, attn-blocks and mlp-blocks "
                     "(without it they are scored by their weights)");
      app.add_option("--game", a->game,
                     "the heads' game (default: the recommended pipeline's, unless that game would ignore an option given: then cosine for "
                     "--lambda/--threshold/--iterations, ablation for --ablation, none for --score/--imatrix/--temperature/--tau; "
                     "a --game that ignores an option given is refused): none (importance alone); cosine: per-layer game on the heads' cosine; "
                     "output: one game over all layers on the energy of the change removing heads makes to the attention "
                     "output (needs --calibration v2, --unit heads); ablation: one game over all layers on the loss "
                     "measured by nashprune ablate (needs --ablation, --unit heads); obs: heads or groups and MLP channels "
                     "by the error left after attn_output and ffn_down are refit (needs --calibration with the input "
                     "moments; exact allocation over layers of each layer's least-error sets, enumerated where a count has at most "
                     "4096 sets with --selector exact and 64 with --selector greedy, SlimGPT's greedy beyond)");
      app.add_option("--selector", a->selector,
                     "greedy: the score-ordered greedy, or the price search of the output and ablation games; "
                     "exact: the exact 0/1 solver, or the exact choice of the output and ablation games");
      app.add_option("--method", a->method, "deprecated: --game and --selector");
      app.add_option("--redundancy", a->redundancy, "deprecated: --game");
      app.add_option("--ablation", a->ablation, "nashprune ablate output, for --game ablation");
      app.add_option("--compensate", a->compensate,
                     "none | bias | refit: after removing heads or MLP channels, refit attn_output / ffn_down by least squares "
                     "on the calibration's input moments and add the mean as a bias (refit), or add only the removed inputs' "
                     "mean contribution as a bias (bias); default: the recommended pipeline's when the calibration has the moments");
      app.add_option("--damping", a->damping, "ridge of the refit, relative to the mean input energy")
          ->capture_default_str()
          ->each([a](const std::string&) { a->damping_given = true; });
      app.add_flag("--sequential", a->sequential,
                   "compensate with each layer's attn_output / ffn_down input moments measured on the model whose earlier "
                   "layers (and, for ffn_down, the layer's own heads) are already pruned and compensated: one more pass of "
                   "--text per changed map (needs --text)");
      const auto nash_game_option = [a](const std::string&) { a->nash_game_options = true; };
      app.add_option("--lambda", a->lambda_text,
                     "the cosine game's redundancy penalty weight, or auto: one lambda over all layers pruning the --unit heads target")
          ->capture_default_str()
          ->each(nash_game_option);
      app.add_option("--threshold", s.threshold, "the cosine game's participation below which a head is pruned")
          ->capture_default_str()
          ->each(nash_game_option);
      app.add_option("--iterations", s.iterations, "the cosine game's Nash iterations")->capture_default_str()->each(nash_game_option);
      app.add_option("--min-heads", s.min_heads, "never keep fewer heads in a layer")->capture_default_str();
      app.add_option("--max-prune", s.max_prune, "largest fraction of a layer's heads removed")->capture_default_str();
      app.add_option("--freeze-first", s.freeze_first,
                     "leave the first N layers untouched (default 0; with --structures layers and no "
                     "--freeze-first, layer 0 is never removed whole: weight scores make it look cheap, yet "
                     "removing it ruins the model)")
          ->each([a](const std::string&) { a->freeze_first_given = true; });
      app.add_option("--freeze-last", s.freeze_last, "leave the last N layers untouched")->capture_default_str();
      app.add_option("--temperature", s.temperature,
                     "H-GSP prior temperature (needs --text or --calibration; default: the recommended pipeline's, 0 = priors off)")
          ->each([a](const std::string&) { a->priors_requested = true; });
      app.add_option("--tau", a->tau_text,
                     "H-GSP gate: layers whose influence is below tau use the layer prior (auto = 25th percentile, inf = all)")
          ->capture_default_str()
          ->each([a](const std::string&) { a->priors_requested = true; });
      app.add_option("--layer-rates", a->layer_rates,
                     "inverse | proportional | uniform: per-layer rates from the layer importance (important layers lose "
                     "less with inverse, more with proportional), then each layer's groups (--structures groups) or heads of "
                     "every group (heads) of least score and, with mlp, the same rate of its MLP channels of least score; "
                     "--unit heads: --target counts heads (channels follow each layer's rate), --unit params: the rates are "
                     "scaled until the removed heads and channels are --target of the parameters");
      app.add_option("--layer-importance", a->layer_importance,
                     "what scores a layer for --layer-rates and --depth-preset: block-influence (the measured 1 - cos(in, out); "
                     "needs --text or --calibration) or an ablation file of nashprune ablate --units layers (the loss increase "
                     "of removing each layer alone); default block-influence");
      app.add_option("--alpha", a->by_layer.rate_options.alpha, "--layer-rates: contrast of the rates (0: uniform)")
          ->capture_default_str()
          ->each([a](const std::string&) { a->rate_options_given = true; });
      app.add_option("--min-rate", a->by_layer.rate_options.min_rate, "--layer-rates: least rate of a layer")
          ->capture_default_str()
          ->each([a](const std::string&) { a->rate_options_given = true; });
      app.add_option("--max-rate", a->by_layer.rate_options.max_rate, "--layer-rates: largest rate of a layer")
          ->capture_default_str()
          ->each([a](const std::string&) { a->rate_options_given = true; });
      app.add_option("--depth-preset", a->depth_preset,
                     "25 | 50: remove floor(25 %) or floor(50 %) of the layers, those of least --layer-importance "
                     "(--structures layers; layer 0 is kept unless --freeze-first is given)");
      app.add_option("--depth-selection", a->depth_selection,
                     "any | contiguous: --depth-preset removes any layers, or the contiguous block of least importance (default any)");
      app.add_option("--stats", a->stats, "write per-head statistics (JSON)");
      app.add_option("--plan", a->plan_in, "apply this plan (JSON) instead of choosing one");
      app.add_option("--plan-out", a->plan_out, "write the chosen plan (JSON)");
      app.add_option("--report", a->report, "write an HTML page of the run: heads grid with scores, redundancy per layer, bytes per tensor kind");
      app.add_option("-t,--threads", a->scoring.threads,
                     "threads reading the weights for their scores (0: one per core, at most 4), and of --text and "
                     "--eval-text (0: all, llama-perplexity's default)")
          ->capture_default_str()
          ->check(CLI::NonNegativeNumber);
      app.add_flag("--dry-run", a->dry_run, "choose and report, write no model");
      app.add_flag("--force", a->force, "replace an existing output");
      return [a] {
        if (!a->unit.empty() && a->unit != "params" && a->unit != "heads") {
          throw usage_error("--unit must be params or heads, got '" + a->unit + "'");
        }
        const bool bundled_heads = a->unit.empty() && a->model.empty();
        a->select.unit = a->unit == "heads" || bundled_heads ? np::budget_unit::heads : np::budget_unit::parameters;
        a->select.tau = parse_tau(a->tau_text);
        parse_lambda(a->lambda_text, a->select);
        if (!a->score.empty()) a->scoring.score = nashprune_tool::parse_score(a->score);
        choose_game(*a);
        a->select.structures = a->structures.empty() ? nashprune_tool::default_structures(a->select.unit, a->model)
                                                     : nashprune_tool::parse_structures(a->structures);
        choose_layer_importance(*a);
        if (!a->freeze_first_given && a->select.wants(np::structure::layers)) a->select.keep_first_layers = kept_first_layers;
        a->calibration_run.threads = a->scoring.threads;
        if (a->model.empty()) return run_bundled_default(*a);
        prune_file(*a);
        return 0;
      };
    }}};

}  // namespace
