// Tests for include/nashprune/head_redundancy.hpp (and its kernel, detail/gram_kernel.hpp).
#include <nashprune/head_redundancy.hpp>

#include <gtest/gtest.h>

#include "head_stream_test_support.hpp"

#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <cstdlib>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

using namespace nashprune;
using nashprune_test::ColBlock;
using nashprune_test::name_of;
using nashprune_test::random_block;
using nashprune_test::RowBlock;
using Eigen::Index;

namespace {

/// Plain-loop double reference for the Gram matrix and head sums of a block.
struct reference_stats {
  Eigen::MatrixXd gram;
  Eigen::VectorXd sums;
  double entries = 0;  // reduction length N

  reference_stats(Index n_head, Index head_dim) : gram(Eigen::MatrixXd::Zero(n_head, n_head)),
                                                  sums(Eigen::VectorXd::Zero(n_head)),
                                                  head_dim_(head_dim) {}

  template <typename Derived>
  void add(const Eigen::DenseBase<Derived>& x) {
    const Index n = gram.rows();
    for (Index t = 0; t < x.rows(); ++t) {
      for (Index i = 0; i < n; ++i) {
        for (Index k = 0; k < head_dim_; ++k) sums(i) += static_cast<double>(x(t, i * head_dim_ + k));
        for (Index j = 0; j < n; ++j) {
          double dot = 0;
          for (Index k = 0; k < head_dim_; ++k) {
            dot += static_cast<double>(x(t, i * head_dim_ + k)) *
                   static_cast<double>(x(t, j * head_dim_ + k));
          }
          gram(i, j) += dot;
        }
      }
      entries += static_cast<double>(head_dim_);
    }
  }

  [[nodiscard]] Eigen::MatrixXd cosine() const {
    const Index n = gram.rows();
    Eigen::MatrixXd c(n, n);
    for (Index i = 0; i < n; ++i) {
      for (Index j = 0; j < n; ++j) c(i, j) = gram(i, j) / std::sqrt(gram(i, i) * gram(j, j));
    }
    return c;
  }

  [[nodiscard]] Eigen::MatrixXd correlation() const {
    const Index n = gram.rows();
    Eigen::MatrixXd cov(n, n);
    for (Index i = 0; i < n; ++i) {
      for (Index j = 0; j < n; ++j) {
        cov(i, j) = gram(i, j) / entries - (sums(i) / entries) * (sums(j) / entries);
      }
    }
    Eigen::MatrixXd r(n, n);
    for (Index i = 0; i < n; ++i) {
      for (Index j = 0; j < n; ++j) r(i, j) = cov(i, j) / std::sqrt(cov(i, i) * cov(j, j));
    }
    return r;
  }

 private:
  Index head_dim_;
};

/// max_ij |G_ij − R_ij| / sqrt(R_ii R_jj): the error relative to the entries'
/// natural scale (an off-diagonal entry may be near zero, its heads are not).
double gram_error(const Eigen::MatrixXd& g, const Eigen::MatrixXd& r) {
  double worst = 0;
  for (Index i = 0; i < r.rows(); ++i) {
    for (Index j = 0; j < r.cols(); ++j) {
      worst = std::max(worst, std::abs(g(i, j) - r(i, j)) / std::sqrt(r(i, i) * r(j, j)));
    }
  }
  return worst;
}

template <typename Scalar>
std::vector<simd_target> supported_targets() {
  return nashprune_test::supported_targets<head_redundancy<Scalar>>();
}

template <typename Scalar>
double tolerance() {
  return std::is_same_v<Scalar, float> ? 1e-6 : 1e-12;
}

}  // namespace

template <typename Scalar>
class HeadRedundancy : public ::testing::Test {};
using Scalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(HeadRedundancy, Scalars);

TYPED_TEST(HeadRedundancy, MatchesDoubleReferenceOnRandomDataOnEveryTarget) {
  using S = TypeParam;
  // Head counts and widths that are and are not multiples of the register tiles
  // and vector widths, so every tail path runs; 70 tokens fill one full panel
  // and part of another. 150 heads of 16 exceed the kernel's head block of 128
  // (its L2 budget over a full AVX-512 panel): tiles cross a block edge.
  const std::vector<std::pair<Index, Index>> shapes{{1, 1},  {3, 5},  {4, 16},   {5, 17},
                                                    {8, 64}, {9, 33}, {13, 128}, {150, 16}};
  const Index tokens = 70;
  for (simd_target target : supported_targets<S>()) {
    for (auto [n, d] : shapes) {
      const auto x = random_block<S>(tokens, n * d, static_cast<std::uint32_t>(n * 100 + d), 0.3);
      head_redundancy<S> acc(n, d, {.target = target});
      acc.add_batch(x);
      reference_stats ref(n, d);
      ref.add(x);
      SCOPED_TRACE(name_of(target) + " n=" + std::to_string(n) + " d=" + std::to_string(d));
      EXPECT_EQ(acc.target(), target);
      EXPECT_EQ(acc.tokens(), tokens);
      EXPECT_EQ(acc.reduction_length(), tokens * d);
      EXPECT_LT(gram_error(acc.gram(), ref.gram), tolerance<S>());
      EXPECT_LT((acc.sums() - ref.sums).cwiseAbs().maxCoeff(),
                tolerance<S>() * std::sqrt(ref.gram.diagonal().maxCoeff() * ref.entries));
      EXPECT_LT((acc.cosine() - ref.cosine()).cwiseAbs().maxCoeff(), 1e-6);
      EXPECT_LT((acc.correlation() - ref.correlation()).cwiseAbs().maxCoeff(), 1e-6);
      EXPECT_LT((acc.norms() - ref.gram.diagonal().cwiseSqrt()).cwiseAbs().maxCoeff(),
                tolerance<S>() * acc.norms().maxCoeff());
      EXPECT_TRUE(acc.gram().isApprox(acc.gram().transpose(), 0.0));
      EXPECT_FALSE(acc.dead_heads().any());
    }
  }
}

// A CPU without AVX-512 (or without AVX2) never gets a kernel it cannot run.
TEST(GramDispatch, ForcedTargetsFallBackToTheWidestTheCpuSupports) {
  using detail::choose_simd_target;
  const detail::cpu_features full{.avx2_fma = true, .avx512 = true};
  const detail::cpu_features no_avx512{.avx2_fma = true, .avx512 = false};
  const detail::cpu_features scalar_only{};
  EXPECT_EQ(choose_simd_target(simd_target::automatic, full), simd_target::avx512);
  EXPECT_EQ(choose_simd_target(simd_target::avx2_fma, full), simd_target::avx2_fma);
  EXPECT_EQ(choose_simd_target(simd_target::portable, full), simd_target::portable);
  EXPECT_EQ(choose_simd_target(simd_target::automatic, no_avx512), simd_target::avx2_fma);
  EXPECT_EQ(choose_simd_target(simd_target::avx512, no_avx512), simd_target::avx2_fma);
  for (simd_target t : {simd_target::automatic, simd_target::portable, simd_target::avx2_fma,
                        simd_target::avx512}) {
    EXPECT_EQ(choose_simd_target(t, scalar_only), simd_target::portable);
  }
  EXPECT_EQ(head_redundancy<double>(2, 2, {.target = simd_target::avx512}).target(),
            simd_target::portable);
}

TYPED_TEST(HeadRedundancy, AutomaticTargetIsTheWidestSupported) {
  using S = TypeParam;
  EXPECT_EQ(head_redundancy<S>(2, 2).target(), supported_targets<S>().back());
}

TYPED_TEST(HeadRedundancy, SplitBatchesAndMergedAccumulatorsEqualOneBatch) {
  using S = TypeParam;
  const Index n = 6, d = 24, tokens = 101;
  const auto x = random_block<S>(tokens, n * d, 7);
  for (simd_target target : supported_targets<S>()) {
    SCOPED_TRACE(name_of(target));
    head_redundancy<S> whole(n, d, {.target = target});
    whole.add_batch(x);
    head_redundancy<S> split(n, d, {.target = target});
    head_redundancy<S> first(n, d, {.target = target});
    head_redundancy<S> second(n, d, {.target = target});
    const std::vector<Index> cuts{0, 1, 2, 40, 40, 77, tokens};
    for (std::size_t c = 0; c + 1 < cuts.size(); ++c) {
      const auto part = x.middleRows(cuts[c], cuts[c + 1] - cuts[c]);
      split.add_batch(part);
      (c % 2 == 0 ? first : second).add_batch(part);
    }
    first.merge(second);
    for (const auto* other : {&split, &first}) {
      EXPECT_EQ(other->tokens(), tokens);
      EXPECT_LT(gram_error(other->gram(), whole.gram()), tolerance<S>());
      EXPECT_LT((other->cosine() - whole.cosine()).cwiseAbs().maxCoeff(), 1e-6);
      EXPECT_LT((other->sums() - whole.sums()).cwiseAbs().maxCoeff(), 1e-3);
    }
  }
}

TYPED_TEST(HeadRedundancy, StridedAndColumnMajorLayoutsReadInPlace) {
  using S = TypeParam;
  const Index n = 5, d = 12, tokens = 29;
  // A wider buffer: the block is a window of it (outer stride > columns).
  const auto wide = random_block<S>(tokens + 3, n * d + 7, 11);
  const auto window = wide.block(2, 3, tokens, n * d);
  const RowBlock<S> packed = window;
  const ColBlock<S> col_major = window;
  ColBlock<S> wide_col = ColBlock<S>::Zero(tokens + 9, n * d + 1);
  wide_col.block(4, 1, tokens, n * d) = window;
  for (simd_target target : supported_targets<S>()) {
    SCOPED_TRACE(name_of(target));
    head_redundancy<S> expected(n, d, {.target = target});
    expected.add_batch(packed);
    const auto check = [&](const auto& block) {
      head_redundancy<S> acc(n, d, {.target = target});
      acc.add_batch(block);
      EXPECT_LT(gram_error(acc.gram(), expected.gram()), tolerance<S>());
      EXPECT_LT((acc.sums() - expected.sums()).cwiseAbs().maxCoeff(), 1e-3);
    };
    check(window);                                         // row-major, outer stride
    check(col_major);                                      // column-major, packed
    check(wide_col.block(4, 1, tokens, n * d));            // column-major, outer stride
    check(Eigen::Map<const RowBlock<S>, 0, Eigen::OuterStride<>>(
        window.data(), tokens, n * d, Eigen::OuterStride<>(wide.outerStride())));
    // Inner stride 2 (every other column of a doubled buffer) and an expression.
    RowBlock<S> doubled(tokens, 2 * n * d);
    for (Index c = 0; c < n * d; ++c) doubled.col(2 * c) = packed.col(c);
    check(Eigen::Map<const RowBlock<S>, 0, Eigen::Stride<Eigen::Dynamic, 2>>(
        doubled.data(), tokens, n * d, Eigen::Stride<Eigen::Dynamic, 2>(2 * n * d, 2)));
    check(packed * S(1));
  }
}

// Adds the strided float batch at `start` (tokens × n·d, row- or column-major with
// outer stride `outer`) on every target and compares the Gram and sums with
// `reference`.
void expect_strided_batch_matches(const float* start, Index n, Index d, Index tokens, Index outer, bool row_major,
                                  const reference_stats& reference, const std::string& trace) {
  const Index width = n * d;
  for (simd_target target : supported_targets<float>()) {
    SCOPED_TRACE(name_of(target) + " " + trace);
    head_redundancy<float> acc(n, d, {.target = target});
    if (row_major) {
      acc.add_batch(Eigen::Map<const RowBlock<float>, 0, Eigen::OuterStride<>>(start, tokens, width, Eigen::OuterStride<>(outer)));
    } else {
      acc.add_batch(Eigen::Map<const ColBlock<float>, 0, Eigen::OuterStride<>>(start, tokens, width, Eigen::OuterStride<>(outer)));
    }
    EXPECT_LT(gram_error(acc.gram(), reference.gram), 1e-6);
    EXPECT_LT((acc.sums() - reference.sums).cwiseAbs().maxCoeff(), 1e-6 * static_cast<double>(tokens * d));
  }
}

// A float batch at every distance 0..16 floats past a 64-byte boundary, on every
// target: runs of whole vectors (a misaligned batch is then read as aligned
// vectors, joined across runs) and runs that are not (unaligned loads), row- and
// column-major, padded strides, several panels, column-chunked panels. The
// buffer ends at the block's last element, so a read past it shows under ASan.
TEST(HeadRedundancyMisaligned, EveryOffsetOnEveryTargetMatchesTheReference) {
  struct shape {
    Index n, d, tokens, padding;
    bool row_major;
    bool repeated_row = false;  // outer stride 0: every token reads the same row
  };
  const std::vector<shape> shapes{
      {5, 64, 40, 0, true},    // 4 vectors per run, 160 steps: three panels
      {3, 16, 70, 16, true},   // one vector per run, padded rows
      {4, 32, 9, 5, true},     // padding of no whole vector: unaligned loads
      {4, 24, 33, 0, true},    // runs of 1.5 AVX-512 vectors (3 AVX2 ones)
      {3, 8, 48, 0, false},    // column-major: runs of 48 tokens
      {2, 4, 2080, 16, false}, // column-major, runs cut into 1024-column panels
      {3, 32, 20, 0, true, true},
  };
  for (const shape& sh : shapes) {
    const Index width = sh.n * sh.d;
    RowBlock<float> values = random_block<float>(sh.tokens, width, 17, 0.3);
    if (sh.repeated_row) values.rowwise() = RowBlock<float>(values.row(0)).row(0);
    reference_stats reference(sh.n, sh.d);
    reference.add(values);
    const Index outer = sh.repeated_row ? 0 : (sh.row_major ? width : sh.tokens) + sh.padding;
    const Index inner_count = sh.row_major ? sh.tokens : width;
    const Index used = (inner_count - 1) * outer + (sh.row_major ? width : sh.tokens);
    for (Index offset = 0; offset <= 16; ++offset) {
      // posix_memalign: 64-byte aligned, and exactly the bytes asked for.
      void* memory = nullptr;
      ASSERT_EQ(posix_memalign(&memory, 64, static_cast<std::size_t>(offset + used) * sizeof(float)), 0);
      const std::unique_ptr<float, decltype(&std::free)> buffer(static_cast<float*>(memory), &std::free);
      float* start = buffer.get() + offset;
      for (Index t = 0; t < sh.tokens; ++t) {
        for (Index c = 0; c < width; ++c) {
          start[sh.row_major ? t * outer + c : c * outer + t] = values(t, c);
        }
      }
      expect_strided_batch_matches(start, sh.n, sh.d, sh.tokens, outer, sh.row_major, reference,
                                   "n=" + std::to_string(sh.n) + " d=" + std::to_string(sh.d) + " offset=" + std::to_string(offset));
    }
  }
}

// Every head count 1..40 on every target: every mix of full and partial diagonal
// tiles (4 heads on AVX-512, 3 on AVX2) and off-diagonal tiles (4 × 6 and 3 × 4,
// cut short by the tile row's diagonal), n not a multiple of any tile. Each count
// runs packed (runs of whole vectors at d = 16, a vector and a tail at d = 20)
// and as a strided, misaligned window of a larger buffer; 70 tokens make a full
// panel and part of the next.
TEST(HeadRedundancyTiles, EveryHeadCountUpToFortyPackedStridedAndMisaligned) {
  const Index tokens = 70;
  for (Index n = 1; n <= 40; ++n) {
    const Index d = n % 2 == 0 ? 16 : 20;
    const Index width = n * d;
    const RowBlock<float> x = random_block<float>(tokens, width, static_cast<std::uint32_t>(n), 0.2);
    reference_stats reference(n, d);
    reference.add(x);
    // The window: `offset` floats past a 64-byte boundary (posix_memalign), rows
    // padded by a whole vector (even n) or by 5 floats (odd n: unaligned runs).
    const Index offset = n % 16;
    const Index outer = width + (n % 2 == 0 ? 16 : 5);
    void* memory = nullptr;
    ASSERT_EQ(posix_memalign(&memory, 64,
                             static_cast<std::size_t>(offset + (tokens - 1) * outer + width) *
                                 sizeof(float)),
              0);
    const std::unique_ptr<float, decltype(&std::free)> buffer(static_cast<float*>(memory), &std::free);
    Eigen::Map<RowBlock<float>, 0, Eigen::OuterStride<>> window(buffer.get() + offset, tokens,
                                                                width, Eigen::OuterStride<>(outer));
    window = x;
    for (simd_target target : supported_targets<float>()) {
      SCOPED_TRACE(name_of(target) + " n=" + std::to_string(n) + " d=" + std::to_string(d));
      head_redundancy<float> packed(n, d, {.target = target});
      packed.add_batch(x);
      head_redundancy<float> strided(n, d, {.target = target});
      strided.add_batch(window);
      for (const auto* acc : {&packed, &strided}) {
        EXPECT_LT(gram_error(acc->gram(), reference.gram), 1e-6);
        EXPECT_LT((acc->sums() - reference.sums).cwiseAbs().maxCoeff(),
                  1e-6 * static_cast<double>(tokens * d));
      }
    }
  }
}

// Panels of all heads above detail::gram_prefetch_panel_bytes (or above half of
// it with runs detail::gram_prefetch_slice_bytes apart), where the kernel requests
// the next panel while computing the current one: the requests follow each run
// of the next panel (tails, unaligned starts, padded rows, column-major runs cut
// into column chunks), and the Gram must stay that of the reference.
TEST(HeadRedundancyTiles, LargePanelsRequestedAheadMatchTheReference) {
  struct shape {
    Index n, d, tokens, padding, offset;
    bool row_major;
  };
  const std::vector<shape> shapes{
      {33, 128, 20, 0, 0, true},    // rows of 16 KiB: requested from a 132 KiB panel
      {41, 100, 25, 5, 3, true},    // tails, unaligned runs, a panel and a half
      {37, 64, 40, 16, 4, true},    // misaligned by 4 floats, whole-vector padding
      {34, 16, 130, 0, 0, true},    // one vector per run, 64 runs per panel
      {40, 8, 2100, 3, 1, false},   // column-major: runs of 1024 columns, then a tail
  };
  for (const shape& sh : shapes) {
    const Index width = sh.n * sh.d;
    const RowBlock<float> x = random_block<float>(sh.tokens, width, static_cast<std::uint32_t>(sh.n), 0.2);
    reference_stats reference(sh.n, sh.d);
    reference.add(x);
    const Index outer = (sh.row_major ? width : sh.tokens) + sh.padding;
    const Index inner_count = sh.row_major ? sh.tokens : width;
    void* memory = nullptr;
    ASSERT_EQ(posix_memalign(&memory, 64,
                             static_cast<std::size_t>(sh.offset + inner_count * outer) * sizeof(float)),
              0);
    const std::unique_ptr<float, decltype(&std::free)> buffer(static_cast<float*>(memory), &std::free);
    float* start = buffer.get() + sh.offset;
    for (Index t = 0; t < sh.tokens; ++t) {
      for (Index c = 0; c < width; ++c) start[sh.row_major ? t * outer + c : c * outer + t] = x(t, c);
    }
    expect_strided_batch_matches(start, sh.n, sh.d, sh.tokens, outer, sh.row_major, reference,
                                 "n=" + std::to_string(sh.n) + " d=" + std::to_string(sh.d));
  }
}

TYPED_TEST(HeadRedundancy, DeadHeadsHaveZeroCosineAndCorrelationAndAreFlagged) {
  using S = TypeParam;
  const Index n = 7, d = 9;
  auto x = random_block<S>(20, n * d, 3);
  x.middleCols(2 * d, d).setZero();           // head 2: dead
  x.middleCols(5 * d, d).setConstant(S(3));   // head 5: alive, constant (zero variance)
  for (simd_target target : supported_targets<S>()) {
    SCOPED_TRACE(name_of(target));
    head_redundancy<S> acc(n, d, {.target = target});
    acc.add_batch(x);
    const auto dead = acc.dead_heads();
    for (Index i = 0; i < n; ++i) EXPECT_EQ(dead(i), i == 2) << i;
    const Eigen::MatrixXd cos = acc.cosine();
    const Eigen::MatrixXd cor = acc.correlation();
    EXPECT_TRUE(cos.allFinite());
    EXPECT_TRUE(cor.allFinite());
    for (Index j = 0; j < n; ++j) {
      EXPECT_EQ(cos(2, j), 0.0);
      EXPECT_EQ(cos(j, 2), 0.0);
      EXPECT_EQ(cor(2, j), 0.0);
      EXPECT_EQ(cor(5, j), 0.0);
      EXPECT_EQ(cor(j, 5), 0.0);
    }
    EXPECT_EQ(cos(5, 5), 1.0);
    EXPECT_EQ(cos(0, 0), 1.0);
    EXPECT_EQ(cor(0, 0), 1.0);
    EXPECT_LE(cos.cwiseAbs().maxCoeff(), 1.0);
  }
  // No batch at all: every head is dead, nothing is NaN.
  head_redundancy<S> empty(3, 4);
  EXPECT_TRUE(empty.dead_heads().all());
  EXPECT_TRUE(empty.cosine().isZero(0.0));
  EXPECT_TRUE(empty.correlation().isZero(0.0));
  empty.add_batch(RowBlock<S>(0, 12));
  EXPECT_EQ(empty.tokens(), 0);
}

TYPED_TEST(HeadRedundancy, NonFiniteActivationsThrowNamingTokenAndColumn) {
  using S = TypeParam;
  const Index n = 3, d = 8;
  for (S bad : {std::numeric_limits<S>::quiet_NaN(), std::numeric_limits<S>::infinity(),
                -std::numeric_limits<S>::infinity()}) {
    auto x = random_block<S>(10, n * d, 5);
    x(6, 19) = bad;
    x(8, 1) = bad;
    head_redundancy<S> acc(n, d);
    acc.add_batch(x.topRows(6));
    const Eigen::MatrixXd before = acc.gram();
    try {
      acc.add_batch(x);
      ADD_FAILURE() << "no exception";
    } catch (const std::domain_error& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("'activations'"), std::string::npos) << what;
      EXPECT_NE(what.find("token 6, column 19"), std::string::npos) << what;
      EXPECT_NE(what.find("head 2"), std::string::npos) << what;
    }
    // The failed batch left no trace.
    EXPECT_EQ(acc.tokens(), 6);
    EXPECT_TRUE(acc.gram().isApprox(before, 0.0));
    // Column-major storage reports the same position.
    const ColBlock<S> col = x;
    EXPECT_THROW(acc.add_batch(col), std::domain_error);
  }
}

TYPED_TEST(HeadRedundancy, NonFiniteTokensAreSkippedAndCountedByOption) {
  using S = TypeParam;
  const Index n = 4, d = 16, tokens = 50;
  auto x = random_block<S>(tokens, n * d, 9);
  const std::vector<Index> bad_tokens{0, 17, 18, 49};
  RowBlock<S> good(tokens - static_cast<Index>(bad_tokens.size()), n * d);
  for (Index t = 0, g = 0; t < tokens; ++t) {
    if (std::find(bad_tokens.begin(), bad_tokens.end(), t) != bad_tokens.end()) {
      x(t, (t * 7) % (n * d)) = t % 2 ? std::numeric_limits<S>::infinity()
                                      : std::numeric_limits<S>::quiet_NaN();
    } else {
      good.row(g++) = x.row(t);
    }
  }
  for (simd_target target : supported_targets<S>()) {
    SCOPED_TRACE(name_of(target));
    head_redundancy<S> skipping(n, d, {.on_non_finite = non_finite_policy::skip_token,
                                       .target = target});
    skipping.add_batch(x);
    const ColBlock<S> col = x;
    skipping.add_batch(col);
    head_redundancy<S> clean(n, d, {.target = target});
    clean.add_batch(good);
    clean.add_batch(good);
    EXPECT_EQ(skipping.skipped_tokens(), 8);
    EXPECT_EQ(skipping.tokens(), clean.tokens());
    EXPECT_LT(gram_error(skipping.gram(), clean.gram()), tolerance<S>());
    EXPECT_TRUE(skipping.gram().allFinite());
  }
}

TYPED_TEST(HeadRedundancy, BadShapesAndOptionsThrowInvalidArgument) {
  using S = TypeParam;
  EXPECT_THROW(head_redundancy<S>(0, 4), std::invalid_argument);
  EXPECT_THROW(head_redundancy<S>(4, 0), std::invalid_argument);
  EXPECT_THROW(head_redundancy<S>(-1, 4), std::invalid_argument);
  head_redundancy<S> acc(3, 4);
  try {
    acc.add_batch(RowBlock<S>::Zero(5, 13));
    ADD_FAILURE() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("'activations'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("13"), std::string::npos) << e.what();
  }
  EXPECT_THROW(acc.merge(head_redundancy<S>(4, 4)), std::invalid_argument);
  EXPECT_THROW(acc.merge(head_redundancy<S>(3, 5)), std::invalid_argument);
}

TYPED_TEST(HeadRedundancy, ResetForgetsEverything) {
  using S = TypeParam;
  head_redundancy<S> acc(2, 3, {.on_non_finite = non_finite_policy::skip_token});
  auto x = random_block<S>(4, 6, 1);
  x(0, 0) = std::numeric_limits<S>::quiet_NaN();
  acc.add_batch(x);
  EXPECT_EQ(acc.skipped_tokens(), 1);
  acc.reset();
  EXPECT_EQ(acc.tokens(), 0);
  EXPECT_EQ(acc.skipped_tokens(), 0);
  EXPECT_TRUE(acc.gram().isZero(0.0));
  EXPECT_TRUE(acc.sums().isZero(0.0));
}

namespace {

/// splitmix64: fast enough to draw 3 · 10^8 floats in a unit test.
struct fast_uniform {
  std::uint64_t state;
  float operator()() {
    std::uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return static_cast<float>(z >> 40) * (1.0f / 16777216.0f);  // [0, 1), 24 bits
  }
};

}  // namespace

// Reduction length 10^8 on random data: every target stays within 1e-6 of the
// double reference, where a plain float running sum is far off (checked too, so
// the test can fail). Values have a positive mean, the hard case for float sums.
TEST(HeadRedundancyNumerics, ReductionLengthOneHundredMillionWithinOneMillionth) {
  const Index n = 2, d = 64, tokens = 16384, batches = 96;  // N = 100,663,296
  std::vector<head_redundancy<float>> accs;
  for (simd_target t : supported_targets<float>()) accs.emplace_back(n, d, head_redundancy_options{.target = t});
  Eigen::MatrixXd ref_gram = Eigen::MatrixXd::Zero(n, n);
  float naive_g00 = 0;
  fast_uniform rng{42};
  RowBlock<float> x(tokens, n * d);
  for (Index b = 0; b < batches; ++b) {
    for (Index t = 0; t < tokens; ++t) {
      for (Index c = 0; c < n * d; ++c) x(t, c) = rng() + 0.25f * static_cast<float>(c / d);
    }
    for (auto& acc : accs) acc.add_batch(x);
    // Double reference with the heads as columns of a (tokens·d) × n view.
    for (Index i = 0; i < n; ++i) {
      for (Index j = 0; j <= i; ++j) {
        double dot = 0;
        for (Index t = 0; t < tokens; ++t) {
          const float* xi = &x(t, i * d);
          const float* xj = &x(t, j * d);
          for (Index k = 0; k < d; ++k) dot += static_cast<double>(xi[k]) * xj[k];
        }
        ref_gram(i, j) += dot;
        ref_gram(j, i) = ref_gram(i, j);
      }
    }
    for (Index t = 0; t < tokens; ++t) {
      for (Index k = 0; k < d; ++k) naive_g00 += x(t, k) * x(t, k);
    }
  }
  const double naive_error = std::abs(naive_g00 - ref_gram(0, 0)) / ref_gram(0, 0);
  EXPECT_GT(naive_error, 1e-3) << "a plain float sum should fail here";
  for (const auto& acc : accs) {
    SCOPED_TRACE(name_of(acc.target()));
    EXPECT_EQ(acc.reduction_length(), 100663296);
    EXPECT_LT(gram_error(acc.gram(), ref_gram), 1e-6);
  }
}

// One single batch of 10^8 entries per head (1,562,500 tokens that all alias one
// row through an outer stride of 0): the exact Gram is tokens × the row's Gram,
// so the check is cheap, and one add_batch must not lose precision inside itself.
// Five heads: full and partial register tiles on both SIMD targets. The portable
// target (double products and sums) is skipped here only to keep the sanitizer
// run short; it runs the random 10^8 case above.
TEST(HeadRedundancyNumerics, OneBatchOfOneHundredMillionEntriesPerHead) {
  const Index n = 5, d = 64, tokens = 1562500;
  const auto row = random_block<float>(1, n * d, 123, 1.0);
  reference_stats one(n, d);
  one.add(row);
  const Eigen::MatrixXd exact = one.gram * static_cast<double>(tokens);
  const Eigen::Map<const RowBlock<float>, 0, Eigen::OuterStride<>> repeated(
      row.data(), tokens, n * d, Eigen::OuterStride<>(0));
  for (simd_target t : supported_targets<float>()) {
    if (t == simd_target::portable) continue;
    SCOPED_TRACE(name_of(t));
    head_redundancy<float> acc(n, d, {.target = t});
    acc.add_batch(repeated);
    EXPECT_EQ(acc.reduction_length(), 100000000);
    EXPECT_LT(gram_error(acc.gram(), exact), 1e-6);
    EXPECT_LT((acc.sums() - one.sums * static_cast<double>(tokens)).cwiseAbs().maxCoeff() /
                  (one.sums.cwiseAbs().maxCoeff() * tokens),
              1e-6);
  }
}

// Finite activations whose squares overflow float (|x| > ~1.8e19) still give the
// right Gram on every target (the batch is redone with double products); squares
// that overflow double are a domain_error, never a silent Inf.
TYPED_TEST(HeadRedundancy, HugeFiniteActivationsNeverGiveInfOrNaN) {
  using S = TypeParam;
  const Index n = 3, d = 20;
  const S scale = std::is_same_v<S, float> ? S(1e20) : S(1e100);
  const RowBlock<S> x = random_block<S>(9, n * d, 77) * scale;
  reference_stats ref(n, d);
  ref.add(x);
  for (simd_target target : supported_targets<S>()) {
    SCOPED_TRACE(name_of(target));
    head_redundancy<S> acc(n, d, {.target = target});
    acc.add_batch(x);
    ASSERT_TRUE(acc.gram().allFinite());
    EXPECT_LT(gram_error(acc.gram(), ref.gram), tolerance<S>());
    EXPECT_EQ(acc.tokens(), 9);
  }
  if constexpr (std::is_same_v<S, double>) {
    head_redundancy<S> acc(n, d);
    const RowBlock<S> too_large = x * S(1e100);
    EXPECT_THROW(acc.add_batch(too_large), std::domain_error);
    EXPECT_EQ(acc.tokens(), 0);
  }
}
