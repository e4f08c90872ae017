#include <nashprune/memory_savings.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <random>
#include <stdexcept>
#include <vector>

namespace np = nashprune;
using np::ggml_type;

namespace {

constexpr double MiB = 1024.0 * 1024.0;

/// wq and wo of every layer (what the seed's "Total attn" counts), half the heads removed.
std::vector<np::tensor_plan> attention_plan(std::int64_t n_embd, std::int64_t n_head, std::int64_t head_dim, std::int64_t layers,
                                            ggml_type type, std::int64_t kept_heads) {
  std::vector<np::tensor_plan> plan;
  for (std::int64_t l = 0; l < layers; ++l) {
    const std::string blk = "blk." + std::to_string(l) + ".";
    // ggml ne = [n_embd, n_head * head_dim]: one row per query output unit.
    plan.push_back({{blk + "attn_q.weight", n_embd, n_head * head_dim}, type, n_embd, kept_heads * head_dim, type, false});
    // ggml ne = [n_head * head_dim, n_embd]: the heads sit along the row.
    plan.push_back({{blk + "attn_output.weight", n_head * head_dim, n_embd}, type, kept_heads * head_dim, n_embd, type, false});
  }
  return plan;
}

// nash-head-pruning-llama-cpp.md §9.2, Llama-3-8B: every row holds (up to the
// seed's one-decimal rounding).
TEST(MemorySavings, SeedTableLlama3_8B) {
  const auto f16 = np::memory_savings(attention_plan(4096, 32, 128, 32, ggml_type::f16, 16));
  EXPECT_EQ(f16.tensors[0].before, 32 * 1024 * 1024);  // wq per layer 32 MB
  EXPECT_EQ(f16.tensors[0].after, 16 * 1024 * 1024);   // 16 MB
  EXPECT_EQ(f16.tensors[1].saved(), 16 * 1024 * 1024); // wo saves 16 MB
  EXPECT_EQ(f16.before, std::int64_t{2} << 30);        // total attn 2.0 GB
  EXPECT_EQ(f16.after, std::int64_t{1} << 30);         // 1.0 GB
  EXPECT_DOUBLE_EQ(f16.saved_fraction(), 0.5);
  const auto q4 = np::memory_savings(attention_plan(4096, 32, 128, 32, ggml_type::q4_k, 16));
  EXPECT_DOUBLE_EQ(q4.before / (1024.0 * MiB), 0.5625);   // seed: 0.6 GB (rounded)
  EXPECT_DOUBLE_EQ(q4.after / (1024.0 * MiB), 0.28125);   // seed: 0.3 GB
  EXPECT_DOUBLE_EQ(q4.saved() / (1024.0 * MiB), 0.28125); // seed: 0.3 GB
}

// §9.2, Qwen2-0.5B: the per-layer rows hold after rounding; "Total attn 72 MB" is
// 73.5 MiB (24 x 3.0625, the seed multiplied the rounded 1.5), and q4_K cannot hold
// rows of 896 weights at all.
TEST(MemorySavings, SeedTableQwen2_0_5B) {
  const auto f16 = np::memory_savings(attention_plan(896, 14, 64, 24, ggml_type::f16, 7));
  EXPECT_DOUBLE_EQ(f16.tensors[0].before / MiB, 1.53125);  // seed: 1.5 MB
  EXPECT_DOUBLE_EQ(f16.tensors[0].after / MiB, 0.765625);  // seed: 0.75 MB
  EXPECT_DOUBLE_EQ(f16.before / MiB, 73.5);                // seed: 72 MB (wrong)
  EXPECT_DOUBLE_EQ(f16.after / MiB, 36.75);                // seed: 36 MB (wrong)
  EXPECT_DOUBLE_EQ(f16.before / MiB * 4.5 / 16.0, 20.671875);  // the seed's 4.5/16 rule: 20.7, not 20
  try {
    (void)np::memory_savings(attention_plan(896, 14, 64, 24, ggml_type::q4_k, 7));
    ADD_FAILURE() << "q4_K rows of 896 weights";
  } catch (const std::invalid_argument& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("row length 896 is not a multiple of the q4_K block size 256 at index 0 ('blk.0.attn_q.weight')"));
  }
  // llama.cpp falls back to q5_0 (5.5 bits) for such rows.
  const auto q5 = np::memory_savings(attention_plan(896, 14, 64, 24, ggml_type::q5_0, 7));
  EXPECT_EQ(q5.before, 24 * 2 * 896 * (896 / 32 * 22));
  EXPECT_NEAR(q5.before / MiB, 25.265625, 1e-12);
}

TEST(MemorySavings, MatchesBitsPerWeightOnRandomPlans) {
  std::mt19937 rng(2);
  const std::vector<ggml_type> types{ggml_type::f32, ggml_type::f16, ggml_type::q8_0, ggml_type::q4_k, ggml_type::q2_k, ggml_type::q6_k};
  std::uniform_int_distribution<int> pick(0, static_cast<int>(types.size()) - 1), blocks(0, 8), rows(0, 50);
  for (int trial = 0; trial < 1000; ++trial) {
    const ggml_type a = types[static_cast<std::size_t>(pick(rng))], b = types[static_cast<std::size_t>(pick(rng))];
    const std::int64_t len = 256 * blocks(rng), n = rows(rng);
    const std::int64_t len_after = 256 * std::uniform_int_distribution<std::int64_t>(0, len / 256)(rng);
    const std::int64_t n_after = std::uniform_int_distribution<std::int64_t>(0, n)(rng);
    const std::vector<np::tensor_plan> plan{{{"t", len, n}, a, len_after, n_after, b, false}};
    const auto r = np::memory_savings(plan);
    const double bpw_a = np::traits_of(a).bits_per_weight(), bpw_b = np::traits_of(b).bits_per_weight();
    EXPECT_DOUBLE_EQ(static_cast<double>(r.before), bpw_a * static_cast<double>(len * n) / 8.0);
    EXPECT_DOUBLE_EQ(static_cast<double>(r.after), bpw_b * static_cast<double>(len_after * n_after) / 8.0);
  }
}

TEST(MemorySavings, BadPlansNameTheTensor) {
  auto expect = [](np::tensor_plan t, const char* fragment) {
    const std::vector<np::tensor_plan> plan{{{"ok", 32, 1}, ggml_type::f16, 32, 1, ggml_type::f16, false}, t};
    try {
      (void)np::memory_savings(plan);
      ADD_FAILURE() << "no error: " << fragment;
    } catch (const std::invalid_argument& e) {
      EXPECT_THAT(e.what(), ::testing::HasSubstr(fragment));
    }
  };
  expect({{"w", 64, 2}, ggml_type::f16, 64, 3, ggml_type::f16, false}, "cannot grow a tensor at index 1 ('w')");
  expect({{"w", 64, 2}, ggml_type::f16, -1, 2, ggml_type::f16, false}, "negative shape");
  expect({{"w", 64, 2}, ggml_type::f16, 48, 2, ggml_type::q8_0, false}, "not a multiple of the q8_0 block size 32");
  expect({{"b", 64, 1}, ggml_type::f32, 64, 1, ggml_type::f32, true}, "an added tensor has no rows before at index 1 ('b')");
  EXPECT_EQ(np::memory_savings({}).before, 0);
}

// An added tensor (a compensation bias) counts its bytes after only, and may be any shape.
TEST(MemorySavings, AddedTensorsCountFromZeroBytes) {
  const std::vector<np::tensor_plan> plan{{{"w", 64, 4}, ggml_type::f32, 32, 4, ggml_type::f32, false},
                                          {{"b", 64, 0}, ggml_type::f32, 64, 1, ggml_type::f32, true}};
  const auto r = np::memory_savings(plan);
  EXPECT_EQ(r.tensors[1].before, 0);
  EXPECT_EQ(r.tensors[1].after, 64 * 4);
  EXPECT_EQ(r.before, 64 * 4 * 4);
  EXPECT_EQ(r.after, 32 * 4 * 4 + 64 * 4);
}

}  // namespace
