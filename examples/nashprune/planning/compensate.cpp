// prune --compensate and --game obs (see compensate.hpp).
#include "compensate.hpp"

#include <gguf/float_encode.hpp>
#include <gguf/tensor_floats.hpp>
#ifdef NASHPRUNE_HAVE_QUANTIZE_PLAN
#include <quantize/ggml_quantize.hpp>
#endif

#include <nashprune/compensated_selection.hpp>
#include <nashprune/compensation.hpp>
#include <nashprune/moment_accumulator.hpp>

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <limits>
#include <map>
#include <optional>
#include <memory>
#include <numeric>
#include <ostream>

#include "command.hpp"
#include "planning/prune_planner.hpp"

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

// How exact the statistics' moments are (compensation.hpp's moment_rounding): formed
// in float by moment_accumulator.hpp, then stored as float.
constexpr double stored_moment_rounding =
    nashprune::moment_accumulator<float>::entry_error + std::numeric_limits<float>::epsilon() / 2;

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

// The block types ggml quantizes row by row without an importance matrix: the
// bytes written are the ones llama-quantize writes for the same values.
bool requantizable(np::ggml_type type) {
#ifdef NASHPRUNE_HAVE_QUANTIZE_PLAN
  using enum np::ggml_type;
  return type == q4_0 || type == q4_1 || type == q5_0 || type == q5_1 || type == q8_0;
#else
  (void)type;
  return false;
#endif
}

// The type a computed tensor of `row_length` columns is written in: the input's
// float type, the input's block type where requantizable, F16 otherwise.
np::ggml_type written_type(np::ggml_type original, std::int64_t row_length) {
  if (gguf::can_encode(original)) return original;
  if (requantizable(original) && row_length % np::traits_of(original).block_size == 0) return original;
  return np::ggml_type::f16;
}

std::vector<std::byte> encode(np::ggml_type type, std::span<const float> values, std::int64_t rows, std::int64_t row_length) {
  if (gguf::can_encode(type)) return gguf::encode_floats(type, values);
#ifdef NASHPRUNE_HAVE_QUANTIZE_PLAN
  return quantize::ggml_quantize_rows(type, values, rows, row_length);
#else
  (void)rows;
  (void)row_length;
  throw std::logic_error("no quantizer for " + std::string(np::traits_of(type).name));
#endif
}

/// Writes `values` (rows × cols, row-major as ggml stores it) into tensor `index`
/// of `result`, in written_type(original): what is written is decoded again and a
/// value that is not finite there is refused, naming the tensor.
void replace_tensor(gguf::pruned_model& result, std::size_t index, const Eigen::MatrixXd& values, np::ggml_type original) {
  auto& spec = result.tensors[index];
  std::vector<float> floats(static_cast<std::size_t>(values.size()));
  for (Eigen::Index r = 0; r < values.rows(); ++r) {
    for (Eigen::Index c = 0; c < values.cols(); ++c) floats[static_cast<std::size_t>(r * values.cols() + c)] = static_cast<float>(values(r, c));
  }
  spec.type = written_type(original, values.cols());
  auto bytes = encode(spec.type, floats, values.rows(), values.cols());
  std::vector<float> written(floats.size());
  gguf::dequantize(spec.type, bytes, written);
  for (std::size_t i = 0; i < written.size(); ++i) {
    if (!std::isfinite(written[i])) {
      const auto cols = static_cast<std::size_t>(values.cols());
      throw std::runtime_error(spec.name + ": value " + std::to_string(floats[i]) + " at row " + std::to_string(i / cols) + ", column " +
                               std::to_string(i % cols) + " is not finite as " + std::string(np::traits_of(spec.type).name) +
                               " after compensation; nothing written");
    }
  }
  std::erase_if(result.retyped, [&](const gguf::retyped_tensor& t) { return t.name == spec.name; });
  if (spec.type != original) result.retyped.push_back({spec.name, original});
  auto& source = result.sources[index];
  source.how = gguf::tensor_source::kind::bytes;
  source.from = nullptr;
  source.ranges.clear();
  source.bytes = std::make_shared<const std::vector<std::byte>>(std::move(bytes));
}

std::optional<std::size_t> find_tensor_index(const gguf::pruned_model& result, const std::string& name) {
  for (std::size_t i = 0; i < result.tensors.size(); ++i)
    if (result.tensors[i].name == name) return i;
  return std::nullopt;
}

std::size_t find_output_tensor(const gguf::pruned_model& result, const std::string& name) {
  if (const auto index = find_tensor_index(result, name)) return *index;
  throw std::logic_error("the pruned model has no tensor " + name);
}

// The biases compensation adds, by the output weight they belong to (several
// removed maps can add into one).
using bias_sums = std::map<std::string, Eigen::VectorXd>;

void add_bias(bias_sums& biases, const std::string& weight, const Eigen::VectorXd& bias) {
  auto [it, inserted] = biases.try_emplace(weight, bias);
  if (!inserted) it->second += bias;
}

/// Compensates one map of layer `layer` (output layer `out_layer`) that keeps the input coordinates `kept`.
void compensate_map(const gguf::reader& model, const compensated_input& in, std::int64_t layer, std::int64_t out_layer,
                    const std::vector<std::int64_t>& kept, np::compensation_kind kind, double damping, gguf::pruned_model& result,
                    bias_sums& biases, std::ostream& report) {
  const auto name = gguf::layer_tensor(layer, in.weight);
  const auto& tensor = model.tensor(name);
  const Eigen::Index width = tensor.dims[0];
  const auto removed = np::complement_units(kept, width);
  if (removed.empty()) return;
  require_moments(in, layer, width);
  if (!gguf::can_dequantize(tensor.type)) {
    throw usage_error(name + " is stored as " + std::string(np::traits_of(tensor.type).name) +
                      ", which compensation cannot decode (use --compensate none)");
  }
  const auto out_name = gguf::layer_tensor(out_layer, in.weight);
  if (model.find_tensor(gguf::layer_tensor(layer, in.bias)) != nullptr) {
    throw usage_error(gguf::layer_tensor(layer, in.bias) + " exists already: compensation of models with biases is not supported");
  }
  const Eigen::MatrixXd w = read_weight(model, name);
  const Eigen::MatrixXd h = second_moment(in);
  const np::compensation_options<double> options{damping, stored_moment_rounding};
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
  replace_tensor(result, index, chosen.kept_weight, tensor.type);
  if (kind != np::compensation_kind::none) add_bias(biases, out_name, chosen.bias);
}

// The mean output W μ of a whole removed map of layer `layer`.
Eigen::VectorXd mean_output(const gguf::reader& model, const compensated_input& in, std::int64_t layer) {
  const auto name = gguf::layer_tensor(layer, in.weight);
  const auto& tensor = model.tensor(name);
  require_moments(in, layer, tensor.dims[0]);
  if (!gguf::can_dequantize(tensor.type)) {
    throw usage_error(name + " is stored as " + std::string(np::traits_of(tensor.type).name) +
                      ", which compensation cannot decode (use --compensate none)");
  }
  if (model.find_tensor(gguf::layer_tensor(layer, in.bias)) != nullptr) {
    throw usage_error(gguf::layer_tensor(layer, in.bias) + " exists already: compensation of models with biases is not supported");
  }
  return read_weight(model, name) * *in.mean;
}

// Removed attention blocks, MLP blocks and layers: each one's mean output goes
// into the bias llama.cpp adds at the same point of the residual stream. An MLP
// block's point is its own layer's FFN, which the output keeps as a zero stub
// that still applies ffn_down.bias; an attention block's or a layer's point is
// the end of the previous kept layer (its ffn_down, or the attn_output of a layer
// without FFN), or the zeroed placeholder attention that the first kept layer
// holds when its heads are all removed. The attention of a first layer that
// keeps no placeholder, or a removed first layer, has no such point.
void compensate_blocks(const gguf::reader& model, const gguf::llama_shape& shape, const gguf::prune_plan& plan,
                       const calibrate::calibration_stats& stats, const gguf::pruned_model& result, bias_sums& biases,
                       std::ostream& report) {
  std::optional<std::string> previous_point;  // the output weight whose bias adds at the current point
  std::int64_t out_layer = 0;
  const auto place = [&](const Eigen::VectorXd& mean, const std::optional<std::string>& point, const std::string& what) {
    if (!point) {
      report << "  " << what << ": no bias of the pruned model adds at its place in the residual stream; not compensated\n";
      return;
    }
    report << "  " << what << ": its mean output (norm " << mean.norm() << ") goes into " << point->substr(0, point->size() - 6) << "bias\n";
    add_bias(biases, *point, mean);
  };
  const auto present = [&](std::int64_t layer, const char* suffix) -> std::optional<std::string> {
    auto name = gguf::layer_tensor(layer, suffix);
    if (find_tensor_index(result, name)) return name;
    return std::nullopt;
  };
  for (std::int64_t l = 0; l < shape.n_layer(); ++l) {
    const auto& p = plan.layers[static_cast<std::size_t>(l)];
    const auto& in_shape = shape.layers[static_cast<std::size_t>(l)];
    const auto& s = stats.layers[static_cast<std::size_t>(l)];
    const bool had_attention = in_shape.has_attention();
    const bool had_mlp = in_shape.n_ff > 0;
    if (!p.keep_layer) {
      Eigen::VectorXd mean = Eigen::VectorXd::Zero(shape.n_embd);
      if (had_attention) mean += mean_output(model, attention_input(s), l);
      if (had_mlp) mean += mean_output(model, mlp_input(s), l);
      place(mean, previous_point, "layer " + std::to_string(l) + " removed");
      continue;
    }
    if (had_attention && p.heads.q_heads.empty()) {
      const auto placeholder = present(out_layer, "attn_output.weight");
      place(mean_output(model, attention_input(s), l), placeholder ? placeholder : previous_point,
            "layer " + std::to_string(l) + " attention removed");
    }
    if (auto point = present(out_layer, "attn_output.weight")) previous_point = point;
    if (had_mlp && p.channels.empty()) {
      place(mean_output(model, mlp_input(s), l), present(out_layer, "ffn_down.weight"), "layer " + std::to_string(l) + " MLP removed");
    }
    if (auto point = present(out_layer, "ffn_down.weight")) previous_point = point;
    ++out_layer;
  }
}

// Appends each summed bias after the weight it belongs to.
void write_biases(const bias_sums& biases, gguf::pruned_model& result) {
  for (const auto& [weight, bias] : biases) {
    const auto index = find_output_tensor(result, weight);
    const auto bias_name = weight.substr(0, weight.size() - std::string_view("weight").size()) + "bias";
    gguf::tensor_spec spec{bias_name, {bias.size()}, np::ggml_type::f32};
    result.tensors.insert(result.tensors.begin() + static_cast<std::ptrdiff_t>(index) + 1, spec);
    result.sources.insert(result.sources.begin() + static_cast<std::ptrdiff_t>(index) + 1, gguf::tensor_source{});
    replace_tensor(result, index + 1, bias, np::ggml_type::f32);
  }
}

}  // namespace

np::compensation_kind parse_compensation(const std::string& text) {
  return parse_name<np::compensation_kind>(np::compensation_kind_names, "--compensate", text);
}

std::string compensation_name(np::compensation_kind kind) {
  return std::string(np::compensation_kind_names[static_cast<std::size_t>(kind)]);
}

bool compensable_weights(const gguf::reader& model) {
  for (const auto& tensor : model.tensors()) {
    const auto name = gguf::split_layer_name(tensor.name);
    if (name && (name->suffix == "attn_output.weight" || name->suffix == "ffn_down.weight") && !gguf::can_dequantize(tensor.type)) return false;
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
  bias_sums biases;
  std::int64_t out_layer = 0;
  for (std::int64_t l = 0; l < shape.n_layer(); ++l) {
    const auto& p = plan.layers[static_cast<std::size_t>(l)];
    if (!p.keep_layer) continue;
    const auto& s = stats.layers[static_cast<std::size_t>(l)];
    if (!p.heads.q_heads.empty()) compensate_map(model, attention_input(s), l, out_layer, np::unit_coordinates(p.heads.q_heads, shape.head_dim_v), kind, damping, result, biases, report);
    if (!p.channels.empty()) compensate_map(model, mlp_input(s), l, out_layer, p.channels, kind, damping, result, biases, report);
    ++out_layer;
  }
  if (kind != np::compensation_kind::none) compensate_blocks(model, shape, plan, stats, result, biases, report);
  write_biases(biases, result);
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
      return np::obs_cost<double>(read_weight(model, gguf::layer_tensor(l, in.weight)), second_moment(in), *in.mean, damping,
                                   stored_moment_rounding);
    };
    if (options.wants_heads() && layer.n_head > 1) costs.attention = cost_of(attention_input(s), layer.n_head * shape.head_dim_v);
    if (options.wants(np::structure::mlp) && layer.n_ff > 1) costs.mlp = cost_of(mlp_input(s), layer.n_ff);
  }
  return game;
}

}  // namespace nashprune_tool
