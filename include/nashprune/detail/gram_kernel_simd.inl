// nashprune/detail/gram_kernel_simd.inl — the register-blocked float Gram kernel,
// written once against a small vector interface and compiled once per instruction
// set: gram_kernel.hpp includes this file inside a target region ("#pragma GCC
// target" / "#pragma clang attribute") and a namespace that defines `simd_ops`:
//   vec, lanes, tile (heads per register tile), zero(), load(p), load_first(p, m),
//   fma(a, b, acc), add(a, b), reduce_to_double(acc).
// No include guard on purpose; not a header to include directly.

/// One panel: slices [first_slice, first_slice + slices) × columns [column, column + length).
struct gram_panel {
  Eigen::Index first_slice;
  Eigen::Index slices;
  Eigen::Index column;
  Eigen::Index length;
};

/// Accumulates the RI × RJ tile of heads [i0, i0 + RI) × [j0, j0 + RJ) over one
/// panel in float vector registers, then adds it to the double Gram (lower
/// triangle only). A diagonal tile (i0 == j0) also accumulates the head sums, so
/// each activation is read once per tile row and the sums cost no extra load.
template <int RI, int RJ, bool Diagonal>
inline void gram_tile(const gram_layout<float>& x, const gram_panel& p, Eigen::Index i0,
                      Eigen::Index j0, double* gram, double* sums) {
  using vec = typename simd_ops::vec;
  constexpr Eigen::Index lanes = simd_ops::lanes;
  vec acc[RI][RJ];
  vec sum[RI];
  #pragma GCC unroll 8
  for (int r = 0; r < RI; ++r) {
    sum[r] = simd_ops::zero();
    #pragma GCC unroll 8
    for (int c = 0; c < RJ; ++c) acc[r][c] = simd_ops::zero();
  }
  const Eigen::Index full = p.length - p.length % lanes;
  const Eigen::Index tail = p.length - full;
  for (Eigen::Index a = p.first_slice; a < p.first_slice + p.slices; ++a) {
    const float* xi[RI];
    const float* xj[RJ];
    #pragma GCC unroll 8
    for (int r = 0; r < RI; ++r) xi[r] = x.run(i0 + r, a) + p.column;
    #pragma GCC unroll 8
    for (int c = 0; c < RJ; ++c) xj[c] = x.run(j0 + c, a) + p.column;
    for (Eigen::Index k = 0; k < full; k += lanes) {
      vec vi[RI];
      #pragma GCC unroll 8
      for (int r = 0; r < RI; ++r) {
        vi[r] = simd_ops::load(xi[r] + k);
        if constexpr (Diagonal) sum[r] = simd_ops::add(sum[r], vi[r]);
      }
      #pragma GCC unroll 8
      for (int c = 0; c < RJ; ++c) {
        const vec vj = simd_ops::load(xj[c] + k);
        #pragma GCC unroll 8
        for (int r = 0; r < RI; ++r) acc[r][c] = simd_ops::fma(vi[r], vj, acc[r][c]);
      }
    }
    if (tail != 0) {
      vec vi[RI];
      #pragma GCC unroll 8
      for (int r = 0; r < RI; ++r) {
        vi[r] = simd_ops::load_first(xi[r] + full, tail);
        if constexpr (Diagonal) sum[r] = simd_ops::add(sum[r], vi[r]);
      }
      #pragma GCC unroll 8
      for (int c = 0; c < RJ; ++c) {
        const vec vj = simd_ops::load_first(xj[c] + full, tail);
        #pragma GCC unroll 8
        for (int r = 0; r < RI; ++r) acc[r][c] = simd_ops::fma(vi[r], vj, acc[r][c]);
      }
    }
  }
  const Eigen::Index n = x.heads;
  #pragma GCC unroll 8
  for (int r = 0; r < RI; ++r) {
    if constexpr (Diagonal) sums[i0 + r] += simd_ops::reduce_to_double(sum[r]);
    #pragma GCC unroll 8
    for (int c = 0; c < RJ; ++c) {
      if (!Diagonal || c <= r) gram[(i0 + r) + (j0 + c) * n] += simd_ops::reduce_to_double(acc[r][c]);
    }
  }
}

/// Tile of a head block with itself (RI = RJ = rows, rows ∈ [1, tile]).
template <int R>
inline void gram_diagonal_tile(int rows, const gram_layout<float>& x, const gram_panel& p,
                               Eigen::Index i0, double* gram, double* sums) {
  if constexpr (R >= 1) {
    if (rows == R) return gram_tile<R, R, true>(x, p, i0, i0, gram, sums);
    return gram_diagonal_tile<R - 1>(rows, x, p, i0, gram, sums);
  }
}

/// Tile of a (possibly short) head block against a full earlier block.
template <int R>
inline void gram_offdiagonal_tile(int rows, const gram_layout<float>& x, const gram_panel& p,
                                  Eigen::Index i0, Eigen::Index j0, double* gram, double* sums) {
  if constexpr (R >= 1) {
    if (rows == R) return gram_tile<R, simd_ops::tile, false>(x, p, i0, j0, gram, sums);
    return gram_offdiagonal_tile<R - 1>(rows, x, p, i0, j0, gram, sums);
  }
}

/// Asks for heads [i0, i0 + rows) of panel p to be brought into L2 while the
/// current panel is computed: the tiles visit a panel head block by head block,
/// a pattern of short strided runs the hardware prefetchers follow poorly.
inline void prefetch_heads(const gram_layout<float>& x, const gram_panel& p, Eigen::Index i0,
                           int rows) {
  constexpr Eigen::Index line_floats = 16;  // 64-byte cache lines
  for (Eigen::Index a = p.first_slice; a < p.first_slice + p.slices; ++a) {
    for (int r = 0; r < rows; ++r) {
      const float* run = x.run(i0 + r, a) + p.column;
      for (Eigen::Index k = 0; k < p.length; k += line_floats) {
        _mm_prefetch(reinterpret_cast<const char*>(run + k), _MM_HINT_T0);
      }
    }
  }
}

/// Adds the lower-triangle Gram and the head sums of a float batch. The batch is
/// cut into panels of at most gram_steps_per_flush vector steps per head, small
/// enough that (a) a panel of up to 128 heads stays in L2 while all tiles run
/// over it (and the next one is prefetched meanwhile), so each activation comes
/// from memory once per batch (wider layouts are cut into head blocks of
/// gram_block_bytes per panel, re-read once per block), and (b) no float
/// accumulator adds more than
/// gram_steps_per_flush products before it is reduced into double, which bounds
/// the rounding whatever the batch length.
inline void accumulate_gram_simd(const gram_layout<float>& x, double* gram, double* sums) {
  constexpr Eigen::Index lanes = simd_ops::lanes;
  constexpr Eigen::Index tile = simd_ops::tile;
  const Eigen::Index steps_per_slice = (x.slice_length + lanes - 1) / lanes;
  Eigen::Index slices_per_panel = 1;
  Eigen::Index columns_per_panel = x.slice_length;
  if (steps_per_slice > gram_steps_per_flush) {
    columns_per_panel = gram_steps_per_flush * lanes;
  } else {
    slices_per_panel = gram_steps_per_flush / steps_per_slice;
  }
  // Panels in order: column chunks of one slice group, then the next group.
  const auto panel_at = [&](Eigen::Index first_slice, Eigen::Index column) {
    return gram_panel{first_slice, std::min(slices_per_panel, x.slices - first_slice), column,
                      std::min(columns_per_panel, x.slice_length - column)};
  };
  gram_panel p = panel_at(0, 0);
  while (p.first_slice < x.slices) {
    gram_panel next = panel_at(p.first_slice, p.column + columns_per_panel);
    if (next.column >= x.slice_length) next = panel_at(p.first_slice + slices_per_panel, 0);
    const bool has_next = next.first_slice < x.slices;
    // Column blocks of heads: the tiles of block [j_begin, j_end) re-read its
    // heads once per tile row, so one block's panel is kept within L2 (wide
    // layouts such as head_cka's n·d columns); n ≤ 128 heads is one block.
    const Eigen::Index panel_floats = std::max<Eigen::Index>(p.slices * p.length, 1);
    const Eigen::Index block =
        std::max<Eigen::Index>(tile, gram_block_bytes / (panel_floats * 4) / tile * tile);
    for (Eigen::Index j_begin = 0; j_begin < x.heads; j_begin += block) {
      const Eigen::Index j_end = std::min(x.heads, j_begin + block);
      for (Eigen::Index i0 = j_begin; i0 < x.heads; i0 += tile) {
        const int rows = static_cast<int>(std::min(tile, x.heads - i0));
        for (Eigen::Index j0 = j_begin; j0 < std::min(i0, j_end); j0 += tile) {
          gram_offdiagonal_tile<tile>(rows, x, p, i0, j0, gram, sums);
        }
        if (i0 < j_end) {  // the tile row's diagonal tile lies in this block
          gram_diagonal_tile<tile>(rows, x, p, i0, gram, sums);
          if (has_next) prefetch_heads(x, next, i0, rows);
        }
      }
    }
    p = next;
  }
}
