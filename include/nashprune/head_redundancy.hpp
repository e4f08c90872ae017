// nashprune/head_redundancy.hpp — streaming redundancy statistics between the
// attention heads of one layer (seed nash-head-pruning-llama-cpp.md §4.2).
//
// The Nash game's redundancy r_ij is the cosine similarity of heads i and j's
// output activations over a calibration set. Activations arrive batch by batch as
// a tokens × (n_head · head_dim) block, token-major as an inference engine holds
// the attention output before the output projection; head i of token t is
// x[t, i·d .. i·d + d). With head i flattened over all tokens into x_i ∈ R^N,
// N = tokens · head_dim, the accumulator keeps only
//     G_ij = Σ_t Σ_k x[t, i, k] · x[t, j, k]   (Gram matrix, n × n)
//     s_i  = Σ_t Σ_k x[t, i, k]                 (head sums, n)
// in double, i.e. n² + n numbers whatever the number of tokens, and reads out
//     norm_i      = sqrt(G_ii)
//     cosine_ij   = G_ij / (norm_i · norm_j)
//     correlation = Pearson correlation of x_i and x_j over their N entries:
//                   (G_ij − s_i s_j / N) / sqrt((G_ii − s_i² / N)(G_jj − s_j² / N)).
// Accumulators over disjoint batches merge by adding G, s and the counts, so a
// calibration set can be split across threads or processes.
//
// A head whose norm is zero (a dead head) has cosine 0 with every head, itself
// included, and is flagged by dead_heads(); a head with zero variance likewise
// has correlation 0. Neither ever produces NaN.
//
// Non-finite activations either throw std::domain_error naming the token and
// column (the default) or, with non_finite_policy::skip_token, drop that token
// and count it in skipped_tokens(). A batch that throws leaves the accumulator
// unchanged.
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

/// Streaming Gram / cosine / correlation accumulator for the heads of one layer.
/// Scalar is the activation type (float or double); statistics are kept in double.
template <typename Scalar = float>
class head_redundancy : public detail::head_stream<Scalar> {
  using base = detail::head_stream<Scalar>;
  using base::gram_;
  using base::sums_;

 public:
  using Index = Eigen::Index;

  head_redundancy(Index n_head, Index head_dim, head_redundancy_options options = {})
      : base(n_head, head_dim, options) {
    reset();
  }

  /// Adds a tokens × (n_head · head_dim) block (any storage order and outer
  /// stride; read in place when its inner stride is 1).
  template <typename Derived>
  void add_batch(const Eigen::DenseBase<Derived>& activations) {
    using Plain = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic,
                                Derived::IsRowMajor ? Eigen::RowMajor : Eigen::ColMajor>;
    this->require_batch(activations);
    const auto& x = activations.derived();
    if constexpr (static_cast<bool>(Eigen::internal::traits<Derived>::Flags &
                                    Eigen::DirectAccessBit)) {
      if (x.innerStride() == 1) {
        add_direct(Eigen::Map<const Plain, 0, Eigen::OuterStride<>>(
            x.data(), x.rows(), x.cols(), Eigen::OuterStride<>(x.outerStride())));
        return;
      }
    }
    // Expressions and inner-strided views have no run of contiguous values:
    // evaluate once (the batch, not the weights) and read that.
    const Plain evaluated = x;
    add_direct(Eigen::Map<const Plain, 0, Eigen::OuterStride<>>(
        evaluated.data(), evaluated.rows(), evaluated.cols(),
        Eigen::OuterStride<>(evaluated.outerStride())));
  }

  /// Adds another accumulator's batches (same n_head and head_dim).
  void merge(const head_redundancy& other) { this->merge_stream(other); }

  /// Forgets every batch.
  void reset() {
    this->reset_stream(this->n_head());
    batch_gram_.setZero(this->n_head(), this->n_head());
    batch_sums_.setZero(this->n_head());
  }

  /// Entries per flattened head vector: tokens() · head_dim().
  [[nodiscard]] std::int64_t reduction_length() const { return this->tokens() * this->head_dim(); }

  /// G_ij = <x_i, x_j>, symmetric n × n.
  [[nodiscard]] const Eigen::MatrixXd& gram() const { return gram_; }
  /// s_i = Σ of head i's entries.
  [[nodiscard]] const Eigen::VectorXd& sums() const { return sums_; }
  /// ||x_i|| = sqrt(G_ii).
  [[nodiscard]] Eigen::VectorXd norms() const { return gram_.diagonal().cwiseSqrt(); }
  /// Heads whose norm is zero (no accumulated token, or all-zero output).
  [[nodiscard]] Eigen::Array<bool, Eigen::Dynamic, 1> dead_heads() const {
    return gram_.diagonal().array() <= 0.0;
  }

  /// cosine_ij = G_ij / (||x_i|| ||x_j||), in [-1, 1]; 0 for a dead head.
  [[nodiscard]] Eigen::MatrixXd cosine() const {
    return normalised(gram_, gram_.diagonal());
  }

  /// Pearson correlation of x_i and x_j over their N entries; 0 for a head of
  /// zero variance (dead or constant).
  [[nodiscard]] Eigen::MatrixXd correlation() const {
    const double n = static_cast<double>(reduction_length());
    if (n <= 0) return Eigen::MatrixXd::Zero(this->n_head(), this->n_head());
    const Eigen::MatrixXd centred = gram_ - sums_ * sums_.transpose() / n;
    return normalised(centred, centred.diagonal());
  }

 private:
  /// M_ij / sqrt(v_i v_j), clamped to [-1, 1]; rows and columns with v <= 0 are 0.
  [[nodiscard]] static Eigen::MatrixXd normalised(const Eigen::MatrixXd& m,
                                                  const Eigen::VectorXd& v) {
    const Index n = m.rows();
    Eigen::VectorXd inv(n);
    for (Index i = 0; i < n; ++i) inv(i) = v(i) > 0 ? 1.0 / std::sqrt(v(i)) : 0.0;
    Eigen::MatrixXd out(n, n);
    for (Index j = 0; j < n; ++j) {
      for (Index i = 0; i < n; ++i) {
        out(i, j) = std::clamp(m(i, j) * inv(i) * inv(j), -1.0, 1.0);
      }
    }
    for (Index i = 0; i < n; ++i) out(i, i) = v(i) > 0 ? 1.0 : 0.0;
    return out;
  }

  template <int Order>
  using block_map = Eigen::Map<const Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Order>,
                               0, Eigen::OuterStride<>>;

  /// Layout of tokens [first, last) of a block for the kernel.
  template <int Order>
  [[nodiscard]] detail::gram_layout<Scalar> layout_of(const block_map<Order>& x, Index first,
                                                      Index last) const {
    detail::gram_layout<Scalar> l;
    l.heads = this->n_head();
    if constexpr (Order == Eigen::RowMajor) {
      l.base = x.data() + first * x.outerStride();
      l.head_stride = this->head_dim();
      l.slices = last - first;
      l.slice_stride = x.outerStride();
      l.slice_length = this->head_dim();
    } else {
      l.base = x.data() + first;
      l.head_stride = this->head_dim() * x.outerStride();
      l.slices = this->head_dim();
      l.slice_stride = x.outerStride();
      l.slice_length = last - first;
    }
    return l;
  }

  void accumulate_tokens(simd_target target, const detail::gram_layout<Scalar>& l) {
    if (l.slices == 0 || l.slice_length == 0) return;
    detail::accumulate_gram(target, l, batch_gram_.data(), batch_sums_.data());
  }

  [[nodiscard]] bool batch_is_finite() const {
    return batch_sums_.allFinite() && batch_gram_.diagonal().allFinite();
  }

  /// Redoes the batch over its runs of finite tokens; returns how many tokens
  /// held NaN/Inf (or throws naming the first, by policy).
  template <int Order>
  Index accumulate_finite_tokens(const block_map<Order>& x, simd_target target) {
    batch_gram_.setZero();
    batch_sums_.setZero();
    Index skipped = 0;
    Index run_start = 0;
    for (Index t = 0; t < x.rows(); ++t) {
      if (this->token_is_finite(x, t)) continue;
      accumulate_tokens(target, layout_of(x, run_start, t));
      run_start = t + 1;
      ++skipped;
    }
    accumulate_tokens(target, layout_of(x, run_start, x.rows()));
    return skipped;
  }

  template <int Order>
  void add_direct(const block_map<Order>& x) {
    batch_gram_.setZero();
    batch_sums_.setZero();
    const Index batch_tokens = x.rows();
    accumulate_tokens(this->target(), layout_of(x, 0, batch_tokens));
    Index skipped = 0;
    // NaN/Inf in the input always reach the batch sums, so the common finite
    // batch pays no separate scan; only a non-finite batch is searched.
    if (!batch_is_finite()) {
      skipped = accumulate_finite_tokens(x, this->target());
      // Finite inputs beyond ~1e19 overflow float products: form them in double.
      if (!batch_is_finite() && this->target() != simd_target::portable) {
        skipped = accumulate_finite_tokens(x, simd_target::portable);
      }
      if (!batch_is_finite()) {
        detail::fail_domain("activations",
                            "sums of squares overflow double (finite values too large)");
      }
    }
    // The kernel fills the lower triangle; mirror it into the symmetric total.
    for (Index j = 0; j < this->n_head(); ++j) {
      gram_(j, j) += batch_gram_(j, j);
      for (Index i = j + 1; i < this->n_head(); ++i) {
        gram_(i, j) += batch_gram_(i, j);
        gram_(j, i) += batch_gram_(i, j);
      }
    }
    sums_ += batch_sums_;
    this->count(batch_tokens - skipped, skipped);
  }

  Eigen::MatrixXd batch_gram_;  // scratch: one batch's lower triangle
  Eigen::VectorXd batch_sums_;
};

NASHPRUNE_END_NAMESPACE
