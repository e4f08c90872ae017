#!/usr/bin/env bash
# Speed of pruned models: generates a model of Llama-3-8B width (n_embd 4096, 32
# query heads over 8 KV heads of 128, n_ff 14336; 4 layers, F16 matrices, random
# weights), prunes it by 25 % of its parameters (heads and MLP channels) and by
# 25 % of its query heads, each twice:
#   - as the planner chooses (per-layer counts differ, so the output is "deci");
#   - uniformly, every layer losing the same heads and channels (the output stays
#     "llama"): the last query head of every group, and with the parameter
#     target also the last quarter of every layer's MLP channels;
# then runs llama-bench ROUNDS times over the original and the four outputs, the
# models in turn within each round (A B C D E, A B C D E, ...), so every ratio
# compares figures of the same round and slow drift of a shared machine hits all
# models alike. Prints, per model, the architecture, the parameters removed, the
# prompt-processing and generation tokens/s (median of the rounds, [lowest,
# highest]) and their ratio to the original (median of the per-round ratios,
# [range]), and the CPU (family and model) they were measured on.
#
# usage: benchmarks/pruned_speed.sh NASHPRUNE LLAMA_BIN_DIR WORK_DIR
# Environment: PROMPT (llama-bench -p, default 256), GEN (-n, default 32),
# REPS (-r within a round, default 2), ROUNDS (default 3), THREADS (-t, default
# llama-bench's), LAYERS (default 4).
# The models take about 1.8 GB (original) and 1.3-1.7 GB (each output) in WORK_DIR.
set -euo pipefail
if [[ $# -ne 3 ]]; then
  echo "usage: $0 NASHPRUNE LLAMA_BIN_DIR WORK_DIR" >&2
  exit 2
fi
tool=$1 bin=$2 work=$3
prompt=${PROMPT:-256} gen=${GEN:-32} reps=${REPS:-2} rounds=${ROUNDS:-3} layers=${LAYERS:-4}
bench=$bin/llama-bench
[[ -x $tool ]] || { echo "$0: $tool is not an executable nashprune" >&2; exit 2; }
[[ -x $bench ]] || { echo "$0: no executable llama-bench in $bin (cmake/provision-llama-cpp.sh builds it)" >&2; exit 2; }
mkdir -p "$work"

embd=4096 heads=32 kv_heads=8 ffn=14336
model=$work/width8b.gguf
if [[ ! -f $model ]]; then
  "$tool" generate "$model" --layers "$layers" --embd "$embd" --heads "$heads" --kv-heads "$kv_heads" --ffn "$ffn" --type f16 >/dev/null
fi

# A plan file removing the same units from every layer: the last query head of
# each KV group and, with KEEP_CHANNELS < ffn, the channels from KEEP_CHANNELS on.
uniform_plan() {
  local path=$1 keep_channels=$2 group=$((heads / kv_heads))
  local q kv ch
  q=$(for ((h = 0; h < heads; ++h)); do if ((h % group != group - 1)); then printf '%d,' "$h"; fi; done)
  kv=$(seq -s, 0 $((kv_heads - 1)))
  ch=$(seq -s, 0 $((keep_channels - 1)))
  {
    printf '{"layers": ['
    for ((l = 0; l < layers; ++l)); do
      if ((l > 0)); then printf ','; fi
      printf '{"layer": %d, "keep": true, "q_heads": [%s], "kv_heads": [%s], "channels": [%s]}' "$l" "${q%,}" "$kv" "$ch"
    done
    printf ']}\n'
  } >"$path"
}
uniform_plan "$work/uniform-heads.json" "$ffn"
uniform_plan "$work/uniform-params.json" $((ffn * 3 / 4))

prune() {
  local name=$1
  shift
  "$tool" prune "$model" "$work/$name.gguf" --force "$@" >"$work/$name.log" 2>&1 ||
    { cat "$work/$name.log" >&2; echo "$0: prune $name failed" >&2; exit 1; }
}
prune params-planned --structures heads,mlp --target 0.25
prune params-uniform --plan "$work/uniform-params.json"
prune heads-planned --unit heads --target 0.25
prune heads-uniform --plan "$work/uniform-heads.json"

names=(original params-planned params-uniform heads-planned heads-uniform)
files=("$model")
for name in "${names[@]:1}"; do files+=("$work/$name.gguf"); done

# Parameters and architecture of each model, from nashprune inspect.
declare -A parameters architecture
for i in "${!names[@]}"; do
  info=$("$tool" inspect "${files[$i]}")
  parameters[${names[$i]}]=$(sed -n 's/.*parameters[: ]*\([0-9][0-9]*\).*/\1/p' <<<"$info" | head -n1)
  architecture[${names[$i]}]=$(sed -n 's/.*architecture[: ]*\([a-z0-9_]*\).*/\1/p' <<<"$info" | head -n1)
  [[ -n ${parameters[${names[$i]}]} && -n ${architecture[${names[$i]}]} ]] ||
    { echo "$0: nashprune inspect printed no parameters or architecture for ${files[$i]}:" >&2; echo "$info" >&2; exit 1; }
done

threads=()
[[ -n ${THREADS:-} ]] && threads=(-t "$THREADS")
csvs=()
for ((round = 1; round <= rounds; ++round)); do
  csv=$work/bench-$round.csv
  "$bench" -m "$(IFS=,; echo "${files[*]}")" -p "$prompt" -n "$gen" -r "$reps" "${threads[@]}" -o csv >"$csv" 2>"$work/bench-$round.log" ||
    { tail -n 20 "$work/bench-$round.log" >&2; echo "$0: llama-bench failed (log: $work/bench-$round.log)" >&2; exit 1; }
  csvs+=("$csv")
done

cpu_name=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)
cpu_family=$(sed -n 's/^cpu family[[:space:]]*: //p' /proc/cpuinfo | head -n1)
cpu_model=$(sed -n 's/^model[[:space:]]*: //p' /proc/cpuinfo | head -n1)
echo "CPU: ${cpu_name:-unknown} (cpu family ${cpu_family:-?}, model ${cpu_model:-?}), $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "model: ${layers} layers, n_embd $embd, $heads heads / $kv_heads KV heads, n_ff $ffn, F16; llama-bench -p $prompt -n $gen -r $reps, $rounds rounds"
echo
# The CSV: a header of bare names, then rows of quoted fields; model_filename,
# n_prompt, n_gen and avg_ts found by header name; one CSV per round (FNR
# restarts at each).
awk -F'","' -v names="${names[*]}" -v files="${files[*]}" -v rounds="$rounds" \
    -v params="$(for n in "${names[@]}"; do printf '%s ' "${parameters[$n]}"; done)" \
    -v archs="$(for n in "${names[@]}"; do printf '%s ' "${architecture[$n]}"; done)" '
  function strip(s) { gsub(/^"|"$/, "", s); return s }
  # Median, lowest and highest of v[1..n] (sorted in place), as "median [lowest–highest]".
  function summary(v, n, digits,    i, j, x, m) {
    for (i = 2; i <= n; ++i) { x = v[i]; for (j = i - 1; j >= 1 && v[j] > x; --j) v[j + 1] = v[j]; v[j + 1] = x }
    m = n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    return sprintf("%." digits "f [%." digits "f–%." digits "f]", m, v[1], v[n])
  }
  FNR == 1 { ++round; n = split($0, header, ","); for (i = 1; i <= n; ++i) column[strip(header[i])] = i; next }
  {
    model = strip($column["model_filename"]); p = strip($column["n_prompt"]) + 0; g = strip($column["n_gen"]) + 0
    ts = strip($column["avg_ts"]) + 0
    if (p > 0 && g == 0) pp[round, model] = ts
    if (p == 0 && g > 0) tg[round, model] = ts
  }
  END {
    n = split(names, name, " "); split(files, file, " "); split(params, param, " "); split(archs, arch, " ")
    printf "| model | architecture | parameters | removed | prompt t/s | ratio | generation t/s | ratio |\n"
    printf "|---|---|---|---|---|---|---|---|\n"
    for (i = 1; i <= n; ++i) {
      f = file[i]
      for (r = 1; r <= rounds; ++r) {
        if (!((r, f) in pp) || !((r, f) in tg) || !((r, file[1]) in pp) || !((r, file[1]) in tg)) {
          printf "no llama-bench result for %s in round %d\n", f, r > "/dev/stderr"; exit 1
        }
        a[r] = pp[r, f]; b[r] = pp[r, f] / pp[r, file[1]]; c[r] = tg[r, f]; d[r] = tg[r, f] / tg[r, file[1]]
      }
      printf "| %s | %s | %d | %.1f %% | %s | %s | %s | %s |\n", name[i], arch[i], param[i], 100 * (1 - param[i] / param[1]),
             summary(a, rounds, 2), summary(b, rounds, 3), summary(c, rounds, 2), summary(d, rounds, 3)
    }
  }' "${csvs[@]}"
