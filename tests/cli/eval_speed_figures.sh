#!/usr/bin/env bash
# `nashprune eval` parses llama-bench's -o jsonl output and prints both models'
# prompt-processing and generation tokens/s, their ratios and the CPU; --json
# carries the same figures; --no-speed runs no llama-bench; output without a
# generation result is an error naming llama-bench and its log. The llama.cpp
# programs are stand-ins printing known figures, so the check runs anywhere.
# usage: eval_speed_figures.sh NASHPRUNE MODEL WORK
set -uo pipefail
nashprune=$1 model=$2 work=$3
here=$(cd "$(dirname "$0")" && pwd)
bin=$work/bin
rm -rf "$work"  # a rerun starts from nothing (the stand-in llama-bench appends to a file there)
mkdir -p "$bin"
cp "$model" "$work/original.gguf"
cp "$model" "$work/pruned.gguf"
echo "some held-out text" >"$work/text.txt"
cat >"$bin/llama-perplexity" <<'PROGRAM'
#!/usr/bin/env bash
case "$*" in *pruned.gguf*) echo "Final estimate: PPL = 5.5000 +/- 0.11000" ;; *) echo "Final estimate: PPL = 5.0000 +/- 0.10000" ;; esac
PROGRAM
cat >"$bin/llama-bench" <<'PROGRAM'
#!/usr/bin/env bash
echo "$*" >>"$(dirname "$0")/bench-arguments"
echo "load_backend: a log line on stdout"
[[ ${BENCH_BROKEN:-} ]] && { echo '{"n_prompt": 128, "n_gen": 0, "avg_ts": 1000.0, "stddev_ts": 10.0, "n_threads": 2}'; exit 0; }
case "$*" in
  *pruned.gguf*) pp=1500.25 pp_sd=12.5 tg=300.5 tg_sd=3.25 ;;
  *) pp=1000.5 pp_sd=10.0 tg=200.25 tg_sd=2.0 ;;
esac
echo "{\"model_filename\": \"x\", \"n_prompt\": 128, \"n_gen\": 0, \"avg_ts\": $pp, \"stddev_ts\": $pp_sd, \"n_threads\": 2}"
echo "{\"model_filename\": \"x\", \"n_prompt\": 0, \"n_gen\": 32, \"avg_ts\": $tg, \"stddev_ts\": $tg_sd, \"n_threads\": 2}"
PROGRAM
chmod +x "$bin/llama-perplexity" "$bin/llama-bench"
failed=0
# shellcheck source-path=SCRIPTDIR source=../llama/expect_exit.sh
source "$here/../llama/expect_exit.sh"
run=("$nashprune" eval "$work/original.gguf" "$work/pruned.gguf" --text "$work/text.txt" --llama-bin "$bin")
output=$("${run[@]}" 2>&1) || { echo "FAIL: eval exited $?: $output"; exit 1; }
cpu_family=$(sed -n 's/^cpu family[[:space:]]*: //p' /proc/cpuinfo | head -n1)
for line in "speed with llama-bench -p 128 -n 32 -r 3, 2 threads, on " \
            "original         1000.50     10.00          200.25      2.00" \
            "pruned           1500.25     12.50          300.50      3.25" \
            "ratio              1.500                     1.501  (pruned / original, same run)" \
            "cpu family $cpu_family"; do
  [[ $output == *"$line"* ]] || { echo "FAIL: no '$line' in:"; echo "$output"; failed=1; }
done
[[ $(grep -c -- "-p 128 -n 32 -r 3 -o jsonl" "$bin/bench-arguments") == 2 ]] ||
  { echo "FAIL: llama-bench was not run once per model with -p 128 -n 32 -r 3 -o jsonl:"; cat "$bin/bench-arguments"; failed=1; }
json=$("${run[@]}" --json --speed-prompt 64 --speed-gen 8 --speed-reps 2 2>/dev/null)
for field in '"prompt_tokens_per_second": 1500.25' '"generation_tokens_per_second": 200.25' '"prompt_tokens": 64' \
             '"generated_tokens": 8' '"repetitions": 2' '"cpu": '; do
  [[ $json == *"$field"* ]] || { echo "FAIL: no '$field' in the --json output:"; echo "$json"; failed=1; }
done
grep -q -- "-p 64 -n 8 -r 2 -o jsonl" "$bin/bench-arguments" || { echo "FAIL: --speed-prompt/--speed-gen/--speed-reps not passed on"; failed=1; }
rm -f "$bin/bench-arguments"
output=$("${run[@]}" --no-speed 2>&1)
[[ ! -e $bin/bench-arguments && $output != *"speed with"* ]] || { echo "FAIL: --no-speed ran llama-bench:"; echo "$output"; failed=1; }
BENCH_BROKEN=1 expect 1 "llama-bench on the original model '$work/original.gguf': llama-bench printed no generation result" -- "${run[@]}"
expect 2 "--speed-reps" -- "${run[@]}" --speed-reps 0
exit $failed
