#include "io/progress.hpp"

#include <unistd.h>

#include <cstdio>

namespace nashprune_tool {

progress_bar::progress_bar(std::string label) : label_(std::move(label)), enabled_(::isatty(STDERR_FILENO) == 1) {}

progress_bar::~progress_bar() {
  if (enabled_ && last_percent_ >= 0) std::fputc('\n', stderr);
}

void progress_bar::update(std::uint64_t done, std::uint64_t total) {
  if (!enabled_ || total == 0) return;
  const int percent = static_cast<int>(100 * done / total);
  if (percent == last_percent_) return;
  last_percent_ = percent;
  constexpr int width = 40;
  const int filled = percent * width / 100;
  std::fprintf(stderr, "\r%s [%.*s%*s] %3d%%", label_.c_str(), filled, "########################################",
               width - filled, "", percent);
  std::fflush(stderr);
}

}  // namespace nashprune_tool
