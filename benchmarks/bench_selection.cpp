// Global selection: the fill greedy with every constraint against the seed's
// reference (sort by score, stop at the first misfit, no constraints) and a bare
// std::sort of the scores, on LLaMA-shaped tables (32 layers, MLP channels and
// attention groups, plus their blocks for mixed granularities); and the exact
// solver's practical limits. Read the greedy as a ratio to the two baselines of the
// same run.
//
//   ./bench_selection --benchmark_repetitions=3 --benchmark_report_aggregates_only=true
#include <nashprune/global_selection.hpp>

#include <benchmark/benchmark.h>

#include "bench_support.hpp"

#include <algorithm>
#include <numeric>
#include <random>
#include <stdexcept>
#include <vector>

namespace np = nashprune;

namespace {

std::vector<np::selection_item<float>> llama_table(std::int64_t n) {
  std::mt19937 rng(42);
  std::lognormal_distribution<float> importance(0.0F, 1.0F);
  constexpr std::int64_t layers = 32;
  const std::int64_t per_layer = std::max<std::int64_t>(2, n / layers);
  std::vector<np::selection_item<float>> items;
  items.reserve(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int64_t layer = std::min(layers - 1, i / per_layer), within = i - layer * per_layer;
    const bool attention = within < 8;  // 8 attention groups, then MLP channels
    items.push_back({layer, attention ? np::item_kind::attention_group : np::item_kind::mlp_channel, within,
                     importance(rng), attention ? 5'242'880 : 12'288});
  }
  return items;
}

np::selection_constraints all_constraints() {
  np::selection_constraints c;
  c.freeze_first_layers = 2;
  c.freeze_last_layers = 2;
  c.max_layer_prune_ratio = 0.6;
  c.min_kept = {{np::item_kind::attention_group, 2, -1}, {np::item_kind::mlp_channel, 16, -1}};
  return c;
}

template <typename Scalar>
std::int64_t total_of(const std::vector<np::selection_item<Scalar>>& items) {
  std::int64_t total = 0;
  for (const auto& it : items) total += it.cost;
  return total;
}

void BM_fill_greedy_all_constraints(benchmark::State& state) {
  const auto items = llama_table(state.range(0));
  const std::int64_t budget = np::budget_from_fraction(0.3, total_of(items));
  const auto c = all_constraints();
  for (auto _ : state) {
    auto r = np::select_greedy<float>(items, budget, c);
    benchmark::DoNotOptimize(r.pruned.data());
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}

// The seed's reference: scores, a full sort, stop at the first item that does not fit.
void BM_reference_stop_at_first_misfit(benchmark::State& state) {
  const auto items = llama_table(state.range(0));
  const std::int64_t budget = np::budget_from_fraction(0.3, total_of(items));
  for (auto _ : state) {
    std::vector<std::pair<double, std::int64_t>> scored(items.size());
    for (std::size_t i = 0; i < items.size(); ++i) {
      scored[i] = {static_cast<double>(items[i].importance) / static_cast<double>(items[i].cost), static_cast<std::int64_t>(i)};
    }
    std::sort(scored.begin(), scored.end());
    std::vector<std::int64_t> pruned;
    std::int64_t removed = 0;
    for (const auto& [score, pos] : scored) {
      const auto cost = items[static_cast<std::size_t>(pos)].cost;
      if (removed + cost > budget) break;
      removed += cost;
      pruned.push_back(pos);
    }
    benchmark::DoNotOptimize(pruned.data());
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}

void BM_std_sort_scores(benchmark::State& state) {
  const auto items = llama_table(state.range(0));
  for (auto _ : state) {
    std::vector<double> scores(items.size());
    for (std::size_t i = 0; i < items.size(); ++i) scores[i] = static_cast<double>(items[i].importance) / static_cast<double>(items[i].cost);
    std::sort(scores.begin(), scores.end());
    benchmark::DoNotOptimize(scores.data());
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}

// Mixed granularities: every layer also offers its attention block and MLP block, each
// costing exactly the items it holds (so a block can cost nothing more once they are
// gone and the walk never stops early: the slow case). No min_kept rule, which would
// forbid removing the blocks.
void BM_fill_greedy_mixed_granularities(benchmark::State& state) {
  auto items = llama_table(state.range(0));
  std::vector<std::int64_t> attention(32, 0), mlp(32, 0);
  for (const auto& it : items) (it.kind == np::item_kind::attention_group ? attention : mlp)[static_cast<std::size_t>(it.layer)] += it.cost;
  std::mt19937 rng(5);
  std::lognormal_distribution<float> importance(8.0F, 1.0F);
  for (std::int64_t l = 0; l < 32; ++l) {
    const auto layer = static_cast<std::size_t>(l);
    if (attention[layer] > 0) items.push_back({l, np::item_kind::attention_block, 0, importance(rng), attention[layer]});
    if (mlp[layer] > 0) items.push_back({l, np::item_kind::mlp_block, 0, importance(rng), mlp[layer]});
  }
  const std::int64_t budget = np::budget_from_fraction(0.3, np::selection_total_cost<float>(items));
  auto c = all_constraints();
  c.min_kept.clear();
  for (auto _ : state) {
    auto r = np::select_greedy<float>(items, budget, c);
    benchmark::DoNotOptimize(r.pruned.data());
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
}

#define SELECTION_SIZES RangeMultiplier(10)->Range(1000, 10'000'000)->Unit(benchmark::kMillisecond)
BENCHMARK(BM_fill_greedy_all_constraints)->SELECTION_SIZES;
BENCHMARK(BM_fill_greedy_mixed_granularities)->SELECTION_SIZES;
BENCHMARK(BM_reference_stop_at_first_misfit)->SELECTION_SIZES;
BENCHMARK(BM_std_sort_scores)->SELECTION_SIZES;

// Exact solver: uncorrelated scores (easy bounds), near-equal scores, and the classic
// hard case, strongly correlated importance (I = c + 100) with the removal pinned to
// [B - 20, B]; counters report nodes and whether the search finished.
enum class exact_instance { uncorrelated, near_equal, strongly_correlated_exact_sum };

void exact_case(benchmark::State& state, exact_instance kind) {
  const bool hard = kind != exact_instance::uncorrelated;
  const auto n = state.range(0);
  std::mt19937 rng(7);
  std::uniform_int_distribution<std::int64_t> cost(1, 1000);
  std::uniform_real_distribution<double> spread(0.0, 10.0), near(1.0, 1.01);
  std::vector<np::selection_item<double>> items;
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int64_t c = cost(rng);
    const double importance = kind == exact_instance::strongly_correlated_exact_sum ? static_cast<double>(c + 100)
                              : hard                                                  ? static_cast<double>(c) * near(rng)
                                                                                      : spread(rng);
    items.push_back({i % 4, np::item_kind::mlp_channel, i / 4, importance, c});
  }
  const std::int64_t budget = np::budget_from_fraction(0.3, total_of(items));
  np::exact_options o;
  o.max_nodes = 20'000'000;
  o.algorithm = state.range(1) == 0 ? np::exact_algorithm::branch_and_bound : np::exact_algorithm::dynamic_programming;
  if (kind == exact_instance::strongly_correlated_exact_sum) o.min_removed = budget - 20;
  double nodes = 0, proven = 1;
  for (auto _ : state) {
    np::selection_result<double> r;
    try {
      r = np::solve_exact<double>(items, budget, {}, o);
    } catch (const std::domain_error&) {
      state.SkipWithError("no selection removes an amount in [B - 20, B]");
      break;
    } catch (const std::invalid_argument&) {
      state.SkipWithError("beyond the solver's limits (dp_max_cells or max_items)");
      break;
    }
    nodes = static_cast<double>(r.nodes);
    proven = r.proven_optimal ? 1 : 0;
    benchmark::DoNotOptimize(r.objective);
  }
  state.counters["nodes"] = nodes;
  state.counters["proven"] = proven;
}

void BM_exact_uncorrelated(benchmark::State& state) { exact_case(state, exact_instance::uncorrelated); }
void BM_exact_near_equal_scores(benchmark::State& state) { exact_case(state, exact_instance::near_equal); }
void BM_exact_strongly_correlated_exact_sum(benchmark::State& state) {
  exact_case(state, exact_instance::strongly_correlated_exact_sum);
}
// Second argument: 0 = branch and bound, 1 = dynamic programming.
BENCHMARK(BM_exact_uncorrelated)->ArgsProduct({{20, 100, 1000, 4000}, {0, 1}})->Unit(benchmark::kMillisecond);
BENCHMARK(BM_exact_near_equal_scores)->ArgsProduct({{20, 80, 200, 1000}, {0, 1}})->Unit(benchmark::kMillisecond);
BENCHMARK(BM_exact_strongly_correlated_exact_sum)->ArgsProduct({{10, 30, 100, 300, 1000, 4000}, {0, 1}})
    ->Unit(benchmark::kMillisecond)->Iterations(1);

}  // namespace
