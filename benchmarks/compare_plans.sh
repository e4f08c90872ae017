#!/usr/bin/env bash
# Two builds of the nashprune tool must choose the same plans and write the same
# bytes: every prune, ablation-plan and select configuration that
# benchmarks/quality_study.sh, the llama tests (tests/llama/) and the tool's
# calibration tests (tests/calibrate/) run, on stories260K and on generated
# models. Each configuration runs once with each tool; the plan JSON, the
# per-head statistics JSON and (for the writing runs) the output GGUF are
# compared with cmp. The measurements both read (calibration statistics,
# imatrix, ablation files) are made once, by OLD_TOOL, and kept in WORK_DIR.
# NEW_TOOL gets the options in its own spelling (NEW_SPELLING=game: --method
# and --redundancy, of prune and of ablation-plan / ablation-prune, become
# --game and --selector; NEW_SPELLING=method: as given).
# KEEP_OLD=1 reuses OLD_TOOL's outputs that WORK_DIR/old already holds.
#
#   [NEW_SPELLING=game] [KEEP_OLD=1] [DATA_DIR=examples/data] benchmarks/compare_plans.sh OLD_TOOL NEW_TOOL LLAMA_BIN_DIR WORK_DIR
#
# DATA_DIR (default: the bundled examples/data) holds stories260K.gguf and tinystories-calibration.txt;
# LLAMA_BIN_DIR holds llama-imatrix. Prints one line per configuration and exits
# 1 when any output differs (2 on a usage error or a run that fails).
set -euo pipefail
usage="usage: [NEW_SPELLING=game|method] [KEEP_OLD=1] [DATA_DIR=examples/data] compare_plans.sh OLD_TOOL NEW_TOOL LLAMA_BIN_DIR WORK_DIR"
(($# == 4)) || { echo "$usage" >&2; exit 2; }
old=$1; new=$2; bin=$3; work=$4
data_dir=${DATA_DIR:-$(cd "$(dirname "$0")/../examples/data" && pwd)}
spelling=${NEW_SPELLING:-game}
model=$data_dir/stories260K.gguf
cal=$data_dir/tinystories-calibration.txt
fail() { echo "compare_plans.sh: $*" >&2; exit 2; }
for tool in "$old" "$new"; do [[ -x $tool && ! -d $tool ]] || fail "$tool is not an executable"; done
"$old" calibrate --help > /dev/null 2>&1 || fail "$old has no calibrate command (build it with NASHPRUNE_LLAMA_CPP_DIR)"
[[ -x $bin/llama-imatrix ]] || fail "$bin/llama-imatrix is missing (LLAMA_BIN_DIR)"
for file in "$model" "$cal"; do [[ -f $file ]] || fail "$file is missing (DATA_DIR)"; done
[[ $spelling == game || $spelling == method ]] || fail "NEW_SPELLING must be game or method, not '$spelling'"
mkdir -p "$work/inputs" "$work/old" "$work/new"
in=$work/inputs

# The measurements, made once by the old tool (reused when present).
[[ -f $in/stats.gguf ]] || "$old" calibrate "$model" --text "$cal" --tokens 2048 --ctx 128 -o "$in/stats.gguf" --force > "$in/calibrate.log"
[[ -f $in/ablation.json ]] || "$old" ablate "$model" --text "$cal" --tokens 256 --ctx 128 --pairs all --threads 1 -o "$in/ablation.json" --force > "$in/ablate.log"
[[ -f $in/layer_ablation.json ]] || "$old" ablate "$model" --text "$cal" --tokens 256 --ctx 128 --pairs all --units layers --threads 1 \
  -o "$in/layer_ablation.json" --force > "$in/layer_ablate.log"
[[ -f $in/generated.gguf ]] || "$old" generate "$in/generated.gguf" --layers 5 --seed 7 --force > /dev/null
[[ -f $in/mha.gguf ]] || "$old" generate "$in/mha.gguf" --kv-heads 8 --force > /dev/null
[[ -f $in/gqa.gguf ]] || "$old" generate "$in/gqa.gguf" --force > /dev/null
for m in stories260K generated; do
  source_model=$model
  [[ $m == generated ]] && source_model=$in/generated.gguf
  [[ -f $in/$m.imatrix.gguf ]] || head -c 40000 "$cal" > "$in/imatrix_text.txt"
  [[ -f $in/$m.imatrix.gguf ]] || "$bin/llama-imatrix" -m "$source_model" -f "$in/imatrix_text.txt" -c 128 -o "$in/$m.imatrix.gguf" \
    > "$in/$m.imatrix.log" 2>&1 || fail "llama-imatrix failed on $source_model (see $in/$m.imatrix.log)"
done

# --method M [--redundancy R] in NEW_TOOL's spelling.
translate() {
  local method="" redundancy="" out=()
  while (($#)); do
    case $1 in
      --method) method=$2; shift 2 ;;
      --redundancy) redundancy=$2; shift 2 ;;
      *) out+=("$1"); shift ;;
    esac
  done
  if [[ $spelling == game && ( -n $method || -n $redundancy ) ]]; then
    method=${method:-nash}; redundancy=${redundancy:-cosine}
    case $redundancy:$method in
      cosine:nash) out+=(--game cosine --selector greedy) ;;
      cosine:knapsack) out+=(--game none --selector greedy) ;;
      cosine:both) out+=(--game cosine --selector exact) ;;
      output:nash | ablation:nash) out+=(--game "$redundancy" --selector greedy) ;;
      output:exact | ablation:exact) out+=(--game "$redundancy" --selector exact) ;;
      *) fail "no translation of --method $method --redundancy $redundancy" ;;
    esac
  else
    [[ -n $method ]] && out+=(--method "$method")
    [[ -n $redundancy ]] && out+=(--redundancy "$redundancy")
  fi
  printf '%s\n' "${out[@]}"
}

# ablation-plan / ablation-prune's --method M in NEW_TOOL's spelling.
translate_loss() {
  local out=()
  while (($#)); do
    if [[ $1 == --method && $spelling == game ]]; then
      case $2 in
        nash) out+=(--game ablation --selector greedy) ;;
        exact) out+=(--game ablation --selector exact) ;;
        greedy) out+=(--game none --selector exact) ;;
        *) fail "no translation of --method $2" ;;
      esac
      shift 2
    else
      out+=("$1"); shift
    fi
  done
  printf '%s\n' "${out[@]}"
}

differences=0
cases=0
compare() {  # name file...: cmp of each file between old/ and new/
  local name=$1 file verdict=identical
  shift
  for file in "$@"; do
    if ! cmp -s "$work/old/$file" "$work/new/$file"; then
      verdict="DIFFERENT ($file)"
      differences=$((differences + 1))
      break
    fi
  done
  cases=$((cases + 1))
  printf '%-44s %s\n' "$name" "$verdict"
}

# prune NAME write|dry MODEL ARGS...: the plan, the head statistics and (write) the model.
prune_case() {
  local name=$1 mode=$2 input=$3 side tool files
  shift 3
  files=("$name.plan.json")
  for side in old new; do
    [[ $side == old && ${KEEP_OLD:-0} == 1 && -f $work/old/$name.plan.json ]] && continue
    tool=$old; args=("$@")
    if [[ $side == new ]]; then tool=$new; mapfile -t args < <(translate "$@"); fi
    local out=() stats=(--stats "$work/$side/$name.stats.json")
    if [[ $mode == write ]]; then out=("$work/$side/$name.gguf" --force); else out=(--dry-run); fi
    rm -f "$work/$side/$name".*
    "$tool" prune "$input" "${out[@]}" "${args[@]}" "${stats[@]}" --plan-out "$work/$side/$name.plan.json" \
      > "$work/$side/$name.log" 2> "$work/$side/$name.err" || fail "$side: prune $name failed (see $work/$side/$name.err)"
  done
  [[ -f $work/old/$name.stats.json || -f $work/new/$name.stats.json ]] && files+=("$name.stats.json")
  [[ $mode == write ]] && files+=("$name.gguf")
  compare "prune $name" "${files[@]}"
}

# NAME COMMAND ARGS... run by both tools; COMMAND writes $work/SIDE/NAME.json (the token @OUT).
tool_case() {
  local name=$1 side tool args
  shift
  for side in old new; do
    [[ $side == old && ${KEEP_OLD:-0} == 1 && -f $work/old/$name.json ]] && continue
    tool=$old; args=("$@")
    if [[ $side == new ]]; then tool=$new; mapfile -t args < <(translate_loss "$@"); fi
    args=("${args[@]//@OUT/$work/$side/$name.json}")
    "$tool" "${args[@]}" > "$work/$side/$name.log" 2> "$work/$side/$name.err" || fail "$side: $name failed (see $work/$side/$name.err)"
  done
  compare "$name" "$name.json"
}

stats=$in/stats.gguf
# benchmarks/quality_study.sh
prune_case full_plan dry "$model" --unit heads --target 0
for target in 0.25 0.5; do
  prune_case "magnitude_$target" write "$model" --unit heads --target "$target" --score magnitude --method knapsack
  prune_case "activation_$target" write "$model" --unit heads --target "$target" --score activation --method knapsack --calibration "$stats" --temperature 0
  prune_case "wanda_$target" write "$model" --unit heads --target "$target" --score wanda --method knapsack --calibration "$stats" --temperature 0
  prune_case "nash_$target" write "$model" --unit heads --target "$target" --score wanda --method nash --calibration "$stats" --temperature 0
  prune_case "knapsack_hgsp_$target" write "$model" --unit heads --target "$target" --score wanda --method knapsack --calibration "$stats" --temperature 1
  prune_case "nash_hgsp_$target" write "$model" --unit heads --target "$target" --score wanda --method nash --calibration "$stats" --temperature 1
  prune_case "nash_output_$target" write "$model" --unit heads --target "$target" --redundancy output --method nash --calibration "$stats" --temperature 0
  prune_case "exact_output_$target" write "$model" --unit heads --target "$target" --redundancy output --method exact --calibration "$stats" --temperature 0
  for method in nash exact greedy; do
    tool_case "${method}_ablation_$target" ablation-plan "$model" --ablation "$in/ablation.json" --method "$method" --target "$target" --plan-out @OUT
    prune_case "${method}_ablation_${target}_applied" write "$model" --plan "$work/old/${method}_ablation_$target.json"
  done
  prune_case "ablation_game_$target" write "$model" --unit heads --target "$target" --redundancy ablation --method nash --ablation "$in/ablation.json"
  prune_case "ablation_exact_$target" dry "$model" --unit heads --target "$target" --redundancy ablation --method exact --ablation "$in/ablation.json"
done
for k in 1 2; do
  tool_case "layers_ablation_$k" ablation-plan "$model" --ablation "$in/layer_ablation.json" --count "$k" --plan-out @OUT
  prune_case "layers_ablation_${k}_applied" write "$model" --plan "$work/old/layers_ablation_$k.json"
done
tool_case layers_ablation_greedy ablation-plan "$model" --ablation "$in/layer_ablation.json" --count 2 --method greedy --plan-out @OUT
tool_case ablation_prune_1 ablation-prune "$model" --text "$cal" --tokens 256 --ctx 128 --pairs all --threads 1 --first "$in/ablation.json" \
  --target 0.25 --rounds 1 --plan-out @OUT

# tests/llama: the prune cases on stories260K and a generated model, and the layer scripts.
for m in stories260K generated; do
  input=$model
  [[ $m == generated ]] && input=$in/generated.gguf
  imatrix=$in/$m.imatrix.gguf
  prune_case "${m}_heads_25_nash" write "$input" --target 0.25 --unit heads
  prune_case "${m}_heads_50_knapsack" write "$input" --target 0.5 --unit heads --method knapsack
  prune_case "${m}_groups_25" write "$input" --target 0.25 --unit heads --structures groups
  prune_case "${m}_mlp_20" write "$input" --target 0.2 --structures mlp
  prune_case "${m}_layers_20" write "$input" --target 0.2 --structures layers
  prune_case "${m}_layers_heads_mlp_30" write "$input" --target 0.3 --structures layers heads mlp
  prune_case "${m}_attn_blocks_10" write "$input" --target 0.1 --structures attn-blocks
  prune_case "${m}_mlp_blocks_10" write "$input" --target 0.1 --structures mlp-blocks
  prune_case "${m}_heads_mlp_30_both" write "$input" --target 0.3 --structures heads mlp --method both
  prune_case "${m}_heads_25_wanda" write "$input" --target 0.25 --unit heads --score wanda --imatrix "$imatrix"
  prune_case "${m}_heads_25_activation" write "$input" --target 0.25 --unit heads --score activation --imatrix "$imatrix"
  prune_case "${m}_mlp_25_activation" write "$input" --target 0.25 --structures mlp --score activation --imatrix "$imatrix"
done
prune_case layers_heads_mlp_comma write "$model" --structures layers,heads,mlp --target 0.3

# tests/calibrate: priors, block influence, the output game, mixed layers and heads.
for t in 0 3; do
  prune_case "priors_t$t" dry "$model" --calibration "$stats" --score wanda --structures heads,mlp --target 0.2 --temperature "$t"
done
prune_case influence_layers dry "$model" --structures layers --unit heads --target 0.25 --temperature 0 --calibration "$stats"
prune_case influence_attn_blocks dry "$model" --structures attn-blocks --unit heads --target 0.25 --temperature 0 --calibration "$stats"
prune_case influence_mlp_blocks dry "$model" --structures mlp-blocks --target 0.05 --temperature 0 --calibration "$stats"
prune_case influence_layers_heads dry "$model" --structures layers,heads --unit heads --target 0.25 --method knapsack --temperature 0 --calibration "$stats"
prune_case influence_layers_heads_mlp write "$model" --structures layers,heads,mlp --target 0.3 --calibration "$stats"
prune_case output_default write "$model" --unit heads --target 0.25 --redundancy output --calibration "$stats"

# tests/cli/check_lambda_auto.cmake: --lambda auto on generated models.
prune_case lambda_auto_mha write "$in/mha.gguf" --unit heads --target 0.25 --lambda auto
for structure in groups heads; do
  prune_case "lambda_auto_gqa_$structure" write "$in/gqa.gguf" --unit heads --target 0.25 --lambda auto --structures "$structure"
done
prune_case lambda_auto_capped dry "$in/mha.gguf" --unit heads --target 0.9 --lambda auto --max-prune 0.25
prune_case lambda_auto_stories dry "$model" --unit heads --target 0.25 --lambda auto --calibration "$stats" --temperature 0

# nashprune select on the tool's test inputs.
data=$(cd "$(dirname "$0")/.." && pwd)/tests/cli/testdata
[[ -d $data ]] || data=$(cd "$(dirname "$0")/.." && pwd)/examples/nashprune/testdata
for input in select_valid select_mixed select_mixed_exact; do
  tool_case "select_$input" select "$data/$input.json" -o @OUT
done

echo "$cases configurations, $differences differ"
((differences == 0))
