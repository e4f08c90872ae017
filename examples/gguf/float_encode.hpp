// Floats to the GGUF float types a computed tensor is written in: F32 as is, F16
// and BF16 rounded to nearest, ties to even (as ggml's ggml_fp32_to_fp16 and
// ggml_fp32_to_bf16 round); the inverse of half_to_float / bf16_to_float
// (tensor_floats.hpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include <nashprune/ggml_types.hpp>

namespace gguf {

[[nodiscard]] std::uint16_t float_to_half(float value);
[[nodiscard]] std::uint16_t float_to_bf16(float value);

/// Whether encode_floats writes `type` (F32, F16, BF16).
[[nodiscard]] bool can_encode(nashprune::ggml_type type);

/// The bytes of `values` in `type`. Throws std::invalid_argument for a type
/// can_encode refuses.
[[nodiscard]] std::vector<std::byte> encode_floats(nashprune::ggml_type type, std::span<const float> values);

}  // namespace gguf
