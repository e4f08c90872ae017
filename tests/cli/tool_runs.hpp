// Running the built tool from a test, and calibration statistics planted for a
// model's shape (no llama.cpp needed to make them).
#pragma once

#include <calibrate/calibration_stats.hpp>
#include <gguf/llama_model.hpp>

#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>

namespace tool_runs {

struct run {
  int code = -1;  ///< exit code (-1: did not exit normally)
  std::string output;  ///< standard output and standard error, interleaved
};

/// `nashprune ARGS` with its output in `log`.
inline run run_tool(const std::string& args, const std::filesystem::path& log) {
  const std::string command = std::string(NASHPRUNE_TOOL) + " " + args + " > '" + log.string() + "' 2>&1";
  const int status = std::system(command.c_str());
  run out;
  out.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::ifstream in(log);
  std::stringstream text;
  text << in.rdbuf();
  out.output = "$ nashprune " + args + "\n" + text.str();
  return out;
}

/// Statistics of `shape` with identity head matrices, unit input energies and every
/// block influence 0.5, for a test to plant the measurements it needs in.
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

/// Statistics of `model`'s shape with random input means and equicorrelated
/// inputs (so that a refit moves what the kept columns carry), written to `path`.
inline void write_planted_stats(const std::filesystem::path& model, const std::filesystem::path& path) {
  const auto shape = gguf::llama_shape::read(gguf::reader::open(model));
  std::mt19937 rng(7);
  std::normal_distribution<double> normal;
  auto s = neutral_stats(shape);
  for (std::size_t l = 0; l < shape.layers.size(); ++l) {
    auto& r = s.layers[l];
    const auto attention_width = shape.layers[l].n_head * shape.head_dim_v;
    const auto n_ff = shape.layers[l].n_ff;
    r.attn_in_mean = Eigen::VectorXd::NullaryExpr(attention_width, [&] { return normal(rng); });
    r.ffn_in_mean = Eigen::VectorXd::NullaryExpr(n_ff, [&] { return normal(rng); });
    r.attn_in_covariance = 0.5 * Eigen::MatrixXd::Identity(attention_width, attention_width) +
                           0.3 * Eigen::MatrixXd::Ones(attention_width, attention_width);
    r.ffn_in_covariance = 0.5 * Eigen::MatrixXd::Identity(n_ff, n_ff) + 0.3 * Eigen::MatrixXd::Ones(n_ff, n_ff);
  }
  calibrate::write_stats(path, s, true);
}

}  // namespace tool_runs
