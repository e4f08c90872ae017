// nashprune/detail/simd_dispatch.hpp — run-time choice of the instruction set
// for the library's explicit SIMD kernels (see gram_kernel.hpp for the why).
//
// Not part of the public API (the choice a caller makes is simd_target.hpp). Kernels are compiled per
// instruction set inside NASHPRUNE_TARGET_REGION_BEGIN/END (a "#pragma GCC
// target" or "#pragma clang attribute" region), so the build needs no -march
// flag; a kernel for a target is only called after detected_cpu_features()
// reported it. NASHPRUNE_SIMD_X86 is defined when such regions are available
// (x86 with GCC or clang, and NASHPRUNE_NO_SIMD not defined).
#pragma once

#include <type_traits>

#include "../config.hpp"
#include "../simd_target.hpp"

#if !defined(NASHPRUNE_NO_SIMD) && (defined(__x86_64__) || defined(__i386__)) && \
    (defined(__GNUC__) || defined(__clang__))
#define NASHPRUNE_SIMD_X86 1
#include <immintrin.h>
#endif

NASHPRUNE_BEGIN_NAMESPACE

namespace detail {

struct cpu_features {
  bool avx2_fma = false;
  bool avx512 = false;
  bool avx512bw = false;  // byte-masked loads and stores (every AVX-512 CPU but the Xeon Phi)
};

/// What this CPU (and operating system: the builtins check XCR0) supports, probed once.
[[nodiscard]] inline const cpu_features& detected_cpu_features() {
  static const cpu_features features = [] {
    cpu_features f;
#if defined(NASHPRUNE_SIMD_X86)
    __builtin_cpu_init();
    f.avx2_fma = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    f.avx512 = f.avx2_fma && __builtin_cpu_supports("avx512f");
    f.avx512bw = f.avx512 && __builtin_cpu_supports("avx512bw");
#endif
    return f;
  }();
  return features;
}

/// The target `requested` resolves to on a CPU with `cpu`: the widest supported
/// target no wider than the request (`automatic`: the widest supported).
[[nodiscard]] inline simd_target choose_simd_target(simd_target requested, const cpu_features& cpu) {
  if (requested == simd_target::portable) return simd_target::portable;
  if (cpu.avx512 && (requested == simd_target::automatic || requested == simd_target::avx512)) {
    return simd_target::avx512;
  }
  return cpu.avx2_fma ? simd_target::avx2_fma : simd_target::portable;
}

/// The target `requested` resolves to on this CPU for data of type `Scalar`,
/// for a kernel written for `KernelScalar` (other data runs the portable loop).
template <typename Scalar, typename KernelScalar = float>
[[nodiscard]] simd_target resolve_simd_target(simd_target requested) {
  if constexpr (!std::is_same_v<Scalar, KernelScalar>) {
    (void)requested;
    return simd_target::portable;
  } else {
    return choose_simd_target(requested, detected_cpu_features());
  }
}

}  // namespace detail
NASHPRUNE_END_NAMESPACE

#if defined(NASHPRUNE_SIMD_X86)
// Every function declared between BEGIN and END is compiled for `targets`.
#define NASHPRUNE_PRAGMA(text) _Pragma(#text)
#if defined(__clang__)
#define NASHPRUNE_TARGET_REGION_BEGIN(targets) \
  NASHPRUNE_PRAGMA(clang attribute push(__attribute__((target(targets))), apply_to = function))
#define NASHPRUNE_TARGET_REGION_END NASHPRUNE_PRAGMA(clang attribute pop)
#else
#define NASHPRUNE_TARGET_REGION_BEGIN(targets) \
  NASHPRUNE_PRAGMA(GCC push_options) NASHPRUNE_PRAGMA(GCC target(targets))
#define NASHPRUNE_TARGET_REGION_END NASHPRUNE_PRAGMA(GCC pop_options)
#endif

#endif  // NASHPRUNE_SIMD_X86
