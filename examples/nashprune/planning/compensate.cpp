// prune --compensate and --game obs (see compensate.hpp).
#include "compensate.hpp"

#include <gguf/float_encode.hpp>
#include <gguf/tensor_floats.hpp>

#include <nashprune/compensated_selection.hpp>
#include <nashprune/compensation.hpp>

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <memory>
#include <numeric>
#include <ostream>

#include "command.hpp"

namespace nashprune_tool {
namespace {

namespace np = nashprune;

// The two maps compensation rewrites, and the layer statistics that describe their inputs.
struct compensated_input {
  const char* weight;  // tensor suffix
  const char* bias;
  const Eigen::VectorXd* mean;
  const Eigen::MatrixXd* covariance;
};

compensated_input attention_input(const calibrate::layer_stats& l) {
  return {"attn_output.weight", "attn_output.bias", &l.attn_in_mean, &l.attn_in_covariance};
}
compensated_input mlp_input(const calibrate::layer_stats& l) {
  return {"ffn_down.weight", "ffn_down.bias", &l.ffn_in_mean, &l.ffn_in_covariance};
}

Eigen::MatrixXd second_moment(const compensated_input& in) { return *in.covariance + *in.mean * in.mean->transpose(); }

Eigen::MatrixXd read_weight(const gguf::reader& model, const std::string& name) {
  const auto& tensor = model.tensor(name);
  const gguf::float_matrix w(tensor);
  Eigen::MatrixXd out = w.map().cast<double>();
  model.release(tensor.data);
  return out;
}

void require_moments(const compensated_input& in, std::int64_t layer, std::int64_t width) {
  if (in.mean->size() != width || in.covariance->rows() != width) {
    throw usage_error("the calibration statistics lack the moments of layer " + std::to_string(layer) + "'s " + in.weight +
                      " input, which --compensate and --game obs need: rerun nashprune calibrate (without --no-moments), or use --compensate none");
  }
}

/// Writes `values` (rows × cols, row-major as ggml stores it) into tensor `index` of `result` in its type.
void replace_tensor(gguf::pruned_model& result, std::size_t index, const Eigen::MatrixXd& values) {
  const auto& spec = result.tensors[index];
  std::vector<float> floats(static_cast<std::size_t>(values.size()));
  for (Eigen::Index r = 0; r < values.rows(); ++r) {
    for (Eigen::Index c = 0; c < values.cols(); ++c) {
      const auto v = static_cast<float>(values(r, c));
      if (!std::isfinite(v)) {
        throw std::runtime_error(spec.name + ": value " + std::to_string(values(r, c)) + " at row " + std::to_string(r) + ", column " +
                                 std::to_string(c) + " is not finite as float after compensation; nothing written");
      }
      floats[static_cast<std::size_t>(r * values.cols() + c)] = v;
    }
  }
  auto& source = result.sources[index];
  source.how = gguf::tensor_source::kind::bytes;
  source.from = nullptr;
  source.ranges.clear();
  source.bytes = std::make_shared<const std::vector<std::byte>>(gguf::encode_floats(spec.type, floats));
}

std::size_t find_output_tensor(const gguf::pruned_model& result, const std::string& name) {
  for (std::size_t i = 0; i < result.tensors.size(); ++i)
    if (result.tensors[i].name == name) return i;
  throw std::logic_error("the pruned model has no tensor " + name);
}

/// Compensates one map of layer `layer` (output layer `out_layer`) that keeps the input coordinates `kept`.
void compensate_map(const gguf::reader& model, const compensated_input& in, std::int64_t layer, std::int64_t out_layer,
                    const std::vector<std::int64_t>& kept, np::compensation_kind kind, double damping, gguf::pruned_model& result,
                    std::ostream& report) {
  const auto name = gguf::layer_tensor(layer, in.weight);
  const auto& tensor = model.tensor(name);
  const Eigen::Index width = tensor.dims[0];
  const auto removed = np::complement_units(kept, width);
  if (removed.empty()) return;
  require_moments(in, layer, width);
  if (!gguf::can_encode(tensor.type)) {
    throw usage_error(name + " is stored as " + std::string(np::traits_of(tensor.type).name) +
                      ": compensation writes F32, F16 or BF16 weights (use --compensate none on quantized models)");
  }
  const auto out_name = gguf::layer_tensor(out_layer, in.weight);
  const auto bias_name = gguf::layer_tensor(out_layer, in.bias);
  if (model.find_tensor(gguf::layer_tensor(layer, in.bias)) != nullptr) {
    throw usage_error(gguf::layer_tensor(layer, in.bias) + " exists already: compensation of models with biases is not supported");
  }
  const Eigen::MatrixXd w = read_weight(model, name);
  const Eigen::MatrixXd h = second_moment(in);
  const np::compensation_options<double> options{damping};
  double errors[3] = {0, 0, 0};
  np::compensated_map<double> chosen;
  for (const auto k : {np::compensation_kind::none, np::compensation_kind::bias, np::compensation_kind::refit}) {
    auto c = np::compensate(k, w, h, *in.mean, kept, removed, options);
    errors[static_cast<int>(k)] = c.error;
    if (k == kind) chosen = std::move(c);
  }
  const double power = (w * h).cwiseProduct(w).sum();  // E‖W x‖²
  report << "  layer " << layer << " " << in.weight << ": " << removed.size() << " of " << width
         << " inputs removed; expected output error / E|Wx|^2: none " << errors[0] / power << ", bias " << errors[1] / power
         << ", refit " << errors[2] / power << (chosen.damping_raised ? " (damping raised: the kept inputs are linearly dependent)" : "")
         << '\n';
  const auto index = find_output_tensor(result, out_name);
  if (result.tensors[index].dims != std::vector<std::int64_t>{static_cast<std::int64_t>(kept.size()), w.rows()}) {
    throw std::logic_error(out_name + " has an unexpected shape in the pruned model");
  }
  replace_tensor(result, index, chosen.kept_weight);
  if (kind == np::compensation_kind::none) return;
  gguf::tensor_spec bias{bias_name, {w.rows()}, np::ggml_type::f32};
  result.tensors.insert(result.tensors.begin() + static_cast<std::ptrdiff_t>(index) + 1, bias);
  result.sources.insert(result.sources.begin() + static_cast<std::ptrdiff_t>(index) + 1, gguf::tensor_source{});
  replace_tensor(result, index + 1, chosen.bias);
}

}  // namespace

np::compensation_kind parse_compensation(const std::string& text) {
  if (text == "none") return np::compensation_kind::none;
  if (text == "bias") return np::compensation_kind::bias;
  if (text == "refit") return np::compensation_kind::refit;
  throw usage_error("--compensate must be none, bias or refit, got '" + text + "'");
}

std::string compensation_name(np::compensation_kind kind) {
  return kind == np::compensation_kind::none ? "none" : kind == np::compensation_kind::bias ? "bias" : "refit";
}

bool compensable_weights(const gguf::reader& model) {
  for (const auto& tensor : model.tensors()) {
    const auto name = gguf::split_layer_name(tensor.name);
    if (name && (name->suffix == "attn_output.weight" || name->suffix == "ffn_down.weight") && !gguf::can_encode(tensor.type)) return false;
  }
  return true;
}

bool has_input_moments(const calibrate::calibration_stats& stats) {
  for (std::size_t i = 0; i < stats.layers.size(); ++i) {
    const auto& l = stats.layers[i];
    const auto& shape = stats.model.layers[i];
    if (shape.n_head > 0 && l.attn_in_mean.size() == 0) return false;
    if (shape.n_ff > 0 && l.ffn_in_mean.size() == 0) return false;
  }
  return true;
}

void apply_compensation(const gguf::reader& model, const gguf::llama_shape& shape, const gguf::prune_plan& plan,
                        const calibrate::calibration_stats& stats, np::compensation_kind kind, double damping,
                        gguf::pruned_model& result, std::ostream& report) {
  if (!(damping >= 0) || !std::isfinite(damping)) throw usage_error("--damping must be finite and >= 0");
  report << "compensation " << compensation_name(kind) << " (damping " << damping << "):\n";
  std::int64_t out_layer = 0;
  for (std::int64_t l = 0; l < shape.n_layer(); ++l) {
    const auto& p = plan.layers[static_cast<std::size_t>(l)];
    if (!p.keep_layer) continue;
    const auto& s = stats.layers[static_cast<std::size_t>(l)];
    if (!p.heads.q_heads.empty()) compensate_map(model, attention_input(s), l, out_layer, np::unit_coordinates(p.heads.q_heads, shape.head_dim_v), kind, damping, result, report);
    if (!p.channels.empty()) compensate_map(model, mlp_input(s), l, out_layer, p.channels, kind, damping, result, report);
    ++out_layer;
  }
  result.metadata.emplace_back("general.pruning.compensation", gguf::value::string(compensation_name(kind)));
  result.metadata.emplace_back("general.pruning.compensation_damping", gguf::value::f32(static_cast<float>(damping)));
}

np::compensated_error_game compensated_error_game_of(const gguf::reader& model, const gguf::llama_shape& shape,
                                                     const calibrate::calibration_stats& stats, const np::pruning_options& options,
                                                     double damping) {
  if (!(damping >= 0) || !std::isfinite(damping)) throw usage_error("--damping must be finite and >= 0");
  np::compensated_error_game game;
  game.layers.resize(static_cast<std::size_t>(shape.n_layer()));
  for (std::int64_t l = 0; l < shape.n_layer(); ++l) {
    if (options.frozen(l, shape.n_layer())) continue;
    const auto& layer = shape.layers[static_cast<std::size_t>(l)];
    const auto& s = stats.layers[static_cast<std::size_t>(l)];
    auto& costs = game.layers[static_cast<std::size_t>(l)];
    costs.scale = s.residual_energy > 0 ? static_cast<double>(stats.tokens) / s.residual_energy : 1.0;
    const auto cost_of = [&](const compensated_input& in, std::int64_t width) {
      require_moments(in, l, width);
      return np::obs_cost<double>(read_weight(model, gguf::layer_tensor(l, in.weight)), second_moment(in), *in.mean, damping);
    };
    if (options.wants_heads() && layer.n_head > 1) costs.attention = cost_of(attention_input(s), layer.n_head * shape.head_dim_v);
    if (options.wants(np::structure::mlp) && layer.n_ff > 1) costs.mlp = cost_of(mlp_input(s), layer.n_ff);
  }
  return game;
}

}  // namespace nashprune_tool
