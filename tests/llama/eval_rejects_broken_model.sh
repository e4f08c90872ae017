#!/usr/bin/env bash
# The checks themselves can fail: on a truncated copy of a real model,
# `nashprune eval` must exit 1 naming llama-perplexity's failure and its log,
# and the independent reader must reject the file; a wrong --llama-bin is a
# usage error (exit 2).
# usage: eval_rejects_broken_model.sh NASHPRUNE LLAMA_BIN_DIR MODEL TEXT WORK [NODE_MODULES]
set -uo pipefail
nashprune=$1 llama_bin=$2 model=$3 text=$4 work=$5 node_modules=${6:-}
here=$(cd "$(dirname "$0")" && pwd)
for f in "$model" "$text"; do
  [[ -f $f ]] || { echo "FAIL: $f is missing"; exit 1; }
done
mkdir -p "$work"
broken=$work/truncated.gguf
head -c 4000 "$model" >"$broken"
failed=0
# shellcheck source-path=SCRIPTDIR source=expect_exit.sh
source "$here/expect_exit.sh"
expect 1 "llama-perplexity on the pruned model" -- \
  "$nashprune" eval "$model" "$broken" --text "$text" -c 128 --chunks 2 --llama-bin "$llama_bin"
expect 2 "no executable llama-perplexity" -- \
  "$nashprune" eval "$model" "$model" --text "$text" --llama-bin "$work/nowhere"
expect 2 "is not a readable file" -- \
  "$nashprune" eval "$model" "$work/absent.gguf" --text "$text" --llama-bin "$llama_bin"
if [[ -n $node_modules ]]; then
  expect 1 "gguf_check: $broken:" -- \
    node "$here/gguf_check.mjs" --node-modules "$node_modules" "$broken"
fi
exit $failed
