// Weights of a GGUF tensor as a row-major float matrix (rows = dims[1], columns
// = dims[0], ggml's layout): a zero-copy view for F32, a dequantised copy for
// F16, BF16 and the common block formats Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and
// Q2_K..Q6_K (decoded as ggml's dequantize_row_* does: ggml-quants.c of the
// pinned llama.cpp; tests/llama/test_llama_dequantize.cpp checks every type
// against ggml itself). Other types throw std::invalid_argument naming the
// tensor and its type (score them from activations instead).
#pragma once

#include <Eigen/Core>

#include <span>

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

/// Whether dequantize can decode `type`.
[[nodiscard]] bool can_dequantize(nashprune::ggml_type type);

/// Decodes `out.size()` consecutive values of `type` from `in` (whole blocks:
/// out.size() a multiple of the block size, in.size() the matching byte count).
/// Throws std::invalid_argument for a type can_dequantize refuses or sizes that
/// do not match.
void dequantize(nashprune::ggml_type type, std::span<const std::byte> in, std::span<float> out);

}  // namespace gguf
