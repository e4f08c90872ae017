// Gram accumulation over attention-head activations: ours against naive loops,
// Eigen and OpenBLAS, plus OpenBLAS sgemm 1024³ as the machine's practical peak,
// all in one binary so results are read as same-run ratios.
//
// Names: Gram/<impl>/<n_head>/<reduction length>/head_dim:<d>/threads:<t>.
// Like for like: every contender starts from the same token-major batches of
// 512 tokens (llama.cpp's default ubatch) × (n·d) floats, the attention output
// as an engine holds it, head i at columns [i·d, i·d + d) of each token row, and
// ends with the same double n × n Gram. One 64-byte aligned batch buffer is
// re-read until L = tokens · d entries per head are accumulated. NASHPRUNE_BENCH_BATCH_TOKENS
// sets another batch size (e.g. 8192: a 16 MiB batch at n = 8, cache bound).
//  - simd:      head_redundancy<float>::add_batch straight on the token-major
//               batch (automatic target: AVX-512 where present); simd_avx2 and
//               portable force the other targets of the same kernel.
//  - naive:     plain loops over the token-major batch, double sums.
//  - eigen:     in place, no copy: per token, its n × d slab S_t (row-major
//               Map) gives batch += S_t·S_tᵀ. eigen_gather instead copies the
//               batch head-major (n × tokens·d, timed) and forms one A·Aᵀ: slower.
//  - openblas:  in place, no copy: one cblas_ssyrk per token on S_t (k = d,
//               lower triangle, beta = 1). No single BLAS call reads the batch
//               in place: head i's entries form a T × d block of row stride n·d,
//               a 3-index pattern no matrix view covers. The alternatives are
//               openblas_gather (timed head-major copy, then one ssyrk with
//               k = tokens·d) and the full (n·d)² covariance Xᵀ·X whose d × d
//               diagonal-block traces are G (d times the work); per-token ssyrk
//               measured fastest of them at every shape tried (n 8–128, d 64/128).
// Baselines add each batch's float product into a double total, like ours.
// GFLOPS counts 2·n²·L for every impl (the dense A·Aᵀ count), so GFLOPS ratios
// are time ratios; ssyrk and ours compute only the n(n+1)/2 lower pairs.
// threads:2 splits the batches between two caller threads, each with its own
// accumulator (and scratch), merged at the end; this is how head_redundancy is
// meant to be parallelised (the header owns no thread), and every contender,
// OpenBLAS included (with one OpenBLAS thread per caller thread), gets the same
// split. openblas_threads instead hands the serial stream to OpenBLAS's own two
// threads (per-token ssyrk, as openblas). Eigen's products parallelise only through
// OpenMP, which this build does not enable, so eigen runs the caller split.
//
// CKA/<impl>/<n_head>/<tokens>/head_dim:<d>: head_cka's accumulation, the Gram
// of the n·d columns (M = Σ_t x_t x_tᵀ, (n·d)² doubles), over the same
// token-major 512-token batches, single-threaded. simd: head_cka<float>
// (transposes each batch, then our kernel); eigen: the batch's
// selfadjointView<Lower>().rankUpdate(Xᵀ) in place, added to a double total;
// openblas: cblas_ssyrk on Xᵀ in place (no copy: here a plain matrix view
// exists), added likewise. GFLOPS counts 2·(n·d)²·tokens.
//
// Roofline (read the fractions from one run): Roofline/peak_fma/threads:<t> is
// the compute roof, register-only FMA chains on the widest target;
// Roofline/read/<shape> the memory roof of a shape, its batches streamed once
// and summed with the widest loads (the same bytes, from the same cache level).
// Every Gram row carries roofline_fraction = (least time) / (its time), the
// least time being max(useful flops / peak, bytes / read rate), i.e. achieved /
// min(peak, bandwidth × intensity), with useful flops n(n+1)·L (the lower half
// of G, which is what ours and ssyrk execute) and bytes 4·n·L (each activation
// once). So no row can exceed 1, and a contender at fraction f can be beaten by
// at most 1/f: where 4 × OpenBLAS's fraction exceeds 1, "4× OpenBLAS" is
// physically out of reach on this machine. Rates of rows a filter left out are
// measured before the timed loop. simd_misaligned / simd_avx2_misaligned run
// on the same batch placed 16 bytes past a 64-byte boundary.
// Times are process CPU time (all threads): the machine is shared, and wall time
// under load measures the neighbours. So GFLOPS is per busy core-second, and
// the two-thread rows show what parallel overhead costs, not wall speed-up.
#include <nashprune/head_cka.hpp>
#include <nashprune/head_redundancy.hpp>

#include <benchmark/benchmark.h>

#include "bench_support.hpp"

#include <time.h>

#include <algorithm>
#include <cstdlib>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <new>
#include <random>
#include <string>
#include <thread>
#include <vector>

#if defined(NASHPRUNE_BENCH_HAVE_OPENBLAS)
#include <cblas.h>
#endif

namespace {

using Eigen::Index;
using RowMatrixf = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// Tokens per batch: 512, or NASHPRUNE_BENCH_BATCH_TOKENS from the environment.
Index batch_token_count() {
  static const Index count = [] {
    const char* text = std::getenv("NASHPRUNE_BENCH_BATCH_TOKENS");
    const long long parsed = text != nullptr ? std::atoll(text) : 0;
    return parsed > 0 ? static_cast<Index>(parsed) : Index{512};
  }();
  return count;
}

/// A 64-byte aligned float buffer, as an engine's tensor allocator gives
/// (ggml aligns its CPU buffers); Eigen's own allocation here is only 16-byte
/// aligned, which costs every contender's unaligned 64-byte loads.
struct aligned_floats {
  std::unique_ptr<float, decltype(&std::free)> data{nullptr, &std::free};
  explicit aligned_floats(Index count) {
    const auto bytes = (static_cast<std::size_t>(count) * sizeof(float) + 63) / 64 * 64;
    data.reset(static_cast<float*>(std::aligned_alloc(64, bytes)));
    if (!data) throw std::bad_alloc();
  }
};

struct gram_problem {
  Index n = 0;
  Index d = 0;
  Index total_tokens = 0;   // L / d
  Index batch_tokens = 0;   // tokens per batch
  Index offset_floats = 0;  // the batch starts this many floats past a 64-byte boundary
  aligned_floats storage;
  Eigen::Map<RowMatrixf> token_major;  // batch_tokens × (n·d): the only input every impl gets

  gram_problem(Index n_head, Index head_dim, Index reduction_length, Index offset = 0)
      : n(n_head), d(head_dim), total_tokens(reduction_length / head_dim),
        batch_tokens(std::min(total_tokens, batch_token_count())), offset_floats(offset),
        storage(batch_tokens * n * d + offset),
        token_major(storage.data.get() + offset, batch_tokens, n * d) {
    std::mt19937 rng(1);
    std::normal_distribution<float> normal(0.1f, 1.0f);
    for (Index i = 0; i < token_major.size(); ++i) token_major.data()[i] = normal(rng);
  }

  /// Calls body(tokens) for the batches [begin, end) of the stream; batch b
  /// is the first `tokens` rows of the buffer.
  void for_batches(Index begin, Index end, const std::function<void(Index)>& body) const {
    for (Index b = begin; b < end; ++b) {
      body(std::min(batch_tokens, total_tokens - b * batch_tokens));
    }
  }
  [[nodiscard]] Index batches() const { return (total_tokens + batch_tokens - 1) / batch_tokens; }

  /// Copies the first `tokens` tokens head-major: row i of `out` (n × tokens·d,
  /// row-major) is head i flattened over those tokens. What a GEMM needs.
  void gather_head_major(Index tokens, RowMatrixf& out) const {
    out.resize(n, tokens * d);
    for (Index t = 0; t < tokens; ++t) {
      const float* row = token_major.row(t).data();
      for (Index i = 0; i < n; ++i) std::copy_n(row + i * d, d, out.row(i).data() + t * d);
    }
  }
};

/// Σ_{i>=j} G_ij: some impls fill only the lower triangle.
double lower_sum(const Eigen::MatrixXd& gram) {
  return Eigen::MatrixXd(gram.triangularView<Eigen::Lower>()).sum();
}

/// One accumulator per implementation; add(tokens) accumulates the first
/// `tokens` tokens of the buffer.
template <nashprune::simd_target Target>
struct simd_impl {
  nashprune::head_redundancy<float> acc;
  const gram_problem* p;
  explicit simd_impl(const gram_problem& problem)
      : acc(problem.n, problem.d, {.target = Target}), p(&problem) {}
  void add(Index tokens) { acc.add_batch(p->token_major.topRows(tokens)); }
  void merge(const simd_impl& other) { acc.merge(other.acc); }
  [[nodiscard]] double checksum() const { return lower_sum(acc.gram()); }
};

/// The double total and merge shared by the baselines.
struct double_gram {
  Eigen::MatrixXd gram;
  const gram_problem* p;
  explicit double_gram(const gram_problem& problem)
      : gram(Eigen::MatrixXd::Zero(problem.n, problem.n)), p(&problem) {}
  void merge(const double_gram& other) { gram += other.gram; }
  [[nodiscard]] double checksum() const { return lower_sum(gram); }
};

struct naive_impl : double_gram {
  using double_gram::double_gram;
  void add(Index tokens) {
    const Index n = p->n, d = p->d;
    for (Index t = 0; t < tokens; ++t) {
      const float* row = p->token_major.row(t).data();
      for (Index i = 0; i < n; ++i) {
        for (Index j = 0; j <= i; ++j) {
          double dot = 0;
          for (Index k = 0; k < d; ++k) dot += static_cast<double>(row[i * d + k]) * row[j * d + k];
          gram(i, j) += dot;
        }
      }
    }
  }
};

struct eigen_gather_impl : double_gram {
  RowMatrixf head_major;
  Eigen::MatrixXf batch;
  using double_gram::double_gram;
  void add(Index tokens) {
    p->gather_head_major(tokens, head_major);
    batch.noalias() = head_major * head_major.transpose();
    gram += batch.cast<double>();
  }
};

/// In place, no gather: batch += S_t·S_tᵀ for each token's n × d slab S_t,
/// the product formed by SlabUpdate::add(slab, n, d, batch).
template <typename SlabUpdate>
struct per_token_impl : double_gram {
  Eigen::MatrixXf batch;
  explicit per_token_impl(const gram_problem& problem)
      : double_gram(problem), batch(problem.n, problem.n) {}
  void add(Index tokens) {
    batch.setZero();
    for (Index t = 0; t < tokens; ++t) SlabUpdate::add(p->token_major.row(t).data(), p->n, p->d, batch);
    gram += batch.cast<double>();
  }
};

struct eigen_slab_update {
  static void add(const float* slab, Index n, Index d, Eigen::MatrixXf& batch) {
    const Eigen::Map<const RowMatrixf> s(slab, n, d);
    batch.noalias() += s * s.transpose();
  }
};
using eigen_impl = per_token_impl<eigen_slab_update>;

#if defined(NASHPRUNE_BENCH_HAVE_OPENBLAS)
struct openblas_gather_impl : double_gram {
  RowMatrixf head_major;
  Eigen::MatrixXf batch;
  explicit openblas_gather_impl(const gram_problem& problem) : double_gram(problem), batch(problem.n, problem.n) {}
  void add(Index tokens) {
    p->gather_head_major(tokens, head_major);
    const int n = static_cast<int>(p->n);
    const int k = static_cast<int>(head_major.cols());
    // Column-major C = A·Aᵀ, A the n × k head-major block (row-major = lda k).
    cblas_ssyrk(CblasColMajor, CblasLower, CblasTrans, n, k, 1.0f, head_major.data(), k, 0.0f,
                batch.data(), n);
    gram += batch.cast<double>();
  }
};

/// A rank-d update (lower triangle) per token.
struct openblas_slab_update {
  static void add(const float* slab, Index n, Index d, Eigen::MatrixXf& batch) {
    cblas_ssyrk(CblasColMajor, CblasLower, CblasTrans, static_cast<int>(n), static_cast<int>(d),
                1.0f, slab, static_cast<int>(d), 1.0f, batch.data(), static_cast<int>(n));
  }
};
using openblas_impl = per_token_impl<openblas_slab_update>;
#endif

// ---- The roofline: what this machine can do at all, measured in this run.
// Compute roof: independent FMA chains held in registers on the widest target
// (no memory traffic). Memory roof: the batches streamed once each and summed
// (every byte a Gram benchmark must read, read as fast as the widest loads go,
// from whichever cache level the shape's batch buffer lives in).
#if defined(NASHPRUNE_SIMD_X86)
NASHPRUNE_TARGET_REGION_BEGIN("avx512f,avx2,fma")
namespace roof_avx512 {
struct simd_ops {
  using vec = __m512;
  static constexpr int lanes = 16;
  static vec set1(float x) { return _mm512_set1_ps(x); }
  static vec load(const float* p) { return _mm512_loadu_ps(p); }
  static vec add(vec a, vec b) { return _mm512_add_ps(a, b); }
  static vec fma(vec a, vec b, vec c) { return _mm512_fmadd_ps(a, b, c); }
  static void store(float* p, vec v) { _mm512_storeu_ps(p, v); }
};
#include "roofline_kernels.inl"
}  // namespace roof_avx512
NASHPRUNE_TARGET_REGION_END
NASHPRUNE_TARGET_REGION_BEGIN("avx2,fma")
namespace roof_avx2 {
struct simd_ops {
  using vec = __m256;
  static constexpr int lanes = 8;
  static vec set1(float x) { return _mm256_set1_ps(x); }
  static vec load(const float* p) { return _mm256_loadu_ps(p); }
  static vec add(vec a, vec b) { return _mm256_add_ps(a, b); }
  static vec fma(vec a, vec b, vec c) { return _mm256_fmadd_ps(a, b, c); }
  static void store(float* p, vec v) { _mm256_storeu_ps(p, v); }
};
#include "roofline_kernels.inl"
}  // namespace roof_avx2
NASHPRUNE_TARGET_REGION_END
#endif

/// The widest target's FMA chains: flops done (stored in `flops`), result returned.
float widest_fma_chains(std::int64_t steps, float seed, double& flops) {
#if defined(NASHPRUNE_SIMD_X86)
  const auto& cpu = nashprune::detail::detected_cpu_features();
  if (cpu.avx512) {
    flops = 2.0 * roof_avx512::chains * roof_avx512::simd_ops::lanes * static_cast<double>(steps);
    return roof_avx512::fma_chains(steps, seed);
  }
  if (cpu.avx2_fma) {
    flops = 2.0 * roof_avx2::chains * roof_avx2::simd_ops::lanes * static_cast<double>(steps);
    return roof_avx2::fma_chains(steps, seed);
  }
#endif
  float acc[8];
  for (int c = 0; c < 8; ++c) acc[c] = seed + static_cast<float>(c);
  for (std::int64_t s = 0; s < steps; ++s) {
    for (float& a : acc) a = std::fma(a, 0.999999f, 1e-6f);
  }
  flops = 2.0 * 8 * static_cast<double>(steps);
  return acc[0] + acc[7];
}

float widest_read_sum(const float* p, Index count) {
#if defined(NASHPRUNE_SIMD_X86)
  const auto& cpu = nashprune::detail::detected_cpu_features();
  if (cpu.avx512) return roof_avx512::read_sum(p, count);
  if (cpu.avx2_fma) return roof_avx2::read_sum(p, count);
#endif
  float sum = 0;
  for (Index k = 0; k < count; ++k) sum += p[k];
  return sum;
}

double process_cpu_seconds() {
  timespec now{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &now);
  return static_cast<double>(now.tv_sec) + 1e-9 * static_cast<double>(now.tv_nsec);
}

/// Calls body(first, last) on the batch range [0, batches) split like run_gram:
/// one caller thread, or the second half on a worker thread.
void split_batches(const gram_problem& p, int threads, const std::function<void(Index, Index)>& body) {
  if (threads == 1) return body(0, p.batches());
  const Index half = p.batches() / 2;
  std::thread worker([&] { body(half, p.batches()); });
  body(0, half);
  worker.join();
}

/// One pass of the memory roof: every batch's bytes read once; returns bytes read.
double stream_batches(const gram_problem& p, int threads, float& sink) {
  float sums[2] = {0, 0};
  split_batches(p, threads, [&](Index first, Index last) {
    float& sum = sums[first == 0 ? 0 : 1];
    p.for_batches(first, last, [&](Index tokens) {
      sum += widest_read_sum(p.token_major.data(), tokens * p.n * p.d);
    });
  });
  sink += sums[0] + sums[1];
  return 4.0 * static_cast<double>(p.total_tokens * p.n * p.d);
}

/// One pass of the compute roof on `threads` threads; returns flops done.
double run_fma_chains(int threads, std::int64_t steps, float& sink) {
  double flops[2] = {0, 0};
  float results[2] = {0, 0};
  std::thread worker;
  if (threads == 2) worker = std::thread([&] { results[1] = widest_fma_chains(steps, 2.0f, flops[1]); });
  results[0] = widest_fma_chains(steps, 1.0f, flops[0]);
  if (worker.joinable()) worker.join();
  sink += results[0] + results[1];
  return flops[0] + flops[1];
}

/// The best rates seen in this run (per busy core-second, like every row):
/// peak flops per thread count, read bytes per shape and thread count.
struct roofline_record {
  std::map<int, double> peak_flops;
  std::map<std::string, double> read_bytes;
  static std::string key(const gram_problem& p, int threads) {
    return std::to_string(p.n) + "/" + std::to_string(p.total_tokens * p.d) + "/" +
           std::to_string(p.d) + "/" + std::to_string(threads);
  }
  static void keep_best(double& slot, double rate) { slot = std::max(slot, rate); }
};
roofline_record& roofline() {
  static roofline_record record;
  return record;
}

constexpr std::int64_t fma_steps_per_pass = std::int64_t{1} << 24;

void run_peak_fma(benchmark::State& state, int threads) {
  float sink = 0;
  double flops = 0;
  const double start = process_cpu_seconds();
  for (auto _ : state) flops += run_fma_chains(threads, fma_steps_per_pass, sink);
  roofline_record::keep_best(roofline().peak_flops[threads], flops / (process_cpu_seconds() - start));
  benchmark::DoNotOptimize(sink);
  state.counters["GFLOPS"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsRate);
}

void run_read_stream(benchmark::State& state, const gram_problem& p, int threads) {
  float sink = 0;
  double bytes = 0;
  const double start = process_cpu_seconds();
  for (auto _ : state) bytes += stream_batches(p, threads, sink);
  roofline_record::keep_best(roofline().read_bytes[roofline_record::key(p, threads)],
                             bytes / (process_cpu_seconds() - start));
  benchmark::DoNotOptimize(sink);
  state.SetBytesProcessed(static_cast<std::int64_t>(bytes));
}

/// The Gram roofline of a shape: the least time the useful work can take,
/// max(flops / peak, bytes / bandwidth) = work / min(peak, bandwidth × intensity).
/// Useful flops: the n(n+1)/2 lower entries of G, 2·L each (exactly what ours
/// executes: its diagonal tiles form only their lower triangle); bytes: every activation once. Rates missing from this run
/// (rows filtered out) are measured here, before the timed loop.
double roofline_seconds(const gram_problem& p, int threads) {
  auto& record = roofline();
  float sink = 0;
  if (record.peak_flops.count(threads) == 0) {
    for (int pass = 0; pass < 3; ++pass) {
      const double start = process_cpu_seconds();
      const double flops = run_fma_chains(threads, fma_steps_per_pass, sink);
      roofline_record::keep_best(record.peak_flops[threads], flops / (process_cpu_seconds() - start));
    }
  }
  const std::string key = roofline_record::key(p, threads);
  if (record.read_bytes.count(key) == 0) {
    for (int pass = 0; pass < 3; ++pass) {
      const double start = process_cpu_seconds();
      const double bytes = stream_batches(p, threads, sink);
      roofline_record::keep_best(record.read_bytes[key], bytes / (process_cpu_seconds() - start));
    }
  }
  benchmark::DoNotOptimize(sink);
  const double length = static_cast<double>(p.total_tokens * p.d);
  const double flops = static_cast<double>(p.n * (p.n + 1)) * length;
  const double bytes = 4.0 * static_cast<double>(p.n) * length;
  return std::max(flops / record.peak_flops[threads], bytes / record.read_bytes[key]);
}

/// Reports the mean over iterations of the sum of G's entries: every impl of a
/// shape must show the same value (to float rounding), or it computed another G.
void set_gram_sum(benchmark::State& state, double checksum) {
  state.counters["gram_sum"] = checksum / static_cast<double>(std::max<benchmark::IterationCount>(state.iterations(), 1));
}

template <typename Impl>
void run_gram(benchmark::State& state, const gram_problem& p, int threads) {
#if defined(NASHPRUNE_BENCH_HAVE_OPENBLAS)
  openblas_set_num_threads(1);  // threads come from the caller split below
#endif
  double checksum = 0;
  for (auto _ : state) {
    Impl first(p), second(p);
    split_batches(p, threads, [&](Index begin, Index end) {
      Impl& impl = begin == 0 ? first : second;
      p.for_batches(begin, end, [&](Index tokens) { impl.add(tokens); });
    });
    if (threads == 2) first.merge(second);
    checksum += first.checksum();
  }
  set_gram_sum(state, checksum);
}

#if defined(NASHPRUNE_BENCH_HAVE_OPENBLAS)
/// The serial stream, OpenBLAS's own `threads` threads inside each ssyrk.
template <typename Impl>
void run_openblas_threads(benchmark::State& state, const gram_problem& p, int threads) {
  openblas_set_num_threads(threads);
  double checksum = 0;
  for (auto _ : state) {
    Impl impl(p);
    p.for_batches(0, p.batches(), [&](Index tokens) { impl.add(tokens); });
    checksum += impl.checksum();
  }
  set_gram_sum(state, checksum);
}

void run_openblas_sgemm(benchmark::State& state, int threads) {
  openblas_set_num_threads(threads);
  const int size = 1024;
  const Eigen::MatrixXf a = Eigen::MatrixXf::Random(size, size);
  const Eigen::MatrixXf b = Eigen::MatrixXf::Random(size, size);
  Eigen::MatrixXf c(size, size);
  for (auto _ : state) {
    cblas_sgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, size, size, size, 1.0f, a.data(), size,
                b.data(), size, 0.0f, c.data(), size);
    benchmark::DoNotOptimize(c.data());
  }
  state.counters["GFLOPS"] = benchmark::Counter(2.0 * size * size * size * 1e-9 *
                                                    static_cast<double>(state.iterations()),
                                                benchmark::Counter::kIsRate);
}
#endif

/// The second moments of the n·d columns, by each contender.
struct cka_simd {
  nashprune::head_cka<float> acc;
  explicit cka_simd(const gram_problem& p) : acc(p.n, p.d) {}
  void add(const gram_problem& p, Index tokens) { acc.add_batch(p.token_major.topRows(tokens)); }
  [[nodiscard]] double checksum() const { return lower_sum(acc.second_moments()); }
};

/// The float batch product, added into a double total (lower triangle).
struct cka_float_batch {
  Eigen::MatrixXf batch;
  Eigen::MatrixXd moments;
  explicit cka_float_batch(const gram_problem& p)
      : batch(p.n * p.d, p.n * p.d), moments(Eigen::MatrixXd::Zero(p.n * p.d, p.n * p.d)) {}
  void add_batch_to_total() {
    moments.triangularView<Eigen::Lower>() += batch.cast<double>();
  }
  [[nodiscard]] double checksum() const { return lower_sum(moments); }
};

struct cka_eigen : cka_float_batch {
  using cka_float_batch::cka_float_batch;
  void add(const gram_problem& p, Index tokens) {
    batch.setZero();
    batch.selfadjointView<Eigen::Lower>().rankUpdate(p.token_major.topRows(tokens).transpose());
    add_batch_to_total();
  }
};

#if defined(NASHPRUNE_BENCH_HAVE_OPENBLAS)
struct cka_openblas : cka_float_batch {
  using cka_float_batch::cka_float_batch;
  void add(const gram_problem& p, Index tokens) {
    const int width = static_cast<int>(p.n * p.d);
    // The row-major tokens × width batch is Xᵀ column-major (width × tokens, ld width).
    cblas_ssyrk(CblasColMajor, CblasLower, CblasNoTrans, width, static_cast<int>(tokens), 1.0f,
                p.token_major.data(), width, 0.0f, batch.data(), width);
    add_batch_to_total();
  }
};
#endif

template <typename Impl>
void run_cka(benchmark::State& state, Index n, Index d, Index tokens) {
#if defined(NASHPRUNE_BENCH_HAVE_OPENBLAS)
  openblas_set_num_threads(1);
#endif
  const gram_problem p(n, d, tokens * d);
  double checksum = 0;
  for (auto _ : state) {
    Impl impl(p);
    p.for_batches(0, p.batches(), [&](Index batch_tokens) { impl.add(p, batch_tokens); });
    checksum += impl.checksum();
  }
  set_gram_sum(state, checksum);
  const double width = static_cast<double>(n * d);
  state.counters["GFLOPS"] = benchmark::Counter(
      2.0 * width * width * static_cast<double>(tokens) * 1e-9 *
          static_cast<double>(state.iterations()),
      benchmark::Counter::kIsRate);
}

void register_cka() {
  using runner = std::function<void(benchmark::State&, Index, Index, Index)>;
  std::vector<std::pair<std::string, runner>> impls{{"simd", run_cka<cka_simd>},
                                                    {"eigen", run_cka<cka_eigen>}};
#if defined(NASHPRUNE_BENCH_HAVE_OPENBLAS)
  impls.emplace_back("openblas", run_cka<cka_openblas>);
#endif
  const Index tokens = 2048;
  for (Index d : {Index{64}, Index{128}}) {
    for (Index n : {Index{8}, Index{32}}) {
      for (const auto& impl : impls) {
        const runner run = impl.second;
        const std::string label = "CKA/" + impl.first + "/" + std::to_string(n) + "/" +
                                  std::to_string(tokens) + "/head_dim:" + std::to_string(d) +
                                  "/threads:1";
        benchmark::RegisterBenchmark(label.c_str(), [=](benchmark::State& s) { run(s, n, d, tokens); })
            ->MeasureProcessCPUTime()
            ->Unit(benchmark::kMillisecond);
      }
    }
  }
}

/// The problem of the last benchmark: consecutive benchmarks share a shape, and
/// rebuilding the buffers each time the library re-runs one costs seconds.
/// One problem per offset is kept, so aligned and misaligned rows alternate freely.
const gram_problem& problem_of(Index n, Index d, Index length, Index offset_floats = 0) {
  static std::vector<std::unique_ptr<gram_problem>> kept;
  for (auto& last : kept) {
    if (last->offset_floats != offset_floats) continue;
    if (last->n != n || last->d != d || last->total_tokens != length / d) {
      last.reset();
      last = std::make_unique<gram_problem>(n, d, length, offset_floats);
    }
    return *last;
  }
  kept.push_back(std::make_unique<gram_problem>(n, d, length, offset_floats));
  return *kept.back();
}

void set_gflops(benchmark::State& state, const gram_problem& p) {
  const double flops = 2.0 * static_cast<double>(p.n * p.n) *
                       static_cast<double>(p.total_tokens * p.d);
  state.counters["GFLOPS"] = benchmark::Counter(
      flops * 1e-9 * static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}

int register_all() {
  const std::vector<Index> heads{8, 32, 64, 128};
  const std::vector<Index> head_dims{64, 128};
  const Index short_length = Index{1} << 16;
  const Index middle_length = Index{1} << 20;
  const std::vector<Index> lengths{short_length, middle_length, 10000000};
  for (int threads : {1, 2}) {
#if defined(NASHPRUNE_BENCH_HAVE_OPENBLAS)
    benchmark::RegisterBenchmark(("Reference/openblas_sgemm/1024/threads:" + std::to_string(threads)).c_str(),
                                 [threads](benchmark::State& s) { run_openblas_sgemm(s, threads); })
        ->MeasureProcessCPUTime()
        ->Unit(benchmark::kMillisecond);
#endif
    benchmark::RegisterBenchmark(("Roofline/peak_fma/threads:" + std::to_string(threads)).c_str(),
                                 [threads](benchmark::State& s) { run_peak_fma(s, threads); })
        ->MeasureProcessCPUTime()
        ->Unit(benchmark::kMillisecond);
    for (Index d : head_dims) {
      for (Index n : heads) {
        for (Index length : lengths) {
          using runner = std::function<void(benchmark::State&, const gram_problem&, int)>;
          struct contender {
            std::string name;
            runner run;
            Index offset_floats = 0;  // the batch's distance past a 64-byte boundary
          };
          std::vector<contender> impls{
              {"simd", run_gram<simd_impl<nashprune::simd_target::automatic>>},
              {"simd_misaligned", run_gram<simd_impl<nashprune::simd_target::automatic>>, 4},
              {"eigen", run_gram<eigen_impl>}};
#if defined(NASHPRUNE_BENCH_HAVE_OPENBLAS)
          impls.push_back({"openblas", run_gram<openblas_impl>});
          if (threads == 2) impls.push_back({"openblas_threads", run_openblas_threads<openblas_impl>});
#endif
          // The other target and the slower formulations at the middle length only;
          // naive loops at the short one (they take minutes beyond it).
          if (length == middle_length) {
            impls.push_back({"eigen_gather", run_gram<eigen_gather_impl>});
            impls.push_back({"simd_avx2", run_gram<simd_impl<nashprune::simd_target::avx2_fma>>});
            impls.push_back({"simd_avx2_misaligned", run_gram<simd_impl<nashprune::simd_target::avx2_fma>>, 4});
#if defined(NASHPRUNE_BENCH_HAVE_OPENBLAS)
            impls.push_back({"openblas_gather", run_gram<openblas_gather_impl>});
#endif
          }
          if (length == short_length) {
            impls.push_back({"naive", run_gram<naive_impl>});
            impls.push_back({"portable", run_gram<simd_impl<nashprune::simd_target::portable>>});
          }
          const std::string shape = std::to_string(n) + "/" + std::to_string(length) +
                                    "/head_dim:" + std::to_string(d) + "/threads:" + std::to_string(threads);
          benchmark::RegisterBenchmark(("Roofline/read/" + shape).c_str(), [=](benchmark::State& s) {
            run_read_stream(s, problem_of(n, d, length), threads);
          })->MeasureProcessCPUTime()->Unit(benchmark::kMillisecond);
          for (const contender& impl : impls) {
            const runner run = impl.run;  // copies: lambdas cannot capture bindings in clang 14
            const Index offset = impl.offset_floats;
            benchmark::RegisterBenchmark(("Gram/" + impl.name + "/" + shape).c_str(), [=](benchmark::State& s) {
              const gram_problem& p = problem_of(n, d, length, offset);
              const double least_seconds = roofline_seconds(p, threads);
              const double start = process_cpu_seconds();
              run(s, p, threads);
              const double seconds = (process_cpu_seconds() - start) / static_cast<double>(s.iterations());
              set_gflops(s, p);
              s.counters["roofline_fraction"] = least_seconds / seconds;
            })->MeasureProcessCPUTime()->Unit(benchmark::kMillisecond);
          }
        }
      }
    }
  }
  register_cka();
  return 0;
}

const int registered = register_all();

}  // namespace
