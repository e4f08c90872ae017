#!/usr/bin/env bash
# Pruning query heads of a K-quant model: a generated model (n_embd 256, 8 heads
# of 32 over 4 KV heads) quantized by llama-quantize to Q4_K_M, whose attn_output
# rows are single Q4_K blocks of 256 columns, so every head slice splits a block.
# prune --unit heads must meet the target, write the sliced attn_output F16 and
# say so (naming the type it had and the rows that stay F16), and stock
# llama.cpp must load the output and give a finite perplexity.
# usage: kquant_heads.sh NASHPRUNE LLAMA_BIN TEXT WORK
set -uo pipefail
nashprune=$1 llama_bin=$2 text=$3 work=$4
rm -rf "$work" && mkdir -p "$work"
failed=0

"$nashprune" generate "$work/f16.gguf" --layers 3 --embd 256 --heads 8 --kv-heads 4 --ffn 512 --type f16 >"$work/generate.log" 2>&1 ||
  { echo "FAIL: generate failed:"; cat "$work/generate.log"; exit 1; }
"$llama_bin/llama-quantize" "$work/f16.gguf" "$work/q4_k_m.gguf" Q4_K_M >"$work/quantize.log" 2>&1 ||
  { echo "FAIL: llama-quantize failed:"; tail -n 20 "$work/quantize.log"; exit 1; }
types=$("$nashprune" inspect "$work/q4_k_m.gguf" | grep '^tensor types:')
[[ $types == *q4_K* ]] || { echo "FAIL: the quantized model has no q4_K tensor ($types)"; exit 1; }

"$nashprune" prune "$work/q4_k_m.gguf" "$work/pruned.gguf" --unit heads --target 0.25 >"$work/prune.log" 2>&1 ||
  { echo "FAIL: prune --unit heads of the Q4_K_M model failed:"; cat "$work/prune.log"; exit 1; }
cat "$work/prune.log"
if grep -qE '^target 25\.0 % of heads: requested 6, removed 6;' "$work/prune.log"; then
  echo "ok: 6 of 24 heads removed"
else
  echo "FAIL: the target of 6 heads was not met"; failed=1
fi
retyped=$(grep -E '^written F16 in place of their quantized type' "$work/prune.log")
staying=$(grep -E '^  stay F16 \(rows not whole blocks of their type\):' "$work/prune.log")
if [[ $retyped =~ attn_output\.weight\ \(q4_K\) && $staying =~ attn_output\.weight\ \([0-9]+\ values\ a\ row\) ]]; then
  echo "ok: the sliced attn_output weights are F16, said aloud"
else
  echo "FAIL: no line naming the q4_K attn_output weights written F16"; failed=1
fi
after=$("$nashprune" inspect "$work/pruned.gguf" | grep '^tensor types:')
[[ $after == *f16* && $after == *q4_K* ]] || { echo "FAIL: the output's types are not q4_K and f16 ($after)"; failed=1; }

head -c 20000 "$text" >"$work/text.txt"
"$llama_bin/llama-perplexity" -m "$work/pruned.gguf" -f "$work/text.txt" -c 128 -b 128 --chunks 4 >"$work/perplexity.log" 2>&1
ppl=$(grep -o 'Final estimate: PPL = [0-9.]*' "$work/perplexity.log" | grep -o '[0-9.]*$')
if [[ $ppl =~ ^[0-9]+\.[0-9]+$ ]]; then
  echo "ok: stock llama.cpp runs the pruned Q4_K_M model, perplexity $ppl (random weights: finite is the check)"
else
  echo "FAIL: no finite perplexity for the pruned model:"; tail -n 10 "$work/perplexity.log"; failed=1
fi
exit $failed
