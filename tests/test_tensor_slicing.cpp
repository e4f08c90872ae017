// Tests for include/nashprune/tensor_slicing.hpp: typed gathers against plain
// loops on random strided matrices of both storage orders, raw-byte gathers of
// ggml tensors (whole rows of any type, block-aligned column ranges), and every
// bad input the issue names.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <nashprune/tensor_slicing.hpp>
#include <random>
#include <stdexcept>
#include <vector>

#include "expect_error.hpp"
#include "strided_matrix.hpp"

using namespace nashprune;
using nashprune_test::expect_error;
using nashprune_test::strided_matrix;

namespace {

/// A random non-empty ascending subset of [0, count).
std::vector<std::int64_t> random_keep(std::mt19937& rng, std::int64_t count) {
  std::vector<std::int64_t> keep;
  std::bernoulli_distribution coin(0.6);
  for (std::int64_t u = 0; u < count; ++u)
    if (coin(rng)) keep.push_back(u);
  if (keep.empty()) keep.push_back(std::uniform_int_distribution<std::int64_t>(0, count - 1)(rng));
  return keep;
}

/// The targets this machine runs (a forced target it lacks would resolve to another).
std::vector<simd_target> supported_targets() {
  std::vector<simd_target> targets;
  for (const auto t : {simd_target::portable, simd_target::avx2_fma, simd_target::avx512}) {
    if (detail::choose_simd_target(t, detail::detected_cpu_features()) == t) targets.push_back(t);
  }
  return targets;
}

/// The kept indices, one by one, of ascending ranges.
std::vector<std::int64_t> expand(const std::vector<index_range>& ranges) {
  std::vector<std::int64_t> indices;
  for (const auto& r : ranges)
    for (std::int64_t i = r.begin; i < r.end(); ++i) indices.push_back(i);
  return indices;
}

template <typename Scalar>
class SlicingTyped : public ::testing::Test {};
using scalar_types = ::testing::Types<float, double>;
TYPED_TEST_SUITE(SlicingTyped, scalar_types);

template <typename Scalar, int SourceOrder, int DestinationOrder>
void check_random_gathers(std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> units(1, 9), width(1, 7), extent(1, 40), stride(1, 2), padding(0, 3);
  for (int trial = 0; trial < 20; ++trial) {
    const std::int64_t unit_count = units(rng), unit_width = width(rng);
    const auto keep = random_keep(rng, unit_count);
    validate_keep_list("keep", keep, unit_count);
    const auto ranges = unit_ranges(keep, unit_width);
    const auto kept = expand(ranges);
    const auto n_kept = static_cast<Eigen::Index>(kept.size());
    const Eigen::Index other = extent(rng), along = unit_count * unit_width;

    // Rows.
    strided_matrix<Scalar, SourceOrder> by_rows(along, other, stride(rng), padding(rng));
    by_rows.fill_uniform(rng, -5, 5);
    strided_matrix<Scalar, DestinationOrder> rows_out(n_kept, other, stride(rng), padding(rng));
    gather_rows(by_rows.view(), ranges, rows_out.view());
    const auto rows_new = gather_rows(by_rows.view(), ranges);
    ASSERT_EQ(rows_new.rows(), n_kept);
    for (Eigen::Index i = 0; i < n_kept; ++i)
      for (Eigen::Index c = 0; c < other; ++c) {
        ASSERT_EQ(rows_out.view()(i, c), by_rows.view()(kept[static_cast<std::size_t>(i)], c));
        ASSERT_EQ(rows_new(i, c), by_rows.view()(kept[static_cast<std::size_t>(i)], c));
      }

    // Columns.
    strided_matrix<Scalar, SourceOrder> by_cols(other, along, stride(rng), padding(rng));
    by_cols.fill_uniform(rng, -5, 5);
    strided_matrix<Scalar, DestinationOrder> cols_out(other, n_kept, stride(rng), padding(rng));
    gather_cols(by_cols.view(), ranges, cols_out.view());
    const auto cols_new = gather_cols(by_cols.view(), ranges);
    static_assert(decltype(cols_new)::IsRowMajor == (SourceOrder == Eigen::RowMajor));
    for (Eigen::Index r = 0; r < other; ++r)
      for (Eigen::Index j = 0; j < n_kept; ++j) {
        ASSERT_EQ(cols_out.view()(r, j), by_cols.view()(r, kept[static_cast<std::size_t>(j)]));
        ASSERT_EQ(cols_new(r, j), by_cols.view()(r, kept[static_cast<std::size_t>(j)]));
      }

    // Entries of a strided vector (a column of a matrix) into a row of another.
    Eigen::Matrix<Scalar, Eigen::Dynamic, 1> entries(n_kept);
    gather_entries(by_rows.view().col(0), ranges, entries);
    for (Eigen::Index i = 0; i < n_kept; ++i)
      ASSERT_EQ(entries[i], by_rows.view()(kept[static_cast<std::size_t>(i)], 0));
  }
}

TYPED_TEST(SlicingTyped, GathersMatchPlainLoopsOnStridedMatricesOfBothOrders) {
  check_random_gathers<TypeParam, Eigen::RowMajor, Eigen::RowMajor>(1);
  check_random_gathers<TypeParam, Eigen::ColMajor, Eigen::ColMajor>(2);
  check_random_gathers<TypeParam, Eigen::RowMajor, Eigen::ColMajor>(3);
  check_random_gathers<TypeParam, Eigen::ColMajor, Eigen::RowMajor>(4);
}

struct layer_shape {
  const char* name;
  std::int64_t n_head, n_head_kv, head_dim;
  head_granularity granularity;
  std::vector<std::int64_t> removed;
};

TYPED_TEST(SlicingTyped, HeadPlansSliceEveryAttentionTensorBiasAndNormWeight) {
  using Scalar = TypeParam;
  using row_major = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const std::vector<layer_shape> shapes{{"mha", 6, 6, 8, head_granularity::single_heads, {1, 4}},
                                        {"llama3 4:1", 32, 8, 4, head_granularity::whole_groups, {0, 5, 6}},
                                        {"qwen2.5 7:1", 28, 4, 4, head_granularity::heads_per_group, {0, 8, 20, 27}},
                                        {"head_dim 20", 4, 2, 20, head_granularity::whole_groups, {1}}};
  std::mt19937 rng(9);
  std::uniform_real_distribution<double> dist(-1, 1);
  const std::int64_t n_embd = 16;
  for (const auto& shape : shapes) {
    const attention_geometry geometry(shape.n_head, shape.n_head_kv, shape.head_dim);
    const auto plan = geometry.plan_removing(shape.granularity, shape.removed);
    const auto random_matrix = [&](std::int64_t rows, std::int64_t cols) {
      row_major m(rows, cols);
      for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = static_cast<Scalar>(dist(rng));
      return m;
    };
    // ggml / Hugging Face orientation (out_by_in): q, k, v lose rows, o loses columns.
    const row_major wq = random_matrix(geometry.extent(tensor_role::q), n_embd);
    const row_major wk = random_matrix(geometry.extent(tensor_role::k), n_embd);
    const row_major wo = random_matrix(n_embd, geometry.extent(tensor_role::o));
    const Eigen::Matrix<Scalar, Eigen::Dynamic, 1> bq = random_matrix(geometry.extent(tensor_role::q), 1);
    const auto q_keep = geometry.kept_ranges(plan, tensor_role::q);
    const auto kv_keep = geometry.kept_ranges(plan, tensor_role::k);
    const auto new_q = gather_rows(wq, q_keep);
    const auto new_k = gather_rows(wk, kv_keep);
    const auto new_o = gather_cols(wo, geometry.kept_ranges(plan, tensor_role::o));
    const auto new_bq = gather_entries(bq, q_keep);
    const auto d = shape.head_dim;
    ASSERT_EQ(new_q.rows(), static_cast<Eigen::Index>(plan.q_heads.size()) * d) << shape.name;
    ASSERT_EQ(new_k.rows(), static_cast<Eigen::Index>(plan.kv_heads.size()) * d) << shape.name;
    ASSERT_EQ(new_o.cols(), static_cast<Eigen::Index>(plan.q_heads.size()) * d) << shape.name;
    for (std::size_t i = 0; i < plan.q_heads.size(); ++i) {
      const auto h = plan.q_heads[i];
      const auto at = static_cast<Eigen::Index>(i) * d;
      EXPECT_EQ(new_q.middleRows(at, d), wq.middleRows(h * d, d)) << shape.name << " head " << h;
      EXPECT_EQ(new_o.middleCols(at, d), wo.middleCols(h * d, d)) << shape.name << " head " << h;
      EXPECT_EQ(new_bq.segment(at, d), bq.segment(h * d, d)) << shape.name << " head " << h;
    }
    for (std::size_t i = 0; i < plan.kv_heads.size(); ++i) {
      const auto g = plan.kv_heads[i];
      EXPECT_EQ(new_k.middleRows(static_cast<Eigen::Index>(i) * d, d), wk.middleRows(g * d, d)) << shape.name;
    }
    // Per-head norm weights stored one block of head_dim per head (OLMo-style).
    const Eigen::Matrix<Scalar, 1, Eigen::Dynamic> q_norm = random_matrix(1, geometry.extent(tensor_role::q));
    Eigen::Matrix<Scalar, 1, Eigen::Dynamic> new_norm(new_q.rows());
    gather_entries(q_norm, q_keep, new_norm);
    EXPECT_EQ(new_norm.head(d), q_norm.segment(plan.q_heads[0] * d, d)) << shape.name;
  }
}

TYPED_TEST(SlicingTyped, BadKeepListsAndOutputsAreRejected) {
  using M = Eigen::Matrix<TypeParam, Eigen::Dynamic, Eigen::Dynamic>;
  const M source = M::Ones(6, 5);
  M out(2, 5);
  expect_error<std::invalid_argument>([&] { gather_rows(source, std::vector<index_range>{}, out); },
                                      {"'keep'", "empty list"});
  expect_error<std::invalid_argument>(
      [&] {
        gather_rows(source, std::vector<index_range>{{5, 2}}, out);
      },
      {"'keep'", "[5, 7) at index 0 is outside [0, 6)"});
  expect_error<std::invalid_argument>(
      [&] {
        gather_rows(source, std::vector<index_range>{{1, 1}, {1, 1}}, out);
      },
      {"'keep'", "at index 1 overlaps", "duplicate"});
  expect_error<std::invalid_argument>(
      [&] {
        gather_rows(source, std::vector<index_range>{{3, 1}, {1, 1}}, out);
      },
      {"'keep'", "[1, 2) at index 1", "unsorted"});
  expect_error<std::invalid_argument>(
      [&] {
        gather_cols(source, std::vector<index_range>{{0, 2}, {3, 0}}, out);
      },
      {"'keep'", "empty range [3, 3) at index 1"});
  expect_error<std::invalid_argument>(
      [&] {
        gather_rows(source, std::vector<index_range>{{0, 3}}, out);
      },
      {"'destination'", "row count is 2, expected 3"});
  expect_error<std::invalid_argument>(
      [&] {
        gather_cols(source, std::vector<index_range>{{0, 2}}, out);
      },
      {"'destination'", "row count is 2, expected 6"});
  Eigen::Matrix<TypeParam, Eigen::Dynamic, 1> entries(3);
  expect_error<std::invalid_argument>(
      [&] {
        gather_entries(source.col(0), std::vector<index_range>{{0, 2}}, entries);
      },
      {"'destination'", "size is 3, expected 2"});
  expect_error<std::invalid_argument>(
      [&] {
        gather_entries(source, std::vector<index_range>{{0, 2}}, entries);
      },
      {"'source'", "must be a vector"});
  M shared = M::Zero(6, 5);
  expect_error<std::invalid_argument>(
      [&] { gather_rows(shared, std::vector<index_range>{{0, 2}}, shared.bottomRows(2)); },
      {"'destination'", "overlaps the source"});
  expect_error<std::invalid_argument>(
      [&] { gather_entries(shared.col(0), std::vector<index_range>{{1, 3}}, shared.col(0).head(3)); },
      {"'destination'", "overlaps the source"});
}

// ---------------------------------------------------------------------------
// Raw bytes.

std::vector<std::byte> random_bytes(std::mt19937& rng, std::size_t n) {
  std::uniform_int_distribution<int> byte(0, 255);
  std::vector<std::byte> bytes(n);
  for (auto& b : bytes) b = static_cast<std::byte>(byte(rng));
  return bytes;
}

/// Reference: the bytes of the kept rows / block-column ranges, packed, byte by byte.
std::vector<std::byte> reference_gather(const ggml_matrix_view& m, const std::vector<index_range>& keep, bool rows) {
  const auto& t = traits_of(m.type);
  const std::int64_t row = m.n_cols / t.block_size * t.type_size;
  const std::int64_t stride = m.row_stride == 0 ? row : m.row_stride;
  std::vector<std::byte> out;
  if (rows) {
    for (const auto& r : keep)
      for (std::int64_t i = r.begin; i < r.end(); ++i)
        for (std::int64_t b = 0; b < row; ++b) out.push_back(m.bytes[static_cast<std::size_t>(i * stride + b)]);
  } else {
    for (std::int64_t i = 0; i < m.n_rows; ++i)
      for (const auto& r : keep)
        for (std::int64_t b = r.begin / t.block_size * t.type_size; b < r.end() / t.block_size * t.type_size; ++b)
          out.push_back(m.bytes[static_cast<std::size_t>(i * stride + b)]);
  }
  return out;
}

TEST(SlicingBytes, WholeRowsOfEveryTypeWithPaddedStrides) {
  std::mt19937 rng(21);
  for (const auto& t : ggml_type_table) {
    const std::int64_t n_cols = 2 * t.block_size, n_rows = 9;
    const std::int64_t row = row_bytes(t.type, n_cols);
    for (const std::int64_t stride : {std::int64_t{0}, row + 13}) {
      const auto bytes = random_bytes(rng, static_cast<std::size_t>((n_rows - 1) * (stride ? stride : row) + row));
      const ggml_matrix_view source{t.type, n_cols, n_rows, stride, bytes};
      const std::vector<index_range> keep{{0, 2}, {4, 1}, {6, 3}};
      const auto packed = gather_ggml_rows(source, keep);
      EXPECT_EQ(packed, reference_gather(source, keep, true)) << t.name;
      // Into a padded destination.
      std::vector<std::byte> padded(static_cast<std::size_t>(6 * (row + 3)), std::byte{0xAB});
      gather_ggml_rows(source, keep, ggml_matrix_span{t.type, n_cols, 6, row + 3, padded});
      for (std::int64_t i = 0; i < 6; ++i) {
        EXPECT_TRUE(
            std::equal(padded.begin() + i * (row + 3), padded.begin() + i * (row + 3) + row, packed.begin() + i * row))
            << t.name << " row " << i;
        EXPECT_EQ(padded[static_cast<std::size_t>(i * (row + 3) + row)], std::byte{0xAB}) << "padding overwritten";
      }
    }
  }
}

TEST(SlicingBytes, BlockAlignedColumnRangesOfQuantizedTypes) {
  std::mt19937 rng(22);
  for (const auto& t : ggml_type_table) {
    const std::int64_t n_cols = 6 * t.block_size, n_rows = 5;
    const std::int64_t row = row_bytes(t.type, n_cols);
    const auto bytes = random_bytes(rng, static_cast<std::size_t>(n_rows * (row + 7)));
    const ggml_matrix_view source{t.type, n_cols, n_rows, row + 7, bytes};
    const std::int64_t bs = t.block_size;
    const std::vector<index_range> keep{{0, bs}, {2 * bs, 3 * bs}};
    EXPECT_EQ(gather_ggml_cols(source, keep), reference_gather(source, keep, false)) << t.name;
  }
  // f32 / f16 columns are free: any range.
  const auto bytes = random_bytes(rng, 4 * 10 * 3);
  const ggml_matrix_view f32{ggml_type::f32, 10, 3, 0, bytes};
  const std::vector<index_range> odd{{1, 3}, {7, 2}};
  EXPECT_EQ(gather_ggml_cols(f32, odd), reference_gather(f32, odd, false));
}

TEST(SlicingBytes, HeadsOfDim128InQ4KGoInAlignedPairs) {
  // wo with 4 heads of head_dim 128 in q4_K (block 256): removing head 1 alone
  // would split a block, removing heads 2 and 3 does not.
  std::mt19937 rng(23);
  const std::int64_t n_cols = 512, n_rows = 4;
  const auto bytes = random_bytes(rng, static_cast<std::size_t>(n_rows * row_bytes(ggml_type::q4_k, n_cols)));
  const ggml_matrix_view wo{ggml_type::q4_k, n_cols, n_rows, 0, bytes};
  const std::vector<std::int64_t> pair{0, 1}, split{0, 2, 3};
  const auto kept = gather_ggml_cols(wo, unit_ranges(pair, 128));
  EXPECT_EQ(kept.size(), static_cast<std::size_t>(n_rows * 144));
  expect_error<std::invalid_argument>([&] { (void)gather_ggml_cols(wo, unit_ranges(split, 128)); },
                                      {"'keep'", "column range [0, 128) at index 0", "q4_K block boundary (256"});
}

TEST(SlicingBytes, LargeGathersWithNonTemporalStoresStayExactAtAnyAlignment) {
  // Outputs above the streaming threshold take the non-temporal store path;
  // destinations start off 16-byte alignment and spans end mid-vector.
  std::mt19937 rng(24);
  const std::int64_t n_cols = 4096, n_rows = 2400;
  const std::int64_t row = row_bytes(ggml_type::q8_0, n_cols);
  const auto bytes = random_bytes(rng, static_cast<std::size_t>(n_rows * row));
  const ggml_matrix_view source{ggml_type::q8_0, n_cols, n_rows, 0, bytes};
  const std::vector<index_range> rows{{0, 700}, {701, 3}, {1000, 1400}};
  std::vector<std::byte> out(static_cast<std::size_t>(2103 * row + 7));
  gather_ggml_rows(source, rows, ggml_matrix_span{ggml_type::q8_0, n_cols, 2103, 0, std::span(out).subspan(7)});
  const auto expected_rows = reference_gather(source, rows, true);
  EXPECT_TRUE(std::equal(expected_rows.begin(), expected_rows.end(), out.begin() + 7));

  const std::vector<std::int64_t> heads{0,  1,  2,  3,  4,  5,  6,  7,  10, 11, 12, 13, 14, 15, 17,
                                        18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31};
  const auto cols = unit_ranges(heads, 128);
  const auto expected_cols = reference_gather(source, cols, false);
  std::vector<std::byte> col_out(expected_cols.size() + 3);
  gather_ggml_cols(source, cols, ggml_matrix_span{ggml_type::q8_0, 29 * 128, n_rows, 0, std::span(col_out).subspan(3)});
  EXPECT_TRUE(std::equal(expected_cols.begin(), expected_cols.end(), col_out.begin() + 3));
}

TYPED_TEST(SlicingTyped, LargeTypedColumnGathersStreamAndStayExact) {
  using Scalar = TypeParam;
  using row_major = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const Eigen::Index rows = 1200, cols = 2048;
  row_major source(rows, cols);
  for (Eigen::Index i = 0; i < source.size(); ++i) source.data()[i] = static_cast<Scalar>(i % 100003);
  const std::vector<index_range> keep{{3, 517}, {600, 300}, {1024, 1021}};
  const Eigen::Index kept = 517 + 300 + 1021;
  std::vector<Scalar> buffer(static_cast<std::size_t>(rows * kept + 1));
  Eigen::Map<row_major> out(buffer.data() + 1, rows, kept);  // off 16-byte alignment
  gather_cols(source, keep, out);
  const auto indices = expand(keep);
  for (Eigen::Index r = 0; r < rows; ++r)
    for (Eigen::Index j = 0; j < kept; ++j) ASSERT_EQ(out(r, j), source(r, indices[static_cast<std::size_t>(j)]));
}

TYPED_TEST(SlicingTyped, ManySingleColumnsOfContiguousLinesLeaveTheDestinationPaddingAlone) {
  // Single MLP channels of a row-major down matrix (short runs: the AVX-512
  // compress path where the CPU has it), and the same in column-major storage.
  using Scalar = TypeParam;
  std::mt19937 rng(9);
  for (const Eigen::Index along : {1, 15, 17, 300}) {
    const auto ranges = unit_ranges(random_keep(rng, along), 1);
    const auto kept = expand(ranges);
    const auto n_kept = static_cast<Eigen::Index>(kept.size());
    const Eigen::Index other = 23;
    strided_matrix<Scalar, Eigen::RowMajor> source(other, along, 1, 3);
    source.fill_uniform(rng, -5, 5);
    constexpr Eigen::Index padding = 5;
    strided_matrix<Scalar, Eigen::RowMajor> out(other, n_kept, 1, padding);
    gather_cols(source.view(), ranges, out.view());
    for (Eigen::Index r = 0; r < other; ++r) {
      for (Eigen::Index j = 0; j < n_kept; ++j) {
        ASSERT_EQ(out.view()(r, j), source.view()(r, kept[static_cast<std::size_t>(j)])) << "along " << along;
      }
      // The padding after each destination line still holds the sentinel.
      for (Eigen::Index p = 0; p < padding; ++p) ASSERT_EQ(out.view().data()[r * (n_kept + padding) + n_kept + p], Scalar(1e6));
    }
    strided_matrix<Scalar, Eigen::ColMajor> by_rows(along, other, 1, 2);
    by_rows.fill_uniform(rng, -5, 5);
    strided_matrix<Scalar, Eigen::ColMajor> rows_out(n_kept, other, 1, padding);
    gather_rows(by_rows.view(), ranges, rows_out.view());
    for (Eigen::Index c = 0; c < other; ++c) {
      for (Eigen::Index i = 0; i < n_kept; ++i) {
        ASSERT_EQ(rows_out.view()(i, c), by_rows.view()(kept[static_cast<std::size_t>(i)], c));
      }
      for (Eigen::Index p = 0; p < padding; ++p) ASSERT_EQ(rows_out.view().data()[c * (n_kept + padding) + n_kept + p], Scalar(1e6));
    }
  }
}

TYPED_TEST(SlicingTyped, StreamedCompressWritesExactlyTheKeptElementsAtAnyAlignment) {
  // The compress path of large outputs (whole cache lines assembled in
  // registers, non-temporal stores) forced on small inputs: line lengths with
  // and without a partial last vector, one to all elements kept, one line or
  // several, contiguous and padded destination lines starting at every element
  // offset within a cache line; the bytes around each line stay untouched.
  using Scalar = TypeParam;
  const auto targets = supported_targets();
  if (std::find(targets.begin(), targets.end(), simd_target::avx512) == targets.end()) {
    GTEST_SKIP() << "no AVX-512 on this CPU: the compress path does not run here";
  }
  constexpr std::int64_t lanes = 64 / static_cast<std::int64_t>(sizeof(Scalar));
  std::mt19937 rng(46);
  for (const std::int64_t inner : {std::int64_t{1}, lanes - 1, lanes, lanes + 1, std::int64_t{40}, std::int64_t{301}}) {
    std::vector<std::vector<index_range>> keeps{{{0, 1}}, {{inner - 1, 1}}, {{0, inner}}};
    for (int trial = 0; trial < 4; ++trial) keeps.push_back(unit_ranges(random_keep(rng, inner), 1));
    for (const auto& keep : keeps) {
      const auto indices = expand(keep);
      const auto kept = static_cast<std::int64_t>(indices.size());
      for (const std::int64_t lines : {1, 2, 7}) {
        for (const std::int64_t padding : {std::int64_t{0}, std::int64_t{3}}) {
          for (std::int64_t offset = 0; offset <= lanes; ++offset) {
            const std::int64_t from_stride = inner + 5, to_stride = kept + padding;
            std::vector<Scalar> source(static_cast<std::size_t>(lines * from_stride));
            for (auto& x : source) x = std::uniform_real_distribution<Scalar>(-1, 1)(rng);
            // 64-byte aligned storage, so that `offset` places the first line at each lane of a cache line.
            std::vector<Scalar> storage(static_cast<std::size_t>(lines * to_stride + offset + 2 * lanes), Scalar(1e6));
            const auto lead = static_cast<std::int64_t>((64 - reinterpret_cast<std::uintptr_t>(storage.data()) % 64) % 64) /
                              static_cast<std::int64_t>(sizeof(Scalar));
            Scalar* to = storage.data() + lead + offset;
            const detail::masked_lines x{source.data(), from_stride, to, to_stride, lines};
            ASSERT_TRUE(detail::compress_kept_elements<sizeof(Scalar)>(simd_target::avx512, x, keep, inner, true));
            std::vector<Scalar> expected(storage.size(), Scalar(1e6));
            for (std::int64_t line = 0; line < lines; ++line)
              for (std::int64_t j = 0; j < kept; ++j)
                expected[static_cast<std::size_t>(lead + offset + line * to_stride + j)] =
                    source[static_cast<std::size_t>(line * from_stride + indices[static_cast<std::size_t>(j)])];
            ASSERT_EQ(storage, expected) << "inner " << inner << " kept " << kept << " lines " << lines << " padding "
                                         << padding << " offset " << offset;
          }
        }
      }
    }
  }
}

TEST(SlicingBytes, ShortColumnRunsOfOneElementTypesMatchTheReferenceAndKeepThePadding) {
  // Single MLP channels of ffn_down (runs of a few elements): 4- and 8-byte
  // elements take the compress path where the CPU has it, unless a buffer is not
  // element-aligned (then, like 1- and 2-byte elements, inline short copies).
  std::mt19937 rng(41);
  for (const auto type : {ggml_type::f32, ggml_type::f16, ggml_type::i8, ggml_type::i32, ggml_type::f64}) {
    const auto size = static_cast<std::int64_t>(traits_of(type).type_size);
    for (const std::int64_t n_cols : {1, 15, 17, 40, 301}) {
      const auto ranges = unit_ranges(random_keep(rng, n_cols), 1);
      const std::int64_t kept = detail::total_size(ranges), n_rows = 7;
      for (const std::int64_t misalign : {std::int64_t{0}, std::int64_t{1}}) {
        const std::int64_t in_stride = (n_cols + 3) * size + misalign, out_stride = (kept + 2) * size + misalign;
        const auto bytes = random_bytes(rng, static_cast<std::size_t>(n_rows * in_stride + misalign));
        const ggml_matrix_view source{type, n_cols, n_rows, in_stride,
                                      std::span(bytes).subspan(static_cast<std::size_t>(misalign))};
        std::vector<std::byte> out(static_cast<std::size_t>(n_rows * out_stride + misalign), std::byte{0xAB});
        gather_ggml_cols(source, ranges,
                         ggml_matrix_span{type, kept, n_rows, out_stride, std::span(out).subspan(static_cast<std::size_t>(misalign))});
        const auto expected = reference_gather(source, ranges, false);
        const std::byte* to = out.data() + misalign;
        for (std::int64_t r = 0; r < n_rows; ++r) {
          ASSERT_TRUE(std::equal(to + r * out_stride, to + r * out_stride + kept * size, expected.begin() + r * kept * size))
              << traits_of(type).name << " n_cols " << n_cols << " misalign " << misalign << " row " << r;
          for (std::int64_t b = kept * size; b < out_stride; ++b) ASSERT_EQ(to[r * out_stride + b], std::byte{0xAB});
        }
        if (misalign != 0) {
          ASSERT_EQ(out[0], std::byte{0xAB});
        }
      }
    }
  }
}

TEST(SlicingBytes, ShortCopiesAreExactForEveryLength) {
  std::mt19937 rng(42);
  const auto source = random_bytes(rng, 80);
  std::vector<std::byte> buffer(80);
  for (std::size_t n = 0; n < 64; ++n) {
    for (std::size_t offset : {0, 1, 3}) {
      std::fill(buffer.begin(), buffer.end(), std::byte{0xAB});
      detail::copy_short(buffer.data() + 1, source.data() + offset, n);
      ASSERT_TRUE(std::equal(buffer.begin() + 1, buffer.begin() + 1 + static_cast<std::ptrdiff_t>(n), source.begin() + static_cast<std::ptrdiff_t>(offset)))
          << "n " << n;
      ASSERT_EQ(buffer[0], std::byte{0xAB});
      ASSERT_EQ(buffer[n + 1], std::byte{0xAB}) << "n " << n;
    }
  }
}

TEST(SlicingBytes, StreamingCopiesAreExactForEveryAlignmentAndLength) {
  // Every head (to's offset from a 64-byte boundary), relative misalignment of
  // the source (which picks the 64-, 32- or 16-byte stores) and tail length.
  std::mt19937 rng(31);
  const auto source = random_bytes(rng, 4096);
  std::vector<std::byte> buffer(4096 + 128);
  const auto aligned = [](std::byte* p) {
    return p + ((64 - reinterpret_cast<std::uintptr_t>(p) % 64) % 64);
  };
  std::byte* base = aligned(buffer.data() + 1);  // room for the guard byte before
  const std::byte* from_base = source.data() + ((64 - reinterpret_cast<std::uintptr_t>(source.data()) % 64) % 64);
  for (std::size_t to_offset = 0; to_offset < 64; to_offset += 4) {
    for (std::size_t from_offset : {0, 4, 16, 32, 48, 7}) {
      for (std::size_t n : {64, 65, 100, 127, 544, 1000, 2049}) {
        for (const auto target : supported_targets()) {
          std::fill(buffer.begin(), buffer.end(), std::byte{0xAB});
          std::byte* to = base + to_offset;
          detail::copy_bytes(to, from_base + (to_offset + from_offset) % 64, n, true, target);
          detail::finish_copies();
          ASSERT_TRUE(std::equal(to, to + n, from_base + (to_offset + from_offset) % 64))
              << "to offset " << to_offset << " from offset " << from_offset << " n " << n << " target "
              << static_cast<int>(target);
          ASSERT_EQ(to[-1], std::byte{0xAB});
          ASSERT_EQ(to[n], std::byte{0xAB});
        }
      }
    }
  }
}

TEST(SlicingBytes, BadLayoutsBuffersAndKeepListsAreRejected) {
  std::vector<std::byte> src(34 * 4), dst(34 * 4);
  const ggml_matrix_view q8{ggml_type::q8_0, 32, 4, 0, src};
  const std::vector<index_range> two{{1, 2}};
  expect_error<std::invalid_argument>([&] { (void)gather_ggml_rows(q8, std::vector<index_range>{}); },
                                      {"'keep'", "empty list"});
  expect_error<std::invalid_argument>(
      [&] {
        (void)gather_ggml_rows(q8, std::vector<index_range>{{3, 2}});
      },
      {"'keep'", "outside [0, 4)"});
  expect_error<std::invalid_argument>(
      [&] {
        (void)gather_ggml_rows(q8, std::vector<index_range>{{0, 2}, {1, 1}});
      },
      {"'keep'", "at index 1 overlaps"});
  expect_error<std::invalid_argument>(
      [&] {
        (void)gather_ggml_rows(ggml_matrix_view{ggml_type::q8_0, 48, 4, 0, src}, two);
      },
      {"'source.n_cols'", "48 is not a multiple of the q8_0 block size 32"});
  expect_error<std::invalid_argument>(
      [&] {
        (void)gather_ggml_rows(ggml_matrix_view{ggml_type::q8_0, 32, 4, 30, src}, two);
      },
      {"'source.row_stride'", "30 bytes is shorter than a row of 34 bytes"});
  expect_error<std::invalid_argument>(
      [&] {
        (void)gather_ggml_rows(ggml_matrix_view{ggml_type::q8_0, 32, 5, 0, src}, two);
      },
      {"'source.bytes'", "holds 136 bytes, the rows need 170"});
  expect_error<std::invalid_argument>(
      [&] {
        (void)gather_ggml_rows(ggml_matrix_view{static_cast<ggml_type>(4), 32, 4, 0, src}, two);
      },
      {"'type'", "not a ggml type id: 4"});
  expect_error<std::invalid_argument>(
      [&] {
        gather_ggml_rows(q8, two, ggml_matrix_span{ggml_type::q4_0, 32, 2, 0, dst});
      },
      {"'destination.type'", "q4_0 differs from the source type q8_0"});
  expect_error<std::invalid_argument>(
      [&] {
        gather_ggml_rows(q8, two, ggml_matrix_span{ggml_type::q8_0, 32, 3, 0, dst});
      },
      {"'destination.n_rows'", "row count is 3, expected 2"});
  expect_error<std::invalid_argument>(
      [&] {
        gather_ggml_rows(q8, two, ggml_matrix_span{ggml_type::q8_0, 32, 2, 0, std::span(dst).first(40)});
      },
      {"'destination.bytes'", "holds 40 bytes, the rows need 68"});
  expect_error<std::invalid_argument>(
      [&] {
        gather_ggml_rows(q8, two, ggml_matrix_span{ggml_type::q8_0, 32, 2, 0, std::span(src).subspan(34)});
      },
      {"'destination'", "overlaps the source"});
  expect_error<std::invalid_argument>(
      [&] {
        gather_ggml_cols(q8, std::vector<index_range>{{0, 32}}, ggml_matrix_span{ggml_type::q8_0, 32, 3, 0, dst});
      },
      {"'destination.n_rows'", "row count is 3, expected 4"});
  expect_error<std::invalid_argument>(
      [&] {
        (void)gather_ggml_cols(q8, std::vector<index_range>{{16, 16}});
      },
      {"column range [16, 32) at index 0", "q8_0 block boundary"});
}

}  // namespace

namespace {

/// Random spans of a line of `line_bytes` bytes: ascending, disjoint, lengths
/// and gaps drawn from [0, max_length] and [0, max_gap].
std::vector<detail::byte_span> random_spans(std::mt19937& rng, std::int64_t line_bytes, std::int64_t max_length,
                                            std::int64_t max_gap) {
  std::uniform_int_distribution<std::int64_t> length(1, max_length), gap(0, max_gap);
  std::vector<detail::byte_span> spans;
  for (std::int64_t at = gap(rng);;) {
    const std::int64_t n = std::min(length(rng), line_bytes - at);
    if (n <= 0) break;
    spans.push_back({at, n});
    at += n + gap(rng);
  }
  if (spans.empty()) spans.push_back({0, 1});
  return spans;
}

/// What a line-spans gather of `lines` lines writes into a buffer of `size`
/// bytes filled with 0xCD: the destination lines `to_stride` apart from `offset` on.
std::vector<std::byte> expected_gather(const std::vector<std::byte>& source, std::int64_t from_stride,
                                       const std::vector<detail::byte_span>& spans, std::int64_t lines,
                                       std::int64_t to_stride, std::size_t offset, std::size_t size) {
  std::vector<std::byte> expected(size, std::byte{0xCD});
  for (std::int64_t line = 0; line < lines; ++line) {
    auto at = static_cast<std::size_t>(line * to_stride) + offset;
    for (const auto& s : spans)
      for (std::int64_t b = 0; b < s.length; ++b) expected[at++] = source[static_cast<std::size_t>(line * from_stride + s.offset + b)];
  }
  return expected;
}

}  // namespace

TEST(SlicingBytes, LargeGatherStrategiesMatchPlainCopiesAtAnyAlignment) {
  // The large-output path (prefetch, streaming writer with its buffer for short
  // pieces and ragged ends, plain copies) forced on small inputs: every
  // strategy choose_gather_strategy can make, destinations off alignment, packed
  // and padded destination lines; the bytes around each line stay untouched.
  std::mt19937 rng(41);
  struct pattern {
    std::int64_t max_length, max_gap;
  };
  const pattern patterns[] = {{40, 30}, {120, 40}, {3000, 2000}, {700, 20}, {90, 5000}, {5000, 0}};
  for (const auto& p : patterns) {
    for (int trial = 0; trial < 6; ++trial) {
      const std::int64_t line_bytes = std::uniform_int_distribution<std::int64_t>(1, 12000)(rng);
      const auto spans = random_spans(rng, line_bytes, p.max_length, p.max_gap);
      std::int64_t kept = 0;
      for (const auto& s : spans) kept += s.length;
      const std::int64_t lines = std::uniform_int_distribution<std::int64_t>(1, 9)(rng);
      const std::int64_t from_stride = line_bytes + std::uniform_int_distribution<std::int64_t>(0, 70)(rng);
      const std::int64_t to_stride = kept + (trial % 2 == 0 ? 0 : std::uniform_int_distribution<std::int64_t>(1, 90)(rng));
      const auto source = random_bytes(rng, static_cast<std::size_t>((lines - 1) * from_stride + line_bytes));
      const auto offset = std::uniform_int_distribution<std::size_t>(1, 64)(rng);
      std::vector<std::byte> out(static_cast<std::size_t>(lines * to_stride) + offset + 64, std::byte{0xCD});
      const auto expected = expected_gather(source, from_stride, spans, lines, to_stride, offset, out.size());
      // Every strategy, whichever the CPU would pick, then the probing gather.
      for (const auto target : supported_targets()) {
        for (const bool stream : {false, true}) {
          for (const bool prefetch : {false, true}) {
            for (const bool read_through : {false, true}) {
              std::fill(out.begin(), out.end(), std::byte{0xCD});
              detail::copy_line_spans(source.data(), from_stride, out.data() + offset, to_stride, lines, spans,
                                      {stream, prefetch, read_through}, target);
              ASSERT_EQ(out, expected) << "spans " << spans.size() << " kept " << kept << " lines " << lines
                                       << " stream " << stream << " prefetch " << prefetch << " read_through "
                                       << read_through << " target " << static_cast<int>(target);
            }
          }
        }
        // Cache lines assembled in registers (AVX-512 with byte masks), elsewhere the streaming writer.
        std::fill(out.begin(), out.end(), std::byte{0xCD});
        detail::copy_line_spans(source.data(), from_stride, out.data() + offset, to_stride, lines, spans,
                                {false, false, false, true}, target);
        ASSERT_EQ(out, expected) << "assembled: spans " << spans.size() << " kept " << kept << " lines " << lines
                                 << " offset " << offset << " target " << static_cast<int>(target);
      }
      std::fill(out.begin(), out.end(), std::byte{0xCD});
      detail::gather_line_spans(source.data(), from_stride, out.data() + offset, to_stride, lines, spans, true,
                                supported_targets().back());
      ASSERT_EQ(out, expected) << "spans " << spans.size() << " kept " << kept << " lines " << lines;
    }
  }
}

TEST(SlicingBytes, EveryTargetTheMachineRunsMatchesPlainLoops) {
  // Each public gather forced onto every instruction set this machine has,
  // against plain loops: single channels (compress where AVX-512), head-wide
  // column runs and whole rows, each small (cached) and large (streamed,
  // prefetched or probed), destinations off alignment.
  std::mt19937 rng(44);
  using row_major = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  for (const Eigen::Index rows : {Eigen::Index{9}, Eigen::Index{1100}}) {
    const Eigen::Index cols = 4200;  // 1100 × 4200 floats: outputs above the streaming threshold
    row_major source(rows, cols);
    for (Eigen::Index i = 0; i < source.size(); ++i) source.data()[i] = std::uniform_real_distribution<float>(-1, 1)(rng);
    const auto singles = unit_ranges(random_keep(rng, cols), 1);
    const auto heads = unit_ranges(random_keep(rng, cols / 100), 100);
    const auto row_keep = unit_ranges(random_keep(rng, rows), 1);
    for (const auto target : supported_targets()) {
      for (const auto* keep : {&singles, &heads}) {
        const auto kept = expand(*keep);
        std::vector<float> buffer(static_cast<std::size_t>(rows) * kept.size() + 1, -7.0f);
        Eigen::Map<row_major> out(buffer.data() + 1, rows, static_cast<Eigen::Index>(kept.size()));
        gather_cols(source, *keep, out, target);
        ASSERT_EQ(buffer[0], -7.0f);
        for (Eigen::Index r = 0; r < rows; ++r)
          for (std::size_t j = 0; j < kept.size(); ++j)
            ASSERT_EQ(out(r, static_cast<Eigen::Index>(j)), source(r, kept[j]))
                << "rows " << rows << " target " << static_cast<int>(target) << " column " << j;
        const ggml_matrix_view view{ggml_type::f32, cols, rows, 0,
                                    std::as_bytes(std::span(source.data(), static_cast<std::size_t>(source.size())))};
        ASSERT_EQ(gather_ggml_cols(view, *keep, target), reference_gather(view, *keep, false))
            << "rows " << rows << " target " << static_cast<int>(target);
      }
      const auto kept_rows = expand(row_keep);
      const auto gathered = gather_rows(source, row_keep, target);
      for (std::size_t i = 0; i < kept_rows.size(); ++i)
        ASSERT_TRUE(gathered.row(static_cast<Eigen::Index>(i)) == source.row(kept_rows[i]))
            << "rows " << rows << " target " << static_cast<int>(target) << " row " << i;
      const ggml_matrix_view view{ggml_type::f32, cols, rows, 0,
                                  std::as_bytes(std::span(source.data(), static_cast<std::size_t>(source.size())))};
      ASSERT_EQ(gather_ggml_rows(view, row_keep, target), reference_gather(view, row_keep, true));
    }
  }
}

TEST(SlicingBytes, AssembledCacheLinesCopyTinyAndBlockSpansExactly) {
  // The assembling way on q8_0-like blocks (34-byte runs of one to five blocks)
  // and on tiny outputs (a single byte; a few bytes inside one cache line;
  // bytes straddling two), every destination offset within a cache line,
  // contiguous and padded destination lines, on every target (the fallback
  // where AVX-512 byte masks are missing is the streaming writer).
  std::mt19937 rng(47);
  using span_list = std::vector<detail::byte_span>;
  std::vector<span_list> cases{{{0, 1}}, {{5, 3}, {20, 7}}, {{60, 10}}, {{0, 34}, {68, 102}, {204, 34}, {272, 170}}};
  span_list blocks;
  for (std::int64_t block = 0; block < 60; ++block)
    if (std::bernoulli_distribution(0.7)(rng)) blocks.push_back({block * 34, 34});
  // Adjacent kept blocks merge into one span, as unit_ranges merges kept units.
  span_list merged;
  for (const auto& b : blocks) {
    if (!merged.empty() && merged.back().offset + merged.back().length == b.offset) merged.back().length += b.length;
    else merged.push_back(b);
  }
  cases.push_back(merged);
  for (const auto& spans : cases) {
    const std::int64_t line_bytes = spans.back().offset + spans.back().length + 3;
    std::int64_t kept = 0;
    for (const auto& s : spans) kept += s.length;
    for (const std::int64_t lines : {1, 3}) {
      for (const std::int64_t padding : {std::int64_t{0}, std::int64_t{5}}) {
        const std::int64_t to_stride = kept + padding;
        const auto source = random_bytes(rng, static_cast<std::size_t>(lines * line_bytes));
        for (std::size_t offset = 0; offset < 64; ++offset) {
          std::vector<std::byte> out(static_cast<std::size_t>(lines * to_stride) + 192, std::byte{0xCD});
          const auto lead = (64 - reinterpret_cast<std::uintptr_t>(out.data()) % 64) % 64 + offset;
          const auto expected = expected_gather(source, line_bytes, spans, lines, to_stride, lead, out.size());
          for (const auto target : supported_targets()) {
            std::fill(out.begin(), out.end(), std::byte{0xCD});
            detail::copy_line_spans(source.data(), line_bytes, out.data() + lead, to_stride, lines, spans,
                                    {false, false, false, true}, target);
            ASSERT_EQ(out, expected) << "spans " << spans.size() << " lines " << lines << " padding " << padding
                                     << " offset " << offset << " target " << static_cast<int>(target);
          }
        }
      }
    }
  }
}

TEST(SlicingBytes, ProbingGathersCopyEveryPieceExactly) {
  // The timed pieces of a probing gather, both ways of cutting it (by lines; a
  // single line by spans), cover the output exactly once, and decide.
  std::mt19937 rng(43);
  const auto spans = random_spans(rng, 9000, 700, 500);
  std::int64_t kept = 0;
  for (const auto& s : spans) kept += s.length;
  ASSERT_GE(spans.size(), std::size_t{detail::probe_pieces});
  for (const std::int64_t lines : {std::int64_t{1}, std::int64_t{13}, std::int64_t{40}}) {
    const std::int64_t from_stride = 9011, to_stride = kept + 5;
    const auto source = random_bytes(rng, static_cast<std::size_t>((lines - 1) * from_stride + 9000));
    std::vector<std::byte> out(static_cast<std::size_t>(lines * to_stride) + 3, std::byte{0xCD});
    const auto expected = expected_gather(source, from_stride, spans, lines, to_stride, 3, out.size());
    detail::gather_pieces pieces(source.data(), from_stride, out.data() + 3, to_stride, lines, spans,
                                 supported_targets().back());
    ASSERT_TRUE(pieces.cuttable());
    for (const detail::gather_strategy strategy : {detail::gather_strategy{true, true}, detail::gather_strategy{true, false}}) {
      std::fill(out.begin(), out.end(), std::byte{0xCD});
      const auto ways = detail::ways_of_large_gather(strategy);
      const int fastest = detail::probe_large_gather(pieces, ways);
      EXPECT_GE(fastest, 0);
      EXPECT_LT(fastest, ways.count);
      ASSERT_EQ(out, expected) << "lines " << lines << " ways " << ways.count;
    }
  }
  // Too few lines and spans to cut: copied whole by the strategy.
  const std::vector<detail::byte_span> two{{0, 3000}, {4000, 3000}};
  std::vector<std::byte> small(100);
  EXPECT_FALSE(detail::gather_pieces(small.data(), 100, small.data(), 100, 3, two, simd_target::portable).cuttable());
}

TEST(SlicingBytes, ReadingThroughGapsCopiesExactlyAcrossShortAndLongGaps) {
  // Gaps within and between lines, shorter and longer than read_through_bytes
  // (jumped over), with streaming and plain stores.
  std::mt19937 rng(45);
  const std::int64_t long_gap = detail::read_through_bytes + 4000;
  const std::vector<detail::byte_span> spans{{3, 700}, {900, 64}, {1000 + long_gap, 300}};
  const std::int64_t line_bytes = 1300 + long_gap, lines = 3, from_stride = line_bytes + 77, kept = 1064;
  const auto source = random_bytes(rng, static_cast<std::size_t>((lines - 1) * from_stride + line_bytes));
  std::vector<std::byte> expected;
  for (std::int64_t line = 0; line < lines; ++line)
    for (const auto& s : spans)
      for (std::int64_t b = 0; b < s.length; ++b) expected.push_back(source[static_cast<std::size_t>(line * from_stride + s.offset + b)]);
  for (const bool stream : {false, true}) {
    std::vector<std::byte> out(static_cast<std::size_t>(lines * kept), std::byte{0xCD});
    detail::copy_line_spans(source.data(), from_stride, out.data(), kept, lines, spans, {stream, false, true},
                            supported_targets().back());
    ASSERT_EQ(out, expected) << "stream " << stream;
  }
}

TEST(SlicingBytes, LargeGathersWeighReadingThroughOnlyAgainstLongGaps) {
  using span_list = std::vector<detail::byte_span>;
  // Long gaps: plain copies, the prefetching strategy, and reading through instead.
  const auto rows = detail::ways_of_large_gather(detail::choose_gather_strategy(span_list{{0, 4608}, {6912, 2304}}));
  ASSERT_EQ(rows.count, 3);
  EXPECT_TRUE(rows.way[0].plain());
  EXPECT_TRUE(rows.way[1].stream && rows.way[1].prefetch && !rows.way[1].read_through);
  EXPECT_TRUE(rows.way[2].stream && !rows.way[2].prefetch && rows.way[2].read_through);
  // No gap to cross: plain copies against streaming only.
  const auto whole = detail::ways_of_large_gather(detail::choose_gather_strategy(span_list{{64, 8192}}));
  ASSERT_EQ(whole.count, 2);
  EXPECT_TRUE(whole.way[0].plain());
  EXPECT_TRUE(whole.way[1].stream && !whole.way[1].prefetch && !whole.way[1].read_through);
  // Short spans and gaps (q8_0 blocks): plain copies against cache lines assembled and streamed.
  const auto blocks = detail::ways_of_large_gather(detail::choose_gather_strategy(span_list{{0, 68}, {102, 34}, {170, 102}}));
  ASSERT_EQ(blocks.count, 2);
  EXPECT_TRUE(blocks.way[0].plain());
  EXPECT_TRUE(blocks.way[1].assemble && !blocks.way[1].stream && !blocks.way[1].prefetch && !blocks.way[1].read_through);
  // Size classes: floor(log2(bytes / 64)), from 0 up to the cap.
  EXPECT_EQ(detail::large_gather_size_class(0), 0);
  EXPECT_EQ(detail::large_gather_size_class(127), 0);
  EXPECT_EQ(detail::large_gather_size_class(128), 1);
  EXPECT_EQ(detail::large_gather_size_class(4096), 6);
  EXPECT_EQ(detail::large_gather_size_class(std::int64_t{1} << 40), detail::large_gather_size_classes - 1);
  // Kinds are told apart by strategy and by the sizes of spans and gaps, so each is timed on its own.
  const span_list head_columns{{0, 2048}, {4096, 6144}, {12288, 4096}};
  const span_list rows_of_megabytes{{0, 8 << 20}, {16 << 20, 24 << 20}};
  const auto strategy = detail::choose_gather_strategy(head_columns);
  EXPECT_EQ(&detail::fastest_way_slot(head_columns, strategy), &detail::fastest_way_slot(head_columns, strategy));
  EXPECT_NE(&detail::fastest_way_slot(head_columns, strategy), &detail::fastest_way_slot(rows_of_megabytes, strategy));
  EXPECT_NE(&detail::fastest_way_slot(head_columns, strategy), &detail::fastest_way_slot(head_columns, {true, false}));
}

TEST(SlicingBytes, GatherStrategyStreamsLongSpansAndPrefetchesAcrossLongGaps) {
  using span_list = std::vector<detail::byte_span>;
  // q4_K rows of 2304 bytes, one removed between runs: long spans, long gaps.
  const auto rows = detail::choose_gather_strategy(span_list{{0, 4608}, {6912, 2304}, {11520, 6912}});
  EXPECT_TRUE(rows.stream);
  EXPECT_TRUE(rows.prefetch);
  // q8_0 blocks of 34 bytes kept in short runs: plain copies.
  const auto blocks = detail::choose_gather_strategy(span_list{{0, 68}, {102, 34}, {170, 102}, {306, 34}});
  EXPECT_FALSE(blocks.stream);
  EXPECT_FALSE(blocks.prefetch);
  // One span per line: nothing to jump over.
  EXPECT_FALSE(detail::choose_gather_strategy(span_list{{64, 8192}}).prefetch);
  // Short spans far apart: prefetched, not streamed.
  const auto sparse = detail::choose_gather_strategy(span_list{{0, 64}, {4096, 64}, {8192, 64}});
  EXPECT_FALSE(sparse.stream);
  EXPECT_TRUE(sparse.prefetch);
}

TEST(SlicingBytes, PrefetcherWalksTheKeptBytesInCopyOrderAndStops) {
  // Requests run ahead only as far as asked (to the end of the cache line
  // reached), and never past the last kept byte of the last line.
  std::vector<std::byte> source(3 * 1000);
  const std::vector<detail::byte_span> spans{{10, 100}, {300, 5}, {500, 400}};
  detail::span_prefetcher prefetcher(source.data(), 1000, 3, spans);
  prefetcher.request_through(50);
  EXPECT_GE(prefetcher.requested(), 50);
  EXPECT_LT(prefetcher.requested(), 50 + 64);
  prefetcher.request_through(104);
  EXPECT_GE(prefetcher.requested(), 104);
  EXPECT_LE(prefetcher.requested(), 105);  // the 5-byte span is requested whole
  prefetcher.request_through(1 << 20);
  EXPECT_EQ(prefetcher.requested(), 3 * 505);
}
