// nashprune/quantization_error.hpp — the output error a quantized weight matrix causes,
// weighted by how strongly each input column is driven.
//
// A linear layer y = W x with W (rows × n) stored as Q adds Δy = (W − Q) x. Over
// inputs whose columns are uncorrelated (the diagonal of the input Gram matrix, the
// approximation llama.cpp's importance matrix makes too),
//     E‖Δy‖² = Σ_i Σ_j (W_ij − Q_ij)² · c_j,   c_j = E[x_j²].
// A lookup table (the token embedding) adds row i of W − Q whenever token i is read:
//     E‖Δy‖² = Σ_i p_i ‖W_i − Q_i‖²,   p_i the token's frequency.
// weighted_squared_error is the common form Σ_i r_i Σ_j c_j (W_ij − Q_ij)².
//
// normalized_input_energy: the input of a projection that follows an RMS norm is
// x = h / rms(h) ⊙ g, and the mean over channels of (h_j / rms(h))² is 1 by the norm's
// definition; with the residual stream's energy spread evenly over its channels,
// E[x_j²] = g_j². The norm's own weights so give the column weights of the Q, K, V,
// gate, up and output projections when no activations were measured.
#pragma once

#include <Eigen/Core>

#include <cstdint>
#include <string>

#include "config.hpp"
#include "detail/validate.hpp"

NASHPRUNE_BEGIN_NAMESPACE

/// Σ_i r_i Σ_j c_j (original_ij − reconstructed_ij)² (see the header comment).
/// Throws std::invalid_argument for mismatched sizes and std::domain_error naming the
/// first non-finite entry of either matrix or a negative or non-finite weight.
template <typename DerivedA, typename DerivedB, typename DerivedR, typename DerivedC>
[[nodiscard]] double weighted_squared_error(const Eigen::MatrixBase<DerivedA>& original, const Eigen::MatrixBase<DerivedB>& reconstructed,
                                            const Eigen::MatrixBase<DerivedR>& row_weights,
                                            const Eigen::MatrixBase<DerivedC>& column_weights) {
  detail::require_size("reconstructed rows", reconstructed.rows(), original.rows());
  detail::require_size("reconstructed columns", reconstructed.cols(), original.cols());
  detail::require_size("row_weights", row_weights.size(), original.rows());
  detail::require_size("column_weights", column_weights.size(), original.cols());
  detail::require_finite("original", original);
  detail::require_finite("reconstructed", reconstructed);
  detail::require_finite_nonnegative("row_weights", row_weights);
  detail::require_finite_nonnegative("column_weights", column_weights);
  const auto c = column_weights.derived().template cast<double>();
  double total = 0;
  for (Eigen::Index i = 0; i < original.rows(); ++i) {
    const auto diff = (original.row(i).template cast<double>() - reconstructed.row(i).template cast<double>()).array();
    total += static_cast<double>(row_weights.derived().coeff(i)) * (diff.square() * c.transpose().array()).sum();
  }
  return total;
}

/// c_j = g_j² for the projections after an RMS norm with weights g (header comment).
template <typename Derived>
[[nodiscard]] Eigen::VectorXd normalized_input_energy(const Eigen::MatrixBase<Derived>& norm_weights) {
  detail::require(norm_weights.size() > 0, "norm_weights", "is empty");
  detail::require_finite("norm_weights", norm_weights);
  Eigen::VectorXd energy(norm_weights.size());
  for (Eigen::Index j = 0; j < norm_weights.size(); ++j) {
    const double g = static_cast<double>(norm_weights.derived().coeff(j));
    energy[j] = g * g;
  }
  return energy;
}

NASHPRUNE_END_NAMESPACE
