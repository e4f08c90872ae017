// Shared by the benchmark programs: a contender timed against its baseline in
// the same run, interleaved iteration by iteration, so both see the same machine
// load and the ratio is a counter rather than a division done by the reader.
#pragma once

#include <benchmark/benchmark.h>

#include <cstdint>
#include <ctime>

namespace nashprune_bench {

/// CPU time of the calling thread: time spent waiting for a core on a shared
/// machine does not count.
inline double thread_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

/// Runs contender(i) as the timed body of iteration i and baseline(i) beside it
/// (outside the benchmark's timing), then sets counters[ratio_name] =
/// baseline CPU time / contender CPU time (> 1: the contender is faster; for the
/// same bytes this is the contender's fraction of the baseline's bandwidth).
template <typename Contender, typename Baseline>
void run_against_baseline(benchmark::State& state, const char* ratio_name, Contender&& contender,
                          Baseline&& baseline) {
  double contender_seconds = 0, baseline_seconds = 0;
  std::int64_t i = 0;
  for (auto _ : state) {
    const double start = thread_cpu_seconds();
    contender(i);
    contender_seconds += thread_cpu_seconds() - start;
    state.PauseTiming();
    const double baseline_start = thread_cpu_seconds();
    baseline(i);
    baseline_seconds += thread_cpu_seconds() - baseline_start;
    state.ResumeTiming();
    ++i;
  }
  state.counters[ratio_name] = contender_seconds > 0 ? baseline_seconds / contender_seconds : 0.0;
}

}  // namespace nashprune_bench
