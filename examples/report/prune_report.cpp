// The report of a pruning run from the model and its plan (see prune_report.hpp).
#include "report/prune_report.hpp"

#include <gguf/tensor_floats.hpp>
#include <nashprune/head_redundancy.hpp>

#include <map>
#include <stdexcept>
#include <string>

namespace report {
namespace {

// Heads of `layer` as cosines of their attn_output columns (the directions they
// write into the residual stream), row-major; empty when the type cannot be read.
std::vector<double> output_column_cosine(const gguf::reader& model, const gguf::llama_shape& shape, std::int64_t layer) {
  const auto& tensor = model.tensor(gguf::layer_tensor(layer, "attn_output.weight"));
  if (!gguf::can_dequantize(tensor.type)) return {};
  const gguf::float_matrix wo(tensor);
  nashprune::head_redundancy<float> redundancy(shape.layers[static_cast<std::size_t>(layer)].n_head, shape.head_dim_v);
  redundancy.add_batch(wo.map());
  const Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> cosine = redundancy.cosine();
  return {cosine.data(), cosine.data() + cosine.size()};
}

std::vector<double> row_major(const Eigen::MatrixXd& m) {
  const Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> r = m;
  return {r.data(), r.data() + r.size()};
}

nashprune::tensor_plan shape_of(const gguf::tensor_spec& t) {
  return {{t.name, t.dims.empty() ? 1 : t.dims[0], t.rows()}, t.type, 0, 0, t.type, false};
}

}  // namespace

std::vector<tensor_entry> tensor_entries(const gguf::reader& model, const gguf::prune_plan& plan, const gguf::pruned_model& result,
                                         const std::map<std::string, nashprune::ggml_type>& retyped) {
  // Input layer -> output layer (removed layers renumber the ones after them).
  std::vector<std::int64_t> renumbered(plan.layers.size(), -1);
  std::int64_t next = 0;
  for (std::size_t i = 0; i < plan.layers.size(); ++i) {
    if (plan.layers[i].keep_layer) renumbered[i] = next++;
  }
  std::map<std::string, const gguf::tensor_spec*> output;
  for (const auto& t : result.tensors) output.emplace(t.name, &t);
  std::vector<tensor_entry> entries;
  for (const auto& t : model.tensors()) {
    auto plan_entry = shape_of(t);
    std::string kind = t.name;
    std::string output_name = t.name;
    if (const auto layer = gguf::split_layer_name(t.name)) {
      kind = layer->suffix;
      const auto at = static_cast<std::size_t>(layer->layer);
      output_name = at < renumbered.size() && renumbered[at] >= 0 ? gguf::layer_tensor(renumbered[at], layer->suffix) : std::string();
    }
    if (const auto found = output.find(output_name); found != output.end()) {
      const auto after = shape_of(*found->second);
      plan_entry.row_length_after = after.shape.row_length;
      plan_entry.rows_after = after.shape.rows;
      const auto type = retyped.find(output_name);
      plan_entry.type_after = type == retyped.end() ? after.type : type->second;
      output.erase(found);
    } else {
      plan_entry.row_length_after = 0;  // gone: no row left
    }
    entries.push_back({std::move(kind), std::move(plan_entry)});
  }
  // Tensors the output adds (the biases --compensate writes) count from zero bytes.
  for (const auto& [name, spec] : output) {
    const auto layer = gguf::split_layer_name(name);
    auto added = shape_of(*spec);
    added.row_length_after = added.shape.row_length;
    added.rows_after = added.shape.rows;
    added.shape.rows = 0;
    added.added = true;
    entries.push_back({layer ? layer->suffix : name, std::move(added)});
  }
  return entries;
}

prune_report describe_prune(const gguf::reader& model, const gguf::llama_shape& shape, const gguf::prune_plan& plan,
                            const gguf::pruned_model& result, std::span<const head_score> scores,
                            const calibrate::calibration_stats* calibration) {
  prune_report r;
  r.redundancy_source = calibration != nullptr ? "Cosine of the heads' outputs measured on the calibration text"
                                               : "Cosine of the heads' attn_output columns (the directions they write into the residual stream)";
  for (std::int64_t i = 0; i < shape.n_layer(); ++i) {
    const auto& l = shape.layers[static_cast<std::size_t>(i)];
    const auto& p = plan.layers[static_cast<std::size_t>(i)];
    layer_view v;
    v.removed = !p.keep_layer;
    v.kv_heads = l.n_head_kv;
    v.heads.resize(static_cast<std::size_t>(l.n_head), head_cell{.removed = true, .score = std::nullopt, .participation = std::nullopt});
    for (const auto h : p.heads.q_heads) v.heads.at(static_cast<std::size_t>(h)).removed = false;
    if (l.has_attention()) {
      if (calibration != nullptr) {
        v.redundancy = row_major(calibration->layers[static_cast<std::size_t>(i)].head_cosine);
      } else {
        v.redundancy = output_column_cosine(model, shape, i);
      }
    }
    r.layers.push_back(std::move(v));
  }
  for (std::size_t k = 0; k < scores.size(); ++k) {
    const auto& s = scores[k];
    if (s.layer < 0 || s.layer >= shape.n_layer() || s.head < 0 || s.head >= shape.layers[static_cast<std::size_t>(s.layer)].n_head) {
      throw std::invalid_argument("report: scores[" + std::to_string(k) + "] names layer " + std::to_string(s.layer) + " head " +
                                  std::to_string(s.head) + ", which the model does not have");
    }
    auto& cell = r.layers[static_cast<std::size_t>(s.layer)].heads[static_cast<std::size_t>(s.head)];
    cell.score = s.score;
    cell.participation = s.participation;
  }
  r.tensors = tensor_entries(model, plan, result);

  std::int64_t heads_before = 0;
  std::int64_t heads_after = 0;
  for (const auto& l : shape.layers) heads_before += l.n_head;
  for (const auto& l : result.shape.layers) heads_after += l.n_head;
  const auto before = gguf::totals(model.tensors());
  const auto after = gguf::totals(result.tensors);
  std::int64_t layers_removed = 0;
  for (const auto& p : plan.layers) layers_removed += p.keep_layer ? 0 : 1;
  r.facts = {
      {"architecture", shape.architecture + " -> " + result.shape.architecture},
      {"layers", std::to_string(shape.n_layer()) + " -> " + std::to_string(result.shape.n_layer()) +
                     (layers_removed > 0 ? " (" + std::to_string(layers_removed) + " removed)" : "")},
      {"query heads", std::to_string(heads_before) + " -> " + std::to_string(heads_after)},
      {"parameters", std::to_string(before.parameters) + " -> " + std::to_string(after.parameters)},
      {"tensor bytes", std::to_string(before.bytes) + " -> " + std::to_string(after.bytes)},
  };
  return r;
}

}  // namespace report
