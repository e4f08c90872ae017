// Tests for include/nashprune/config.hpp and the shared argument checks.
#include <nashprune/config.hpp>
#include <nashprune/detail/validate.hpp>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <limits>

using ::testing::HasSubstr;

TEST(Config, VersionStringMatchesMacros) {
  EXPECT_STREQ(nashprune::version_string, "0.1.0");
  EXPECT_EQ(NASHPRUNE_VERSION_MAJOR, 0);
  EXPECT_EQ(NASHPRUNE_VERSION_MINOR, 1);
}

TEST(Validate, NonFiniteEntryIsNamedByRowAndColumn) {
  Eigen::MatrixXf m = Eigen::MatrixXf::Ones(3, 4);
  m(2, 1) = std::numeric_limits<float>::quiet_NaN();
  try {
    nashprune::detail::require_finite("weights", m);
    FAIL() << "expected std::domain_error";
  } catch (const std::domain_error& e) {
    EXPECT_THAT(e.what(), HasSubstr("'weights'"));
    EXPECT_THAT(e.what(), HasSubstr("row 2, column 1"));
    EXPECT_THAT(e.what(), HasSubstr("NaN"));
  }
}

TEST(Validate, VectorEntryIsNamedByIndex) {
  Eigen::VectorXd v = Eigen::VectorXd::Ones(5);
  v(3) = -2.0;
  EXPECT_NO_THROW(nashprune::detail::require_finite("sums", v));
  try {
    nashprune::detail::require_finite_nonnegative("sums", v);
    FAIL() << "expected std::domain_error";
  } catch (const std::domain_error& e) {
    EXPECT_THAT(e.what(), HasSubstr("'sums'"));
    EXPECT_THAT(e.what(), HasSubstr("index 3"));
  }
}

TEST(Validate, SizeMismatchIsInvalidArgument) {
  EXPECT_THROW(nashprune::detail::require_size("keep", 3, 4), std::invalid_argument);
  EXPECT_NO_THROW(nashprune::detail::require_size("keep", 4, 4));
}
