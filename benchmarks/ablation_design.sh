#!/usr/bin/env bash
# Choosing the ablation design on held-out CALIBRATION text, never on the
# evaluation text: for each design, the heads it removes at 25 % and
# 50 % and their measured mean NLL (nashprune ablate --remove) on calibration
# bytes from HELDOUT_BYTE on (default 100000: beyond what the ablation's and the
# calibration's tokens reach), HELDOUT_TOKENS (default 4096) tokens of them.
#
#   [TARGETS="0.25 0.5"] [ROUNDS="2 3"] [ABL_TOKENS=2048] [EXTRA_TOKENS="4096"] [DATA_DIR=examples/data] ablation_design.sh TOOL OUT_DIR
#
# Designs (ROUNDS="" or EXTRA_TOKENS="" leave those out): one-shot nash / exact / greedy on ablation.json (ABL_TOKENS tokens;
# the file benchmarks/quality_study.sh makes and reuses, same OUT_DIR), the
# iterative plan (ablation-prune) in each of ROUNDS rounds (plans written as
# nash_ablation_iter<K>_<target>.json, which the study then reuses), and one-shot
# nash on a longer ablation per EXTRA_TOKENS (the overfitting reading). Writes
# OUT_DIR/design_<targets>.md (runs for different TARGETS may go side by side).
# Long: run it under nice on a shared machine.
set -euo pipefail
(($# == 2)) || { echo "usage: [TARGETS=\"0.25 0.5\"] [ROUNDS=\"2 3\"] [ABL_TOKENS=2048] [EXTRA_TOKENS=\"4096\"] [DATA_DIR=examples/data] ablation_design.sh TOOL OUT_DIR" >&2; exit 2; }
tool=$1; out=$2
data=${DATA_DIR:-$(cd "$(dirname "$0")/../examples/data" && pwd)}
model=$data/stories260K.gguf
cal=$data/tinystories-calibration.txt
fail() { echo "ablation_design.sh: $*" >&2; exit 1; }
[[ -x $tool && ! -d $tool ]] || fail "the nashprune tool $tool is missing or not executable"
"$tool" ablate --help > /dev/null 2>&1 || fail "$tool has no 'ablate' command (build it with NASHPRUNE_LLAMA_CPP_DIR)"
for file in "$model" "$cal"; do [[ -f $file ]] || fail "$file is missing (DATA_DIR)"; done
tokens=${ABL_TOKENS:-2048}
mkdir -p "$out"
targets=${TARGETS:-0.25 0.5}
table=$out/design_${targets// /_}.md
heldout=$out/heldout_calibration_${HELDOUT_BYTE:-100000}.txt
[[ -f $heldout ]] || tail -c +"${HELDOUT_BYTE:-100000}" "$cal" > "$heldout"

ablation() {  # TOKENS FILE: the whole model's ablation on the first TOKENS tokens (reused when present)
  [[ -f $2 ]] || "$tool" ablate "$model" --text "$cal" --tokens "$1" --ctx 128 --pairs all --threads 1 -o "$2" --force > "$2.log"
}
heldout_nll() {  # LOG: the NLL on held-out text of the heads its "removed:" line names
  local heads
  heads=$(grep '^removed: ' "$1" | cut -d' ' -f2)
  [[ -n $heads ]] || fail "$1 names no removed heads"
  "$tool" ablate "$model" --text "$heldout" --tokens "${HELDOUT_TOKENS:-4096}" --ctx 128 --threads 1 --remove "$heads" | awk '/^mean NLL/ {print $3}'
}
count() { grep '^removed: ' "$1" | cut -d' ' -f2 | tr ',' '\n' | grep -c .; }

ablation "$tokens" "$out/ablation.json"
{
  echo "held-out calibration NLL (bytes from ${HELDOUT_BYTE:-100000} of tinystories-calibration.txt, ${HELDOUT_TOKENS:-4096} tokens);"
  echo "ablation on the first $tokens tokens unless stated."
  echo
  echo "| target | design | heads | held-out NLL |"
  echo "|---|---|---|---|"
  echo "| 0 | original | 0 | $("$tool" ablate "$model" --text "$heldout" --tokens "${HELDOUT_TOKENS:-4096}" --ctx 128 --threads 1 --remove "" 2>/dev/null | awk '/^mean NLL/ {print $3}') |"
} > "$table"
for target in $targets; do
  for spec in nash:ablation:greedy exact:ablation:exact greedy:none:exact; do
    IFS=: read -r method game selector <<< "$spec"
    log=$out/design_${method}_$target.log
    "$tool" ablation-plan "$model" --ablation "$out/ablation.json" --game "$game" --selector "$selector" --target "$target" \
      --plan-out "$out/design_${method}_$target.json" > "$log"
    echo "| $target | $method one-shot | $(count "$log") | $(heldout_nll "$log") |" >> "$table"
  done
  for rounds in ${ROUNDS-2 3}; do
    name=nash_ablation_iter${rounds}_$target
    # A plan of the same name with its log (quality_study.sh writes them too) is reused.
    [[ -f $out/$name.json && -f $out/$name.log ]] || nice -n 15 "$tool" ablation-prune "$model" --text "$cal" --tokens "$tokens" --ctx 128 --pairs all --threads 1 --first "$out/ablation.json" \
      --target "$target" --rounds "$rounds" --plan-out "$out/$name.json" > "$out/$name.log"
    echo "| $target | nash iterative, $rounds rounds | $(count "$out/$name.log") | $(heldout_nll "$out/$name.log") |" >> "$table"
  done
  for more in ${EXTRA_TOKENS-4096}; do
    ablation "$more" "$out/ablation_$more.json"
    log=$out/design_nash_${more}_$target.log
    "$tool" ablation-plan "$model" --ablation "$out/ablation_$more.json" --game ablation --selector greedy --target "$target" --plan-out "$out/design_nash_${more}_$target.json" > "$log"
    echo "| $target | nash one-shot, $more ablation tokens | $(count "$log") | $(heldout_nll "$log") |" >> "$table"
  done
done
cat "$table"
