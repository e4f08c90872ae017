#!/usr/bin/env bash
# One integration case against real llama.cpp (ctest label `llama`):
#   1. the model: MODEL, or one `nashprune generate` writes (--generate "ARGS");
#      --text-bytes N evaluates on the text's first N bytes only;
#   2. optionally the command after -- writes OUT from MODEL ({in} and {out} in it
#      are replaced by their paths), e.g. `nashprune prune {in} {out} --force ...`;
#      with --imatrix CALIBRATION-TEXT, llama-imatrix first measures MODEL on that
#      text (never the evaluation text) and {imatrix} names its output;
#   3. the independent reader (gguf_check.mjs) checks OUT, against MODEL when pruned;
#   4. `nashprune eval MODEL OUT` runs llama-perplexity on both (output captured to
#      files, never a pipe) and must report finite perplexities; the table is
#      printed and kept in WORK/NAME.eval.txt beside the original's.
set -euo pipefail

usage() {
  echo "usage: run_case.sh --nashprune BIN --llama-bin DIR --node-modules DIR --text FILE --work DIR" \
       "--name NAME (--model FILE | --generate ARGS) [--ctx N] [--chunks N] [--text-bytes N] [--imatrix CALIBRATION-TEXT] [-- COMMAND {in} {out}...]" >&2
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
    --text-bytes) text_bytes=$2; shift 2 ;;
    --imatrix) calibration=$2; shift 2 ;;
    --) shift; break ;;
    *) usage ;;
  esac
done
[[ -n ${nashprune:-} && -n ${llama_bin:-} && -n ${node_modules:-} && -n ${text:-} && -n ${work:-} && -n ${name:-} ]] || usage
[[ -n $model || -n $generate ]] || usage
here=$(cd "$(dirname "$0")" && pwd)

[[ -f $text ]] || { echo "FAIL: the evaluation text $text is missing"; exit 1; }
mkdir -p "$work"
exec > >(tee "$work/$name.log") 2>&1  # kept for a look after a failure
if [[ -n $generate ]]; then
  model=$work/$name.original.gguf
  # shellcheck disable=SC2086 # the generator's options are one string on purpose
  "$nashprune" generate "$model" --force $generate
elif [[ ! -f $model ]]; then
  echo "FAIL: the model $model is missing"
  exit 1
fi

prefix() {  # the first --text-bytes bytes of a text, or the text itself
  if [[ -n ${text_bytes:-} ]]; then head -c "$text_bytes" "$1" >"$2" && echo "$2"; else echo "$1"; fi
}
imatrix=$work/$name.imatrix.gguf
if [[ -n ${calibration:-} ]]; then
  echo "== llama-imatrix on $(basename "$calibration")"
  rm -f "$imatrix"
  OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE} "$llama_bin/llama-imatrix" -m "$model" \
    -f "$(prefix "$calibration" "$work/$name.calibration.txt")" -c "$ctx" -b "$ctx" --chunks 20 -o "$imatrix" \
    >"$work/$name.imatrix.log" 2>&1 || { tail -n 20 "$work/$name.imatrix.log"; exit 1; }
  [[ -f $imatrix ]] || { echo "FAIL: llama-imatrix wrote no $imatrix"; exit 1; }
fi

out=$model
check_against=()
if (($#)); then
  out=$work/$name.gguf
  rm -f "$out"
  command=()
  for word in "$@"; do
    word=${word//\{in\}/$model}
    word=${word//\{imatrix\}/$imatrix}
    command+=("${word//\{out\}/$out}")
  done
  echo "== $(basename "${command[0]}") ${command[*]:1}"
  "${command[@]}"
  [[ -f $out ]] || { echo "FAIL: the command wrote no $out"; exit 1; }
  check_against=(--original "$model")
fi

echo "== independent reader (@huggingface/gguf)"
node "$here/gguf_check.mjs" --node-modules "$node_modules" "$out" "${check_against[@]}"

echo "== llama-perplexity -c $ctx --chunks $chunks on $(basename "$text")"
# A byte-level vocabulary (the generated model's) makes llama.cpp's tokenizer
# slow on long text: --text-bytes gives it only the prefix the chunks need.
"$nashprune" eval "$model" "$out" --text "$(prefix "$text" "$work/$name.text.txt")" -c "$ctx" --chunks "$chunks" --llama-bin "$llama_bin" \
  >"$work/$name.eval.txt"
cat "$work/$name.eval.txt"
