// The best-response sweep, written once against `simd_ops` (vec, lanes,
// broadcast, load, load_first, store, store_first, fma) and included inside
// each instruction set's target region by best_response_kernel.hpp.

/// Moves player i of `x` to its best response and updates g.
[[gnu::always_inline]] inline void best_response_step(const best_response_sweep_data& x, Eigen::Index i) {
  using vec = simd_ops::vec;
  constexpr Eigen::Index lanes = simd_ops::lanes;
  double* const g = x.g;
  const double s = x.s[i];
  const double target = std::clamp(s + g[i] * x.inverse_diagonal[i], 0.0, 1.0);
  const double delta = target - s;
  if (delta == 0) return;
  x.s[i] = target;
  const double scaled = x.lambda * delta;
  const vec minus_scaled = simd_ops::broadcast(-scaled);
  const double* const column = x.r + i * x.ld;
  const Eigen::Index n = x.n;
  const Eigen::Index full = n - n % lanes;
  for (Eigen::Index k = 0; k < full; k += lanes) {
    simd_ops::store(g + k, simd_ops::fma(minus_scaled, simd_ops::load(column + k), simd_ops::load(g + k)));
  }
  if (full < n) {
    const Eigen::Index tail = n - full;
    simd_ops::store_first(g + full, tail,
                          simd_ops::fma(minus_scaled, simd_ops::load_first(column + full, tail),
                                        simd_ops::load_first(g + full, tail)));
  }
  g[i] -= scaled * x.diagonal[i];
}

/// The sweep over players 0..n−1.
inline void sweep(const best_response_sweep_data& x) {
  for (Eigen::Index i = 0; i < x.n; ++i) best_response_step(x, i);
}

/// Sweeps two independent games with their steps interleaved: each step waits
/// on the previous one of its own game (g_i needs every earlier update), so
/// alternating two games lets the CPU overlap the two chains.
inline void sweep_pair(const best_response_sweep_data& a, const best_response_sweep_data& b) {
  const Eigen::Index common = std::min(a.n, b.n);
  for (Eigen::Index i = 0; i < common; ++i) {
    best_response_step(a, i);
    best_response_step(b, i);
  }
  for (Eigen::Index i = common; i < a.n; ++i) best_response_step(a, i);
  for (Eigen::Index i = common; i < b.n; ++i) best_response_step(b, i);
}
