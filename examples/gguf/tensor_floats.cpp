// Reading GGUF weights as floats for scoring.
#include "gguf/tensor_floats.hpp"

#include <bit>
#include <cstring>

namespace gguf {

float half_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000U) << 16;
  std::uint32_t exponent = (h >> 10) & 0x1FU;
  std::uint32_t mantissa = h & 0x3FFU;
  std::uint32_t bits = 0;
  if (exponent == 0x1F) {
    bits = sign | 0x7F800000U | (mantissa << 13);  // Inf / NaN
  } else if (exponent != 0) {
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else if (mantissa != 0) {  // subnormal: normalise
    exponent = 113;
    while ((mantissa & 0x400U) == 0) {
      mantissa <<= 1;
      --exponent;
    }
    bits = sign | (exponent << 23) | ((mantissa & 0x3FFU) << 13);
  } else {
    bits = sign;
  }
  return std::bit_cast<float>(bits);
}

float bf16_to_float(std::uint16_t h) { return std::bit_cast<float>(static_cast<std::uint32_t>(h) << 16); }

float_matrix::float_matrix(const tensor_view& t) : rows_(t.rows()), cols_(t.dims[0]) {
  const auto n = static_cast<std::size_t>(t.elements());
  switch (t.type) {
    case nashprune::ggml_type::f32:
      if (reinterpret_cast<std::uintptr_t>(t.data.data()) % alignof(float) == 0) {
        data_ = reinterpret_cast<const float*>(t.data.data());
        return;
      }
      owned_.resize(n);
      std::memcpy(owned_.data(), t.data.data(), n * sizeof(float));
      break;
    case nashprune::ggml_type::f16:
    case nashprune::ggml_type::bf16: {
      owned_.resize(n);
      for (std::size_t i = 0; i < n; ++i) {
        std::uint16_t h;
        std::memcpy(&h, t.data.data() + 2 * i, 2);
        owned_[i] = t.type == nashprune::ggml_type::f16 ? half_to_float(h) : bf16_to_float(h);
      }
      break;
    }
    case nashprune::ggml_type::q8_0: {
      // block_q8_0: fp16 scale d, then 32 int8 q; x = d * q.
      owned_.resize(n);
      for (std::size_t b = 0; b < n / 32; ++b) {
        const std::byte* block = t.data.data() + b * 34;
        std::uint16_t d;
        std::memcpy(&d, block, 2);
        const float scale = half_to_float(d);
        for (std::size_t i = 0; i < 32; ++i) {
          owned_[b * 32 + i] = scale * static_cast<float>(static_cast<std::int8_t>(block[2 + i]));
        }
      }
      break;
    }
    default:
      throw std::invalid_argument("tensor '" + t.name + "' is " + std::string(nashprune::traits_of(t.type).name) +
                                  ": weight scores read f32, f16, bf16 and q8_0 only (use --score activation --imatrix FILE)");
  }
  data_ = owned_.data();
}

}  // namespace gguf
