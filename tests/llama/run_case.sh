#!/usr/bin/env bash
# One integration case against real llama.cpp (ctest label `llama`):
#   1. the model: MODEL, or one `nashprune generate` writes (--generate "ARGS");
#   2. optionally `nashprune prune MODEL OUT PRUNE-ARGS...` (arguments after --);
#   3. the independent reader (gguf_check.mjs) checks OUT, against MODEL when pruned;
#   4. `nashprune eval MODEL OUT` runs llama-perplexity on both (output captured to
#      files, never a pipe) and must report finite perplexities; the table is
#      printed and kept in WORK/NAME.eval.txt beside the original's.
# Exits 77 (ctest: skipped) with a message when MODEL is absent.
set -euo pipefail

usage() {
  echo "usage: run_case.sh --nashprune BIN --llama-bin DIR --node-modules DIR --text FILE --work DIR" \
       "--name NAME (--model FILE | --generate ARGS) [--ctx N] [--chunks N] [-- PRUNE-ARGS...]" >&2
  exit 2
}
ctx=128
chunks=100
model="" generate=""
while (($#)); do
  case $1 in
    --nashprune) nashprune=$2; shift 2 ;;
    --llama-bin) llama_bin=$2; shift 2 ;;
    --node-modules) node_modules=$2; shift 2 ;;
    --text) text=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    --name) name=$2; shift 2 ;;
    --model) model=$2; shift 2 ;;
    --generate) generate=$2; shift 2 ;;
    --ctx) ctx=$2; shift 2 ;;
    --chunks) chunks=$2; shift 2 ;;
    --) shift; break ;;
    *) usage ;;
  esac
done
[[ -n ${nashprune:-} && -n ${llama_bin:-} && -n ${node_modules:-} && -n ${text:-} && -n ${work:-} && -n ${name:-} ]] || usage
[[ -n $model || -n $generate ]] || usage
here=$(cd "$(dirname "$0")" && pwd)

if [[ ! -f $text ]]; then
  echo "SKIP: evaluation text $text is absent (../shared/data is not beside the project)"
  exit 77
fi
mkdir -p "$work"
if [[ -n $generate ]]; then
  model=$work/$name.original.gguf
  # shellcheck disable=SC2086 # the generator's options are one string on purpose
  "$nashprune" generate "$model" --force $generate
elif [[ ! -f $model ]]; then
  echo "SKIP: model $model is absent (../shared/models is not beside the project)"
  exit 77
fi

out=$model
check_against=()
if (($#)); then
  out=$work/$name.gguf
  echo "== nashprune prune $(basename "$model") $* "
  "$nashprune" prune "$model" "$out" --force "$@"
  check_against=(--original "$model")
fi

echo "== independent reader (@huggingface/gguf)"
node "$here/gguf_check.mjs" --node-modules "$node_modules" "$out" "${check_against[@]}"

echo "== llama-perplexity -c $ctx --chunks $chunks on $(basename "$text")"
"$nashprune" eval "$model" "$out" --text "$text" -c "$ctx" --chunks "$chunks" --llama-bin "$llama_bin" \
  >"$work/$name.eval.txt"
cat "$work/$name.eval.txt"
