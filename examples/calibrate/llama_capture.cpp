// Calibration through llama.cpp's evaluation callback (see llama_capture.hpp).
#include "calibrate/llama_capture.hpp"

#include <nashprune/depth_pruning.hpp>
#include <nashprune/head_redundancy.hpp>
#include <nashprune/moment_accumulator.hpp>

#include "calibrate/llama_text_run.hpp"
#include "calibrate/moment_passes.hpp"
#include "calibrate/stats_writer.hpp"
#include "gguf/tensor_floats.hpp"

#include <ggml-backend.h>
#include <ggml.h>
#include <llama.h>

#include <algorithm>
#include <memory>
#include <optional>
#include <stdexcept>
#include <thread>

namespace calibrate {
namespace {

class accumulators {
 public:
  accumulators(const gguf::reader& model, const gguf::llama_shape& shape, const capture_options& options)
      : model_(model), shape_(shape), options_(options) {
    if (!options.moment_layers.empty() && options.moment_layers.size() != shape.layers.size()) {
      throw std::invalid_argument("capture_options::moment_layers has " + std::to_string(options.moment_layers.size()) +
                                  " entries for a model of " + std::to_string(shape.layers.size()) + " layers");
    }
    for (const auto& l : shape.layers) {
      const auto layer = static_cast<std::int64_t>(layers_.size());
      const bool moments = options.moments && (options.moment_layers.empty() || options.moment_layers[static_cast<std::size_t>(layer)]);
      layer_state s;
      if (l.n_head > 0) {
        if (options.summaries) {
          s.redundancy.emplace(l.n_head, shape.head_dim_v);
          if (projectable(layer)) {
            s.output_redundancy.emplace(l.n_head, shape.n_embd);
            s.relative_output_redundancy.emplace(l.n_head, shape.n_embd);
          }
          s.attn_sum2 = Eigen::VectorXd::Zero(l.n_head * shape.head_dim_v);
        }
        if (moments) s.attn_moments.emplace(l.n_head * shape.head_dim_v, moment_options());
      }
      if (options.summaries) s.ffn_sum2 = Eigen::VectorXd::Zero(l.n_ff);
      if (moments && l.n_ff > 0) s.ffn_moments.emplace(l.n_ff, moment_options());
      layers_.push_back(std::move(s));
    }
  }

  // ggml_backend_sched_eval_callback: `ask` selects the nodes to observe; the
  // second call sees them computed. Errors cannot cross the C boundary: they are
  // kept and the evaluation is stopped (return false).
  static bool callback(ggml_tensor* t, bool ask, void* user) {
    auto* self = static_cast<accumulators*>(user);
    if (ask) return self->wanted(t).has_value();
    try {
      self->take(t);
      return true;
    } catch (...) {
      self->error_ = std::current_exception();
      return false;
    }
  }

  void rethrow_if_failed() {
    if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
  }

  /// The statistics; moves the moment accumulators into the result, so that no
  /// layer's moments are ever held twice.
  calibration_stats finish(std::uint64_t tokens) {
    calibration_stats out;
    out.model = fingerprint::of(shape_);
    out.tokens = tokens;
    for (std::size_t i = 0; i < layers_.size(); ++i) {
      auto& s = layers_[i];
      const auto& l = shape_.layers[i];
      const auto missing = [&](const char* what) {
        return std::runtime_error("layer " + std::to_string(i) + ": the evaluation never showed " + what +
                                  " (llama.cpp's graph differs from what the capture expects)");
      };
      layer_stats r;
      if (l.n_head > 0 && (s.redundancy || s.attn_moments)) {
        if (s.attn_tokens != tokens) throw missing("the input of attn_output for every token");
        if (s.redundancy) {
          r.head_gram = s.redundancy->gram();
          r.head_cosine = s.redundancy->cosine();
          if (s.output_redundancy) {
            r.head_output_gram = s.output_redundancy->gram();
            r.head_relative_gram = s.relative_output_redundancy->gram();
          }
          r.attn_in_sum2 = s.attn_sum2;
        }
        if (s.attn_moments) std::move(*s.attn_moments).finish(r.attn_in_mean, r.attn_in_covariance);
      }
      if (l.n_ff > 0 && (options_.summaries || s.ffn_moments)) {
        if (s.ffn_tokens != tokens) throw missing("the input of ffn_down for every token");
        r.ffn_in_sum2 = s.ffn_sum2;
        if (s.ffn_moments) std::move(*s.ffn_moments).finish(r.ffn_in_mean, r.ffn_in_covariance);
      }
      s.attn_moments.reset();
      s.ffn_moments.reset();
      if (options_.summaries) {
        if (s.influence_tokens != tokens) throw missing("the residual stream (attn_norm, ffn_norm, l_out) for every token");
        const double n = static_cast<double>(tokens);
        r.attn_influence = s.attn_influence / n;
        r.mlp_influence = s.mlp_influence / n;
        r.layer_influence = s.layer_influence / n;
        r.residual_energy = s.residual_energy;
      }
      out.layers.push_back(std::move(r));
    }
    return out;
  }

 private:
  using input_moments = nashprune::moment_accumulator<float>;

  // The moment update shares llama.cpp's threads: they wait while the evaluation
  // callback runs.
  nashprune::moment_accumulator_options moment_options() const {
    return input_moment_options(options_.threads > 0 ? options_.threads : static_cast<int>(std::max(1U, std::thread::hardware_concurrency())));
  }

  struct layer_state {
    std::optional<nashprune::head_redundancy<float>> redundancy;
    std::optional<nashprune::head_redundancy<float>> output_redundancy;  // of y_h = W_o,h x_h (width n_embd)
    std::optional<nashprune::head_redundancy<float>> relative_output_redundancy;  // of y_h(t) / ‖h(t)‖
    double residual_energy = 0;                                          // Σ_tokens ‖layer input‖²
    Eigen::VectorXd attn_sum2;
    Eigen::VectorXd ffn_sum2;
    std::optional<input_moments> attn_moments, ffn_moments;
    std::uint64_t attn_tokens = 0, ffn_tokens = 0;
    double attn_influence = 0, mlp_influence = 0, layer_influence = 0;
    std::uint64_t influence_tokens = 0;
  };
  enum class node { head_outputs, ffn_inner, attn_norm, ffn_norm, layer_out };
  struct target {
    node what;
    std::int64_t layer;
  };

  const gguf::reader& model_;
  const gguf::llama_shape& shape_;
  const capture_options& options_;
  std::vector<layer_state> layers_;
  std::exception_ptr error_;
  // The residual stream of the layer being evaluated (one chunk).
  row_major_block layer_in_, attn_out_;
  std::int64_t layer_in_of_ = -1, attn_out_of_ = -1;
  std::vector<float> scratch_;
  row_major_block projected_;  // one token slice of the heads' contributions y_h, tokens × n_head·n_embd

  std::optional<target> wanted(const ggml_tensor* t) const {
    const std::string_view name = ggml_get_name(t);
    std::optional<target> r;
    if (t->op == GGML_OP_MUL_MAT && t->src[0] != nullptr) {
      const std::string_view w = ggml_get_name(t->src[0]);
      if (auto l = weight_layer(w, "attn_output.weight")) r = target{node::head_outputs, *l};
      if (auto l = weight_layer(w, "ffn_down.weight")) r = target{node::ffn_inner, *l};
    } else if (auto l = suffix_number(name, "attn_norm-")) {
      r = target{node::attn_norm, *l};
    } else if (auto l = suffix_number(name, "ffn_norm-")) {
      r = target{node::ffn_norm, *l};
    } else if (auto l = suffix_number(name, "l_out-")) {
      r = target{node::layer_out, *l};
    }
    if (r && (r->layer < 0 || r->layer >= shape_.n_layer())) return std::nullopt;
    if (r && !options_.summaries) {
      const auto& s = layers_[static_cast<std::size_t>(r->layer)];
      if (!(r->what == node::head_outputs && s.attn_moments) && !(r->what == node::ffn_inner && s.ffn_moments)) return std::nullopt;
    }
    return r;
  }

  /// A computed F32 activation block (tokens × width) as a row-major view.
  activation_view view(const ggml_tensor* t) {
    if (t->type != GGML_TYPE_F32 || t->nb[0] != sizeof(float) || t->ne[2] != 1 || t->ne[3] != 1) {
      throw std::runtime_error(std::string("captured tensor ") + ggml_get_name(t) + " is not a 2-D F32 row-contiguous block");
    }
    const auto stride = static_cast<Eigen::Index>(t->nb[1] / sizeof(float));
    if (t->buffer != nullptr && !ggml_backend_buffer_is_host(t->buffer)) {
      scratch_.resize(static_cast<std::size_t>(ggml_nbytes(t) / sizeof(float)));
      ggml_backend_tensor_get(t, scratch_.data(), 0, ggml_nbytes(t));
      return {scratch_.data(), t->ne[1], t->ne[0], Eigen::OuterStride<>(stride)};
    }
    return {static_cast<const float*>(t->data), t->ne[1], t->ne[0], Eigen::OuterStride<>(stride)};
  }

  /// The residual stream entering an RMSNorm node (norm · weight <- rms_norm <- x).
  static const ggml_tensor* norm_input(const ggml_tensor* t) {
    const ggml_tensor* norm = t->src[0];
    if (t->op == GGML_OP_MUL && norm != nullptr && norm->op == GGML_OP_RMS_NORM && norm->src[0] != nullptr) return norm->src[0];
    throw std::runtime_error(std::string(ggml_get_name(t)) + " is not RMSNorm times a weight");
  }

  void observe(std::int64_t layer, activation kind, const activation_view& x) const {
    if (options_.observe) options_.observe(layer, kind, x);
  }

  static void add_sum2(Eigen::VectorXd& sum2, const activation_view& x) {
    sum2 += x.cast<double>().colwise().squaredNorm().transpose();
  }

  static double influence_total(const row_major_block& in, const activation_view& out) {
    if (in.rows() != out.rows() || in.cols() != out.cols()) throw std::runtime_error("block input and output differ in shape");
    return static_cast<double>(nashprune::block_influence(in, out)) * static_cast<double>(in.rows());
  }

  // Whether attn_output's weights convert to float (gguf::float_matrix: F32, F16,
  // BF16, Q8_0); other types leave the projected Grams out of the statistics.
  bool projectable(std::int64_t layer) const {
    try {
      const auto& tensor = model_.tensor(gguf::layer_tensor(layer, "attn_output.weight"));
      const gguf::float_matrix wo(tensor);
      model_.release(tensor.data);
      return true;
    } catch (const std::invalid_argument&) {
      return false;
    }
  }

  // Each head's contribution to the residual stream, y_h = W_o[:, head h] · x_h
  // (tokens × n_embd per head), fed to the accumulator of their Gram matrix
  // P_ij = Σ_tokens <y_i, y_j>: removing a set S of heads changes the attention
  // output by Σ_{i∈S} y_i, of energy 1_Sᵀ P 1_S. W_o is read (dequantised) once per
  // chunk; the projection runs in slices of tokens to bound memory by the slice.
  // The relative Gram divides each token's y_h(t) by the norm of the residual
  // stream h(t) entering the layer (the next RMSNorm sees the change relative to it).
  void add_head_contributions(std::int64_t layer, layer_state& s, const activation_view& x) {
    auto& acc = *s.output_redundancy;
    if (layer_in_of_ != layer || layer_in_.rows() != x.rows()) {
      throw std::runtime_error("layer " + std::to_string(layer) + ": attn_output's input seen before the layer's input");
    }
    const auto& tensor = model_.tensor(gguf::layer_tensor(layer, "attn_output.weight"));
    const gguf::float_matrix wo(tensor);
    const auto w = wo.map();  // n_embd × n_head·head_dim
    const Eigen::Index n_head = acc.n_head();
    const Eigen::Index dv = shape_.head_dim_v;
    if (w.rows() != shape_.n_embd || w.cols() != n_head * dv || x.cols() != w.cols()) {
      throw std::runtime_error("attn_output of layer " + std::to_string(layer) + " does not match the captured head outputs");
    }
    constexpr Eigen::Index slice = 64;
    for (Eigen::Index first = 0; first < x.rows(); first += slice) {
      const Eigen::Index rows = std::min(slice, x.rows() - first);
      projected_.resize(rows, n_head * w.rows());
      for (Eigen::Index h = 0; h < n_head; ++h) {
        projected_.middleCols(h * w.rows(), w.rows()).noalias() =
            x.block(first, h * dv, rows, dv) * w.middleCols(h * dv, dv).transpose();
      }
      acc.add_batch(projected_);
      for (Eigen::Index t = 0; t < rows; ++t) {
        const float norm = layer_in_.row(first + t).norm();
        projected_.row(t) /= norm > 0 ? norm : 1.0F;
      }
      s.relative_output_redundancy->add_batch(projected_);
    }
    model_.release(tensor.data);
  }

  void take(const ggml_tensor* t) {
    const auto which = wanted(t);
    if (!which) return;
    auto& s = layers_[static_cast<std::size_t>(which->layer)];
    switch (which->what) {
      case node::head_outputs: {
        if (!s.redundancy && !s.attn_moments) return;
        const auto x = view(t->src[1]);
        observe(which->layer, activation::head_outputs, x);
        if (s.redundancy) {
          s.redundancy->add_batch(x);
          add_sum2(s.attn_sum2, x);
        }
        if (s.attn_moments) s.attn_moments->add(x);
        if (s.output_redundancy) add_head_contributions(which->layer, s, x);
        s.attn_tokens += static_cast<std::uint64_t>(x.rows());
        break;
      }
      case node::ffn_inner: {
        const auto x = view(t->src[1]);
        if (x.cols() != shape_.layers[static_cast<std::size_t>(which->layer)].n_ff) {
          throw std::runtime_error("ffn_down input of layer " + std::to_string(which->layer) + " has the wrong width");
        }
        observe(which->layer, activation::ffn_inner, x);
        if (options_.summaries) add_sum2(s.ffn_sum2, x);
        if (s.ffn_moments) s.ffn_moments->add(x);
        s.ffn_tokens += static_cast<std::uint64_t>(x.rows());
        break;
      }
      case node::attn_norm: {
        const auto x = view(norm_input(t));
        observe(which->layer, activation::layer_in, x);
        s.residual_energy += x.cast<double>().squaredNorm();
        layer_in_ = x;
        layer_in_of_ = which->layer;
        break;
      }
      case node::ffn_norm: {
        const auto x = view(norm_input(t));
        observe(which->layer, activation::attn_block_out, x);
        attn_out_ = x;
        attn_out_of_ = which->layer;
        if (layer_in_of_ == which->layer) s.attn_influence += influence_total(layer_in_, x);
        else layer_in_ = x, layer_in_of_ = which->layer;  // attention-free layer: the block is the identity
        break;
      }
      case node::layer_out: {
        const auto x = view(t);
        observe(which->layer, activation::layer_out, x);
        if (attn_out_of_ != which->layer || layer_in_of_ != which->layer) {
          throw std::runtime_error("layer " + std::to_string(which->layer) + " output seen before its norms");
        }
        s.mlp_influence += influence_total(attn_out_, x);
        s.layer_influence += influence_total(layer_in_, x);
        s.influence_tokens += static_cast<std::uint64_t>(x.rows());
        break;
      }
    }
  }
};

}  // namespace

calibration_stats run_calibration(const capture_options& o) {
  check_chunking(o.context, o.max_tokens);
  // The shape (and the architecture check) come from our own reader, before llama.cpp runs.
  // The reader also serves attn_output weights to project the heads' outputs.
  const auto file = gguf::reader::open(o.model);
  const auto shape = gguf::llama_shape::read(file);
  accumulators acc(file, shape, o);
  llama_text_run run({o, &accumulators::callback, &acc});
  const auto total = static_cast<std::uint64_t>(run.chunks() * o.context);
  for (std::int64_t c = 0; c < run.chunks(); ++c) {
    const auto status = run.decode_chunk(c);
    acc.rethrow_if_failed();
    if (status != 0) throw std::runtime_error("llama_decode failed with status " + std::to_string(status));
    if (o.progress) o.progress(static_cast<std::uint64_t>((c + 1) * o.context), total);
  }
  auto stats = acc.finish(total);
  stats.context = static_cast<std::uint32_t>(o.context);
  stats.text = o.text.filename().string();
  return stats;
}

calibration_stats calibrate_to_file(const capture_options& options, const moment_plan& plan, const std::filesystem::path& output,
                                    bool force, const std::function<void(std::size_t)>& pass_started) {
  if (!options.moments || !options.moment_layers.empty() || plan.groups.empty()) {
    throw std::invalid_argument("calibrate_to_file: the options must ask for every layer's moments and the plan must have a group");
  }
  std::optional<stats_writer> out;
  calibration_stats summary;
  for (std::size_t g = 0; g < plan.groups.size(); ++g) {
    if (pass_started) pass_started(g);
    capture_options pass = options;
    pass.summaries = g == 0;
    const auto& group = plan.groups[g];
    if (group.empty() || (out && group.front() != out->layers_written())) throw std::invalid_argument("calibrate_to_file: the plan's groups are not consecutive layers");
    auto stats = [&] {
      const auto shape = gguf::llama_shape::read(gguf::reader::open(options.model));
      pass.moment_layers.assign(shape.layers.size(), false);
      for (const auto layer : group) {
        if (layer >= shape.layers.size()) throw std::invalid_argument("calibrate_to_file: the plan names layer " + std::to_string(layer) + " of a " + std::to_string(shape.layers.size()) + "-layer model");
        pass.moment_layers[layer] = true;
      }
      return run_calibration(pass);
    }();
    if (g == 0) {
      summary = std::move(stats);  // holds the first group's moments until they are written
      out.emplace(output, summary, force, true);
    } else if (stats.tokens != summary.tokens) {
      throw std::runtime_error("run " + std::to_string(g + 1) + " of the text saw " + std::to_string(stats.tokens) + " tokens, the first " +
                               std::to_string(summary.tokens));
    }
    for (const auto layer : group) {
      if (layer != out->layers_written()) throw std::invalid_argument("calibrate_to_file: the plan's groups are not consecutive layers");
      auto& written = g == 0 ? summary.layers[layer] : stats.layers[layer];
      out->write_layer(written);
      for (auto* v : {&written.attn_in_mean, &written.ffn_in_mean}) *v = Eigen::VectorXd();
      for (auto* m : {&written.attn_in_covariance, &written.ffn_in_covariance}) *m = Eigen::MatrixXd();
    }
  }
  if (out->layers_written() != summary.layers.size()) throw std::invalid_argument("calibrate_to_file: the plan leaves out layers");
  out->commit();
  return summary;
}

}  // namespace calibrate

