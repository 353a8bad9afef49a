#!/usr/bin/env node
// gen_ort: the onnxruntime-node side of bench/run_generate.sh. Runs the same KV-cache decoder
// (tests/generative/models.py's ONNX I/O) with its own greedy loop, prefill then one decode step
// per token with present.* fed back as past_key_values.*, so shardserve's gen_greedy is compared
// with ORT doing the same work.
//
//   node gen_ort.js MODEL.onnx PROMPT.npy REF_TOKENS.npy [--threads T]
//   -> "gen_ort: N tokens equal PyTorch's; prefill P tokens X ms, decode Y ms/token (median Z)"
//      exits 1 with the first differing token.
'use strict';

const fs = require('fs');
const ort = require('onnxruntime-node');

// int64 vector from a .npy file (version 1/2 header, little-endian '<i8' only).
function readNpyInt64(path) {
  const buf = fs.readFileSync(path);
  const major = buf[6];
  const hlen = major === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const off = (major === 1 ? 10 : 12) + hlen;
  const header = buf.toString('latin1', major === 1 ? 10 : 12, off);
  if (!header.includes("'<i8'")) throw new Error(`${path}: expected int64 npy, got ${header}`);
  const n = (buf.length - off) / 8;
  const out = new BigInt64Array(n);
  for (let i = 0; i < n; i++) out[i] = buf.readBigInt64LE(off + 8 * i);
  return out;
}

function argmaxLast(logits) {
  const [, seq, vocab] = logits.dims;
  const d = logits.data;
  let best = 0;
  for (let v = 1; v < vocab; v++) if (d[(seq - 1) * vocab + v] > d[(seq - 1) * vocab + best]) best = v;
  return best;
}

function i64(values, dims) { return new ort.Tensor('int64', BigInt64Array.from(values.map(BigInt)), dims); }

// One forward call: tokens at positions past..past+n-1, the cache in `past` (name -> tensor).
async function step(session, tokens, past, pastLen) {
  const n = tokens.length;
  const feeds = {
    input_ids: i64(tokens, [1, n]),
    position_ids: i64(tokens.map((_, i) => pastLen + i), [1, n]),
    attention_mask: i64(new Array(pastLen + n).fill(1), [1, pastLen + n]),
  };
  for (const [k, v] of Object.entries(past)) feeds[k] = v;
  const out = await session.run(feeds);
  const next = {};
  for (const k of Object.keys(past)) next[k] = out[k.replace('past_key_values', 'present')];
  return { token: argmaxLast(out.logits), past: next };
}

// Empty cache: every past_key_values.* input at past length 0, with the model's head dims.
function emptyPast(session, meta) {
  const past = {};
  for (const name of session.inputNames) {
    if (!name.startsWith('past_key_values')) continue;
    past[name] = new ort.Tensor('float32', new Float32Array(0), [1, meta.kv_heads, 0, meta.head_dim]);
  }
  return past;
}

function readMeta(modelPath) {
  const text = fs.readFileSync(modelPath.replace(/[^/]*$/, 'meta.txt'), 'utf8');
  const meta = {};
  for (const line of text.split('\n')) { const [k, v] = line.split(' '); if (k) meta[k] = Number(v); }
  return meta;
}

async function main() {
  const argv = process.argv.slice(2);
  if (argv.length < 3) {
    process.stderr.write('usage: node gen_ort.js MODEL.onnx PROMPT.npy REF_TOKENS.npy [--threads T]\n');
    process.exit(2);
  }
  const ti = argv.indexOf('--threads');
  const threads = ti >= 0 ? parseInt(argv[ti + 1], 10) : 1;
  const session = await ort.InferenceSession.create(argv[0], {
    intraOpNumThreads: threads, interOpNumThreads: 1, executionMode: 'sequential' });
  const prompt = Array.from(readNpyInt64(argv[1]), Number);
  const ref = Array.from(readNpyInt64(argv[2]), Number);
  let past = emptyPast(session, readMeta(argv[0]));
  const ours = [];
  let t0 = process.hrtime.bigint();
  let r = await step(session, prompt, past, 0);
  const prefillMs = Number(process.hrtime.bigint() - t0) / 1e6;
  ours.push(r.token);
  const times = [];
  for (let i = 1; i < ref.length; i++) {
    t0 = process.hrtime.bigint();
    r = await step(session, [ours[i - 1]], r.past, prompt.length + i - 1);
    times.push(Number(process.hrtime.bigint() - t0) / 1e6);
    ours.push(r.token);
  }
  for (let i = 0; i < ref.length; i++) {
    if (ours[i] !== ref[i]) {
      process.stderr.write(`gen_ort: token ${i} differs: ours ${ours[i]}, PyTorch ${ref[i]}\n`);
      process.exit(1);
    }
  }
  const mean = times.reduce((a, b) => a + b, 0) / times.length;
  const sorted = [...times].sort((a, b) => a - b);
  console.log(`gen_ort: ${ref.length} tokens equal PyTorch's; prefill ${prompt.length} tokens ` +
              `${prefillMs.toFixed(2)} ms, decode ${mean.toFixed(3)} ms/token (median ` +
              `${sorted[sorted.length >> 1].toFixed(3)})`);
}

main().catch((e) => { process.stderr.write(`gen_ort: ${e.message}\n`); process.exit(1); });
