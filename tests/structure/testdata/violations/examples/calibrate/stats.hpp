// The calibration glue may use the GGUF glue, never tests/.
#pragma once
#include "gguf/glue.hpp"
#include "../../tests/helper.hpp"
