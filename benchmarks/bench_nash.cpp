// Benchmarks of nashprune/nash_solvers.hpp: every variant on random PSD games
// shaped like real layers (cosine redundancy of 512 calibration tokens, the
// seed's §3.1 default; importance normalised per layer), one layer of n heads
// and a batch of 32 layers × 32 heads (Llama-3-8B's shape). Counters: the
// iterations used and the exploitability ε reached; the seed baseline runs with
// its own defaults, so its ε counter is what the seed would hand on.
#include <benchmark/benchmark.h>

#include "bench_support.hpp"

#include <map>
#include <nashprune/nash_solvers.hpp>
#include <vector>

#include "../tests/nash_test_games.hpp"

namespace {

using nashprune_test::owned_game;

constexpr Eigen::Index calibration_tokens = 512;

const owned_game<double>& layer_game(Eigen::Index n, std::uint32_t seed = 1) {
  static std::map<std::pair<Eigen::Index, std::uint32_t>, owned_game<double>> cache;
  auto [it, inserted] = cache.try_emplace({n, seed});
  if (inserted) it->second = nashprune_test::random_psd_game<double>(n, seed, 0.4, 0.5, calibration_tokens);
  return it->second;
}

std::vector<nashprune::nash_game<double>> batch_games() {
  std::vector<nashprune::nash_game<double>> layers;
  for (std::uint32_t l = 0; l < 32; ++l) layers.push_back(layer_game(32, 100 + l).view());
  return layers;
}

void report(benchmark::State& state, const std::vector<nashprune::nash_solution<double>>& solutions) {
  double worst = 0;
  double iterations = 0;
  bool converged = true;
  for (const auto& solution : solutions) {
    worst = std::max(worst, double(solution.exploitability));
    iterations = std::max(iterations, double(solution.iterations));
    converged = converged && solution.converged;
  }
  state.counters["iterations"] = iterations;
  state.counters["exploitability"] = worst;
  state.counters["converged"] = converged ? 1 : 0;
}

template <typename Solver>
void bench_layer(benchmark::State& state, Solver solver) {
  const auto game = layer_game(state.range(0)).view();
  nashprune::nash_solution<double> solution;
  for (auto _ : state) {
    solution = solver.solve(game);
    benchmark::DoNotOptimize(solution.s.data());
  }
  report(state, {solution});
}

template <typename Solver>
void bench_batch(benchmark::State& state, Solver solver) {
  const auto layers = batch_games();
  std::vector<nashprune::nash_solution<double>> solutions;
  for (auto _ : state) {
    solutions = solver.solve(std::span<const nashprune::nash_game<double>>(layers));
    benchmark::DoNotOptimize(solutions.data());
  }
  report(state, solutions);
}

constexpr double goal = 1e-8;
constexpr double batch_goal = 1e-10;

void seed_layer(benchmark::State& s) { bench_layer(s, nashprune::seed_gradient_ascent<double>()); }
void projected_gradient_layer(benchmark::State& s) {
  bench_layer(s, nashprune::projected_gradient<double>({goal, 1000000}));
}
void best_response_layer(benchmark::State& s) { bench_layer(s, nashprune::best_response_sweeps<double>({goal})); }
void accelerated_layer(benchmark::State& s) {
  bench_layer(s, nashprune::accelerated_projected_gradient<double>({goal, 100000}));
}
void active_set_layer(benchmark::State& s) { bench_layer(s, nashprune::active_set_newton<double>({goal})); }

void seed_batch(benchmark::State& s) { bench_batch(s, nashprune::seed_gradient_ascent<double>()); }
void projected_gradient_batch(benchmark::State& s) {
  bench_batch(s, nashprune::projected_gradient<double>({batch_goal, 1000000}));
}
void best_response_batch(benchmark::State& s) { bench_batch(s, nashprune::best_response_sweeps<double>({batch_goal})); }
// The same with the sweep kernel forced to the portable (Eigen, SSE2) loop: the
// ratio to best_response_batch is what the AVX2/AVX-512 kernel buys.
void best_response_batch_portable(benchmark::State& s) {
  nashprune::nash_iteration_options<double> options{batch_goal};
  options.simd = nashprune::simd_target::portable;
  bench_batch(s, nashprune::best_response_sweeps<double>(options));
}
void accelerated_batch(benchmark::State& s) {
  bench_batch(s, nashprune::accelerated_projected_gradient<double>({batch_goal, 100000}));
}
void active_set_batch(benchmark::State& s) { bench_batch(s, nashprune::active_set_newton<double>({batch_goal})); }

void sizes(benchmark::internal::Benchmark* b) {
  for (const int n : {8, 32, 128, 512, 2048}) b->Arg(n);
  b->Unit(benchmark::kMicrosecond);
}

}  // namespace

BENCHMARK(seed_layer)->Apply(sizes);
BENCHMARK(projected_gradient_layer)->Apply(sizes);
BENCHMARK(best_response_layer)->Apply(sizes);
BENCHMARK(accelerated_layer)->Apply(sizes);
BENCHMARK(active_set_layer)->Apply(sizes);
BENCHMARK(seed_batch)->Unit(benchmark::kMicrosecond);
BENCHMARK(projected_gradient_batch)->Unit(benchmark::kMicrosecond);
BENCHMARK(best_response_batch)->Unit(benchmark::kMicrosecond);
BENCHMARK(best_response_batch_portable)->Unit(benchmark::kMicrosecond);
BENCHMARK(accelerated_batch)->Unit(benchmark::kMicrosecond);
BENCHMARK(active_set_batch)->Unit(benchmark::kMicrosecond);
