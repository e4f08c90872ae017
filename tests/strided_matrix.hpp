// Test support: matrices that live inside a larger buffer with padding between
// and inside their lines, as an inference engine's weight views do, in either
// storage order, plus plain double copies of their values for references.
#pragma once

#include <Eigen/Core>
#include <random>
#include <vector>

namespace nashprune_test {

using dynamic_stride = Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>;

template <typename Scalar, int Order>
using strided_map = Eigen::Map<Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Order>, 0, dynamic_stride>;

/// A rows × cols view with `inner_stride` between neighbours of a line and
/// `padding` extra elements at the end of every line; the padding holds a
/// sentinel so reads outside the view would show up in the results.
template <typename Scalar, int Order>
class strided_matrix {
 public:
  strided_matrix(Eigen::Index rows, Eigen::Index cols, Eigen::Index inner_stride, Eigen::Index padding)
      : inner_(Order == Eigen::RowMajor ? cols : rows),
        outer_stride_(inner_ * inner_stride + padding),
        buffer_(static_cast<std::size_t>((Order == Eigen::RowMajor ? rows : cols) * outer_stride_ + 1), Scalar(1e6)),
        view_(buffer_.data(), rows, cols, dynamic_stride(outer_stride_, inner_stride)) {}
  strided_matrix(const strided_matrix&) = delete;
  strided_matrix& operator=(const strided_matrix&) = delete;

  strided_map<Scalar, Order>& view() { return view_; }
  const strided_map<Scalar, Order>& view() const { return view_; }
  [[nodiscard]] Eigen::MatrixXd values() const { return view_.template cast<double>(); }

  void fill_uniform(std::mt19937& rng, double low, double high) {
    std::uniform_real_distribution<double> dist(low, high);
    for (Eigen::Index r = 0; r < view_.rows(); ++r)
      for (Eigen::Index c = 0; c < view_.cols(); ++c) view_(r, c) = static_cast<Scalar>(dist(rng));
  }

 private:
  Eigen::Index inner_;
  Eigen::Index outer_stride_;
  std::vector<Scalar> buffer_;
  strided_map<Scalar, Order> view_;
};

/// Tolerance for comparing a sum of `terms` non-negative scalar-typed terms
/// (total `magnitude`) with a double reference.
template <typename Scalar>
double sum_tolerance(double magnitude) {
  return (sizeof(Scalar) == 4 ? 2e-5 : 1e-12) * (magnitude + 1.0);
}

}  // namespace nashprune_test
