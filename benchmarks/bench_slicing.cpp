// Slicing throughput at Llama-3-8B layer shapes (wq/wo 4096×4096, ffn_gate
// 14336×4096, ffn_down 4096×14336; ggml row-major layout), typed float and raw
// ggml bytes, beside a memcpy of the same number of bytes in the same run.
//
// Goal (issue 2): every gather reaches ≥ 80 % of the bytes/s of BM_memcpy with
// the same case argument. Read the ratios from one run, e.g.
//   bench_slicing --benchmark_repetitions=3 --benchmark_enable_random_interleaving=true
// bytes_per_second is computed from CPU time, so time spent waiting for a core
// on a shared machine does not distort the ratios.
#include <nashprune/tensor_slicing.hpp>

#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstring>
#include <functional>
#include <random>
#include <vector>

namespace {

using nashprune::index_range;
using row_major = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

constexpr std::int64_t n_embd = 4096, n_ff = 14336, head_dim = 128;

// One source buffer (the largest tensor) and one destination buffer, shared by
// every case; raw-byte cases read the same memory as ggml blocks.
std::vector<float>& source_buffer() {
  static std::vector<float> buffer = [] {
    std::vector<float> b(static_cast<std::size_t>(n_ff * n_embd));
    std::mt19937 rng(1);
    std::uniform_real_distribution<float> dist(-1, 1);
    for (auto& x : b) x = dist(rng);
    return b;
  }();
  return buffer;
}

std::vector<float>& destination_buffer() {
  static std::vector<float> buffer(static_cast<std::size_t>(n_ff * n_embd), 0.0f);
  return buffer;
}

std::span<const std::byte> source_bytes() { return std::as_bytes(std::span(source_buffer())); }
std::span<std::byte> destination_bytes() { return std::as_writable_bytes(std::span(destination_buffer())); }

// Llama-3-8B attention: 32 q heads over 8 kv heads; remove kv groups 1 and 5.
std::vector<index_range> kept_q_ranges() {
  const nashprune::attention_geometry geometry(32, 8, head_dim);
  const std::vector<std::int64_t> removed{1, 5};
  return geometry.kept_ranges(geometry.plan_removing(nashprune::head_granularity::whole_groups, removed),
                              nashprune::tensor_role::q);
}

// 70 % of the MLP channels, chosen at random in units of `unit` channels.
std::vector<index_range> kept_channel_ranges(std::int64_t unit) {
  std::mt19937 rng(2);
  std::bernoulli_distribution keep(0.7);
  std::vector<std::int64_t> units;
  for (std::int64_t u = 0; u < n_ff / unit; ++u)
    if (keep(rng)) units.push_back(u);
  return nashprune::unit_ranges(units, unit);
}

struct slicing_case {
  const char* name;
  std::int64_t kept_bytes;
  std::function<void()> run;
};

std::vector<slicing_case> make_cases() {
  const auto q = kept_q_ranges();
  const auto channels = kept_channel_ranges(1);
  const auto channel_blocks = kept_channel_ranges(32);
  const auto kept = [](const std::vector<index_range>& ranges) {
    std::int64_t total = 0;
    for (const auto& r : ranges) total += r.size;
    return total;
  };
  const float* src = source_buffer().data();
  float* dst = destination_buffer().data();
  const auto f32 = [](std::int64_t rows, std::int64_t cols) { return rows * cols * std::int64_t{4}; };
  const auto quant = [](nashprune::ggml_type t, std::int64_t rows, std::int64_t cols) {
    return rows * nashprune::row_bytes(t, cols);
  };
  using nashprune::ggml_type;
  std::vector<slicing_case> cases;
  cases.push_back({"f32 wq rows (6 of 8 groups)", f32(kept(q), n_embd), [=] {
                     Eigen::Map<const row_major> in(src, n_embd, n_embd);
                     Eigen::Map<row_major> out(dst, kept(q), n_embd);
                     nashprune::gather_rows(in, q, out);
                   }});
  cases.push_back({"f32 wo cols (6 of 8 groups)", f32(n_embd, kept(q)), [=] {
                     Eigen::Map<const row_major> in(src, n_embd, n_embd);
                     Eigen::Map<row_major> out(dst, n_embd, kept(q));
                     nashprune::gather_cols(in, q, out);
                   }});
  cases.push_back({"f32 gate rows (70% channels)", f32(kept(channels), n_embd), [=] {
                     Eigen::Map<const row_major> in(src, n_ff, n_embd);
                     Eigen::Map<row_major> out(dst, kept(channels), n_embd);
                     nashprune::gather_rows(in, channels, out);
                   }});
  cases.push_back({"f32 down cols (70% channels)", f32(n_embd, kept(channels)), [=] {
                     Eigen::Map<const row_major> in(src, n_embd, n_ff);
                     Eigen::Map<row_major> out(dst, n_embd, kept(channels));
                     nashprune::gather_cols(in, channels, out);
                   }});
  cases.push_back({"q8_0 wq rows", quant(ggml_type::q8_0, kept(q), n_embd), [=] {
                     nashprune::gather_ggml_rows({ggml_type::q8_0, n_embd, n_embd, 0, source_bytes()}, q,
                                                 {ggml_type::q8_0, n_embd, kept(q), 0, destination_bytes()});
                   }});
  cases.push_back({"q8_0 wo cols", quant(ggml_type::q8_0, n_embd, kept(q)), [=] {
                     nashprune::gather_ggml_cols({ggml_type::q8_0, n_embd, n_embd, 0, source_bytes()}, q,
                                                 {ggml_type::q8_0, kept(q), n_embd, 0, destination_bytes()});
                   }});
  cases.push_back({"q4_K gate rows", quant(ggml_type::q4_k, kept(channels), n_embd), [=] {
                     nashprune::gather_ggml_rows({ggml_type::q4_k, n_embd, n_ff, 0, source_bytes()}, channels,
                                                 {ggml_type::q4_k, n_embd, kept(channels), 0, destination_bytes()});
                   }});
  cases.push_back({"q8_0 down cols (32-channel units)", quant(ggml_type::q8_0, n_embd, kept(channel_blocks)), [=] {
                     nashprune::gather_ggml_cols(
                         {ggml_type::q8_0, n_ff, n_embd, 0, source_bytes()}, channel_blocks,
                         {ggml_type::q8_0, kept(channel_blocks), n_embd, 0, destination_bytes()});
                   }});
  return cases;
}

const std::vector<slicing_case>& cases() {
  static const std::vector<slicing_case> all = make_cases();
  return all;
}

void BM_memcpy(benchmark::State& state) {
  const auto& c = cases()[static_cast<std::size_t>(state.range(0))];
  state.SetLabel(c.name);
  for (auto _ : state) {
    std::memcpy(destination_buffer().data(), source_buffer().data(), static_cast<std::size_t>(c.kept_bytes));
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * c.kept_bytes);
}

void BM_gather(benchmark::State& state) {
  const auto& c = cases()[static_cast<std::size_t>(state.range(0))];
  state.SetLabel(c.name);
  for (auto _ : state) {
    c.run();
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * c.kept_bytes);
}

BENCHMARK(BM_memcpy)->DenseRange(0, 7)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_gather)->DenseRange(0, 7)->Unit(benchmark::kMillisecond);

}  // namespace
