// Weights of a GGUF tensor as a row-major float matrix (rows = dims[1], columns
// = dims[0], ggml's layout): a zero-copy view for F32, a converted copy for F16,
// BF16 and Q8_0. Other quantized types throw std::invalid_argument naming the
// tensor (score them from an imatrix instead).
#pragma once

#include <Eigen/Core>

#include "gguf/gguf.hpp"

namespace gguf {

using row_major_matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

class float_matrix {
 public:
  explicit float_matrix(const tensor_view& t);
  [[nodiscard]] Eigen::Map<const row_major_matrix> map() const { return {data_, rows_, cols_}; }

 private:
  std::vector<float> owned_;
  const float* data_ = nullptr;
  Eigen::Index rows_ = 0;
  Eigen::Index cols_ = 0;
};

/// IEEE half and bfloat16 to float.
[[nodiscard]] float half_to_float(std::uint16_t h);
[[nodiscard]] float bf16_to_float(std::uint16_t h);

}  // namespace gguf
