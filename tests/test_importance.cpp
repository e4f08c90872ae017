// Tests for include/nashprune/importance.hpp: every metric against plain loops on
// random strided matrices of both storage orders, aggregation over head and
// channel ranges, and every bad input the issue names.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <nashprune/importance.hpp>
#include <random>
#include <stdexcept>
#include <vector>

#include "expect_error.hpp"
#include "strided_matrix.hpp"

using namespace nashprune;
using nashprune_test::expect_error;
using nashprune_test::strided_matrix;

namespace {

enum class metric { l1, l2, taylor_first, taylor_fisher, taylor_second, wanda_cols, wanda_rows };
constexpr metric all_metrics[] = {
    metric::l1,         metric::l2,        metric::taylor_first, metric::taylor_fisher, metric::taylor_second,
    metric::wanda_cols, metric::wanda_rows};

struct reference_inputs {
  Eigen::MatrixXd w, g, h;
  Eigen::VectorXd norms_in_cols, norms_in_rows;
};

double reference_weight_score(metric m, const reference_inputs& in, Eigen::Index r, Eigen::Index c) {
  const double w = in.w(r, c), g = in.g(r, c), h = in.h(r, c);
  switch (m) {
    case metric::l1:
      return std::abs(w);
    case metric::l2:
      return w * w;
    case metric::taylor_first:
      return std::abs(w * g);
    case metric::taylor_fisher:
      return std::abs(w * g) + 0.5 * std::abs(w * w * g * g);
    case metric::taylor_second:
      return std::abs(w * g) + 0.5 * std::abs(w * w * h);
    case metric::wanda_cols:
      return std::abs(w) * in.norms_in_cols[c];
    case metric::wanda_rows:
      return std::abs(w) * in.norms_in_rows[r];
  }
  return 0;
}

Eigen::VectorXd reference_line_scores(metric m, const reference_inputs& in, matrix_axis lines) {
  const bool per_row = lines == matrix_axis::rows;
  Eigen::VectorXd totals = Eigen::VectorXd::Zero(per_row ? in.w.rows() : in.w.cols());
  for (Eigen::Index r = 0; r < in.w.rows(); ++r)
    for (Eigen::Index c = 0; c < in.w.cols(); ++c) totals[per_row ? r : c] += reference_weight_score(m, in, r, c);
  return totals;
}

// The library's answer for metric m, through whichever entry point it names.
template <typename W, typename G, typename H, typename V>
auto library_line_scores(metric m, const W& w, const G& g, const H& h, const V& norms_cols, const V& norms_rows,
                         matrix_axis lines, simd_target target = simd_target::automatic) {
  switch (m) {
    case metric::l1:
      return magnitude_line_scores(w, lines, magnitude_norm::l1, target);
    case metric::l2:
      return magnitude_line_scores(w, lines, magnitude_norm::l2, target);
    case metric::taylor_first:
      return taylor_first_line_scores(w, g, lines, target);
    case metric::taylor_fisher:
      return taylor_second_line_scores(w, g, lines, target);
    case metric::taylor_second:
      return taylor_second_line_scores(w, g, h, lines, target);
    case metric::wanda_cols:
      return wanda_line_scores(w, norms_cols, matrix_axis::cols, lines, target);
    case metric::wanda_rows:
      return wanda_line_scores(w, norms_rows, matrix_axis::rows, lines, target);
  }
  return magnitude_line_scores(w, lines);
}

template <typename W, typename G, typename H, typename V, typename Out>
void library_weight_scores(metric m, const W& w, const G& g, const H& h, const V& norms_cols, const V& norms_rows,
                           Out& out) {
  switch (m) {
    case metric::l1:
      magnitude_weight_scores(w, magnitude_norm::l1, out);
      return;
    case metric::l2:
      magnitude_weight_scores(w, magnitude_norm::l2, out);
      return;
    case metric::taylor_first:
      taylor_first_weight_scores(w, g, out);
      return;
    case metric::taylor_fisher:
      taylor_second_weight_scores(w, g, out);
      return;
    case metric::taylor_second:
      taylor_second_weight_scores(w, g, h, out);
      return;
    case metric::wanda_cols:
      wanda_weight_scores(w, norms_cols, matrix_axis::cols, out);
      return;
    case metric::wanda_rows:
      wanda_weight_scores(w, norms_rows, matrix_axis::rows, out);
      return;
  }
}

/// Random shapes and layouts. `max_inner_stride` 1 keeps every line contiguous
/// (the explicit-SIMD kernels' layout); `long_lines` adds lines longer than a
/// kernel's float flush interval (4 × 64 vectors).
template <typename Scalar, int WeightOrder, int GradientOrder>
void check_random_shapes(std::uint32_t seed, simd_target target = simd_target::automatic, int max_inner_stride = 2,
                         bool long_lines = false) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> extent(1, 90), stride(1, max_inner_stride), padding(0, 3);
  for (int trial = 0; trial < 12; ++trial) {
    Eigen::Index rows = extent(rng), cols = extent(rng);
    if (long_lines && trial % 3 == 1) (WeightOrder == Eigen::RowMajor ? cols : rows) += 4200;
    // More than one accumulation chunk of rows now and then.
    const Eigen::Index tall_rows = trial % 4 == 0 ? rows + 300 : rows;
    strided_matrix<Scalar, WeightOrder> w(tall_rows, cols, stride(rng), padding(rng));
    strided_matrix<Scalar, GradientOrder> g(tall_rows, cols, stride(rng), padding(rng));
    strided_matrix<Scalar, WeightOrder> h(tall_rows, cols, stride(rng), padding(rng));
    w.fill_uniform(rng, -2, 2);
    g.fill_uniform(rng, -1, 1);
    h.fill_uniform(rng, -3, 3);
    std::uniform_real_distribution<double> positive(0, 4);
    score_vector<Scalar> norms_cols(cols), norms_rows(tall_rows);
    for (auto& v : norms_cols) v = static_cast<Scalar>(positive(rng));
    for (auto& v : norms_rows) v = static_cast<Scalar>(positive(rng));
    const reference_inputs in{w.values(), g.values(), h.values(), norms_cols.template cast<double>(),
                              norms_rows.template cast<double>()};

    for (metric m : all_metrics) {
      for (matrix_axis lines : {matrix_axis::rows, matrix_axis::cols}) {
        const Eigen::VectorXd expected = reference_line_scores(m, in, lines);
        const auto actual =
            library_line_scores(m, w.view(), g.view(), h.view(), norms_cols, norms_rows, lines, target);
        ASSERT_EQ(actual.size(), expected.size());
        for (Eigen::Index i = 0; i < expected.size(); ++i) {
          ASSERT_NEAR(static_cast<double>(actual[i]), expected[i], nashprune_test::sum_tolerance<Scalar>(expected[i]))
              << "metric " << static_cast<int>(m) << " line " << i << " trial " << trial;
        }
      }
      Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, GradientOrder> out(tall_rows, cols);
      library_weight_scores(m, w.view(), g.view(), h.view(), norms_cols, norms_rows, out);
      for (Eigen::Index r = 0; r < tall_rows; ++r)
        for (Eigen::Index c = 0; c < cols; ++c) {
          const double expected = reference_weight_score(m, in, r, c);
          ASSERT_NEAR(static_cast<double>(out(r, c)), expected, nashprune_test::sum_tolerance<Scalar>(expected));
        }
    }
  }
}

template <typename Scalar>
class ImportanceTyped : public ::testing::Test {};
using scalar_types = ::testing::Types<float, double>;
TYPED_TEST_SUITE(ImportanceTyped, scalar_types);

TYPED_TEST(ImportanceTyped, EveryMetricMatchesPlainLoopsOnStridedMatricesOfBothOrders) {
  check_random_shapes<TypeParam, Eigen::RowMajor, Eigen::RowMajor>(1);
  check_random_shapes<TypeParam, Eigen::ColMajor, Eigen::ColMajor>(2);
  check_random_shapes<TypeParam, Eigen::RowMajor, Eigen::ColMajor>(3);
  check_random_shapes<TypeParam, Eigen::ColMajor, Eigen::RowMajor>(4);
}

/// Every explicit-SIMD target this machine runs (forcing an unsupported one
/// falls back to a narrower one).
template <typename Scalar>
std::vector<simd_target> supported_targets() {
  std::vector<simd_target> out{simd_target::portable};
  for (simd_target t : {simd_target::avx2_fma, simd_target::avx512}) {
    if (detail::resolve_simd_target<Scalar>(t) == t) out.push_back(t);
  }
  return out;
}

TYPED_TEST(ImportanceTyped, EveryTargetMatchesPlainLoopsOnContiguousLinesWithTails) {
  for (simd_target target : supported_targets<TypeParam>()) {
    SCOPED_TRACE("target " + std::to_string(static_cast<int>(target)));
    // Same-order planes with contiguous lines reach the kernels; mixed orders fall back.
    check_random_shapes<TypeParam, Eigen::RowMajor, Eigen::RowMajor>(11, target, 1, true);
    check_random_shapes<TypeParam, Eigen::ColMajor, Eigen::ColMajor>(12, target, 1, true);
    check_random_shapes<TypeParam, Eigen::RowMajor, Eigen::ColMajor>(13, target, 1);
  }
}

TYPED_TEST(ImportanceTyped, ContiguousRefsAndBlocksAreScoredInPlace) {
  using Scalar = TypeParam;
  using row_major = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  std::mt19937 rng(5);
  std::uniform_real_distribution<double> dist(-1, 1);
  row_major big(40, 70);
  for (Eigen::Index r = 0; r < big.rows(); ++r)
    for (Eigen::Index c = 0; c < big.cols(); ++c) big(r, c) = static_cast<Scalar>(dist(rng));
  const Eigen::Ref<const row_major> block = big.block(3, 5, 30, 64);
  const Eigen::MatrixXd values = block.template cast<double>();
  const auto rows = magnitude_line_scores(block, matrix_axis::rows);
  const auto cols = magnitude_line_scores(big.block(3, 5, 30, 64), matrix_axis::cols, magnitude_norm::l2);
  for (Eigen::Index r = 0; r < 30; ++r) {
    EXPECT_NEAR(rows[r], values.row(r).cwiseAbs().sum(), nashprune_test::sum_tolerance<Scalar>(64));
  }
  for (Eigen::Index c = 0; c < 64; ++c) {
    EXPECT_NEAR(cols[c], values.col(c).squaredNorm(), nashprune_test::sum_tolerance<Scalar>(30));
  }
}

TYPED_TEST(ImportanceTyped, ImatrixStatisticsGiveRmsNormsAndHeadEnergy) {
  using Scalar = TypeParam;
  // attn_output columns of 3 heads of head_dim 5 (not a multiple of 32).
  score_vector<Scalar> sum_squares(15);
  for (Eigen::Index j = 0; j < 15; ++j) sum_squares[j] = static_cast<Scalar>(j * j + 1);
  const double tokens = 8;
  const auto norms = activation_norms(sum_squares, tokens);
  for (Eigen::Index j = 0; j < 15; ++j) EXPECT_NEAR(norms[j], std::sqrt((j * j + 1) / 8.0), 1e-6);
  const std::vector<index_range> heads{{0, 5}, {5, 5}, {10, 5}};
  const auto energy = activation_energy(sum_squares, tokens, heads);
  ASSERT_EQ(energy.size(), 3);
  for (int h = 0; h < 3; ++h) {
    double expected = 0;
    for (int j = 5 * h; j < 5 * h + 5; ++j) expected += (j * j + 1) / 8.0;
    EXPECT_NEAR(energy[h], expected, 1e-4);
  }
  // Wanda from the imatrix: the norms feed wanda_line_scores directly, and a
  // row vector of statistics works as well as a column.
  Eigen::Matrix<Scalar, 2, 15> w = Eigen::Matrix<Scalar, 2, 15>::Constant(Scalar(-2));
  const auto per_row =
      wanda_line_scores(w, activation_norms(sum_squares.transpose(), tokens), matrix_axis::cols, matrix_axis::rows);
  EXPECT_NEAR(per_row[0], 2 * static_cast<double>(norms.sum()), 1e-4);
}

TYPED_TEST(ImportanceTyped, RangesAggregateHeadsGroupsAndChannels) {
  using Scalar = TypeParam;
  // Qwen2.5-7B-like 7:1 grouping, scaled down: 14 q heads of head_dim 3, 2 kv heads.
  score_vector<Scalar> q_lines(42);
  for (Eigen::Index i = 0; i < 42; ++i) q_lines[i] = static_cast<Scalar>(i);
  std::vector<index_range> heads, groups;
  for (int h = 0; h < 14; ++h) heads.push_back({3 * h, 3});
  for (int g = 0; g < 2; ++g) groups.push_back({21 * g, 21});
  const auto per_head = range_scores(q_lines, heads);
  const auto per_group = range_scores(q_lines, groups);
  for (int h = 0; h < 14; ++h) EXPECT_DOUBLE_EQ(per_head[h], 9 * h + 3);
  EXPECT_DOUBLE_EQ(per_group[0], per_head.head(7).sum());
  EXPECT_DOUBLE_EQ(per_group[1], per_head.tail(7).sum());
  // Whole matrix = one range over every line.
  const std::vector<index_range> whole{{0, 42}};
  EXPECT_DOUBLE_EQ(range_scores(q_lines, whole)[0], 41 * 42 / 2);

  score_vector<Scalar> gate(4), up(4), down(4);
  gate << 1, 2, 3, 4;
  up << 10, 20, 30, 40;
  down << 100, 200, 300, 400;
  const auto channels = mlp_channel_scores(gate, up, down);
  for (int i = 0; i < 4; ++i) EXPECT_DOUBLE_EQ(channels[i], 111 * (i + 1));
}

struct layer_shape {
  const char* name;
  std::int64_t n_head, n_head_kv, head_dim, head_dim_v;
};
// MHA, Llama-3-8B 4:1, Qwen2.5-7B 7:1, and head dims that are not multiples of 32.
constexpr layer_shape layer_shapes[] = {{"mha", 12, 12, 64, 0},
                                        {"llama3-8b", 32, 8, 128, 0},
                                        {"qwen2.5-7b", 28, 4, 128, 0},
                                        {"odd-head-dim", 6, 2, 20, 12},
                                        {"tiny-mqa", 3, 1, 5, 0}};

TYPED_TEST(ImportanceTyped, HeadAndGroupScoresSumTheGeometrysSpans) {
  using Scalar = TypeParam;
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> dist(0, 1);
  const auto random_lines = [&](std::int64_t n) {
    score_vector<Scalar> v(n);
    for (auto& x : v) x = static_cast<Scalar>(dist(rng));
    return v;
  };
  for (const auto& shape : layer_shapes) {
    const attention_geometry geometry(shape.n_head, shape.n_head_kv, shape.head_dim, shape.head_dim_v);
    const std::int64_t d = shape.head_dim, dv = geometry.head_dim_v(), ratio = shape.n_head / shape.n_head_kv;
    attention_line_scores<Scalar> lines{random_lines(shape.n_head * d), random_lines(shape.n_head_kv * d),
                                        random_lines(shape.n_head_kv * dv), random_lines(shape.n_head * dv)};
    const auto heads = q_head_scores(geometry, lines);
    const auto groups = group_scores(geometry, lines);
    ASSERT_EQ(heads.size(), shape.n_head) << shape.name;
    ASSERT_EQ(groups.size(), shape.n_head_kv) << shape.name;
    std::vector<double> expected_groups(static_cast<std::size_t>(shape.n_head_kv), 0.0);
    for (std::int64_t h = 0; h < shape.n_head; ++h) {
      double expected = 0;
      for (std::int64_t i = h * d; i < (h + 1) * d; ++i) expected += lines.q[i];
      for (std::int64_t i = h * dv; i < (h + 1) * dv; ++i) expected += lines.o[i];
      EXPECT_NEAR(heads[h], expected, nashprune_test::sum_tolerance<Scalar>(expected)) << shape.name << " head " << h;
      expected_groups[static_cast<std::size_t>(h / ratio)] += expected;
    }
    for (std::int64_t g = 0; g < shape.n_head_kv; ++g) {
      double expected = expected_groups[static_cast<std::size_t>(g)];
      for (std::int64_t i = g * d; i < (g + 1) * d; ++i) expected += lines.k[i];
      for (std::int64_t i = g * dv; i < (g + 1) * dv; ++i) expected += lines.v[i];
      EXPECT_NEAR(groups[g], expected, nashprune_test::sum_tolerance<Scalar>(expected)) << shape.name << " group " << g;
    }
    // Leaving projections out: only q and o given.
    const attention_line_scores<Scalar> q_and_o{lines.q, {}, {}, lines.o};
    const auto partial = group_scores(geometry, q_and_o);
    for (std::int64_t g = 0; g < shape.n_head_kv; ++g) {
      EXPECT_NEAR(partial[g], expected_groups[static_cast<std::size_t>(g)],
                  nashprune_test::sum_tolerance<Scalar>(expected_groups[static_cast<std::size_t>(g)]));
    }
  }
}

TYPED_TEST(ImportanceTyped, GroupTaylorScoresOfRealWeightLayoutsMatchAPerWeightLoop) {
  // wq and wo of a 4:1 layer with head_dim 12 in both orientations: the heads
  // lie along structure_axis(role, orientation), and group scores summed from
  // line scores equal Σ|w·g| over each group's weights.
  using Scalar = TypeParam;
  const attention_geometry geometry(8, 2, 12);
  const std::int64_t n_embd = 40, d = 12;
  std::mt19937 rng(11);
  for (auto orientation : {matrix_orientation::out_by_in, matrix_orientation::in_by_out}) {
    const bool out_rows = orientation == matrix_orientation::out_by_in;
    const auto shape_of = [&](std::int64_t outputs, std::int64_t inputs) {
      return out_rows ? std::pair{outputs, inputs} : std::pair{inputs, outputs};
    };
    const auto [q_rows, q_cols] = shape_of(8 * d, n_embd);
    const auto [o_rows, o_cols] = shape_of(n_embd, 8 * d);
    strided_matrix<Scalar, Eigen::RowMajor> wq(q_rows, q_cols, 1, 3), gq(q_rows, q_cols, 2, 0);
    strided_matrix<Scalar, Eigen::ColMajor> wo(o_rows, o_cols, 1, 1), go(o_rows, o_cols, 1, 0);
    for (auto* m : {&wq, &gq}) m->fill_uniform(rng, -1, 1);
    for (auto* m : {&wo, &go}) m->fill_uniform(rng, -1, 1);
    attention_line_scores<Scalar> lines;
    lines.q = taylor_first_line_scores(wq.view(), gq.view(), structure_axis(tensor_role::q, orientation));
    lines.o = taylor_first_line_scores(wo.view(), go.view(), structure_axis(tensor_role::o, orientation));
    const auto groups = group_scores(geometry, lines);

    std::vector<double> expected(2, 0.0);
    const Eigen::MatrixXd q = wq.values().cwiseProduct(gq.values()).cwiseAbs();
    const Eigen::MatrixXd o = wo.values().cwiseProduct(go.values()).cwiseAbs();
    for (Eigen::Index r = 0; r < q.rows(); ++r)
      for (Eigen::Index c = 0; c < q.cols(); ++c)
        expected[static_cast<std::size_t>((out_rows ? r : c) / (4 * d))] += q(r, c);
    for (Eigen::Index r = 0; r < o.rows(); ++r)
      for (Eigen::Index c = 0; c < o.cols(); ++c)
        expected[static_cast<std::size_t>((out_rows ? c : r) / (4 * d))] += o(r, c);
    for (int g = 0; g < 2; ++g) {
      EXPECT_NEAR(groups[g], expected[static_cast<std::size_t>(g)],
                  nashprune_test::sum_tolerance<Scalar>(expected[static_cast<std::size_t>(g)]));
    }
  }
}

// ---------------------------------------------------------------------------
// Bad input.

TYPED_TEST(ImportanceTyped, MismatchedSizesAreRejectedNamingTheArgument) {
  using M = Eigen::Matrix<TypeParam, Eigen::Dynamic, Eigen::Dynamic>;
  const M w = M::Ones(4, 6), g = M::Ones(4, 5), h = M::Ones(3, 6);
  score_vector<TypeParam> norms = score_vector<TypeParam>::Ones(5);
  M out(4, 5);
  expect_error<std::invalid_argument>([&] { (void)taylor_first_line_scores(w, g, matrix_axis::rows); },
                                      {"'gradients'", "column count is 5, expected 6"});
  expect_error<std::invalid_argument>([&] { (void)taylor_second_line_scores(w, w, h, matrix_axis::rows); },
                                      {"'hessian_diagonal'", "row count is 3, expected 4"});
  expect_error<std::invalid_argument>([&] { (void)wanda_line_scores(w, norms, matrix_axis::cols, matrix_axis::rows); },
                                      {"'input_norms'", "size (one norm per input unit) is 5, expected 6"});
  expect_error<std::invalid_argument>([&] { magnitude_weight_scores(w, magnitude_norm::l1, out); },
                                      {"'out'", "column count is 5"});
  expect_error<std::invalid_argument>([&] { (void)mlp_channel_scores(norms, norms, w.col(0)); },
                                      {"'down_lines'", "size is 4, expected 5"});
}

TYPED_TEST(ImportanceTyped, NonFiniteWeightsAndStatisticsAreNamedWithTheirIndex) {
  using Scalar = TypeParam;
  using M = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const Scalar nan = std::numeric_limits<Scalar>::quiet_NaN();
  const Scalar inf = std::numeric_limits<Scalar>::infinity();
  M w = M::Ones(5, 7), g = M::Ones(5, 7), h = M::Ones(5, 7);
  M out(5, 7);
  w(2, 3) = nan;
  expect_error<std::domain_error>([&] { (void)magnitude_line_scores(w, matrix_axis::rows); },
                                  {"'weights'", "NaN at row 2, column 3"});
  expect_error<std::domain_error>([&] { (void)magnitude_line_scores(w, matrix_axis::cols, magnitude_norm::l2); },
                                  {"'weights'", "NaN at row 2, column 3"});
  expect_error<std::domain_error>([&] { magnitude_weight_scores(w, magnitude_norm::l1, out); },
                                  {"'weights'", "row 2, column 3"});
  w(2, 3) = 1;
  // An Inf gradient against a zero weight still yields NaN and is found.
  w(4, 1) = 0;
  g(4, 1) = -inf;
  for (auto lines : {matrix_axis::rows, matrix_axis::cols}) {
    expect_error<std::domain_error>([&] { (void)taylor_first_line_scores(w, g, lines); },
                                    {"'gradients'", "-Inf at row 4, column 1"});
    expect_error<std::domain_error>([&] { (void)taylor_second_line_scores(w, g, lines); },
                                    {"'gradients'", "-Inf at row 4, column 1"});
  }
  expect_error<std::domain_error>([&] { taylor_first_weight_scores(w, g, out); }, {"'gradients'", "row 4, column 1"});
  g(4, 1) = 1;
  h(0, 6) = inf;
  expect_error<std::domain_error>([&] { (void)taylor_second_line_scores(w, g, h, matrix_axis::rows); },
                                  {"'hessian_diagonal'", "+Inf at row 0, column 6"});
  expect_error<std::domain_error>([&] { taylor_second_weight_scores(w, g, h, out); },
                                  {"'hessian_diagonal'", "row 0, column 6"});

  score_vector<Scalar> norms = score_vector<Scalar>::Ones(7);
  norms[5] = nan;
  expect_error<std::domain_error>([&] { (void)wanda_line_scores(w, norms, matrix_axis::cols, matrix_axis::rows); },
                                  {"'input_norms'", "NaN at index 5"});
  norms[5] = -1;
  expect_error<std::domain_error>([&] { wanda_weight_scores(w, norms, matrix_axis::cols, out); },
                                  {"'input_norms'", "negative value", "index 5"});

  score_vector<Scalar> sum_squares = score_vector<Scalar>::Ones(6);
  sum_squares[4] = -0.5;
  const std::vector<index_range> heads{{0, 3}, {3, 3}};
  expect_error<std::domain_error>([&] { (void)activation_norms(sum_squares, 4); },
                                  {"'sum_squares'", "negative value", "index 4"});
  expect_error<std::domain_error>([&] { (void)activation_energy(sum_squares, 4, heads); },
                                  {"'sum_squares'", "index 4"});
  sum_squares[4] = inf;
  expect_error<std::domain_error>([&] { (void)activation_norms(sum_squares, 4); },
                                  {"'sum_squares'", "+Inf at index 4"});
  sum_squares[4] = 1;
  expect_error<std::domain_error>([&] { (void)activation_norms(sum_squares, 0); }, {"'token_count'", "got 0"});
  expect_error<std::domain_error>([&] { (void)activation_energy(sum_squares, -3, heads); }, {"'token_count'"});
  expect_error<std::domain_error>([&] { (void)activation_norms(sum_squares, std::nan("")); }, {"'token_count'", "NaN"});

  score_vector<Scalar> lines = score_vector<Scalar>::Ones(6);
  lines[2] = nan;
  expect_error<std::domain_error>([&] { (void)range_scores(lines, heads); }, {"'line_scores'", "NaN at index 2"});
}

TEST(Importance, FiniteInputsThatOverflowFloatAreReportedNotReturnedAsInf) {
  Eigen::MatrixXf w = Eigen::MatrixXf::Constant(3, 3, 1e30f);
  expect_error<std::domain_error>([&] { (void)magnitude_line_scores(w, matrix_axis::rows, magnitude_norm::l2); },
                                  {"'weights'", "overflows"});
  // The same values in double are fine.
  const Eigen::VectorXd ok = magnitude_line_scores(w.cast<double>(), matrix_axis::rows, magnitude_norm::l2);
  EXPECT_NEAR(ok[0] / 3e60, 1.0, 1e-6);
}

TEST(Importance, AttentionLineScoresMustMatchTheGeometry) {
  const attention_geometry geometry(8, 2, 4);
  attention_line_scores<double> lines{Eigen::VectorXd::Ones(32), Eigen::VectorXd::Ones(7), {}, {}};
  expect_error<std::invalid_argument>([&] { (void)group_scores(geometry, lines); }, {"'lines.k'", "is 7, expected 8"});
  lines.k = Eigen::VectorXd::Ones(8);
  lines.q[9] = std::numeric_limits<double>::infinity();
  expect_error<std::domain_error>([&] { (void)q_head_scores(geometry, lines); }, {"'lines.q'", "+Inf at index 9"});
}

TEST(Importance, BadRangesAreRejectedNamingTheRange) {
  const Eigen::VectorXd lines = Eigen::VectorXd::Ones(10);
  expect_error<std::invalid_argument>([&] { (void)range_scores(lines, std::vector<index_range>{}); },
                                      {"'ranges'", "empty list"});
  expect_error<std::invalid_argument>(
      [&] {
        (void)range_scores(lines, std::vector<index_range>{{0, 4}, {8, 3}});
      },
      {"'ranges'", "range [8, 11) at index 1 is outside [0, 10)"});
  expect_error<std::invalid_argument>(
      [&] {
        (void)range_scores(lines, std::vector<index_range>{{-1, 2}});
      },
      {"'ranges'", "index 0"});
  expect_error<std::invalid_argument>(
      [&] {
        (void)range_scores(lines, std::vector<index_range>{{2, 2}, {5, 0}});
      },
      {"'ranges'", "empty range [5, 5) at index 1"});
}

}  // namespace
