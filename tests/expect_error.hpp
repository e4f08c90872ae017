// Test support: runs `f` and checks that it throws `Exception` whose message
// contains every fragment (argument names, offending indices).
#pragma once

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <initializer_list>

namespace nashprune_test {

template <typename Exception, typename F>
void expect_error(F&& f, std::initializer_list<const char*> fragments) {
  try {
    f();
    ADD_FAILURE() << "no exception";
  } catch (const Exception& e) {
    for (const char* fragment : fragments) EXPECT_THAT(e.what(), ::testing::HasSubstr(fragment));
  }
}

}  // namespace nashprune_test
