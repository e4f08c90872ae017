#!/usr/bin/env bash
# A size budget split between pruning and quantization, on stories260K: prune with
# the recommended pipeline (calibrated on the calibration text), then give the
# pruned model a type per tensor (quantize-plan --sensitivity measured) that makes
# its file the size of a uniform quantization of the original, against that
# uniform file.
#
#   benchmarks/prune_then_quantize.sh TOOL LLAMA_BIN_DIR OUT_DIR
#
# Prunings: 20 % of parameters (--structures heads,mlp --target 0.2) and 25 % of
# heads as whole GQA groups (--unit heads --structures groups --target 0.25).
# Sizes: the `llama-quantize --pure` files of q4_1, q5_0, q5_1 and q8_0. Every file is
# evaluated with llama-perplexity -c 128 -b 128 on the whole evaluation text.
# OUT_DIR/table.md holds the rows; `nashprune inspect --plan --quant` of each
# recipe is in OUT_DIR/PRUNING/inspect-at-TYPE.txt.
set -euo pipefail

if [[ $# -lt 3 ]]; then
  sed -n '2,/^set -e/p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
tool=$1 bin=$2 out=$3
data=${DATA_DIR:-$(cd "$(dirname "$0")/../examples/data" && pwd)}
model=$data/stories260K.gguf
calibration=$data/tinystories-calibration.txt
text=$data/tinystories-evaluation.txt
export OMP_WAIT_POLICY=PASSIVE
mkdir -p "$out"

evaluate() {
  local log=$1.ppl.log
  "$bin/llama-perplexity" -m "$1" -f "$text" -c 128 -b 128 > "$log" 2>&1
  sed -n 's/.*Final estimate: PPL = \([0-9.]*\) +\/- .*/\1/p' "$log" | tail -n 1
}

table=$out/table.md
{
  echo '| recipe | file bytes | perplexity | change against uniform |'
  echo '|---|---:|---:|---:|'
} > "$table"
declare -A uniform_ppl uniform_bytes
for type in q4_1 q5_0 q5_1 q8_0; do
  file=$out/uniform-$type.gguf
  "$bin/llama-quantize" --pure "$model" "$file" "${type^^}" > "$file.log" 2>&1
  uniform_bytes[$type]=$(stat -c %s "$file")
  uniform_ppl[$type]=$(evaluate "$file")
  echo "| uniform $type | ${uniform_bytes[$type]} | ${uniform_ppl[$type]} | |" >> "$table"
done
for pruning in params20 heads25; do
  case $pruning in
    params20) options=(--structures heads,mlp --target 0.2) ;;
    heads25) options=(--unit heads --structures groups --target 0.25) ;;
  esac
  dir=$out/$pruning
  mkdir -p "$dir"
  pruned=$dir/pruned.gguf
  "$tool" prune "$model" "$pruned" "${options[@]}" --text "$calibration" --plan-out "$dir/plan.json" --force > "$dir/prune.log" 2>&1
  echo "| pruned $pruning (F32, ${options[*]}) | $(stat -c %s "$pruned") | $(evaluate "$pruned") | |" >> "$table"
  costs=$dir/costs.tsv
  "$tool" quantize-plan "$pruned" --bpw 12 --sensitivity measured --text "$calibration" --tokens 2048 \
    --types q4_0,q4_1,q5_0,q5_1,q8_0,f16 -o "$dir/measure.txt" --save-costs "$costs" > "$dir/measure.log" 2>&1
  for type in q4_1 q5_0 q5_1 q8_0; do
    file=$dir/at-$type.gguf
    if ! "$tool" quantize-plan "$pruned" --size "${uniform_bytes[$type]}" --costs "$costs" --types q4_0,q4_1,q5_0,q5_1,q8_0,f16 \
         -o "$dir/at-$type.txt" --run "$file" --llama-bin "$bin" > "$file.plan.log" 2>&1; then
      echo "| pruned $pruning, then planned at the uniform $type size | — | not possible: $(tail -n 1 "$file.plan.log") | |" >> "$table"
      continue
    fi
    "$tool" inspect "$model" --plan "$dir/plan.json" --quant "$dir/at-$type.txt" > "$dir/inspect-at-$type.txt"
    ppl=$(evaluate "$file")
    change=$(python3 -c "print(f'{100 * ($ppl / ${uniform_ppl[$type]} - 1):+.1f} %')")
    echo "| pruned $pruning, then planned at the uniform $type size | $(stat -c %s "$file") | $ppl | $change |" >> "$table"
  done
done
cat "$table"
