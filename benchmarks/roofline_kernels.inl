// benchmarks/roofline_kernels.inl — the two roofline kernels of bench_gram.cpp,
// written once and compiled once per instruction set: bench_gram.cpp includes
// this file inside a target region and a namespace defining `simd_ops`:
//   vec, lanes, set1(x), load(p), store(p, v), add(a, b), fma(a, b, c).
// No include guard on purpose; not a header to include directly.

/// Σ of v's lanes: a store and a scalar sum (GCC 12's _mm512_reduce_add_ps
/// trips -Wuninitialized).
inline float horizontal_sum(typename simd_ops::vec v) {
  float out[simd_ops::lanes];
  simd_ops::store(out, v);
  float sum = 0;
  for (float x : out) sum += x;
  return sum;
}

/// Independent FMA chains held in registers: ≥ FMA latency (4 cycles) × vector
/// FMAs per cycle (2 on every AVX2/AVX-512 core we target), so none stalls.
inline constexpr int chains = 12;

/// steps × chains vector FMAs, no memory traffic; the result defeats dead-code removal.
inline float fma_chains(std::int64_t steps, float seed) {
  typename simd_ops::vec acc[chains];
  for (int c = 0; c < chains; ++c) acc[c] = simd_ops::set1(seed + static_cast<float>(c));
  const typename simd_ops::vec scale = simd_ops::set1(0.999999f);
  const typename simd_ops::vec shift = simd_ops::set1(1e-6f);
  for (std::int64_t s = 0; s < steps; ++s) {
    #pragma GCC unroll 12
    for (int c = 0; c < chains; ++c) acc[c] = simd_ops::fma(acc[c], scale, shift);
  }
  for (int c = 1; c < chains; ++c) acc[0] = simd_ops::add(acc[0], acc[c]);
  return horizontal_sum(acc[0]);
}

/// Σ p[0, count), eight vector accumulators: the read rate, not the add latency, limits it.
inline float read_sum(const float* p, Eigen::Index count) {
  constexpr Eigen::Index lanes = simd_ops::lanes;
  typename simd_ops::vec acc[8];
  for (auto& a : acc) a = simd_ops::set1(0.0f);
  Eigen::Index k = 0;
  for (; k + 8 * lanes <= count; k += 8 * lanes) {
    #pragma GCC unroll 8
    for (int c = 0; c < 8; ++c) acc[c] = simd_ops::add(acc[c], simd_ops::load(p + k + c * lanes));
  }
  float tail = 0;
  for (; k < count; ++k) tail += p[k];
  for (int c = 1; c < 8; ++c) acc[0] = simd_ops::add(acc[0], acc[c]);
  return horizontal_sum(acc[0]) + tail;
}
