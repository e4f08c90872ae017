// ggml's quantization routines behind ggml_quantize.hpp.
#include "quantize/ggml_quantize.hpp"

#include <ggml.h>

#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>

namespace quantize {

namespace {

using nashprune::ggml_type;

::ggml_type to_ggml(ggml_type type) { return static_cast<::ggml_type>(static_cast<std::uint32_t>(type)); }

/// ggml's lookup tables (fp16 conversion, the iq grids) are built once, before any thread uses them.
void initialise(ggml_type type) {
  static std::once_flag tables;
  std::call_once(tables, [] {
    ggml_init_params params{0, nullptr, true};
    ggml_free(ggml_init(params));
  });
  ggml_quantize_init(to_ggml(type));
}

}  // namespace

bool ggml_can_quantize(ggml_type type) {
  switch (type) {
    case ggml_type::f32: case ggml_type::f16: case ggml_type::bf16:
    case ggml_type::q1_0: case ggml_type::q2_0: case ggml_type::q4_0: case ggml_type::q4_1:
    case ggml_type::q5_0: case ggml_type::q5_1: case ggml_type::q8_0: case ggml_type::mxfp4: case ggml_type::nvfp4:
    case ggml_type::q2_k: case ggml_type::q3_k: case ggml_type::q4_k: case ggml_type::q5_k: case ggml_type::q6_k:
    case ggml_type::tq1_0: case ggml_type::tq2_0: case ggml_type::iq2_xxs: case ggml_type::iq2_xs: case ggml_type::iq3_xxs:
    case ggml_type::iq3_s: case ggml_type::iq2_s: case ggml_type::iq1_s: case ggml_type::iq1_m: case ggml_type::iq4_nl:
    case ggml_type::iq4_xs:
      return true;
    default:
      return false;
  }
}

bool ggml_needs_imatrix(ggml_type type) { return ggml_quantize_requires_imatrix(to_ggml(type)); }

void ggml_to_float(ggml_type type, std::span<const std::byte> bytes, std::int64_t rows, std::int64_t row_length, std::span<float> out) {
  const auto* traits = ggml_get_type_traits(to_ggml(type));
  if (traits == nullptr || (traits->to_float == nullptr && type != ggml_type::f32)) {
    throw std::invalid_argument("ggml cannot decode type " + std::string(nashprune::traits_of(type).name));
  }
  const std::size_t row_size = ggml_row_size(to_ggml(type), row_length);
  if (bytes.size() != row_size * static_cast<std::size_t>(rows) || out.size() != static_cast<std::size_t>(rows * row_length)) {
    throw std::invalid_argument("ggml_to_float: " + std::to_string(rows) + " rows of " + std::to_string(row_length) + " " +
                                std::string(nashprune::traits_of(type).name) + " do not match the buffers");
  }
  initialise(type);
  if (type == ggml_type::f32) {
    std::memcpy(out.data(), bytes.data(), bytes.size());  // ggml has no to_float for its own float type
  } else {
    traits->to_float(bytes.data(), out.data(), rows * row_length);
  }
}

std::vector<std::byte> ggml_quantize_rows(ggml_type type, std::span<const float> in, std::int64_t rows, std::int64_t row_length) {
  const auto& traits = nashprune::traits_of(type);
  if (!ggml_can_quantize(type) || ggml_needs_imatrix(type)) {
    throw std::invalid_argument("ggml does not quantize to " + std::string(traits.name) + " without an importance matrix");
  }
  if (row_length % traits.block_size != 0 || in.size() != static_cast<std::size_t>(rows * row_length)) {
    throw std::invalid_argument("ggml_quantize_rows: " + std::to_string(rows) + " rows of " + std::to_string(row_length) + " values are not whole " +
                                std::string(traits.name) + " blocks or do not match the buffer");
  }
  initialise(type);
  std::vector<std::byte> out(ggml_row_size(to_ggml(type), row_length) * static_cast<std::size_t>(rows));
  ggml_quantize_chunk(to_ggml(type), in.data(), out.data(), 0, rows, row_length, nullptr);
  return out;
}

void ggml_round_trip(ggml_type type, std::span<const float> in, std::int64_t rows, std::int64_t row_length, const float* imatrix,
                     std::span<std::byte> scratch, std::span<float> out) {
  if (!ggml_can_quantize(type)) throw std::invalid_argument("ggml does not quantize to " + std::string(nashprune::traits_of(type).name));
  if (ggml_needs_imatrix(type) && imatrix == nullptr) {
    throw std::invalid_argument(std::string(nashprune::traits_of(type).name) + " needs an importance matrix");
  }
  const std::size_t bytes = ggml_row_size(to_ggml(type), row_length) * static_cast<std::size_t>(rows);
  if (in.size() != static_cast<std::size_t>(rows * row_length) || scratch.size() < bytes) {
    throw std::invalid_argument("ggml_round_trip: buffers do not match " + std::to_string(rows) + " rows of " + std::to_string(row_length));
  }
  initialise(type);
  ggml_quantize_chunk(to_ggml(type), in.data(), scratch.data(), 0, rows, row_length, imatrix);
  ggml_to_float(type, scratch.first(bytes), rows, row_length, out);
}

}  // namespace quantize
