#!/usr/bin/env bash
# Compensated removal on a bundled model: perplexity of pruned models with plain
# removal, FLAP's bias and the least-squares refit (prune --compensate
# none|bias|refit), each plan chosen once and applied three ways.
#
#   [MODEL=stories260K|tiny656K] [ROWS="groups_25 heads_mlp_20"] [SELECTIONS="activation obs"] [COMPENSATIONS="none refit"] [DATA_DIR=examples/data] benchmarks/compensation_study.sh TOOL LLAMA_BIN_DIR OUT_DIR [CHUNKS|all] [CAL_TOKENS]
#
# MODEL: stories260K (default) or tiny656K, TinyStories-656K-Q8_0.gguf, whose
# evaluation and calibration texts are the bundled ones without the lines holding
# characters its vocabulary lacks (written to OUT_DIR; benchmarks/study_models.sh).
# Rows: 25 % and 50 % of the query heads as whole GQA groups (--structures groups
# --unit heads) and as heads per group (--structures heads --unit heads), and 20 %
# and 35 % of the parameters with --structures heads,mlp. Each plan is chosen by
# every selection of SELECTIONS (default "activation output obs"): activation, the
# calibrated activation score (no game, --temperature 0); output, the output
# perturbation game with its exact choice (head rows only); obs, the choice by the
# error left after the refit (--game obs --selector exact). Perplexity:
# llama-perplexity -c 128 -b 128 on the first CHUNKS (default all: the whole text)
# chunks of the evaluation text, its output captured to a file and its
# "Final estimate" read. Beside each refit model the script measures the loss on
# the calibration text itself (its first CAL_TOKENS tokens, the text the moments
# came from) as ln(PPL / PPL of the original), next to what the obs choice predicted
# for it (its summed refit error relative to the residual stream; obs rows only).
# OUT_DIR/table.md holds the rows, with the parameters each plan removes (bias
# tensors included). ROWS limits the run to the named plans (default: all six),
# COMPENSATIONS to some of none, bias and refit. The original's perplexity is
# measured once per OUT_DIR and chunk count (its log is reused).
set -euo pipefail
(($# >= 3 && $# <= 5)) || { echo "usage: [MODEL=stories260K|tiny656K] [DATA_DIR=examples/data] compensation_study.sh TOOL LLAMA_BIN_DIR OUT_DIR [CHUNKS|all] [CAL_TOKENS]" >&2; exit 2; }
tool=$1; bin=$2; out=$3; chunks=${4:-all}; cal_tokens=${5:-16384}
data=${DATA_DIR:-$(cd "$(dirname "$0")/../examples/data" && pwd)}
fail() { echo "compensation_study.sh: $*" >&2; exit 1; }
[[ -x $tool ]] || fail "the nashprune tool $tool is missing"
[[ -x $bin/llama-perplexity ]] || fail "$bin/llama-perplexity is missing"
# shellcheck source-path=SCRIPTDIR source=study_models.sh
source "$(dirname "$0")/study_models.sh"
model_name=${MODEL:-stories260K}
for file in "$data/tinystories-calibration.txt" "$data/tinystories-evaluation.txt"; do [[ -f $file ]] || fail "$file is missing (DATA_DIR)"; done
mkdir -p "$out"
study_model "$model_name" "$data" "$out" || fail "unknown MODEL '$model_name' (stories260K, tiny656K)"
[[ -f $model ]] || fail "$model is missing (DATA_DIR)"
cal=$calibration_text
chunk_option=(--chunks "$chunks")
[[ $chunks == all ]] && chunk_option=()

ppl() {  # ppl MODEL: the final perplexity estimate on the evaluation text (a log newer than MODEL is reused)
  local log=$out/$(basename "$1" .gguf).ppl.log
  [[ $log -nt $1 ]] && grep -q " ${chunk_option[*]:-all}\$" "$log.chunks" 2>/dev/null && grep -o 'Final estimate: PPL = [0-9.]*' "$log" | grep -o '[0-9.]*$' && return
  echo " ${chunk_option[*]:-all}" > "$log.chunks"
  "$bin/llama-perplexity" -m "$1" -f "$eval_text" -c 128 -b 128 "${chunk_option[@]}" -t 2 > "$log" 2>&1 ||
    fail "llama-perplexity failed on $1 (see $log)"
  grep -o 'Final estimate: PPL = [0-9.]*' "$log" | grep -o '[0-9.]*$' || fail "no estimate for $1 (see $log)"
}

calibration_ppl() {  # calibration_ppl MODEL: the perplexity on the calibration's own tokens
  local log=$out/$(basename "$1" .gguf).cal.log
  "$bin/llama-perplexity" -m "$1" -f "$cal" -c 128 -b 128 --chunks $((cal_tokens / 128)) -t 2 > "$log" 2>&1 ||
    fail "llama-perplexity failed on $1 (see $log)"
  grep -o 'Final estimate: PPL = [0-9.]*' "$log" | grep -o '[0-9.]*$' || fail "no estimate for $1 (see $log)"
}

if [[ ! -f $out/stats.gguf ]] || ! grep -qF "calibrated $model on $cal_tokens tokens of " "$out/calibrate.log" 2>/dev/null; then
  "$tool" calibrate "$model" --text "$cal" --tokens "$cal_tokens" --ctx 128 -o "$out/stats.gguf" --force > "$out/calibrate.log"
fi
base=$(ppl "$model")
cal_base=$(calibration_ppl "$model")
{
  echo "$(basename "$model" .gguf), llama-perplexity -c 128 -b 128 ${chunk_option[*]:-(every chunk)} on $(basename "$eval_text"); original $base."
  echo "Calibration: $cal_tokens tokens of $(basename "$cal"). Damping 0.001. Calibration-text loss of the"
  echo "refit model: ln(PPL / $cal_base) on those tokens; predicted: the obs choice's summed refit error."
  echo
  echo "| plan | selection | parameters removed | none | bias | refit | calibration loss (refit) | predicted |"
  echo "|---|---|---|---|---|---|---|---|"
} > "$out/table.incomplete.md"

row() {  # row NAME SELECTION_NAME PRUNE_OPTIONS...
  local name=$1 selection=$2; shift 2
  local cells=() removed=""
  for kind in none bias refit; do
    if [[ " $compensations " != *" $kind "* ]]; then cells+=("not measured"); continue; fi
    echo "$name $selection $kind" >&2
    local pruned=$out/${name}_${selection}_$kind.gguf
    "$tool" prune "$model" "$pruned" --calibration "$out/stats.gguf" --compensate "$kind" --force "$@" > "$out/${name}_${selection}_$kind.log"
    removed=$(grep -o 'parameters [0-9]* -> [0-9]*' "$out/${name}_${selection}_$kind.log" | head -1 || true)
    cells+=("$(ppl "$pruned")")
  done
  local cal_loss="-" predicted
  [[ " $compensations " == *" refit "* ]] && cal_loss=$(awk -v p="$(calibration_ppl "$out/${name}_${selection}_refit.gguf")" -v b="$cal_base" 'BEGIN { printf "%.4f", log(p / b) }')
  predicted=$(grep -o 'summed refit error [0-9.e+-]*' "$out/${name}_${selection}_refit.log" | grep -o '[0-9.e+-]*$' || true)
  echo "| $name | $selection | ${removed:-?} | ${cells[0]} | ${cells[1]} | ${cells[2]} | $cal_loss | ${predicted:--} |" >> "$out/table.incomplete.md"
}

selections=${SELECTIONS:-activation output obs}
compensations=${COMPENSATIONS:-none bias refit}
for spec in "groups_25:--structures groups --unit heads --target 0.25" "groups_50:--structures groups --unit heads --target 0.5" \
            "heads_25:--structures heads --unit heads --target 0.25" "heads_50:--structures heads --unit heads --target 0.5" \
            "heads_mlp_20:--structures heads,mlp --target 0.2" "heads_mlp_35:--structures heads,mlp --target 0.35"; do
  name=${spec%%:*}
  [[ -z ${ROWS:-} || " $ROWS " == *" $name "* ]] || continue
  read -r -a options <<< "${spec#*:}"
  for selection in $selections; do
    case $selection in
      activation) row "$name" activation "${options[@]}" --score activation --game none --temperature 0 ;;
      output) [[ $name == heads_mlp_* ]] || row "$name" output "${options[@]}" --game output --selector exact ;;
      obs) row "$name" obs "${options[@]}" --game obs --selector exact ;;
      *) fail "unknown selection '$selection' in SELECTIONS (activation, output, obs)" ;;
    esac
  done
done
mv "$out/table.incomplete.md" "$out/table.md"
cat "$out/table.md"
