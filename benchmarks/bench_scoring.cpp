// Scoring throughput at Llama-3-8B layer shapes (wq 4096×4096, ffn_gate
// 14336×4096, float, ggml/HF out_by_in storage = row-major rows of inputs),
// beside a plain memory read of the same buffers in the same run.
//
// Goal (issue 2): every scoring benchmark reaches ≥ 80 % of the bytes/s of
// BM_read_baseline with the same number of input matrices. Read the ratios of
// bytes_per_second from one run, e.g.
//   bench_scoring --benchmark_repetitions=3 --benchmark_enable_random_interleaving=true
// bytes_per_second is computed from CPU time, so time spent waiting for a core
// on a shared machine does not distort the ratios.
#include <nashprune/importance.hpp>

#include <benchmark/benchmark.h>

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

// Baseline: read every float of `matrices` buffers once (a vectorised sum each).
void BM_read_baseline(benchmark::State& state) {
  const auto& b = buffers(state.range(0));
  const int matrices = static_cast<int>(state.range(1));
  const std::vector<float>* inputs[] = {&b.w, &b.g, &b.h};
  for (auto _ : state) {
    float total = 0;
    for (int m = 0; m < matrices; ++m) {
      total += Eigen::Map<const Eigen::ArrayXf>(inputs[m]->data(), static_cast<Eigen::Index>(inputs[m]->size())).sum();
    }
    benchmark::DoNotOptimize(total);
  }
  set_bytes(state, b, matrices);
}

nashprune::matrix_axis lines_of(const benchmark::State& state) {
  return state.range(1) == 0 ? nashprune::matrix_axis::rows : nashprune::matrix_axis::cols;
}

void BM_magnitude_l1(benchmark::State& state) {
  const auto& b = buffers(state.range(0));
  for (auto _ : state) benchmark::DoNotOptimize(nashprune::magnitude_line_scores(view(b, b.w), lines_of(state)));
  set_bytes(state, b, 1);
}

void BM_magnitude_l2(benchmark::State& state) {
  const auto& b = buffers(state.range(0));
  for (auto _ : state) {
    benchmark::DoNotOptimize(
        nashprune::magnitude_line_scores(view(b, b.w), lines_of(state), nashprune::magnitude_norm::l2));
  }
  set_bytes(state, b, 1);
}

void BM_wanda(benchmark::State& state) {
  const auto& b = buffers(state.range(0));
  const Eigen::Map<const Eigen::VectorXf> norms(b.input_norms.data(), b.cols);
  for (auto _ : state) {
    benchmark::DoNotOptimize(
        nashprune::wanda_line_scores(view(b, b.w), norms, nashprune::matrix_axis::cols, lines_of(state)));
  }
  set_bytes(state, b, 1);
}

void BM_taylor_first(benchmark::State& state) {
  const auto& b = buffers(state.range(0));
  for (auto _ : state) {
    benchmark::DoNotOptimize(nashprune::taylor_first_line_scores(view(b, b.w), view(b, b.g), lines_of(state)));
  }
  set_bytes(state, b, 2);
}

void BM_taylor_second_fisher(benchmark::State& state) {
  const auto& b = buffers(state.range(0));
  for (auto _ : state) {
    benchmark::DoNotOptimize(nashprune::taylor_second_line_scores(view(b, b.w), view(b, b.g), lines_of(state)));
  }
  set_bytes(state, b, 2);
}

void BM_taylor_second_hessian(benchmark::State& state) {
  const auto& b = buffers(state.range(0));
  for (auto _ : state) {
    benchmark::DoNotOptimize(
        nashprune::taylor_second_line_scores(view(b, b.w), view(b, b.g), view(b, b.h), lines_of(state)));
  }
  set_bytes(state, b, 3);
}

// Args: {shape, matrices read} for the baseline; {shape, 0 = row totals / 1 = column totals}.
BENCHMARK(BM_read_baseline)->ArgsProduct({{wq, gate}, {1, 2, 3}})->Unit(benchmark::kMillisecond);
BENCHMARK(BM_magnitude_l1)->ArgsProduct({{wq, gate}, {0, 1}})->Unit(benchmark::kMillisecond);
BENCHMARK(BM_magnitude_l2)->ArgsProduct({{wq, gate}, {0, 1}})->Unit(benchmark::kMillisecond);
BENCHMARK(BM_wanda)->ArgsProduct({{wq, gate}, {0, 1}})->Unit(benchmark::kMillisecond);
BENCHMARK(BM_taylor_first)->ArgsProduct({{wq, gate}, {0, 1}})->Unit(benchmark::kMillisecond);
BENCHMARK(BM_taylor_second_fisher)->ArgsProduct({{wq, gate}, {0, 1}})->Unit(benchmark::kMillisecond);
BENCHMARK(BM_taylor_second_hessian)->ArgsProduct({{wq, gate}, {0, 1}})->Unit(benchmark::kMillisecond);

}  // namespace
