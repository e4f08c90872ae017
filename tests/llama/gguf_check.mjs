// An independent check of a GGUF model, with a reader nashprune did not write
// (npm @huggingface/gguf, provisioned beside llama.cpp):
//
//   node gguf_check.mjs --node-modules DIR MODEL.gguf [--original ORIGINAL.gguf] [--json]
//
// MODEL must be a llama or deci model whose tensors have the shapes its metadata
// implies, layer by layer, as llama.cpp reads it:
// head counts, KV head counts and FFN widths either scalars or arrays of exactly
// block_count entries; one head size for the whole model; attn_q/k/v/output and
// ffn_gate/up/down sized from them; no attention tensors in an attention-free
// layer; every blk.N below block_count; tensor data aligned and in table order.
// With --original, MODEL must also keep every metadata key of the original (an
// architecture change renames the "<arch>." prefix), the same non-layer tensors
// (shape and type) and, per tensor name suffix, the same types.
// Prints a summary (or JSON with --json); exits 1 naming the first violation.
import { createRequire } from "node:module";
import { statSync } from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

function fail(message) {
  console.error(`gguf_check: ${message}`);
  process.exit(1);
}

function parseArguments(argv) {
  const options = { json: false };
  const positional = [];
  for (let i = 0; i < argv.length; ++i) {
    const a = argv[i];
    if (a === "--node-modules") options.nodeModules = argv[++i];
    else if (a === "--original") options.original = argv[++i];
    else if (a === "--json") options.json = true;
    else if (a.startsWith("--")) fail(`unknown option ${a}`);
    else positional.push(a);
  }
  if (positional.length !== 1 || !options.nodeModules) {
    fail("usage: node gguf_check.mjs --node-modules DIR MODEL.gguf [--original ORIGINAL.gguf] [--json]");
  }
  options.model = positional[0];
  return options;
}

async function loadReader(nodeModules) {
  const require = createRequire(path.join(path.resolve(nodeModules), "resolver.js"));
  let entry;
  try {
    entry = require.resolve("@huggingface/gguf");
  } catch {
    fail(`@huggingface/gguf is not installed under ${nodeModules} (run cmake/provision-llama-cpp.sh)`);
  }
  return import(pathToFileURL(entry).href);
}

async function read(reader, file) {
  try {
    const result = await reader.gguf(path.resolve(file), { allowLocalFile: true });
    // The reader reads zeros past the end of a file instead of failing: check
    // that what it returns is complete.
    const bytes = statSync(file).size;
    const keys = Object.keys(result.metadata).length - 3;  // less version, tensor_count, kv_count
    if (keys !== num(result.metadata.kv_count) || num(result.tensorDataOffset) > bytes ||
        result.tensorInfos.length !== num(result.metadata.tensor_count) || result.tensorInfos.some((t) => !t.name)) {
      fail(`${file}: truncated or corrupt: ${keys} of ${num(result.metadata.kv_count)} keys readable, ` +
           `tensor data at ${num(result.tensorDataOffset)} of ${bytes} bytes`);
    }
    return { ...result, file, bytes };
  } catch (error) {
    fail(`${file}: the independent reader rejects it: ${error.message}`);
  }
}

const num = (v) => (typeof v === "bigint" ? Number(v) : v);
const shapeOf = (t) => t.shape.map(num);
const sameShape = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
const show = (s) => `[${s.join(", ")}]`;

// The per-layer view of a llama/deci model, as llama.cpp derives it.
function describe(model) {
  const m = model.metadata;
  const arch = m["general.architecture"];
  if (arch !== "llama" && arch !== "deci") fail(`${model.file}: architecture '${arch}' is neither llama nor deci`);
  const key = (k) => `${arch}.${k}`;
  const need = (k) => {
    if (m[key(k)] === undefined) fail(`${model.file}: missing key ${key(k)}`);
    return m[key(k)];
  };
  const nLayer = num(need("block_count"));
  const nEmbd = num(need("embedding_length"));
  const perLayer = (k) => {
    const v = need(k);
    if (!Array.isArray(v)) return Array(nLayer).fill(num(v));
    if (v.length !== nLayer) fail(`${model.file}: ${key(k)} has ${v.length} entries, block_count is ${nLayer}`);
    return v.map(num);
  };
  const heads = perLayer("attention.head_count");
  const kvHeads = m[key("attention.head_count_kv")] === undefined ? heads : perLayer("attention.head_count_kv");
  const ffn = perLayer("feed_forward_length");
  const keyLength = m[key("attention.key_length")];
  const valueLength = m[key("attention.value_length")];
  const headDim = keyLength !== undefined ? num(keyLength) : nEmbd / heads[0];
  const valueDim = valueLength !== undefined ? num(valueLength) : headDim;
  if (!Number.isInteger(headDim) || headDim <= 0) fail(`${model.file}: head size ${headDim} is not a positive integer`);
  const rope = m[key("rope.dimension_count")];
  if (rope !== undefined && keyLength !== undefined && num(rope) !== headDim) {
    fail(`${model.file}: rope.dimension_count ${num(rope)} differs from attention.key_length ${headDim}`);
  }
  return { arch, nLayer, nEmbd, heads, kvHeads, ffn, headDim, valueDim };
}

function checkLayers(model, d) {
  const tensors = new Map(model.tensorInfos.map((t) => [t.name, t]));
  for (const t of model.tensorInfos) {
    const match = /^blk\.(\d+)\./.exec(t.name);
    if (match && Number(match[1]) >= d.nLayer) fail(`${model.file}: ${t.name} is beyond block_count ${d.nLayer}`);
  }
  for (let i = 0; i < d.nLayer; ++i) {
    const h = d.heads[i], kv = d.kvHeads[i], ff = d.ffn[i];
    const expect = (suffix, shape) => {
      const name = `blk.${i}.${suffix}`;
      const t = tensors.get(name);
      if (!t) fail(`${model.file}: ${name} is missing (layer ${i}: ${h} heads, ${kv} kv heads, ffn ${ff})`);
      if (!sameShape(shapeOf(t), shape)) fail(`${model.file}: ${name} has shape ${show(shapeOf(t))}, expected ${show(shape)}`);
    };
    const absent = (suffix, why) => {
      if (tensors.has(`blk.${i}.${suffix}`)) fail(`${model.file}: blk.${i}.${suffix} present in ${why}`);
    };
    if (h > 0 && kv > 0) {
      if (h % kv !== 0) fail(`${model.file}: layer ${i}: ${h} heads is not a multiple of ${kv} kv heads`);
      expect("attn_norm.weight", [d.nEmbd]);
      expect("attn_q.weight", [d.nEmbd, h * d.headDim]);
      expect("attn_k.weight", [d.nEmbd, kv * d.headDim]);
      expect("attn_v.weight", [d.nEmbd, kv * d.valueDim]);
      expect("attn_output.weight", [h * d.valueDim, d.nEmbd]);
    } else if (h === 0) {
      for (const s of ["attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_output.weight"]) {
        absent(s, "an attention-free layer");
      }
    }
    if (ff > 0) {
      expect("ffn_norm.weight", [d.nEmbd]);
      expect("ffn_gate.weight", [d.nEmbd, ff]);
      expect("ffn_up.weight", [d.nEmbd, ff]);
      expect("ffn_down.weight", [ff, d.nEmbd]);
    } else {
      for (const s of ["ffn_gate.weight", "ffn_up.weight", "ffn_down.weight"]) absent(s, "an FFN-free layer");
    }
  }
}

function checkLayout(model) {
  const alignment = num(model.metadata["general.alignment"] ?? 32);
  let previous = -1;
  for (const t of model.tensorInfos) {
    const offset = num(t.offset);
    if (offset % alignment !== 0) fail(`${model.file}: ${t.name} at offset ${offset} is not ${alignment}-aligned`);
    if (offset <= previous) fail(`${model.file}: ${t.name} at offset ${offset} is not after the previous tensor`);
    previous = offset;
  }
  const dataStart = model.tensorDataOffset === undefined ? 0 : num(model.tensorDataOffset);
  if (dataStart + previous > model.bytes) fail(`${model.file}: tensor data runs past the end of the file`);
}

function compareWithOriginal(model, d, original, o) {
  const rename = (k) => (k.startsWith(`${o.arch}.`) ? `${d.arch}.${k.slice(o.arch.length + 1)}` : k);
  const structural = new Set(["version", "tensor_count", "kv_count"]);
  for (const k of Object.keys(original.metadata)) {
    if (structural.has(k)) continue;
    if (model.metadata[rename(k)] === undefined) fail(`${model.file}: key ${rename(k)} of the original is missing`);
  }
  const byName = new Map(original.tensorInfos.map((t) => [t.name, t]));
  const typeOfSuffix = new Map();
  for (const t of original.tensorInfos) {
    const suffix = t.name.replace(/^blk\.\d+\./, "");
    if (suffix !== t.name) typeOfSuffix.set(suffix, t.dtype);
  }
  for (const t of model.tensorInfos) {
    const suffix = t.name.replace(/^blk\.\d+\./, "");
    if (suffix === t.name) {
      const was = byName.get(t.name);
      if (!was) fail(`${model.file}: ${t.name} is not in the original`);
      if (!sameShape(shapeOf(t), shapeOf(was)) || t.dtype !== was.dtype) {
        fail(`${model.file}: ${t.name} is ${show(shapeOf(t))} type ${t.dtype}, the original's ${show(shapeOf(was))} type ${was.dtype}`);
      }
    } else if (!typeOfSuffix.has(suffix)) {
      fail(`${model.file}: ${t.name} has no counterpart in the original`);
    } else if (typeOfSuffix.get(suffix) !== t.dtype) {
      fail(`${model.file}: ${t.name} has type ${t.dtype}, the original's ${suffix} has ${typeOfSuffix.get(suffix)}`);
    }
  }
  for (const t of original.tensorInfos) {
    if (!/^blk\./.test(t.name) && !model.tensorInfos.some((u) => u.name === t.name)) {
      fail(`${model.file}: non-layer tensor ${t.name} of the original is missing`);
    }
  }
}

const options = parseArguments(process.argv.slice(2));
const reader = await loadReader(options.nodeModules);
const model = await read(reader, options.model);
const d = describe(model);
checkLayers(model, d);
checkLayout(model);
if (options.original) {
  const original = await read(reader, options.original);
  compareWithOriginal(model, d, original, describe(original));
}
const parameters = model.tensorInfos.reduce((sum, t) => sum + shapeOf(t).reduce((p, x) => p * x, 1), 0);
const summary = {
  file: options.model, architecture: d.arch, layers: d.nLayer, embedding: d.nEmbd, head_dim: d.headDim,
  heads: d.heads, kv_heads: d.kvHeads, ffn: d.ffn, tensors: model.tensorInfos.length, parameters,
  keys: Object.keys(model.metadata).length - 3,
};
if (options.json) {
  console.log(JSON.stringify(summary, null, 2));
} else {
  console.log(`gguf_check: ${options.model}: ${d.arch}, ${d.nLayer} layers, embedding ${d.nEmbd}, head size ${d.headDim}, ` +
    `${summary.tensors} tensors, ${parameters} parameters, ${summary.keys} keys`);
  console.log(`  heads ${show(d.heads)} kv ${show(d.kvHeads)} ffn ${show(d.ffn)}` +
    (options.original ? `; agrees with ${options.original}` : ""));
}
