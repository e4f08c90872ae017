#!/usr/bin/env bash
# `nashprune prune MODEL OUT --text CAL --eval-text EVAL`: calibrates in the
# process, prunes with the recommended pipeline, and llama-perplexity runs the
# output and gives a finite perplexity; the output equals, byte for byte, what
# `nashprune calibrate` and `nashprune prune --calibration` write with the same
# settings; misuse exits 2 naming the option.
# usage: one_command_prune.sh NASHPRUNE MODEL CALIBRATION_TEXT EVALUATION_TEXT WORK
set -uo pipefail
nashprune=$1 model=$2 cal=$3 eval_text=$4 work=$5
here=$(cd "$(dirname "$0")" && pwd)
for f in "$model" "$cal" "$eval_text"; do
  [[ -f $f ]] || { echo "FAIL: $f is missing"; exit 1; }
done
rm -rf "$work" && mkdir -p "$work"
failed=0
# The calibration studies' context; fewer tokens than their 16384, for time.
settings=(--unit heads --target 0.25 --tokens 4096 --ctx 128)

if ! "$nashprune" prune "$model" "$work/one.gguf" "${settings[@]}" --text "$cal" --eval-text "$eval_text" > "$work/one.log" 2>&1; then
  echo "FAIL: the one-command pipeline failed:"; cat "$work/one.log"; exit 1
fi
for pattern in "calibrated on 4096 tokens" "pipeline: output game + refit (recommended)" "wrote $work/one.gguf"; do
  grep -qF "$pattern" "$work/one.log" || { echo "FAIL: no '$pattern' in:"; cat "$work/one.log"; failed=1; }
done
ratio=$(awk '$1 == "ratio" { print $2 }' "$work/one.log")
pruned=$(awk '$1 == "pruned" { print $2 }' "$work/one.log")
if [[ ! $ratio =~ ^[0-9]+\.[0-9]+$ || ! $pruned =~ ^[0-9]+\.[0-9]+$ ]]; then
  echo "FAIL: no finite perplexity and ratio in:"; cat "$work/one.log"; failed=1
else
  echo "ok: pruned perplexity $pruned, ratio $ratio"
fi

"$nashprune" calibrate "$model" --text "$cal" --tokens 4096 --ctx 128 -o "$work/stats.gguf" > "$work/calibrate.log" 2>&1 &&
  "$nashprune" prune "$model" "$work/two.gguf" "${settings[@]}" --calibration "$work/stats.gguf" > "$work/two.log" 2>&1 ||
  { echo "FAIL: the two-step pipeline failed:"; cat "$work/calibrate.log" "$work/two.log"; exit 1; }
if cmp "$work/one.gguf" "$work/two.gguf"; then
  echo "ok: the one command and calibrate + prune --calibration write the same bytes"
else
  failed=1
fi

# shellcheck source-path=SCRIPTDIR source=expect_exit.sh
source "$here/expect_exit.sh"
expect 2 "--text and --calibration both give the calibration" -- \
  "$nashprune" prune "$model" "$work/x.gguf" --text "$cal" --calibration "$work/stats.gguf"
expect 2 "--text '$work/absent.txt' is not a readable file" -- "$nashprune" prune "$model" "$work/x.gguf" --text "$work/absent.txt"
expect 2 "--eval-text '$work/absent.txt' is not a readable file" -- "$nashprune" prune "$model" "$work/x.gguf" --eval-text "$work/absent.txt"
expect 2 "--eval-text measures the written model: drop --dry-run" -- "$nashprune" prune "$model" --dry-run --eval-text "$eval_text"
expect 2 "--tokens must be >= 0" -- "$nashprune" prune "$model" "$work/x.gguf" --text "$cal" --tokens -1
[[ ! -e $work/x.gguf ]] || { echo "FAIL: a refused command wrote $work/x.gguf"; failed=1; }
exit $failed
