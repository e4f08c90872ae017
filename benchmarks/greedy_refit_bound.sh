#!/usr/bin/env bash
# An empirical bound on removing whole GQA groups from stories260K: a greedy search
# over groups by the measured loss of the compensated model, against the plans the
# selectors choose.
#
#   [SEARCHES="refit none"] [STEPS=10] [RECORD="5 10"] [SWAP="5"] [CAL_CHUNKS=32] [EVAL_CHUNKS=all] [DATA_DIR=examples/data] benchmarks/greedy_refit_bound.sh TOOL LLAMA_BIN_DIR OUT_DIR
#
# The model is calibrated once (16384 tokens of tinystories-calibration.txt,
# context 128). For each compensation of SEARCHES (none, bias or refit), starting
# from no group removed, every step tries each remaining group: it writes the plan
# (the groups removed so far and that one) as a plan file, applies it with
# `prune --plan ... --calibration stats.gguf --compensate KIND` and measures the
# perplexity on the first CAL_CHUNKS chunks of 128 tokens of the calibration text
# (llama-perplexity -c 128 -b 128 -t 2); it keeps the group of least perplexity and
# stops after STEPS groups. The tool allows every group of a layer to go (the layer
# becomes attention-free, its mean output a bias), so every group is a candidate
# at every step. The plans after RECORD groups are kept; from those whose size is
# in SWAP a 1-swap local search (one removed group against one kept group, the best
# swap of each round while it lowers the calibration perplexity) continues.
# Each kept plan, and the plans of the output game + refit, magnitude + refit and
# obs + refit selectors at the same counts (--structures groups --unit heads), is
# then measured on the evaluation text (llama-perplexity -c 128 -b 128 on its
# first EVAL_CHUNKS chunks, default all: the benchmarks' protocol) with the refit
# and without compensation. A measurement is cached per plan and compensation in
# OUT_DIR/cache_KIND.tsv, so a second run reuses it.
#
# Cost in forward passes of llama-perplexity: for G groups and STEPS steps, each
# search costs G + (G-1) + ... + (G-STEPS+1) runs on CAL_CHUNKS chunks (155 for 20
# groups and 10 steps), each swap round k·(G-k) more for a plan of k groups (75 at
# 5 groups); then two runs on the evaluation text per plan measured (original
# included). The pruning itself (a plan file applied with the refit) is a small
# fraction of each step.
set -euo pipefail
(($# == 3)) || { echo "usage: [SEARCHES=\"refit none\"] [STEPS=10] [RECORD=\"5 10\"] [SWAP=\"5\"] [CAL_CHUNKS=32] [EVAL_CHUNKS=all] [DATA_DIR=examples/data] greedy_refit_bound.sh TOOL LLAMA_BIN_DIR OUT_DIR" >&2; exit 2; }
tool=$1; bin=$2; out=$3
data=${DATA_DIR:-$(cd "$(dirname "$0")/../examples/data" && pwd)}
model=$data/stories260K.gguf
cal=$data/tinystories-calibration.txt
eval_text=$data/tinystories-evaluation.txt
searches=${SEARCHES:-refit none}
steps=${STEPS:-10}
record=${RECORD:-5 10}
swap_sizes=${SWAP:-5}
cal_chunks=${CAL_CHUNKS:-32}
eval_chunks=${EVAL_CHUNKS:-all}
fail() { echo "greedy_refit_bound.sh: $*" >&2; exit 1; }
[[ -x $tool ]] || fail "the nashprune tool $tool is missing"
[[ -x $bin/llama-perplexity ]] || fail "$bin/llama-perplexity is missing"
for file in "$model" "$cal" "$eval_text"; do [[ -f $file ]] || fail "$file is missing (DATA_DIR)"; done
for kind in $searches; do [[ $kind == none || $kind == bias || $kind == refit ]] || fail "unknown compensation '$kind' in SEARCHES (none, bias, refit)"; done
[[ $steps =~ ^[1-9][0-9]*$ ]] || fail "STEPS must be a positive count, not '$steps'"
[[ $cal_chunks =~ ^[1-9][0-9]*$ ]] || fail "CAL_CHUNKS must be a positive count, not '$cal_chunks'"
for n in $record $swap_sizes; do [[ $n =~ ^[1-9][0-9]*$ && $n -le $steps ]] || fail "RECORD and SWAP take plan sizes from 1 to STEPS ($steps), not '$n'"; done
for n in $swap_sizes; do [[ " $record " == *" $n "* ]] || fail "SWAP size $n is not among RECORD ($record)"; done
eval_option=(--chunks "$eval_chunks")
[[ $eval_chunks == all ]] && eval_option=()
export OMP_WAIT_POLICY=PASSIVE
mkdir -p "$out/plans" "$out/models" "$out/logs"

# The model's shape: one "layer heads kv_heads group head_dim ffn" row a layer.
n_head=(); n_kv=(); n_ff=()
while read -r layer heads kv_heads _ _ ffn; do
  n_head[layer]=$heads; n_kv[layer]=$kv_heads; n_ff[layer]=$ffn
done < <("$tool" inspect "$model" | awk '/^ +layer +heads +kv_heads/ { table = 1; next } table && NF == 6 && $1 ~ /^[0-9]+$/ { print; next } { table = 0 }')
((${#n_head[@]} > 0)) || fail "no layer table in '$tool inspect $model'"
groups=()
for layer in "${!n_head[@]}"; do
  for ((g = 0; g < n_kv[layer]; g++)); do groups+=("$layer:$g"); done
done
((steps < ${#groups[@]})) || fail "STEPS ($steps) must be below the model's ${#groups[@]} groups"

join() { local IFS=,; echo "$*"; }
sorted_key() { printf '%s\n' "$@" | sort -t: -k1,1n -k2,2n | paste -sd,; }  # the groups in order, comma-separated

write_plan() {  # write_plan FILE GROUP...: the plan removing those layer:group pairs (each group's query heads and K/V head)
  local file=$1; shift
  local removed=" $* " layers=() layer g h
  for layer in "${!n_head[@]}"; do
    local size=$((n_head[layer] / n_kv[layer])) q=() kv=()
    for ((g = 0; g < n_kv[layer]; g++)); do
      [[ $removed == *" $layer:$g "* ]] && continue
      kv+=("$g")
      for ((h = g * size; h < (g + 1) * size; h++)); do q+=("$h"); done
    done
    layers+=("{\"layer\": $layer, \"keep\": true, \"q_heads\": [$(join "${q[@]}")], \"kv_heads\": [$(join "${kv[@]}")], \"channels\": [$(seq -s, 0 $((n_ff[layer] - 1)))]}")
  done
  printf '{"layers": [%s]}\n' "$(join "${layers[@]}")" > "$file.tmp"
  mv "$file.tmp" "$file"
}

perplexity() {  # perplexity MODEL TEXT LOG [OPTIONS...]: llama-perplexity's final estimate
  local model_file=$1 text=$2 log=$3; shift 3
  "$bin/llama-perplexity" -m "$model_file" -f "$text" -c 128 -b 128 -t 2 "$@" > "$log" 2>&1 ||
    fail "llama-perplexity failed on $model_file (see $log)"
  grep -o 'Final estimate: PPL = [0-9.]*' "$log" | grep -o '[0-9.]*$' || fail "no estimate for $model_file (see $log)"
}

apply_plan() {  # apply_plan PLAN_FILE KIND MODEL: the pruned model of that plan and compensation
  "$tool" prune "$model" "$3" --plan "$1" --calibration "$out/stats.gguf" --compensate "$2" --force > "${3%.gguf}.log" 2>&1 ||
    fail "prune --plan $1 --compensate $2 failed (see ${3%.gguf}.log)"
}

cal_ppl() {  # cal_ppl KIND GROUP...: the calibration-text perplexity of the plan removing those groups, cached
  local kind=$1; shift
  local key; key=$(sorted_key "$@")
  local cache=$out/cache_$kind.tsv cached
  cached=$(awk -F'\t' -v k="cal $cal_chunks $key" '$1 == k { print $2; exit }' "$cache" 2>/dev/null || true)
  [[ -n $cached ]] && { echo "$cached"; return; }
  write_plan "$out/plans/step.json" "$@"
  apply_plan "$out/plans/step.json" "$kind" "$out/models/step.gguf"
  local ppl; ppl=$(perplexity "$out/models/step.gguf" "$cal" "$out/logs/step.cal.log" --chunks "$cal_chunks")
  printf 'cal %s %s\t%s\n' "$cal_chunks" "$key" "$ppl" >> "$cache"
  echo "$ppl"
}

eval_ppl() {  # eval_ppl NAME PLAN_FILE KIND: the evaluation-text perplexity of that plan and compensation, cached
  local name=$1 plan=$2 kind=$3
  local cache=$out/cache_$kind.tsv key cached
  key="eval ${eval_chunks} $(tr -d ' \n' < "$plan" | cksum | cut -d' ' -f1)"
  cached=$(awk -F'\t' -v k="$key" '$1 == k { print $2; exit }' "$cache" 2>/dev/null || true)
  [[ -n $cached ]] && { echo "$cached"; return; }
  apply_plan "$plan" "$kind" "$out/models/${name}_$kind.gguf"
  local ppl; ppl=$(perplexity "$out/models/${name}_$kind.gguf" "$eval_text" "$out/logs/${name}_$kind.eval.log" "${eval_option[@]}")
  printf '%s\t%s\n' "$key" "$ppl" >> "$cache"
  rm -f "$out/models/${name}_$kind.gguf"
  echo "$ppl"
}

removed_groups() {  # removed_groups PLAN_FILE: its removed layer:group pairs (from prune --dry-run's plan lines)
  "$tool" prune "$model" "$out/models/unused.gguf" --plan "$1" --dry-run --force 2>&1 |
    awk -v sizes="$(for l in "${!n_head[@]}"; do printf '%s ' $((n_head[l] / n_kv[l])); done)" '
      BEGIN { n = split(sizes, size, " ") }
      /^  layer [0-9]+: heads removed \[/ {
        layer = $2 + 0; sub(/.*\[/, ""); sub(/\].*/, "")
        k = split($0, heads, " "); last = -1
        for (i = 1; i <= k; i++) { g = int(heads[i] / size[layer + 1]); if (g != last) printf "%d:%d ", layer, g; last = g }
      }'
}

per_layer() {  # per_layer GROUP...: "L2: 0 3; L4: 1" (the removed groups by layer)
  printf '%s\n' "$@" | sort -t: -k1,1n -k2,2n | awk -F: 'NR == 1 || $1 != last { printf "%sL%s: %s", (NR > 1 ? "; " : ""), $1, $2; last = $1; next } { printf " %s", $2 } END { print "" }'
}

if [[ ! -f $out/stats.gguf ]] || ! grep -q " on 16384 tokens of " "$out/calibrate.log" 2>/dev/null; then
  "$tool" calibrate "$model" --text "$cal" --tokens 16384 --ctx 128 -o "$out/stats.gguf" --force > "$out/calibrate.log" 2>&1 ||
    fail "calibrate failed (see $out/calibrate.log)"
fi
cal_base=$(perplexity "$model" "$cal" "$out/logs/original.cal.log" --chunks "$cal_chunks")
eval_base=$(perplexity "$model" "$eval_text" "$out/logs/original.eval.log" "${eval_option[@]}")

plans=()   # NAME|CRITERION, each with OUT_DIR/plans/NAME.json
for kind in $searches; do
  removed=()
  : > "$out/greedy_$kind.tsv"
  for ((step = 1; step <= steps; step++)); do
    best="" best_ppl=""
    for group in "${groups[@]}"; do
      [[ " ${removed[*]} " == *" $group "* ]] && continue
      ppl=$(cal_ppl "$kind" "${removed[@]}" "$group")
      if [[ -z $best ]] || awk -v a="$ppl" -v b="$best_ppl" 'BEGIN { exit !(a < b) }'; then best=$group; best_ppl=$ppl; fi
    done
    removed+=("$best")
    printf '%d\t%s\t%s\n' "$step" "$best" "$best_ppl" | tee -a "$out/greedy_$kind.tsv" >&2
    if [[ " $record " == *" $step "* ]]; then
      write_plan "$out/plans/greedy_${kind}_$step.json" "${removed[@]}"
      plans+=("greedy_${kind}_$step|greedy, $kind, calibration perplexity")
      if [[ " $swap_sizes " == *" $step "* ]]; then
        current=("${removed[@]}") current_ppl=$best_ppl
        while :; do
          swap_best=() swap_ppl=$current_ppl
          for out_group in "${current[@]}"; do
            for in_group in "${groups[@]}"; do
              [[ " ${current[*]} " == *" $in_group "* ]] && continue
              candidate=()
              for g in "${current[@]}"; do [[ $g == "$out_group" ]] || candidate+=("$g"); done
              candidate+=("$in_group")
              ppl=$(cal_ppl "$kind" "${candidate[@]}")
              awk -v a="$ppl" -v b="$swap_ppl" 'BEGIN { exit !(a < b) }' && { swap_best=("${candidate[@]}"); swap_ppl=$ppl; }
            done
          done
          ((${#swap_best[@]} > 0)) || break
          current=("${swap_best[@]}") current_ppl=$swap_ppl
          printf 'swap %d\t%s\t%s\n' "$step" "$(sorted_key "${current[@]}")" "$current_ppl" | tee -a "$out/greedy_$kind.tsv" >&2
        done
        write_plan "$out/plans/swap_${kind}_$step.json" "${current[@]}"
        plans+=("swap_${kind}_$step|greedy + 1-swap, $kind, calibration perplexity")
      fi
    fi
  done
done

total_heads=0
for layer in "${!n_head[@]}"; do total_heads=$((total_heads + n_head[layer])); done
for n in $record; do
  size=$((n_head[0] / n_kv[0]))
  fraction=$(awk -v r=$((n * size)) -v t=$total_heads 'BEGIN { printf "%g", r / t }')
  common=(--structures groups --unit heads --target "$fraction" --calibration "$out/stats.gguf" --compensate refit)
  for selector in "output_game:--game output" "magnitude:--score magnitude --game none --temperature 0" "obs:--game obs --selector exact"; do
    read -r -a options <<< "${selector#*:}"
    name=${selector%%:*}_$n
    "$tool" prune "$model" "$out/models/unused.gguf" "${common[@]}" "${options[@]}" --dry-run --plan-out "$out/plans/$name.json" --force \
      > "$out/logs/$name.plan.log" 2>&1 || fail "prune ${common[*]} ${options[*]} failed (see $out/logs/$name.plan.log)"
    plans+=("$name|${selector%%:*} + refit selector (prune ${options[*]})")
  done
done

{
  echo "stories260K; calibration 16384 tokens of tinystories-calibration.txt (context 128). Search criterion: llama-perplexity"
  echo "-c 128 -b 128 on the first $cal_chunks chunks of tinystories-calibration.txt (original $cal_base), of the plan with the"
  echo "refit. Evaluation: llama-perplexity -c 128 -b 128 ${eval_option[*]:-(every chunk)} on tinystories-evaluation.txt (original $eval_base)."
  echo
  echo "| groups removed | plan | removed groups by layer | calibration PPL (refit) | evaluation PPL, refit | evaluation PPL, none |"
  echo "|---|---|---|---|---|---|"
} > "$out/table.incomplete.md"
for entry in "${plans[@]}"; do
  name=${entry%%|*} criterion=${entry#*|}
  read -r -a removed <<< "$(removed_groups "$out/plans/$name.json")"
  echo "$name: ${removed[*]}" >&2
  criterion_ppl=$(cal_ppl refit "${removed[@]}")
  refit=$(eval_ppl "$name" "$out/plans/$name.json" refit)
  none=$(eval_ppl "$name" "$out/plans/$name.json" none)
  echo "| ${#removed[@]} | $criterion | $(per_layer "${removed[@]}") | $criterion_ppl | $refit | $none |" >> "$out/table.incomplete.md"
done
mv "$out/table.incomplete.md" "$out/table.md"
cat "$out/table.md"
