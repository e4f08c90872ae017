// Tests for include/nashprune/ggml_types.hpp.
#include <nashprune/ggml_types.hpp>

#include <gtest/gtest.h>

#include <limits>
#include <set>

using namespace nashprune;

TEST(GgmlTypes, BitsPerWeightOfTheCommonTypes) {
  EXPECT_DOUBLE_EQ(traits_of(ggml_type::f32).bits_per_weight(), 32.0);
  EXPECT_DOUBLE_EQ(traits_of(ggml_type::f16).bits_per_weight(), 16.0);
  EXPECT_DOUBLE_EQ(traits_of(ggml_type::q8_0).bits_per_weight(), 8.5);
  EXPECT_DOUBLE_EQ(traits_of(ggml_type::q4_0).bits_per_weight(), 4.5);
  EXPECT_DOUBLE_EQ(traits_of(ggml_type::q2_k).bits_per_weight(), 2.625);
  EXPECT_DOUBLE_EQ(traits_of(ggml_type::q3_k).bits_per_weight(), 3.4375);
  EXPECT_DOUBLE_EQ(traits_of(ggml_type::q4_k).bits_per_weight(), 4.5);
  EXPECT_DOUBLE_EQ(traits_of(ggml_type::q5_k).bits_per_weight(), 5.5);
  EXPECT_DOUBLE_EQ(traits_of(ggml_type::q6_k).bits_per_weight(), 6.5625);
}

TEST(GgmlTypes, IdsAndNamesAreUniqueAndFoundBack) {
  std::set<std::uint32_t> ids;
  std::set<std::string_view> names;
  for (const auto& t : ggml_type_table) {
    EXPECT_TRUE(ids.insert(static_cast<std::uint32_t>(t.type)).second) << t.name;
    EXPECT_TRUE(names.insert(t.name).second) << t.name;
    ASSERT_TRUE(find_ggml_type(static_cast<std::uint32_t>(t.type)).has_value());
    EXPECT_EQ(find_ggml_type(t.name)->type, t.type);
    EXPECT_EQ(t.quantized, t.block_size > 1) << t.name;
  }
  EXPECT_EQ(find_ggml_type("Q4_K")->type, ggml_type::q4_k);
  for (std::uint32_t retired : {4u, 5u, 31u, 32u, 33u, 36u, 37u, 38u, 43u, 1000u}) {
    EXPECT_FALSE(find_ggml_type(retired).has_value()) << retired;
  }
  EXPECT_FALSE(find_ggml_type("q4_k_m").has_value());
}

TEST(GgmlTypes, RowBytesRequiresWholeBlocks) {
  EXPECT_EQ(row_bytes(ggml_type::q8_0, 64), 68);
  EXPECT_EQ(row_bytes(ggml_type::q4_k, 4096), 16 * 144);
  EXPECT_EQ(row_bytes(ggml_type::f32, 7), 28);
  EXPECT_THROW((void)row_bytes(ggml_type::q8_0, 48), std::invalid_argument);
  EXPECT_THROW((void)row_bytes(ggml_type::q6_k, 128), std::invalid_argument);
  EXPECT_THROW((void)row_bytes(ggml_type::f16, -1), std::invalid_argument);
}

// Found by the GGUF reader fuzzer: a hostile element count times the type size
// overflowed (undefined behaviour) instead of being refused.
TEST(GgmlTypes, RowBytesRefusesCountsWhoseByteSizeOverflows) {
  constexpr std::int64_t huge = std::numeric_limits<std::int64_t>::max() / 4 + 1;
  EXPECT_THROW((void)row_bytes(ggml_type::f32, huge), std::invalid_argument);
  EXPECT_THROW((void)row_bytes(ggml_type::q8_0, std::numeric_limits<std::int64_t>::max() / 32 * 32),
               std::invalid_argument);
  EXPECT_EQ(row_bytes(ggml_type::f32, huge - 1), (huge - 1) * 4);
}
