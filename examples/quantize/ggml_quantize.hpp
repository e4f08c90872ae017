// ggml's own quantization routines, as llama-quantize calls them: rows of floats
// through ggml_quantize_chunk (with an importance matrix where ggml uses one) and
// back through the type traits' to_float. Built only against a provisioned llama.cpp.
#pragma once

#include <nashprune/ggml_types.hpp>

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace quantize {

/// Whether ggml_quantize_chunk writes `type` (the block formats llama-quantize
/// produces, and F32, F16, BF16).
[[nodiscard]] bool ggml_can_quantize(nashprune::ggml_type type);
/// Whether ggml refuses to quantize `type` without an importance matrix.
[[nodiscard]] bool ggml_needs_imatrix(nashprune::ggml_type type);

/// Decodes `rows` consecutive rows of `row_length` values of `type` from `bytes`
/// (ggml's to_float of that type) into `out` (rows · row_length floats).
void ggml_to_float(nashprune::ggml_type type, std::span<const std::byte> bytes, std::int64_t rows, std::int64_t row_length,
                   std::span<float> out);

/// `rows` rows of `row_length` floats quantized to `type` by ggml_quantize_chunk
/// without an importance matrix: the bytes llama-quantize writes for these
/// values. Throws std::invalid_argument for a type that needs an importance
/// matrix or a row length that is not a whole number of blocks.
[[nodiscard]] std::vector<std::byte> ggml_quantize_rows(nashprune::ggml_type type, std::span<const float> in, std::int64_t rows,
                                                        std::int64_t row_length);

/// Quantizes `rows` rows of `row_length` floats to `type` with ggml_quantize_chunk
/// (passing `imatrix`, one value per column, or nothing) and decodes them back into
/// `out`; `scratch` holds the quantized bytes between the two.
void ggml_round_trip(nashprune::ggml_type type, std::span<const float> in, std::int64_t rows, std::int64_t row_length,
                     const float* imatrix, std::span<std::byte> scratch, std::span<float> out);

}  // namespace quantize
