// nashprune/detail/gram_kernel_simd.inl — the register-blocked float Gram kernel,
// written once against a small vector interface and compiled once per instruction
// set: gram_kernel.hpp includes this file inside a target region ("#pragma GCC
// target" / "#pragma clang attribute") and a namespace that defines `simd_ops`:
//   vec, lanes, tile (heads per diagonal register tile and rows of an off-diagonal
//   one), tile_columns (columns of an off-diagonal tile), zero(), load(p), load_low(p, m)
//   (lanes [0, m) from p, the rest zero), load_high(v, p, m) (lanes [m, lanes)
//   from p, the rest from v), fma(a, b, acc), add(a, b), reduce_to_double(acc).
// No include guard on purpose; not a header to include directly.

/// One panel: slices [first_slice, first_slice + slices) × columns [column, column + length).
/// `shift` > 0 when every run of the panel starts `shift` floats past a vector
/// boundary and its length is whole vectors: the kernel then loads aligned
/// vectors (see gram_tile); 0 reads each run from its start with unaligned loads.
struct gram_panel {
  Eigen::Index first_slice;
  Eigen::Index slices;
  Eigen::Index column;
  Eigen::Index length;
  Eigen::Index shift;
};

/// One vector step of a tile: loads RI rows and RJ columns through `step`
/// (step.row(r), step.column(c)) and adds their products into the register
/// accumulators. The columns are loaded one at a time beside their FMAs, so an
/// off-diagonal tile needs RI·RJ + RI + 1 registers. A diagonal tile (columns =
/// rows) loads its rows only, forms the lower triangle's RI(RI+1)/2 products
/// alone (no FMA is spent on a pair twice) and adds the rows into the head sums.
template <int RI, int RJ, bool Diagonal, typename Step>
inline void gram_step(const Step& step, typename simd_ops::vec (&acc)[RI][RJ],
                      typename simd_ops::vec (&sum)[RI]) {
  typename simd_ops::vec vi[RI];
  #pragma GCC unroll 8
  for (int r = 0; r < RI; ++r) {
    vi[r] = step.row(r);
    if constexpr (Diagonal) sum[r] = simd_ops::add(sum[r], vi[r]);
  }
  if constexpr (Diagonal) {
    static_assert(RI == RJ);
    #pragma GCC unroll 8
    for (int c = 0; c < RJ; ++c) {
      #pragma GCC unroll 8
      for (int r = c; r < RI; ++r) acc[r][c] = simd_ops::fma(vi[r], vi[c], acc[r][c]);
    }
  } else {
    #pragma GCC unroll 8
    for (int c = 0; c < RJ; ++c) {
      const typename simd_ops::vec vj = step.column(c);
      #pragma GCC unroll 8
      for (int r = 0; r < RI; ++r) acc[r][c] = simd_ops::fma(vi[r], vj, acc[r][c]);
    }
  }
}

/// A whole vector at offset k of every run.
struct full_step {
  const float* const* rows;
  const float* const* columns;
  Eigen::Index k;
  [[nodiscard]] typename simd_ops::vec row(int r) const { return simd_ops::load(rows[r] + k); }
  [[nodiscard]] typename simd_ops::vec column(int c) const { return simd_ops::load(columns[c] + k); }
};

/// A vector made of two parts of every run: lanes [0, split) at offset `low`,
/// lanes [split, lanes) at offset `high`; a missing part (Low / High false) is zero.
template <bool Low, bool High>
struct split_step {
  const float* const* rows;
  const float* const* columns;
  Eigen::Index low;
  Eigen::Index high;
  Eigen::Index split;
  [[nodiscard]] typename simd_ops::vec part(const float* run) const {
    typename simd_ops::vec v = simd_ops::zero();
    if constexpr (Low) v = simd_ops::load_low(run + low, split);
    if constexpr (High) v = simd_ops::load_high(v, run + high, split);
    return v;
  }
  [[nodiscard]] typename simd_ops::vec row(int r) const { return part(rows[r]); }
  [[nodiscard]] typename simd_ops::vec column(int c) const { return part(columns[c]); }
};

/// The vector joining two consecutive runs: lanes [0, split) of the whole vector
/// at offset `low` (the previous run's end), lanes [split, lanes) of the whole
/// vector at offset 0 (this run's aligned start). Plain aligned loads and a blend:
/// the lanes they read beyond the two runs lie between them, inside the batch.
struct joined_step {
  const float* const* rows;
  const float* const* columns;
  Eigen::Index low;
  Eigen::Index split;
  [[nodiscard]] typename simd_ops::vec part(const float* run) const {
    return simd_ops::blend_low(simd_ops::load(run + low), simd_ops::load(run), split);
  }
  [[nodiscard]] typename simd_ops::vec row(int r) const { return part(rows[r]); }
  [[nodiscard]] typename simd_ops::vec column(int c) const { return part(columns[c]); }
};

/// out[v] += Σ of the lanes of vectors[v], v < Count, four vectors per reduction:
/// the four are summed lane-wise down to one vector of four partial sums in float
/// (the lanes hold at most gram_steps_per_flush products each) and then added in
/// double. A third of the instructions of reducing each vector on its own, which
/// matters because a tile is flushed every gram_steps_per_flush steps.
/// Always inlined, like add_lane_sums_from: called apart, the tile's accumulators
/// go through the stack and the reduction cannot overlap the tile's last FMAs nor
/// the next tile's first loads; where the tiles are few and small (n = 8: a 4 × 4
/// tile and two diagonal ones per panel) that cost 6–9 % of the FMA peak.
template <int Count>
[[gnu::always_inline]] inline void add_lane_sums(const typename simd_ops::vec* vectors, double* out) {
  #pragma GCC unroll 8
  for (int v = 0; v < Count; v += 4) {
    const auto at = [&](int k) { return v + k < Count ? vectors[v + k] : simd_ops::zero(); };
    const __m256d four = simd_ops::four_sums(at(0), at(1), at(2), at(3));
    if (Count - v >= 4) {
      _mm256_storeu_pd(out + v, _mm256_add_pd(_mm256_loadu_pd(out + v), four));
    } else {
      alignas(32) double part[4];
      _mm256_store_pd(part, four);
      for (int k = 0; v + k < Count; ++k) out[v + k] += part[k];
    }
  }
}

/// add_lane_sums over vectors [first, RI) of an RI-vector array, `first` known
/// only at run time (a diagonal tile's column), dispatched to a fixed count.
template <int RI>
[[gnu::always_inline]] inline void add_lane_sums_from(const typename simd_ops::vec (&vectors)[RI], int first,
                               double* out) {
  if constexpr (RI >= 1) {
    if (first == 0) return add_lane_sums<RI>(vectors, out);
    typename simd_ops::vec rest[RI > 1 ? RI - 1 : 1];
    #pragma GCC unroll 8
    for (int r = 1; r < RI; ++r) rest[r - 1] = vectors[r];
    if constexpr (RI > 1) add_lane_sums_from<RI - 1>(rest, first - 1, out);
  }
}

/// Accumulates the RI × RJ tile of heads [i0, i0 + RI) × [j0, j0 + RJ) over one
/// panel in float vector registers, then adds it to the double Gram (lower
/// triangle only). A diagonal tile (i0 == j0) also accumulates the head sums, so
/// each activation is read once per tile row and the sums cost no extra load.
///
/// Misaligned runs (p.shift > 0): every run starts `shift` lanes into an aligned
/// vector and spans whole vectors, so it is read as aligned vectors, its first
/// one missing lanes [0, shift) and its last one (just past it) holding only
/// lanes [0, shift). Each run's first vector is completed by the previous run's
/// last: one merged vector per run, whose lanes still pair the same entries of
/// every head (all runs share the shift). No line-splitting load, and as many
/// steps as the aligned batch, plus one per panel; no lane adds more products.
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
  // Shifted: a run's first vector is completed by the previous run's last one,
  // `carried` floats from the current run's aligned start.
  const Eigen::Index carried = p.length - x.slice_stride;
  // The runs of the current slice, advanced by one slice stride per slice (not
  // recomputed: at d = 64 a slice is a few steps, and AVX2 is issue-bound there).
  const float* xi[RI];
  const float* xj[RJ];
  #pragma GCC unroll 8
  for (int r = 0; r < RI; ++r) xi[r] = x.run(i0 + r, p.first_slice) + p.column - p.shift;
  #pragma GCC unroll 8
  for (int c = 0; c < RJ; ++c) xj[c] = x.run(j0 + c, p.first_slice) + p.column - p.shift;
  for (Eigen::Index a = p.first_slice; a < p.first_slice + p.slices; ++a) {
    if (a != p.first_slice) {
      #pragma GCC unroll 8
      for (int r = 0; r < RI; ++r) xi[r] += x.slice_stride;
      #pragma GCC unroll 8
      for (int c = 0; c < RJ; ++c) xj[c] += x.slice_stride;
    }
    Eigen::Index k = 0;
    if (p.shift != 0) {
      if (a == p.first_slice) {
        gram_step<RI, RJ, Diagonal>(split_step<false, true>{xi, xj, 0, 0, p.shift}, acc, sum);
      } else {
        gram_step<RI, RJ, Diagonal>(joined_step{xi, xj, carried, p.shift}, acc, sum);
      }
      k = lanes;
    }
    for (; k < full; k += lanes) gram_step<RI, RJ, Diagonal>(full_step{xi, xj, k}, acc, sum);
    if (tail != 0) {
      gram_step<RI, RJ, Diagonal>(split_step<true, false>{xi, xj, full, 0, tail}, acc, sum);
    }
  }
  if (p.shift != 0) {  // the last run's last vector
    gram_step<RI, RJ, Diagonal>(split_step<true, false>{xi, xj, p.length, 0, p.shift}, acc, sum);
  }
  const Eigen::Index n = x.heads;
  if constexpr (Diagonal) add_lane_sums<RI>(sum, sums + i0);
  #pragma GCC unroll 8
  for (int c = 0; c < RJ; ++c) {
    // Column c of the tile, rows [first, RI): consecutive entries of the
    // column-major Gram (a diagonal tile keeps its lower triangle, rows ≥ c).
    constexpr int none = 0;
    const int first = Diagonal ? c : none;
    vec column[RI];
    #pragma GCC unroll 8
    for (int r = 0; r < RI; ++r) column[r] = acc[r][c];
    add_lane_sums_from(column, first, gram + (i0 + first) + (j0 + c) * n);
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

/// Tile of a (possibly short) head block of `rows` heads against `columns`
/// earlier heads (rows ∈ [1, tile], columns ∈ [1, tile_columns]).
template <int R, int C>
inline void gram_offdiagonal_tile(int rows, int columns, const gram_layout<float>& x,
                                  const gram_panel& p, Eigen::Index i0, Eigen::Index j0,
                                  double* gram, double* sums) {
  if constexpr (R >= 1 && C >= 1) {
    if (rows < R) return gram_offdiagonal_tile<R - 1, C>(rows, columns, x, p, i0, j0, gram, sums);
    if (columns < C) return gram_offdiagonal_tile<R, C - 1>(rows, columns, x, p, i0, j0, gram, sums);
    return gram_tile<R, C, false>(x, p, i0, j0, gram, sums);
  }
}

/// Requests panel `next` into L2 while the current panel is computed, spread
/// evenly over the current panel's tiles (a share of the runs after each tile).
/// The tiles visit a panel head block by head block, a pattern of short strided
/// runs the hardware prefetchers follow poorly once a panel holds many heads.
/// Runs are requested in the order the next panel's tile rows first need them:
/// heads in groups of a tile row, a group slice by slice (the runs of one slice
/// lie side by side, so in address order).
///
/// Into L2, not L1: the tiles run near the FMA peak from L2 (measured: 0.86–0.94
/// of it over a 64-step panel of 32–128 heads held in L2, token-major or packed
/// head-major alike, so neither L1 aliasing nor packing matters), while lines
/// requested into L1 evict the tile row being computed. Only for panels of all
/// heads above gram_prefetch_panel_bytes, or above half of it when a head's runs
/// in the panel lie gram_prefetch_slice_bytes or more apart: below, the hardware
/// prefetchers keep up and the requests only cost (n = 8: 0.80 of the roofline
/// without, 0.50 with; n = 32, d = 64, 8 KiB token rows: 0.88 without, 0.73 with;
/// n = 32, d = 128, 16 KiB rows: 0.54–0.83 without, 0.75 with).
/// Measured on a Zen 4 (family 25, model 17), shared machine, token-major
/// 512-token batches, fraction of the roofline without → with: n = 64
/// 0.55–0.87 → 0.73–0.80; n = 128 0.60–0.72 → 0.75–0.81.
class panel_prefetch {
 public:
  /// Requests heads [first_head, x.heads) of `next` over `tiles` tiles.
  panel_prefetch(const gram_layout<float>& x, const gram_panel& next, Eigen::Index first_head,
                 Eigen::Index tiles)
      : x_(x), next_(next), group_(first_head) {
    const Eigen::Index groups = (x.heads - group_ + simd_ops::tile - 1) / simd_ops::tile;
    units_per_tile_ = (groups * next.slices + tiles - 1) / std::max<Eigen::Index>(tiles, 1);
  }

  /// Requests the next `units_per_tile_` units: a unit is the runs of one group's
  /// heads in one slice.
  void after_tile() {
    constexpr std::uintptr_t line_bytes = 64;
    Eigen::Index group = group_, slice = slice_;
    for (Eigen::Index units = units_per_tile_; units > 0 && group < x_.heads; --units) {
      const Eigen::Index rows = std::min(simd_ops::tile, x_.heads - group);
      const float* run = x_.run(group, next_.first_slice + slice) + next_.column;
      for (Eigen::Index r = 0; r < rows; ++r, run += x_.head_stride) {
        // Every line the run touches: a misaligned run spans one line more.
        const auto first = reinterpret_cast<std::uintptr_t>(run) / line_bytes;
        const auto last = reinterpret_cast<std::uintptr_t>(run + next_.length - 1) / line_bytes;
        for (std::uintptr_t line = first; line <= last; ++line) {
          _mm_prefetch(reinterpret_cast<const char*>(line * line_bytes), _MM_HINT_T1);
        }
      }
      if (++slice == next_.slices) {
        slice = 0;
        group += rows;
      }
    }
    group_ = group;
    slice_ = slice;
  }

 private:
  const gram_layout<float>& x_;
  gram_panel next_;
  Eigen::Index units_per_tile_ = 0;
  Eigen::Index group_;      // the next unit: heads [group_, group_ + tile)
  Eigen::Index slice_ = 0;  // in slice slice_ of next_
};

/// Off-diagonal tiles of the tile row at i0 within the column block [j_begin, j_end):
/// its heads [j_begin, min(i0, j_end)) in as few tiles as tile_columns allows, of
/// balanced widths (a narrow leftover tile, AVX2's 3 × 1, would hold too few
/// accumulators to hide the FMA latency). Tile k of them is
/// [j_begin + k·left/count, j_begin + (k + 1)·left/count).
inline Eigen::Index offdiagonal_tiles(Eigen::Index i0, Eigen::Index j_begin, Eigen::Index j_end) {
  const Eigen::Index left = std::max<Eigen::Index>(std::min(i0, j_end) - j_begin, 0);
  return (left + simd_ops::tile_columns - 1) / simd_ops::tile_columns;
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
/// Only the column blocks `share` owns are added.
inline void accumulate_gram_simd(const gram_layout<float>& x, double* gram, double* sums,
                                 gram_share share) {
  constexpr Eigen::Index lanes = simd_ops::lanes;
  constexpr Eigen::Index tile = simd_ops::tile;
  const Eigen::Index steps_per_slice = (x.slice_length + lanes - 1) / lanes;
  // Every run shares the batch's misalignment when both strides and the run
  // length are whole vectors (panels cut runs at whole vectors too). Slices must
  // also follow each other without overlap (not a repeated row, stride 0): the
  // joining loads read up to a vector past a run's end and before the next
  // run's start, which is then memory between the two.
  const auto address = reinterpret_cast<std::uintptr_t>(x.base);
  const bool uniform =
      address % sizeof(float) == 0 && x.slice_length % lanes == 0 &&
      (x.heads == 1 || x.head_stride % lanes == 0) &&
      (x.slices == 1 || (x.slice_stride % lanes == 0 && x.slice_stride >= x.slice_length));
  const Eigen::Index shift =
      uniform ? static_cast<Eigen::Index>(address / sizeof(float) % lanes) : 0;
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
                      std::min(columns_per_panel, x.slice_length - column), shift};
  };
  gram_panel p = panel_at(0, 0);
  while (p.first_slice < x.slices) {
    gram_panel next = panel_at(p.first_slice, p.column + columns_per_panel);
    if (next.column >= x.slice_length) next = panel_at(p.first_slice + slices_per_panel, 0);
    // Column blocks of heads: the tiles of block [j_begin, j_end) re-read its
    // heads once per tile row, so one block's panel is kept within L2 (wide
    // layouts such as head_cka's n·d columns); n ≤ 128 heads is one block.
    const Eigen::Index panel_floats = std::max<Eigen::Index>(p.slices * p.length, 1);
    const Eigen::Index block =
        std::max<Eigen::Index>(tile, gram_block_bytes / (panel_floats * 4) / tile * tile);
    // Large panels: the next one is requested over the tiles to come (the panel
    // is then one block, all of it computed by the thread that owns block 0).
    const bool has_next = next.first_slice < x.slices;
    const Eigen::Index panel_bytes = x.heads * panel_floats * Eigen::Index{4};
    const bool far_slices = p.slices > 1 && x.slice_stride * Eigen::Index{4} >= gram_prefetch_slice_bytes;
    // Not when the panel is cut into head blocks: the whole next panel would not
    // stay in L2 beside the block being computed.
    const bool requested =
        has_next && block >= x.heads &&
        (panel_bytes > gram_prefetch_panel_bytes ||
         (far_slices && 2 * panel_bytes > gram_prefetch_panel_bytes));
    // The tiles of one panel: tile rows of `tile` heads [i0, i0 + rows), each
    // against the earlier heads of its block, then itself (the diagonal tile).
    Eigen::Index tiles = 0;
    if (requested && share.owns(0)) {
      for (Eigen::Index i0 = 0; i0 < x.heads; i0 += tile) tiles += offdiagonal_tiles(i0, 0, x.heads) + 1;
    }
    panel_prefetch prefetch(x, next, tiles > 0 ? 0 : x.heads, tiles);
    for (Eigen::Index j_begin = 0; j_begin < x.heads; j_begin += block) {
      if (!share.owns(j_begin / block)) continue;
      const Eigen::Index j_end = std::min(x.heads, j_begin + block);
      for (Eigen::Index i0 = j_begin; i0 < x.heads; i0 += tile) {
        const int rows = static_cast<int>(std::min(tile, x.heads - i0));
        const Eigen::Index count = offdiagonal_tiles(i0, j_begin, j_end);
        const Eigen::Index left = std::min(i0, j_end) - j_begin;
        for (Eigen::Index k = 0; k < count; ++k) {
          const Eigen::Index j0 = j_begin + k * left / count;
          const int columns = static_cast<int>(j_begin + (k + 1) * left / count - j0);
          gram_offdiagonal_tile<tile, simd_ops::tile_columns>(rows, columns, x, p, i0, j0, gram, sums);
          if (tiles > 0) prefetch.after_tile();
        }
        if (i0 < j_end) {  // the tile row's diagonal tile lies in this block
          gram_diagonal_tile<tile>(rows, x, p, i0, gram, sums);
          if (tiles > 0) prefetch.after_tile();
        }
      }
    }
    p = next;
  }
}
