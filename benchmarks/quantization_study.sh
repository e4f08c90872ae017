#!/usr/bin/env bash
# Perplexity against file size: uniform ggml types, llama.cpp's own mixed presets,
# and `nashprune quantize-plan` plans at the same file sizes.
#
#   [IMATRIX=1] [DATA_DIR=examples/data] benchmarks/quantization_study.sh TOOL LLAMA_BIN_DIR OUT_DIR [MODELS]
#
# TOOL: the nashprune binary (built with NASHPRUNE_LLAMA_CPP_DIR); LLAMA_BIN_DIR:
# llama-quantize, llama-perplexity; DATA_DIR (default: the bundled examples/data):
# the models and texts. MODELS: a
# space-separated list of stories260K and tiny656K (default both).
# Every file is evaluated with llama-perplexity -c 128 -b 128 on the whole
# tinystories-evaluation.txt (TinyStories-656K: the same text without the 13
# lines holding characters its vocabulary lacks; its tokenizer has no byte
# fallback), output to a file and read from its "Final estimate" line.
# Rows (OUT_DIR/MODEL/table.md, and a plot OUT_DIR/MODEL/curve.svg):
#   uniform T:   llama-quantize --pure (every quantizable tensor T; rows no T
#                block divides fall back as llama-quantize decides);
#   preset P:    llama-quantize P (its own mix), with the types it produced;
#   plan@X:      nashprune quantize-plan --size (the bytes of file X) with the
#                calibration statistics of `nashprune calibrate` on the
#                calibration text, candidate types q4_0 q4_1 q5_0 q5_1 q8_0 f16,
#                written by llama-quantize (--run) and evaluated the same way.
#   measured plan@X: the same with --sensitivity measured (each tensor's cost per
#                type is the loss on SENSITIVITY_TOKENS (default 4096) tokens of the
#                calibration text with that tensor alone quantized; measured once
#                per model, --save-costs, and reused at every size with --costs);
#                MEASURED=0 leaves these rows out, MEASURED=scaled measures
#                --sensitivity scaled instead (the loss at q4_0 only, the other
#                types by the energy errors' ratios; rows "scaled plan at X").
# Neither side uses an importance matrix, so both quantize with the same ggml
# routines and differ only in the type each tensor gets. IMATRIX=1: llama-imatrix
# measures the model on the calibration text (ctx 128), every llama-quantize run
# gets it (--imatrix) and the plans are weighted by it instead of the statistics.
set -euo pipefail

if [[ $# -lt 3 ]]; then
  sed -n '2,/^set -e/p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
tool=$1 bin=$2 out=$3
models=${4:-"stories260K tiny656K"}
data=${DATA_DIR:-$(cd "$(dirname "$0")/../examples/data" && pwd)}
quantize=$bin/llama-quantize
perplexity=$bin/llama-perplexity
for program in "$tool" "$quantize" "$perplexity"; do
  [[ -x $program ]] || { echo "quantization_study: no executable $program" >&2; exit 2; }
done
export OMP_WAIT_POLICY=PASSIVE
mkdir -p "$out"

# The perplexity of a GGUF on the study's text, from the "Final estimate" line of a
# log file in the model's output folder (never beside the input).
evaluate() {
  local model=$1 text=$2 log=$dir/$(basename "$1").ppl.log value=""
  for attempt in 1 2; do
    "$perplexity" -m "$model" -f "$text" -c 128 -b 128 > "$log" 2>&1 || true
    value=$(sed -n 's/.*Final estimate: PPL = \([0-9.]*\) +\/- \([0-9.]*\).*/\1 \2/p' "$log" | tail -n 1)
    [[ -n $value ]] && break
  done
  [[ -n $value ]] || { echo "quantization_study: no Final estimate for $model (see $log)" >&2; exit 1; }
  echo "$value"
}

# "q4_0:35 f32:11 ..." — the tensor types of a GGUF file.
type_histogram() {
  python3 - "$1" <<'PY'
import struct, sys, collections
d = open(sys.argv[1], 'rb').read(); o = 4
def u(fmt):
    global o
    v = struct.unpack_from(fmt, d, o)[0]; o += struct.calcsize(fmt); return v
def s():
    global o
    n = u('<Q'); o += n
sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
def skip(t):
    global o
    if t == 8: s()
    elif t == 9:
        et = u('<I'); n = u('<Q')
        for _ in range(n): skip(et)
    else: o += sizes[t]
u('<I'); nt = u('<Q'); nkv = u('<Q')
for _ in range(nkv):
    s(); skip(u('<I'))
names = {0: 'f32', 1: 'f16', 2: 'q4_0', 3: 'q4_1', 6: 'q5_0', 7: 'q5_1', 8: 'q8_0', 10: 'q2_K', 11: 'q3_K', 12: 'q4_K',
         13: 'q5_K', 14: 'q6_K', 20: 'iq4_nl', 30: 'bf16'}
count = collections.Counter()
for _ in range(nt):
    s(); nd = u('<I'); o += 8 * nd; count[names.get(u('<I'), '?')] += 1; o += 8
print(' '.join(f'{k}:{v}' for k, v in sorted(count.items())))
PY
}

# shellcheck source-path=SCRIPTDIR source=study_models.sh
source "$(dirname "$0")/study_models.sh"

for name in $models; do
  study_model "$name" "$data" "$out" || { echo "quantization_study: unknown model $name" >&2; exit 2; }
  text=$eval_text calibration=$calibration_text requant=""
  [[ $name == tiny656K ]] && requant=--allow-requantize
  dir=$out/$name
  mkdir -p "$dir"
  rows=$dir/rows.tsv
  : > "$rows"
  stats=$dir/calibration.gguf
  [[ -f $stats ]] || "$tool" calibrate "$model" --text "$calibration" --ctx 128 -o "$stats" > "$dir/calibrate.log"
  weighting=(--calibration "$stats") with_imatrix=()
  if [[ ${IMATRIX:-0} == 1 ]]; then
    imatrix=$dir/imatrix.gguf
    [[ -f $imatrix ]] || "$bin/llama-imatrix" -m "$model" -f "$calibration" -c 128 -o "$imatrix" > "$dir/imatrix.log" 2>&1
    weighting=(--imatrix "$imatrix") with_imatrix=(--imatrix "$imatrix")
  fi
  read -r ppl err < <(evaluate "$model" "$text")
  printf 'original\t%s\t%s\t%s\t%s\n' "$(stat -c %s "$model")" "$ppl" "$err" "$(type_histogram "$model")" >> "$rows"
  sizes=()
  for type in q4_0 q4_1 q5_0 q5_1 q8_0 f16; do
    file=$dir/uniform-$type.gguf
    "$quantize" $requant "${with_imatrix[@]}" --pure "$model" "$file" "${type^^}" > "$file.log" 2>&1
    read -r ppl err < <(evaluate "$file" "$text")
    printf 'uniform %s\t%s\t%s\t%s\t%s\n' "$type" "$(stat -c %s "$file")" "$ppl" "$err" "$(type_histogram "$file")" >> "$rows"
    sizes+=("uniform-$type")
  done
  for preset in Q4_0 Q2_K Q3_K_M Q4_K_M Q5_K_M Q6_K; do
    file=$dir/preset-$preset.gguf
    "$quantize" $requant "${with_imatrix[@]}" "$model" "$file" "$preset" > "$file.log" 2>&1 || { echo "preset $preset: llama-quantize failed (see $file.log)" >&2; continue; }
    read -r ppl err < <(evaluate "$file" "$text")
    printf 'preset %s\t%s\t%s\t%s\t%s\n' "$preset" "$(stat -c %s "$file")" "$ppl" "$err" "$(type_histogram "$file")" >> "$rows"
    sizes+=("preset-$preset")
  done
  for reference in "${sizes[@]}"; do
    bytes=$(stat -c %s "$dir/$reference.gguf")
    file=$dir/plan-at-$reference.gguf
    if ! "$tool" quantize-plan "$model" --size "$bytes" "${weighting[@]}" --types q4_0,q4_1,q5_0,q5_1,q8_0,f16 \
         -o "$dir/plan-at-$reference.txt" --run "$file" --llama-bin "$bin" > "$file.plan.log" 2>&1; then
      echo "plan at $reference: $(tail -n 1 "$file.plan.log")" | tee -a "$dir/skipped.txt" >&2
      continue
    fi
    read -r ppl err < <(evaluate "$file" "$text")
    printf 'plan at %s\t%s\t%s\t%s\t%s\n' "$reference" "$(stat -c %s "$file")" "$ppl" "$err" "$(type_histogram "$file")" >> "$rows"
  done
  if [[ ${MEASURED:-1} != 0 ]]; then
    sensitivity=measured kind=measured scaled_weighting=()
    if [[ ${MEASURED:-1} == scaled ]]; then
      sensitivity=scaled kind=scaled scaled_weighting=("${weighting[@]}")
    fi
    costs=$dir/costs-$kind.tsv
    if [[ ! -f $costs ]]; then
      "$tool" quantize-plan "$model" --size "$(stat -c %s "$dir/uniform-f16.gguf")" "${scaled_weighting[@]}" "${with_imatrix[@]}" --sensitivity $sensitivity \
        --text "$calibration" --tokens "${SENSITIVITY_TOKENS:-4096}" --ctx 128 --types q4_0,q4_1,q5_0,q5_1,q8_0,f16 \
        -o "$dir/$kind-measure.txt" --save-costs "$costs" > "$dir/$kind-measure.log" 2>&1
    fi
    for reference in "${sizes[@]}"; do
      bytes=$(stat -c %s "$dir/$reference.gguf")
      file=$dir/$kind-plan-at-$reference.gguf
      if ! "$tool" quantize-plan "$model" --size "$bytes" "${with_imatrix[@]}" --costs "$costs" --types q4_0,q4_1,q5_0,q5_1,q8_0,f16 \
           -o "$dir/$kind-plan-at-$reference.txt" --run "$file" --llama-bin "$bin" > "$file.plan.log" 2>&1; then
        echo "$kind plan at $reference: $(tail -n 1 "$file.plan.log")" | tee -a "$dir/skipped.txt" >&2
        continue
      fi
      read -r ppl err < <(evaluate "$file" "$text")
      printf '%s plan at %s\t%s\t%s\t%s\t%s\n' "$kind" "$reference" "$(stat -c %s "$file")" "$ppl" "$err" "$(type_histogram "$file")" >> "$rows"
    done
  fi
  # The table (each plan beside the file whose size it matches) and the plot.
  python3 - "$rows" "$dir/table.md" "$dir/curve.svg" "$name" <<'PY'
import sys
rows = [line.rstrip('\n').split('\t') for line in open(sys.argv[1]) if line.strip()]
by = {r[0]: r for r in rows}
with open(sys.argv[2], 'w') as t:
    t.write('| file | bytes | perplexity | ± | types | plan at the same size | plan bytes | plan perplexity | change '
            '| measured/scaled plan types | bytes | perplexity | change |\n')
    t.write('|---|---:|---:|---:|---|---|---:|---:|---:|---|---:|---:|---:|\n')
    for r in rows:
        if ' plan at ' in ' ' + r[0]: continue
        key = 'plan at ' + r[0].replace('uniform ', 'uniform-').replace('preset ', 'preset-')
        extra = []
        for p in (by.get(key), by.get('measured ' + key) or by.get('scaled ' + key)):
            if p:
                change = 100.0 * (float(p[2]) / float(r[2]) - 1.0)
                extra += [p[4], p[1], p[2], f'{change:+.2f} %']
            else:
                extra += ['', '', '', '']
        t.write('| ' + ' | '.join(r[:5] + extra) + ' |\n')
# Plain SVG: perplexity against kilobytes, one marker shape per kind.
pts = [(r[0], float(r[1]) / 1024.0, float(r[2])) for r in rows if r[0] != 'original']
xs = [p[1] for p in pts]; ys = [p[2] for p in pts]
x0, x1 = min(xs) * 0.95, max(xs) * 1.05
y0, y1 = min(ys) * 0.98, max(ys) * 1.02
W, H, L, B = 720, 440, 70, 50
X = lambda x: L + (x - x0) / (x1 - x0) * (W - L - 20)
Y = lambda y: H - B - (y - y0) / (y1 - y0) * (H - B - 30)
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       f'<rect width="{W}" height="{H}" fill="white"/>',
       f'<text x="{W/2}" y="18" text-anchor="middle">{sys.argv[4]}: perplexity (ctx 128) against file size</text>',
       f'<line x1="{L}" y1="{H-B}" x2="{W-20}" y2="{H-B}" stroke="black"/>', f'<line x1="{L}" y1="{H-B}" x2="{L}" y2="30" stroke="black"/>']
for i in range(6):
    xv = x0 + (x1 - x0) * i / 5; yv = y0 + (y1 - y0) * i / 5
    svg.append(f'<text x="{X(xv):.1f}" y="{H-B+16}" text-anchor="middle">{xv:.0f}</text>')
    svg.append(f'<text x="{L-6}" y="{Y(yv)+4:.1f}" text-anchor="end">{yv:.3f}</text>')
svg.append(f'<text x="{W/2}" y="{H-12}" text-anchor="middle">file size (KiB)</text>')
colours = {'uniform': '#1f77b4', 'preset': '#2ca02c', 'plan': '#d62728', 'measured': '#9467bd'}
measured = sorted((p for p in pts if p[0].startswith('measured') or p[0].startswith('scaled')), key=lambda p: p[1])
if measured:
    svg.append('<polyline fill="none" stroke="#9467bd" stroke-width="1.5" points="' + ' '.join(f'{X(p[1]):.1f},{Y(p[2]):.1f}' for p in measured) + '"/>')
plan = sorted((p for p in pts if p[0].startswith('plan')), key=lambda p: p[1])
if plan:
    svg.append('<polyline fill="none" stroke="#d62728" stroke-width="1.5" points="' + ' '.join(f'{X(p[1]):.1f},{Y(p[2]):.1f}' for p in plan) + '"/>')
uni = sorted((p for p in pts if p[0].startswith('uniform')), key=lambda p: p[1])
if uni:
    svg.append('<polyline fill="none" stroke="#1f77b4" stroke-dasharray="4 3" points="' + ' '.join(f'{X(p[1]):.1f},{Y(p[2]):.1f}' for p in uni) + '"/>')
for label, x, y in pts:
    kind = label.split()[0].replace('scaled', 'measured')
    c = colours.get(kind, 'black')
    if kind == 'preset':
        svg.append(f'<rect x="{X(x)-4:.1f}" y="{Y(y)-4:.1f}" width="8" height="8" fill="{c}"><title>{label}</title></rect>')
    else:
        svg.append(f'<circle cx="{X(x):.1f}" cy="{Y(y):.1f}" r="4" fill="{c}"><title>{label}</title></circle>')
    if kind not in ('plan', 'measured'):
        svg.append(f'<text x="{X(x)+6:.1f}" y="{Y(y)-6:.1f}" font-size="10">{label.split(" ", 1)[1]}</text>')
for i, (kind, c) in enumerate(colours.items()):
    svg.append(f'<circle cx="{W-150}" cy="{45+16*i}" r="4" fill="{c}"/><text x="{W-140}" y="{49+16*i}">{ {"plan": "nashprune plan", "measured": "plan, measured or scaled sensitivity"}.get(kind, kind) }</text>')
svg.append('</svg>')
open(sys.argv[3], 'w').write('\n'.join(svg) + '\n')
PY
  echo "== $name"; cat "$dir/table.md"
done
