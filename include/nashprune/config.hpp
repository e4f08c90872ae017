// nashprune/config.hpp — version, namespace and error-reporting hooks shared by
// every nashprune header.
//
// Embedding: nashprune lives in a versioned inline namespace (as nlohmann/json
// does), so two engines that each copy a different nashprune version into one
// program do not violate the one-definition rule. Every error is raised through
// NASHPRUNE_THROW, which an embedder built without exceptions may redefine
// (for example to log and abort) before including any nashprune header.
#pragma once

#define NASHPRUNE_VERSION_MAJOR 0
#define NASHPRUNE_VERSION_MINOR 1
#define NASHPRUNE_VERSION_PATCH 0

#define NASHPRUNE_CONCAT_IMPL(a, b, c) v##a##_##b##_##c
#define NASHPRUNE_CONCAT(a, b, c) NASHPRUNE_CONCAT_IMPL(a, b, c)
#define NASHPRUNE_ABI_NAMESPACE \
  NASHPRUNE_CONCAT(NASHPRUNE_VERSION_MAJOR, NASHPRUNE_VERSION_MINOR, NASHPRUNE_VERSION_PATCH)

#define NASHPRUNE_BEGIN_NAMESPACE \
  namespace nashprune {           \
  inline namespace NASHPRUNE_ABI_NAMESPACE {
#define NASHPRUNE_END_NAMESPACE \
  }                             \
  }

#ifndef NASHPRUNE_THROW
#define NASHPRUNE_THROW(exception) throw exception
#endif

NASHPRUNE_BEGIN_NAMESPACE
/// The library version as a string, "major.minor.patch".
inline constexpr const char* version_string = "0.1.0";
NASHPRUNE_END_NAMESPACE
