// nashprune/detail/head_stream.hpp — what the streaming head statistics
// (head_redundancy.hpp, head_cka.hpp) share: the layer shape, the options, the
// token counts, the accumulated Gram matrix and sums, and the checks on a batch
// of a tokens × (n_head · head_dim) block.
//
// Not part of the public API, except the option types, which both public
// headers expose (as simd_dispatch.hpp exposes simd_target).
#pragma once

#include <Eigen/Core>

#include <cstdint>
#include <string>
#include <type_traits>

#include "../config.hpp"
#include "simd_dispatch.hpp"
#include "validate.hpp"

NASHPRUNE_BEGIN_NAMESPACE

/// What add_batch does with a token that holds NaN or ±Inf.
enum class non_finite_policy {
  throw_error,  ///< std::domain_error naming the first such token and column
  skip_token,   ///< leave the token out and count it in skipped_tokens()
};

struct head_redundancy_options {
  non_finite_policy on_non_finite = non_finite_policy::throw_error;
  /// Instruction set of the accumulation kernel; `automatic` is the widest the
  /// CPU supports. Forcing one exists for tests and benchmarks.
  simd_target target = simd_target::automatic;
};

namespace detail {

/// Base of the streaming head accumulators: shape, options, kernel target, counts,
/// and G = Σ_t x_t x_tᵀ and s = Σ_t x_t over the values x_t the accumulator
/// tracks per token (head_cka: the n·d activations; head_redundancy: one per head).
template <typename Scalar>
class head_stream {
  static_assert(std::is_floating_point_v<Scalar>, "activations are float or double");

 public:
  using Index = Eigen::Index;

  [[nodiscard]] Index n_head() const { return n_head_; }
  [[nodiscard]] Index head_dim() const { return head_dim_; }
  [[nodiscard]] const head_redundancy_options& options() const { return options_; }
  /// The instruction set add_batch runs on.
  [[nodiscard]] simd_target target() const { return target_; }
  /// Tokens accumulated (skipped ones excluded).
  [[nodiscard]] std::int64_t tokens() const { return tokens_; }
  /// Tokens left out because they held NaN or ±Inf (skip_token policy).
  [[nodiscard]] std::int64_t skipped_tokens() const { return skipped_tokens_; }

 protected:
  head_stream(Index n_head, Index head_dim, head_redundancy_options options)
      : n_head_(n_head), head_dim_(head_dim), options_(options) {
    require(n_head >= 1, "n_head", "must be at least 1, got " + std::to_string(n_head));
    require(head_dim >= 1, "head_dim", "must be at least 1, got " + std::to_string(head_dim));
    target_ = resolve_simd_target<Scalar>(options.target);
  }

  [[nodiscard]] Index width() const { return n_head_ * head_dim_; }

  template <typename Derived>
  void require_batch(const Eigen::DenseBase<Derived>& activations) const {
    static_assert(std::is_same_v<typename Derived::Scalar, Scalar>,
                  "activations must have the accumulator's scalar type");
    require_size("activations", activations.cols(), width(), "column count");
  }

  /// Whether token t of the batch is finite; throws naming it under throw_error.
  template <typename Derived>
  [[nodiscard]] bool token_is_finite(const Eigen::DenseBase<Derived>& x, Index t) const {
    return detail::token_is_finite("activations", x, t, head_dim_,
                                   options_.on_non_finite == non_finite_policy::throw_error);
  }

  /// Checks `other` has this layer's shape, then adds its counts, G and s.
  void merge_stream(const head_stream& other) {
    require_size("other", other.n_head_, n_head_, "n_head");
    require_size("other", other.head_dim_, head_dim_, "head_dim");
    tokens_ += other.tokens_;
    skipped_tokens_ += other.skipped_tokens_;
    gram_ += other.gram_;
    sums_ += other.sums_;
  }

  void count(Index tokens, Index skipped) {
    tokens_ += tokens;
    skipped_tokens_ += skipped;
  }

  /// Forgets every batch: no token, and G and s of `values` values per token zero.
  void reset_stream(Index values) {
    tokens_ = 0;
    skipped_tokens_ = 0;
    gram_.setZero(values, values);
    sums_.setZero(values);
  }

  Eigen::MatrixXd gram_;  // G
  Eigen::VectorXd sums_;  // s

 private:
  Index n_head_;
  Index head_dim_;
  head_redundancy_options options_;
  simd_target target_ = simd_target::portable;
  std::int64_t tokens_ = 0;
  std::int64_t skipped_tokens_ = 0;
};

}  // namespace detail
NASHPRUNE_END_NAMESPACE
