// nashprune/nashprune.hpp — umbrella header: includes every public nashprune header.
#pragma once

#include "config.hpp"
#include "ggml_types.hpp"
#include "nash_game.hpp"
#include "nash_solvers.hpp"
