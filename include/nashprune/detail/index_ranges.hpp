// nashprune/detail/index_ranges.hpp — checks and arithmetic on lists of index ranges.
//
// Not part of the public API. A structure (a head, a GQA group, an MLP channel)
// occupies one or more runs of rows or columns, given as index_range values;
// scoring sums over them and slicing copies them. Both validate the ranges here.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "../config.hpp"
#include "../index_range.hpp"
#include "validate.hpp"

NASHPRUNE_BEGIN_NAMESPACE
namespace detail {

[[nodiscard]] inline std::string describe_range(const index_range& range) {
  return "[" + std::to_string(range.begin) + ", " + std::to_string(range.end()) + ")";
}

/// Every range non-empty and inside [0, extent); with `disjoint_ascending`, each
/// range also starts at or after the end of the one before it (so a gather keeps
/// the original order and copies nothing twice). Throws std::invalid_argument
/// naming the offending range's index.
inline void validate_ranges(std::string_view argument, std::span<const index_range> ranges, std::int64_t extent,
                            bool disjoint_ascending) {
  require(!ranges.empty(), argument, "empty list of ranges (nothing kept)");
  std::int64_t previous_end = 0;
  for (std::size_t i = 0; i < ranges.size(); ++i) {
    const index_range& r = ranges[i];
    // Built only for a message: gathers validate thousands of ranges per call.
    const auto where = [i] { return " at " + at_index(static_cast<std::int64_t>(i)); };
    if (r.size <= 0) fail_argument(argument, "empty range " + describe_range(r) + where());
    if (r.begin < 0 || r.begin > extent - r.size) {
      fail_argument(argument, "range " + describe_range(r) + where() + " is outside [0, " + std::to_string(extent) + ")");
    }
    if (disjoint_ascending && i > 0 && r.begin < previous_end) {
      fail_argument(argument, "range " + describe_range(r) + where() +
                                  " overlaps or precedes the range before it (duplicate or unsorted)");
    }
    previous_end = r.end();
  }
}

/// Number of indices the (validated) ranges cover.
[[nodiscard]] inline std::int64_t total_size(std::span<const index_range> ranges) {
  std::int64_t total = 0;
  for (const auto& r : ranges) total += r.size;
  return total;
}

}  // namespace detail
NASHPRUNE_END_NAMESPACE
