#!/usr/bin/env bash
# Pruning quality on a real model, measured the way the seed's §8.3 does:
# llama-perplexity of the original and of pruned models on text that
# calibration never saw.
#
#   [SEEDS=5] [DATA_DIR=examples/data] benchmarks/quality_study.sh TOOL LLAMA_BIN_DIR OUT_DIR [CHUNKS|all] [CAL_TOKENS]
#
# TOOL: the nashprune binary (built with NASHPRUNE_LLAMA_CPP_DIR); LLAMA_BIN_DIR:
# llama-perplexity and llama-quantize; DATA_DIR (default: the bundled
# examples/data): holds stories260K.gguf and tinystories-{calibration,evaluation}.txt.
# Perplexity: -c 128 -b 128 on
# the first CHUNKS (default 100; "all": the whole text, 763 chunks, whose
# perplexities resolve differences between plans that 100 chunks do not: the
# paired NLL difference of two plans swings by ±0.03 nats between quarters of
# the text) chunks of the evaluation text, output captured
# to a file (it loses its last lines in a pipe). Rows of OUT_DIR/table.md:
#   heads 25 % / 50 %, each selection applied without compensation (--compensate
#   none; compensation_study.sh and README.md's default-pipeline table measure it):
#   random (mean ± sd over 5 seeds), magnitude (weights),
#   activation (calibration energy), wanda (calibration energy × |W_O|),
#   nash (wanda importance, measured cosine redundancy); the last two with H-GSP
#   priors from the measured block influence (temperature 1): knapsack_hgsp
#   (wanda) and nash_hgsp; the single-score rows run with --temperature 0;
#   nash_output (--game output: one output-perturbation game over all
#   layers, price searched for the target) and exact_output (the same energy
#   minimised exactly: enumeration per layer, allocation by dynamic programming);
#   nash_ablation / exact_ablation / greedy_ablation (`nashprune ablate`: the
#   loss with each head and each pair of heads removed, measured on ABL_TOKENS
#   (default 2048) tokens of the calibration text; `nashprune ablation-plan`:
#   the Nash game over the second-order loss model, --selector greedy; its exact
#   minimum, --selector exact; and the single score δ_i alone, --game none), applied with prune --plan; nash_ablation_iter
#   (`nashprune ablation-prune`: a row per K in ITER_ROUNDS, default 2, each round re-measuring
#   the loss model given the heads chosen so far; a plan OUT_DIR already holds,
#   e.g. from benchmarks/ablation_design.sh, is reused); ABLATION=0 skips them;
#   layers 1 / 2: lowest block influence vs random (5 seeds), both removed with
#   llama-quantize --prune-layers; layers_ablation (`nashprune ablate --units
#   layers`: the loss with each layer and each pair of layers removed, 16 passes
#   on ABL_TOKENS tokens of the calibration text; `nashprune ablation-plan
#   --count k`: for k <= 2 the exact best on that text; layer 0 frozen), applied
#   with prune --plan; ABLATION=0 skips it;
#   gaq_inverse / gaq_proportional / gaq_uniform (the GAQ pipeline: prune
#   --layer-rates with the measured block influence as layer importance, then
#   each layer's GQA groups of least wanda score; the seed's rate range 0.15-0.5
#   at 25 %, 0.15-0.75 with --max-prune 0.75 at 50 %, where 0.5 would force every
#   layer to the same rate; GAQ_ALPHAS="3 ..." adds inverse and proportional
#   rows at those contrasts);
#   gaq_mlp_inverse / gaq_mlp_proportional / gaq_mlp_uniform (the GAQ pipeline
#   with the seed's --prune_mlp: --layer-rates --unit params --target 0.2
#   --structures groups,mlp, the rates scaled until each layer's GQA groups and
#   MLP channels of least wanda score at that layer's rate remove 20 % of the
#   parameters; rows "+ none" and "+ refit" without and with the refit of
#   attn_output / ffn_down, beside README.md's 20 %-of-parameters rows);
#   gaq_heads_mlp_inverse / _proportional / _uniform: the same with --structures
#   heads,mlp (the same query heads from every group, K and V kept);
#   depth 25 % / 50 %: prune --depth-preset 25|50 --depth-selection
#   any|contiguous, layers of least block influence (layer 0 kept).
# Every heads and depth row names the heads and the share of parameters it removed.
# ROWS="wanda nash gaq_inverse ..." runs only the rows named (the original
# always): the names above, random, layers (block influence and random layers),
# depth; no ablation row named skips the ablation measurement too.
# A missing program or file, a model llama-perplexity cannot load or that gives
# no finite perplexity, stop the script with a one-line reason; the rows
# measured so far are then left in OUT_DIR/table.incomplete.md (table.md exists
# only after a complete run). KEEP_MODELS=0 deletes the pruned models of the
# run when it ends (benchmarks/quality_check.sh, the CI-sized check, does).
# Also writes OUT_DIR/table.svg: perplexity against the fraction of heads
# removed, one line per method (random: mean with ± sd bars), from table.md.
#   benchmarks/quality_study.sh --plot TABLE.md OUT.svg   (plots a table alone)
set -euo pipefail

plot_table() {  # TABLE.md OUT.svg
  python3 - "$1" "$2" <<'PY'
import html, math, os, re, sys
lines = open(sys.argv[1], encoding="utf-8").read().splitlines()
rows = []
for line in lines:
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if line.startswith("|") and len(cells) == 4 and cells[0] not in ("removed",) and not set(cells[0]) <= set("-"):
        rows.append(cells)
def value(text):  # "5.312" or "5.418 ± 0.330" -> (5.312, None) / (5.418, 0.330)
    m = re.fullmatch(r"([0-9.]+)(?: ± ([0-9.]+))?", text)
    if not m:
        sys.exit(f"quality_study.sh --plot: '{text}' is not a perplexity")
    return float(m.group(1)), float(m.group(2)) if m.group(2) else None
base = [value(r[2])[0] for r in rows if r[1] == "original"]
if not base:
    sys.exit(f"quality_study.sh --plot: {sys.argv[1]} has no row for the original model")
lines_by_method, counts = {}, {}
for section, method, text, _ in rows:
    m = re.fullmatch(r"(\d+) % heads", section)
    if not m:
        continue  # layer rows: a different unit
    fraction = int(m.group(1)) / 100
    name = method.split(" (")[0]
    heads = re.search(r"(\d+) heads\)", method)
    counts.setdefault(fraction, set()).add(heads.group(1) if heads else "?")
    lines_by_method.setdefault(name, [(0.0, base[0], None)]).append((fraction, *value(text)))
if not lines_by_method:
    sys.exit(f"quality_study.sh --plot: {sys.argv[1]} has no rows of heads removed")

width, height, left, top, plot_w, plot_h = 820, 460, 64, 40, 500, 360
xmax = max(f for points in lines_by_method.values() for f, _, _ in points)
ys = [v + (sd or 0) for points in lines_by_method.values() for _, v, sd in points]
ys += [v - (sd or 0) for points in lines_by_method.values() for _, v, sd in points]
raw_step = (max(ys) - min(ys)) / 6 or 1
step = min((s * 10 ** math.floor(math.log10(raw_step)) for s in (1, 2, 5, 10)), key=lambda s: abs(s - raw_step))
ylo, yhi = math.floor(min(ys) / step) * step, math.ceil(max(ys) / step) * step
X = lambda f: left + plot_w * f / xmax
Y = lambda v: top + plot_h * (yhi - v) / (yhi - ylo)
palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf", "#393b79", "#637939", "#843c39"]
out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
       '<rect width="100%" height="100%" fill="#ffffff"/>',
       f'<text x="{left}" y="18" font-size="13">Perplexity against the fraction of heads removed</text>',
       f'<text x="{left}" y="33" fill="#555" font-size="11">{html.escape(lines[0] if lines and not lines[0].startswith("|") else "")}</text>']
tick, k = ylo, 0
while tick <= yhi + step / 2:
    out.append(f'<line x1="{left}" y1="{Y(tick):.1f}" x2="{left + plot_w}" y2="{Y(tick):.1f}" stroke="#e5e5e5"/>')
    out.append(f'<text x="{left - 6}" y="{Y(tick) + 4:.1f}" text-anchor="end">{tick:.{max(0, -math.floor(math.log10(step)))}f}</text>')
    k += 1; tick = ylo + k * step
for f in sorted({0.0, *counts}):
    label = f"{f * 100:.0f} %" + (f" ({next(iter(counts[f]))} heads)" if f in counts and len(counts[f]) == 1 and "?" not in counts[f] else "")
    out.append(f'<line x1="{X(f):.1f}" y1="{top}" x2="{X(f):.1f}" y2="{top + plot_h}" stroke="#e5e5e5"/>')
    out.append(f'<text x="{X(f):.1f}" y="{top + plot_h + 16}" text-anchor="middle">{html.escape(label)}</text>')
out.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#888"/>')
out.append(f'<text x="{left + plot_w / 2}" y="{height - 8}" text-anchor="middle">heads removed</text>')
out.append(f'<text transform="translate(16 {top + plot_h / 2}) rotate(-90)" text-anchor="middle">perplexity</text>')
for i, (name, points) in enumerate(lines_by_method.items()):
    random = name == "random"
    colour = "#7f7f7f" if random else palette[i % len(palette)]
    points.sort()
    dash = ' stroke-dasharray="5 4"' if random else ""
    coords = " ".join(f"{X(f):.1f},{Y(v):.1f}" for f, v, _ in points)
    out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.8"{dash} points="{coords}"><title>{html.escape(name)}</title></polyline>')
    for f, v, sd in points:
        if sd:
            out.append(f'<line x1="{X(f):.1f}" y1="{Y(v - sd):.1f}" x2="{X(f):.1f}" y2="{Y(v + sd):.1f}" stroke="{colour}"/>')
        out.append(f'<circle cx="{X(f):.1f}" cy="{Y(v):.1f}" r="3" fill="{colour}"><title>{html.escape(name)}: {v:g}{f" ± {sd:g}" if sd else ""}</title></circle>')
    ly = top + 8 + 18 * i
    out.append(f'<line x1="{left + plot_w + 16}" y1="{ly}" x2="{left + plot_w + 40}" y2="{ly}" stroke="{colour}" stroke-width="1.8"{dash}/>')
    out.append(f'<text x="{left + plot_w + 46}" y="{ly + 4}">{html.escape(name + (" (mean ± sd)" if random else ""))}</text>')
out.append("</svg>")
partial = sys.argv[2] + ".partial"
with open(partial, "w", encoding="utf-8") as f:
    f.write("\n".join(out) + "\n")
os.replace(partial, sys.argv[2])
PY
}
if [[ ${1:-} == --plot ]]; then
  (($# == 3)) || { echo "usage: quality_study.sh --plot TABLE.md OUT.svg" >&2; exit 2; }
  [[ -f $2 ]] || { echo "quality_study.sh: $2 is missing" >&2; exit 2; }
  plot_table "$2" "$3"
  exit
fi

usage="usage: [SEEDS=5] [KEEP_MODELS=1] [DATA_DIR=examples/data] quality_study.sh TOOL LLAMA_BIN_DIR OUT_DIR [CHUNKS|all] [CAL_TOKENS]"
(($# >= 3 && $# <= 5)) || { echo "$usage" >&2; exit 2; }
tool=$1; bin=$2; out=$3; chunks=${4:-100}; cal_tokens=${5:-16384}; seeds=${SEEDS:-5}
data=${DATA_DIR:-$(cd "$(dirname "$0")/../examples/data" && pwd)}
model=$data/stories260K.gguf
cal=$data/tinystories-calibration.txt
eval_text=$data/tinystories-evaluation.txt
fail() { echo "quality_study.sh: $*" >&2; exit 1; }
trap 'echo "quality_study.sh: line $LINENO: \"$BASH_COMMAND\" failed" >&2' ERR
[[ -x $tool && ! -d $tool ]] || fail "the nashprune tool $tool is missing or not executable"
"$tool" calibrate --help > /dev/null 2>&1 || fail "$tool has no 'calibrate' command (build it with NASHPRUNE_LLAMA_CPP_DIR)"
for program in llama-perplexity llama-quantize; do
  [[ -x $bin/$program ]] || fail "$bin/$program is missing or not executable (LLAMA_BIN_DIR)"
done
for file in "$model" "$cal" "$eval_text"; do [[ -f $file ]] || fail "$file is missing (DATA_DIR)"; done
command -v python3 > /dev/null || fail "python3 is needed (random plans, means, ratios)"
chunk_option=(--chunks "$chunks")
[[ $chunks == all ]] && chunk_option=()
for number in $([[ $chunks == all ]] || echo "$chunks") "$cal_tokens" "$seeds"; do
  [[ $number =~ ^[1-9][0-9]*$ ]] || fail "CHUNKS (or all), CAL_TOKENS and SEEDS must be positive integers, not '$number'"
done
mkdir -p "$out"
rm -f "$out/table.md" "$out/table.incomplete.md"
run_stamp=$(mktemp "$out/.run.XXXXXX")  # what this run wrote is newer
finish() {
  local status=$?
  if ((status != 0)) && [[ -f $out/table.md ]]; then
    mv -f "$out/table.md" "$out/table.incomplete.md"
    echo "quality_study.sh: failed; the rows measured so far are in $out/table.incomplete.md" >&2
  fi
  if [[ ${KEEP_MODELS:-1} == 0 ]]; then
    find "$out" -maxdepth 1 -name '*.gguf' ! -name stats.gguf -newer "$run_stamp" -delete
  fi
  rm -f "$run_stamp"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ppl() {  # model -> perplexity; a run that ends without its estimate (it happens
         # on a heavily loaded machine) is retried twice, then the script fails
  local log=$out/$(basename "$1" .gguf).ppl.log
  for _ in 1 2 3; do
    OMP_WAIT_POLICY=PASSIVE "$bin/llama-perplexity" -m "$1" -f "$eval_text" -c 128 -b 128 "${chunk_option[@]}" -t 2 > "$log" 2>&1 || true
    if grep -q 'Final estimate: PPL = ' "$log"; then
      local value
      value=$(grep -o 'Final estimate: PPL = [^ ]*' "$log" | awk '{print $5}')
      if [[ ! $value =~ ^[0-9]+(\.[0-9]+)?$ ]]; then  # nan or inf: deterministic, no retry
        echo "quality_study.sh: llama-perplexity gave the perplexity '$value' (not finite) for $1 (see $log)" >&2
        return 1
      fi
      echo "$value"
      return 0
    fi
  done
  echo "quality_study.sh: llama-perplexity gave no estimate for $1 (see $log)" >&2
  return 1
}
mean_sd() { python3 -c 'import statistics as s,sys; v=[float(x) for x in sys.argv[1:]]; print(f"{s.mean(v):.3f} ± {s.stdev(v) if len(v) > 1 else 0:.3f}")' "$@"; }

# Calibration is reused when OUT_DIR already holds it for the same number of
# tokens (it takes minutes on 2 cores).
if [[ ! -f $out/stats.gguf || ! -f $out/calibrate.log ]] ||
   ! grep -q " on $cal_tokens tokens of " "$out/calibrate.log"; then
  "$tool" calibrate "$model" --text "$cal" --tokens "$cal_tokens" --ctx 128 -o "$out/stats.gguf" --force > "$out/calibrate.log"
fi
"$tool" prune "$model" --dry-run --unit heads --target 0 --plan-out "$out/full_plan.json" > /dev/null

# ABLATION=0 leaves the ablation rows out (1 + n + n(n-1)/2 forward passes: 821
# on stories260K, minutes on 2 cores; the CI-sized check skips them).
ablation=${ABLATION:-1}
wanted() { [[ -z ${ROWS:-} || " $ROWS " == *" $1 "* ]]; }
[[ -n ${ROWS:-} && $ROWS != *ablation* ]] && ablation=0
if ((ablation)) && [[ ! -f $out/ablation.json ]]; then
  "$tool" ablate "$model" --text "$cal" --tokens "${ABL_TOKENS:-2048}" --ctx 128 --pairs all --threads 1 -o "$out/ablation.json" --force > "$out/ablate.log"
fi

base=$(ppl "$model")
{
  echo "stories260K, llama-perplexity -c 128 -b 128 ${chunk_option[*]:-(every chunk)} on tinystories-evaluation.txt;"
  echo "calibration: $cal_tokens tokens of tinystories-calibration.txt."
  echo
  echo "| removed | method | perplexity | ratio to original |"
  echo "|---|---|---|---|"
  echo "| nothing | original | $base | 1.000 |"
} > "$out/table.md"
row() {  # removed, method, perplexity (a command substitution's failure does not stop the script: check here)
  [[ ${3%% *} =~ ^[0-9]+(\.[0-9]+)?$ ]] || fail "no finite perplexity for '$2' at '$1' (see the message above)"
  echo "| $1 | $2 | $3 | $(python3 -c "print(f'{float(\"${3%% *}\")/$base:.3f}')") |" >> "$out/table.md"
}

heads_in() {  # MODEL -> total query heads over its layers (nashprune inspect's layer table)
  "$tool" inspect "$1" | awk '$1 ~ /^[0-9]+$/ && NF == 6 {sum += $2} END {print sum + 0}'
}
all_heads=$(heads_in "$model")
parameters_in() {  # MODEL -> its parameters (nashprune inspect's total line)
  "$tool" inspect "$1" | awk '/^parameters:/ {print $2}'
}
all_parameters=$(parameters_in "$model")
removed() {  # MODEL -> "P % params, N heads": what it lost against the original
  python3 -c "import sys; print(f'{100 * (1 - int(sys.argv[1]) / int(sys.argv[2])):.1f} % params, {sys.argv[3]} heads')" \
    "$(parameters_in "$1")" "$all_parameters" "$((all_heads - $(heads_in "$1")))"
}

for target in 0.25 0.5; do
  label="$(python3 -c "print(int($target*100))") % heads"
  for spec in "magnitude:--score magnitude --game none" \
              "activation:--score activation --game none --calibration $out/stats.gguf --temperature 0" \
              "wanda:--score wanda --game none --calibration $out/stats.gguf --temperature 0" \
              "nash:--score wanda --game cosine --calibration $out/stats.gguf --temperature 0" \
              "knapsack_hgsp:--score wanda --game none --calibration $out/stats.gguf --temperature 1" \
              "nash_hgsp:--score wanda --game cosine --calibration $out/stats.gguf --temperature 1" \
              "nash_output:--game output --selector greedy --calibration $out/stats.gguf --temperature 0" \
              "exact_output:--game output --selector exact --calibration $out/stats.gguf --temperature 0"; do
    name=${spec%%:*}
    wanted "$name" || continue
    # shellcheck disable=SC2086
    "$tool" prune "$model" "$out/${name}_$target.gguf" --unit heads --target "$target" ${spec#*:} --compensate none --force > "$out/${name}_$target.log"
    # The method cell names how many heads went: the counts differ when a budget
    # cannot be met exactly (GQA steps), and a comparison is only fair at equal counts.
    row "$label" "$name ($(removed "$out/${name}_$target.gguf"))" "$(ppl "$out/${name}_$target.gguf")"
  done
  for spec in inverse:1 proportional:1 uniform:1 $(for a in ${GAQ_ALPHAS:-}; do echo "inverse:$a proportional:$a"; done); do
    IFS=: read -r strategy alpha <<< "$spec"
    wanted "gaq_$strategy" || continue
    name=gaq_$strategy$([[ $alpha == 1 ]] || echo "_alpha$alpha")
    caps=()
    [[ $target == 0.5 ]] && caps=(--max-rate 0.75 --max-prune 0.75)
    "$tool" prune "$model" "$out/${name}_$target.gguf" --unit heads --target "$target" --structures groups --layer-rates "$strategy" \
      --alpha "$alpha" --score wanda --calibration "$out/stats.gguf" "${caps[@]}" --compensate none --force > "$out/${name}_$target.log"
    row "$label" "$name ($(removed "$out/${name}_$target.gguf"))" "$(ppl "$out/${name}_$target.gguf")"
  done
  for spec in $( ((ablation)) && echo nash:ablation:greedy exact:ablation:exact greedy:none:exact); do
    IFS=: read -r method game selector <<< "$spec"
    name=${method}_ablation
    wanted "$name" || continue
    "$tool" ablation-plan "$model" --ablation "$out/ablation.json" --game "$game" --selector "$selector" --target "$target" \
      --plan-out "$out/${name}_$target.json" > "$out/${name}_$target.log"
    "$tool" prune "$model" "$out/${name}_$target.gguf" --plan "$out/${name}_$target.json" --force >> "$out/${name}_$target.log"
    row "$label" "$name ($((all_heads - $(heads_in "$out/${name}_$target.gguf"))) heads)" "$(ppl "$out/${name}_$target.gguf")"
  done
  # Iterative ablation (nashprune ablation-prune): a row per number of rounds in
  # ITER_ROUNDS (default 2), round 1 the whole model's ablation.json, each later
  # round the loss model re-measured (same tokens, all pairs) given the heads chosen so far.
  for rounds in $( ((ablation)) && echo "${ITER_ROUNDS:-2}"); do
    name=nash_ablation_iter${rounds}
    wanted nash_ablation_iter || continue
    # A plan already in OUT_DIR (benchmarks/ablation_design.sh writes the same) is reused.
    [[ -f $out/${name}_$target.json ]] || nice -n 15 "$tool" ablation-prune "$model" --text "$cal" --tokens "${ABL_TOKENS:-2048}" --ctx 128 --pairs all \
      --threads 1 --first "$out/ablation.json" --target "$target" --rounds "$rounds" --plan-out "$out/${name}_$target.json" > "$out/${name}_$target.log"
    "$tool" prune "$model" "$out/${name}_$target.gguf" --plan "$out/${name}_$target.json" --force > "$out/${name}_$target.prune.log"
    row "$label" "$name ($rounds rounds, $((all_heads - $(heads_in "$out/${name}_$target.gguf"))) heads)" "$(ppl "$out/${name}_$target.gguf")"
  done
  wanted random || continue
  values=()
  for seed in $(seq "$seeds"); do
    python3 - "$out/full_plan.json" "$out/random_${target}_${seed}.json" "$target" "$seed" <<'PY'
import itertools, json, math, random, sys
# Random choice under the same constraint as the tool: each layer keeps k of its
# KV groups with the same number m of query heads each (llama.cpp needs an integer
# Q:KV ratio), losing at most floor(0.7 n) of its n heads (--max-prune); as many
# heads as the informed methods remove: floor(target x heads) when some plan
# reaches it, else the most below (the tool's exact head counts). A random
# allocation of counts over the layers among those removing that many, then per
# layer a random shape of that count and random groups and heads.
plan = json.load(open(sys.argv[1])); target = float(sys.argv[3]); rng = random.Random(int(sys.argv[4]))
layers = plan["layers"]
total = sum(len(l["q_heads"]) for l in layers)
def shapes(l):
    n, G = len(l["q_heads"]), len(l["kv_heads"]); g = n // G
    return [(k, m) for k in range(1, G + 1) for m in range(1, g + 1) if n - k * m <= math.floor(0.7 * n + 1e-9)]
counts = [sorted({len(l["q_heads"]) - k * m for k, m in shapes(l)}) for l in layers]
requested = math.floor(target * total + 1e-9)
combos = [c for c in itertools.product(*counts) if sum(c) <= requested]
best = max(sum(c) for c in combos)
chosen = rng.choice([c for c in combos if sum(c) == best])
for l, count in zip(layers, chosen):
    n, G = len(l["q_heads"]), len(l["kv_heads"]); g = n // G
    k, m = rng.choice([(k, m) for k, m in shapes(l) if n - k * m == count])
    kept = []
    for kv in sorted(rng.sample(range(G), k)):
        kept += sorted(rng.sample(range(kv * g, (kv + 1) * g), m))
    l["q_heads"] = sorted(kept)
    l["kv_heads"] = sorted({h // g for h in kept})
json.dump(plan, open(sys.argv[2], "w"))
PY
    "$tool" prune "$model" "$out/random_${target}_$seed.gguf" --plan "$out/random_${target}_${seed}.json" --force > /dev/null
    values+=("$(ppl "$out/random_${target}_$seed.gguf")")
    random_removed=$((all_heads - $(heads_in "$out/random_${target}_$seed.gguf")))
  done
  row "$label" "random ($seeds seeds, $random_removed heads)" "$(mean_sd "${values[@]}")"
done

for spec in gaq_mlp:groups,mlp gaq_heads_mlp:heads,mlp; do
  IFS=: read -r prefix structures <<< "$spec"
  for strategy in inverse proportional uniform; do
    wanted "${prefix}_$strategy" || continue
    for compensate in none refit; do
      name=${prefix}_${strategy}_$compensate
      "$tool" prune "$model" "$out/$name.gguf" --unit params --target 0.2 --structures "$structures" --layer-rates "$strategy" --score wanda \
        --calibration "$out/stats.gguf" --compensate "$compensate" --force > "$out/$name.log"
      row "20 % params" "${prefix}_$strategy + $compensate ($(removed "$out/$name.gguf"))" "$(ppl "$out/$name.gguf")"
    done
  done
done

n_layer=$(python3 -c "import json; print(len(json.load(open('$out/full_plan.json'))['layers']))")
order=$(grep -o 'layer [0-9]*: block influence .*, layer [0-9.e-]*' "$out/calibrate.log" |
        awk '{print $NF, $2}' | tr -d ':' | sort -g | awk '{print $2}')
[[ $(grep -c . <<< "$order") -eq $n_layer ]] ||
  fail "$out/calibrate.log does not give the block influence of each of the $n_layer layers"
for k in $(wanted layers && echo 1 2); do
  chosen=$(head -n "$k" <<< "$order" | sort -n | paste -sd,)  # a here-string: no SIGPIPE under pipefail
  "$bin/llama-quantize" --prune-layers "$chosen" "$model" "$out/bi_$k.gguf" COPY > "$out/bi_$k.log" 2>&1
  row "$k layer(s)" "block influence (layers $chosen)" "$(ppl "$out/bi_$k.gguf")"
  values=()
  for seed in $(seq "$seeds"); do
    layers=$(python3 -c "import random; r=random.Random($seed); print(','.join(map(str, sorted(r.sample(range($n_layer), $k)))))")
    "$bin/llama-quantize" --prune-layers "$layers" "$model" "$out/rl_${k}_$seed.gguf" COPY > "$out/rl_${k}_$seed.log" 2>&1
    values+=("$(ppl "$out/rl_${k}_$seed.gguf")")
  done
  row "$k layer(s)" "random ($seeds seeds)" "$(mean_sd "${values[@]}")"
done

# Layers chosen by their measured loss (ablation of whole layers).
if ((ablation)) && wanted layers_ablation; then
  if [[ ! -f $out/layer_ablation.json ]]; then
    "$tool" ablate "$model" --text "$cal" --tokens "${ABL_TOKENS:-2048}" --ctx 128 --pairs all --units layers --threads 1 \
      -o "$out/layer_ablation.json" --force > "$out/layer_ablate.log"
  fi
  for k in 1 2; do
    name=layers_ablation_$k
    "$tool" ablation-plan "$model" --ablation "$out/layer_ablation.json" --count "$k" --plan-out "$out/$name.json" > "$out/$name.log"
    "$tool" prune "$model" "$out/$name.gguf" --plan "$out/$name.json" --force >> "$out/$name.log"
    chosen=$(sed -n 's/.*layers \[\([0-9 ]*\)\].*/\1/p' "$out/$name.log" | tr ' ' ,)
    row "$k layer(s)" "layers_ablation (layers $chosen)" "$(ppl "$out/$name.gguf")"
  done
fi
# The depth presets (DenseCore): floor(25 %) or floor(50 %) of the layers, those of least block influence.
for preset in $(wanted depth && echo 25 50); do
  for selection in any contiguous; do
    name=depth_${preset}_$selection
    "$tool" prune "$model" "$out/$name.gguf" --depth-preset "$preset" --depth-selection "$selection" --calibration "$out/stats.gguf" \
      --compensate none --force > "$out/$name.log"
    chosen=$(sed -n 's/.*removes layers \([0-9 ]*\) of .*/\1/p' "$out/$name.log" | tr ' ' ,)
    row "depth $preset %" "depth_$selection (layers $chosen, $(removed "$out/$name.gguf"))" "$(ppl "$out/$name.gguf")"
  done
done
cat "$out/table.md"
if grep -q '^| [0-9]* % heads |' "$out/table.md"; then  # ROWS may leave no heads row to plot
  plot_table "$out/table.md" "$out/table.svg"
  echo "plot: $out/table.svg"
fi
