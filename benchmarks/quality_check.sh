#!/usr/bin/env bash
# The CI-sized quality check (ctest llama_quality_check): runs
# benchmarks/quality_study.sh on stories260K at a small size and asserts only
# what is robust:
#   - every model, original and pruned, loads in llama-perplexity and gives a
#     finite perplexity (the study stops otherwise; every row is checked again);
#   - the informed head selections named in ASSERTIONS below, at 25 % and 50 %
#     heads, and block-influence removal of 1 and 2 layers, beat the mean of the
#     random choices by the margin given there; the rows not named are printed.
#
#   [DATA_DIR=examples/data] benchmarks/quality_check.sh TOOL LLAMA_BIN_DIR OUT_DIR [CHUNKS] [CAL_TOKENS]
#   benchmarks/quality_check.sh --table TABLE.md      (check a study's table only)
#
# Defaults: CHUNKS=20 (of 128 tokens) of tinystories-evaluation.txt,
# CAL_TOKENS=4096 of tinystories-calibration.txt, SEEDS=5 random choices (seeds
# 1..5: deterministic), no ablation rows (ABLATION=1 adds them). OUT_DIR
# is emptied first when a previous check made it
# (marker file .quality_check), so stale calibration is never reused; the
# pruned models are deleted at the end (KEEP_MODELS=0). DATA_DIR (default: the
# bundled examples/data) holds the model and the texts; without them the study
# stops, naming the missing file.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

# Margins measured at the default size (perplexity of the original 4.956;
# ratio = method / mean of random seeds 1..5; lower is better). The random
# plans remove as many heads as the informed ones (10 at 25 %, 20 at 50 %), each
# layer cut to a random GQA-consistent shape (whole groups, heads per group or a mix):
#   25 % heads: 0.893 (nash_output, exact_output), 0.901 (activation), 0.966
#               (magnitude); random mean 6.861 ± 0.979. Not asserted because they
#               lose to the random mean at 10 heads: wanda and knapsack_hgsp 1.017,
#               nash and nash_hgsp (the cosine game on wanda scores) 1.135. Thin for
#               magnitude: the assertion is only "beats the random mean".
#   50 % heads: 0.753 (magnitude), 0.754 (nash_output, exact_output), 0.768 (wanda,
#               nash, knapsack_hgsp, nash_hgsp), 0.776 (activation); random mean 11.026
#   1 layer:    0.465; block influence removes layer 2 (12.52); the five single
#               layers give 66.09 (layer 0), 18.61, 12.52, 11.75, 12.73
#   2 layers:   0.362; block influence removes 2,3 (88.65); the ten pairs give
#               29.2 (2,4) .. 946.98 (0,1), median 81, every pair with layer 0 >= 127
# The layer assertions are weak on purpose: block influence's pair 2,3 ranks 6th
# of 10 pairs (adjacent layers interact); it beats the random mean only because
# pairs with layer 0 are catastrophic. Stated, not tuned away.
# Each line: section|method (exact, or the name before " (")|ratio to the random mean at most
ASSERTIONS=(
  "25 % heads|magnitude|1.0"
  "25 % heads|activation|1.0"
  "25 % heads|nash_output|1.0"
  "25 % heads|exact_output|1.0"
  "50 % heads|magnitude|0.95"
  "50 % heads|activation|0.95"
  "50 % heads|wanda|0.95"
  "50 % heads|nash|0.95"
  "50 % heads|knapsack_hgsp|0.95"
  "50 % heads|nash_hgsp|0.95"
  "50 % heads|nash_output|0.95"
  "50 % heads|exact_output|0.95"
  "1 layer(s)|block influence|0.8"
  "2 layer(s)|block influence|0.8"
)

check_table() {  # table.md -> exit status; prints one line per row
  python3 - "$1" "${ASSERTIONS[@]}" <<'PY'
import math, re, sys
rows = []
for line in open(sys.argv[1], encoding="utf-8"):
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if len(cells) != 4 or cells[0] in ("removed", "") or set(cells[0]) <= set("-"):
        continue
    rows.append(cells)
failures = []
def number(text):  # "5.61" or "6.63 ± 0.24" -> 5.61 / 6.63, or None
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)(?: ± [0-9.]+)?", text)
    value = float(match.group(1)) if match else None
    return value if value is not None and math.isfinite(value) and value > 0 else None
if not any(r[1] == "original" for r in rows):
    failures.append("the table has no row for the original model")
for section, method, value, _ in rows:
    if number(value) is None:
        failures.append(f"{section} / {method}: '{value}' is not a finite perplexity")
def find(section, name):
    return [r for r in rows if r[0] == section and (r[1] == name or r[1].startswith(name + " ("))]
checked = set()
for spec in sys.argv[2:]:
    section, name, limit = spec.split("|")
    informed, random = find(section, name), find(section, "random")
    if len(informed) != 1 or len(random) != 1:
        failures.append(f"{section} / {name}: expected one row and one random row, found {len(informed)} and {len(random)}")
        continue
    value, mean = number(informed[0][2]), number(random[0][2])
    if value is None or mean is None:
        continue  # reported above
    ratio = value / mean
    verdict = "ok" if ratio <= float(limit) else "FAIL"
    print(f"{verdict:4} {section:11} {informed[0][1]:32} {value:9.3f} / random mean {mean:9.3f} = {ratio:.3f} (at most {limit})")
    if verdict == "FAIL":
        failures.append(f"{section} / {name}: {value:.3f} is not at most {limit} x the random mean {mean:.3f}")
    checked.add((section, informed[0][1]))
for section, method, value, _ in rows:
    if (section, method) not in checked and not method.startswith("random") and number(value) is not None:
        print(f"info {section:11} {method:32} {value}")
for failure in failures:
    print(f"quality_check.sh: {failure}", file=sys.stderr)
sys.exit(1 if failures else 0)
PY
}

if [[ ${1:-} == --table ]]; then
  (($# == 2)) || { echo "usage: quality_check.sh --table TABLE.md" >&2; exit 2; }
  [[ -f $2 ]] || { echo "quality_check.sh: $2 is missing" >&2; exit 2; }
  check_table "$2"
  exit
fi
(($# >= 3 && $# <= 5)) || {
  echo "usage: [DATA_DIR=examples/data] quality_check.sh TOOL LLAMA_BIN_DIR OUT_DIR [CHUNKS] [CAL_TOKENS] | --table TABLE.md" >&2
  exit 2
}
tool=$1 bin=$2 out=$3 chunks=${4:-20} cal_tokens=${5:-4096}
if [[ -e $out ]]; then
  if [[ -f $out/.quality_check ]]; then
    rm -rf "$out"
  elif [[ -n $(ls -A "$out") ]]; then
    echo "quality_check.sh: $out is not empty and not a previous check's folder: refusing to empty it" >&2
    exit 2
  fi
fi
mkdir -p "$out"
touch "$out/.quality_check"
SEEDS=${SEEDS:-5} KEEP_MODELS=0 ABLATION=${ABLATION:-0} bash "$here/quality_study.sh" "$tool" "$bin" "$out" "$chunks" "$cal_tokens"
[[ -s $out/table.svg ]] || { echo "quality_check.sh: the study wrote no plot $out/table.svg" >&2; exit 1; }
echo
check_table "$out/table.md"
