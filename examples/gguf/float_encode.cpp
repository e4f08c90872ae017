#include "gguf/float_encode.hpp"

#include <cstring>
#include <stdexcept>
#include <string>

namespace gguf {

std::uint16_t float_to_half(float value) {
  std::uint32_t x = 0;
  std::memcpy(&x, &value, sizeof x);
  const auto sign = static_cast<std::uint32_t>((x >> 16) & 0x8000U);
  const std::uint32_t exponent = (x >> 23) & 0xFFU;
  std::uint32_t mantissa = x & 0x7FFFFFU;
  if (exponent == 0xFF) return static_cast<std::uint16_t>(sign | 0x7C00U | (mantissa != 0 ? 0x200U : 0U));  // Inf / NaN
  const int e = static_cast<int>(exponent) - 127 + 15;
  if (e >= 31) return static_cast<std::uint16_t>(sign | 0x7C00U);  // beyond the largest half: Inf
  if (e <= 0) {  // a half subnormal (or zero)
    if (e < -10) return static_cast<std::uint16_t>(sign);
    mantissa |= 0x800000U;
    const auto shift = static_cast<std::uint32_t>(14 - e);
    std::uint32_t half = mantissa >> shift;
    const std::uint32_t rest = mantissa & ((1U << shift) - 1U);
    const std::uint32_t halfway = 1U << (shift - 1U);
    if (rest > halfway || (rest == halfway && (half & 1U) != 0)) ++half;
    return static_cast<std::uint16_t>(sign | half);
  }
  std::uint32_t half = sign | (static_cast<std::uint32_t>(e) << 10) | (mantissa >> 13);
  const std::uint32_t rest = mantissa & 0x1FFFU;
  if (rest > 0x1000U || (rest == 0x1000U && (half & 1U) != 0)) ++half;  // a carry moves into the exponent, as it should
  return static_cast<std::uint16_t>(half);
}

std::uint16_t float_to_bf16(float value) {
  std::uint32_t x = 0;
  std::memcpy(&x, &value, sizeof x);
  if ((x & 0x7FFFFFFFU) > 0x7F800000U) return static_cast<std::uint16_t>((x >> 16) | 0x40U);  // NaN stays NaN
  x += 0x7FFFU + ((x >> 16) & 1U);
  return static_cast<std::uint16_t>(x >> 16);
}

bool can_encode(nashprune::ggml_type type) {
  return type == nashprune::ggml_type::f32 || type == nashprune::ggml_type::f16 || type == nashprune::ggml_type::bf16;
}

std::vector<std::byte> encode_floats(nashprune::ggml_type type, std::span<const float> values) {
  std::vector<std::byte> out;
  if (type == nashprune::ggml_type::f32) {
    out.resize(values.size() * sizeof(float));
    std::memcpy(out.data(), values.data(), out.size());
    return out;
  }
  if (type != nashprune::ggml_type::f16 && type != nashprune::ggml_type::bf16) {
    throw std::invalid_argument("computed tensors are written as F32, F16 or BF16, not type " +
                                std::to_string(static_cast<int>(type)));
  }
  out.resize(values.size() * sizeof(std::uint16_t));
  for (std::size_t i = 0; i < values.size(); ++i) {
    const std::uint16_t h = type == nashprune::ggml_type::f16 ? float_to_half(values[i]) : float_to_bf16(values[i]);
    std::memcpy(out.data() + i * sizeof h, &h, sizeof h);
  }
  return out;
}

}  // namespace gguf
