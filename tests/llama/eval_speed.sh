#!/usr/bin/env bash
# `nashprune eval` with the provisioned llama-bench: both models' prompt-processing
# and generation tokens/s are measured, parsed and printed (positive, finite) with
# the CPU's family and model, in the table and in --json.
# usage: eval_speed.sh NASHPRUNE LLAMA_BIN_DIR MODEL TEXT
set -uo pipefail
nashprune=$1 llama_bin=$2 model=$3 text=$4
run=("$nashprune" eval "$model" "$model" --text "$text" -c 128 --chunks 2 --speed-prompt 32 --speed-gen 8 --speed-reps 2 --llama-bin "$llama_bin")
output=$("${run[@]}" 2>&1) || { echo "FAIL: eval exited $?:"; echo "$output"; exit 1; }
echo "$output"
failed=0
number='[0-9]+\.[0-9]{2}'
row() {
  local re=$'\n'"$1 +$number +$number +$number +$number"$'\n'
  [[ $output =~ $re ]] || { echo "FAIL: no '$1' row of four figures"; failed=1; }
}
row original
row pruned
re='speed with llama-bench -p 32 -n 8 -r 2, [0-9]+ threads, on .*\(cpu family [0-9]+, model [0-9]+\):'
[[ $output =~ $re ]] || { echo "FAIL: no speed header with the CPU's family and model"; failed=1; }
re=$'\n''ratio +[0-9]+\.[0-9]{3} +[0-9]+\.[0-9]{3}  \(pruned / original, same run\)'
[[ $output =~ $re ]] || { echo "FAIL: no ratio row"; failed=1; }
json=$("${run[@]}" --json 2>/dev/null) || { echo "FAIL: eval --json exited $?"; exit 1; }
re_speed='"generation_tokens_per_second": [0-9]' re_cpu='"cpu": ".*cpu family'
[[ $json =~ $re_speed && $json =~ $re_cpu ]] ||
  { echo "FAIL: --json lacks the speed figures:"; echo "$json"; failed=1; }
exit $failed
