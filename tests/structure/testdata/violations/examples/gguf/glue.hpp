// The GGUF glue may use the library only.
#pragma once
#include <nashprune/concept.hpp>
#include "calibrate/stats.hpp"
#include <expect_error.hpp>
