// nashprune/memory_savings.hpp — bytes before and after a pruning/quantization plan,
// per tensor, from shapes and ggml type sizes.
//
// Source: nash-head-pruning-llama-cpp.md §9 ("Memory Savings Analysis"). The seed
// counts FP16 attention bytes as n_embd · head_dim · n_head · 2 and scales by
// 4.5 / 16 for Q4_K_M. Here a tensor of `rows` rows of `row_length` elements of ggml
// type T occupies rows · row_bytes(T, row_length) bytes, with row_bytes from
// ggml_types.hpp (whole blocks: q4_K is 144 bytes per 256 weights = 4.5 bits), so
// the figures are the bytes a GGUF file actually holds, not a bits-per-weight
// estimate. A plan states each tensor's shape and type before and after.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "config.hpp"
#include "detail/validate.hpp"
#include "ggml_types.hpp"

NASHPRUNE_BEGIN_NAMESPACE

/// One tensor of a plan: its shape (ggml_types.hpp) and type before, then after.
struct tensor_plan {
  tensor_shape shape;
  ggml_type type = ggml_type::f16;
  std::int64_t row_length_after = 0;
  std::int64_t rows_after = 0;
  ggml_type type_after = ggml_type::f16;
  bool added = false;  // a tensor the plan adds (a compensation bias): nothing before (shape.rows == 0), any shape after
};

struct tensor_bytes {
  std::int64_t before = 0;
  std::int64_t after = 0;
  [[nodiscard]] std::int64_t saved() const { return before - after; }
};

struct memory_savings_result {
  std::vector<tensor_bytes> tensors;  // one per plan entry
  std::int64_t before = 0;
  std::int64_t after = 0;
  [[nodiscard]] std::int64_t saved() const { return before - after; }
  [[nodiscard]] double saved_fraction() const {
    return before > 0 ? static_cast<double>(saved()) / static_cast<double>(before) : 0.0;
  }
};

/// Bytes of each tensor before and after (0 before for an added tensor). Throws
/// std::invalid_argument naming the tensor for negative shapes, a tensor that
/// grows without being added, an added tensor with rows before, and rows no ggml
/// block layout can hold.
[[nodiscard]] inline memory_savings_result memory_savings(std::span<const tensor_plan> plan) {
  memory_savings_result r;
  r.tensors.reserve(plan.size());
  for (std::size_t i = 0; i < plan.size(); ++i) {
    const auto& t = plan[i];
    const auto& [name, row_length, rows] = t.shape;
    const std::string where = " at " + detail::at_index(static_cast<std::int64_t>(i)) + " ('" + name + "')";
    if (row_length < 0 || rows < 0 || t.row_length_after < 0 || t.rows_after < 0) {
      detail::fail_argument("plan", "negative shape" + where);
    }
    if (t.added && rows != 0) detail::fail_argument("plan", "an added tensor has no rows before" + where);
    if (!t.added && (t.row_length_after > row_length || t.rows_after > rows)) detail::fail_argument("plan", "pruning cannot grow a tensor" + where);
    for (const auto& [type, length] : {std::pair{t.type, row_length}, std::pair{t.type_after, t.row_length_after}}) {
      const auto& traits = traits_of(type);
      if (length % traits.block_size != 0) {
        detail::fail_argument("plan", "row length " + std::to_string(length) + " is not a multiple of the " + std::string(traits.name) +
                                          " block size " + std::to_string(traits.block_size) + where);
      }
    }
    tensor_bytes b;
    b.before = row_bytes(t.type, row_length) * rows;
    b.after = row_bytes(t.type_after, t.row_length_after) * t.rows_after;
    r.before += b.before;
    r.after += b.after;
    r.tensors.push_back(b);
  }
  return r;
}

NASHPRUNE_END_NAMESPACE
