#!/usr/bin/env bash
# Pruning is I/O-bound: `nashprune prune` on a ~1 GB model should take at most
# 1.5x the time of copying that file, with memory streamed (peak RSS far below
# the model size). Generates the model, then times `cp` and `nashprune prune`
# alternately in the same run (page cache warm for both) and prints the median
# times, their ratio, and prune's peak RSS (from /usr/bin/time -v).
#
#   bash benchmarks/prune_vs_copy.sh [path/to/nashprune] [repetitions]
set -euo pipefail
cd "$(dirname "$0")/.."
tool=${1:-build/dev/examples/nashprune}
reps=${2:-3}
[ -x "$tool" ] || { echo "build the tool first: cmake --preset dev && cmake --build --preset dev --target nashprune_tool" >&2; exit 2; }
[ -x /usr/bin/time ] || { echo "needs /usr/bin/time (apt-get install time)" >&2; exit 2; }

dir=$(mktemp -d "${TMPDIR:-/tmp}/nashprune-bench.XXXXXX")
trap 'rm -rf "$dir"' EXIT
model=$dir/model.gguf
# 5 layers of n_embd 2048, 16 heads over 8 KV heads, FFN 5632, F32: about 1 GB.
"$tool" generate "$model" --layers 5 --embd 2048 --heads 16 --kv-heads 8 --ffn 5632 > /dev/null
size=$(stat -c %s "$model")
cat "$model" > /dev/null  # warm the page cache for both contenders

prune_args=(--target 0.25 --structures heads,mlp --force)
cp_times=()
prune_times=()
rss=()
for ((i = 0; i < reps; i++)); do
  rm -f "$dir/copy.gguf"
  start=$(date +%s.%N)
  cp "$model" "$dir/copy.gguf"
  cp_times+=("$(echo "$(date +%s.%N) - $start" | bc)")
  rm -f "$dir/copy.gguf" "$dir/pruned.gguf"
  /usr/bin/time -v -o "$dir/time.txt" "$tool" prune "$model" "$dir/pruned.gguf" "${prune_args[@]}" > /dev/null
  prune_times+=("$(awk -F': ' '/Elapsed \(wall clock\)/ {n = split($2, p, ":"); s = 0; for (k = 1; k <= n; k++) s = s * 60 + p[k]; print s}' "$dir/time.txt")")
  rss+=("$(awk -F': ' '/Maximum resident set size/ {print $2}' "$dir/time.txt")")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
cp_median=$(median "${cp_times[@]}")
prune_median=$(median "${prune_times[@]}")
rss_max=$(printf '%s\n' "${rss[@]}" | sort -g | tail -1)
pruned_size=$(stat -c %s "$dir/pruned.gguf")
echo "model:          $size bytes ($(numfmt --to=iec "$size")), pruned to $pruned_size bytes"
echo "cp:             ${cp_times[*]} s (median $cp_median s)"
echo "nashprune prune: ${prune_times[*]} s (median $prune_median s)"
echo "ratio prune/cp: $(echo "scale=2; $prune_median / $cp_median" | bc) (goal <= 1.5)"
echo "prune peak RSS: $rss_max KiB ($(numfmt --to=iec $((rss_max * 1024)))) for a $(numfmt --to=iec "$size") model"
