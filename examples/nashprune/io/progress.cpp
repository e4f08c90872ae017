#include "io/progress.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <string>

namespace nashprune_tool {

namespace {

// "1:05" or "1:02:05".
std::string clock_text(double seconds) {
  const auto s = static_cast<long long>(seconds + 0.5);
  char text[32];
  if (s >= 3600) {
    std::snprintf(text, sizeof text, "%lld:%02lld:%02lld", s / 3600, s / 60 % 60, s % 60);
  } else {
    std::snprintf(text, sizeof text, "%lld:%02lld", s / 60, s % 60);
  }
  return text;
}

}  // namespace

progress_bar::progress_bar(std::string label, off_terminal mode)
    : label_(std::move(label)), terminal_(::isatty(STDERR_FILENO) == 1), mode_(mode) {}

progress_bar::~progress_bar() {
  if (terminal_ && last_percent_ >= 0) std::fputc('\n', stderr);
}

void progress_bar::update(std::uint64_t done, std::uint64_t total) {
  if (total == 0 || finished_) return;
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  if (!terminal_) {
    if (mode_ == off_terminal::stage_line && done >= total) {
      std::fprintf(stderr, "%s: done in %s\n", label_.c_str(), clock_text(elapsed).c_str());
      std::fflush(stderr);
    }
    finished_ = done >= total;
    return;
  }
  const int percent = static_cast<int>(100 * std::min(done, total) / total);
  if (percent == last_percent_) return;
  last_percent_ = percent;
  constexpr int width = 40;
  const int filled = percent * width / 100;
  // Time left at the rate so far; none before the first step gives a rate.
  const std::string eta = done == 0 ? "--:--" : clock_text(elapsed * static_cast<double>(total - std::min(done, total)) / static_cast<double>(done));
  std::fprintf(stderr, "\r%s [%.*s%*s] %3d%% ETA %s ", label_.c_str(), filled, "########################################",
               width - filled, "", percent, eta.c_str());
  std::fflush(stderr);
}

}  // namespace nashprune_tool
