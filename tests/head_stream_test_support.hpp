// Helpers shared by the tests of the streaming head statistics
// (test_head_redundancy.cpp, test_head_cka.cpp).
#pragma once

#include <nashprune/detail/head_stream.hpp>

#include <Eigen/Core>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace nashprune_test {

template <typename Scalar>
using RowBlock = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename Scalar>
using ColBlock = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;

/// tokens × columns of N(mean, 1) values; with column_spread > 0 each column is
/// further shifted by its own offset drawn from U(-column_spread, column_spread).
template <typename Scalar>
RowBlock<Scalar> random_block(Eigen::Index tokens, Eigen::Index columns, std::uint32_t seed,
                              double mean = 0.0, double column_spread = 0.0) {
  std::mt19937 rng(seed);
  std::vector<double> offsets(static_cast<std::size_t>(columns), 0.0);
  if (column_spread > 0) {
    std::uniform_real_distribution<double> offset(-column_spread, column_spread);
    for (double& o : offsets) o = offset(rng);
  }
  std::normal_distribution<double> normal(mean, 1.0);
  RowBlock<Scalar> x(tokens, columns);
  for (Eigen::Index t = 0; t < tokens; ++t) {
    for (Eigen::Index c = 0; c < columns; ++c) {
      x(t, c) = static_cast<Scalar>(normal(rng) + offsets[static_cast<std::size_t>(c)]);
    }
  }
  return x;
}

/// Every kernel target this machine runs for Accumulator (forcing an
/// unsupported one falls back, which is how it is detected).
template <typename Accumulator>
std::vector<nashprune::simd_target> supported_targets() {
  using nashprune::simd_target;
  std::vector<simd_target> out{simd_target::portable};
  for (simd_target t : {simd_target::avx2_fma, simd_target::avx512}) {
    if (Accumulator(1, 1, {.target = t}).target() == t) out.push_back(t);
  }
  return out;
}

inline std::string name_of(nashprune::simd_target t) {
  using nashprune::simd_target;
  switch (t) {
    case simd_target::automatic: return "automatic";
    case simd_target::portable: return "portable";
    case simd_target::avx2_fma: return "avx2_fma";
    case simd_target::avx512: return "avx512";
  }
  return "?";
}

}  // namespace nashprune_test
