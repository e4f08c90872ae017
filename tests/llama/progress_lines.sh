#!/usr/bin/env bash
# Progress of the long stages, calibrate, ablate and eval's perplexities: on a
# terminal (a pseudo-terminal from util-linux's `script`) a bar with the
# percentage and the time left ("ETA m:ss"), redrawn in place; in a log (stderr
# a file) no redraws, and one line per stage.
# usage: progress_lines.sh NASHPRUNE LLAMA_BIN MODEL CALIBRATION_TEXT EVALUATION_TEXT WORK
set -uo pipefail
nashprune=$1 llama_bin=$2 model=$3 cal=$4 eval_text=$5 work=$6
command -v script >/dev/null || { echo "FAIL: no util-linux script to give the tool a terminal"; exit 1; }
rm -rf "$work" && mkdir -p "$work"
failed=0

calibrate=("$nashprune" calibrate "$model" --text "$cal" --tokens 512 -c 128 -o "$work/stats.gguf" --force)
ablate=("$nashprune" ablate "$model" --text "$cal" --tokens 256 -c 128 -t 1 --pairs none -o "$work/ablation.json" --force)
evaluate=("$nashprune" eval "$model" "$model" --text "$eval_text" -c 128 --chunks 4 --no-speed --llama-bin "$llama_bin")

# On a terminal: each command's bar reaches 100 % and shows a time left on the way.
on_terminal() {
  local name=$1
  shift
  local quoted
  quoted=$(printf '%q ' "$@")
  if ! script -qec "$quoted" /dev/null >"$work/$name.tty" 2>&1; then
    echo "FAIL: $name on a terminal failed:"; tr '\r' '\n' <"$work/$name.tty" | tail -n 20; failed=1; return
  fi
  local seen
  seen=$(tr '\r' '\n' <"$work/$name.tty" | grep -cE '\] +[0-9]+% ETA [0-9]+:[0-9]{2} *$')
  if ((seen > 0)) && tr '\r' '\n' <"$work/$name.tty" | grep -qE '\] 100% ETA 0:00'; then
    echo "ok: $name on a terminal: $seen redraws with an ETA, up to 100 %"
  else
    echo "FAIL: $name on a terminal shows no bar with an ETA reaching 100 %:"; tr '\r' '\n' <"$work/$name.tty" | tail -n 20; failed=1
  fi
}
on_terminal calibrate "${calibrate[@]}"
on_terminal ablate "${ablate[@]}"
on_terminal eval "${evaluate[@]}"

# In a log: no carriage return, no bar, and the stage lines named here.
in_log() {
  local name=$1 stage=$2
  shift 2
  if ! "$@" >"$work/$name.out" 2>"$work/$name.err" </dev/null; then
    echo "FAIL: $name into a log failed:"; cat "$work/$name.err"; failed=1; return
  fi
  if grep -q $'\r' "$work/$name.out" "$work/$name.err" || grep -q 'ETA' "$work/$name.err"; then
    echo "FAIL: $name redraws a bar into a log:"; cat -A "$work/$name.err" | head -n 5; failed=1; return
  fi
  local count
  count=$(cat "$work/$name.out" "$work/$name.err" | grep -cE "$stage")
  if ((count == ${EXPECTED:-1})); then
    echo "ok: $name into a log: $count line(s) matching '$stage'"
  else
    echo "FAIL: $name into a log: $count lines match '$stage', expected ${EXPECTED:-1}:"; cat "$work/$name.out" "$work/$name.err"; failed=1
  fi
}
in_log calibrate '^calibrating on .*: done in [0-9]+:[0-9]{2}$' "${calibrate[@]}"
in_log ablate '^ablated [0-9]+ heads' "${ablate[@]}"
EXPECTED=2 in_log eval '^perplexity of the (original|pruned) model: done in [0-9]+:[0-9]{2}$' "${evaluate[@]}"
exit $failed
