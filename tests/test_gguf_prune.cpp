// Applying pruning plans to GGUF models: tensor slices compared with plain-loop
// references, the metadata forms llama.cpp honours (uniform llama / per-layer
// deci), attention-free and FFN-free layers, removed layers, quantized column
// rules, and the synthetic model's planted heads.
#include <gtest/gtest.h>

#include <gguf/llama_model.hpp>
#include <gguf/prune_plan.hpp>
#include <gguf/synthetic.hpp>
#include <gguf/float_encode.hpp>
#include <gguf/tensor_floats.hpp>

#include <cstring>

#include "gguf_test_files.hpp"

using gguf::value_type;

namespace {

struct pruned_file {
  gguf::reader model;
  gguf::llama_shape shape;
};

pruned_file apply(const gguf::reader& in, const gguf::prune_plan& plan, const std::filesystem::path& out) {
  const auto shape = gguf::llama_shape::read(in);
  const auto result = gguf::plan_output(in, shape, plan, {{"general.pruning.method", gguf::value::string("test")}});
  {
    gguf::writer w(out, {.force = true, .protect = {}});
    w.begin(result.metadata, result.tensors);
    gguf::write_tensors(in, result, w);
    w.commit();
  }
  auto r = gguf::reader::open(out);
  auto s = gguf::llama_shape::read(r);
  EXPECT_EQ(s.layers, result.shape.layers);
  return {std::move(r), std::move(s)};
}

std::vector<float> floats(const gguf::tensor_view& t) {
  EXPECT_EQ(t.type, nashprune::ggml_type::f32);
  std::vector<float> v(t.data.size() / sizeof(float));
  std::memcpy(v.data(), t.data.data(), t.data.size());
  return v;
}

// Reference: the rows (dims[1] index) of a matrix listed in `rows`, in order.
std::vector<float> take_rows(const gguf::tensor_view& t, const std::vector<std::int64_t>& rows) {
  const auto all = floats(t);
  std::vector<float> out;
  for (auto r : rows) {
    for (std::int64_t c = 0; c < t.dims[0]; ++c) out.push_back(all[static_cast<std::size_t>(r * t.dims[0] + c)]);
  }
  return out;
}

// Reference: the columns (dims[0] index) listed in `columns`, for every row.
std::vector<float> take_columns(const gguf::tensor_view& t, const std::vector<std::int64_t>& columns) {
  const auto all = floats(t);
  std::vector<float> out;
  for (std::int64_t r = 0; r < t.rows(); ++r) {
    for (auto c : columns) out.push_back(all[static_cast<std::size_t>(r * t.dims[0] + c)]);
  }
  return out;
}

std::vector<std::int64_t> head_units(const std::vector<std::int64_t>& heads, std::int64_t head_dim) {
  std::vector<std::int64_t> units;
  for (auto h : heads) {
    for (std::int64_t i = 0; i < head_dim; ++i) units.push_back(h * head_dim + i);
  }
  return units;
}

class GgufPrune : public ::testing::Test {
 protected:
  gguf_test::scratch_dir dir;
  std::filesystem::path input = dir / "synthetic.gguf";
  void SetUp() override { gguf::generate_synthetic(input, {}, {}); }
};

}  // namespace

TEST_F(GgufPrune, KeepAllReproducesTheInputTensors) {
  const auto in = gguf::reader::open(input);
  const auto out = apply(in, gguf::keep_all(gguf::llama_shape::read(in)), dir / "same.gguf");
  EXPECT_EQ(out.shape.architecture, "llama");
  ASSERT_EQ(out.model.tensors().size(), in.tensors().size());
  for (std::size_t i = 0; i < in.tensors().size(); ++i) {
    EXPECT_EQ(out.model.tensors()[i].name, in.tensors()[i].name);
    EXPECT_TRUE(std::ranges::equal(out.model.tensors()[i].data, in.tensors()[i].data)) << in.tensors()[i].name;
  }
  EXPECT_EQ(out.model.find("llama.attention.key_length")->as_int(), 8);
  EXPECT_EQ(out.model.find("general.pruning.method")->as_string(), "test");
}

TEST_F(GgufPrune, PerLayerPlanSlicesExactlyAndBecomesDeci) {
  const auto in = gguf::reader::open(input);
  const auto shape = gguf::llama_shape::read(in);
  auto plan = gguf::keep_all(shape);
  plan.layers[1].heads = {{0, 2, 4, 6}, {0, 1, 2, 3}};  // one head from every group
  plan.layers[2].heads = {{2, 3, 6, 7}, {1, 3}};        // two whole groups
  plan.layers[2].channels = {0, 1, 2, 10, 11, 127};
  plan.layers[3].keep_layer = false;
  const auto out = apply(in, plan, dir / "deci.gguf");

  EXPECT_EQ(out.shape.architecture, "deci");
  EXPECT_EQ(out.model.find("general.architecture")->as_string(), "deci");
  for (const auto& [key, v] : out.model.metadata()) EXPECT_FALSE(key.starts_with("llama.")) << key;
  EXPECT_EQ(out.model.find("deci.block_count")->as_int(), 3);
  EXPECT_EQ(*out.model.find("deci.attention.head_count"), gguf::value::int_array(value_type::int32, {8, 4, 4}));
  EXPECT_EQ(*out.model.find("deci.attention.head_count_kv"), gguf::value::int_array(value_type::int32, {4, 4, 2}));
  EXPECT_EQ(*out.model.find("deci.feed_forward_length"), gguf::value::int_array(value_type::int32, {128, 128, 6}));
  EXPECT_EQ(out.model.find("deci.rope.dimension_count")->as_int(), 8);
  EXPECT_EQ(out.model.find_tensor("blk.3.attn_q.weight"), nullptr);

  EXPECT_EQ(floats(out.model.tensor("blk.1.attn_q.weight")),
            take_rows(in.tensor("blk.1.attn_q.weight"), head_units({0, 2, 4, 6}, 8)));
  EXPECT_EQ(floats(out.model.tensor("blk.1.attn_k.weight")), floats(in.tensor("blk.1.attn_k.weight")));
  EXPECT_EQ(floats(out.model.tensor("blk.1.attn_output.weight")),
            take_columns(in.tensor("blk.1.attn_output.weight"), head_units({0, 2, 4, 6}, 8)));
  EXPECT_EQ(floats(out.model.tensor("blk.2.attn_v.weight")),
            take_rows(in.tensor("blk.2.attn_v.weight"), head_units({1, 3}, 8)));
  EXPECT_EQ(floats(out.model.tensor("blk.2.attn_output.weight")),
            take_columns(in.tensor("blk.2.attn_output.weight"), head_units({2, 3, 6, 7}, 8)));
  const std::vector<std::int64_t> channels = {0, 1, 2, 10, 11, 127};
  EXPECT_EQ(floats(out.model.tensor("blk.2.ffn_up.weight")), take_rows(in.tensor("blk.2.ffn_up.weight"), channels));
  EXPECT_EQ(floats(out.model.tensor("blk.2.ffn_down.weight")), take_columns(in.tensor("blk.2.ffn_down.weight"), channels));
  EXPECT_EQ(floats(out.model.tensor("blk.0.ffn_down.weight")), floats(in.tensor("blk.0.ffn_down.weight")));
}

TEST_F(GgufPrune, UniformPlanStaysLlamaWithHeadSizeKeys) {
  const auto in = gguf::reader::open(input);
  auto plan = gguf::keep_all(gguf::llama_shape::read(in));
  for (auto& l : plan.layers) l.heads = {{0, 1, 4, 5}, {0, 2}};
  const auto out = apply(in, plan, dir / "uniform.gguf");
  EXPECT_EQ(out.shape.architecture, "llama");
  EXPECT_EQ(out.model.find("llama.attention.head_count")->as_int(), 4);
  EXPECT_EQ(out.model.find("llama.attention.head_count_kv")->as_int(), 2);
  EXPECT_EQ(out.model.find("llama.attention.key_length")->as_int(), 8);
  EXPECT_EQ(out.model.find("llama.attention.value_length")->as_int(), 8);
  EXPECT_EQ(out.model.find("llama.feed_forward_length")->as_int(), 128);
}

TEST_F(GgufPrune, AttentionFreeAndFfnFreeLayers) {
  const auto in = gguf::reader::open(input);
  auto plan = gguf::keep_all(gguf::llama_shape::read(in));
  plan.layers[0].heads = {};    // layer 0 cannot be attention-free in llama.cpp
  plan.layers[2].heads = {};    // attention-free
  plan.layers[3].channels = {};  // FFN-free
  const auto out = apply(in, plan, dir / "free.gguf");
  EXPECT_EQ(out.shape.architecture, "deci");
  EXPECT_EQ(*out.model.find("deci.attention.head_count"), gguf::value::int_array(value_type::int32, {1, 8, 0, 8}));
  EXPECT_EQ(*out.model.find("deci.attention.head_count_kv"), gguf::value::int_array(value_type::int32, {1, 4, 0, 4}));
  EXPECT_EQ(*out.model.find("deci.feed_forward_length"), gguf::value::int_array(value_type::int32, {128, 128, 128, 1}));
  for (const char* suffix : {"attn_norm.weight", "attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_output.weight"}) {
    EXPECT_EQ(out.model.find_tensor(gguf::layer_tensor(2, suffix)), nullptr) << suffix;
  }
  const auto zero_output = floats(out.model.tensor("blk.0.attn_output.weight"));
  EXPECT_EQ(out.model.tensor("blk.0.attn_output.weight").dims, (std::vector<std::int64_t>{8, 64}));
  EXPECT_TRUE(std::ranges::all_of(zero_output, [](float x) { return x == 0.0F; }));
  EXPECT_EQ(floats(out.model.tensor("blk.0.attn_q.weight")), take_rows(in.tensor("blk.0.attn_q.weight"), head_units({0}, 8)));
  EXPECT_EQ(out.model.tensor("blk.3.ffn_down.weight").dims, (std::vector<std::int64_t>{1, 64}));
  EXPECT_EQ(out.model.tensor("blk.3.ffn_gate.weight").dims, (std::vector<std::int64_t>{64, 1}));
  const auto stub = floats(out.model.tensor("blk.3.ffn_up.weight"));
  EXPECT_TRUE(std::ranges::all_of(stub, [](float x) { return x == 0.0F; }));
}

TEST_F(GgufPrune, RemovingLayersTrimsEveryPerLayerArray) {
  const auto in = gguf::reader::open(input);
  auto plan = gguf::keep_all(gguf::llama_shape::read(in));
  plan.layers[1].channels = {5};
  const auto deci = apply(in, plan, dir / "deci.gguf");
  auto second = gguf::keep_all(deci.shape);
  second.layers[0].keep_layer = false;
  const auto out = apply(deci.model, second, dir / "fewer.gguf");
  EXPECT_EQ(out.model.find("deci.block_count")->as_int(), 3);
  EXPECT_EQ(*out.model.find("deci.feed_forward_length"), gguf::value::int_array(value_type::int32, {1, 128, 128}));
  EXPECT_EQ(floats(out.model.tensor("blk.0.ffn_up.weight")), floats(deci.model.tensor("blk.1.ffn_up.weight")));
}

TEST_F(GgufPrune, InvalidPlansAreRejectedBeforeWriting) {
  const auto in = gguf::reader::open(input);
  const auto shape = gguf::llama_shape::read(in);
  auto plan = gguf::keep_all(shape);
  plan.layers[1].heads = {{0, 1, 2}, {0, 1}};  // uneven groups
  try {
    (void)gguf::plan_output(in, shape, plan, {});
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("plan for layer 1"), std::string::npos) << e.what();
  }
  plan = gguf::keep_all(shape);
  plan.layers[2].channels = {3, 2};
  EXPECT_THROW((void)gguf::plan_output(in, shape, plan, {}), std::invalid_argument);
  plan = gguf::keep_all(shape);
  for (auto& l : plan.layers) l.keep_layer = false;
  EXPECT_THROW((void)gguf::plan_output(in, shape, plan, {}), std::invalid_argument);
  plan.layers.pop_back();
  EXPECT_THROW((void)gguf::plan_output(in, shape, plan, {}), std::invalid_argument);
}

TEST_F(GgufPrune, SyntheticModelHasThePlantedHeads) {
  const auto in = gguf::reader::open(input);
  const auto planted = gguf::planted_heads({});
  ASSERT_EQ(planted.size(), 8U);
  for (const auto& p : planted) {
    const auto q = floats(in.tensor(gguf::layer_tensor(p.layer, "attn_q.weight")));
    const auto o = take_columns(in.tensor(gguf::layer_tensor(p.layer, "attn_output.weight")), head_units({p.head}, 8));
    const auto q_rows = take_rows(in.tensor(gguf::layer_tensor(p.layer, "attn_q.weight")), head_units({p.head}, 8));
    if (p.duplicate) {
      EXPECT_EQ(q_rows, take_rows(in.tensor(gguf::layer_tensor(p.layer, "attn_q.weight")), head_units({p.twin}, 8)));
      EXPECT_EQ(o, take_columns(in.tensor(gguf::layer_tensor(p.layer, "attn_output.weight")), head_units({p.twin}, 8)));
    } else {
      EXPECT_LT(*std::ranges::max_element(o, {}, [](float x) { return std::abs(x); }), 1e-3F);
    }
  }
}

TEST(GgufPruneQuantized, ColumnSlicesThatSplitBlocksAreWrittenF16) {
  const std::filesystem::path model = std::filesystem::path(NASHPRUNE_DATA_DIR) / "TinyStories-656K-Q8_0.gguf";
  ASSERT_TRUE(std::filesystem::exists(model)) << model << " is missing";
  const auto in = gguf::reader::open(model);
  const auto shape = gguf::llama_shape::read(in);
  ASSERT_EQ(shape.head_dim_k, 16);
  auto plan = gguf::keep_all(shape);
  plan.layers[0].heads = {{0, 2, 4, 6}, {0, 1, 2, 3}};  // 16-column heads: not Q8_0-aligned
  {
    const auto result = gguf::plan_output(in, shape, plan, {});
    ASSERT_EQ(result.retyped.size(), 1U);
    EXPECT_EQ(result.retyped[0].name, "blk.0.attn_output.weight");
    EXPECT_EQ(result.retyped[0].original, nashprune::ggml_type::q8_0);
    gguf_test::scratch_dir dir;
    const auto out = apply(in, plan, dir / "f16.gguf");
    const auto& o_in = in.tensor("blk.0.attn_output.weight");
    const auto& o_out = out.model.tensor("blk.0.attn_output.weight");
    ASSERT_EQ(o_out.type, nashprune::ggml_type::f16);
    ASSERT_EQ(o_out.dims[0], 64);
    // Reference: Q8_0 blocks of an F16 scale and 32 int8, decoded in plain loops;
    // kept column c of head h is input column 16 h + c % 16.
    const std::vector<std::int64_t> heads{0, 2, 4, 6};
    for (std::int64_t r = 0; r < o_in.rows(); ++r) {
      for (std::int64_t c = 0; c < 64; ++c) {
        const std::int64_t column = heads[static_cast<std::size_t>(c / 16)] * 16 + c % 16;
        const auto* block = o_in.data.data() + static_cast<std::size_t>(r) * o_in.row_bytes() + static_cast<std::size_t>(column / 32) * 34;
        std::uint16_t scale = 0;
        std::memcpy(&scale, block, 2);
        const auto quant = static_cast<std::int8_t>(block[2 + column % 32]);
        const float expected = gguf::half_to_float(scale) * static_cast<float>(quant);
        std::uint16_t written = 0;
        std::memcpy(&written, o_out.data.data() + 2 * static_cast<std::size_t>(r * 64 + c), 2);
        ASSERT_EQ(written, gguf::float_to_half(expected)) << "row " << r << ", column " << c;
      }
    }
  }
  plan.layers[0].heads = {{0, 1, 6, 7}, {0, 3}};  // whole groups: 32 columns, aligned
  gguf_test::scratch_dir dir;
  const auto out = apply(in, plan, dir / "q8.gguf");
  const auto& o_in = in.tensor("blk.0.attn_output.weight");
  const auto& o_out = out.model.tensor("blk.0.attn_output.weight");
  ASSERT_EQ(o_out.dims[0], 64);
  // Q8_0 rows are 34-byte blocks of 32 columns: group g is block g of each row.
  for (std::int64_t r = 0; r < o_in.rows(); ++r) {
    const auto in_row = o_in.data.subspan(static_cast<std::size_t>(r) * o_in.row_bytes(), o_in.row_bytes());
    const auto out_row = o_out.data.subspan(static_cast<std::size_t>(r) * o_out.row_bytes(), o_out.row_bytes());
    ASSERT_TRUE(std::ranges::equal(out_row.first(34), in_row.first(34)));
    ASSERT_TRUE(std::ranges::equal(out_row.subspan(34, 34), in_row.subspan(3 * 34, 34)));
  }
}

TEST(GgufPruneReal, Stories260KPrunesToARereadableModel) {
  const std::filesystem::path model = std::filesystem::path(NASHPRUNE_DATA_DIR) / "stories260K.gguf";
  ASSERT_TRUE(std::filesystem::exists(model)) << model << " is missing";
  const auto in = gguf::reader::open(model);
  auto plan = gguf::keep_all(gguf::llama_shape::read(in));
  for (auto& l : plan.layers) l.heads = {{2, 3, 4, 5, 6, 7}, {1, 2, 3}};
  plan.layers[2].keep_layer = false;
  gguf_test::scratch_dir dir;
  const auto out = apply(in, plan, dir / "pruned.gguf");
  EXPECT_EQ(out.shape.architecture, "llama");
  EXPECT_EQ(out.shape.n_layer(), 4);
  EXPECT_EQ(out.model.find("llama.attention.head_count")->as_int(), 6);
  EXPECT_EQ(out.model.find("llama.attention.key_length")->as_int(), 8);
  EXPECT_EQ(out.model.tensors().size(), in.tensors().size() - 9);
}
