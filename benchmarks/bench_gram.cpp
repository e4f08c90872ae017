// Gram accumulation over attention-head activations: ours against naive loops,
// Eigen's A·Aᵀ and OpenBLAS ssyrk, plus OpenBLAS sgemm 1024³ as the machine's
// practical peak, all in one binary so results are read as same-run ratios.
//
// Names: Gram/<impl>/<n_head>/<reduction length>/head_dim:<d>/threads:<t>.
// Shape: n heads, each a vector of L = tokens · head_dim floats, streamed in
// batches of 512 tokens (llama.cpp's default ubatch: what an engine hands over
// per forward step, straight from its attention output) through one batch
// buffer that is re-read until L entries per head are accumulated. Set
// NASHPRUNE_BENCH_BATCH_TOKENS to another count to see other cache regimes
// (e.g. 8192: a 16 MiB batch at n = 8, last-level-cache bound for every impl).
//  - simd:     head_redundancy<float>::add_batch on the token-major
//              tokens × (n·d) batch, the layout an engine produces (automatic
//              target: AVX-512 where present); simd_avx2 and portable force
//              the other targets of the same kernel.
//  - naive:    plain loops over the same token-major batch, double sums.
//  - eigen:    G += A·Aᵀ, A the n × (tokens·d) head-major copy of the batch
//              (the layout most favourable to a GEMM; the copy is not timed).
//  - openblas: cblas_ssyrk on the same head-major A (lower triangle).
// Baselines accumulate each batch's float product into a double total, like ours.
// GFLOPS counts 2·n²·L for every impl (the dense A·Aᵀ count), so GFLOPS ratios
// are time ratios. ssyrk and ours compute only the n(n+1)/2 lower pairs.
// threads:2 splits the batches between two threads, each with its own
// accumulator, merged at the end; OpenBLAS instead runs its own two threads.
// Times are process CPU time (all threads): the machine is shared, and wall time
// under load measures the neighbours. So GFLOPS is per busy core-second, and
// the two-thread rows show what parallel overhead costs, not wall speed-up.
#include <nashprune/head_redundancy.hpp>

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdlib>
#include <cstdint>
#include <functional>
#include <memory>
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

struct gram_problem {
  Index n = 0;
  Index d = 0;
  Index batch_tokens = 0;   // tokens per batch
  Index total_tokens = 0;   // L / d
  RowMatrixf token_major;   // batch_tokens × (n·d)
  RowMatrixf head_major;    // n × (batch_tokens·d)

  gram_problem(Index n_head, Index head_dim, Index reduction_length)
      : n(n_head), d(head_dim), total_tokens(reduction_length / head_dim) {
    batch_tokens = std::min(total_tokens, batch_token_count());
    token_major.resize(batch_tokens, n * d);
    std::mt19937 rng(1);
    std::normal_distribution<float> normal(0.1f, 1.0f);
    for (Index i = 0; i < token_major.size(); ++i) token_major.data()[i] = normal(rng);
    head_major.resize(n, batch_tokens * d);
    for (Index t = 0; t < batch_tokens; ++t) {
      for (Index i = 0; i < n; ++i) {
        head_major.row(i).segment(t * d, d) = token_major.row(t).segment(i * d, d);
      }
    }
  }

  /// Calls body(first_token, tokens) for the batches [begin, end) of the stream,
  /// each batch a window of the buffer.
  void for_batches(Index begin, Index end, const std::function<void(Index)>& body) const {
    for (Index b = begin; b < end; ++b) {
      body(std::min(batch_tokens, total_tokens - b * batch_tokens));
    }
  }
  [[nodiscard]] Index batches() const { return (total_tokens + batch_tokens - 1) / batch_tokens; }
};

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
  [[nodiscard]] double checksum() const { return acc.gram().sum(); }
};

struct naive_impl {
  Eigen::MatrixXd gram;
  const gram_problem* p;
  explicit naive_impl(const gram_problem& problem)
      : gram(Eigen::MatrixXd::Zero(problem.n, problem.n)), p(&problem) {}
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
  void merge(const naive_impl& other) { gram += other.gram; }
  [[nodiscard]] double checksum() const { return gram.sum(); }
};

struct eigen_impl {
  Eigen::MatrixXd gram;
  Eigen::MatrixXf batch;
  const gram_problem* p;
  explicit eigen_impl(const gram_problem& problem)
      : gram(Eigen::MatrixXd::Zero(problem.n, problem.n)), batch(problem.n, problem.n),
        p(&problem) {}
  void add(Index tokens) {
    const auto a = p->head_major.leftCols(tokens * p->d);
    batch.noalias() = a * a.transpose();
    gram += batch.cast<double>();
  }
  void merge(const eigen_impl& other) { gram += other.gram; }
  [[nodiscard]] double checksum() const { return gram.sum(); }
};

template <typename Impl>
void run_gram(benchmark::State& state, const gram_problem& p, int threads) {
  double checksum = 0;
  for (auto _ : state) {
    if (threads == 1) {
      Impl impl(p);
      p.for_batches(0, p.batches(), [&](Index tokens) { impl.add(tokens); });
      checksum += impl.checksum();
    } else {
      Impl first(p), second(p);
      const Index half = p.batches() / 2;
      std::thread worker([&] { p.for_batches(half, p.batches(), [&](Index t) { second.add(t); }); });
      p.for_batches(0, half, [&](Index tokens) { first.add(tokens); });
      worker.join();
      first.merge(second);
      checksum += first.checksum();
    }
  }
  benchmark::DoNotOptimize(checksum);
}

#if defined(NASHPRUNE_BENCH_HAVE_OPENBLAS)
void run_openblas_ssyrk(benchmark::State& state, const gram_problem& p, int threads) {
  openblas_set_num_threads(threads);
  const int n = static_cast<int>(p.n);
  std::vector<float> batch(static_cast<std::size_t>(n * n));
  double checksum = 0;
  for (auto _ : state) {
    Eigen::MatrixXd gram = Eigen::MatrixXd::Zero(n, n);
    p.for_batches(0, p.batches(), [&](Index tokens) {
      const int k = static_cast<int>(tokens * p.d);
      cblas_ssyrk(CblasRowMajor, CblasLower, CblasNoTrans, n, k, 1.0f, p.head_major.data(),
                  static_cast<int>(p.head_major.cols()), 0.0f, batch.data(), n);
      gram += Eigen::Map<const Eigen::MatrixXf>(batch.data(), n, n).cast<double>();
    });
    checksum += gram.sum();
  }
  benchmark::DoNotOptimize(checksum);
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

/// The problem of the last benchmark: consecutive benchmarks share a shape, and
/// rebuilding the buffers each time the library re-runs one costs seconds.
const gram_problem& problem_of(Index n, Index d, Index length) {
  static std::unique_ptr<gram_problem> last;
  if (!last || last->n != n || last->d != d || last->total_tokens != length / d) {
    last.reset();
    last = std::make_unique<gram_problem>(n, d, length);
  }
  return *last;
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
  const std::vector<Index> lengths{Index{1} << 16, Index{1} << 20, 10000000};
  for (int threads : {1, 2}) {
#if defined(NASHPRUNE_BENCH_HAVE_OPENBLAS)
    benchmark::RegisterBenchmark(("Reference/openblas_sgemm/1024/threads:" + std::to_string(threads)).c_str(),
                                 [threads](benchmark::State& s) { run_openblas_sgemm(s, threads); })
        ->MeasureProcessCPUTime()
        ->Unit(benchmark::kMillisecond);
#endif
    for (Index d : head_dims) {
      for (Index n : heads) {
        for (Index length : lengths) {
          using runner = std::function<void(benchmark::State&, const gram_problem&, int)>;
          std::vector<std::pair<std::string, runner>> impls{
              {"simd", run_gram<simd_impl<nashprune::simd_target::automatic>>},
              {"simd_avx2", run_gram<simd_impl<nashprune::simd_target::avx2_fma>>},
              {"eigen", run_gram<eigen_impl>}};
#if defined(NASHPRUNE_BENCH_HAVE_OPENBLAS)
          impls.emplace_back("openblas", run_openblas_ssyrk);
#endif
          // Naive loops take minutes at the long lengths; one length shows the gap.
          if (length == (Index{1} << 16)) {
            impls.emplace_back("naive", run_gram<naive_impl>);
            impls.emplace_back("portable",
                               run_gram<simd_impl<nashprune::simd_target::portable>>);
          }
          for (const auto& impl : impls) {
            const runner run = impl.second;  // a copy: lambdas cannot capture bindings in clang 14
            const std::string label = "Gram/" + impl.first + "/" + std::to_string(n) + "/" +
                                      std::to_string(length) + "/head_dim:" + std::to_string(d) +
                                      "/threads:" + std::to_string(threads);
            benchmark::RegisterBenchmark(label.c_str(), [=](benchmark::State& s) {
              const gram_problem& p = problem_of(n, d, length);
              run(s, p, threads);
              set_gflops(s, p);
            })->MeasureProcessCPUTime()->Unit(benchmark::kMillisecond);
          }
        }
      }
    }
  }
  return 0;
}

const int registered = register_all();

}  // namespace
