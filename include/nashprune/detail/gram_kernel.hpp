// nashprune/detail/gram_kernel.hpp — the Gram accumulation kernel behind
// head_redundancy.hpp: G_ij += Σ x_i · x_j and s_i += Σ x_i over strided head vectors.
//
// Not part of the public API. A batch of activations is described by a
// gram_layout: head i's values sit in `slices` contiguous runs of `slice_length`
// elements, run a of head i starting at base + a·slice_stride + i·head_stride.
// A token-major (row-major) tokens × (n·d) block is slices = tokens, run = one
// head's d values; a column-major block is slices = d, run = one column's tokens.
// Both storage orders therefore reach the same kernel without a copy.
#pragma once

#include <Eigen/Core>

#include <cstdint>

#include "../config.hpp"

NASHPRUNE_BEGIN_NAMESPACE

/// The instruction set the Gram accumulation runs on. `automatic` picks the
/// widest one the CPU supports; the others force a target (tests, benchmarks)
/// and fall back to `portable` when the CPU or compiler lacks it.
enum class simd_target { automatic, portable, avx2_fma, avx512 };

namespace detail {

template <typename Scalar>
struct gram_layout {
  const Scalar* base = nullptr;
  Eigen::Index heads = 0;
  Eigen::Index head_stride = 0;
  Eigen::Index slices = 0;
  Eigen::Index slice_stride = 0;
  Eigen::Index slice_length = 0;

  [[nodiscard]] const Scalar* run(Eigen::Index head, Eigen::Index slice) const {
    return base + slice * slice_stride + head * head_stride;
  }
};

/// Portable kernel: products formed and summed in double, so it is the most
/// accurate target and the fallback on every machine. Adds the lower triangle
/// (i >= j) of the batch Gram into `gram` (column-major n × n) and the head sums
/// into `sums`.
template <typename Scalar>
void accumulate_gram_portable(const gram_layout<Scalar>& x, double* gram, double* sums) {
  const Eigen::Index n = x.heads;
  for (Eigen::Index a = 0; a < x.slices; ++a) {
    for (Eigen::Index i = 0; i < n; ++i) {
      const Scalar* xi = x.run(i, a);
      double sum_i = 0;
      for (Eigen::Index k = 0; k < x.slice_length; ++k) sum_i += static_cast<double>(xi[k]);
      sums[i] += sum_i;
      for (Eigen::Index j = 0; j <= i; ++j) {
        const Scalar* xj = x.run(j, a);
        double dot = 0;
        for (Eigen::Index k = 0; k < x.slice_length; ++k) {
          dot += static_cast<double>(xi[k]) * static_cast<double>(xj[k]);
        }
        gram[i + j * n] += dot;
      }
    }
  }
}

/// The target `requested` resolves to on this CPU for this scalar type.
template <typename Scalar>
[[nodiscard]] simd_target resolve_simd_target(simd_target /*requested*/) {
  return simd_target::portable;
}

/// Adds the batch's lower-triangle Gram and head sums, on `target` (already resolved).
template <typename Scalar>
void accumulate_gram(simd_target /*target*/, const gram_layout<Scalar>& x, double* gram,
                     double* sums) {
  accumulate_gram_portable(x, gram, sums);
}

}  // namespace detail
NASHPRUNE_END_NAMESPACE
