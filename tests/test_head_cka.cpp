// Tests for include/nashprune/head_cka.hpp.
#include <nashprune/head_cka.hpp>

#include <Eigen/QR>
#include <gtest/gtest.h>

#include "head_stream_test_support.hpp"

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

using namespace nashprune;
using nashprune_test::ColBlock;
using nashprune_test::name_of;
using nashprune_test::RowBlock;
using Eigen::Index;

namespace {

/// Token rows with per-column means in [-0.5, 0.5], so centring matters.
template <typename Scalar>
RowBlock<Scalar> random_block(Index tokens, Index columns, std::uint32_t seed) {
  return nashprune_test::random_block<Scalar>(tokens, columns, seed, 0.0, 0.5);
}

/// Plain-loop double reference: centre each column over all tokens, form the
/// d × d blocks X_iᵀ X_j and their squared Frobenius norms.
struct reference_cka {
  Eigen::MatrixXd cka;
  std::vector<Eigen::MatrixXd> blocks;  // blocks[i * n + j] = X_iᵀ X_j
  Index n;

  template <typename Derived>
  reference_cka(const Eigen::DenseBase<Derived>& x, Index n_head, Index d) : n(n_head) {
    const Index tokens = x.rows();
    Eigen::MatrixXd c(tokens, n * d);
    for (Index col = 0; col < n * d; ++col) {
      double mean = 0;
      for (Index t = 0; t < tokens; ++t) mean += static_cast<double>(x(t, col));
      mean /= static_cast<double>(tokens);
      for (Index t = 0; t < tokens; ++t) c(t, col) = static_cast<double>(x(t, col)) - mean;
    }
    Eigen::MatrixXd hs(n, n);
    for (Index i = 0; i < n; ++i) {
      for (Index j = 0; j < n; ++j) {
        Eigen::MatrixXd b = Eigen::MatrixXd::Zero(d, d);
        for (Index a = 0; a < d; ++a) {
          for (Index e = 0; e < d; ++e) {
            for (Index t = 0; t < tokens; ++t) b(a, e) += c(t, i * d + a) * c(t, j * d + e);
          }
        }
        double squared = 0;
        for (Index a = 0; a < d; ++a) {
          for (Index e = 0; e < d; ++e) squared += b(a, e) * b(a, e);
        }
        hs(i, j) = squared;
        blocks.push_back(b);
      }
    }
    cka.resize(n, n);
    for (Index i = 0; i < n; ++i) {
      for (Index j = 0; j < n; ++j) cka(i, j) = hs(i, j) / std::sqrt(hs(i, i) * hs(j, j));
    }
  }
  [[nodiscard]] const Eigen::MatrixXd& block(Index i, Index j) const {
    return blocks[static_cast<std::size_t>(i * n + j)];
  }
};

template <typename Scalar>
std::vector<simd_target> supported_targets() {
  return nashprune_test::supported_targets<head_cka<Scalar>>();
}

template <typename Scalar>
double tolerance() {
  return std::is_same_v<Scalar, float> ? 2e-6 : 1e-11;
}

double max_abs_difference(const Eigen::MatrixXd& a, const Eigen::MatrixXd& b) {
  return (a - b).cwiseAbs().maxCoeff();
}

}  // namespace

template <typename Scalar>
class HeadCka : public ::testing::Test {};
using Scalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(HeadCka, Scalars);

TYPED_TEST(HeadCka, MatchesDoubleReferenceOnRandomDataOnEveryTarget) {
  using S = TypeParam;
  // Widths n·d that are and are not multiples of the register tiles; token
  // counts that are and are not multiples of the vector widths.
  const std::vector<std::pair<Index, Index>> shapes{{1, 1}, {2, 3}, {3, 5}, {4, 8}, {5, 7}};
  for (simd_target target : supported_targets<S>()) {
    for (auto [n, d] : shapes) {
      for (Index tokens : {Index{9}, Index{64}, Index{203}}) {
        const auto x = random_block<S>(tokens, n * d, static_cast<std::uint32_t>(n * 1000 + d * 10 + tokens));
        head_cka<S> acc(n, d, {.target = target});
        acc.add_batch(x);
        const reference_cka ref(x, n, d);
        SCOPED_TRACE(name_of(target) + " n=" +
                     std::to_string(n) + " d=" + std::to_string(d) + " tokens=" + std::to_string(tokens));
        EXPECT_EQ(acc.target(), target);
        EXPECT_EQ(acc.tokens(), tokens);
        EXPECT_LT(max_abs_difference(acc.cka(), ref.cka), tolerance<S>());
        for (Index i = 0; i < n; ++i) {
          for (Index j = 0; j < n; ++j) {
            const double scale = ref.block(i, i).norm() + ref.block(j, j).norm();
            EXPECT_LT(max_abs_difference(acc.cross_covariance(i, j), ref.block(i, j)),
                      10 * tolerance<S>() * scale);
          }
        }
        EXPECT_FALSE(acc.dead_heads().any());
      }
    }
  }
}

// 260 columns over 1100 tokens: the kernel cuts the columns into blocks of 128
// (its L2 budget over a full panel), so tiles cross block edges and tails.
TYPED_TEST(HeadCka, WideLayersSpanningSeveralKernelBlocksMatchTheReference) {
  using S = TypeParam;
  const Index n = 20, d = 13, tokens = 1100;
  const auto x = random_block<S>(tokens, n * d, 59);
  const reference_cka ref(x, n, d);
  for (simd_target target : supported_targets<S>()) {
    SCOPED_TRACE(name_of(target));
    head_cka<S> acc(n, d, {.target = target});
    acc.add_batch(x);
    EXPECT_LT(max_abs_difference(acc.cka(), ref.cka), tolerance<S>());
    for (Index i : {Index{0}, Index{9}, Index{19}}) {
      const double scale = ref.block(i, i).norm() + ref.block(0, 0).norm();
      EXPECT_LT(max_abs_difference(acc.cross_covariance(i, 0), ref.block(i, 0)),
                10 * tolerance<S>() * scale);
    }
  }
}

TYPED_TEST(HeadCka, IsSymmetricBoundedAndOneOnTheDiagonal) {
  using S = TypeParam;
  const Index n = 6, d = 4;
  head_cka<S> acc(n, d);
  acc.add_batch(random_block<S>(150, n * d, 3));
  const Eigen::MatrixXd k = acc.cka();
  EXPECT_TRUE(k.isApprox(k.transpose(), 0.0));
  EXPECT_GE(k.minCoeff(), 0.0);
  EXPECT_LE(k.maxCoeff(), 1.0);
  for (Index i = 0; i < n; ++i) EXPECT_EQ(k(i, i), 1.0);
}

// CKA's defining invariance: a head that is another rotated and scaled has CKA 1
// with it, while the cosine of the flattened vectors does not see this.
TYPED_TEST(HeadCka, RotatedAndScaledCopyOfAHeadHasCkaOne) {
  using S = TypeParam;
  const Index d = 6, tokens = 300;
  const auto base = random_block<S>(tokens, 2 * d, 11);
  std::mt19937 rng(5);
  std::normal_distribution<double> normal;
  Eigen::MatrixXd gaussian(d, d);
  for (Index i = 0; i < gaussian.size(); ++i) gaussian.data()[i] = normal(rng);
  const Eigen::MatrixXd rotation = Eigen::HouseholderQR<Eigen::MatrixXd>(gaussian).householderQ();
  RowBlock<S> x(tokens, 3 * d);
  x.leftCols(2 * d) = base;
  x.rightCols(d) = (3.0 * base.leftCols(d).template cast<double>() * rotation).template cast<S>();
  head_cka<S> acc(3, d);
  acc.add_batch(x);
  const Eigen::MatrixXd k = acc.cka();
  EXPECT_NEAR(k(2, 0), 1.0, 10 * tolerance<S>());
  EXPECT_LT(k(1, 0), 0.2);  // independent heads: small
}

TYPED_TEST(HeadCka, SplitBatchesAndMergedAccumulatorsEqualOneBatch) {
  using S = TypeParam;
  const Index n = 4, d = 5, tokens = 97;
  const auto x = random_block<S>(tokens, n * d, 17);
  head_cka<S> whole(n, d);
  whole.add_batch(x);
  head_cka<S> first(n, d), second(n, d), sequential(n, d);
  first.add_batch(x.topRows(40));
  second.add_batch(x.bottomRows(tokens - 40));
  first.merge(second);
  sequential.add_batch(x.topRows(13));
  sequential.add_batch(x.middleRows(13, 50));
  sequential.add_batch(x.bottomRows(tokens - 63));
  for (const head_cka<S>* acc : {&first, &sequential}) {
    EXPECT_EQ(acc->tokens(), tokens);
    // Float batches round differently when cut elsewhere; double ones barely.
    EXPECT_LT(max_abs_difference(acc->cka(), whole.cka()), tolerance<S>());
    EXPECT_LT(max_abs_difference(acc->cross_covariance(2, 1), whole.cross_covariance(2, 1)),
              10 * tolerance<S>() * whole.cross_covariance(1, 1).norm());
  }
}

TYPED_TEST(HeadCka, ColumnMajorAndStridedLayoutsGiveTheSameResult) {
  using S = TypeParam;
  const Index n = 3, d = 7, tokens = 45;
  const RowBlock<S> x = random_block<S>(tokens, n * d, 23);
  head_cka<S> row_major(n, d);
  row_major.add_batch(x);
  const reference_cka ref(x, n, d);

  const ColBlock<S> col = x;
  head_cka<S> col_major(n, d);
  col_major.add_batch(col);  // read in place

  ColBlock<S> wide(tokens + 6, n * d + 2);
  wide.setConstant(std::numeric_limits<S>::quiet_NaN());  // outside the block: never read
  wide.block(3, 1, tokens, n * d) = x;
  head_cka<S> sub_block(n, d);
  sub_block.add_batch(wide.block(3, 1, tokens, n * d));

  RowBlock<S> twice(tokens, 2 * n * d);
  for (Index c = 0; c < n * d; ++c) twice.col(2 * c) = x.col(c);
  head_cka<S> inner_strided(n, d);
  inner_strided.add_batch(Eigen::Map<const RowBlock<S>, 0, Eigen::Stride<Eigen::Dynamic, 2>>(
      twice.data(), tokens, n * d, Eigen::Stride<Eigen::Dynamic, 2>(2 * n * d, 2)));

  for (const head_cka<S>* acc : {&row_major, &col_major, &sub_block, &inner_strided}) {
    EXPECT_EQ(acc->tokens(), tokens);
    EXPECT_LT(max_abs_difference(acc->cka(), ref.cka), tolerance<S>());
  }
}

TYPED_TEST(HeadCka, DeadAndConstantHeadsHaveZeroCkaAndAreFlagged) {
  using S = TypeParam;
  const Index n = 4, d = 3, tokens = 80;
  RowBlock<S> x = random_block<S>(tokens, n * d, 29);
  x.middleCols(1 * d, d).setZero();            // dead head
  x.middleCols(3 * d, d).setConstant(S(2.5));  // constant head: zero after centring
  head_cka<S> acc(n, d);
  acc.add_batch(x);
  const auto dead = acc.dead_heads();
  EXPECT_FALSE(dead(0));
  EXPECT_TRUE(dead(1));
  EXPECT_FALSE(dead(2));
  EXPECT_TRUE(dead(3));
  const Eigen::MatrixXd k = acc.cka();
  EXPECT_TRUE(k.allFinite());
  for (Index i : {Index{1}, Index{3}}) {
    EXPECT_EQ(k.row(i).cwiseAbs().maxCoeff(), 0.0);
    EXPECT_EQ(k.col(i).cwiseAbs().maxCoeff(), 0.0);
  }
  EXPECT_EQ(k(0, 0), 1.0);
  EXPECT_GT(k(2, 0), 0.0);
  // No token at all: every head dead, all zeros.
  const head_cka<S> empty(n, d);
  EXPECT_TRUE(empty.dead_heads().all());
  EXPECT_EQ(empty.cka().cwiseAbs().maxCoeff(), 0.0);
}

TYPED_TEST(HeadCka, NonFiniteActivationsThrowNamingTokenAndColumnAndLeaveItUnchanged) {
  using S = TypeParam;
  const Index n = 3, d = 4;
  RowBlock<S> x = random_block<S>(10, n * d, 31);
  head_cka<S> acc(n, d);
  acc.add_batch(x);
  const Eigen::MatrixXd before = acc.cka();
  x(6, 9) = std::numeric_limits<S>::infinity();
  x(8, 2) = std::numeric_limits<S>::quiet_NaN();
  try {
    acc.add_batch(x);
    FAIL() << "expected std::domain_error";
  } catch (const std::domain_error& e) {
    EXPECT_NE(std::string(e.what()).find("token 6, column 9 (head 2)"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("+Inf"), std::string::npos) << e.what();
  }
  EXPECT_EQ(acc.tokens(), 10);
  EXPECT_EQ(acc.cka(), before);
}

TYPED_TEST(HeadCka, NonFiniteTokensAreSkippedAndCountedByOption) {
  using S = TypeParam;
  const Index n = 3, d = 4, tokens = 30;
  RowBlock<S> x = random_block<S>(tokens, n * d, 37);
  RowBlock<S> finite(tokens - 2, n * d);
  finite << x.topRows(5), x.middleRows(6, 19), x.bottomRows(tokens - 26);
  x(5, 0) = std::numeric_limits<S>::quiet_NaN();
  x(25, n * d - 1) = -std::numeric_limits<S>::infinity();
  for (simd_target target : supported_targets<S>()) {
    head_cka<S> skipping(n, d, {.on_non_finite = non_finite_policy::skip_token, .target = target});
    skipping.add_batch(x);
    const ColBlock<S> col = x;
    skipping.add_batch(col);  // the column-major path skips too
    head_cka<S> clean(n, d, {.target = target});
    clean.add_batch(finite);
    clean.add_batch(finite);
    EXPECT_EQ(skipping.tokens(), 2 * (tokens - 2));
    EXPECT_EQ(skipping.skipped_tokens(), 4);
    EXPECT_LT(max_abs_difference(skipping.cka(), clean.cka()), 1e-12);
  }
}

TYPED_TEST(HeadCka, HugeFiniteActivationsNeverGiveInfOrNaN) {
  using S = TypeParam;
  const Index n = 2, d = 3;
  RowBlock<S> x = random_block<S>(40, n * d, 41);
  const reference_cka ref(x, n, d);
  x *= S(1e30);  // float products of these overflow; CKA is scale invariant
  head_cka<S> acc(n, d);
  acc.add_batch(x);
  EXPECT_TRUE(acc.second_moments().allFinite());
  EXPECT_LT(max_abs_difference(acc.cka(), ref.cka), tolerance<S>());
}

TYPED_TEST(HeadCka, BadShapesAndIndicesThrowInvalidArgument) {
  using S = TypeParam;
  EXPECT_THROW(head_cka<S>(0, 4), std::invalid_argument);
  EXPECT_THROW(head_cka<S>(2, 0), std::invalid_argument);
  head_cka<S> acc(2, 4);
  EXPECT_THROW(acc.add_batch(RowBlock<S>::Zero(3, 7)), std::invalid_argument);
  EXPECT_THROW(acc.merge(head_cka<S>(4, 2)), std::invalid_argument);
  EXPECT_THROW(acc.merge(head_cka<S>(2, 3)), std::invalid_argument);
  EXPECT_THROW((void)acc.cross_covariance(2, 0), std::invalid_argument);
  EXPECT_THROW((void)acc.cross_covariance(0, -1), std::invalid_argument);
  acc.add_batch(RowBlock<S>::Zero(0, 8));  // an empty batch is fine
  EXPECT_EQ(acc.tokens(), 0);
}

TEST(HeadCkaDouble, MagnitudesThatWouldOverflowDoubleThrowDomainError) {
  head_cka<double> acc(1, 2);
  RowBlock<double> x = RowBlock<double>::Ones(4, 2);
  x(2, 1) = 1e200;
  EXPECT_THROW(acc.add_batch(x), std::domain_error);
  EXPECT_EQ(acc.tokens(), 0);
}

TEST(HeadCkaMemory, IsQuadraticInTheLayerWidth) {
  EXPECT_EQ(head_cka<float>::memory_bytes(32, 128), (4096.0 * 4096.0 + 4096.0) * 8.0);
  const head_cka<float> acc(3, 5);
  EXPECT_EQ(acc.second_moments().rows(), 15);
  EXPECT_EQ(acc.second_moments().cols(), 15);
}

TEST(HeadCkaReset, ForgetsEverything) {
  head_cka<float> acc(2, 3, {.on_non_finite = non_finite_policy::skip_token});
  RowBlock<float> x = random_block<float>(20, 6, 43);
  x(4, 4) = std::numeric_limits<float>::quiet_NaN();
  acc.add_batch(x);
  acc.reset();
  EXPECT_EQ(acc.tokens(), 0);
  EXPECT_EQ(acc.skipped_tokens(), 0);
  EXPECT_EQ(acc.second_moments().cwiseAbs().maxCoeff(), 0.0);
  EXPECT_EQ(acc.sums().cwiseAbs().maxCoeff(), 0.0);
}
