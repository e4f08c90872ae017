// detail/ may use leaves, not concepts.
#pragma once
#include "../leaf.hpp"
#include <vector>
#include <immintrin.h>
#include "../concept.hpp"
