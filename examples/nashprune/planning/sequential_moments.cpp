// prune --sequential (see compensate.hpp): its own file, since it runs llama.cpp
// and the rest of compensation does not.
#include <unistd.h>

#include <filesystem>
#include <ostream>
#include <sstream>

#include "compensate.hpp"
#include "io/calibration_run.hpp"

namespace nashprune_tool {

namespace np = nashprune;

calibrate::calibration_stats sequential_moments(const std::string& model_path, const gguf::reader& model, const gguf::llama_shape& shape,
                                                const gguf::prune_plan& plan, calibrate::calibration_stats stats, np::compensation_kind kind,
                                                double damping, const text_run_args& run, std::ostream& report) {
  // The plan's changes in model order: per layer its heads (or the whole layer), then its channels.
  struct change {
    std::int64_t layer;
    bool attention;
  };
  std::vector<change> changes;
  for (std::int64_t l = 0; l < shape.n_layer(); ++l) {
    const auto& p = plan.layers[static_cast<std::size_t>(l)];
    const auto& layer = shape.layers[static_cast<std::size_t>(l)];
    if (!p.keep_layer || static_cast<std::int64_t>(p.heads.q_heads.size()) != layer.n_head) changes.push_back({l, true});
    if (p.keep_layer && static_cast<std::int64_t>(p.channels.size()) != layer.n_ff) changes.push_back({l, false});
  }
  // The model after the first `applied` changes, pruned and compensated with the moments measured so far.
  const auto partial_plan = [&](std::size_t applied) {
    auto partial = gguf::keep_all(shape);
    for (std::size_t k = 0; k < applied; ++k) {
      const auto l = static_cast<std::size_t>(changes[k].layer);
      if (changes[k].attention) {
        partial.layers[l].keep_layer = plan.layers[l].keep_layer;
        partial.layers[l].heads = plan.layers[l].heads;
      } else {
        partial.layers[l].channels = plan.layers[l].channels;
      }
    }
    return partial;
  };
  const auto scratch = std::filesystem::temp_directory_path() /
                       ("nashprune-sequential-" + std::to_string(::getpid()) + "-" + std::filesystem::path(model_path).filename().string());
  struct remove_on_exit {
    std::filesystem::path path;
    ~remove_on_exit() {
      std::error_code ec;
      std::filesystem::remove(path, ec);
    }
  } cleanup{scratch};
  std::size_t measured = 0;  // changes applied to the model of `latest`
  calibrate::calibration_stats latest;
  for (std::size_t k = 0; k < changes.size(); ++k) {
    // Map k's input sees the changes before it; a removed layer has no map to compensate.
    const auto l = changes[k].layer;
    if (k == 0 || !plan.layers[static_cast<std::size_t>(l)].keep_layer) continue;
    if (measured != k) {
      const auto partial = partial_plan(k);
      auto result = gguf::plan_output(model, shape, partial, {});
      std::ostringstream quiet;
      if (kind != np::compensation_kind::none) apply_compensation(model, shape, partial, stats, kind, damping, result, quiet);
      {
        gguf::writer out(scratch, {.force = true, .protect = {model_path}});
        out.begin(result.metadata, result.tensors);
        gguf::write_tensors(model, result, out);
        out.commit();
      }
      latest = calibrate::as_stored(measure_calibration(scratch.string(), run, true, "prune --sequential"));
      measured = k;
      report << "  sequential pass " << k << ": layer " << l << (changes[k].attention ? " attn_output" : " ffn_down")
             << " input measured after " << k << " earlier change" << (k == 1 ? "" : "s") << '\n';
    }
    // Layers before l that the plan removes are absent from the measured model.
    std::int64_t measured_layer = 0;
    for (std::int64_t j = 0; j < l; ++j) measured_layer += plan.layers[static_cast<std::size_t>(j)].keep_layer ? 1 : 0;
    auto& target = stats.layers[static_cast<std::size_t>(l)];
    const auto& source = latest.layers[static_cast<std::size_t>(measured_layer)];
    if (changes[k].attention) {
      target.attn_in_mean = source.attn_in_mean;
      target.attn_in_covariance = source.attn_in_covariance;
    } else {
      target.ffn_in_mean = source.ffn_in_mean;
      target.ffn_in_covariance = source.ffn_in_covariance;
    }
  }
  return stats;
}

}  // namespace nashprune_tool
