#!/usr/bin/env bash
# Pruning the bundled Q8_0 model (quantized weights) with compensation, and what
# stock llama.cpp makes of the outputs:
# - a refit attn_output / ffn_down whose rows are whole Q8_0 blocks is written
#   Q8_0 (quantized by ggml), one that is not is written F16; the model loads and
#   gives a finite perplexity, below the uncompensated plan's (first 20 chunks
#   of 128 tokens of the evaluation text);
# - a column slice that splits Q8_0 blocks is written F16 with a llama-quantize
#   command; that command brings exactly those tensors back to Q8_0, copies the
#   rest, and its output gives a finite perplexity too.
# usage: quantized_compensation.sh NASHPRUNE LLAMA_BIN MODEL CALIBRATION_TEXT EVALUATION_TEXT WORK
set -uo pipefail
nashprune=$1 llama_bin=$2 model=$3 cal=$4 eval_text=$5 work=$6
for f in "$model" "$cal" "$eval_text"; do
  [[ -f $f ]] || { echo "FAIL: $f is missing"; exit 1; }
done
rm -rf "$work" && mkdir -p "$work"
failed=0

# The evaluation lines without the characters TinyStories-656K's vocabulary lacks
# (llama.cpp's tokenizer stops on them): the mis-encoded quotes "â€œ", "â€", "â€™".
LC_ALL=C.UTF-8 grep -v '[âœ”€™]' "$eval_text" > "$work/evaluation.txt"

perplexity() {
  "$llama_bin/llama-perplexity" -m "$1" -f "$work/evaluation.txt" -c 128 -b 128 --chunks 20 > "$1.ppl.log" 2>&1
  ppl=$(grep -o 'Final estimate: PPL = [0-9.]*' "$1.ppl.log" | grep -o '[0-9.]*$')
  if [[ $ppl =~ ^[0-9]+\.[0-9]+$ ]]; then
    echo "ok: $(basename "$1") perplexity $ppl"
  else
    echo "FAIL: no finite perplexity for $1:"; tail -5 "$1.ppl.log"; failed=1
  fi
}

types_of() { "$nashprune" inspect "$1" | grep '^tensor types:'; }

channels() { local out="" c; for ((c = 0; c < $1; c++)); do out+="${out:+,}$c"; done; echo "$out"; }
# Layer 0 keeps two whole GQA groups (64 columns) and 192 channels: whole blocks.
# Layer 1 keeps one head of three groups (48 columns) and 300 channels: not.
cat > "$work/plan.json" <<JSON
{"layers": [{"layer": 0, "keep": true, "q_heads": [0, 1, 6, 7], "kv_heads": [0, 3], "channels": [$(channels 192)]},
            {"layer": 1, "keep": true, "q_heads": [0, 2, 4], "kv_heads": [0, 1, 2], "channels": [$(channels 300)]}]}
JSON
"$nashprune" calibrate "$model" --text "$cal" --tokens 4096 --ctx 128 -o "$work/stats.gguf" > "$work/calibrate.log" 2>&1 ||
  { echo "FAIL: calibrate failed:"; cat "$work/calibrate.log"; exit 1; }
if ! "$nashprune" prune "$model" "$work/refit.gguf" --plan "$work/plan.json" --calibration "$work/stats.gguf" --compensate refit \
  > "$work/refit.log" 2>&1; then
  echo "FAIL: prune --compensate refit on $model failed:"; cat "$work/refit.log"; exit 1
fi
types=$(types_of "$work/refit.gguf")
if [[ $types == *"f16 x2 "* ]] && grep -qF "stay F16 (rows not whole blocks of their type): blk.1.attn_output.weight (48 values a row) blk.1.ffn_down.weight (300 values a row)" "$work/refit.log"; then
  echo "ok: layer 0's refit weights stay Q8_0, layer 1's are F16 ($types)"
else
  echo "FAIL: unexpected types ($types) or notes in:"; cat "$work/refit.log"; failed=1
fi
perplexity "$work/refit.gguf"
refit_ppl=$ppl
# The same plan uncompensated (the input's block-splitting slices F16) is worse:
# 3116 against 638 for the refit when measured (original 137, 20 chunks).
"$nashprune" prune "$model" "$work/none.gguf" --plan "$work/plan.json" > "$work/none.log" 2>&1 ||
  { echo "FAIL: prune without compensation failed:"; cat "$work/none.log"; exit 1; }
perplexity "$work/none.gguf"
if awk -v r="$refit_ppl" -v n="$ppl" 'BEGIN { exit !(r < n) }'; then
  echo "ok: refit $refit_ppl < uncompensated $ppl"
else
  echo "FAIL: refit $refit_ppl is not below uncompensated $ppl"; failed=1
fi

# An uncompensated slice of 16-column heads: F16, and the command that restores Q8_0.
sed -e 's/"q_heads": \[0, 1, 6, 7\], "kv_heads": \[0, 3\]/"q_heads": [0, 2, 4, 6], "kv_heads": [0, 1, 2, 3]/' \
    -e 's/"q_heads": \[0, 2, 4\], "kv_heads": \[0, 1, 2\], "channels": \[[0-9,]*\]/"q_heads": [0, 1, 2, 3, 4, 5, 6, 7], "kv_heads": [0, 1, 2, 3], "channels": ['"$(channels 384)"']/' \
    "$work/plan.json" > "$work/slice.json"
"$nashprune" prune "$model" "$work/slice.gguf" --plan "$work/slice.json" > "$work/slice.log" 2>&1 ||
  { echo "FAIL: prune of a block-splitting slice failed:"; cat "$work/slice.log"; exit 1; }
restore=$(grep -o 'llama-quantize --allow-requantize .*' "$work/slice.log")
if [[ -z $restore ]]; then
  echo "FAIL: no llama-quantize command in:"; cat "$work/slice.log"; exit 1
fi
echo "restoring: $restore"
(cd "$llama_bin" && eval "./$restore") > "$work/restore.log" 2>&1 || { echo "FAIL: the printed command failed:"; tail -20 "$work/restore.log"; exit 1; }
converted=$(grep -c 'converting to q8_0' "$work/restore.log")
if [[ $converted -eq 1 ]] && grep -q 'blk.0.attn_output.weight .*converting to q8_0' "$work/restore.log"; then
  echo "ok: llama-quantize quantized blk.0.attn_output.weight alone and copied the rest"
else
  echo "FAIL: llama-quantize converted $converted tensors:"; grep -E 'converting|size =' "$work/restore.log"; failed=1
fi
restored_types=$(types_of "$work/slice-q8_0.gguf")
[[ $restored_types != *f16* ]] || { echo "FAIL: still F16 after restoring: $restored_types"; failed=1; }
perplexity "$work/slice.gguf"
perplexity "$work/slice-q8_0.gguf"
exit $failed
