// Test support for the tool's tests on a generated model: the model in a scratch
// folder (tool_runs::neutral_stats gives statistics of its shape to plant
// measurements in).
#pragma once

#include <gtest/gtest.h>

#include <gguf/llama_model.hpp>
#include <gguf/synthetic.hpp>

#include "gguf_test_files.hpp"
#include "tool_runs.hpp"

namespace gguf_test {

/// A model of gguf::generate_synthetic's default shape, written before each test.
struct synthetic_model_test : ::testing::Test {
  scratch_dir dir;
  std::filesystem::path model = dir / "model.gguf";
  gguf::llama_shape shape;

  void SetUp() override {
    gguf::generate_synthetic(model, {}, {});
    shape = gguf::llama_shape::read(gguf::reader::open(model));
  }
};

}  // namespace gguf_test
