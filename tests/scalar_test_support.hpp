// Helpers shared by the typed (float/double) tests of the selection and allocation headers.
#pragma once

#include <Eigen/Core>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <exception>
#include <string>

namespace nashprune_test {

using scalar_types = ::testing::Types<float, double>;

template <typename Scalar>
using vec = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;

/// Runs `call` and expects an exception whose message contains `fragment`.
template <typename Call>
void expect_error_containing(Call&& call, const std::string& fragment) {
  try {
    call();
    ADD_FAILURE() << "no error, expected one containing: " << fragment;
  } catch (const std::exception& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr(fragment));
  }
}

}  // namespace nashprune_test
