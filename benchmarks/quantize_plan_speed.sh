#!/usr/bin/env bash
# quantize-plan's time on an 8B-shaped model against one llama-quantize run of the
# same model: `nashprune generate` writes 2 layers of Llama-3-8B's shapes (n_embd
# 4096, 32 query heads over 8 KV heads, n_ff 14336; F32 weights, 436 M parameters),
# quantize-plan plans every tensor over 6 candidate types (q4_0 q4_1 q5_0 q5_1 q8_0
# f16, the default --sample-weights), and llama-quantize writes it once as Q4_0.
# Both are timed with /usr/bin/time; the ratio is of CPU time (user + sys), which a
# loaded machine disturbs less than wall time (both are printed, with the load).
#
#   benchmarks/quantize_plan_speed.sh TOOL LLAMA_BIN_DIR OUT_DIR
set -euo pipefail
(($# == 3)) || { echo "usage: quantize_plan_speed.sh TOOL LLAMA_BIN_DIR OUT_DIR" >&2; exit 2; }
tool=$1; bin=$2; out=$3
fail() { echo "quantize_plan_speed.sh: $*" >&2; exit 1; }
[[ -x $tool && ! -d $tool ]] || fail "the nashprune tool $tool is missing or not executable"
[[ -x $bin/llama-quantize ]] || fail "$bin/llama-quantize is missing or not executable (LLAMA_BIN_DIR)"
[[ -x /usr/bin/time ]] || fail "/usr/bin/time is needed (CPU time of each run)"
mkdir -p "$out"
model=$out/8b-shaped-2-layers.gguf
[[ -f $model ]] || "$tool" generate "$model" --layers 2 --embd 4096 --heads 32 --kv-heads 8 --ffn 14336 > "$out/generate.log"
cpu=$(awk -F': ' '/^model name/ {name=$2} /^cpu family/ {family=$2} /^model\t/ {model=$2} END {print name ", cpu family " family " model " model}' /proc/cpuinfo)
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
/usr/bin/time -f '%U %S %e' -o "$out/plan.time" \
  "$tool" quantize-plan "$model" --bpw 5 --types q4_0,q4_1,q5_0,q5_1,q8_0,f16 -o "$out/tensor-types.txt" > "$out/plan.log"
/usr/bin/time -f '%U %S %e' -o "$out/quantize.time" \
  "$bin/llama-quantize" "$model" "$out/q4_0.gguf" Q4_0 > "$out/quantize.log" 2>&1
rm -f "$out/q4_0.gguf"
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
read -r plan_user plan_sys plan_wall < "$out/plan.time"
read -r quant_user quant_sys quant_wall < "$out/quantize.time"
python3 - "$plan_user" "$plan_sys" "$plan_wall" "$quant_user" "$quant_sys" "$quant_wall" <<'PY'
import sys
pu, ps, pw, qu, qs, qw = map(float, sys.argv[1:])
print(f"quantize-plan (6 types): CPU {pu + ps:.1f} s (user {pu:.1f}, sys {ps:.1f}), wall {pw:.1f} s")
print(f"llama-quantize Q4_0:     CPU {qu + qs:.1f} s (user {qu:.1f}, sys {qs:.1f}), wall {qw:.1f} s")
print(f"ratio plan / quantize:   CPU {(pu + ps) / (qu + qs):.2f}, wall {pw / qw:.2f}")
PY
echo "CPU: $cpu; load average before $load_before, after $load_after"
