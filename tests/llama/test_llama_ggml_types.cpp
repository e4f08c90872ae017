// include/nashprune/ggml_types.hpp against ggml itself: for every type id the
// pinned ggml knows (0 .. GGML_TYPE_COUNT-1), our table must hold the same block
// size, bytes per block, name and quantized flag; ids ggml has retired (block
// size 0) must be absent from our table.
#include <ggml.h>
#include <nashprune/ggml_types.hpp>

#include <gtest/gtest.h>

#include <string>

// No `using namespace nashprune`: ggml.h's enum ggml_type shares our enum's name.
using nashprune::find_ggml_type;
using nashprune::ggml_type_table;
using nashprune::row_bytes;

TEST(LlamaGgmlTypes, TableMatchesGgmlForEveryTypeId) {
  int checked = 0;
  for (int id = 0; id < GGML_TYPE_COUNT; ++id) {
    const auto type = static_cast<::ggml_type>(id);
    const auto ours = find_ggml_type(static_cast<std::uint32_t>(id));
    if (ggml_blck_size(type) == 0) {
      EXPECT_FALSE(ours.has_value()) << "id " << id << " is retired in ggml but in our table";
      continue;
    }
    ASSERT_TRUE(ours.has_value()) << "ggml type " << ggml_type_name(type) << " (id " << id
                                  << ") is missing from ggml_type_table";
    EXPECT_EQ(ours->block_size, ggml_blck_size(type)) << ours->name;
    EXPECT_EQ(static_cast<std::size_t>(ours->type_size), ggml_type_size(type)) << ours->name;
    EXPECT_EQ(std::string(ours->name), std::string(ggml_type_name(type)));
    EXPECT_EQ(ours->quantized, ggml_is_quantized(type)) << ours->name;
    ++checked;
  }
  EXPECT_EQ(static_cast<std::size_t>(checked), ggml_type_table.size());
}

TEST(LlamaGgmlTypes, RowBytesMatchesGgmlRowSize) {
  for (const auto& t : ggml_type_table) {
    const auto type = static_cast<::ggml_type>(t.type);
    for (std::int64_t blocks : {1, 3, 16}) {
      const std::int64_t n = blocks * t.block_size;
      EXPECT_EQ(static_cast<std::size_t>(row_bytes(t.type, n)), ggml_row_size(type, n)) << t.name << " x " << n;
    }
  }
}
