// nashprune/head_cka.hpp — streaming linear CKA between the attention heads of
// one layer (seed nash-head-pruning-llama-cpp.md §4.2): an optional redundancy
// measure beside the cosine of head_redundancy.hpp, invariant to rotations of a
// head's output where the cosine is not.
//
// Head i's output over N tokens is X_i ∈ R^{N × d} (rows: tokens), centred by
// subtracting its column means. Linear CKA (Kornblith et al. 2019, the
// Hilbert–Schmidt form) compares two heads as representations, invariant to
// rotations and isotropic scaling of either:
//     CKA(X_i, X_j) = ||X_jᵀ X_i||_F² / (||X_iᵀ X_i||_F · ||X_jᵀ X_j||_F)  ∈ [0, 1].
// Streaming it needs the d × d centred cross-covariance of every head pair,
// i.e. the whole (n·d) × (n·d) second-moment matrix of the token rows
//     M = Σ_t x_t x_tᵀ,  x_t ∈ R^{n·d} the token's row,  plus the sums s = Σ_t x_t,
// from which X_iᵀ X_j = M[i, j] − s_i s_jᵀ / N (the d × d block of heads i, j).
// Memory is therefore (n·d)² + n·d doubles, constant in the number of tokens
// but quadratic in the layer width: 128 MiB at n = 32, d = 128; 2 GiB at
// n = 128, d = 128 (memory_bytes() tells before constructing). No cheaper exact
// streaming form exists: ||X_jᵀ X_i||_F² is a norm of a sum over batches, not a
// sum of per-batch norms, and the token-kernel form tr(K_i K_j) needs N × N.
// head_redundancy.hpp's cosine (n² numbers) is the cheap measure; this is the
// exact, rotation-invariant one.
//
// Kernel: M is the Gram matrix of the n·d columns of the batch, so it runs on
// the same register-blocked SIMD kernel as head_redundancy (detail/
// gram_kernel.hpp), each column one "head" of length tokens. The kernel needs
// each column contiguous: a column-major batch is read in place; a token-major
// batch is transposed once into a scratch copy (O(tokens · n·d) copies against
// O(tokens · (n·d)²) multiply-adds). Work per token is d times that of the
// cosine Gram. Only M's lower triangle is kept.
//
// Dead heads: a head whose centred energy tr(X_iᵀ X_i) is at most
// relative_energy_floor (1e-5 for float input, at the kernel's rounding level;
// 1e-12 for double) times its raw energy Σ x² is dead or constant: CKA 0 with
// every head, itself included, flagged by dead_heads(), never NaN.
// Non-finite activations: as head_redundancy (throw naming token and column, or
// skip and count the token by option); a batch that throws leaves the
// accumulator unchanged.
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "config.hpp"
#include "detail/gram_kernel.hpp"
#include "detail/head_stream.hpp"
#include "detail/validate.hpp"
#include "simd_target.hpp"

NASHPRUNE_BEGIN_NAMESPACE

/// Options of head_cka: the same as head_redundancy's (non-finite policy, kernel target).
using head_cka_options = head_redundancy_options;

/// Streaming linear-CKA accumulator for the heads of one layer. Scalar is the
/// activation type (float or double); statistics are kept in double.
template <typename Scalar = float>
class head_cka : public detail::head_stream<Scalar> {
  using base = detail::head_stream<Scalar>;
  using base::gram_;  // M, the second moments
  using base::sums_;

 public:
  using Index = Eigen::Index;

  /// Centred energy below this fraction of the raw energy marks a head dead.
  static constexpr double relative_energy_floor = std::is_same_v<Scalar, float> ? 1e-5 : 1e-12;

  /// Bytes the statistics of an n_head × head_dim layer occupy: (n·d)² + n·d doubles.
  [[nodiscard]] static double memory_bytes(Index n_head, Index head_dim) {
    const double width = static_cast<double>(n_head) * static_cast<double>(head_dim);
    return (width * width + width) * static_cast<double>(sizeof(double));
  }

  head_cka(Index n_head, Index head_dim, head_cka_options options = {})
      : base(n_head, head_dim, options) {
    reset();
  }

  /// Adds a tokens × (n_head · head_dim) block (any storage order and strides).
  template <typename Derived>
  void add_batch(const Eigen::DenseBase<Derived>& activations) {
    this->require_batch(activations);
    const auto& x = activations.derived();
    std::vector<Index> kept;
    kept.reserve(static_cast<std::size_t>(x.rows()));
    for (Index t = 0; t < x.rows(); ++t) {
      if (this->token_is_finite(x, t)) kept.push_back(t);
    }
    const Index skipped = x.rows() - static_cast<Index>(kept.size());
    if constexpr (!Derived::IsRowMajor && static_cast<bool>(Eigen::internal::traits<Derived>::Flags &
                                                           Eigen::DirectAccessBit)) {
      if (skipped == 0 && x.innerStride() == 1) {
        if (x.rows() > 0) {
          accumulate(x.data(), x.rows(), x.outerStride(), x.cwiseAbs().maxCoeff());
        }
        this->count(x.rows(), 0);
        return;
      }
    }
    // Token-major (or strided, or with skipped tokens): one column-major copy.
    scratch_.resize(static_cast<Index>(kept.size()), this->width());
    for (Index r = 0; r < scratch_.rows(); ++r) {
      scratch_.row(r) = x.row(kept[static_cast<std::size_t>(r)]);
    }
    if (scratch_.rows() > 0) {
      accumulate(scratch_.data(), scratch_.rows(), scratch_.outerStride(),
                 scratch_.cwiseAbs().maxCoeff());
    }
    this->count(scratch_.rows(), skipped);
  }

  /// Adds another accumulator's batches (same n_head and head_dim).
  void merge(const head_cka& other) { this->merge_stream(other); }

  /// Forgets every batch.
  void reset() { this->reset_stream(this->width()); }

  /// Lower triangle of M = Σ_t x_t x_tᵀ, (n·d) × (n·d); the strict upper
  /// triangle is not maintained.
  [[nodiscard]] const Eigen::MatrixXd& second_moments() const { return gram_; }
  /// s = Σ_t x_t, n·d.
  [[nodiscard]] const Eigen::VectorXd& sums() const { return sums_; }

  /// X_iᵀ X_j on centred activations, d × d (a sum over tokens, not a mean).
  [[nodiscard]] Eigen::MatrixXd cross_covariance(Index i, Index j) const {
    const Index n = this->n_head(), d = this->head_dim();
    const std::string range = " out of range [0, " + std::to_string(n) + ")";
    detail::require(i >= 0 && i < n, "i", "head " + std::to_string(i) + range);
    detail::require(j >= 0 && j < n, "j", "head " + std::to_string(j) + range);
    Eigen::MatrixXd block(d, d);
    for (Index b = 0; b < d; ++b) {
      for (Index a = 0; a < d; ++a) block(a, b) = centred(i * d + a, j * d + b);
    }
    return block;
  }

  /// Heads whose centred activations carry no energy (dead or constant).
  [[nodiscard]] Eigen::Array<bool, Eigen::Dynamic, 1> dead_heads() const {
    const Index n = this->n_head(), d = this->head_dim();
    Eigen::Array<bool, Eigen::Dynamic, 1> dead(n);
    for (Index i = 0; i < n; ++i) {
      double raw = 0;
      double centred_energy = 0;
      for (Index r = i * d; r < (i + 1) * d; ++r) {
        raw += gram_(r, r);
        centred_energy += centred(r, r);
      }
      dead(i) = this->tokens() == 0 || centred_energy <= relative_energy_floor * raw;
    }
    return dead;
  }

  /// Linear CKA, n × n, symmetric, in [0, 1]; 1 on the diagonal of live heads,
  /// 0 in the rows and columns of dead heads.
  [[nodiscard]] Eigen::MatrixXd cka() const {
    const Index n = this->n_head();
    Eigen::MatrixXd hs(n, n);  // ||X_jᵀ X_i||_F², lower triangle
    for (Index i = 0; i < n; ++i) {
      for (Index j = 0; j <= i; ++j) hs(i, j) = squared_block_norm(i, j);
    }
    const auto dead = dead_heads();
    Eigen::MatrixXd out = Eigen::MatrixXd::Zero(n, n);
    for (Index i = 0; i < n; ++i) {
      if (dead(i)) continue;
      out(i, i) = 1.0;
      for (Index j = 0; j < i; ++j) {
        if (dead(j)) continue;
        const double value = std::clamp(hs(i, j) / std::sqrt(hs(i, i) * hs(j, j)), 0.0, 1.0);
        out(i, j) = value;
        out(j, i) = value;
      }
    }
    return out;
  }

 private:
  /// Entry (r, c) of the centred (n·d)² second-moment matrix, from the lower triangle.
  [[nodiscard]] double centred(Index r, Index c) const {
    const double raw = r >= c ? gram_(r, c) : gram_(c, r);
    const auto count = static_cast<double>(this->tokens());
    return count > 0 ? raw - sums_(r) * sums_(c) / count : 0.0;
  }

  [[nodiscard]] double squared_block_norm(Index i, Index j) const {
    const Index d = this->head_dim();
    double total = 0;
    for (Index b = 0; b < d; ++b) {
      for (Index a = 0; a < d; ++a) {
        const double v = centred(i * d + a, j * d + b);
        total += v * v;
      }
    }
    return total;
  }

  /// Adds the Gram of the n·d contiguous columns (column stride `stride`).
  void accumulate(const Scalar* data, Index rows, Index stride, Scalar max_abs) {
    const double magnitude = static_cast<double>(max_abs);
    if (magnitude > 1e100) {  // only double input reaches it
      detail::fail_domain("activations", "magnitude " + detail::describe_value(magnitude) +
                                             " too large: second moments would overflow double");
    }
    // Float partial sums overflow beyond gram_float_safe_magnitude; form those products in double.
    const bool huge = magnitude > detail::gram_float_safe_magnitude;
    detail::gram_layout<Scalar> l;
    l.base = data;
    l.heads = this->width();
    l.head_stride = stride;
    l.slices = 1;
    l.slice_stride = 0;
    l.slice_length = rows;
    detail::accumulate_gram(huge ? simd_target::portable : this->target(), l, gram_.data(),
                            sums_.data());
  }

  Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor> scratch_;
};

NASHPRUNE_END_NAMESPACE
