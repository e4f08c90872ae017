// nashprune/detail/score_kernel_simd.inl — the float line-total kernels, written
// once against a small vector interface and compiled once per instruction set:
// score_kernel.hpp includes this file inside a target region and a namespace
// that defines `simd_ops` (gram_kernel.hpp's interface plus abs, mul, broadcast,
// store, store_first). No include guard on purpose; not a header to include directly.

using vec = typename simd_ops::vec;
constexpr Eigen::Index lanes = simd_ops::lanes;

/// f of the entries at w, g, h (the inputs the kind uses).
template <score_kind Kind>
inline vec score_of(vec w, vec g, vec h) {
  if constexpr (Kind == score_kind::abs) {
    return simd_ops::abs(w);
  } else if constexpr (Kind == score_kind::square) {
    return simd_ops::mul(w, w);
  } else {
    const vec wg = simd_ops::mul(w, g);
    if constexpr (Kind == score_kind::taylor_first) {
      return simd_ops::abs(wg);
    } else if constexpr (Kind == score_kind::taylor_fisher) {
      return simd_ops::fma(simd_ops::mul(wg, wg), simd_ops::broadcast(0.5f), simd_ops::abs(wg));
    } else {
      return simd_ops::fma(simd_ops::mul(w, w), simd_ops::mul(simd_ops::broadcast(0.5f), simd_ops::abs(h)),
                           simd_ops::abs(wg));
    }
  }
}

/// Line pointers of the inputs of one storage line.
struct line_inputs {
  const float* p[3];
};

inline line_inputs line_at(const score_planes& x, Eigen::Index o) {
  return {{x.data[0] + o * x.outer_stride[0], x.data[1] + o * x.outer_stride[1],
           x.data[2] + o * x.outer_stride[2]}};
}

/// The entries from position k of one input: a full vector, or the first
/// `count` (the rest 0).
template <bool Full>
inline vec load_at(const float* p, Eigen::Index k, Eigen::Index count) {
  if constexpr (Full) {
    (void)count;
    return simd_ops::load(p + k);
  } else {
    return simd_ops::load_low(p + k, count);
  }
}

template <bool Full>
inline void store_at(float* p, Eigen::Index k, Eigen::Index count, vec v) {
  if constexpr (Full) {
    (void)count;
    simd_ops::store(p + k, v);
  } else {
    simd_ops::store_first(p + k, count, v);
  }
}

/// The scores of the entries from position k (lanes past `count` score 0: the
/// masked loads give w = g = h = 0).
template <score_kind Kind, bool Full>
inline vec scores_at(const line_inputs& l, Eigen::Index k, Eigen::Index count) {
  constexpr int n = inputs_of(Kind);
  const vec w = load_at<Full>(l.p[0], k, count);
  const vec g = n >= 2 ? load_at<Full>(l.p[1], k, count) : w;
  const vec h = n >= 3 ? load_at<Full>(l.p[2], k, count) : w;
  return score_of<Kind>(w, g, h);
}

/// acc += the scores at k, times position[k] when Scaled.
template <score_kind Kind, bool Scaled, bool Full>
inline vec add_scores(vec acc, const line_inputs& l, const float* position, Eigen::Index k, Eigen::Index count) {
  const vec s = scores_at<Kind, Full>(l, k, count);
  if constexpr (Scaled) {
    return simd_ops::fma(s, load_at<Full>(position, k, count), acc);
  } else {
    (void)position;
    return simd_ops::add(acc, s);
  }
}

/// Σ_k f(line at k) · position[k] (position unused unless Scaled) over one storage line.
template <score_kind Kind, bool Scaled>
inline double line_total(const line_inputs& l, const float* position, Eigen::Index n) {
  constexpr Eigen::Index unroll = 4;
  vec acc[unroll];
  double total = 0;
  Eigen::Index k = 0;
  while (k < n) {
    // One flush interval: at most score_steps_per_flush unrolled steps in float.
    for (auto& a : acc) a = simd_ops::zero();
    const Eigen::Index stop = std::min(n, k + score_steps_per_flush * unroll * lanes);
    for (; k + unroll * lanes <= stop; k += unroll * lanes) {
      #pragma GCC unroll 4
      for (Eigen::Index u = 0; u < unroll; ++u) {
        acc[u] = add_scores<Kind, Scaled, true>(acc[u], l, position, k + u * lanes, lanes);
      }
    }
    for (; k + lanes <= stop; k += lanes) acc[0] = add_scores<Kind, Scaled, true>(acc[0], l, position, k, lanes);
    if (k < stop) {
      acc[1] = add_scores<Kind, Scaled, false>(acc[1], l, position, k, stop - k);
      k = stop;
    }
    total += simd_ops::reduce_to_double(simd_ops::add(simd_ops::add(acc[0], acc[1]), simd_ops::add(acc[2], acc[3])));
  }
  return total;
}

/// line_total with factors by position for a pass of factor_lines_per_pass
/// lines at once (totals[i] for line i): each vector of factors is loaded once
/// for all of them, and the lines are read as concurrent streams (one line at a
/// time ran at ~0.7 of the read bandwidth on the test machine).
template <score_kind Kind>
inline void scaled_group_totals(const line_inputs* l, const float* position, Eigen::Index n, double* totals) {
  constexpr Eigen::Index pass = factor_lines_per_pass;
  vec acc[pass];
  for (Eigen::Index i = 0; i < pass; ++i) totals[i] = 0;
  Eigen::Index k = 0;
  while (k < n) {
    for (auto& a : acc) a = simd_ops::zero();
    const Eigen::Index stop = std::min(n, k + score_steps_per_flush * lanes);
    for (; k + lanes <= stop; k += lanes) {
      const vec factor = simd_ops::load(position + k);
      #pragma GCC unroll 8
      for (Eigen::Index i = 0; i < pass; ++i) {
        acc[i] = simd_ops::fma(scores_at<Kind, true>(l[i], k, lanes), factor, acc[i]);
      }
    }
    if (k < stop) {
      const vec factor = simd_ops::load_low(position + k, stop - k);
      for (Eigen::Index i = 0; i < pass; ++i) {
        acc[i] = simd_ops::fma(scores_at<Kind, false>(l[i], k, stop - k), factor, acc[i]);
      }
      k = stop;
    }
    for (Eigen::Index i = 0; i < pass; ++i) totals[i] += simd_ops::reduce_to_double(acc[i]);
  }
}

/// sums[k..k+count) += Σ over the pass's lines of f(line at k) · scale.
template <score_kind Kind, bool Scaled, bool Full>
inline void add_group_at(const line_inputs* l, const vec* scale, float* sums, Eigen::Index k, Eigen::Index count) {
  constexpr Eigen::Index pass = lines_per_pass(inputs_of(Kind));
  // Two independent partial sums (even and odd lines) halve the dependency chain.
  vec even = load_at<Full>(sums, k, count);
  vec odd = simd_ops::zero();
  #pragma GCC unroll 8
  for (Eigen::Index i = 0; i < pass; i += 2) {
    const vec s0 = scores_at<Kind, Full>(l[i], k, count);
    const vec s1 = scores_at<Kind, Full>(l[i + 1], k, count);
    if constexpr (Scaled) {
      even = simd_ops::fma(s0, scale[i], even);
      odd = simd_ops::fma(s1, scale[i + 1], odd);
    } else {
      (void)scale;
      even = simd_ops::add(even, s0);
      odd = simd_ops::add(odd, s1);
    }
  }
  store_at<Full>(sums, k, count, simd_ops::add(even, odd));
}

/// sums[k] += f(line at k) · scale over one line.
template <score_kind Kind, bool Scaled, bool Full>
inline void add_line_at(const line_inputs& l, vec scale, float* sums, Eigen::Index k, Eigen::Index count) {
  const vec s = scores_at<Kind, Full>(l, k, count);
  const vec old = load_at<Full>(sums, k, count);
  vec next;
  if constexpr (Scaled) {
    next = simd_ops::fma(s, scale, old);
  } else {
    (void)scale;
    next = simd_ops::add(old, s);
  }
  store_at<Full>(sums, k, count, next);
}

/// sums[k] += Σ over the lines of steps [first_step, last_step) of `order` of
/// f(line at k) · line_scale[line] (line_scale unused unless Scaled). Each sums
/// entry is loaded and stored once per pass, and the pass's lines stream concurrently.
template <score_kind Kind, bool Scaled>
inline void add_passes(const score_planes& x, const interleaved_passes& order, Eigen::Index first_step,
                       Eigen::Index last_step, const float* line_scale, float* sums) {
  const Eigen::Index n = x.inner;
  const Eigen::Index full = n - n % lanes;
  constexpr Eigen::Index pass = lines_per_pass(inputs_of(Kind));
  for (Eigen::Index step = first_step; step < last_step; ++step) {
    line_inputs l[pass];
    vec scale[pass];
    for (Eigen::Index i = 0; i < pass; ++i) {
      const Eigen::Index line = order.line(step, i);
      l[i] = line_at(x, line);
      scale[i] = simd_ops::broadcast(Scaled ? line_scale[line] : 1.0f);
    }
    for (Eigen::Index k = 0; k < full; k += lanes) add_group_at<Kind, Scaled, true>(l, scale, sums, k, lanes);
    if (full < n) add_group_at<Kind, Scaled, false>(l, scale, sums, full, n - full);
  }
}

/// sums[k] += Σ_{o in [first, last)} f(line o at k) · line_scale[o], one line at a time.
template <score_kind Kind, bool Scaled>
inline void add_single_lines(const score_planes& x, Eigen::Index first, Eigen::Index last, const float* line_scale,
                             float* sums) {
  const Eigen::Index n = x.inner;
  const Eigen::Index full = n - n % lanes;
  for (Eigen::Index o = first; o < last; ++o) {
    const line_inputs l = line_at(x, o);
    const vec scale = simd_ops::broadcast(Scaled ? line_scale[o] : 1.0f);
    for (Eigen::Index k = 0; k < full; k += lanes) add_line_at<Kind, Scaled, true>(l, scale, sums, k, lanes);
    if (full < n) add_line_at<Kind, Scaled, false>(l, scale, sums, full, n - full);
  }
}

template <score_kind Kind>
inline void score_totals_of(const score_planes& x, const score_scaling& scaling, bool along, double* totals) {
  if (along) {
    // With factors by position, passes of lines first; the lines left (all of
    // them without factors) one at a time.
    Eigen::Index first_single = 0;
    if (scaling.per_position != nullptr) {
      const interleaved_passes order(x.outer, factor_lines_per_pass);
      for (Eigen::Index step = 0; step < order.steps; ++step) {
        line_inputs l[factor_lines_per_pass];
        double pass_totals[factor_lines_per_pass];
        for (Eigen::Index i = 0; i < factor_lines_per_pass; ++i) l[i] = line_at(x, order.line(step, i));
        scaled_group_totals<Kind>(l, scaling.per_position, x.inner, pass_totals);
        for (Eigen::Index i = 0; i < factor_lines_per_pass; ++i) totals[order.line(step, i)] = pass_totals[i];
      }
      first_single = order.rest();
    }
    for (Eigen::Index o = first_single; o < x.outer; ++o) {
      const line_inputs l = line_at(x, o);
      totals[o] = scaling.per_position != nullptr ? line_total<Kind, true>(l, scaling.per_position, x.inner)
                                                  : line_total<Kind, false>(l, nullptr, x.inner);
    }
    if (scaling.per_line != nullptr) {
      for (Eigen::Index o = 0; o < x.outer; ++o) totals[o] *= static_cast<double>(scaling.per_line[o]);
    }
    return;
  }
  constexpr Eigen::Index pass = lines_per_pass(inputs_of(Kind));
  const interleaved_passes order(x.outer, pass);
  // Float sums of at most accumulation_chunk lines at a time, added into double.
  std::fill(totals, totals + x.inner, 0.0);
  std::vector<float> sums(static_cast<std::size_t>(x.inner));
  const auto add_into_totals = [&](auto&& add_to_sums) {
    std::fill(sums.begin(), sums.end(), 0.0f);
    if (scaling.per_line != nullptr) {
      add_to_sums(std::true_type{}, scaling.per_line);
    } else {
      add_to_sums(std::false_type{}, nullptr);
    }
    for (Eigen::Index k = 0; k < x.inner; ++k) totals[k] += static_cast<double>(sums[static_cast<std::size_t>(k)]);
  };
  constexpr Eigen::Index steps_per_chunk = accumulation_chunk / pass;
  for (Eigen::Index first = 0; first < order.steps; first += steps_per_chunk) {
    const Eigen::Index last = std::min(order.steps, first + steps_per_chunk);
    add_into_totals([&](auto scaled, const float* line_scale) {
      add_passes<Kind, decltype(scaled)::value>(x, order, first, last, line_scale, sums.data());
    });
  }
  if (order.rest() < x.outer) {
    add_into_totals([&](auto scaled, const float* line_scale) {
      add_single_lines<Kind, decltype(scaled)::value>(x, order.rest(), x.outer, line_scale, sums.data());
    });
  }
  if (scaling.per_position != nullptr) {
    for (Eigen::Index k = 0; k < x.inner; ++k) totals[k] *= static_cast<double>(scaling.per_position[k]);
  }
}

/// Fills `totals` with the line totals (along) or position totals (across) of x.
inline void score_totals(score_kind kind, const score_planes& x, const score_scaling& scaling, bool along,
                         double* totals) {
  switch (kind) {
    case score_kind::abs:
      return score_totals_of<score_kind::abs>(x, scaling, along, totals);
    case score_kind::square:
      return score_totals_of<score_kind::square>(x, scaling, along, totals);
    case score_kind::taylor_first:
      return score_totals_of<score_kind::taylor_first>(x, scaling, along, totals);
    case score_kind::taylor_fisher:
      return score_totals_of<score_kind::taylor_fisher>(x, scaling, along, totals);
    case score_kind::taylor_hessian:
      return score_totals_of<score_kind::taylor_hessian>(x, scaling, along, totals);
  }
}
