// nashprune/index_range.hpp — a run of consecutive rows or columns, the unit in
// which a structure (a head, a GQA group, an MLP channel) occupies a tensor.
//
// A vocabulary header: it depends on config.hpp only, so the range checks under
// detail/ and the geometry, scoring and slicing headers can all include it.
#pragma once

#include <cstdint>

#include "config.hpp"

NASHPRUNE_BEGIN_NAMESPACE

/// A run of consecutive rows or columns: [begin, begin + size).
struct index_range {
  std::int64_t begin = 0;
  std::int64_t size = 0;
  [[nodiscard]] constexpr std::int64_t end() const { return begin + size; }
  friend constexpr bool operator==(const index_range&, const index_range&) = default;
};

NASHPRUNE_END_NAMESPACE
