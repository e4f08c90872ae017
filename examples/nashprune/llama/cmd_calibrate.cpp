// `nashprune calibrate MODEL.gguf --text FILE [--tokens N] [--ctx N] -o STATS.gguf`
// (built only against a provisioned llama.cpp: it links libllama).
//
// Runs calibration text through the model with llama.cpp's evaluation callback
// and, per layer, captures
//   kqv_out-L     the attention output before the output projection
//                 (tokens × n_head·head_dim): fed to nashprune::head_redundancy
//                 (Gram matrix and head sums -> energy, cosine, correlation);
//   ffn_swiglu-L  the MLP intermediate activations (tokens × n_ff): per-channel
//                 energy Σ_t a_tc²;
//   embd, ffn_inp-L, l_out-L (the token embeddings, the residual stream between
//                 the blocks and after the layer): block influence, the mean over
//                 tokens of 1 − cos(block input, block output), for the
//                 attention block, the MLP block and the whole layer.
// Memory is constant in the number of tokens (one context at a time).
//
// STATS is a GGUF file (general.type = "nashprune.calibration"):
//   calibration.model, calibration.text (file names), calibration.tokens,
//   calibration.ctx, calibration.block_count, calibration.head_dim,
//   calibration.head_count, calibration.feed_forward_length (INT32 per layer),
//   calibration.attn_block_influence, calibration.ffn_block_influence,
//   calibration.layer_influence (FLOAT32 per layer);
//   tensors (F32) blk.L.head_gram [n_head, n_head], blk.L.head_sums [n_head],
//   blk.L.ffn_channel_energy [n_ff] for every layer that has them.
#include <gguf/gguf.hpp>
#include <gguf/llama_model.hpp>
#include <ggml-backend.h>
#include <llama.h>
#include <nashprune/head_redundancy.hpp>

#include <unistd.h>

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "../command.hpp"

namespace {

namespace fs = std::filesystem;
using nashprune_tool::usage_error;
using row_block = Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>;

struct calibrate_options {
  std::string model;
  std::string text;
  std::string output;
  std::int64_t tokens = 8192;
  int ctx = 128;
  int threads = 0;
  bool force = false;
};

/// Mean of 1 − cos(x_t, y_t) over tokens.
struct influence {
  double sum = 0;
  std::int64_t count = 0;
  void add(const row_block& in, const row_block& out) {
    for (Eigen::Index t = 0; t < in.rows(); ++t) {
      const double denominator = static_cast<double>(in.row(t).norm()) * static_cast<double>(out.row(t).norm());
      const double cosine = denominator > 0 ? static_cast<double>(in.row(t).dot(out.row(t))) / denominator : 0.0;
      sum += 1.0 - cosine;
      ++count;
    }
  }
  [[nodiscard]] double mean() const { return count > 0 ? sum / static_cast<double>(count) : 0.0; }
};

struct layer_stats {
  std::optional<nashprune::head_redundancy<float>> heads;
  Eigen::VectorXd channel_energy;
  influence attention, mlp, layer;
};

/// What the evaluation callback sees of one decode: the captured activations.
struct capture {
  gguf::llama_shape shape;
  std::int64_t n_tokens = 0;  // tokens of the current batch
  std::vector<layer_stats> layers;
  std::vector<float> layer_input, block_middle;  // copies kept across callbacks
  std::string error;
};

bool parse_name(const char* name, std::string& kind, int& layer) {
  const std::string s(name);
  const auto dash = s.rfind('-');
  if (dash == std::string::npos) {
    kind = s;
    layer = -1;
    return true;
  }
  kind = s.substr(0, dash);
  try {
    layer = std::stoi(s.substr(dash + 1));
  } catch (const std::exception&) {
    return false;
  }
  return true;
}

bool wanted(const std::string& kind) {
  return kind == "kqv_out" || kind == "ffn_swiglu" || kind == "ffn_inp" || kind == "l_out" || kind == "embd";
}

std::vector<float> host_copy(const ggml_tensor* t) {
  std::vector<float> data(static_cast<std::size_t>(ggml_nelements(t)));
  ggml_backend_tensor_get(const_cast<ggml_tensor*>(t), data.data(), 0, ggml_nbytes(t));
  return data;
}

bool on_tensor(ggml_tensor* t, bool ask, void* user_data) {
  auto& c = *static_cast<capture*>(user_data);
  std::string kind;
  int layer = -1;
  if (!parse_name(t->name, kind, layer) || !wanted(kind)) return false;
  if (ask) return true;
  if (!c.error.empty()) return false;
  if (t->type != GGML_TYPE_F32 || !ggml_is_contiguous(t) || ggml_nelements(t) % c.n_tokens != 0) {
    c.error = std::string("unsupported layout of ") + t->name;
    return false;
  }
  const auto data = host_copy(t);
  const Eigen::Index width = ggml_nelements(t) / c.n_tokens;
  const row_block block(data.data(), c.n_tokens, width);
  if (kind == "embd") {  // the token embeddings: layer 0's input
    c.layer_input = data;
    return true;
  }
  if (layer < 0 || layer >= c.shape.n_layer()) return true;
  auto& s = c.layers[static_cast<std::size_t>(layer)];
  const row_block input(c.layer_input.data(), c.n_tokens, width);
  if (kind == "kqv_out" && s.heads) {
    s.heads->add_batch(block);
  } else if (kind == "ffn_swiglu") {
    if (s.channel_energy.size() != width) s.channel_energy = Eigen::VectorXd::Zero(width);
    s.channel_energy += block.cast<double>().array().square().colwise().sum().matrix().transpose();
  } else if (kind == "ffn_inp" && static_cast<Eigen::Index>(c.layer_input.size()) == block.size()) {
    s.attention.add(input, block);
    c.block_middle = data;
  } else if (kind == "l_out") {
    if (static_cast<Eigen::Index>(c.block_middle.size()) == block.size()) {
      s.mlp.add(row_block(c.block_middle.data(), c.n_tokens, width), block);
    }
    if (static_cast<Eigen::Index>(c.layer_input.size()) == block.size()) s.layer.add(input, block);
    c.layer_input = data;  // the next layer's input
  }
  return true;
}

std::vector<llama_token> tokenize(const llama_vocab* vocab, const std::string& text) {
  const int needed = -llama_tokenize(vocab, text.data(), static_cast<int32_t>(text.size()), nullptr, 0, true, false);
  std::vector<llama_token> tokens(static_cast<std::size_t>(std::max(needed, 0)));
  if (llama_tokenize(vocab, text.data(), static_cast<int32_t>(text.size()), tokens.data(),
                     static_cast<int32_t>(tokens.size()), true, false) < 0) {
    throw std::runtime_error("tokenizing the calibration text failed");
  }
  return tokens;
}

void quiet_log(ggml_log_level level, const char* text, void*) {
  if (level == GGML_LOG_LEVEL_ERROR) std::cerr << text;
}

std::vector<float> floats_of(const Eigen::MatrixXd& m) {
  std::vector<float> v(static_cast<std::size_t>(m.size()));
  for (Eigen::Index i = 0; i < m.size(); ++i) v[static_cast<std::size_t>(i)] = static_cast<float>(m.data()[i]);
  return v;
}

void write_stats(const calibrate_options& o, const capture& c, std::int64_t tokens) {
  const auto n_layer = c.shape.n_layer();
  gguf::metadata kv;
  gguf::set(kv, "general.type", gguf::value::string("nashprune.calibration"));
  gguf::set(kv, "calibration.model", gguf::value::string(fs::path(o.model).filename().string()));
  gguf::set(kv, "calibration.text", gguf::value::string(fs::path(o.text).filename().string()));
  gguf::set(kv, "calibration.tokens", gguf::value::u64(static_cast<std::uint64_t>(tokens)));
  gguf::set(kv, "calibration.ctx", gguf::value::u32(static_cast<std::uint32_t>(o.ctx)));
  gguf::set(kv, "calibration.block_count", gguf::value::u32(static_cast<std::uint32_t>(n_layer)));
  gguf::set(kv, "calibration.head_dim", gguf::value::u32(static_cast<std::uint32_t>(c.shape.head_dim_v)));
  std::vector<std::int64_t> heads, ffn;
  std::vector<gguf::value> attention, mlp, layer;
  for (const auto& l : c.shape.layers) {
    heads.push_back(l.n_head);
    ffn.push_back(l.n_ff);
  }
  for (const auto& s : c.layers) {
    attention.push_back(gguf::value::f32(static_cast<float>(s.attention.mean())));
    mlp.push_back(gguf::value::f32(static_cast<float>(s.mlp.mean())));
    layer.push_back(gguf::value::f32(static_cast<float>(s.layer.mean())));
  }
  gguf::set(kv, "calibration.head_count", gguf::value::int_array(gguf::value_type::int32, heads));
  gguf::set(kv, "calibration.feed_forward_length", gguf::value::int_array(gguf::value_type::int32, ffn));
  gguf::set(kv, "calibration.attn_block_influence", gguf::value::array(gguf::value_type::float32, attention));
  gguf::set(kv, "calibration.ffn_block_influence", gguf::value::array(gguf::value_type::float32, mlp));
  gguf::set(kv, "calibration.layer_influence", gguf::value::array(gguf::value_type::float32, layer));

  std::vector<gguf::tensor_spec> specs;
  std::vector<std::vector<float>> payloads;
  for (std::int64_t l = 0; l < n_layer; ++l) {
    const auto& s = c.layers[static_cast<std::size_t>(l)];
    if (s.heads) {
      const auto n = s.heads->n_head();
      specs.push_back({gguf::layer_tensor(l, "head_gram"), {n, n}, nashprune::ggml_type::f32});
      payloads.push_back(floats_of(s.heads->gram()));
      specs.push_back({gguf::layer_tensor(l, "head_sums"), {n}, nashprune::ggml_type::f32});
      payloads.push_back(floats_of(s.heads->sums()));
    }
    if (s.channel_energy.size() > 0) {
      specs.push_back({gguf::layer_tensor(l, "ffn_channel_energy"), {s.channel_energy.size()}, nashprune::ggml_type::f32});
      payloads.push_back(floats_of(s.channel_energy));
    }
  }
  gguf::writer out(o.output, {.force = o.force, .protect = {o.model, o.text}});
  out.begin(kv, specs);
  for (const auto& p : payloads) out.write(std::as_bytes(std::span(p)));
  out.commit();
}

void report(const capture& c) {
  for (std::int64_t l = 0; l < c.shape.n_layer(); ++l) {
    const auto& s = c.layers[static_cast<std::size_t>(l)];
    std::cout << "layer " << l << ": influence attention " << s.attention.mean() << ", mlp " << s.mlp.mean()
              << ", layer " << s.layer.mean();
    if (s.heads) {
      const auto cosine = s.heads->cosine();
      std::cout << "; head pairs with cosine > 0.99:";
      for (Eigen::Index i = 0; i < cosine.rows(); ++i) {
        for (Eigen::Index j = i + 1; j < cosine.cols(); ++j) {
          if (cosine(i, j) > 0.99) std::cout << ' ' << i << '-' << j;
        }
      }
    }
    std::cout << '\n';
  }
}

int run_calibrate(const calibrate_options& o) {
  if (!fs::is_regular_file(o.model)) throw usage_error("model '" + o.model + "' is not a readable file");
  std::ifstream text_file(o.text, std::ios::binary);
  if (!text_file) throw usage_error("--text '" + o.text + "' is not a readable file");
  const std::string text((std::istreambuf_iterator<char>(text_file)), std::istreambuf_iterator<char>());
  if (fs::exists(o.output) && !o.force) throw usage_error("output '" + o.output + "' exists (use --force)");

  capture c;
  c.shape = gguf::llama_shape::read(gguf::reader::open(o.model));  // unsupported architecture: error here
  c.layers.resize(static_cast<std::size_t>(c.shape.n_layer()));
  for (std::size_t l = 0; l < c.layers.size(); ++l) {
    const auto& shape = c.shape.layers[l];
    if (shape.has_attention()) c.layers[l].heads.emplace(shape.n_head, c.shape.head_dim_v);
  }

  llama_log_set(quiet_log, nullptr);
  llama_backend_init();
  auto model_params = llama_model_default_params();
  model_params.n_gpu_layers = 0;
  std::unique_ptr<llama_model, decltype(&llama_model_free)> model(
      llama_model_load_from_file(o.model.c_str(), model_params), llama_model_free);
  if (!model) throw usage_error("llama.cpp cannot load '" + o.model + "'");
  const auto tokens = tokenize(llama_model_get_vocab(model.get()), text);
  const std::int64_t usable = std::min<std::int64_t>(o.tokens, static_cast<std::int64_t>(tokens.size())) / o.ctx * o.ctx;
  if (usable < o.ctx) {
    throw usage_error("--text has " + std::to_string(tokens.size()) + " tokens, fewer than one context of " +
                      std::to_string(o.ctx));
  }

  auto ctx_params = llama_context_default_params();
  ctx_params.n_ctx = static_cast<std::uint32_t>(o.ctx);
  ctx_params.n_batch = static_cast<std::uint32_t>(o.ctx);
  ctx_params.n_ubatch = static_cast<std::uint32_t>(o.ctx);
  ctx_params.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
  ctx_params.cb_eval = on_tensor;
  ctx_params.cb_eval_user_data = &c;
  if (o.threads > 0) ctx_params.n_threads = ctx_params.n_threads_batch = o.threads;
  std::unique_ptr<llama_context, decltype(&llama_free)> ctx(llama_init_from_model(model.get(), ctx_params),
                                                           llama_free);
  if (!ctx) throw std::runtime_error("llama.cpp cannot create a context of " + std::to_string(o.ctx));

  llama_batch batch = llama_batch_init(o.ctx, 0, 1);
  const bool progress = ::isatty(STDERR_FILENO) != 0;
  for (std::int64_t start = 0; start < usable; start += o.ctx) {
    llama_memory_clear(llama_get_memory(ctx.get()), true);
    batch.n_tokens = o.ctx;
    for (int i = 0; i < o.ctx; ++i) {
      batch.token[i] = tokens[static_cast<std::size_t>(start + i)];
      batch.pos[i] = i;
      batch.n_seq_id[i] = 1;
      batch.seq_id[i][0] = 0;
      batch.logits[i] = 1;  // every row reaches the last layer (no output-row pruning)
    }
    c.n_tokens = o.ctx;
    c.layer_input.clear();
    c.block_middle.clear();
    if (llama_decode(ctx.get(), batch) != 0 || !c.error.empty()) {
      llama_batch_free(batch);
      throw std::runtime_error("decoding failed at token " + std::to_string(start) +
                               (c.error.empty() ? "" : ": " + c.error));
    }
    if (progress) std::cerr << "\rcalibrate: " << start + o.ctx << " / " << usable << " tokens" << std::flush;
  }
  if (progress) std::cerr << '\n';
  llama_batch_free(batch);

  write_stats(o, c, usable);
  report(c);
  std::cout << "wrote " << o.output << " (" << usable << " tokens)\n";
  return 0;
}

const nashprune_tool::register_command calibrate_command{{
    "calibrate", "Measure head redundancy, activation energy and block influence through llama.cpp",
    [](CLI::App& app) -> std::function<int()> {
      auto o = std::make_shared<calibrate_options>();
      app.add_option("model", o->model, "GGUF model (llama or deci)")->required();
      app.add_option("--text", o->text, "Calibration text (never the evaluation text)")->required();
      app.add_option("-o,--output", o->output, "Statistics file to write (GGUF)")->required();
      app.add_option("--tokens", o->tokens, "Calibration tokens (whole contexts)")->check(CLI::PositiveNumber)
          ->capture_default_str();
      app.add_option("--ctx", o->ctx, "Context length")->check(CLI::Range(8, 1 << 20))->capture_default_str();
      app.add_option("-t,--threads", o->threads, "Threads (0: llama.cpp's default)")->check(CLI::NonNegativeNumber);
      app.add_flag("--force", o->force, "Replace an existing output");
      return [o] { return run_calibrate(*o); };
    }}};

}  // namespace
