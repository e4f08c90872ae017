// nashprune/layer_plan.hpp — what a pruning plan keeps of one layer: the layer
// itself, its query and KV heads (a GQA-consistent head_keep_plan,
// attention_geometry.hpp) and its FFN channels. A plan is one layer_plan per
// layer: pruning_plan.hpp produces it, and a model writer needs only this header
// to apply it.
#pragma once

#include <cstdint>
#include <vector>

#include "attention_geometry.hpp"
#include "config.hpp"

NASHPRUNE_BEGIN_NAMESPACE

struct layer_plan {
  bool keep_layer = true;
  head_keep_plan heads;                // empty: attention-free layer
  std::vector<std::int64_t> channels;  // kept FFN channels, ascending; empty: FFN-free layer
};

NASHPRUNE_END_NAMESPACE
