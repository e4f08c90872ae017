// gguf::dequantize (examples/gguf/tensor_floats.cpp, which weight scores read)
// against ggml itself: for every block format we decode, random rows are
// quantized by ggml_quantize_chunk, and our values must equal ggml's own
// to_float of the same bytes (exactly, or within one rounding where ggml's build
// fuses a multiply-add). Types we do not decode are refused by name.
#include <ggml.h>
#include <gguf/tensor_floats.hpp>

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

namespace {

struct type_case {
  ::ggml_type ggml;
  nashprune::ggml_type ours;
};

const type_case decoded_types[] = {
    {GGML_TYPE_Q4_0, nashprune::ggml_type::q4_0}, {GGML_TYPE_Q4_1, nashprune::ggml_type::q4_1},
    {GGML_TYPE_Q5_0, nashprune::ggml_type::q5_0}, {GGML_TYPE_Q5_1, nashprune::ggml_type::q5_1},
    {GGML_TYPE_Q8_0, nashprune::ggml_type::q8_0}, {GGML_TYPE_Q2_K, nashprune::ggml_type::q2_k},
    {GGML_TYPE_Q3_K, nashprune::ggml_type::q3_k}, {GGML_TYPE_Q4_K, nashprune::ggml_type::q4_k},
    {GGML_TYPE_Q5_K, nashprune::ggml_type::q5_k}, {GGML_TYPE_Q6_K, nashprune::ggml_type::q6_k},
    {GGML_TYPE_F16, nashprune::ggml_type::f16},   {GGML_TYPE_BF16, nashprune::ggml_type::bf16},
};

TEST(LlamaDequantize, EveryDecodedTypeMatchesGgml) {
  constexpr std::int64_t rows = 6;
  constexpr std::int64_t per_row = 512;
  std::mt19937 rng(6);
  std::normal_distribution<float> normal(0.0F, 0.05F);
  std::vector<float> source(static_cast<std::size_t>(rows * per_row));
  for (auto& x : source) x = normal(rng);
  source[3] = 0.9F;  // an outlier, so scales and mins vary between blocks
  for (const auto& c : decoded_types) {
    const std::string name = ggml_type_name(c.ggml);
    std::vector<std::byte> bytes(ggml_row_size(c.ggml, per_row) * rows);
    ASSERT_EQ(ggml_quantize_chunk(c.ggml, source.data(), bytes.data(), 0, rows, per_row, nullptr), bytes.size()) << name;
    std::vector<float> expected(source.size());
    ggml_get_type_traits(c.ggml)->to_float(bytes.data(), expected.data(), static_cast<std::int64_t>(expected.size()));
    std::vector<float> ours(source.size());
    gguf::dequantize(c.ours, bytes, ours);
    int inexact = 0;
    for (std::size_t i = 0; i < ours.size(); ++i) {
      if (ours[i] == expected[i]) continue;
      ++inexact;
      ASSERT_NEAR(ours[i], expected[i], 1e-6F * std::max(1.0F, std::abs(expected[i]))) << name << " value " << i;
    }
    EXPECT_LE(inexact, static_cast<int>(ours.size()) / 4) << name << ": too many values differ in the last bit";
    // The tensor-level reader agrees with the row decoder.
    gguf::tensor_view view;
    view.name = "blk.0.ffn_up.weight";
    view.dims = {per_row, rows};
    view.type = c.ours;
    view.data = bytes;
    const gguf::float_matrix m(view);
    ASSERT_EQ(m.map().rows(), rows);
    EXPECT_EQ(m.map()(rows - 1, per_row - 1), ours.back()) << name;
  }
}

TEST(LlamaDequantize, UndecodedTypesAreRefusedByName) {
  gguf::tensor_view view;
  view.name = "blk.3.attn_q.weight";
  view.dims = {256, 1};
  view.type = nashprune::ggml_type::iq2_xxs;
  std::vector<std::byte> bytes(66);
  view.data = bytes;
  try {
    const gguf::float_matrix m(view);
    FAIL() << "iq2_xxs was decoded";
  } catch (const std::invalid_argument& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("blk.3.attn_q.weight"), std::string::npos) << what;
    EXPECT_NE(what.find("iq2_xxs"), std::string::npos) << what;
  }
}

}  // namespace
