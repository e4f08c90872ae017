// nashprune/detail/quantile.hpp — the linear-interpolation quantile.
//
// Not part of the public API. The seeds compute quantiles with numpy's and
// torch's default rule ("linear"): sort the n values, q maps to position
// q * (n - 1), and a fractional position interpolates between its two
// neighbours. H-GSP's automatic tau and the bit-allocation baseline share it.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

#include "../config.hpp"

NASHPRUNE_BEGIN_NAMESPACE
namespace detail {

/// The q-quantile (q in [0, 1]) of a non-empty list, numpy's "linear" method.
template <typename Scalar>
[[nodiscard]] Scalar linear_quantile(std::vector<Scalar> values, double q) {
  const std::size_t n = values.size();
  const double position = q * static_cast<double>(n - 1);
  const auto below = static_cast<std::size_t>(std::floor(position));
  const std::size_t above = std::min(below + 1, n - 1);
  std::nth_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(below), values.end());
  const Scalar low = values[below];
  Scalar high = low;
  if (above != below) {
    high = *std::min_element(values.begin() + static_cast<std::ptrdiff_t>(above), values.end());
  }
  const auto fraction = static_cast<Scalar>(position - static_cast<double>(below));
  return low + fraction * (high - low);
}

}  // namespace detail
NASHPRUNE_END_NAMESPACE
