// nashprune/simd_target.hpp — the instruction set a caller may ask the explicit
// SIMD kernels to run on (scoring, redundancy Gram matrices, best responses).
//
// A vocabulary header: it depends on config.hpp only, so the kernels under detail/
// and every public header that takes the choice as an option can include it.
#pragma once

#include "config.hpp"

NASHPRUNE_BEGIN_NAMESPACE

/// The instruction set an explicit SIMD kernel runs on. `automatic` picks the
/// widest one the CPU supports; the others force a target (tests, benchmarks)
/// and fall back to the widest supported narrower one when the CPU or compiler
/// lacks it.
enum class simd_target { automatic, portable, avx2_fma, avx512 };

NASHPRUNE_END_NAMESPACE
