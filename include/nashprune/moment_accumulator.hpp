// nashprune/moment_accumulator.hpp — the mean and covariance of a stream of row
// batches (one row per token, one column per feature), as compensation.hpp needs
// them for the input of a linear map: μ = E[x] and C = E[x xᵀ] − μ μᵀ.
//
// Math. Rows x_1 … x_N ∈ R^w arrive in batches of any size. The accumulator keeps
//     P = Σ_t (x_t − s)(x_t − s)ᵀ  (lower triangle)  and  q = Σ_t (x_t − s)
// about a fixed shift s, the column means of the first batch, and returns
//     μ = s + q / N,   C = P / N − m mᵀ  with  m = q / N = μ − s,
// the population covariance (divided by N). Memory is w² + w doubles for P and q,
// constant in N, plus a staging block of batch_rows × w values: rows are copied
// there (shifted, column-major) until it is full, and P is then updated with the
// whole block at once, a rank-batch_rows update. The update is the Gram kernel of
// head_redundancy.hpp and head_cka.hpp (detail/gram_kernel.hpp) over the block's
// w columns, its column blocks shared among `threads` threads (each Gram column
// has one owner, so the threads write disjoint memory). A larger block reads and
// writes P, w² doubles, fewer times per row: at w = 14336 (Llama-3-8B's FFN) P is
// 1.6 GB, and with 512 rows per update it is touched once per 512 rows.
//
// Precision (float rows). u = 2⁻²⁴ is float's unit roundoff.
//  - The shifted values are rounded once: fl(x − s) = (x − s)(1 + δ), |δ| ≤ u, an
//    error relative to the shifted value itself, however large x and s are.
//  - Each entry of P gains, per update, a sum of products formed in float, summed
//    in float vector lanes for at most 64 products (detail::gram_steps_per_flush)
//    and then pairwise across at most 16 lanes before it is added to the double
//    total. Its error is therefore at most γ ≈ 70u ≈ 4.2e-6 times Σ_t |x'_ti x'_tj|
//    ≤ (P_ii P_jj)^½ (Cauchy–Schwarz), whatever N: the float part never grows
//    with the stream, and double addition adds ~N/batch_rows · 2⁻⁵³ (nothing).
//  - Since P / N = C + m mᵀ, the error of C_ij is at most γ ((C_ii + m_i²)(C_jj +
//    m_j²))^½: relative to the scale (C_ii C_jj)^½, a factor (1 + m_i²/C_ii)^½ ·
//    (1 + m_j²/C_jj)^½. With s the first batch's mean, m is that estimate's error,
//    a fraction of the spread, and the factor stays near 1. Without the shift
//    (s = 0) the factor is 1 + μ²/σ²: forming E[x xᵀ] − μ μᵀ from float products of
//    inputs whose mean is 100 standard deviations loses everything (1e4 · γ = 4 %),
//    which the shift avoids; test_moment_accumulator.cpp measures both against a
//    double reference.
//  - The bound is a worst case; random rounding errors grow like √64 · u ≈ 5e-7.
//    Statistics are stored as float (u relative per value), and compensation
//    damps H by 1e-3 of its mean diagonal: both are far above it.
//  - Shifted values above 1e18 would overflow float partial sums of 64 products:
//    an update holding one forms its products in double instead (as head_cka.hpp).
// Double rows: products are formed and summed in double (the portable kernel).
//
// Bad input: a batch whose column count is not w (std::invalid_argument naming
// `rows`), or that holds NaN or ±Inf, or a value whose difference from the shift
// could overflow (beyond half of float's largest value for float rows, 1e150 for
// double rows) (std::domain_error naming `rows`, the row and the column). A batch that
// throws leaves the accumulator unchanged.
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <system_error>
#include <thread>
#include <type_traits>
#include <vector>

#include "config.hpp"
#include "detail/gram_kernel.hpp"
#include "detail/simd_dispatch.hpp"
#include "detail/validate.hpp"
#include "simd_target.hpp"

NASHPRUNE_BEGIN_NAMESPACE

struct moment_accumulator_options {
  /// Threads of each update of P (the calling thread is one of them).
  int threads = 1;
  /// Rows staged before P is updated with them at once.
  Eigen::Index batch_rows = 512;
  /// Instruction set of the update kernel; `automatic` is the widest the CPU
  /// supports. Forcing one exists for tests and benchmarks.
  simd_target target = simd_target::automatic;
};

/// Streaming mean and covariance of rows of width w. Scalar is the row type
/// (float or double); the totals are kept in double.
template <typename Scalar = float>
class moment_accumulator {
  static_assert(std::is_floating_point_v<Scalar>, "rows are float or double");

 public:
  using Index = Eigen::Index;

  /// γ of the precision argument above: with float rows, each entry of P is within
  /// γ·(P_ii P_jj)^½ of its exact value (64 products in a lane, up to 16 lanes summed
  /// pairwise, the conversions); with double rows the error is far below it.
  static constexpr double entry_error = 70.0 * 0x1p-24;

  /// Bytes an accumulator of width w holds: P and q in double, the shift and the
  /// staging block in Scalar.
  [[nodiscard]] static double memory_bytes(Index width, const moment_accumulator_options& options = {}) {
    const auto w = static_cast<double>(width);
    return (w * w + w) * sizeof(double) +
           (static_cast<double>(options.batch_rows + staging_padding) + 1) * w * sizeof(Scalar);
  }

  explicit moment_accumulator(Index width, moment_accumulator_options options = {})
      : width_(width), options_(options) {
    detail::require(width >= 1, "width", "must be at least 1, got " + std::to_string(width));
    detail::require(options.threads >= 1, "options.threads",
                    "must be at least 1, got " + std::to_string(options.threads));
    detail::require(options.batch_rows >= 1, "options.batch_rows",
                    "must be at least 1, got " + std::to_string(options.batch_rows));
    target_ = detail::resolve_simd_target<Scalar>(options.target);
    // Only the lower triangle is accumulated; the upper one is written by finish().
    product_.resize(width, width);
    product_.template triangularView<Eigen::Lower>().setZero();
    sums_.setZero(width);
    staged_.resize(options.batch_rows + staging_padding, width);
  }

  [[nodiscard]] Index width() const { return width_; }
  /// Rows added so far (staged ones included).
  [[nodiscard]] std::int64_t rows() const { return rows_ + staged_rows_; }
  /// The instruction set of the update kernel.
  [[nodiscard]] simd_target target() const { return target_; }

  /// Adds a batch of rows × w (any storage order and strides).
  template <typename Derived>
  void add(const Eigen::DenseBase<Derived>& batch) {
    static_assert(std::is_same_v<typename Derived::Scalar, Scalar>, "rows must have the accumulator's scalar type");
    detail::require_size("rows", batch.cols(), width_, "column count");
    const auto& x = batch.derived();
    if (x.rows() == 0) return;
    // Every check before any change, so that a batch that throws leaves no trace.
    Eigen::Matrix<Scalar, 1, Eigen::Dynamic> shift = shift_;
    if (!has_shift_) shift = first_batch_mean(x);
    for (Index t = 0; t < x.rows(); ++t) {
      for (Index c = 0; c < width_; ++c) {
        const Scalar v = x.coeff(t, c);
        if (!std::isfinite(v)) {
          detail::fail_domain("rows", "non-finite value " + detail::describe_value(v) + " at " + detail::at_entry(t, c));
        }
        if (std::abs(static_cast<double>(v)) > largest_value) {
          detail::fail_domain("rows", "value " + detail::describe_value(v) + " at " + detail::at_entry(t, c) +
                                          " too large: its products would overflow");
        }
      }
    }
    shift_ = shift;
    has_shift_ = true;
    for (Index t = 0; t < x.rows();) {
      const Index take = std::min(options_.batch_rows - staged_rows_, x.rows() - t);
      stage(x, t, take);
      t += take;
      if (staged_rows_ == options_.batch_rows) update();
    }
  }

  /// μ, w values.
  [[nodiscard]] Eigen::VectorXd mean() {
    update();
    require_rows();
    return shift_.transpose().template cast<double>() + sums_ / static_cast<double>(rows_);
  }

  /// C, w × w, symmetric (a copy; finish() forms it in place).
  [[nodiscard]] Eigen::MatrixXd covariance() {
    update();
    require_rows();
    Eigen::MatrixXd c(width_, width_);
    c.template triangularView<Eigen::Lower>() = product_;
    form_covariance(c);
    return c;
  }

  /// μ and C, C formed in P's own storage (no w × w copy): the accumulator is spent.
  void finish(Eigen::VectorXd& mean_out, Eigen::MatrixXd& covariance_out) && {
    mean_out = mean();
    form_covariance(product_);
    covariance_out = std::move(product_);
  }

 private:
  // Rows of padding after each staged column: a column stride of a power of two
  // (512 floats) maps every column's run to the same cache sets, and the block
  // the kernel keeps in L2 then misses there (measured: 4.0 to 4.8 s of CPU
  // against 3.9 s for 1024 rows of width 14336 on one thread).
  static constexpr Index staging_padding = 16;
  // Values and shifts (means of values) at most this large differ by at most
  // twice as much: within float's range for float rows; for double rows, squares
  // below double's largest value with room for 10^8 rows.
  static constexpr double largest_value =
      std::is_same_v<Scalar, float> ? static_cast<double>(std::numeric_limits<float>::max()) / 2 : 1e150;

  template <typename Derived>
  [[nodiscard]] Eigen::Matrix<Scalar, 1, Eigen::Dynamic> first_batch_mean(const Derived& x) const {
    Eigen::RowVectorXd total = Eigen::RowVectorXd::Zero(width_);
    for (Index t = 0; t < x.rows(); ++t) {
      for (Index c = 0; c < width_; ++c) total(c) += static_cast<double>(x.coeff(t, c));
    }
    // A non-finite total is rejected by the checks that follow; keep the shift finite meanwhile.
    total /= static_cast<double>(x.rows());
    return total.unaryExpr([](double v) { return std::isfinite(v) ? v : 0.0; }).template cast<Scalar>();
  }

  void require_rows() const {
    if (rows_ == 0) detail::fail_domain("rows", "no row was added: the moments of nothing are undefined");
  }

  /// Copies rows [first, first + count) of x, shifted, into the staging block
  /// (column-major: each column's rows contiguous, as the Gram kernel reads them),
  /// in column slices so that the lines being written stay in cache.
  template <typename Derived>
  void stage(const Derived& x, Index first, Index count) {
    constexpr Index slice = 64;
    for (Index c0 = 0; c0 < width_; c0 += slice) {
      const Index c1 = std::min(width_, c0 + slice);
      for (Index t = 0; t < count; ++t) {
        for (Index c = c0; c < c1; ++c) {
          const Scalar v = x.coeff(first + t, c) - shift_(c);
          staged_(staged_rows_ + t, c) = v;
          largest_staged_ = std::max(largest_staged_, static_cast<double>(std::abs(v)));
        }
      }
    }
    staged_rows_ += count;
  }

  /// Adds the staged rows into P and q, on options.threads threads.
  void update() {
    if (staged_rows_ == 0) return;
    detail::gram_layout<Scalar> block;
    block.base = staged_.data();
    block.heads = width_;
    block.head_stride = staged_.rows();
    block.slices = 1;
    block.slice_stride = 0;
    block.slice_length = staged_rows_;
    const simd_target target = largest_staged_ > detail::gram_float_safe_magnitude ? simd_target::portable : target_;
    for_each_part([&](detail::gram_share share) {
      detail::accumulate_gram(target, block, product_.data(), sums_.data(), share);
    });
    rows_ += staged_rows_;
    staged_rows_ = 0;
    largest_staged_ = 0;
  }

  /// Runs work(share) for every part of options.threads, part 0 on the calling
  /// thread. A thread that cannot be started leaves its part to the calling thread.
  template <typename Work>
  void for_each_part(const Work& work) const {
    const int parts = options_.threads;
    std::vector<int> inline_parts{0};
    {
      std::vector<std::jthread> workers;
      for (int p = 1; p < parts; ++p) {
        try {
          workers.emplace_back([&work, p, parts] { work(detail::gram_share{p, parts}); });
        } catch (const std::system_error&) {
          inline_parts.push_back(p);
        }
      }
      for (const int p : inline_parts) work(detail::gram_share{p, parts});
    }  // the workers join here
  }

  /// Turns the lower triangle of P (in `m`) into the whole of C, in blocks of
  /// columns shared among the threads as the update shares them: block J's
  /// owner writes C's lower entries in J's columns and their mirror in J's rows,
  /// so the threads write disjoint entries and read only lower ones.
  void form_covariance(Eigen::MatrixXd& m) const {
    const double n = static_cast<double>(rows_);
    const Eigen::VectorXd shifted_mean = sums_ / n;
    constexpr Index tile = 64;
    for_each_part([&](detail::gram_share share) {
      for (Index j0 = 0, block = 0; j0 < width_; j0 += tile, ++block) {
        if (!share.owns(block)) continue;
        const Index j1 = std::min(width_, j0 + tile);
        for (Index i0 = j0; i0 < width_; i0 += tile) {
          const Index i1 = std::min(width_, i0 + tile);
          for (Index j = j0; j < j1; ++j) {
            for (Index i = std::max(i0, j); i < i1; ++i) {
              const double c = m(i, j) / n - shifted_mean(i) * shifted_mean(j);
              m(i, j) = c;
              m(j, i) = c;
            }
          }
        }
      }
    });
  }

  Index width_;
  moment_accumulator_options options_;
  simd_target target_ = simd_target::portable;
  Eigen::MatrixXd product_;  // P, lower triangle
  Eigen::VectorXd sums_;     // q
  Eigen::Matrix<Scalar, 1, Eigen::Dynamic> shift_;
  bool has_shift_ = false;
  Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor> staged_;
  Index staged_rows_ = 0;
  double largest_staged_ = 0;
  std::int64_t rows_ = 0;  // rows in P and q
};

NASHPRUNE_END_NAMESPACE
