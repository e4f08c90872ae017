// The model a llama.cpp run evaluates and the text it reads: what calibration,
// ablation and every text run are given (without llama.h, so a tool built
// without llama.cpp still compiles the callers).
#pragma once

#include <cstdint>
#include <filesystem>

namespace calibrate {

/// Whole chunks of `context` tokens of `text`, at most `max_tokens` of them.
struct text_source {
  std::filesystem::path model;
  std::filesystem::path text;
  std::int64_t max_tokens = 0;  // 0: every whole chunk of the text
  std::int64_t context = 128;   // tokens per evaluated chunk
  int threads = 0;              // 0: hardware concurrency
};

}  // namespace calibrate
