#!/usr/bin/env bash
# `nashprune ablate --units layers` then `ablation-plan --count 2` on stories260K:
# the file's losses agree with a direct measurement (`ablate --remove` of the chosen
# pair gives L0 + δ_i + δ_j + I_ij), the plan removes the pair of least measured loss
# among layers 1.. (computed here from the file; layer 0 frozen), and the model
# prune --plan writes from it loads in llama-perplexity with a finite perplexity.
# usage: layer_ablation.sh NASHPRUNE LLAMA_BIN_DIR MODEL CAL_TEXT EVAL_TEXT WORK NODE
set -euo pipefail
nashprune=$1 llama_bin=$2 model=$3 cal=$4 eval_text=$5 work=$6 node=$7
for f in "$model" "$cal" "$eval_text"; do
  [[ -f $f ]] || { echo "FAIL: $f is missing"; exit 1; }
done
mkdir -p "$work"
ablation=$work/layer_ablation.json plan=$work/layer_ablation.plan.json out=$work/layer_ablation.gguf
"$nashprune" ablate "$model" --text "$cal" --tokens 512 --ctx 128 --units layers --threads 1 -o "$ablation" --force
"$nashprune" ablation-plan "$model" --ablation "$ablation" --count 2 --plan-out "$plan" | tee "$work/layer_ablation.log"
read -r first second expected < <("$node" -e '
  const a = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  const n = a.units.length;
  let best = null;
  for (let i = 1; i < n; ++i)
    for (let j = i + 1; j < n; ++j) {
      const loss = a.delta[i] + a.delta[j] + a.interaction[i][j];
      if (best === null || loss < best[2]) best = [i, j, loss];
    }
  console.log(best[0], best[1], a.l0 + best[2]);' "$ablation")
grep -q "layers \[$first $second\]; .*measured" "$work/layer_ablation.log" || { echo "FAIL: the plan does not remove layers $first and $second"; exit 1; }
"$node" -e '
  const plan = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  const removed = plan.layers.filter((l) => !l.keep).map((l) => l.layer).join(",");
  if (removed !== process.argv[2]) { console.log(`FAIL: plan removes ${removed}`); process.exit(1); }' "$plan" "$first,$second"
direct=$("$nashprune" ablate "$model" --text "$cal" --tokens 512 --ctx 128 --units layers --threads 1 --remove "$first,$second" | awk '{print $3}')
"$node" -e '
  const [d, e] = [Number(process.argv[1]), Number(process.argv[2])];
  console.log(`pair loss: direct ${d}, from the file ${e}`);
  if (!(Math.abs(d - e) <= 1e-6 * e)) process.exit(1);' "$direct" "$expected"
"$nashprune" prune "$model" "$out" --plan "$plan" --force > /dev/null
"$nashprune" eval "$model" "$out" --text "$eval_text" -c 128 --chunks 20 --llama-bin "$llama_bin" --json > "$work/layer_ablation.eval.json"
"$node" -e '
  const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
  console.log(JSON.stringify(r));
  if (!isFinite(r.pruned.perplexity)) process.exit(1);' "$work/layer_ablation.eval.json"
echo "ok"
