#!/usr/bin/env bash
# `nashprune calibrate` through llama.cpp on the generated model: the planted
# duplicate heads (layers 1 and 2: head 1 = head 0, head 5 = head 4) come out as
# cosine > 0.99 pairs, the statistics file is written, and bad input (text
# shorter than one context, an existing output) is refused before any work.
# usage: calibrate_generated.sh NASHPRUNE CALIBRATION-TEXT WORK
set -uo pipefail
nashprune=$1 text=$2 work=$3
[[ -f $text ]] || { echo "SKIP: $text is absent (../shared is not beside the project)"; exit 77; }
mkdir -p "$work"
model=$work/calibrate.generated.gguf
stats=$work/calibrate.generated.stats.gguf
rm -f "$stats"
"$nashprune" generate "$model" --force --layers 5 --seed 7 || exit 1
head -c 40000 "$text" >"$work/calibrate.text.txt"
output=$("$nashprune" calibrate "$model" --text "$work/calibrate.text.txt" --tokens 2048 -o "$stats") || {
  echo "FAIL: calibrate failed: $output"; exit 1; }
echo "$output"
failed=0
for layer in 1 2; do
  line=$(grep "^layer $layer:" <<<"$output")
  for pair in 0-1 4-5; do
    [[ $line == *"cosine > 0.99:"*" $pair"* ]] || { echo "FAIL: layer $layer lacks the planted pair $pair"; failed=1; }
  done
done
[[ -s $stats ]] || { echo "FAIL: no statistics file $stats"; failed=1; }
head -c 50 "$text" >"$work/calibrate.short.txt"
message=$("$nashprune" calibrate "$model" --text "$work/calibrate.short.txt" --ctx 128 -o "$work/short.stats.gguf" 2>&1)
[[ $? -eq 2 && $message == *"fewer than one context"* && ! -e $work/short.stats.gguf ]] ||
  { echo "FAIL: short text not refused: $message"; failed=1; }
message=$("$nashprune" calibrate "$model" --text "$work/calibrate.text.txt" -o "$stats" 2>&1)
[[ $? -eq 2 && $message == *"exists"* ]] || { echo "FAIL: existing output not refused: $message"; failed=1; }
exit $failed
