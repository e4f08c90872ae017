// Tests for include/nashprune/moment_accumulator.hpp.
#include <nashprune/moment_accumulator.hpp>

#include <Eigen/Eigenvalues>
#include <gtest/gtest.h>

#include "expect_error.hpp"
#include "head_stream_test_support.hpp"

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <stdexcept>
#include <vector>

using namespace nashprune;
using nashprune_test::expect_error;
using nashprune_test::RowBlock;
using Eigen::Index;

namespace {

/// Plain-loop double reference: the mean, then the products of centred values.
struct reference_moments {
  Eigen::VectorXd mean;
  Eigen::MatrixXd covariance;

  template <typename Scalar>
  explicit reference_moments(const RowBlock<Scalar>& x) {
    const Index n = x.rows(), w = x.cols();
    mean = Eigen::VectorXd::Zero(w);
    for (Index t = 0; t < n; ++t) {
      for (Index c = 0; c < w; ++c) mean(c) += static_cast<double>(x(t, c));
    }
    mean /= static_cast<double>(n);
    covariance = Eigen::MatrixXd::Zero(w, w);
    for (Index t = 0; t < n; ++t) {
      for (Index i = 0; i < w; ++i) {
        for (Index j = 0; j < w; ++j) {
          covariance(i, j) += (static_cast<double>(x(t, i)) - mean(i)) * (static_cast<double>(x(t, j)) - mean(j));
        }
      }
    }
    covariance /= static_cast<double>(n);
  }
};

/// Largest |a_ij − b_ij| / (C_ii C_jj)^½ of the reference C: the error against the
/// scale the header's precision bound is stated in.
double scaled_error(const Eigen::MatrixXd& a, const Eigen::MatrixXd& reference) {
  double worst = 0;
  for (Index j = 0; j < a.cols(); ++j) {
    for (Index i = 0; i < a.rows(); ++i) {
      const double scale = std::sqrt(reference(i, i) * reference(j, j));
      worst = std::max(worst, std::abs(a(i, j) - reference(i, j)) / scale);
    }
  }
  return worst;
}

/// The rows in batches of random sizes (some empty), the first of `first` rows
/// (the first batch sets the accumulator's shift) unless `first` is 0.
template <typename Scalar>
moment_accumulator<Scalar> accumulate(const RowBlock<Scalar>& x, moment_accumulator_options options,
                                      std::uint32_t seed, Index first = 0) {
  moment_accumulator<Scalar> acc(x.cols(), options);
  std::mt19937 rng(seed);
  acc.add(x.topRows(first));
  for (Index t = first; t < x.rows();) {
    const Index take = std::min<Index>(static_cast<Index>(rng() % 200), x.rows() - t);
    acc.add(x.middleRows(t, take));
    t += take;
  }
  return acc;
}

}  // namespace

TEST(MomentAccumulator, EqualsThePlainLoopReference) {
  std::uint32_t seed = 1;
  for (const Index width : {1, 5, 37, 130}) {
    for (const Index batch_rows : {1, 7, 512}) {
      for (const int threads : {1, 2, 3}) {
        for (const auto target : {simd_target::portable, simd_target::automatic}) {
          SCOPED_TRACE(testing::Message() << "width " << width << ", batch_rows " << batch_rows << ", threads "
                                          << threads << ", target " << static_cast<int>(target));
          const auto x = nashprune_test::random_block<float>(700, width, ++seed, 0.3, 2.0);
          const reference_moments ref(x);
          auto acc = accumulate(x, {threads, batch_rows, target}, seed);
          EXPECT_EQ(acc.rows(), 700);
          const Eigen::VectorXd mean = acc.mean();
          const Eigen::MatrixXd covariance = acc.covariance();
          EXPECT_LE((mean - ref.mean).cwiseAbs().maxCoeff(), 1e-6);
          EXPECT_LE(scaled_error(covariance, ref.covariance), 2e-6);
        }
      }
    }
  }
}

TEST(MomentAccumulator, DoubleRowsEqualTheReferenceToDoubleRounding) {
  const auto x = nashprune_test::random_block<double>(333, 23, 9, -1.0, 3.0);
  const reference_moments ref(x);
  auto acc = accumulate(x, {2, 50, simd_target::automatic}, 4);
  EXPECT_LE((acc.mean() - ref.mean).cwiseAbs().maxCoeff(), 1e-13);
  EXPECT_LE(scaled_error(acc.covariance(), ref.covariance), 1e-13);
}

// Inputs whose mean is 1000 standard deviations: E[x xᵀ] − μ μᵀ cancels to a
// millionth of its terms. The shifted accumulation keeps the covariance to the
// float bound of the header; the same float products about the origin (flushed
// into double every 64 products, the kernel's scheme without the shift) lose it.
TEST(MomentAccumulator, LargeMeansCancelWithoutLoss) {
  const Index width = 24, rows = 4096;
  const auto x = nashprune_test::random_block<float>(rows, width, 17, 1000.0, 50.0);
  const reference_moments ref(x);
  for (const auto target : {simd_target::portable, simd_target::automatic}) {
    auto acc = accumulate(x, {2, 512, target}, 3);
    EXPECT_LE(scaled_error(acc.covariance(), ref.covariance), 2e-6);
    EXPECT_LE(((acc.mean() - ref.mean).array() / ref.mean.array()).abs().maxCoeff(), 1e-12);
  }
  Eigen::MatrixXd about_origin = Eigen::MatrixXd::Zero(width, width);
  for (Index i = 0; i < width; ++i) {
    for (Index j = 0; j < width; ++j) {
      for (Index t0 = 0; t0 < rows; t0 += 64) {
        float partial = 0;
        for (Index t = t0; t < std::min(rows, t0 + 64); ++t) partial += x(t, i) * x(t, j);
        about_origin(i, j) += partial;
      }
    }
  }
  const Eigen::MatrixXd unshifted = about_origin / static_cast<double>(rows) - ref.mean * ref.mean.transpose();
  EXPECT_GT(scaled_error(unshifted, ref.covariance), 1e-2);
}

// Each entry has one owner thread and the staging block, not the batches, sets
// the order of the sums: with the same first batch (the shift), the thread count
// and the later batch boundaries change no bit.
TEST(MomentAccumulator, ThreadsAndBatchSplitsGiveIdenticalResults) {
  const auto x = nashprune_test::random_block<float>(900, 300, 5, 0.0, 1.0);
  for (const auto target : {simd_target::portable, simd_target::automatic}) {
    auto one = accumulate(x, {1, 256, target}, 1, 100);
    const Eigen::MatrixXd expected = one.covariance();
    const Eigen::VectorXd expected_mean = one.mean();
    for (const int threads : {2, 3, 8}) {
      for (const std::uint32_t split : {2U, 3U}) {
        auto other = accumulate(x, {threads, 256, target}, split, 100);
        EXPECT_TRUE(other.covariance() == expected) << threads << " threads, split " << split;
        EXPECT_TRUE(other.mean() == expected_mean) << threads << " threads, split " << split;
      }
    }
  }
}

TEST(MomentAccumulator, CovarianceIsSymmetricPositiveSemidefiniteAndShiftInvariant) {
  const auto x = nashprune_test::random_block<float>(64, 40, 8, 0.0, 1.0);        // full rank
  const auto narrow = nashprune_test::random_block<float>(10, 40, 9, 0.0, 1.0);  // rank ≤ 9: singular C
  for (const auto* rows : {&x, &narrow}) {
    auto acc = accumulate(*rows, {2, 16, simd_target::automatic}, 2);
    const Eigen::MatrixXd c = acc.covariance();
    EXPECT_EQ(c, c.transpose());
    const Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> eig(c);
    EXPECT_GE(eig.eigenvalues().minCoeff(), -1e-6 * eig.eigenvalues().maxCoeff());
    RowBlock<float> moved = *rows;
    moved.rowwise() += Eigen::RowVectorXf::LinSpaced(40, -30.0F, 30.0F);
    auto moved_acc = accumulate(moved, {2, 16, simd_target::automatic}, 2);
    EXPECT_LE(scaled_error(moved_acc.covariance(), c), 1e-5);
    EXPECT_LE((moved_acc.mean() - acc.mean() - Eigen::VectorXd::LinSpaced(40, -30.0, 30.0)).cwiseAbs().maxCoeff(), 1e-5);
  }
}

TEST(MomentAccumulator, FinishFormsTheSameMomentsInPlace) {
  const auto x = nashprune_test::random_block<float>(300, 70, 12, 0.5, 1.0);
  auto acc = accumulate(x, {2, 128, simd_target::automatic}, 6);
  const Eigen::VectorXd mean = acc.mean();
  const Eigen::MatrixXd covariance = acc.covariance();
  Eigen::VectorXd finished_mean;
  Eigen::MatrixXd finished_covariance;
  std::move(acc).finish(finished_mean, finished_covariance);
  EXPECT_EQ(finished_mean, mean);
  EXPECT_EQ(finished_covariance, covariance);
}

// Float values whose products overflow float partial sums: the update forms
// them in double, so the result is the reference's.
TEST(MomentAccumulator, HugeFloatValuesAreFormedInDouble) {
  RowBlock<float> x = nashprune_test::random_block<float>(200, 9, 21, 0.0, 1.0);
  x *= 1e20F;
  const reference_moments ref(x);
  auto acc = accumulate(x, {1, 64, simd_target::automatic}, 1);
  const Eigen::MatrixXd c = acc.covariance();
  ASSERT_TRUE(c.allFinite());
  EXPECT_LE(scaled_error(c, ref.covariance), 1e-6);
}

// P and q in double; the staging block (batch_rows + 16 padding rows) and the shift in Scalar.
TEST(MomentAccumulator, MemoryBytesCountsTheTotalsAndTheStagingBlock) {
  EXPECT_EQ(moment_accumulator<float>::memory_bytes(100, {1, 512, simd_target::automatic}),
            8.0 * (100 * 100 + 100) + 4.0 * (512 + 16 + 1) * 100);
  EXPECT_EQ(moment_accumulator<double>::memory_bytes(3, {1, 2, simd_target::automatic}), 8.0 * 12 + 8.0 * (2 + 16 + 1) * 3);
}

TEST(MomentAccumulatorBadInput, WidthMismatchIsNamed) {
  moment_accumulator<float> acc(6);
  const RowBlock<float> wrong = RowBlock<float>::Ones(3, 5);
  expect_error<std::invalid_argument>([&] { acc.add(wrong); }, {"'rows'", "column count is 5, expected 6"});
  EXPECT_EQ(acc.rows(), 0);
}

TEST(MomentAccumulatorBadInput, NonFiniteValuesAreNamedAndLeaveNoTrace) {
  const auto x = nashprune_test::random_block<float>(50, 8, 3, 0.0, 1.0);
  for (const float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                          -std::numeric_limits<float>::infinity()}) {
    moment_accumulator<float> acc(8, {2, 16, simd_target::automatic});
    acc.add(x.topRows(20));
    RowBlock<float> poisoned = x.bottomRows(30);
    poisoned(4, 6) = bad;
    expect_error<std::domain_error>([&] { acc.add(poisoned); }, {"'rows'", "non-finite value", "row 4, column 6"});
    EXPECT_EQ(acc.rows(), 20);
    moment_accumulator<float> clean(8, {2, 16, simd_target::automatic});
    clean.add(x.topRows(20));
    EXPECT_EQ(acc.covariance(), clean.covariance());
    EXPECT_EQ(acc.mean(), clean.mean());
  }
  // A poisoned first batch does not fix the shift either.
  moment_accumulator<float> fresh(8);
  RowBlock<float> first = x.topRows(5);
  first(0, 0) = std::numeric_limits<float>::quiet_NaN();
  expect_error<std::domain_error>([&] { fresh.add(first); }, {"'rows'", "row 0, column 0"});
  fresh.add(x);
  EXPECT_LE(scaled_error(fresh.covariance(), reference_moments(x).covariance), 2e-6);
}

TEST(MomentAccumulatorBadInput, OverflowingValuesAreNamed) {
  moment_accumulator<double> acc(3);
  Eigen::Matrix<double, 2, 3, Eigen::RowMajor> x = Eigen::Matrix<double, 2, 3, Eigen::RowMajor>::Zero();
  x(1, 2) = 1e200;
  expect_error<std::domain_error>([&] { acc.add(x); }, {"'rows'", "too large", "row 1, column 2"});
  EXPECT_EQ(acc.rows(), 0);
  // Float values beyond half of float's largest: their difference from the shift could overflow.
  moment_accumulator<float> floats(2);
  Eigen::Matrix<float, 1, 2> first{1e38F, -1e38F};
  floats.add(first);
  Eigen::Matrix<float, 1, 2> large{-1e38F, 2e38F};
  expect_error<std::domain_error>([&] { floats.add(large); }, {"'rows'", "too large", "row 0, column 1"});
  EXPECT_EQ(floats.rows(), 1);
}

TEST(MomentAccumulatorBadInput, BadShapesOptionsAndEmptyStreamsAreNamed) {
  expect_error<std::invalid_argument>([] { moment_accumulator<float> acc(0); }, {"'width'", "at least 1"});
  expect_error<std::invalid_argument>([] { moment_accumulator<float> acc(4, {0, 512, simd_target::automatic}); },
                                      {"'options.threads'"});
  expect_error<std::invalid_argument>([] { moment_accumulator<float> acc(4, {1, 0, simd_target::automatic}); },
                                      {"'options.batch_rows'"});
  moment_accumulator<float> acc(4);
  acc.add(RowBlock<float>(0, 4));
  expect_error<std::domain_error>([&] { (void)acc.mean(); }, {"'rows'", "no row"});
  expect_error<std::domain_error>([&] { (void)acc.covariance(); }, {"'rows'", "no row"});
}
