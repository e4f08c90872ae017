// Test support for the tool's tests on a generated model: the model in a scratch
// folder, and calibration statistics of its shape with identity head matrices, unit
// input energies and every block influence 0.5, for a test to plant the
// measurements it needs in.
#pragma once

#include <gtest/gtest.h>

#include <calibrate/calibration_stats.hpp>
#include <gguf/llama_model.hpp>
#include <gguf/synthetic.hpp>

#include "gguf_test_files.hpp"

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

inline calibrate::calibration_stats neutral_stats(const gguf::llama_shape& shape) {
  calibrate::calibration_stats s;
  s.model = calibrate::fingerprint::of(shape);
  s.tokens = 1024;
  s.context = 128;
  s.text = "planted";
  for (std::int64_t l = 0; l < shape.n_layer(); ++l) {
    const auto& ls = shape.layers[static_cast<std::size_t>(l)];
    calibrate::layer_stats r;
    r.head_gram = r.head_cosine = r.head_output_gram = r.head_relative_gram = Eigen::MatrixXd::Identity(ls.n_head, ls.n_head);
    r.attn_in_sum2 = Eigen::VectorXd::Ones(ls.n_head * shape.head_dim_v);
    r.ffn_in_sum2 = Eigen::VectorXd::Ones(ls.n_ff);
    r.layer_influence = r.attn_influence = r.mlp_influence = 0.5;
    r.residual_energy = 1;
    s.layers.push_back(std::move(r));
  }
  return s;
}

}  // namespace gguf_test
