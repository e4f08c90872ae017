// Reading and writing calibration statistics (format in calibration_stats.hpp).
#include "calibrate/calibration_stats.hpp"
#include "calibrate/stats_writer.hpp"

#include <cstring>
#include <stdexcept>

namespace calibrate {
namespace {

std::string blk(std::int64_t layer, std::string_view what) { return "calib.blk." + std::to_string(layer) + "." + std::string(what); }
constexpr std::string_view influence_tensor = "calib.block_influence";
constexpr std::string_view residual_tensor = "calib.residual_energy";

std::vector<std::int64_t> per_layer(const fingerprint& f, std::int64_t gguf::layer_shape::*field) {
  std::vector<std::int64_t> v;
  for (const auto& l : f.layers) v.push_back(l.*field);
  return v;
}

class stats_file {
 public:
  explicit stats_file(const std::filesystem::path& path) : file_(gguf::reader::open(path)) {}

  const gguf::value& key(std::string_view k) const {
    const gguf::value* v = file_.find(k);
    if (v == nullptr) fail("missing key " + std::string(k));
    return *v;
  }
  std::int64_t integer(std::string_view k) const {
    const auto& v = key(k);
    if (!gguf::is_integer(v.type)) fail("key " + std::string(k) + " is not an integer");
    return v.as_int();
  }
  std::vector<std::int64_t> integers(std::string_view k, std::size_t n) const {
    const auto& v = key(k);
    if (!v.is_array() || v.as_array().size() != n) fail("key " + std::string(k) + " is not an array of " + std::to_string(n) + " integers");
    std::vector<std::int64_t> out;
    for (const auto& e : v.as_array()) {
      if (!gguf::is_integer(e.type)) fail("key " + std::string(k) + " holds a non-integer");
      out.push_back(e.as_int());
    }
    return out;
  }
  std::string text(std::string_view k) const {
    const auto& v = key(k);
    if (v.type != gguf::value_type::string) fail("key " + std::string(k) + " is not a string");
    return v.as_string();
  }
  /// The tensor's values (column-major for a 2-D tensor with dims {rows, cols}).
  std::vector<double> floats(const std::string& name, std::vector<std::int64_t> dims) const {
    const auto* t = file_.find_tensor(name);
    if (t == nullptr) fail("missing tensor " + name);
    if (t->type != nashprune::ggml_type::f32 || t->dims != dims) fail("tensor " + name + " has the wrong type or shape");
    std::vector<float> f(static_cast<std::size_t>(t->elements()));
    std::memcpy(f.data(), t->data.data(), f.size() * sizeof(float));
    return {f.begin(), f.end()};
  }
  [[noreturn]] void fail(const std::string& what) const { throw gguf::format_error(file_.name() + ": " + what); }
  const gguf::reader& reader() const { return file_; }

 private:
  gguf::reader file_;
};

// Checks one input's moments against the tensors the file declares for them.
void check_moments(std::size_t layer, const std::string& input, const Eigen::VectorXd& mean, const Eigen::MatrixXd& covariance,
                   std::int64_t width, bool declared) {
  const bool given = mean.size() != 0 || covariance.size() != 0;
  if (!declared && !given) return;
  if (!declared) throw std::invalid_argument("calibration stats: layer " + std::to_string(layer) + " has " + input + " moments the file does not hold");
  if (mean.size() != width || covariance.rows() != width || covariance.cols() != width) {
    throw std::invalid_argument("calibration stats: layer " + std::to_string(layer) + " has " + input + " moments of the wrong size (" +
                                std::to_string(mean.size()) + " mean values, " + std::to_string(covariance.rows()) + "×" +
                                std::to_string(covariance.cols()) + " covariance; " + std::to_string(width) + " expected)");
  }
}

// Every statistic of a layer but the moments, checked against the layer's shape.
layer_stats summary_of(const layer_stats& l, const gguf::layer_shape& shape, std::int64_t head_dim, std::size_t i) {
  if (shape.n_head > 0) {
    const auto square_or_empty = [&](const Eigen::MatrixXd& m) { return m.size() == 0 || (m.rows() == shape.n_head && m.cols() == shape.n_head); };
    if (l.head_gram.rows() != shape.n_head || l.head_cosine.rows() != shape.n_head || !square_or_empty(l.head_output_gram) ||
        l.head_relative_gram.size() != l.head_output_gram.size() || !square_or_empty(l.head_relative_gram) ||
        l.attn_in_sum2.size() != shape.n_head * head_dim) {
      throw std::invalid_argument("calibration stats: layer " + std::to_string(i) + " has attention statistics of the wrong size");
    }
  }
  if (shape.n_ff > 0 && l.ffn_in_sum2.size() != shape.n_ff) {
    throw std::invalid_argument("calibration stats: layer " + std::to_string(i) + " has FFN statistics of the wrong size");
  }
  layer_stats r;
  r.head_gram = l.head_gram;
  r.head_cosine = l.head_cosine;
  r.head_output_gram = l.head_output_gram;
  r.head_relative_gram = l.head_relative_gram;
  r.attn_in_sum2 = l.attn_in_sum2;
  r.ffn_in_sum2 = l.ffn_in_sum2;
  r.attn_influence = l.attn_influence;
  r.mlp_influence = l.mlp_influence;
  r.layer_influence = l.layer_influence;
  r.residual_energy = l.residual_energy;
  return r;
}

void read_moments(const stats_file& file, std::int64_t layer, const std::string& input, std::int64_t width, Eigen::VectorXd& mean,
                  Eigen::MatrixXd& covariance) {
  if (file.reader().find_tensor(blk(layer, input + "_mean")) == nullptr) return;
  const auto m = file.floats(blk(layer, input + "_mean"), {width});
  const auto c = file.floats(blk(layer, input + "_covariance"), {width, width});
  mean = Eigen::Map<const Eigen::VectorXd>(m.data(), width);
  covariance = Eigen::Map<const Eigen::MatrixXd>(c.data(), width, width);
}

}  // namespace

fingerprint fingerprint::of(const gguf::llama_shape& shape) {
  return {shape.architecture, shape.n_embd, shape.head_dim_v, shape.layers};
}

void write_stats(const std::filesystem::path& path, const calibration_stats& stats, bool force) {
  stats_writer out(path, stats, force);
  for (const auto& l : stats.layers) out.write_layer(l);
  out.commit();
}

stats_writer::stats_writer(const std::filesystem::path& path, const calibration_stats& summary, bool force, bool moments_follow)
    : model_(summary.model), out_(path, {.force = force, .protect = {}}) {
  const auto& f = model_;
  if (summary.layers.size() != f.layers.size()) throw std::invalid_argument("calibration stats: one entry per layer expected");
  gguf::metadata kv;
  kv.emplace_back("general.type", gguf::value::string(std::string(stats_type)));
  kv.emplace_back("calibration.version", gguf::value::u32(stats_version));
  kv.emplace_back("calibration.architecture", gguf::value::string(f.architecture));
  kv.emplace_back("calibration.block_count", gguf::value::u32(static_cast<std::uint32_t>(f.layers.size())));
  kv.emplace_back("calibration.embedding_length", gguf::value::u32(static_cast<std::uint32_t>(f.n_embd)));
  kv.emplace_back("calibration.head_dim", gguf::value::u32(static_cast<std::uint32_t>(f.head_dim)));
  kv.emplace_back("calibration.head_count", gguf::value::int_array(gguf::value_type::int32, per_layer(f, &gguf::layer_shape::n_head)));
  kv.emplace_back("calibration.head_count_kv", gguf::value::int_array(gguf::value_type::int32, per_layer(f, &gguf::layer_shape::n_head_kv)));
  kv.emplace_back("calibration.feed_forward_length", gguf::value::int_array(gguf::value_type::int32, per_layer(f, &gguf::layer_shape::n_ff)));
  kv.emplace_back("calibration.tokens", gguf::value::u64(summary.tokens));
  kv.emplace_back("calibration.context", gguf::value::u32(summary.context));
  kv.emplace_back("calibration.text", gguf::value::string(summary.text));

  // The tensors in the order write_layer and commit write them.
  std::vector<gguf::tensor_spec> specs;
  const auto declare = [&](std::string name, std::vector<std::int64_t> dims) {
    specs.push_back({std::move(name), std::move(dims), nashprune::ggml_type::f32});
  };
  for (std::size_t i = 0; i < summary.layers.size(); ++i) {
    const auto& l = summary.layers[i];
    const auto& shape = f.layers[i];
    const auto layer = static_cast<std::int64_t>(i);
    summaries_.push_back(summary_of(l, shape, f.head_dim, i));
    const auto has = [&](const Eigen::VectorXd& mean, const Eigen::MatrixXd& covariance) {
      return moments_follow || mean.size() != 0 || covariance.size() != 0;
    };
    attn_moments_.push_back(shape.n_head > 0 && has(l.attn_in_mean, l.attn_in_covariance));
    ffn_moments_.push_back(shape.n_ff > 0 && has(l.ffn_in_mean, l.ffn_in_covariance));
    if (!moments_follow) {
      check_moments(i, "attn_in", l.attn_in_mean, l.attn_in_covariance, shape.n_head * f.head_dim, attn_moments_.back());
      check_moments(i, "ffn_in", l.ffn_in_mean, l.ffn_in_covariance, shape.n_ff, ffn_moments_.back());
    }
    if (shape.n_head > 0) {
      const std::int64_t width = shape.n_head * f.head_dim;
      declare(blk(layer, "head_gram"), {shape.n_head, shape.n_head});
      declare(blk(layer, "head_cosine"), {shape.n_head, shape.n_head});
      if (l.head_output_gram.size() > 0) {  // absent when attn_output's type does not convert to float
        declare(blk(layer, "head_output_gram"), {shape.n_head, shape.n_head});
        declare(blk(layer, "head_relative_gram"), {shape.n_head, shape.n_head});
      }
      declare(blk(layer, "attn_in_sum2"), {width});
      if (attn_moments_.back()) {
        declare(blk(layer, "attn_in_mean"), {width});
        declare(blk(layer, "attn_in_covariance"), {width, width});
      }
    }
    if (shape.n_ff > 0) {
      declare(blk(layer, "ffn_in_sum2"), {shape.n_ff});
      if (ffn_moments_.back()) {
        declare(blk(layer, "ffn_in_mean"), {shape.n_ff});
        declare(blk(layer, "ffn_in_covariance"), {shape.n_ff, shape.n_ff});
      }
    }
  }
  const auto n_layer = static_cast<std::int64_t>(summary.layers.size());
  declare(std::string(influence_tensor), {3, n_layer});
  declare(std::string(residual_tensor), {n_layer});
  out_.begin(kv, std::move(specs));
}

void stats_writer::write_floats(const Eigen::Ref<const Eigen::MatrixXd>& values) {
  // Column by column, so that a large covariance is never copied whole.
  std::vector<float> column(static_cast<std::size_t>(values.rows()));
  for (Eigen::Index j = 0; j < values.cols(); ++j) {
    for (Eigen::Index i = 0; i < values.rows(); ++i) column[static_cast<std::size_t>(i)] = static_cast<float>(values(i, j));
    out_.write(std::as_bytes(std::span(column)));
  }
}

void stats_writer::write_layer(const layer_stats& moments) {
  const std::size_t i = next_layer_;
  if (i >= summaries_.size()) throw std::logic_error("stats_writer: every layer is written already");
  const auto& l = summaries_[i];
  const auto& shape = model_.layers[i];
  check_moments(i, "attn_in", moments.attn_in_mean, moments.attn_in_covariance, shape.n_head * model_.head_dim, attn_moments_[i]);
  check_moments(i, "ffn_in", moments.ffn_in_mean, moments.ffn_in_covariance, shape.n_ff, ffn_moments_[i]);
  if (shape.n_head > 0) {
    write_floats(l.head_gram);
    write_floats(l.head_cosine);
    if (l.head_output_gram.size() > 0) {
      write_floats(l.head_output_gram);
      write_floats(l.head_relative_gram);
    }
    write_floats(l.attn_in_sum2);
    if (attn_moments_[i]) {
      write_floats(moments.attn_in_mean);
      write_floats(moments.attn_in_covariance);
    }
  }
  if (shape.n_ff > 0) {
    write_floats(l.ffn_in_sum2);
    if (ffn_moments_[i]) {
      write_floats(moments.ffn_in_mean);
      write_floats(moments.ffn_in_covariance);
    }
  }
  ++next_layer_;
}

void stats_writer::commit() {
  if (next_layer_ != summaries_.size()) throw std::logic_error("stats_writer: " + std::to_string(summaries_.size() - next_layer_) + " layers not written");
  std::vector<float> influence;
  std::vector<float> residual;
  for (const auto& l : summaries_) {
    influence.insert(influence.end(), {static_cast<float>(l.attn_influence), static_cast<float>(l.mlp_influence), static_cast<float>(l.layer_influence)});
    residual.push_back(static_cast<float>(l.residual_energy));
  }
  out_.write(std::as_bytes(std::span(influence)));
  out_.write(std::as_bytes(std::span(residual)));
  out_.commit();
}

calibration_stats as_stored(calibration_stats stats) {
  const auto round_matrix = [](Eigen::MatrixXd& m) { m = m.cast<float>().cast<double>(); };
  const auto round_vector = [](Eigen::VectorXd& v) { v = v.cast<float>().cast<double>(); };
  const auto round_scalar = [](double& x) { x = static_cast<float>(x); };
  for (auto& l : stats.layers) {
    for (auto* m : {&l.head_gram, &l.head_cosine, &l.head_output_gram, &l.head_relative_gram, &l.attn_in_covariance, &l.ffn_in_covariance}) round_matrix(*m);
    for (auto* v : {&l.attn_in_sum2, &l.ffn_in_sum2, &l.attn_in_mean, &l.ffn_in_mean}) round_vector(*v);
    for (auto* x : {&l.attn_influence, &l.mlp_influence, &l.layer_influence, &l.residual_energy}) round_scalar(*x);
  }
  stats.version = stats_version;
  return stats;
}

calibration_stats read_stats(const std::filesystem::path& path) {
  const stats_file file(path);
  if (file.text("general.type") != stats_type) file.fail("not a calibration stats file (general.type is not \"nashprune.calibration\"); write one with nashprune calibrate");
  const auto version = file.integer("calibration.version");
  if (version < 1 || version > stats_version) {
    file.fail("unsupported calibration.version " + std::to_string(version) + " (this nashprune reads 1 to " + std::to_string(stats_version) + ")");
  }
  calibration_stats s;
  s.version = static_cast<std::uint32_t>(version);
  auto& f = s.model;
  f.architecture = file.text("calibration.architecture");
  const std::int64_t n_layer = file.integer("calibration.block_count");
  if (n_layer < 1 || n_layer > 100000) file.fail("calibration.block_count out of range");
  f.n_embd = file.integer("calibration.embedding_length");
  f.head_dim = file.integer("calibration.head_dim");
  const auto n = static_cast<std::size_t>(n_layer);
  const auto heads = file.integers("calibration.head_count", n);
  const auto kv_heads = file.integers("calibration.head_count_kv", n);
  const auto ffn = file.integers("calibration.feed_forward_length", n);
  s.tokens = static_cast<std::uint64_t>(file.integer("calibration.tokens"));
  s.context = static_cast<std::uint32_t>(file.integer("calibration.context"));
  s.text = file.text("calibration.text");
  const auto influence = file.floats(std::string(influence_tensor), {3, n_layer});
  const auto residual = version >= 2 ? file.floats(std::string(residual_tensor), {n_layer}) : std::vector<double>(n, 0.0);
  for (std::size_t i = 0; i < n; ++i) {
    f.layers.push_back({heads[i], kv_heads[i], ffn[i]});
    layer_stats l;
    const auto layer = static_cast<std::int64_t>(i);
    if (heads[i] > 0) {
      const auto gram = file.floats(blk(layer, "head_gram"), {heads[i], heads[i]});
      const auto cosine = file.floats(blk(layer, "head_cosine"), {heads[i], heads[i]});
      const auto sum2 = file.floats(blk(layer, "attn_in_sum2"), {heads[i] * f.head_dim});
      l.head_gram = Eigen::Map<const Eigen::MatrixXd>(gram.data(), heads[i], heads[i]);
      l.head_cosine = Eigen::Map<const Eigen::MatrixXd>(cosine.data(), heads[i], heads[i]);
      if (version >= 2 && file.reader().find_tensor(blk(layer, "head_output_gram")) != nullptr) {
        const auto output_gram = file.floats(blk(layer, "head_output_gram"), {heads[i], heads[i]});
        l.head_output_gram = Eigen::Map<const Eigen::MatrixXd>(output_gram.data(), heads[i], heads[i]);
        const auto relative_gram = file.floats(blk(layer, "head_relative_gram"), {heads[i], heads[i]});
        l.head_relative_gram = Eigen::Map<const Eigen::MatrixXd>(relative_gram.data(), heads[i], heads[i]);
      }
      l.attn_in_sum2 = Eigen::Map<const Eigen::VectorXd>(sum2.data(), static_cast<Eigen::Index>(sum2.size()));
      read_moments(file, layer, "attn_in", heads[i] * f.head_dim, l.attn_in_mean, l.attn_in_covariance);
    }
    if (ffn[i] > 0) {
      const auto sum2 = file.floats(blk(layer, "ffn_in_sum2"), {ffn[i]});
      l.ffn_in_sum2 = Eigen::Map<const Eigen::VectorXd>(sum2.data(), static_cast<Eigen::Index>(sum2.size()));
      read_moments(file, layer, "ffn_in", ffn[i], l.ffn_in_mean, l.ffn_in_covariance);
    }
    l.attn_influence = influence[3 * i];
    l.mlp_influence = influence[3 * i + 1];
    l.layer_influence = influence[3 * i + 2];
    l.residual_energy = residual[i];
    s.layers.push_back(std::move(l));
  }
  return s;
}

void check_matches(const calibration_stats& stats, const gguf::llama_shape& shape, const std::string& stats_name) {
  const auto model = fingerprint::of(shape);
  const auto& f = stats.model;
  auto fail = [&](const std::string& what) {
    throw std::invalid_argument(stats_name + " was measured on another model: " + what + " (run nashprune calibrate on this model)");
  };
  if (f.layers.size() != model.layers.size()) {
    fail("the model has " + std::to_string(model.layers.size()) + " layers, the stats " + std::to_string(f.layers.size()));
  }
  if (f.n_embd != model.n_embd) fail("embedding length " + std::to_string(model.n_embd) + " in the model, " + std::to_string(f.n_embd) + " in the stats");
  if (f.head_dim != model.head_dim) fail("head size " + std::to_string(model.head_dim) + " in the model, " + std::to_string(f.head_dim) + " in the stats");
  for (std::size_t i = 0; i < f.layers.size(); ++i) {
    const auto& a = model.layers[i];
    const auto& b = f.layers[i];
    const auto where = "layer " + std::to_string(i) + " has ";
    if (a.n_head != b.n_head) fail(where + std::to_string(a.n_head) + " heads in the model, " + std::to_string(b.n_head) + " in the stats");
    if (a.n_head_kv != b.n_head_kv) fail(where + std::to_string(a.n_head_kv) + " KV heads in the model, " + std::to_string(b.n_head_kv) + " in the stats");
    if (a.n_ff != b.n_ff) fail(where + "FFN width " + std::to_string(a.n_ff) + " in the model, " + std::to_string(b.n_ff) + " in the stats");
  }
}

}  // namespace calibrate
