// Shared by the benchmark programs: a contender timed against its baseline in
// the same run, interleaved iteration by iteration, so both see the same machine
// load and the ratio is a counter rather than a division done by the reader.
#pragma once

#include <benchmark/benchmark.h>

#include <cstdint>
#include <ctime>
#include <fstream>
#include <string>

namespace nashprune_bench {

/// The CPU as /proc/cpuinfo names it: "<model name>, cpu family F model M"
/// (figures differ between CPU generations that share a model name).
inline std::string cpu_description() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line, name, family, model;
  const auto value = [](const std::string& l) {
    const auto colon = l.find(':');
    return colon == std::string::npos ? std::string() : l.substr(l.find_first_not_of(' ', colon + 1));
  };
  while (std::getline(cpuinfo, line) && (name.empty() || family.empty() || model.empty())) {
    if (line.rfind("model name", 0) == 0) name = value(line);
    else if (line.rfind("cpu family", 0) == 0) family = value(line);
    else if (line.rfind("model", 0) == 0 && line.find_first_not_of(" \t", 5) != std::string::npos &&
             line[line.find_first_not_of(" \t", 5)] == ':') model = value(line);
  }
  if (family.empty()) return name.empty() ? "unknown" : name;
  return name + ", cpu family " + family + " model " + model;
}

/// Every benchmark program prints the CPU in its context, beside the figures.
inline const bool cpu_in_context = [] {
  benchmark::AddCustomContext("cpu", cpu_description());
  return true;
}();

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
