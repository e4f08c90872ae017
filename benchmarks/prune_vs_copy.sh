#!/usr/bin/env bash
# Pruning is I/O-bound: `nashprune prune` on a ~1 GB model should take at most
# 1.5x the time of copying that file, with memory streamed (peak RSS far below
# the model size). Generates the model, then times `cp` and `nashprune prune`
# in the same run, alternating which goes first, each from the same state: the
# input in the page cache (read once before), no output present, and no dirty
# pages left by the previous contender (`sync` before each, so neither pays the
# other's write-back). Prints per-run wall and CPU (user + system) times, the
# medians, the prune/cp ratios, and prune's peak RSS (all from /usr/bin/time).
# On a shared, busy machine the wall ratio is noisy; the CPU ratio is the work done.
#
# With REFERENCE=path/to/another/nashprune (e.g. main's build) that tool prunes
# the same model once, untimed, and its output must equal the contender's byte
# for byte (cmp), so a speed-up cannot change what is written.
#
#   [REFERENCE=tool] bash benchmarks/prune_vs_copy.sh [path/to/nashprune] [repetitions] [prune options...]
# default prune options: --target 0.25 --structures heads,mlp
set -euo pipefail
cd "$(dirname "$0")/.."
tool=${1:-build/dev/examples/nashprune}
reps=${2:-5}
shift $(($# < 2 ? $# : 2))
prune_args=("$@")
[ ${#prune_args[@]} -gt 0 ] || prune_args=(--target 0.25 --structures heads,mlp)
[ -x "$tool" ] || { echo "build the tool first: cmake --preset dev && cmake --build --preset dev --target nashprune_tool" >&2; exit 2; }
[ -x /usr/bin/time ] || { echo "needs /usr/bin/time (apt-get install time)" >&2; exit 2; }

dir=$(mktemp -d "${TMPDIR:-/tmp}/nashprune-bench.XXXXXX")
trap 'rm -rf "$dir"' EXIT
model=$dir/model.gguf
# 5 layers of n_embd 2048, 16 heads over 8 KV heads, FFN 5632, F32: about 1 GB.
"$tool" generate "$model" --layers 5 --embd 2048 --heads 16 --kv-heads 8 --ffn 5632 > /dev/null
size=$(stat -c %s "$model")
sync
cat "$model" > /dev/null  # the input in the page cache for both contenders

# run NAME COMMAND...: one timed run from a clean state; appends "wall cpu rss" to $dir/NAME.
run() {
  local name=$1
  shift
  rm -f "$dir/copy.gguf" "$dir/pruned.gguf"
  sync
  /usr/bin/time -f "%e %U %S %M" -o "$dir/time.txt" "$@" > /dev/null
  awk '{printf "%.3f %.3f %d\n", $1, $2 + $3, $4}' "$dir/time.txt" >> "$dir/$name"
}
for ((i = 0; i < reps; i++)); do
  if ((i % 2 == 0)); then
    run cp cp "$model" "$dir/copy.gguf"
    run prune "$tool" prune "$model" "$dir/pruned.gguf" "${prune_args[@]}"
  else
    run prune "$tool" prune "$model" "$dir/pruned.gguf" "${prune_args[@]}"
    run cp cp "$model" "$dir/copy.gguf"
  fi
done
pruned_size=$(stat -c %s "$dir/pruned.gguf")
if [ -n "${REFERENCE:-}" ]; then
  "$REFERENCE" prune "$model" "$dir/reference.gguf" "${prune_args[@]}" > /dev/null
  cmp "$dir/pruned.gguf" "$dir/reference.gguf" || { echo "the output differs from $REFERENCE's" >&2; exit 1; }
  rm -f "$dir/reference.gguf"
  identical="byte-identical to $REFERENCE's"
fi
column_of() { awk -v c="$2" '{print $c}' "$dir/$1"; }
median() { sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
cp_wall=$(column_of cp 1 | median)
cp_cpu=$(column_of cp 2 | median)
prune_wall=$(column_of prune 1 | median)
prune_cpu=$(column_of prune 2 | median)
rss_max=$(column_of prune 3 | sort -g | tail -1)
echo "model:           $size bytes ($(numfmt --to=iec "$size")), pruned to $pruned_size bytes with: ${prune_args[*]}"
[ -z "${identical:-}" ] || echo "output:          $identical"
echo "cp wall:         $(column_of cp 1 | tr '\n' ' ')s (median $cp_wall s)"
echo "prune wall:      $(column_of prune 1 | tr '\n' ' ')s (median $prune_wall s)"
echo "cp cpu:          $(column_of cp 2 | tr '\n' ' ')s (median $cp_cpu s)"
echo "prune cpu:       $(column_of prune 2 | tr '\n' ' ')s (median $prune_cpu s)"
echo "ratio prune/cp:  wall $(echo "scale=2; $prune_wall / $cp_wall" | bc), cpu $(echo "scale=2; $prune_cpu / $cp_cpu" | bc) (goal <= 1.5)"
echo "prune peak RSS:  $rss_max KiB ($(numfmt --to=iec $((rss_max * 1024)))) for a $(numfmt --to=iec "$size") model"
echo "load average:    $(cut -d' ' -f1-3 /proc/loadavg)"
