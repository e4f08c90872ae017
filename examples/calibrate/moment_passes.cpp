// Grouping the layers' input moments into runs under a memory budget (see moment_passes.hpp).
#include "calibrate/moment_passes.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <stdexcept>

namespace calibrate {

nashprune::moment_accumulator_options input_moment_options(int threads) {
  nashprune::moment_accumulator_options options;
  options.threads = threads;
  return options;
}

std::uint64_t moment_bytes(const gguf::layer_shape& layer, std::int64_t head_dim) {
  const auto accumulator = [](std::int64_t width) {
    if (width <= 0) return std::uint64_t{0};
    return static_cast<std::uint64_t>(std::ceil(nashprune::moment_accumulator<float>::memory_bytes(width, input_moment_options(1))));
  };
  return accumulator(layer.n_head * head_dim) + accumulator(layer.n_ff);
}

std::uint64_t smallest_moment_budget(const fingerprint& model) {
  std::uint64_t largest = 0;
  for (const auto& l : model.layers) largest = std::max(largest, moment_bytes(l, model.head_dim));
  return largest;
}

moment_plan plan_moment_passes(const fingerprint& model, std::uint64_t budget) {
  const std::uint64_t smallest = smallest_moment_budget(model);
  if (budget < smallest) {
    throw std::invalid_argument("a memory budget of " + std::to_string(budget) + " bytes holds no layer's input moments; the smallest that works is " +
                                std::to_string(smallest) + " bytes");
  }
  moment_plan plan;
  std::uint64_t held = 0;
  for (std::size_t i = 0; i < model.layers.size(); ++i) {
    const std::uint64_t bytes = moment_bytes(model.layers[i], model.head_dim);
    if (plan.groups.empty() || held + bytes > budget) {
      plan.groups.emplace_back();
      held = 0;
    }
    plan.groups.back().push_back(i);
    held += bytes;
    plan.largest_group_bytes = std::max(plan.largest_group_bytes, held);
    plan.total_bytes += bytes;
  }
  return plan;
}

}  // namespace calibrate
