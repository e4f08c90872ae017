// A concept header (not a leaf).
#pragma once
#include "leaf.hpp"
#include <Eigen/Core>
#include "../../examples/gguf/glue.hpp"
#include <nlohmann/json.hpp>
