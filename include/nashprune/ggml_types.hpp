// nashprune/ggml_types.hpp — the ggml tensor types: ids, block sizes, bytes per block.
//
// Every byte-level computation in nashprune (slicing quantized rows, memory
// savings, bit budgets) goes through this one table. A ggml row of `n` elements
// of type T occupies n / block_size(T) blocks of type_size(T) bytes, and n must
// be a multiple of block_size(T). The ids are the values GGUF stores in its
// tensor table (ggml.h, enum ggml_type); the sizes are those of the block
// structs in ggml-common.h (e.g. block_q8_0 = fp16 scale + 32 int8 = 34 bytes,
// block_q4_K = 2 fp16 + 12 scale bytes + 128 nibble bytes = 144 bytes per 256),
// as of the llama.cpp that the integration tests pin (tests/llama checks this
// table against ggml's own ggml_blck_size / ggml_type_size).
// Ids that ggml has retired (4, 5, 31–33, 36–38) are not types.
#pragma once

#include <array>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>

#include "config.hpp"
#include "detail/validate.hpp"

NASHPRUNE_BEGIN_NAMESPACE

enum class ggml_type : std::uint32_t {
  f32 = 0, f16 = 1, q4_0 = 2, q4_1 = 3, q5_0 = 6, q5_1 = 7, q8_0 = 8, q8_1 = 9,
  q2_k = 10, q3_k = 11, q4_k = 12, q5_k = 13, q6_k = 14, q8_k = 15,
  iq2_xxs = 16, iq2_xs = 17, iq3_xxs = 18, iq1_s = 19, iq4_nl = 20, iq3_s = 21,
  iq2_s = 22, iq4_xs = 23, i8 = 24, i16 = 25, i32 = 26, i64 = 27, f64 = 28,
  iq1_m = 29, bf16 = 30, tq1_0 = 34, tq2_0 = 35, mxfp4 = 39, nvfp4 = 40, q1_0 = 41, q2_0 = 42,
};

/// A named ggml matrix: `rows` rows of `row_length` elements (ne = [row_length, rows]).
/// Its bytes in a type T are rows · row_bytes(T, row_length).
struct tensor_shape {
  std::string name;
  std::int64_t row_length = 0;
  std::int64_t rows = 0;
};

struct ggml_type_traits {
  ggml_type type;
  std::string_view name;       // as ggml and llama-quantize spell it, e.g. "q4_K"
  std::int64_t block_size;     // elements per block
  std::int64_t type_size;      // bytes per block
  bool quantized;

  /// Storage cost per weight, e.g. 4.5 for q4_K, 8.5 for q8_0, 16 for f16.
  [[nodiscard]] constexpr double bits_per_weight() const {
    return 8.0 * static_cast<double>(type_size) / static_cast<double>(block_size);
  }
};

inline constexpr std::array<ggml_type_traits, 35> ggml_type_table{{
    {ggml_type::f32, "f32", 1, 4, false},
    {ggml_type::f16, "f16", 1, 2, false},
    {ggml_type::q4_0, "q4_0", 32, 18, true},
    {ggml_type::q4_1, "q4_1", 32, 20, true},
    {ggml_type::q5_0, "q5_0", 32, 22, true},
    {ggml_type::q5_1, "q5_1", 32, 24, true},
    {ggml_type::q8_0, "q8_0", 32, 34, true},
    {ggml_type::q8_1, "q8_1", 32, 36, true},
    {ggml_type::q2_k, "q2_K", 256, 84, true},
    {ggml_type::q3_k, "q3_K", 256, 110, true},
    {ggml_type::q4_k, "q4_K", 256, 144, true},
    {ggml_type::q5_k, "q5_K", 256, 176, true},
    {ggml_type::q6_k, "q6_K", 256, 210, true},
    {ggml_type::q8_k, "q8_K", 256, 292, true},
    {ggml_type::iq2_xxs, "iq2_xxs", 256, 66, true},
    {ggml_type::iq2_xs, "iq2_xs", 256, 74, true},
    {ggml_type::iq3_xxs, "iq3_xxs", 256, 98, true},
    {ggml_type::iq1_s, "iq1_s", 256, 50, true},
    {ggml_type::iq4_nl, "iq4_nl", 32, 18, true},
    {ggml_type::iq3_s, "iq3_s", 256, 110, true},
    {ggml_type::iq2_s, "iq2_s", 256, 82, true},
    {ggml_type::iq4_xs, "iq4_xs", 256, 136, true},
    {ggml_type::i8, "i8", 1, 1, false},
    {ggml_type::i16, "i16", 1, 2, false},
    {ggml_type::i32, "i32", 1, 4, false},
    {ggml_type::i64, "i64", 1, 8, false},
    {ggml_type::f64, "f64", 1, 8, false},
    {ggml_type::iq1_m, "iq1_m", 256, 56, true},
    {ggml_type::bf16, "bf16", 1, 2, false},
    {ggml_type::tq1_0, "tq1_0", 256, 54, true},
    {ggml_type::tq2_0, "tq2_0", 256, 66, true},
    {ggml_type::mxfp4, "mxfp4", 32, 17, true},
    {ggml_type::nvfp4, "nvfp4", 64, 36, true},
    {ggml_type::q1_0, "q1_0", 128, 18, true},
    {ggml_type::q2_0, "q2_0", 64, 18, true},
}};

/// The traits of a raw GGUF type id, or nothing for an unknown or retired id.
[[nodiscard]] constexpr std::optional<ggml_type_traits> find_ggml_type(std::uint32_t id) {
  for (const auto& t : ggml_type_table) {
    if (static_cast<std::uint32_t>(t.type) == id) return t;
  }
  return std::nullopt;
}

/// The traits of a type by its ggml name, case-insensitive ("Q4_K", "q4_k", "F16").
[[nodiscard]] constexpr std::optional<ggml_type_traits> find_ggml_type(std::string_view name) {
  auto lower = [](char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; };
  for (const auto& t : ggml_type_table) {
    if (t.name.size() != name.size()) continue;
    bool same = true;
    for (std::size_t i = 0; i < name.size() && same; ++i) same = lower(t.name[i]) == lower(name[i]);
    if (same) return t;
  }
  return std::nullopt;
}

[[nodiscard]] constexpr const ggml_type_traits& traits_of(ggml_type type) {
  for (const auto& t : ggml_type_table) {
    if (t.type == type) return t;
  }
  // Unreachable for a valid enumerator; a cast-in id lands here.
  detail::fail_argument("type", "not a ggml type id: " + std::to_string(static_cast<std::uint32_t>(type)));
}

/// Bytes of one row of `elements` values of `type`. Throws std::invalid_argument
/// when `elements` is not a whole number of blocks (ggml cannot store that row).
[[nodiscard]] inline std::int64_t row_bytes(ggml_type type, std::int64_t elements) {
  const auto& t = traits_of(type);
  if (elements < 0) detail::fail_argument("elements", "negative row length " + std::to_string(elements));
  if (elements % t.block_size != 0) {
    detail::fail_argument("elements", "row length " + std::to_string(elements) + " is not a multiple of the " +
                                          std::string(t.name) + " block size " + std::to_string(t.block_size));
  }
  const std::int64_t blocks = elements / t.block_size;
  if (blocks > std::numeric_limits<std::int64_t>::max() / t.type_size) {
    detail::fail_argument("elements", "row length " + std::to_string(elements) + " of " + std::string(t.name) +
                                          " overflows a 64-bit byte count");
  }
  return blocks * t.type_size;
}

NASHPRUNE_END_NAMESPACE
