// Planning per-tensor quantization types (quantize_plan.hpp).
#include "quantize/quantize_plan.hpp"

#include <nashprune/quantization_error.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <fstream>
#include <limits>
#include <map>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <unistd.h>

#include "calibrate/calibration_stats.hpp"
#include "gguf/gguf.hpp"
#include "gguf/imatrix.hpp"
#include "gguf/llama_model.hpp"
#include "quantize/ggml_quantize.hpp"
#include "quantize/loss_sensitivity.hpp"

namespace quantize {

namespace {

namespace fs = std::filesystem;
using nashprune::ggml_type;
using nashprune::traits_of;

constexpr double unavailable = std::numeric_limits<double>::infinity();
// GGML_QNT_VERSION, which llama-quantize stores as general.quantization_version.
constexpr std::uint32_t ggml_quantization_version = 2;
// llama-quantize copies at most this many characters of the imatrix file and dataset names.
constexpr std::size_t llama_quantize_string_limit = 127;

std::string type_name(ggml_type type) { return std::string(traits_of(type).name); }

/// llama-quantize's tensor_allows_quantization, for the tensors a llama model has.
bool llama_quantize_quantizes(const gguf::tensor_spec& t) {
  std::size_t dims = t.dims.size();
  while (dims > 0 && t.dims[dims - 1] == 1) --dims;
  if (dims < 2) return false;
  const std::string& n = t.name;
  if (!n.ends_with("weight")) return false;
  for (const char* never : {"_norm.weight", "ffn_gate_inp.weight", "altup", "laurel", "per_layer_model_proj", "ssm_conv1d",
                            "attn_rel_b.weight", "position_embd", "token_types"}) {
    if (n.find(never) != std::string::npos) return false;
  }
  return true;
}

bool is_lookup(const std::string& name) { return name == "token_embd.weight" || name == "per_layer_token_embd.weight"; }

/// Column weights c_j of one tensor, and what they came from.
struct column_weights {
  std::vector<double> c;
  std::vector<float> imatrix;  // passed to ggml (llama-quantize passes it); empty: none
  double row_weight = 1;
  std::string source;
};

std::vector<double> norm_energy(const gguf::reader& model, const std::string& norm_name, std::int64_t columns) {
  const gguf::tensor_view* norm = model.find_tensor(norm_name);
  if (norm == nullptr || norm->elements() != columns) return {};
  std::vector<float> g(static_cast<std::size_t>(columns));
  ggml_to_float(norm->type, norm->data, 1, columns, g);
  const Eigen::VectorXd e = nashprune::normalized_input_energy(Eigen::Map<const Eigen::VectorXf>(g.data(), columns));
  return {e.data(), e.data() + e.size()};
}

/// The norm in front of a projection of a llama block, or "" when none is.
std::string preceding_norm(const std::string& name) {
  if (name == "output.weight") return "output_norm.weight";
  const auto layer = gguf::split_layer_name(name);
  if (!layer) return "";
  for (const char* attention : {"attn_q.weight", "attn_k.weight", "attn_v.weight"}) {
    if (layer->suffix == attention) return gguf::layer_tensor(layer->layer, "attn_norm.weight");
  }
  for (const char* ffn : {"ffn_gate.weight", "ffn_up.weight"}) {
    if (layer->suffix == ffn) return gguf::layer_tensor(layer->layer, "ffn_norm.weight");
  }
  return "";
}

std::string join_names(const std::vector<std::string>& names, std::size_t shown = 4) {
  std::string s;
  for (std::size_t i = 0; i < names.size() && i < shown; ++i) s += (i ? ", " : "") + names[i];
  if (names.size() > shown) s += ", ... (" + std::to_string(names.size()) + " in all)";
  return s;
}

/// Σ over sampled rows of r Σ_j c_j (W − Q)², scaled to all rows.
double measure(const gguf::tensor_view& t, ggml_type type, const column_weights& w, const std::vector<std::int64_t>& sample) {
  const std::int64_t n = t.dims[0];
  constexpr std::int64_t chunk_rows = 64;
  const std::size_t source_row_bytes = t.row_bytes();
  std::vector<float> in(static_cast<std::size_t>(chunk_rows * n)), out(in.size());
  std::vector<std::byte> scratch(static_cast<std::size_t>(nashprune::row_bytes(type, n) * chunk_rows));
  const Eigen::Map<const Eigen::VectorXd> c(w.c.data(), n);
  double total = 0;
  for (std::size_t first = 0; first < sample.size(); first += chunk_rows) {
    const auto rows = static_cast<std::int64_t>(std::min<std::size_t>(chunk_rows, sample.size() - first));
    for (std::int64_t r = 0; r < rows; ++r) {
      const auto row = static_cast<std::size_t>(sample[first + static_cast<std::size_t>(r)]);
      ggml_to_float(t.type, t.data.subspan(row * source_row_bytes, source_row_bytes), 1, n,
                    std::span<float>(in).subspan(static_cast<std::size_t>(r * n), static_cast<std::size_t>(n)));
    }
    const auto count = static_cast<std::size_t>(rows * n);
    ggml_round_trip(type, std::span<const float>(in).first(count), rows, n, w.imatrix.empty() ? nullptr : w.imatrix.data(), scratch,
                    std::span<float>(out).first(count));
    using row_major = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    const Eigen::Map<const row_major> original(in.data(), rows, n), reconstructed(out.data(), rows, n);
    total += nashprune::weighted_squared_error(original, reconstructed, Eigen::VectorXd::Ones(rows), c);
  }
  return total * w.row_weight * static_cast<double>(t.rows()) / static_cast<double>(sample.size());
}

/// llama-quantize's positional type: a plain ftype named after the commonest
/// planned type (every planned tensor is named in the type file, so it only has
/// to be a quantized ftype, which makes llama-quantize apply the overrides).
std::string base_type_for(const std::vector<planned_tensor>& tensors) {
  static const std::map<ggml_type, std::string> ftypes{
      {ggml_type::q4_0, "Q4_0"}, {ggml_type::q4_1, "Q4_1"}, {ggml_type::q5_0, "Q5_0"}, {ggml_type::q5_1, "Q5_1"},
      {ggml_type::q8_0, "Q8_0"}, {ggml_type::q6_k, "Q6_K"}, {ggml_type::iq4_nl, "IQ4_NL"}};
  std::map<ggml_type, std::int64_t> weights;
  for (const auto& t : tensors) weights[t.chosen] += t.row_length * t.rows;
  std::string best = "Q8_0";
  std::int64_t most = -1;
  for (const auto& [type, count] : weights) {
    if (const auto it = ftypes.find(type); it != ftypes.end() && count > most) {
      most = count;
      best = it->second;
    }
  }
  return best;
}

/// Every row of a tensor as floats.
std::vector<float> tensor_floats(const gguf::tensor_view& t) {
  std::vector<float> values(static_cast<std::size_t>(t.elements()));
  ggml_to_float(t.type, t.data, t.rows(), t.dims[0], values);
  return values;
}

/// A copy of `model` beside nothing the user owns (the system's temporary folder)
/// with the tensors named in `as_float` stored as F32; removed when destroyed.
class float_copy {
 public:
  float_copy(const gguf::reader& model, const std::vector<std::string>& as_float) {
    static std::atomic<int> copies{0};
    path_ = fs::temp_directory_path() / ("nashprune-quantize-plan-" + std::to_string(::getpid()) + "-" + std::to_string(copies++) + ".gguf");
    std::vector<gguf::tensor_spec> specs;
    std::vector<bool> convert;
    for (const auto& t : model.tensors()) {
      gguf::tensor_spec spec = t;
      convert.push_back(t.type != ggml_type::f32 && std::find(as_float.begin(), as_float.end(), t.name) != as_float.end());
      if (convert.back()) spec.type = ggml_type::f32;
      specs.push_back(std::move(spec));
    }
    gguf::writer out(path_, {});
    out.begin(model.metadata(), std::move(specs));
    for (std::size_t i = 0; i < model.tensors().size(); ++i) {
      const auto& t = model.tensors()[i];
      if (convert[i]) {
        const auto values = tensor_floats(t);
        out.write(std::as_bytes(std::span(values)));
      } else {
        out.write(t.data);
      }
    }
    out.commit();
  }
  ~float_copy() {
    std::error_code ignored;
    fs::remove(path_, ignored);
  }
  float_copy(const float_copy&) = delete;
  float_copy& operator=(const float_copy&) = delete;
  [[nodiscard]] const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

/// Writes `lines` to `path` through a temporary file renamed onto it.
void write_lines_atomically(const fs::path& path, const std::vector<std::string>& lines) {
  const fs::path partial = path.string() + ".partial";
  {
    std::ofstream out(partial);
    for (const auto& line : lines) out << line << '\n';
    out.flush();
    if (!out) {
      std::error_code ignored;
      fs::remove(partial, ignored);
      throw std::runtime_error("cannot write " + partial.string());
    }
  }
  fs::rename(partial, path);
}

std::vector<std::string> split_tabs(const std::string& line) {
  std::vector<std::string> fields;
  std::stringstream in(line);
  for (std::string field; std::getline(in, field, '\t');) fields.push_back(field);
  return fields;
}

/// Reads the table of write_costs into the plan's errors (see the header).
void read_costs(const fs::path& path, const std::vector<ggml_type>& types, quantization_plan& plan) {
  std::ifstream in(path);
  if (!in) throw std::invalid_argument("--costs: cannot read " + path.string());
  const std::string where = "--costs " + path.string() + ": ";
  std::string line;
  std::getline(in, line);
  const auto header = split_tabs(line);
  std::string expected = "tensor";
  for (const auto type : types) expected += "\t" + type_name(type);
  if (line != expected) throw std::invalid_argument(where + "line 1 is '" + line + "', expected '" + expected + "' (the --types given)");
  for (std::size_t t = 0; t < plan.tensors.size(); ++t) {
    auto& p = plan.tensors[t];
    const std::string at = where + "line " + std::to_string(t + 2) + ": ";
    if (!std::getline(in, line)) throw std::invalid_argument(at + "missing; expected the costs of " + p.name);
    const auto fields = split_tabs(line);
    if (fields.empty() || fields[0] != p.name) {
      throw std::invalid_argument(at + "expected the costs of " + p.name + " (costs of another model?)");
    }
    if (fields.size() != types.size() + 1) throw std::invalid_argument(at + std::to_string(fields.size() - 1) + " costs, expected " + std::to_string(types.size()));
    for (std::size_t k = 0; k < types.size(); ++k) {
      double cost = 0;
      try {
        std::size_t used = 0;
        cost = std::stod(fields[k + 1], &used);
        if (used != fields[k + 1].size()) throw std::invalid_argument("trailing characters");
      } catch (const std::exception&) {
        throw std::invalid_argument(at + type_name(types[k]) + ": '" + fields[k + 1] + "' is not a number");
      }
      if (std::isfinite(p.errors[k]) != std::isfinite(cost) || cost < 0) {
        throw std::invalid_argument(at + type_name(types[k]) + ": " + fields[k + 1] + (std::isfinite(p.errors[k]) ? ", expected a finite cost >= 0" : ", expected inf (the type does not fit " + p.name + ")"));
      }
      p.errors[k] = cost;
    }
    p.weighting = "costs file";
  }
  if (std::getline(in, line) && !line.empty()) throw std::invalid_argument(where + "line " + std::to_string(plan.tensors.size() + 2) + ": more lines than tensors");
}

/// The measured sensitivity (see the header comment): each tensor's cost per type
/// is the loss increase with it alone quantized to that type.
void measure_loss_increase(const gguf::reader& model, const plan_options& o, const std::vector<const gguf::tensor_view*>& views,
                           const std::vector<column_weights>& weights, quantization_plan& plan) {
  std::vector<std::string> names;
  for (const auto& p : plan.tensors) {
    if (!p.fixed) names.push_back(p.name);
  }
  const float_copy copy(model, names);
  calibrate::text_source source = *o.loss;
  source.model = copy.path();
  weight_swap_loss evaluation(source, o.score_from, names);
  plan.baseline_nll = evaluation.mean_nll();
  plan.predicted_tokens = evaluation.predicted_tokens();
  plan.loss_passes = 1;
  for (std::size_t t = 0; t < plan.tensors.size(); ++t) {
    auto& p = plan.tensors[t];
    if (p.fixed) continue;
    const auto original = tensor_floats(*views[t]);
    std::vector<float> quantized(original.size());
    std::optional<std::size_t> reference;  // scale_energy: the candidate of fewest bits
    for (std::size_t k = 0; k < o.types.size(); ++k) {
      if (std::isfinite(p.errors[k]) && o.types[k] != p.source &&
          (!reference || traits_of(o.types[k]).bits_per_weight() < traits_of(o.types[*reference]).bits_per_weight())) {
        reference = k;
      }
    }
    const std::vector<double> energy = p.errors;
    for (std::size_t k = 0; k < o.types.size(); ++k) {
      if (!std::isfinite(p.errors[k]) || o.types[k] == p.source || (o.scale_energy && k != reference)) continue;
      std::vector<std::byte> scratch(static_cast<std::size_t>(nashprune::row_bytes(o.types[k], p.row_length) * p.rows));
      ggml_round_trip(o.types[k], original, p.rows, p.row_length, weights[t].imatrix.empty() ? nullptr : weights[t].imatrix.data(), scratch,
                      quantized);
      const double rounded = evaluation.mean_nll_with(p.name, quantized);
      for (std::size_t i = 0; i < quantized.size(); ++i) quantized[i] = 2 * original[i] - quantized[i];  // W − δ
      const double mirrored = evaluation.mean_nll_with(p.name, quantized);
      p.errors[k] = std::max(0.0, 0.5 * (rounded + mirrored) - plan.baseline_nll);
      plan.loss_passes += 2;
    }
    if (o.scale_energy && reference) {
      const double ratio = energy[*reference] > 0 ? p.errors[*reference] / energy[*reference] : 0.0;
      for (std::size_t k = 0; k < o.types.size(); ++k) {
        if (std::isfinite(energy[k])) p.errors[k] = ratio * energy[k];
      }
    }
    if (!o.scale_energy) p.rows_measured = p.rows;
    p.weighting = o.scale_energy ? "loss x " + p.weighting : "loss";
  }
}

std::uint64_t padded(std::uint64_t bytes, std::uint64_t alignment) { return (bytes + alignment - 1) / alignment * alignment; }

/// The size of the file llama-quantize writes with these types (see the header comment).
std::int64_t output_file_bytes(const gguf::reader& model, const std::map<std::string, ggml_type>& types, const plan_options& o,
                               const gguf::imatrix* imatrix) {
  gguf::metadata kv = model.metadata();
  gguf::set(kv, "general.quantization_version", gguf::value::u32(ggml_quantization_version));
  gguf::set(kv, "general.file_type", gguf::value::u32(0));
  for (const char* split : {"split.no", "split.count", "split.tensors.count"}) gguf::erase(kv, split);
  if (imatrix != nullptr) {
    gguf::set(kv, "quantize.imatrix.file", gguf::value::string(o.imatrix.string().substr(0, llama_quantize_string_limit)));
    if (const auto sets = imatrix->datasets(); !sets.empty()) {
      gguf::set(kv, "quantize.imatrix.dataset", gguf::value::string(sets.front().substr(0, llama_quantize_string_limit)));
    }
    gguf::set(kv, "quantize.imatrix.entries_count", gguf::value::u32(0));
    gguf::set(kv, "quantize.imatrix.chunks_count", gguf::value::u32(0));
  }
  std::vector<gguf::tensor_spec> specs;
  std::uint64_t data = 0;
  for (const auto& t : model.tensors()) {
    gguf::tensor_spec s = t;
    if (const auto it = types.find(t.name); it != types.end()) s.type = it->second;
    data += padded(s.bytes(), model.alignment());
    specs.push_back(std::move(s));
  }
  return static_cast<std::int64_t>(gguf::encode_header(kv, specs, model.alignment()).size() + data);
}

}  // namespace

std::vector<ggml_type> parse_types(const std::string& list) {
  std::vector<ggml_type> types;
  std::stringstream entries(list);
  for (std::string entry; std::getline(entries, entry, ',');) {
    const auto traits = nashprune::find_ggml_type(entry);
    if (!traits) throw std::invalid_argument("--types: unknown type '" + entry + "'");
    if (!ggml_can_quantize(traits->type)) throw std::invalid_argument("--types: ggml does not quantize weights to '" + entry + "'");
    if (std::find(types.begin(), types.end(), traits->type) != types.end()) {
      throw std::invalid_argument("--types: '" + entry + "' is given twice");
    }
    types.push_back(traits->type);
  }
  if (types.empty()) throw std::invalid_argument("--types: no type given");
  return types;
}

quantization_plan make_plan(const plan_options& o) {
  if (o.bits_per_weight.has_value() == o.file_bytes.has_value()) throw std::invalid_argument("give exactly one of --bpw and --size");
  if (o.bits_per_weight && !(std::isfinite(*o.bits_per_weight) && *o.bits_per_weight > 0)) {
    throw std::invalid_argument("--bpw must be a finite number > 0");
  }
  if (o.file_bytes && *o.file_bytes <= 0) throw std::invalid_argument("--size must be a number of bytes > 0");
  if (!o.calibration.empty() && !o.imatrix.empty()) throw std::invalid_argument("give at most one of --calibration and --imatrix");
  if (o.sample_weights < 0) throw std::invalid_argument("--sample-weights must be >= 0");
  if (o.loss && !o.costs.empty()) throw std::invalid_argument("give at most one of --costs and --sensitivity measured");
  if (o.loss && !o.scale_energy && !o.calibration.empty()) {
    throw std::invalid_argument("--calibration weights the energy sensitivity; --sensitivity measured takes the loss on --text instead "
                                "(--sensitivity scaled takes both)");
  }
  quantization_plan plan;
  plan.types = o.types;
  const auto model = gguf::reader::open(o.model);

  std::unique_ptr<gguf::imatrix> imatrix;
  std::unique_ptr<calibrate::calibration_stats> stats;
  if (!o.imatrix.empty()) {
    imatrix = std::make_unique<gguf::imatrix>(o.imatrix);
    for (const auto& entry : imatrix->entries()) {
      const gguf::tensor_view* t = model.find_tensor(entry);
      if (t == nullptr) {
        throw std::invalid_argument("--imatrix " + o.imatrix.string() + ": entry '" + entry + "' names no tensor of " + o.model.string() +
                                    " (an importance matrix of another model?)");
      }
      const auto energy = imatrix->column_energy(entry);
      if (static_cast<std::int64_t>(energy->size()) != t->dims[0]) {
        throw std::invalid_argument("--imatrix " + o.imatrix.string() + ": '" + entry + "' has " + std::to_string(energy->size()) +
                                    " columns, the model's tensor " + std::to_string(t->dims[0]) + " (an importance matrix of another model?)");
      }
    }
  }
  if (!o.calibration.empty()) {
    stats = std::make_unique<calibrate::calibration_stats>(calibrate::read_stats(o.calibration));
    calibrate::check_matches(*stats, gguf::llama_shape::read(model), "--calibration " + o.calibration.string());
  }
  for (const ggml_type type : o.types) {
    if (ggml_needs_imatrix(type) && !imatrix) {
      throw std::invalid_argument("--types: ggml quantizes to " + type_name(type) + " only with an importance matrix (--imatrix)");
    }
  }

  // The tensors, their candidates and their column weights.
  std::map<ggml_type, std::vector<std::string>> skipped, without_imatrix;
  std::vector<const gguf::tensor_view*> views;
  std::vector<column_weights> weights;
  std::vector<std::string> without_statistics;
  for (const auto& t : model.tensors()) {
    if (!llama_quantize_quantizes(t)) continue;
    planned_tensor p;
    p.name = t.name;
    p.row_length = t.dims[0];
    p.rows = t.rows();
    p.source = t.type;
    plan.requantize = plan.requantize || traits_of(t.type).quantized;
    p.errors.assign(o.types.size(), unavailable);
    column_weights w;
    const auto n = static_cast<std::size_t>(p.row_length);
    // With tied embeddings the token embedding is also the output projection.
    const bool lookup_only = is_lookup(t.name) && (t.name != "token_embd.weight" || model.find_tensor("output.weight") != nullptr);
    const std::string as_projection = is_lookup(t.name) && !lookup_only ? "output.weight" : t.name;
    if (lookup_only) {
      w.c.assign(n, 1.0);
      w.row_weight = 1.0 / static_cast<double>(p.rows);
      w.source = "lookup";
    } else if (imatrix) {
      if (auto energy = imatrix->mean_column_energy(t.name)) {
        w.imatrix = *energy;
        w.c.assign(energy->begin(), energy->end());
        w.source = "imatrix";
      }
    } else if (stats) {
      const auto layer = gguf::split_layer_name(t.name);
      const double tokens = static_cast<double>(std::max<std::uint64_t>(stats->tokens, 1));
      const Eigen::VectorXd* measured = nullptr;
      if (layer && layer->suffix == "attn_output.weight") measured = &stats->layers[static_cast<std::size_t>(layer->layer)].attn_in_sum2;
      if (layer && layer->suffix == "ffn_down.weight") measured = &stats->layers[static_cast<std::size_t>(layer->layer)].ffn_in_sum2;
      if (measured != nullptr && measured->size() == p.row_length) {
        for (Eigen::Index j = 0; j < measured->size(); ++j) w.c.push_back((*measured)[j] / tokens);
        w.source = "calibration";
      } else if (const std::string norm = preceding_norm(as_projection); !norm.empty()) {
        w.c = norm_energy(model, norm, p.row_length);
        if (!w.c.empty()) w.source = "rms norm";
      }
    } else {
      w.c.assign(n, 1.0);
      w.source = "plain";
    }
    if (w.c.empty()) {
      without_statistics.push_back(t.name);
      w.c.assign(n, 1.0);
      w.source = "plain";
    }
    if (is_lookup(t.name) && !lookup_only) {  // plus its reads as a lookup, each row as often as any other
      for (double& c : w.c) c += 1.0 / static_cast<double>(p.rows);
      w.source += "+lookup";
    }
    p.weighting = w.source;
    for (std::size_t k = 0; k < o.types.size(); ++k) {
      const ggml_type type = o.types[k];
      if (p.row_length % traits_of(type).block_size != 0) {
        skipped[type].push_back(t.name + " (" + std::to_string(p.row_length) + ")");
      } else if (ggml_needs_imatrix(type) && w.imatrix.empty()) {
        without_imatrix[type].push_back(t.name);
      } else {
        p.errors[k] = 0;  // measured below
      }
    }
    p.fixed = std::none_of(p.errors.begin(), p.errors.end(), [](double e) { return std::isfinite(e); });
    if (p.fixed) {
      p.chosen = ggml_type::f16;
      plan.notes.push_back(p.name + ": no candidate type fits its rows of " + std::to_string(p.row_length) +
                           "; it stays F16 (llama-quantize's fallback)");
    }
    plan.tensors.push_back(std::move(p));
    views.push_back(&t);
    weights.push_back(std::move(w));
  }
  if (plan.tensors.empty()) throw std::invalid_argument(o.model.string() + ": no tensor llama-quantize would quantize");
  for (const auto& [type, names] : skipped) {
    plan.notes.push_back(type_name(type) + " skipped for " + std::to_string(names.size()) + " tensor(s) whose rows its block of " +
                         std::to_string(traits_of(type).block_size) + " does not divide: " + join_names(names));
  }
  for (const auto& [type, names] : without_imatrix) {
    plan.notes.push_back(type_name(type) + " skipped for " + std::to_string(names.size()) +
                         " tensor(s) the importance matrix has no entry for (ggml needs one for it): " + join_names(names));
  }
  if (!without_statistics.empty()) {
    plan.notes.push_back("no input statistics for " + join_names(without_statistics) + ": their columns weigh 1");
  }

  // The allocation over the tensors that have a choice, and its room: from which types
  // each tensor can take alone, so that a budget out of reach is refused before
  // anything is measured.
  std::vector<nashprune::quant_tensor> shapes;
  std::vector<std::size_t> free_index;
  std::int64_t fixed_bytes = 0;
  for (std::size_t t = 0; t < plan.tensors.size(); ++t) {
    const auto& p = plan.tensors[t];
    plan.planned_weights += p.row_length * p.rows;
    if (p.fixed) {
      fixed_bytes += nashprune::row_bytes(ggml_type::f16, p.row_length) * p.rows;
    } else {
      shapes.push_back({p.name, p.row_length, p.rows});
      free_index.push_back(t);
    }
  }
  auto available = [&](std::size_t i, std::size_t k) { return std::isfinite(plan.tensors[free_index[i]].errors[k]); };
  std::int64_t least = fixed_bytes, most = fixed_bytes;
  for (std::size_t i = 0; i < shapes.size(); ++i) {
    const auto& p = plan.tensors[free_index[i]];
    std::int64_t lo = std::numeric_limits<std::int64_t>::max(), hi = 0;
    for (std::size_t k = 0; k < o.types.size(); ++k) {
      if (!available(i, k)) continue;
      lo = std::min(lo, nashprune::row_bytes(o.types[k], p.row_length) * p.rows);
      hi = std::max(hi, nashprune::row_bytes(o.types[k], p.row_length) * p.rows);
    }
    least += lo;
    most += hi;
  }
  auto apply = [&](const std::vector<ggml_type>& chosen) {
    std::map<std::string, ggml_type> types;
    for (std::size_t i = 0; i < shapes.size(); ++i) plan.tensors[free_index[i]].chosen = chosen[i];
    for (const auto& p : plan.tensors) types[p.name] = p.chosen;
    return output_file_bytes(model, types, o, imatrix.get());
  };
  auto describe_bits = [&](std::int64_t bytes) {
    std::ostringstream s;
    s.precision(4);
    s << 8.0 * static_cast<double>(bytes) / static_cast<double>(plan.planned_weights);
    return s.str();
  };
  auto cheapest = [&] {
    std::vector<ggml_type> c;
    for (std::size_t i = 0; i < shapes.size(); ++i) {
      std::int64_t best = std::numeric_limits<std::int64_t>::max();
      ggml_type type = o.types[0];
      for (std::size_t k = 0; k < o.types.size(); ++k) {
        if (!available(i, k) || shapes[i].row_length % traits_of(o.types[k]).block_size != 0) {
          continue;
        }
        const auto bytes = nashprune::row_bytes(o.types[k], shapes[i].row_length) * shapes[i].rows;
        if (bytes < best) {
          best = bytes;
          type = o.types[k];
        }
      }
      c.push_back(type);
    }
    return c;
  };
  std::int64_t budget = 0;
  std::int64_t bpw_total = 0;
  if (o.bits_per_weight) {
    std::vector<nashprune::quant_tensor> all;
    for (const auto& p : plan.tensors) all.push_back({p.name, p.row_length, p.rows});
    bpw_total = nashprune::bytes_for_average_bits(all, *o.bits_per_weight);
    if (bpw_total < least) {
      throw std::invalid_argument("--bpw " + describe_bits(bpw_total) + " is below the smallest plan's " + describe_bits(least) +
                                  " bits per weight (every tensor at its cheapest candidate); the candidates reach [" + describe_bits(least) +
                                  ", " + describe_bits(most) + "]");
    }
    if (bpw_total > most) {
      throw std::invalid_argument("--bpw " + describe_bits(bpw_total) + " is above the largest plan's " + describe_bits(most) +
                                  " bits per weight (every tensor at its largest candidate); the candidates reach [" + describe_bits(least) +
                                  ", " + describe_bits(most) + "]");
    }
    budget = bpw_total - fixed_bytes;
  } else {
    plan.requested_file_bytes = *o.file_bytes;
    const std::int64_t smallest_file = apply(cheapest());
    // The padding after each tensor depends on its type: the tensors' budget shrinks
    // by any excess below until the predicted file fits.
    const std::int64_t overhead = smallest_file - (least - fixed_bytes) - fixed_bytes;
    const std::string range = "; the candidates allow files of " + std::to_string(smallest_file) + " to " + std::to_string(most + overhead) + " bytes";
    if (*o.file_bytes < smallest_file) {
      throw std::invalid_argument("--size " + std::to_string(*o.file_bytes) + " is below the smallest plan's file, " +
                                  std::to_string(smallest_file) + " bytes (every tensor at its cheapest candidate)" + range);
    }
    if (*o.file_bytes - overhead > most) {
      throw std::invalid_argument("--size " + std::to_string(*o.file_bytes) + " is above the largest plan's file (" +
                                  std::to_string(most + overhead) + " bytes, every tensor at its largest candidate)" + range);
    }
    budget = *o.file_bytes - overhead - fixed_bytes;
  }

  // Measure every available (tensor, type) with ggml, over all threads.
  struct job {
    std::size_t tensor, type;
  };
  std::vector<job> jobs;
  for (std::size_t t = 0; t < plan.tensors.size(); ++t) {
    for (std::size_t k = 0; k < o.types.size(); ++k) {
      if ((!o.loss || o.scale_energy) && o.costs.empty() && std::isfinite(plan.tensors[t].errors[k]) && o.types[k] != plan.tensors[t].source) jobs.push_back({t, k});
    }
    auto& p = plan.tensors[t];
    const std::int64_t measured =
        o.sample_weights == 0 ? p.rows : std::min(p.rows, std::max<std::int64_t>(1, (o.sample_weights + p.row_length - 1) / p.row_length));
    p.rows_measured = measured;
  }
  const auto started = std::chrono::steady_clock::now();
  std::atomic<std::size_t> next{0};
  std::mutex failure_lock;
  std::exception_ptr failure;
  auto worker = [&] {
    for (std::size_t j; (j = next++) < jobs.size();) {
      try {
        auto& p = plan.tensors[jobs[j].tensor];
        std::vector<std::int64_t> sample(static_cast<std::size_t>(p.rows_measured));
        for (std::size_t r = 0; r < sample.size(); ++r) {
          sample[r] = static_cast<std::int64_t>((static_cast<double>(r) + 0.5) * static_cast<double>(p.rows) / static_cast<double>(sample.size()));
        }
        p.errors[jobs[j].type] = measure(*views[jobs[j].tensor], o.types[jobs[j].type], weights[jobs[j].tensor], sample);
      } catch (...) {
        const std::lock_guard lock(failure_lock);
        if (!failure) failure = std::current_exception();
        next = jobs.size();
      }
    }
  };
  const unsigned threads = o.threads > 0 ? static_cast<unsigned>(o.threads) : std::max(1U, std::thread::hardware_concurrency());
  std::vector<std::thread> pool;
  for (unsigned i = 1; i < threads; ++i) pool.emplace_back(worker);
  worker();
  for (auto& thread : pool) thread.join();
  if (failure) std::rethrow_exception(failure);
  if (o.loss) measure_loss_increase(model, o, views, weights, plan);
  if (!o.costs.empty()) read_costs(o.costs, o.types, plan);
  plan.seconds_measuring = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();

  Eigen::MatrixXd errors(static_cast<Eigen::Index>(shapes.size()), static_cast<Eigen::Index>(o.types.size()));
  for (std::size_t i = 0; i < shapes.size(); ++i) {
    for (std::size_t k = 0; k < o.types.size(); ++k) {
      errors(static_cast<Eigen::Index>(i), static_cast<Eigen::Index>(k)) = plan.tensors[free_index[i]].errors[k];
    }
  }
  auto allocate = [&](std::int64_t budget) {
    return shapes.empty() ? nashprune::bit_allocation{} : nashprune::allocate_bits_measured<double>(shapes, errors, budget, o.types);
  };
  if (o.bits_per_weight) {
    plan.allocation = allocate(budget);
    plan.predicted_file_bytes = apply(plan.allocation.types);
  } else {
    for (int attempt = 0;; ++attempt) {
      plan.allocation = allocate(budget);
      plan.predicted_file_bytes = apply(plan.allocation.types);
      if (plan.predicted_file_bytes <= *o.file_bytes) break;
      budget -= std::max<std::int64_t>(1, plan.predicted_file_bytes - *o.file_bytes);
      if (attempt > 64 || budget < least - fixed_bytes) {
        throw std::invalid_argument("--size " + std::to_string(*o.file_bytes) + ": no plan's file fits it with the tensors' padding");
      }
    }
  }
  plan.budget_bytes = budget;
  if (o.quantile) {
    // The seed's rule ranks tensors by their error per weight at the cheapest candidate.
    const auto base = cheapest();
    Eigen::VectorXd importance(static_cast<Eigen::Index>(shapes.size()));
    for (std::size_t i = 0; i < shapes.size(); ++i) {
      const auto k = static_cast<Eigen::Index>(std::find(o.types.begin(), o.types.end(), base[i]) - o.types.begin());
      importance[static_cast<Eigen::Index>(i)] = errors(static_cast<Eigen::Index>(i), k) / static_cast<double>(shapes[i].row_length * shapes[i].rows);
    }
    std::vector<ggml_type> by_bits = o.types;
    std::sort(by_bits.begin(), by_bits.end(), [](ggml_type a, ggml_type b) { return traits_of(a).bits_per_weight() < traits_of(b).bits_per_weight(); });
    nashprune::quantile_rule rule;
    rule.low = by_bits.front();
    rule.middle = by_bits[by_bits.size() / 2];
    rule.high = std::find(by_bits.begin(), by_bits.end(), ggml_type::q8_0) != by_bits.end() ? ggml_type::q8_0 : by_bits.back();
    const double bound = plan.allocation.lower_bound;
    auto q = nashprune::quantile_baseline<double>(shapes, importance, rule, o.types);
    q.error = 0;
    for (std::size_t i = 0; i < shapes.size(); ++i) {
      const auto k = static_cast<Eigen::Index>(std::find(o.types.begin(), o.types.end(), q.types[i]) - o.types.begin());
      q.error += errors(static_cast<Eigen::Index>(i), k);
    }
    q.budget = budget;
    q.lower_bound = bound;
    q.gap_bound = std::max(0.0, q.error - bound);
    plan.allocation = q;
    plan.predicted_file_bytes = apply(plan.allocation.types);
  }
  plan.planned_bytes = fixed_bytes + plan.allocation.bytes;
  plan.base_type = base_type_for(plan.tensors);
  return plan;
}

void write_tensor_type_file(const fs::path& path, const quantization_plan& plan) {
  std::vector<nashprune::quant_tensor> shapes;
  std::vector<ggml_type> types;
  for (const auto& p : plan.tensors) {
    shapes.push_back({p.name, p.row_length, p.rows});
    types.push_back(p.chosen);
  }
  write_lines_atomically(path, nashprune::tensor_type_overrides(shapes, types));
}

void write_costs(const fs::path& path, const quantization_plan& plan) {
  std::vector<std::string> lines{"tensor"};
  for (const auto type : plan.types) lines[0] += "\t" + type_name(type);
  for (const auto& p : plan.tensors) {
    std::ostringstream line;
    line.precision(17);
    line << p.name;
    for (const double cost : p.errors) {
      line << '\t';
      if (std::isfinite(cost)) {
        line << cost;
      } else {
        line << "inf";
      }
    }
    lines.push_back(line.str());
  }
  write_lines_atomically(path, lines);
}

}  // namespace quantize
