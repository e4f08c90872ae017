// The best-response sweep, written once against `simd_ops` (vec, lanes,
// broadcast, load, load_first, store, store_first, fma, add_at_lane, extract)
// and included inside each instruction set's target region by
// best_response_kernel.hpp.

/// g's entries [first, first + lanes) (fewer in the tail) as one vector, read
/// exactly as the sweep stores them (a load matching an earlier store is
/// forwarded from it; a partial one would wait for the store to reach the cache).
[[gnu::always_inline]] inline simd_ops::vec load_chunk(const double* g, Eigen::Index first, Eigen::Index n) {
  return first + simd_ops::lanes <= n ? simd_ops::load(g + first) : simd_ops::load_first(g + first, n - first);
}

/// Moves s_i to its best response for g_i = `own`; returns the change δ.
[[gnu::always_inline]] inline double best_response_move(const best_response_sweep_data& x, Eigen::Index i,
                                                        double own) {
  const double s = x.s[i];
  // clamp to [0, 1] by maxsd/minsd: a compare and branch here mispredicts
  // whenever players reach a bound, which stalls every interleaved game.
  const __m128d unclamped = _mm_set_sd(s + own * x.inverse_diagonal[i]);
  const double target = _mm_cvtsd_f64(_mm_min_sd(_mm_max_sd(unclamped, _mm_setzero_pd()), _mm_set_sd(1.0)));
  x.s[i] = target;
  return target - s;
}

/// Rows [first, first + lanes) of Q's column i over λ: R.col(i) (fewer rows in
/// the tail, zeros past n), with r_i added at row i when it falls in the chunk.
/// The flags say at compile time when the chunk cannot be the tail or hold row i.
template <bool may_hold_i = true, bool may_be_tail = true>
[[gnu::always_inline]] inline simd_ops::vec q_chunk(const best_response_sweep_data& x, const double* column,
                                                    Eigen::Index first, Eigen::Index i) {
  const simd_ops::vec r = !may_be_tail || first + simd_ops::lanes <= x.n
                              ? simd_ops::load(column + first)
                              : simd_ops::load_first(column + first, x.n - first);
  if constexpr (may_hold_i) return simd_ops::add_at_lane(r, i - first, x.diagonal[i]);
  return r;
}

/// Moves player i of `x` to its best response and updates g (in memory) by
/// λδ·Q.col(i)/λ. `own` is g_i with every earlier step applied; the result is
/// g_{i+1} with this step applied. Keeping that chain in registers (g_{i+1} read
/// before this step's store and moved by the same fused multiply-add as its
/// vector lane) gives the values of the plain sweep, bit for bit, without a
/// round trip through memory per player. The diagonal is added inside the
/// vector, so every store covers whole chunks that the next loads match.
[[gnu::always_inline]] inline double best_response_step(const best_response_sweep_data& x, Eigen::Index i,
                                                        double own) {
  constexpr Eigen::Index lanes = simd_ops::lanes;
  double* const g = x.g;
  const Eigen::Index n = x.n;
  const Eigen::Index next = i + 1;
  const Eigen::Index next_lane = next % lanes;
  const double next_before = next < n ? simd_ops::extract(load_chunk(g, next - next_lane, n), next_lane) : 0.0;
  const double delta = best_response_move(x, i, own);
  if (delta == 0) return next_before;
  const double scaled = x.lambda * delta;
  const simd_ops::vec minus_scaled = simd_ops::broadcast(-scaled);
  const double* const column = x.r + i * x.ld;
  for (Eigen::Index k = 0; k < n; k += lanes) {
    const simd_ops::vec updated = simd_ops::fma(minus_scaled, q_chunk(x, column, k, i), load_chunk(g, k, n));
    k + lanes <= n ? simd_ops::store(g + k, updated) : simd_ops::store_first(g + k, n - k, updated);
  }
  return next < n ? std::fma(-scaled, column[next], next_before) : 0.0;
}

/// f(std::integral_constant<T, 0>()), …, f(std::integral_constant<T, count − 1>()):
/// every index a constant, so arrays indexed by it can live in registers.
template <typename T, T count, typename F>
[[gnu::always_inline]] inline void for_each_constant(F&& f) {
  [&]<T... index>(std::integer_sequence<T, index...>) NASHPRUNE_KERNEL_INLINE {
    (f(std::integral_constant<T, index>()), ...);
  }(std::make_integer_sequence<T, count>());
}

/// The same sweep with g held in registers, `chunks` vectors per game: every
/// game of the group has the same n ≤ chunks·lanes (a batch of equal layers).
/// Per player it reads R's column and nothing else; its values are those of
/// best_response_step, bit for bit.
template <int chunks, int count>
inline void sweep_in_registers(const best_response_sweep_data* shared) {
  using vec = simd_ops::vec;
  constexpr Eigen::Index lanes = simd_ops::lanes;
  best_response_sweep_data games[count];  // local: no store can alias it
  std::copy_n(shared, count, games);
  const Eigen::Index n = games[0].n;
  vec g[count][chunks];
  double own[count];
  for_each_constant<int, count>([&](auto k) NASHPRUNE_KERNEL_INLINE {
    for_each_constant<int, chunks>([&](auto c) NASHPRUNE_KERNEL_INLINE {
      g[k][c] = load_chunk(games[k].g, c * lanes, n);
    });
    own[k] = games[k].g[0];
  });
  for_each_constant<int, chunks>([&](auto c) NASHPRUNE_KERNEL_INLINE {
    const auto step = [&](auto k, Eigen::Index lane) NASHPRUNE_KERNEL_INLINE {
      const best_response_sweep_data& x = games[k];
      const Eigen::Index i = c * lanes + lane;
      double next_before = 0;
      if (lane + 1 < lanes) {
        next_before = simd_ops::extract(g[k][c], lane + 1);
      } else if constexpr (c + 1 < chunks) {
        next_before = simd_ops::extract(g[k][c + 1], 0);
      }
      const double delta = best_response_move(x, i, own[k]);
      if (delta == 0) {
        own[k] = next_before;
        return;
      }
      const double scaled = x.lambda * delta;
      const vec minus_scaled = simd_ops::broadcast(-scaled);
      const double* const column = x.r + i * x.ld;
      for_each_constant<int, chunks>([&](auto part) NASHPRUNE_KERNEL_INLINE {
        const vec q = q_chunk<part == c, part + 1 == chunks>(x, column, part * lanes, i);
        g[k][part] = simd_ops::fma(minus_scaled, q, g[k][part]);
      });
      own[k] = i + 1 < n ? std::fma(-scaled, column[i + 1], next_before) : 0.0;
    };
    const Eigen::Index end = std::min(lanes, n - c * lanes);
    for (Eigen::Index lane = 0; lane < end; ++lane) {
      for_each_constant<int, count>([&](auto k) NASHPRUNE_KERNEL_INLINE { step(k, lane); });
    }
  });
  for_each_constant<int, count>([&](auto k) NASHPRUNE_KERNEL_INLINE {
    for_each_constant<int, chunks>([&](auto c) NASHPRUNE_KERNEL_INLINE {
      const Eigen::Index first = c * lanes;
      first + lanes <= n ? simd_ops::store(games[k].g + first, g[k][c])
                         : simd_ops::store_first(games[k].g + first, n - first, g[k][c]);
    });
  });
}

/// Sweeps `count` (1..max_sweep_group) independent games with their steps
/// interleaved: each step waits on the previous one of its own game, so
/// alternating games lets the CPU overlap their chains. Each game's values are
/// those of a sweep of its own.
template <std::size_t count>
inline void sweep_group(const best_response_sweep_data* shared) {
  std::array<best_response_sweep_data, count> games;  // local: g's stores cannot alias it
  std::copy_n(shared, count, games.begin());
  std::array<double, count> own;
  Eigen::Index common = games[0].n;
  for (std::size_t k = 0; k < count; ++k) {
    own[k] = games[k].g[0];
    common = std::min(common, games[k].n);
  }
  // Unrolled over the games so that `own` lives in registers.
  [&]<std::size_t... k>(std::index_sequence<k...>) {
    for (Eigen::Index i = 0; i < common; ++i) ((own[k] = best_response_step(games[k], i, own[k])), ...);
  }(std::make_index_sequence<count>());
  for (std::size_t k = 0; k < count; ++k) {
    for (Eigen::Index i = common; i < games[k].n; ++i) own[k] = best_response_step(games[k], i, own[k]);
  }
}

/// The sweep of `count` games in registers when they share an n of at most
/// 4·lanes (chunks: 1..4), else in memory.
template <int count>
inline void sweep_equal_or_group(const best_response_sweep_data* games) {
  const Eigen::Index n = games[0].n;
  bool equal = true;
  for (int k = 1; k < count; ++k) equal = equal && games[k].n == n;
  if (equal && n <= 4 * simd_ops::lanes) {
    switch ((n + simd_ops::lanes - 1) / simd_ops::lanes) {
      case 1: return sweep_in_registers<1, count>(games);
      case 2: return sweep_in_registers<2, count>(games);
      case 3: return sweep_in_registers<3, count>(games);
      default: return sweep_in_registers<4, count>(games);
    }
  }
  sweep_group<count>(games);
}

inline void sweep(const best_response_sweep_data* games, int count) {
  switch (count) {
    case 1: sweep_equal_or_group<1>(games); break;
    case 2: sweep_equal_or_group<2>(games); break;
    case 3: sweep_equal_or_group<3>(games); break;
    default: sweep_equal_or_group<4>(games); break;
  }
}

/// The solvers' fast look at R (n×n, column-major, leading dimension ld):
/// true when every entry is finite and |r_ij − r_ji| ≤ tolerance for every
/// pair, which passes validate_nash_game's symmetry test whatever the
/// magnitudes. Column j's rows 0..j are read as they lie and compared with row
/// j's columns 0..j, gathered, so each entry is read once (the diagonal twice:
/// a non-finite r_jj gives a NaN difference). False only means "look closer".
inline bool finite_and_nearly_symmetric(const double* r, Eigen::Index ld, Eigen::Index n, double tolerance) {
  constexpr Eigen::Index lanes = simd_ops::lanes;
  const simd_ops::vec bound = simd_ops::broadcast(tolerance);
  bool apart = false;  // an OR over the matrix: no early exit, no branch per chunk
  for (Eigen::Index j = 0; j < n; ++j) {
    const double* const column = r + j * ld;
    for (Eigen::Index i = 0; i <= j; i += lanes) {
      const Eigen::Index count = std::min(lanes, j + 1 - i);
      const simd_ops::vec down = count == lanes ? simd_ops::load(column + i) : simd_ops::load_first(column + i, count);
      const simd_ops::vec across = simd_ops::gather_first(r + i * ld + j, ld, count);
      apart |= simd_ops::any_apart(down, across, bound);
    }
  }
  return !apart;
}

/// ε(s) from g = c − Q·s, b_i and 1/(2b_i) (see exploitability_on); lanes past
/// n read as zeros and gain nothing.
inline double exploitability(const double* s, const double* g, const double* half_diagonal,
                             const double* inverse_diagonal, Eigen::Index n) {
  using vec = simd_ops::vec;
  constexpr Eigen::Index lanes = simd_ops::lanes;
  const vec zero = simd_ops::broadcast(0.0);
  const vec one = simd_ops::broadcast(1.0);
  vec worst = zero;
  for (Eigen::Index k = 0; k < n; k += lanes) {
    const auto read = [&](const double* p) {
      return k + lanes <= n ? simd_ops::load(p + k) : simd_ops::load_first(p + k, n - k);
    };
    const vec x = read(s);
    const vec gradient = read(g);
    const vec best = simd_ops::min(simd_ops::max(simd_ops::add(x, simd_ops::mul(gradient, read(inverse_diagonal))), zero), one);
    const vec step = simd_ops::sub(best, x);
    const vec gain = simd_ops::sub(simd_ops::mul(step, gradient), simd_ops::mul(read(half_diagonal), simd_ops::mul(step, step)));
    worst = simd_ops::max(worst, gain);
  }
  return simd_ops::reduce_max(worst);
}
