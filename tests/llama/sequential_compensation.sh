#!/usr/bin/env bash
# `nashprune prune --sequential`: the same plan as the one-pass run; the first map
# the plan changes is compensated with the one-pass moments (nothing before it is
# pruned), every later one with moments measured on the model pruned and
# compensated before it (one pass each, so its expected errors differ); the output
# is a valid model of the same tensors.
# usage: sequential_compensation.sh NASHPRUNE MODEL CALIBRATION_TEXT WORK
set -uo pipefail
nashprune=$1 model=$2 cal=$3 work=$4
for f in "$model" "$cal"; do
  [[ -f $f ]] || { echo "FAIL: $f is missing"; exit 1; }
done
rm -rf "$work" && mkdir -p "$work"
settings=(--game obs --selector exact --structures groups --unit heads --target 0.25 --compensate refit --text "$cal" --tokens 1024 --ctx 128)
"$nashprune" prune "$model" "$work/one_pass.gguf" "${settings[@]}" > "$work/one_pass.log" 2>&1 ||
  { echo "FAIL: the one-pass run failed:"; cat "$work/one_pass.log"; exit 1; }
"$nashprune" prune "$model" "$work/sequential.gguf" "${settings[@]}" --sequential > "$work/sequential.log" 2>&1 ||
  { echo "FAIL: the sequential run failed:"; cat "$work/sequential.log"; exit 1; }
failed=0
plan() { grep -E '^  layer [0-9]+: heads removed' "$1"; }
errors() { grep -E 'attn_output.weight: .* inputs removed' "$1"; }
if [[ "$(plan "$work/one_pass.log")" != "$(plan "$work/sequential.log")" || -z "$(plan "$work/one_pass.log")" ]]; then
  echo "FAIL: the plans differ or are empty:"; plan "$work/one_pass.log"; plan "$work/sequential.log"; failed=1
fi
changed=$(errors "$work/one_pass.log" | wc -l)
passes=$(grep -c 'sequential pass' "$work/sequential.log")
if ((changed < 2 || passes != changed - 1)); then
  echo "FAIL: $changed maps changed, $passes sequential passes (expected one per map after the first)"; failed=1
fi
mapfile -t one < <(errors "$work/one_pass.log")
mapfile -t seq < <(errors "$work/sequential.log")
[[ ${one[0]} == "${seq[0]}" ]] || { echo "FAIL: the first map's compensation differs: '${one[0]}' / '${seq[0]}'"; failed=1; }
for ((i = 1; i < ${#one[@]}; ++i)); do
  [[ ${one[i]} != "${seq[i]}" ]] || { echo "FAIL: map $i kept the one-pass moments: '${one[i]}'"; failed=1; }
done
if ! "$nashprune" inspect "$work/sequential.gguf" > "$work/inspect.log" 2>&1; then
  echo "FAIL: the sequential output does not read back:"; cat "$work/inspect.log"; failed=1
fi
if ! cmp -s <("$nashprune" inspect "$work/one_pass.gguf" 2>&1 | grep -v '^model:') <(grep -v '^model:' "$work/inspect.log"); then
  echo "FAIL: the sequential output's tensors and metadata differ in shape from the one-pass output's"; failed=1
fi
((failed == 0)) && echo "ok: $passes sequential passes, $changed maps compensated"
exit $failed
