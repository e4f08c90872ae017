// nashprune/nashprune.hpp — umbrella header: includes every public nashprune header.
#pragma once

#include "attention_geometry.hpp"
#include "config.hpp"
#include "ggml_types.hpp"
#include "head_redundancy.hpp"
#include "lambda_calibration.hpp"
#include "nash_decisions.hpp"
#include "nash_game.hpp"
#include "nash_solvers.hpp"
