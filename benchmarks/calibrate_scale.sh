#!/usr/bin/env bash
# Calibration and refit at Llama-3-8B widths: a generated model with n_embd 4096,
# 32 query heads, 8 KV heads, n_ff 14336 and F16 weights (LAYERS layers, default 2;
# a 512-token vocabulary keeps it small), on the first TOKENS tokens (default 512,
# contexts of 128) of tinystories-calibration.txt.
#
#   [LAYERS=2] [TOKENS=512] [THREADS=2] [ROWS="heads mlp"] benchmarks/calibrate_scale.sh TOOL LLAMA_BIN_DIR OUT_DIR
#
# Measured under /usr/bin/time -v, all in this run (CPU time = user + system):
#   - llama-perplexity over the same tokens (-c 128 -b 128 --chunks TOKENS/128):
#     the cost of evaluating the model alone;
#   - nashprune calibrate with the input moments under two --max-memory budgets:
#     BIG (default 8G, every layer in one pass) and SMALL (default 2G, one layer per
#     pass: LAYERS passes of the text); its CPU time per token against
#     llama-perplexity's (the goal is at most 1.3x for one pass), and its peak
#     memory (maximum resident set);
#   - nashprune prune of 25 % of the query heads (--structures heads) and of 20 % of
#     the MLP channels (--structures mlp) by magnitude, each with --compensate none
#     and refit (the same plan): the refit's time per layer is the difference over
#     LAYERS. ROWS limits them to heads or mlp (the MLP refit solves an n_ff-wide
#     system per layer, minutes of CPU).
# OUT_DIR/table.md gets the figures with the CPU (family, model) beside them.
set -euo pipefail
(($# == 3)) || { echo "usage: [LAYERS=2] [TOKENS=512] [THREADS=2] calibrate_scale.sh TOOL LLAMA_BIN_DIR OUT_DIR" >&2; exit 2; }
tool=$1; bin=$2; out=$3
layers=${LAYERS:-2}; tokens=${TOKENS:-512}; threads=${THREADS:-2}
big=${BIG:-8G}; small=${SMALL:-2G}
text=$(cd "$(dirname "$0")/../examples/data" && pwd)/tinystories-calibration.txt
fail() { echo "calibrate_scale.sh: $*" >&2; exit 1; }
[[ -x $tool ]] || fail "the nashprune tool $tool is missing"
[[ -x $bin/llama-perplexity ]] || fail "$bin/llama-perplexity is missing"
((tokens % 128 == 0)) || fail "TOKENS must be a multiple of 128"
mkdir -p "$out"
model=$out/llama8b-shape-$layers.gguf
[[ -f $model ]] || "$tool" generate "$model" --layers "$layers" --embd 4096 --heads 32 --kv-heads 8 --ffn 14336 --vocab 512 --type f16 > /dev/null

# timed NAME COMMAND...: runs COMMAND under /usr/bin/time -v, its output in NAME.log, the figures in NAME.time.
timed() {
  local name=$1; shift
  /usr/bin/time -v -o "$out/$name.time" "$@" > "$out/$name.log" 2>&1 || { tail -5 "$out/$name.log" >&2; fail "$name failed (log: $out/$name.log)"; }
}
cpu_seconds() { awk -F': ' '/User time/ {u = $2} /System time/ {s = $2} END {printf "%.2f", u + s}' "$out/$1.time"; }
wall() { awk -F': ' '/Elapsed \(wall clock\)/ {n = split($2, p, ":"); t = 0; for (i = 1; i <= n; ++i) t = t * 60 + p[i]; printf "%.1f", t}' "$out/$1.time"; }
max_rss_gib() { awk -F': ' '/Maximum resident set size/ {printf "%.2f", $2 / 1048576}' "$out/$1.time"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }

timed perplexity "$bin/llama-perplexity" -m "$model" -f "$text" -c 128 -b 128 --chunks $((tokens / 128)) -t "$threads"
timed calibrate-big "$tool" calibrate "$model" --text "$text" --tokens "$tokens" --ctx 128 --threads "$threads" --max-memory "$big" -o "$out/stats.gguf" --force
timed calibrate-small "$tool" calibrate "$model" --text "$text" --tokens "$tokens" --ctx 128 --threads "$threads" --max-memory "$small" -o "$out/stats-small.gguf" --force
rows=${ROWS:-heads mlp}
for row in "heads --unit heads --target 0.25" "mlp --target 0.2"; do
  name=${row%% *}
  [[ " $rows " == *" $name "* ]] || continue
  for compensation in none refit; do
    timed "prune-$name-$compensation" "$tool" prune "$model" "$out/pruned-$name-$compensation.gguf" --calibration "$out/stats.gguf" \
      --structures $row --score magnitude --game none --temperature 0 --compensate $compensation --force
  done
done

cpu=$(awk -F': ' '/^cpu family/ {f = $2} /^model\t/ {m = $2} /^model name/ {n = $2} END {print n " (cpu family " f ", model " m ")"}' /proc/cpuinfo)
per_token() { awk -v s="$(cpu_seconds "$1")" -v n="$tokens" 'BEGIN {printf "%.1f", 1000 * s / n}'; }
{
  echo "CPU: $cpu; $(nproc) cores, $threads threads; load at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "Model: $layers layers at Llama-3-8B widths, F16; $tokens tokens of tinystories-calibration.txt, contexts of 128"
  echo
  echo "| run | CPU s | ms CPU / token | against llama-perplexity | wall s | max RSS GiB | passes |"
  echo "|---|---|---|---|---|---|---|"
  for run in perplexity calibrate-big calibrate-small; do
    passes=-
    [[ $run == calibrate-* ]] && passes=$(grep -oE '[0-9]+ pass(es)? of the text' "$out/$run.log" | head -1 | cut -d' ' -f1)
    echo "| $run$( [[ $run == calibrate-big ]] && echo " (--max-memory $big)")$( [[ $run == calibrate-small ]] && echo " (--max-memory $small)") | $(cpu_seconds $run) | $(per_token $run) | $(ratio "$(cpu_seconds $run)" "$(cpu_seconds perplexity)")x | $(wall $run) | $(max_rss_gib $run) | $passes |"
  done
  echo
  echo "| prune | CPU s none | CPU s refit | refit CPU s per layer | max RSS GiB refit |"
  echo "|---|---|---|---|---|"
  for name in $rows; do
    none=$(cpu_seconds "prune-$name-none"); refit=$(cpu_seconds "prune-$name-refit")
    echo "| $name | $none | $refit | $(awk -v a="$refit" -v b="$none" -v l="$layers" 'BEGIN {printf "%.1f", (a - b) / l}') | $(max_rss_gib "prune-$name-refit") |"
  done
} > "$out/table.md"
cat "$out/table.md"
