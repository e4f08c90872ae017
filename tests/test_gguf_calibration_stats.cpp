// Calibration statistics files (examples/calibrate/calibration_stats.hpp):
// round trip, fingerprint checks against a model, malformed files, writing layer
// by layer, and the grouping of the input moments under a memory budget.
#include <gtest/gtest.h>

#include <calibrate/calibration_stats.hpp>
#include <calibrate/moment_passes.hpp>
#include <calibrate/stats_writer.hpp>
#include <gguf/synthetic.hpp>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <functional>
#include <iterator>
#include <optional>
#include <random>

#include "gguf_test_files.hpp"

namespace {

calibrate::calibration_stats random_stats(const gguf::llama_shape& shape, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(0.0, 10.0);
  auto fill = [&](auto& m) { for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = static_cast<float>(u(rng)); };
  calibrate::calibration_stats s;
  s.model = calibrate::fingerprint::of(shape);
  s.tokens = 4096;
  s.context = 128;
  s.text = "calibration.txt";
  for (const auto& l : shape.layers) {
    calibrate::layer_stats r;
    if (l.n_head > 0) {
      r.head_gram.resize(l.n_head, l.n_head);
      r.head_cosine.resize(l.n_head, l.n_head);
      r.head_output_gram.resize(l.n_head, l.n_head);
      r.head_relative_gram.resize(l.n_head, l.n_head);
      fill(r.head_output_gram);
      fill(r.head_relative_gram);
      r.attn_in_sum2.resize(l.n_head * shape.head_dim_v);
      fill(r.head_gram);
      fill(r.head_cosine);
      fill(r.attn_in_sum2);
      r.attn_in_mean.resize(l.n_head * shape.head_dim_v);
      r.attn_in_covariance.resize(l.n_head * shape.head_dim_v, l.n_head * shape.head_dim_v);
      fill(r.attn_in_mean);
      fill(r.attn_in_covariance);
    }
    r.ffn_in_sum2.resize(l.n_ff);
    fill(r.ffn_in_sum2);
    r.ffn_in_mean.resize(l.n_ff);
    r.ffn_in_covariance.resize(l.n_ff, l.n_ff);
    fill(r.ffn_in_mean);
    fill(r.ffn_in_covariance);
    r.attn_influence = static_cast<float>(u(rng));
    r.mlp_influence = static_cast<float>(u(rng));
    r.layer_influence = static_cast<float>(u(rng));
    r.residual_energy = static_cast<float>(u(rng));
    s.layers.push_back(std::move(r));
  }
  return s;
}

gguf::llama_shape synthetic_shape(const gguf_test::scratch_dir& dir, const gguf::synthetic_options& o, const std::string& name) {
  gguf::generate_synthetic(dir / name, o, {});
  return gguf::llama_shape::read(gguf::reader::open(dir / name));
}

/// Copies a stats file keeping the tensors `keep` accepts, with calibration.version
/// replaced by `version` when given.
void copy_stats(const std::filesystem::path& from, const std::filesystem::path& to, const std::function<bool(const std::string&)>& keep,
                std::optional<std::uint32_t> version = std::nullopt) {
  const auto full = gguf::reader::open(from);
  gguf::metadata kv;
  for (const auto& [key, value] : full.metadata()) {
    if (version && key == "calibration.version") kv.emplace_back(key, gguf::value::u32(*version));
    else kv.emplace_back(key, value);
  }
  std::vector<gguf::tensor_spec> specs;
  for (const auto& t : full.tensors())
    if (keep(t.name)) specs.push_back(t);
  gguf::writer out(to, {});
  out.begin(kv, specs);
  for (const auto& t : full.tensors())
    if (keep(t.name)) out.write(t.data);
  out.commit();
}

/// Reading `path` fails with a format_error containing `fragment`.
void expect_read_error(const std::filesystem::path& path, const std::string& fragment) {
  try {
    (void)calibrate::read_stats(path);
    ADD_FAILURE() << path << " was read";
  } catch (const gguf::format_error& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

TEST(CalibrationStats, RoundTripIsExactForFloatValues) {
  gguf_test::scratch_dir dir;
  const auto shape = synthetic_shape(dir, {}, "model.gguf");
  const auto stats = random_stats(shape, 7);
  calibrate::write_stats(dir / "stats.gguf", stats, false);
  const auto back = calibrate::read_stats(dir / "stats.gguf");
  EXPECT_EQ(back.model, stats.model);
  EXPECT_EQ(back.tokens, stats.tokens);
  EXPECT_EQ(back.context, stats.context);
  EXPECT_EQ(back.text, stats.text);
  ASSERT_EQ(back.layers.size(), stats.layers.size());
  for (std::size_t i = 0; i < stats.layers.size(); ++i) {
    EXPECT_EQ(back.layers[i].head_gram, stats.layers[i].head_gram) << "layer " << i;
    EXPECT_EQ(back.layers[i].head_cosine, stats.layers[i].head_cosine) << "layer " << i;
    EXPECT_EQ(back.layers[i].head_output_gram, stats.layers[i].head_output_gram) << "layer " << i;
    EXPECT_EQ(back.layers[i].head_relative_gram, stats.layers[i].head_relative_gram) << "layer " << i;
    EXPECT_EQ(back.layers[i].residual_energy, stats.layers[i].residual_energy) << "layer " << i;
    EXPECT_EQ(back.layers[i].attn_in_sum2, stats.layers[i].attn_in_sum2) << "layer " << i;
    EXPECT_EQ(back.layers[i].ffn_in_sum2, stats.layers[i].ffn_in_sum2) << "layer " << i;
    EXPECT_EQ(back.layers[i].attn_in_mean, stats.layers[i].attn_in_mean) << "layer " << i;
    EXPECT_EQ(back.layers[i].attn_in_covariance, stats.layers[i].attn_in_covariance) << "layer " << i;
    EXPECT_EQ(back.layers[i].ffn_in_mean, stats.layers[i].ffn_in_mean) << "layer " << i;
    EXPECT_EQ(back.layers[i].ffn_in_covariance, stats.layers[i].ffn_in_covariance) << "layer " << i;
    EXPECT_EQ(back.layers[i].attn_influence, stats.layers[i].attn_influence);
    EXPECT_EQ(back.layers[i].mlp_influence, stats.layers[i].mlp_influence);
    EXPECT_EQ(back.layers[i].layer_influence, stats.layers[i].layer_influence);
    EXPECT_EQ(back.layers[i].head_energy(), stats.layers[i].head_gram.diagonal());
  }
  EXPECT_NO_THROW(calibrate::check_matches(back, shape, "stats.gguf"));
  // An existing output is refused unless forced.
  EXPECT_THROW(calibrate::write_stats(dir / "stats.gguf", stats, false), std::exception);
  EXPECT_NO_THROW(calibrate::write_stats(dir / "stats.gguf", stats, true));
}

TEST(CalibrationStats, MismatchedModelIsRejectedNamingTheDifference) {
  gguf_test::scratch_dir dir;
  const auto shape = synthetic_shape(dir, {}, "a.gguf");
  const auto stats = random_stats(shape, 1);
  gguf::synthetic_options more_layers;
  more_layers.n_layer = 5;
  auto check = [&](const gguf::llama_shape& other, const std::string& expected) {
    try {
      calibrate::check_matches(stats, other, "S.gguf");
      FAIL() << "no error, expected " << expected;
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(expected), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("S.gguf"), std::string::npos) << e.what();
    }
  };
  check(synthetic_shape(dir, more_layers, "b.gguf"), "the model has 5 layers, the stats 4");
  auto fewer_heads = shape;
  fewer_heads.layers[2].n_head = 6;
  check(fewer_heads, "layer 2 has 6 heads in the model, 8 in the stats");
  auto fewer_kv = shape;
  fewer_kv.layers[1].n_head_kv = 2;
  check(fewer_kv, "layer 1 has 2 KV heads in the model, 4 in the stats");
  auto narrower = shape;
  narrower.layers[3].n_ff = 64;
  check(narrower, "layer 3 has FFN width 64 in the model, 128 in the stats");
}

TEST(CalibrationStats, WrongSizesAreRejectedBeforeWriting) {
  gguf_test::scratch_dir dir;
  const auto shape = synthetic_shape(dir, {}, "model.gguf");
  auto stats = random_stats(shape, 3);
  stats.layers[1].head_cosine.resize(3, 3);
  EXPECT_THROW(calibrate::write_stats(dir / "stats.gguf", stats, false), std::invalid_argument);
  EXPECT_FALSE(std::filesystem::exists(dir / "stats.gguf"));
}

TEST(CalibrationStats, AModelIsNotAStatsFile) {
  gguf_test::scratch_dir dir;
  gguf::generate_synthetic(dir / "model.gguf", {}, {});
  try {
    (void)calibrate::read_stats(dir / "model.gguf");
    FAIL() << "a model was read as stats";
  } catch (const gguf::format_error& e) {
    EXPECT_NE(std::string(e.what()).find("missing key general.type"), std::string::npos) << e.what();
  }
}

TEST(CalibrationStats, MissingTensorIsNamed) {
  gguf_test::scratch_dir dir;
  const auto shape = synthetic_shape(dir, {}, "model.gguf");
  calibrate::write_stats(dir / "stats.gguf", random_stats(shape, 5), false);
  // Copy the file without its last layer's FFN statistics.
  copy_stats(dir / "stats.gguf", dir / "broken.gguf", [](const std::string& name) { return name != "calib.blk.3.ffn_in_sum2"; });
  expect_read_error(dir / "broken.gguf", "missing tensor calib.blk.3.ffn_in_sum2");
}

}  // namespace

namespace {

// A version-1 file (written before the projected Grams) is still read, with the
// version-2 statistics empty; an unknown version is refused naming it.
void rewrite_as_version(const std::filesystem::path& from, const std::filesystem::path& to, std::uint32_t version) {
  const auto v1_has = [version](const std::string& name) {
    const bool v2_only = name.ends_with("head_output_gram") || name.ends_with("head_relative_gram") || name == "calib.residual_energy";
    return version != 1 || !v2_only;
  };
  copy_stats(from, to, v1_has, version);
}

TEST(CalibrationStats, VersionOneIsReadWithoutTheProjectedGrams) {
  gguf_test::scratch_dir dir;
  const auto shape = synthetic_shape(dir, {}, "model.gguf");
  const auto stats = random_stats(shape, 9);
  calibrate::write_stats(dir / "stats.gguf", stats, false);
  rewrite_as_version(dir / "stats.gguf", dir / "v1.gguf", 1);
  const auto back = calibrate::read_stats(dir / "v1.gguf");
  EXPECT_EQ(back.version, 1U);
  for (std::size_t i = 0; i < stats.layers.size(); ++i) {
    EXPECT_EQ(back.layers[i].head_gram, stats.layers[i].head_gram) << "layer " << i;
    EXPECT_EQ(back.layers[i].head_output_gram.size(), 0) << "layer " << i;
    EXPECT_EQ(back.layers[i].head_relative_gram.size(), 0) << "layer " << i;
    EXPECT_EQ(back.layers[i].residual_energy, 0.0) << "layer " << i;
  }
  // A layer without projected Grams (attn_output of a type that does not convert) round-trips empty.
  auto partial = stats;
  partial.layers[1].head_output_gram.resize(0, 0);
  partial.layers[1].head_relative_gram.resize(0, 0);
  calibrate::write_stats(dir / "partial.gguf", partial, false);
  const auto partial_back = calibrate::read_stats(dir / "partial.gguf");
  EXPECT_EQ(partial_back.layers[1].head_output_gram.size(), 0);
  EXPECT_EQ(partial_back.layers[2].head_output_gram, stats.layers[2].head_output_gram);
  partial.layers[2].head_relative_gram.resize(0, 0);  // one of the pair alone is refused
  EXPECT_THROW(calibrate::write_stats(dir / "bad.gguf", partial, false), std::invalid_argument);
  rewrite_as_version(dir / "stats.gguf", dir / "v4.gguf", 4);
  expect_read_error(dir / "v4.gguf", "unsupported calibration.version 4");
}

TEST(CalibrationStats, VersionTwoIsReadWithoutTheInputMoments) {
  gguf_test::scratch_dir dir;
  const auto shape = synthetic_shape(dir, {}, "model.gguf");
  calibrate::write_stats(dir / "stats.gguf", random_stats(shape, 11), false);
  copy_stats(dir / "stats.gguf", dir / "v2.gguf",
             [](const std::string& name) { return !name.ends_with("_mean") && !name.ends_with("_covariance"); }, 2);
  const auto back = calibrate::read_stats(dir / "v2.gguf");
  EXPECT_EQ(back.version, 2U);
  for (const auto& l : back.layers) {
    EXPECT_EQ(l.attn_in_mean.size(), 0);
    EXPECT_EQ(l.ffn_in_covariance.size(), 0);
  }
  // A mean without its covariance is refused before writing.
  auto half = random_stats(shape, 12);
  half.layers[0].ffn_in_covariance.resize(0, 0);
  EXPECT_THROW(calibrate::write_stats(dir / "half.gguf", half, false), std::invalid_argument);
  EXPECT_FALSE(std::filesystem::exists(dir / "half.gguf"));
}

// Layer by layer from a summary without moments gives the file write_stats gives.
TEST(CalibrationStats, WritingLayerByLayerEqualsWritingAtOnce) {
  gguf_test::scratch_dir dir;
  const auto shape = synthetic_shape(dir, {}, "model.gguf");
  const auto stats = random_stats(shape, 21);
  calibrate::write_stats(dir / "at-once.gguf", stats, false);
  auto summary = stats;
  for (auto& l : summary.layers) {
    l.attn_in_mean = Eigen::VectorXd();
    l.ffn_in_mean = Eigen::VectorXd();
    l.attn_in_covariance = Eigen::MatrixXd();
    l.ffn_in_covariance = Eigen::MatrixXd();
  }
  {
    calibrate::stats_writer out(dir / "by-layer.gguf", summary, false, true);
    for (const auto& l : stats.layers) out.write_layer(l);
    EXPECT_THROW(out.write_layer(stats.layers[0]), std::logic_error);
    out.commit();
  }
  const auto read = [](const std::filesystem::path& file) {
    std::ifstream in(file, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  EXPECT_EQ(read(dir / "at-once.gguf"), read(dir / "by-layer.gguf"));
  {  // a layer without the moments the file declares is refused, and nothing appears
    calibrate::stats_writer out(dir / "missing.gguf", summary, false, true);
    EXPECT_THROW(out.write_layer(summary.layers[0]), std::invalid_argument);
  }
  EXPECT_FALSE(std::filesystem::exists(dir / "missing.gguf"));
}

// The plan against brute force: every split of the layers into consecutive groups
// that fit the budget, the fewest groups.
TEST(MomentPasses, FewestConsecutiveGroupsWithinTheBudget) {
  std::mt19937 rng(5);
  for (int trial = 0; trial < 200; ++trial) {
    calibrate::fingerprint model;
    model.head_dim = 4;
    const int n_layer = 1 + static_cast<int>(rng() % 7);
    for (int l = 0; l < n_layer; ++l) {
      model.layers.push_back({static_cast<std::int64_t>(rng() % 3) * 2, 1, static_cast<std::int64_t>(rng() % 40)});
    }
    std::vector<std::uint64_t> bytes;
    std::uint64_t total = 0;
    for (const auto& l : model.layers) {
      // Each input's accumulator: P and q in double, and at least one staged batch of float rows.
      const auto accumulator = [](std::int64_t width) -> std::uint64_t {
        if (width == 0) return 0;
        const auto n = static_cast<std::uint64_t>(width);
        const auto staged = static_cast<std::uint64_t>(calibrate::input_moment_options(1).batch_rows) * n * sizeof(float);
        const auto held = static_cast<std::uint64_t>(std::ceil(nashprune::moment_accumulator<float>::memory_bytes(width)));
        EXPECT_GE(held, 8 * (n * n + n) + staged) << "width " << width;
        return held;
      };
      bytes.push_back(accumulator(l.n_head * model.head_dim) + accumulator(l.n_ff));
      EXPECT_EQ(calibrate::moment_bytes(l, model.head_dim), bytes.back());
      total += bytes.back();
    }
    const std::uint64_t smallest = *std::max_element(bytes.begin(), bytes.end());
    EXPECT_EQ(calibrate::smallest_moment_budget(model), smallest);
    const std::uint64_t budget = smallest + rng() % (total - smallest + 2);
    // Fewest groups by brute force over the 2^(n-1) ways to cut the layers.
    std::size_t fewest = bytes.size() + 1;
    for (unsigned cuts = 0; cuts < (1U << (bytes.size() - 1)); ++cuts) {
      std::size_t groups = 1;
      std::uint64_t held = bytes[0];
      bool fits = held <= budget;
      for (std::size_t i = 1; i < bytes.size(); ++i) {
        if ((cuts >> (i - 1)) & 1U) {
          ++groups;
          held = 0;
        }
        held += bytes[i];
        fits = fits && held <= budget;
      }
      if (fits) fewest = std::min(fewest, groups);
    }
    const auto plan = calibrate::plan_moment_passes(model, budget);
    EXPECT_EQ(plan.groups.size(), fewest) << "trial " << trial;
    EXPECT_EQ(plan.total_bytes, total);
    std::size_t next = 0;
    std::uint64_t largest = 0;
    for (const auto& group : plan.groups) {
      std::uint64_t held = 0;
      for (const auto layer : group) {
        EXPECT_EQ(layer, next++);
        held += bytes[layer];
      }
      EXPECT_LE(held, budget);
      largest = std::max(largest, held);
    }
    EXPECT_EQ(next, bytes.size());
    EXPECT_EQ(plan.largest_group_bytes, largest);
    if (smallest > 0) {
      try {
        (void)calibrate::plan_moment_passes(model, smallest - 1);
        ADD_FAILURE() << "a budget below one layer's moments was accepted";
      } catch (const std::invalid_argument& e) {
        EXPECT_NE(std::string(e.what()).find("the smallest that works is " + std::to_string(smallest) + " bytes"), std::string::npos) << e.what();
      }
    }
  }
}

}  // namespace

