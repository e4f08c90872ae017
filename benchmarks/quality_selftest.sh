#!/usr/bin/env bash
# The quality scripts can fail, and say why (ctest llama_quality_scripts_fail_clearly):
#   - quality_check.sh --table fails on an informed row worse than the random
#     mean, on a non-finite perplexity and on a missing row, and passes a good table;
#   - quality_study.sh stops with a one-line reason on a missing tool or program,
#     a bad size, a perplexity run without its estimate (retried: 3 attempts) or
#     with a non-finite one, leaving table.incomplete.md (never table.md) and,
#     with KEEP_MODELS=0, none of the run's pruned models; a stub stands in for
#     llama-perplexity, the real tool calibrates on 256 tokens;
#   - quality_check.sh fails naming a missing data file and refuses to empty
#     a folder it did not make.
# usage: [DATA_DIR=examples/data] quality_selftest.sh TOOL WORK_DIR
set -uo pipefail
(($# == 2)) || { echo "usage: [DATA_DIR=examples/data] quality_selftest.sh TOOL WORK_DIR" >&2; exit 2; }
tool=$1 work=$2
here=$(cd "$(dirname "$0")" && pwd)
export DATA_DIR=${DATA_DIR:-$here/../examples/data}
[[ -f $DATA_DIR/stories260K.gguf ]] || { echo "FAIL: $DATA_DIR/stories260K.gguf is missing"; exit 1; }
rm -rf "$work"
mkdir -p "$work"
failed=0
# shellcheck source-path=SCRIPTDIR source=../tests/llama/expect_exit.sh
source "$here/../tests/llama/expect_exit.sh"
check_file() {  # check_file (present|absent) PATH
  if [[ ($1 == present && ! -e $2) || ($1 == absent && -e $2) ]]; then
    echo "FAIL: $2 should be $1"; failed=1
  else
    echo "ok: $2 $1"
  fi
}

# quality_check.sh --table on tables written here.
table() {  # table FILE VALUE_OF_NASH_AT_50
  {
    echo "| removed | method | perplexity | ratio to original |"
    echo "|---|---|---|---|"
    echo "| nothing | original | 5.0 | 1.000 |"
    for method in magnitude activation wanda nash knapsack_hgsp nash_hgsp nash_output exact_output; do
      echo "| 25 % heads | $method | 5.5 | 1.100 |"
      [[ $method == nash && -z $2 ]] || echo "| 50 % heads | $method | ${2:-8.0} | 1.600 |"
    done
    echo "| 25 % heads | random (5 seeds) | 6.500 ± 0.300 | 1.300 |"
    echo "| 50 % heads | random (5 seeds) | 9.500 ± 1.000 | 1.900 |"
    echo "| 1 layer(s) | block influence (layers 2) | 12.0 | 2.400 |"
    echo "| 1 layer(s) | random (5 seeds) | 25.000 ± 20.000 | 5.000 |"
    echo "| 2 layer(s) | block influence (layers 2,3) | 90.0 | 18.000 |"
    echo "| 2 layer(s) | random (5 seeds) | 240.000 ± 300.000 | 48.000 |"
  } > "$1"
}
table "$work/good.md" 8.0
expect 0 "ok   50 % heads  nash" -- bash "$here/quality_check.sh" --table "$work/good.md"
table "$work/worse.md" 9.4
expect 1 "50 % heads / nash: 9.400 is not at most 0.95 x the random mean 9.500" -- \
  bash "$here/quality_check.sh" --table "$work/worse.md"
table "$work/nan.md" nan
expect 1 "50 % heads / magnitude: 'nan' is not a finite perplexity" -- bash "$here/quality_check.sh" --table "$work/nan.md"
table "$work/missing.md" ""
expect 1 "50 % heads / nash: expected one row and one random row, found 0 and 1" -- \
  bash "$here/quality_check.sh" --table "$work/missing.md"

# quality_study.sh --plot: one line per method of the heads rows (8 methods and
# random), well-formed SVG; a table without the original fails.
expect 0 "" -- bash "$here/quality_study.sh" --plot "$work/good.md" "$work/good.svg"
lines=$(python3 -c 'import sys, xml.etree.ElementTree as E
print(len(E.parse(sys.argv[1]).findall(".//{http://www.w3.org/2000/svg}polyline")))' "$work/good.svg" 2>&1)
if [[ $lines == 9 ]]; then echo "ok: 9 lines in the plot"; else echo "FAIL: the plot of good.md: $lines"; failed=1; fi
grep -v '| original |' "$work/good.md" > "$work/no_original.md"
expect 1 "has no row for the original model" -- bash "$here/quality_study.sh" --plot "$work/no_original.md" "$work/no_original.svg"
check_file absent "$work/no_original.svg"

# quality_study.sh against a stub llama-perplexity: the original model gets an
# estimate, a pruned one gets STUB_PPL (none when empty).
stub=$work/bin
mkdir -p "$stub"
cat > "$stub/llama-perplexity" <<'SH'
#!/usr/bin/env bash
echo "$(basename "$2")" >> "$(dirname "$0")/calls"
case $2 in
  */stories260K.gguf) echo "0.01.098.625 I Final estimate: PPL = 5.0000 +/- 0.26308" ;;
  *) [[ -z ${STUB_PPL:-} ]] || echo "0.01.098.625 I Final estimate: PPL = $STUB_PPL +/- 0.26308" ;;
esac
SH
printf '#!/usr/bin/env bash\nexit 1\n' > "$stub/llama-quantize"
chmod +x "$stub/llama-perplexity" "$stub/llama-quantize"
study=(bash "$here/quality_study.sh")
out=$work/study

expect 2 "usage: [SEEDS=5]" -- "${study[@]}" "$tool" "$stub"
expect 1 "the nashprune tool $work/absent is missing" -- "${study[@]}" "$work/absent" "$stub" "$out"
expect 1 "$work/absent/llama-perplexity is missing" -- "${study[@]}" "$tool" "$work/absent" "$out"
expect 1 "$work/absent/stories260K.gguf is missing (DATA_DIR)" -- env DATA_DIR="$work/absent" "${study[@]}" "$tool" "$stub" "$out"
expect 1 "must be positive integers, not 'x'" -- "${study[@]}" "$tool" "$stub" "$out" x
check_file absent "$out/table.incomplete.md"

expect 1 "params, 10 heads)' at '25 % heads'" -- \
  env KEEP_MODELS=0 ABLATION=0 "${study[@]}" "$tool" "$stub" "$out" 2 256
check_file present "$out/stats.gguf"
check_file absent "$out/table.md"
check_file present "$out/table.incomplete.md"
check_file absent "$out/magnitude_0.25.gguf"
attempts=$(grep -c '^magnitude_0.25.gguf$' "$stub/calls")
if ((attempts == 3)); then echo "ok: 3 attempts without an estimate"; else echo "FAIL: $attempts attempts"; failed=1; fi
expect 1 "gave the perplexity 'nan' (not finite)" -- \
  env STUB_PPL=nan KEEP_MODELS=0 ABLATION=0 "${study[@]}" "$tool" "$stub" "$out" 2 256
check_file absent "$out/table.md"

# quality_check.sh: a missing data file, and a folder it did not make.
expect 1 "$work/absent/stories260K.gguf is missing (DATA_DIR)" -- \
  env DATA_DIR="$work/absent" bash "$here/quality_check.sh" "$tool" "$stub" "$work/check"
expect 2 "is not empty and not a previous check's folder" -- \
  bash "$here/quality_check.sh" "$tool" "$stub" "$out"
exit "$failed"
