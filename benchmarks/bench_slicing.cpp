// Slicing throughput at Llama-3-8B layer shapes (wq/wo 4096×4096, ffn_gate
// 14336×4096, ffn_down 4096×14336; ggml row-major layout), typed float and raw
// ggml bytes, each against a memcpy of the same number of bytes interleaved in
// the same run (see bench_support.hpp).
//
// Goal: every gather reaches ≥ 80 % of memcpy's bandwidth, i.e. the
// counter ratio_to_memcpy ≥ 0.8 (memcpy CPU time / gather CPU time).
//   bench_slicing --benchmark_repetitions=3 --benchmark_report_aggregates_only=true
//
// Like for like: the gather and the memcpy each have their own source and
// destination buffers of the same size, and iteration i works on slot i of
// them (slots of the case's source tensor size, rotated), so neither finds its
// bytes in the caches from an earlier iteration, even when a tensor (q8_0 wq:
// 17 MiB) would fit the L3; the memcpy reads as many bytes as the gather writes.
#include <nashprune/tensor_slicing.hpp>

#include <benchmark/benchmark.h>

#include "bench_support.hpp"

#include <cstdint>
#include <cstring>
#include <functional>
#include <random>
#include <vector>

namespace {

using nashprune::index_range;
using row_major = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

constexpr std::int64_t n_embd = 4096, n_ff = 14336, head_dim = 128;

// Room for the largest tensor; the gather and the memcpy baseline each get a
// source and a destination buffer of this size.
constexpr std::size_t buffer_floats = static_cast<std::size_t>(n_ff * n_embd);

std::vector<float> random_buffer(std::uint32_t seed) {
  std::vector<float> b(buffer_floats);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1, 1);
  for (auto& x : b) x = dist(rng);
  return b;
}

struct buffer_pair {
  std::vector<float> source, destination;
};

buffer_pair& gather_buffers() {
  static buffer_pair buffers{random_buffer(1), std::vector<float>(buffer_floats, 0.0f)};
  return buffers;
}

buffer_pair& memcpy_buffers() {
  static buffer_pair buffers{random_buffer(3), std::vector<float>(buffer_floats, 0.0f)};
  return buffers;
}

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
  std::int64_t source_bytes;  // the whole source tensor
  std::int64_t kept_bytes;    // what the gather writes (and the memcpy copies)
  std::function<void(const std::byte* source, std::byte* destination)> run;
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
  const auto f32 = [](std::int64_t rows, std::int64_t cols) { return rows * cols * std::int64_t{4}; };
  const auto quant = [](nashprune::ggml_type t, std::int64_t rows, std::int64_t cols) {
    return rows * nashprune::row_bytes(t, cols);
  };
  const auto floats = [](const std::byte* p) { return reinterpret_cast<const float*>(p); };
  const auto out_floats = [](std::byte* p) { return reinterpret_cast<float*>(p); };
  const auto in_span = [](const std::byte* p, std::int64_t n) {
    return std::span<const std::byte>(p, static_cast<std::size_t>(n));
  };
  const auto out_span = [](std::byte* p, std::int64_t n) { return std::span<std::byte>(p, static_cast<std::size_t>(n)); };
  using nashprune::ggml_type;
  std::vector<slicing_case> cases;
  cases.push_back({"f32 wq rows (6 of 8 groups)", f32(n_embd, n_embd), f32(kept(q), n_embd),
                   [=](const std::byte* src, std::byte* dst) {
                     Eigen::Map<const row_major> in(floats(src), n_embd, n_embd);
                     Eigen::Map<row_major> out(out_floats(dst), kept(q), n_embd);
                     nashprune::gather_rows(in, q, out);
                   }});
  cases.push_back({"f32 wo cols (6 of 8 groups)", f32(n_embd, n_embd), f32(n_embd, kept(q)),
                   [=](const std::byte* src, std::byte* dst) {
                     Eigen::Map<const row_major> in(floats(src), n_embd, n_embd);
                     Eigen::Map<row_major> out(out_floats(dst), n_embd, kept(q));
                     nashprune::gather_cols(in, q, out);
                   }});
  cases.push_back({"f32 gate rows (70% channels)", f32(n_ff, n_embd), f32(kept(channels), n_embd),
                   [=](const std::byte* src, std::byte* dst) {
                     Eigen::Map<const row_major> in(floats(src), n_ff, n_embd);
                     Eigen::Map<row_major> out(out_floats(dst), kept(channels), n_embd);
                     nashprune::gather_rows(in, channels, out);
                   }});
  cases.push_back({"f32 down cols (70% single channels)", f32(n_embd, n_ff), f32(n_embd, kept(channels)),
                   [=](const std::byte* src, std::byte* dst) {
                     Eigen::Map<const row_major> in(floats(src), n_embd, n_ff);
                     Eigen::Map<row_major> out(out_floats(dst), n_embd, kept(channels));
                     nashprune::gather_cols(in, channels, out);
                   }});
  const std::int64_t q8_wq = quant(ggml_type::q8_0, n_embd, n_embd);
  cases.push_back({"q8_0 wq rows", q8_wq, quant(ggml_type::q8_0, kept(q), n_embd),
                   [=](const std::byte* src, std::byte* dst) {
                     const std::int64_t out_bytes = quant(ggml_type::q8_0, kept(q), n_embd);
                     nashprune::gather_ggml_rows({ggml_type::q8_0, n_embd, n_embd, 0, in_span(src, q8_wq)}, q,
                                                 {ggml_type::q8_0, n_embd, kept(q), 0, out_span(dst, out_bytes)});
                   }});
  cases.push_back({"q8_0 wo cols", q8_wq, quant(ggml_type::q8_0, n_embd, kept(q)),
                   [=](const std::byte* src, std::byte* dst) {
                     const std::int64_t out_bytes = quant(ggml_type::q8_0, n_embd, kept(q));
                     nashprune::gather_ggml_cols({ggml_type::q8_0, n_embd, n_embd, 0, in_span(src, q8_wq)}, q,
                                                 {ggml_type::q8_0, kept(q), n_embd, 0, out_span(dst, out_bytes)});
                   }});
  const std::int64_t q4_gate = quant(ggml_type::q4_k, n_ff, n_embd);
  cases.push_back({"q4_K gate rows", q4_gate, quant(ggml_type::q4_k, kept(channels), n_embd),
                   [=](const std::byte* src, std::byte* dst) {
                     const std::int64_t out_bytes = quant(ggml_type::q4_k, kept(channels), n_embd);
                     nashprune::gather_ggml_rows({ggml_type::q4_k, n_embd, n_ff, 0, in_span(src, q4_gate)}, channels,
                                                 {ggml_type::q4_k, n_embd, kept(channels), 0, out_span(dst, out_bytes)});
                   }});
  const std::int64_t q8_down = quant(ggml_type::q8_0, n_ff, n_embd);
  cases.push_back({"q8_0 down cols (32-channel units)", q8_down, quant(ggml_type::q8_0, n_embd, kept(channel_blocks)),
                   [=](const std::byte* src, std::byte* dst) {
                     const std::int64_t out_bytes = quant(ggml_type::q8_0, n_embd, kept(channel_blocks));
                     nashprune::gather_ggml_cols({ggml_type::q8_0, n_ff, n_embd, 0, in_span(src, q8_down)}, channel_blocks,
                                                 {ggml_type::q8_0, kept(channel_blocks), n_embd, 0, out_span(dst, out_bytes)});
                   }});
  return cases;
}

const std::vector<slicing_case>& cases() {
  static const std::vector<slicing_case> all = make_cases();
  return all;
}

/// Slot i (of the buffer's room for whole source tensors) of a buffer pair.
std::pair<const std::byte*, std::byte*> slot(buffer_pair& buffers, const slicing_case& c, std::int64_t i) {
  const auto room = static_cast<std::int64_t>(buffer_floats * sizeof(float));
  const std::int64_t offset = i % std::max<std::int64_t>(1, room / c.source_bytes) * c.source_bytes;
  return {reinterpret_cast<const std::byte*>(buffers.source.data()) + offset,
          reinterpret_cast<std::byte*>(buffers.destination.data()) + offset};
}

void BM_gather(benchmark::State& state) {
  const auto& c = cases()[static_cast<std::size_t>(state.range(0))];
  state.SetLabel(c.name);
  // Fill every buffer before timing starts.
  (void)gather_buffers();
  (void)memcpy_buffers();
  nashprune_bench::run_against_baseline(
      state, "ratio_to_memcpy",
      [&](std::int64_t i) {
        const auto [from, to] = slot(gather_buffers(), c, i);
        c.run(from, to);
        benchmark::ClobberMemory();
      },
      [&](std::int64_t i) {
        const auto [from, to] = slot(memcpy_buffers(), c, i);
        std::memcpy(to, from, static_cast<std::size_t>(c.kept_bytes));
        benchmark::ClobberMemory();
      });
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * c.kept_bytes);
}

BENCHMARK(BM_gather)->DenseRange(0, 7)->ArgName("case")->Unit(benchmark::kMillisecond);

}  // namespace
