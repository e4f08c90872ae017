// `nashprune prune` removes the MLP channels of a float ffn_down in steps of
// aligned_channel_step where the FFN width is a multiple of it (and at least 32
// steps wide), so that every pruned layer keeps a width that is a multiple of it
// (llama.cpp's fast F16/F32 products need the SIMD width), and single channels
// where the width is not.
#include <gtest/gtest.h>

#include <gguf/synthetic.hpp>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "gguf_test_files.hpp"

namespace {

constexpr std::int64_t step = 32;  // aligned_channel_step in the tool

// The kept channel counts of every layer of a plan prune writes for `n_ff`.
std::vector<std::int64_t> kept_widths(const gguf_test::scratch_dir& dir, std::int64_t n_ff, const std::string& options) {
  gguf::synthetic_options shape;
  shape.n_ff = n_ff;
  const auto model = dir / ("ffn" + std::to_string(n_ff) + ".gguf");
  if (!std::filesystem::exists(model)) gguf::generate_synthetic(model, shape, {});
  const auto plan = dir / ("plan" + std::to_string(n_ff) + ".json");
  const std::string command = std::string(NASHPRUNE_TOOL) + " prune '" + model.string() + "' --dry-run " + options + " --plan-out '" +
                              plan.string() + "' > '" + (dir / "log.txt").string() + "' 2>&1";
  EXPECT_EQ(std::system(command.c_str()), 0) << command;
  std::ifstream in(plan);
  const auto doc = nlohmann::json::parse(in);
  std::vector<std::int64_t> widths;
  for (const auto& l : doc.at("layers")) widths.push_back(static_cast<std::int64_t>(l.at("channels").size()));
  return widths;
}

TEST(ChannelAlignment, WideFloatFfnKeepsMultiplesOfTheStep) {
  gguf_test::scratch_dir dir;
  for (const std::string options : {"--structures mlp --target 0.2", "--structures heads,mlp --target 0.25"}) {
    const auto widths = kept_widths(dir, 32 * step, options);
    std::int64_t removed = 0;
    for (const auto w : widths) {
      EXPECT_EQ(w % step, 0) << options << ": a layer keeps " << w << " channels";
      removed += 32 * step - w;
    }
    EXPECT_GT(removed, 0) << options << ": nothing was removed";
  }
}

TEST(ChannelAlignment, NarrowOrUnalignedFfnRemovesSingleChannels) {
  gguf_test::scratch_dir dir;
  // 1000 is no multiple of the step, 992 = 31 steps is too narrow for steps: a
  // target of 20 % lands on widths the step would not allow in some layer.
  for (const std::int64_t n_ff : {std::int64_t{1000}, std::int64_t{31 * step}}) {
    const auto widths = kept_widths(dir, n_ff, "--structures mlp --target 0.2");
    bool off_step = false;
    for (const auto w : widths) off_step = off_step || (n_ff - w) % step != 0;
    EXPECT_TRUE(off_step) << "n_ff " << n_ff << ": every layer removed whole steps";
  }
}

}  // namespace
