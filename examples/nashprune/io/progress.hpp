// Progress of a long stage on stderr: on a terminal a bar with the percentage and
// the estimated time left, redrawn in place; elsewhere (a log, a pipe) nothing,
// or with stage_line one line when the stage completes, so logs show each stage
// once instead of hundreds of redraws.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace nashprune_tool {

class progress_bar {
 public:
  enum class off_terminal { silent, stage_line };
  explicit progress_bar(std::string label, off_terminal mode = off_terminal::silent);
  ~progress_bar();
  progress_bar(const progress_bar&) = delete;
  progress_bar& operator=(const progress_bar&) = delete;
  void update(std::uint64_t done, std::uint64_t total);

 private:
  std::string label_;
  bool terminal_;
  off_terminal mode_;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  int last_percent_ = -1;
  bool finished_ = false;
};

}  // namespace nashprune_tool
