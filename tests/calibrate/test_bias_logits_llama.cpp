// The biases compensation writes, as stock llama.cpp applies them (label `llama`),
// under both the llama and the deci architecture (stories260K as it is, and with
// one GQA group of layer 0 removed). Each check compares llama.cpp's logits of two
// models that must compute the same function through different tensors:
//  - blk.N.attn_output.bias = W_o·v̄ against blk.N.attn_v.bias = b_v, v̄ the query
//    heads' concatenated b_v of their KV head. Softmax weights sum to 1, so b_v adds
//    b_v to every head's output, and W_o maps it to W_o·v̄ after the projection: the
//    two agree only if llama.cpp adds attn_output.bias once, after attn_output.
//  - blk.N.ffn_down.bias = b against blk.(N+1).attn_output.bias = b, with layer
//    N+1's attn_v.weight zero in both (its attention outputs exactly 0): both add b to
//    the residual stream between layer N's MLP and layer N+1's MLP, and they agree
//    only if ffn_down.bias is added after ffn_down, to the residual.
// And the biases `nashprune prune --compensate bias` writes for removed whole
// blocks (layer 0's and layer 1's attention, layer 2 whole, layer 3's MLP): the
// pruned model's logits equal those of the original with each removed block's
// output projection zeroed and its own bias set to its mean output W·μ (μ from
// `nashprune calibrate`), the direct computation of "the block outputs its mean".
// Each bias also moves the logits well beyond the tolerance (a bias llama.cpp
// ignored would fail there). K and V are cached in F32: the F16 cache rounds V + b_v
// (the first route) and V (the second) apart by about 2e-3 of the logits' change.
#include <gtest/gtest.h>

#include <calibrate/calibration_stats.hpp>
#include <calibrate/llama_text_run.hpp>
#include <gguf/float_encode.hpp>
#include <gguf/prune_plan.hpp>
#include <gguf/tensor_floats.hpp>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "gguf_test_files.hpp"

namespace {

const std::filesystem::path data = NASHPRUNE_DATA_DIR;

struct tensor_change {
  std::string name;
  std::vector<std::int64_t> dims;  // of an added tensor (a replaced one keeps its own)
  std::vector<float> values;
};

// `model` under `plan`, with tensors replaced (when the output has them) or added as F32.
void write_variant(const gguf::reader& model, const gguf::llama_shape& shape, const gguf::prune_plan& plan,
                   const std::vector<tensor_change>& changes, const std::filesystem::path& out) {
  auto result = gguf::plan_output(model, shape, plan, {});
  for (const auto& change : changes) {
    auto at = std::find_if(result.tensors.begin(), result.tensors.end(), [&](const gguf::tensor_spec& t) { return t.name == change.name; });
    if (at == result.tensors.end()) {
      result.tensors.push_back({change.name, change.dims, nashprune::ggml_type::f32});
      result.sources.emplace_back();
      at = result.tensors.end() - 1;
    }
    ASSERT_EQ(at->elements(), static_cast<std::int64_t>(change.values.size())) << change.name;
    auto& source = result.sources[static_cast<std::size_t>(at - result.tensors.begin())];
    source.how = gguf::tensor_source::kind::bytes;
    source.from = nullptr;
    source.ranges.clear();
    source.bytes = std::make_shared<const std::vector<std::byte>>(gguf::encode_floats(at->type, change.values));
  }
  gguf::writer writer(out, {.force = true, .protect = {}});
  writer.begin(result.metadata, result.tensors);
  gguf::write_tensors(model, result, writer);
  writer.commit();
}

// llama.cpp's logits of the first 64 tokens of the evaluation text (one chunk, BOS first).
std::vector<float> logits_of(const std::filesystem::path& model) {
  calibrate::text_run_options o;
  o.model = model;
  o.text = data / "tinystories-evaluation.txt";
  o.context = 64;
  o.max_tokens = 64;
  o.threads = 2;
  calibrate::llama_text_run run(o, /*float_cache=*/true);  // an F16 cache would round V + b_v and V apart
  EXPECT_EQ(run.decode_chunk(0), 0);
  const float* logits = run.logits();
  return {logits, logits + run.context() * run.n_vocab()};
}

double max_difference(const std::vector<float>& a, const std::vector<float>& b) {
  double d = 0;
  for (std::size_t i = 0; i < a.size(); ++i) d = std::max(d, static_cast<double>(std::abs(a[i] - b[i])));
  return d;
}

std::vector<float> random_vector(std::int64_t n, std::uint32_t seed, float scale) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0F, scale);
  std::vector<float> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = normal(rng);
  return v;
}

struct route_check {
  double effect;  ///< how far the tested bias moves the logits from the baseline
  double gap;     ///< how far its logits lie from those of the equivalent reference route
};

// Writes three variants of `model` under `plan` (the baseline changes alone, plus
// the tested bias, plus the reference route instead) and compares llama.cpp's logits.
route_check check_route(const gguf::reader& model, const gguf::llama_shape& shape, const gguf::prune_plan& plan,
                        const std::filesystem::path& dir, const std::string& name, const std::vector<tensor_change>& baseline,
                        const tensor_change& tested, const tensor_change& reference) {
  auto with = [&](const tensor_change& change) {
    auto changes = baseline;
    changes.push_back(change);
    return changes;
  };
  write_variant(model, shape, plan, baseline, dir / (name + "_baseline.gguf"));
  write_variant(model, shape, plan, with(tested), dir / (name + "_tested.gguf"));
  write_variant(model, shape, plan, with(reference), dir / (name + "_reference.gguf"));
  const auto base = logits_of(dir / (name + "_baseline.gguf"));
  const auto through_tested = logits_of(dir / (name + "_tested.gguf"));
  const auto through_reference = logits_of(dir / (name + "_reference.gguf"));
  return {max_difference(base, through_tested), max_difference(through_reference, through_tested)};
}

struct bias_logits : ::testing::TestWithParam<bool> {};  // true: deci (layer 0 loses a group)

TEST_P(bias_logits, BiasesAreAddedWhereCompensationPutsThem) {
  gguf_test::scratch_dir dir;
  const auto model = gguf::reader::open(data / "stories260K.gguf");
  const auto shape = gguf::llama_shape::read(model);
  auto plan = gguf::keep_all(shape);
  if (GetParam()) {
    const auto& l = shape.layers[0];
    const std::vector<std::int64_t> last_group{l.n_head_kv - 1};
    plan.layers[0].heads = nashprune::attention_geometry(l.n_head, l.n_head_kv, shape.head_dim_k, shape.head_dim_v)
                               .plan_removing(nashprune::head_granularity::whole_groups, last_group);
  }
  const std::int64_t n_embd = shape.n_embd;
  const std::int64_t head_dim = shape.head_dim_v;
  const auto& layer = shape.layers[1];
  const std::int64_t group = layer.n_head / layer.n_head_kv;

  // attn_v.bias against attn_output.bias = W_o·v̄ in layer 1.
  const auto v_bias = random_vector(layer.n_head_kv * head_dim, 11, 0.5F);
  const gguf::float_matrix wo(model.tensor("blk.1.attn_output.weight"));  // n_embd × n_head·head_dim
  std::vector<float> o_bias(static_cast<std::size_t>(n_embd), 0.0F);
  for (std::int64_t r = 0; r < n_embd; ++r) {
    double sum = 0;
    for (std::int64_t h = 0; h < layer.n_head; ++h)
      for (std::int64_t j = 0; j < head_dim; ++j) sum += wo.map()(r, h * head_dim + j) * v_bias[static_cast<std::size_t>((h / group) * head_dim + j)];
    o_bias[static_cast<std::size_t>(r)] = static_cast<float>(sum);
  }
  const auto attention = check_route(model, shape, plan, dir.path, "attention", {}, {"blk.1.attn_output.bias", {n_embd}, o_bias},
                                     {"blk.1.attn_v.bias", {layer.n_head_kv * head_dim}, v_bias});
  const double attention_effect = attention.effect;
  const double attention_gap = attention.gap;
  EXPECT_GT(attention_effect, 0.1);
  EXPECT_LT(attention_gap, 1e-5 * attention_effect) << "effect " << attention_effect;

  // ffn_down.bias of layer 2 against attn_output.bias of layer 3, whose attention outputs 0.
  const auto residual_bias = random_vector(n_embd, 13, 0.5F);
  const auto& v = model.tensor("blk.3.attn_v.weight");
  const tensor_change silent_v{"blk.3.attn_v.weight", {}, std::vector<float>(static_cast<std::size_t>(v.dims[0] * v.dims[1]), 0.0F)};
  const auto mlp = check_route(model, shape, plan, dir.path, "mlp", {silent_v}, {"blk.2.ffn_down.bias", {n_embd}, residual_bias},
                               {"blk.3.attn_output.bias", {n_embd}, residual_bias});
  const double mlp_effect = mlp.effect;
  const double mlp_gap = mlp.gap;
  EXPECT_GT(mlp_effect, 0.1);
  EXPECT_LT(mlp_gap, 1e-5 * mlp_effect) << "effect " << mlp_effect;
  std::cout << (GetParam() ? "deci" : "llama") << ": attention bias moves the logits by " << attention_effect << ", the two routes differ by "
            << attention_gap << "; MLP bias " << mlp_effect << ", routes differ by " << mlp_gap << '\n';
}

INSTANTIATE_TEST_SUITE_P(Architectures, bias_logits, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& info) { return info.param ? "deci" : "llama"; });

// W·μ in plain loops, W as ggml stores it (dims[0] columns, dims[1] rows).
std::vector<float> mean_output(const gguf::reader& model, const std::string& weight, const Eigen::VectorXd& mean) {
  const gguf::float_matrix w(model.tensor(weight));
  std::vector<float> out(static_cast<std::size_t>(w.map().rows()));
  for (Eigen::Index r = 0; r < w.map().rows(); ++r) {
    double sum = 0;
    for (Eigen::Index c = 0; c < w.map().cols(); ++c) sum += static_cast<double>(w.map()(r, c)) * mean(c);
    out[static_cast<std::size_t>(r)] = static_cast<float>(sum);
  }
  return out;
}

TEST(removed_block_biases, LogitsEqualTheOriginalWithEachRemovedBlockOutputtingItsMean) {
  gguf_test::scratch_dir dir;
  const auto model_path = data / "stories260K.gguf";
  const auto model = gguf::reader::open(model_path);
  const auto shape = gguf::llama_shape::read(model);
  ASSERT_EQ(shape.n_layer(), 5);
  const auto run = [&](const std::string& arguments) {
    const auto log = dir / "tool.log";
    const std::string command = std::string(NASHPRUNE_TOOL) + " " + arguments + " > '" + log.string() + "' 2>&1";
    std::ifstream in;
    const int status = std::system(command.c_str());
    in.open(log);
    EXPECT_EQ(status, 0) << command << '\n' << std::string(std::istreambuf_iterator<char>(in), {});
  };
  const auto stats_path = dir / "stats.gguf";
  run("calibrate '" + model_path.string() + "' --text '" + (data / "tinystories-calibration.txt").string() +
      "' --tokens 512 --ctx 128 -o '" + stats_path.string() + "'");
  const auto stats = calibrate::read_stats(stats_path);

  // The plan: layer 0 and layer 1 lose their attention, layer 2 goes, layer 3 loses its MLP.
  std::string plan = R"({"layers": [)";
  for (std::int64_t l = 0; l < 5; ++l) {
    const bool attention = l != 0 && l != 1, mlp = l != 3;
    std::string heads, kv, channels;
    for (std::int64_t h = 0; attention && h < shape.layers[static_cast<std::size_t>(l)].n_head; ++h) heads += (h ? "," : "") + std::to_string(h);
    for (std::int64_t h = 0; attention && h < shape.layers[static_cast<std::size_t>(l)].n_head_kv; ++h) kv += (h ? "," : "") + std::to_string(h);
    for (std::int64_t c = 0; mlp && c < shape.layers[static_cast<std::size_t>(l)].n_ff; ++c) channels += (c ? "," : "") + std::to_string(c);
    plan += std::string(l ? "," : "") + R"({"layer": )" + std::to_string(l) + R"(, "keep": )" + (l == 2 ? "false" : "true") +
            R"(, "q_heads": [)" + heads + R"(], "kv_heads": [)" + kv + R"(], "channels": [)" + channels + "]}";
  }
  std::ofstream(dir / "plan.json") << plan << "]}";
  for (const char* kind : {"bias", "none"}) {
    run("prune '" + model_path.string() + "' '" + (dir / (std::string(kind) + ".gguf")).string() + "' --plan '" + (dir / "plan.json").string() +
        "' --calibration '" + stats_path.string() + "' --compensate " + kind + " --force");
  }

  // The original, each removed block's output projection zero and its bias W·μ.
  const auto zero = [&](const std::string& name) {
    const auto& t = model.tensor(name);
    return tensor_change{name, {}, std::vector<float>(static_cast<std::size_t>(t.elements()), 0.0F)};
  };
  const auto mean_of = [&](std::int64_t layer, const std::string& weight) {
    const auto& l = stats.layers[static_cast<std::size_t>(layer)];
    const auto name = gguf::layer_tensor(layer, weight + ".weight");
    return tensor_change{gguf::layer_tensor(layer, weight + ".bias"), {shape.n_embd},
                         mean_output(model, name, weight == "attn_output" ? l.attn_in_mean : l.ffn_in_mean)};
  };
  std::vector<tensor_change> direct;
  for (const auto& [layer, weight] : std::vector<std::pair<std::int64_t, std::string>>{
           {0, "attn_output"}, {1, "attn_output"}, {2, "attn_output"}, {2, "ffn_down"}, {3, "ffn_down"}}) {
    direct.push_back(zero(gguf::layer_tensor(layer, weight + ".weight")));
    direct.push_back(mean_of(layer, weight));
  }
  write_variant(model, shape, gguf::keep_all(shape), direct, dir / "direct.gguf");

  const auto compensated = logits_of(dir / "bias.gguf");
  const auto uncompensated = logits_of(dir / "none.gguf");
  const auto reference = logits_of(dir / "direct.gguf");
  const double effect = max_difference(uncompensated, compensated);
  const double gap = max_difference(reference, compensated);
  std::cout << "removed blocks: the biases move the logits by " << effect << ", from the direct computation by " << gap << '\n';
  EXPECT_GT(effect, 0.1);
  EXPECT_LT(gap, 1e-4 * effect) << "effect " << effect;
}

}  // namespace

