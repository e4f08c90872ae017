// nashprune/selection_items.hpp — the item table of a global selection: what one
// prunable structure is, the kinds of structure, which kinds contain which, and the
// result every selector returns.
//
// Every prunable structure of the model is one row of an item table: (layer, kind,
// index, importance I_i >= 0, cost c_i >= 1 in parameters or bytes). The kinds are
// the GQA-consistent granularities of the structural core and the containers around
// them:
//
//     whole_layer ⊃ attention_block ⊃ attention_group | q_head
//     whole_layer ⊃ mlp_block       ⊃ mlp_channel
//
// attention_group = a KV head with its Q heads (whole groups), q_head = one query
// head, mlp_channel = gate/up row plus down column. A block (attention_block,
// mlp_block) is one part of a layer; a container is a block or a whole layer.
// Removing a container removes every item inside it, so a selection lists the
// container and never an item together with a container around it.
//
// A budget B is the most cost a selection may remove; budget_from_fraction turns a
// fraction of the table's total cost (selection_total_cost, a container counted
// once) into B.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config.hpp"
#include "detail/validate.hpp"

NASHPRUNE_BEGIN_NAMESPACE

enum class item_kind : std::uint8_t { attention_group, q_head, mlp_channel, attention_block, mlp_block, whole_layer };
inline constexpr std::size_t item_kind_count = 6;
inline constexpr std::array<std::string_view, item_kind_count> item_kind_names{
    "attention_group", "q_head", "mlp_channel", "attention_block", "mlp_block", "whole_layer"};

[[nodiscard]] constexpr std::string_view name_of(item_kind kind) {
  return item_kind_names[static_cast<std::size_t>(kind)];
}

[[nodiscard]] constexpr std::optional<item_kind> find_item_kind(std::string_view name) {
  for (std::size_t k = 0; k < item_kind_count; ++k) {
    if (item_kind_names[k] == name) return static_cast<item_kind>(k);
  }
  return std::nullopt;
}

/// True for the kinds that are one part of a layer: attention_block, mlp_block.
[[nodiscard]] constexpr bool is_block(item_kind kind) { return kind == item_kind::attention_block || kind == item_kind::mlp_block; }

/// True for the kinds that may hold finer items: the blocks and whole_layer.
[[nodiscard]] constexpr bool is_container(item_kind kind) { return is_block(kind) || kind == item_kind::whole_layer; }

/// The block of its layer an item lies in: attention_block for the attention kinds,
/// mlp_block for the MLP kinds, whole_layer for a whole layer (it lies in no block).
[[nodiscard]] constexpr item_kind block_of(item_kind kind) {
  switch (kind) {
    case item_kind::attention_group:
    case item_kind::q_head:
    case item_kind::attention_block: return item_kind::attention_block;
    case item_kind::mlp_channel:
    case item_kind::mlp_block: return item_kind::mlp_block;
    default: return item_kind::whole_layer;
  }
}

template <typename Scalar>
struct selection_item {
  std::int64_t layer = 0;
  item_kind kind = item_kind::mlp_channel;
  std::int64_t index = 0;
  Scalar importance = 0;
  std::int64_t cost = 1;  // parameters or bytes; at least 1
};

namespace detail {

/// Position of a block in per-layer pairs: attention_block 0, mlp_block 1.
[[nodiscard]] constexpr unsigned block_index(item_kind block) { return block == item_kind::attention_block ? 0U : 1U; }

}  // namespace detail

/// The algorithm an exact selection ran (automatic picks one per instance).
enum class exact_algorithm { automatic, branch_and_bound, dynamic_programming };

template <typename Scalar>
struct selection_result {
  std::vector<std::int64_t> pruned;  // table positions, ascending
  std::int64_t budget = 0;
  std::int64_t achieved = 0;         // removed cost, <= budget
  std::int64_t total_cost = 0;       // the layers' costs, a container counted once (selection_total_cost)
  Scalar objective = 0;              // removed importance
  Scalar lower_bound = 0;            // F(achieved) over unfrozen items: no selection removing >= achieved does better
  bool feasible = true;              // exact: a selection in [L, B] was found
  bool proven_optimal = false;       // greedy: objective == lower_bound; exact: search completed
  std::int64_t nodes = 0;            // exact: branch-and-bound nodes, or dynamic-programming cells
  exact_algorithm algorithm = exact_algorithm::automatic;  // exact: the algorithm that ran
  std::int64_t refused_by_constraints = 0;  // greedy: items that fit the budget but broke a constraint

  [[nodiscard]] double achieved_fraction() const {
    return total_cost > 0 ? static_cast<double>(achieved) / static_cast<double>(total_cost) : 0.0;
  }
};

/// floor(fraction * total), up to a relative 1e-9: the cost a budget fraction allows. fraction in [0, 1].
[[nodiscard]] inline std::int64_t budget_from_fraction(double fraction, std::int64_t total) {
  if (!(fraction >= 0.0 && fraction <= 1.0)) {
    detail::fail_argument("budget.fraction", "must lie in [0, 1], got " + detail::describe_value(fraction));
  }
  if (total < 0) detail::fail_argument("total", "negative total cost " + std::to_string(total));
  // A decimal fraction that stands for an exact count (0.3 of 10) lands on that count.
  const auto exact = static_cast<long double>(fraction) * static_cast<long double>(total);
  const long double nearest = std::round(exact);
  const long double rounded = std::fabs(exact - nearest) <= 1e-9L * std::max(1.0L, exact) ? nearest : std::floor(exact);
  return std::min(total, static_cast<std::int64_t>(rounded));
}

NASHPRUNE_END_NAMESPACE
