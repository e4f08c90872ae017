// nashprune/nashprune.hpp — umbrella header: includes every public nashprune header.
#pragma once

#include "attention_geometry.hpp"
#include "attention_items.hpp"
#include "bit_allocation.hpp"
#include "config.hpp"
#include "depth_pruning.hpp"
#include "ggml_types.hpp"
#include "global_selection.hpp"
#include "hgsp_priors.hpp"
#include "head_redundancy.hpp"
#include "nash_game.hpp"
#include "nash_solvers.hpp"
#include "layer_rates.hpp"
#include "memory_savings.hpp"
#include "importance.hpp"
#include "tensor_slicing.hpp"
