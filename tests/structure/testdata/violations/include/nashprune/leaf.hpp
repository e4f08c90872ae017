// A leaf: only config.hpp.
#pragma once
#include "config.hpp"
