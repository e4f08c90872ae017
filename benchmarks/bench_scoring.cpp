// Scoring throughput at Llama-3-8B layer shapes (wq 4096×4096, ffn_gate
// 14336×4096, float, ggml/HF out_by_in storage = row-major rows of inputs),
// each against a plain memory read of the same buffers (every float of the
// same matrices once, a vectorised sum each) interleaved in the same run.
//
// Goal: every scoring benchmark reaches ≥ 80 % of the read
// bandwidth, i.e. the counter ratio_to_read ≥ 0.8 (read CPU time / scoring CPU
// time over the same bytes, see bench_support.hpp). The last argument forces the
// SIMD target (0 portable, 1 AVX2+FMA, 2 AVX-512; skipped where unsupported).
//   bench_scoring --benchmark_repetitions=3 --benchmark_report_aggregates_only=true
// Both matrices exceed the L3 cache, so scorer and read both stream from memory.
#include <nashprune/importance.hpp>

#include <benchmark/benchmark.h>

#include "bench_support.hpp"

#include <cstdint>
#include <random>
#include <vector>

namespace {

using row_major = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using weight_map = Eigen::Map<const row_major>;

enum shape_id : std::int64_t { wq = 0, gate = 1 };
constexpr Eigen::Index shape_rows[] = {4096, 14336};
constexpr Eigen::Index shape_cols = 4096;

// One set of input buffers per shape (weights, gradients, Hessian diagonal),
// filled once and shared by every benchmark of that shape.
struct layer_buffers {
  std::vector<float> w, g, h;
  std::vector<float> input_norms;
  Eigen::Index rows = 0, cols = 0;
};

const layer_buffers& buffers(std::int64_t shape) {
  static layer_buffers cache[2];
  layer_buffers& b = cache[shape];
  if (b.w.empty()) {
    b.rows = shape_rows[shape];
    b.cols = shape_cols;
    std::mt19937 rng(static_cast<std::uint32_t>(shape + 1));
    std::uniform_real_distribution<float> dist(-1, 1);
    const auto n = static_cast<std::size_t>(b.rows * b.cols);
    for (auto* v : {&b.w, &b.g, &b.h}) {
      v->resize(n);
      for (auto& x : *v) x = dist(rng);
    }
    b.input_norms.resize(static_cast<std::size_t>(b.cols));
    for (auto& x : b.input_norms) x = 1.0f + dist(rng) * 0.5f;
  }
  return b;
}

weight_map view(const layer_buffers& b, const std::vector<float>& data) {
  return weight_map(data.data(), b.rows, b.cols);
}

void set_bytes(benchmark::State& state, const layer_buffers& b, int matrices) {
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * b.rows * b.cols *
                          static_cast<std::int64_t>(sizeof(float)) * matrices);
}

// The baseline: read every float of the first `matrices` buffers once.
void read_matrices(const layer_buffers& b, int matrices) {
  const std::vector<float>* inputs[] = {&b.w, &b.g, &b.h};
  float total = 0;
  for (int m = 0; m < matrices; ++m) {
    total += Eigen::Map<const Eigen::ArrayXf>(inputs[m]->data(), static_cast<Eigen::Index>(inputs[m]->size())).sum();
  }
  benchmark::DoNotOptimize(total);
}

/// Args {shape, 0 = row totals / 1 = column totals, target}: runs `score(b,
/// lines, target)` against a read of the `matrices` inputs it reads.
template <typename Score>
void run_scoring(benchmark::State& state, int matrices, Score&& score) {
  const auto& b = buffers(state.range(0));
  const auto lines = state.range(1) == 0 ? nashprune::matrix_axis::rows : nashprune::matrix_axis::cols;
  const auto target = static_cast<nashprune::simd_target>(state.range(2) + 1);
  if (nashprune::detail::resolve_simd_target<float>(target) != target) {
    state.SkipWithError("SIMD target not supported by this CPU");
    return;
  }
  nashprune_bench::run_against_baseline(
      state, "ratio_to_read", [&](std::int64_t) { benchmark::DoNotOptimize(score(b, lines, target)); },
      [&](std::int64_t) { read_matrices(b, matrices); });
  set_bytes(state, b, matrices);
}

void BM_magnitude_l1(benchmark::State& state) {
  run_scoring(state, 1, [](const layer_buffers& b, nashprune::matrix_axis lines, nashprune::simd_target target) {
    return nashprune::magnitude_line_scores(view(b, b.w), lines, nashprune::magnitude_norm::l1, target);
  });
}

void BM_magnitude_l2(benchmark::State& state) {
  run_scoring(state, 1, [](const layer_buffers& b, nashprune::matrix_axis lines, nashprune::simd_target target) {
    return nashprune::magnitude_line_scores(view(b, b.w), lines, nashprune::magnitude_norm::l2, target);
  });
}

void BM_wanda(benchmark::State& state) {
  run_scoring(state, 1, [](const layer_buffers& b, nashprune::matrix_axis lines, nashprune::simd_target target) {
    const Eigen::Map<const Eigen::VectorXf> norms(b.input_norms.data(), b.cols);
    return nashprune::wanda_line_scores(view(b, b.w), norms, nashprune::matrix_axis::cols, lines, target);
  });
}

void BM_taylor_first(benchmark::State& state) {
  run_scoring(state, 2, [](const layer_buffers& b, nashprune::matrix_axis lines, nashprune::simd_target target) {
    return nashprune::taylor_first_line_scores(view(b, b.w), view(b, b.g), lines, target);
  });
}

void BM_taylor_second_fisher(benchmark::State& state) {
  run_scoring(state, 2, [](const layer_buffers& b, nashprune::matrix_axis lines, nashprune::simd_target target) {
    return nashprune::taylor_second_line_scores(view(b, b.w), view(b, b.g), lines, target);
  });
}

void BM_taylor_second_hessian(benchmark::State& state) {
  run_scoring(state, 3, [](const layer_buffers& b, nashprune::matrix_axis lines, nashprune::simd_target target) {
    return nashprune::taylor_second_line_scores(view(b, b.w), view(b, b.g), view(b, b.h), lines, target);
  });
}

// Args: {shape (0 wq, 1 gate), 0 = row totals / 1 = column totals, target (0 portable, 1 avx2_fma, 2 avx512)}.
#define NASHPRUNE_SCORING_BENCHMARK(name)                                   \
  BENCHMARK(name)                                                           \
      ->ArgsProduct({{wq, gate}, {0, 1}, {0, 1, 2}})                        \
      ->ArgNames({"shape", "col_totals", "target"})                         \
      ->Unit(benchmark::kMillisecond)
NASHPRUNE_SCORING_BENCHMARK(BM_magnitude_l1);
NASHPRUNE_SCORING_BENCHMARK(BM_magnitude_l2);
NASHPRUNE_SCORING_BENCHMARK(BM_wanda);
NASHPRUNE_SCORING_BENCHMARK(BM_taylor_first);
NASHPRUNE_SCORING_BENCHMARK(BM_taylor_second_fisher);
NASHPRUNE_SCORING_BENCHMARK(BM_taylor_second_hessian);

}  // namespace
