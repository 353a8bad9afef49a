#!/usr/bin/env node
// bench_ort: the onnxruntime-node side of bench/run_runtime.sh ("B"). Same command line and stdin
// protocol as bench/bench_runtime.c:
//
//   node bench_ort.js MODEL.onnx --input NAME=FILE.npy ... [--threads T] [--iters N] [--warmup W]
//   node bench_ort.js MODEL.onnx --input ... --serve   # "ready ..." then "run N" -> "times ..."
//   node bench_ort.js MODEL.onnx --load-only           # session create time, RssAnon growth
//
// The session uses intraOpNumThreads = T, interOpNumThreads = 1, sequential execution and the
// default (full) graph optimizations; each call is timed with hrtime around `await session.run`.
'use strict';

const fs = require('fs');
const readline = require('readline');
const ort = require('onnxruntime-node');

function usage() {
  process.stderr.write('usage: node bench_ort.js MODEL.onnx [--input NAME=FILE.npy]... ' +
                       '[--threads T] [--iters N] [--warmup W] [--serve | --load-only]\n');
  process.exit(2);
}

function parseArgs(argv) {
  const a = { model: null, inputs: {}, threads: 1, iters: 50, warmup: 3, serve: false, loadOnly: false };
  for (let i = 0; i < argv.length; i++) {
    const s = argv[i];
    const hasVal = i + 1 < argv.length;
    if (s === '--input' && hasVal) {
      const v = argv[++i];
      const eq = v.indexOf('=');
      if (eq < 0) usage();
      a.inputs[v.slice(0, eq)] = v.slice(eq + 1);
    } else if (s === '--threads' && hasVal) a.threads = parseInt(argv[++i], 10);
    else if (s === '--iters' && hasVal) a.iters = parseInt(argv[++i], 10);
    else if (s === '--warmup' && hasVal) a.warmup = parseInt(argv[++i], 10);
    else if (s === '--serve') a.serve = true;
    else if (s === '--load-only') a.loadOnly = true;
    else if (!s.startsWith('-') && !a.model) a.model = s;
    else usage();
  }
  if (!a.model || !(a.threads >= 1) || !(a.iters >= 1) || !(a.warmup >= 0)) usage();
  return a;
}

// .npy (format 1.x/2.x/3.x, little-endian, C order) -> ort.Tensor
const NPY_TYPES = {
  '<f4': ['float32', Float32Array], '<f8': ['float64', Float64Array],
  '<i8': ['int64', BigInt64Array], '<i4': ['int32', Int32Array],
  '<i2': ['int16', Int16Array], '|i1': ['int8', Int8Array], '|u1': ['uint8', Uint8Array],
  '|b1': ['bool', Uint8Array],
};

function readNpy(path) {
  const buf = fs.readFileSync(path);
  if (buf.toString('latin1', 0, 6) !== '\x93NUMPY') throw new Error(`${path}: not a .npy file`);
  const major = buf[6];
  const hlen = major === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const hstart = major === 1 ? 10 : 12;
  const header = buf.toString('latin1', hstart, hstart + hlen);
  const descr = /'descr':\s*'([^']+)'/.exec(header)[1];
  if (/'fortran_order':\s*True/.test(header)) throw new Error(`${path}: Fortran order`);
  const shapeText = /'shape':\s*\(([^)]*)\)/.exec(header)[1];
  const dims = shapeText.split(',').map((x) => x.trim()).filter((x) => x).map(Number);
  const t = NPY_TYPES[descr];
  if (!t) throw new Error(`${path}: dtype ${descr} not handled`);
  const off = hstart + hlen;
  const bytes = buf.buffer.slice(buf.byteOffset + off, buf.byteOffset + buf.length);
  const data = new t[1](bytes); // slice() copies, so the data is aligned
  return new ort.Tensor(t[0], t[0] === 'bool' ? Uint8Array.from(data) : data, dims);
}

function statusKb(key) {
  const m = new RegExp(`^${key}:\\s+(\\d+)`, 'm').exec(fs.readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) : -1;
}

function nowNs() { return process.hrtime.bigint(); }

function checksum(outs) {
  let sum = 0, asum = 0;
  for (const k of Object.keys(outs)) {
    const t = outs[k];
    if (t.type !== 'float32') continue;
    for (const v of t.data) { sum += v; asum += Math.abs(v); }
  }
  return ` sum=${sum.toPrecision(9)} asum=${asum.toPrecision(9)}`;
}

async function main() {
  const a = parseArgs(process.argv.slice(2));
  const opts = {
    intraOpNumThreads: a.threads, interOpNumThreads: 1, executionMode: 'sequential',
    graphOptimizationLevel: 'all',
  };
  const anon0 = statusKb('RssAnon'), file0 = statusKb('RssFile');
  const t0 = nowNs();
  const session = await ort.InferenceSession.create(a.model, opts);
  const createMs = Number(nowNs() - t0) / 1e6;
  if (a.loadOnly) {
    process.stdout.write(`load create_ms=${createMs.toFixed(1)} ` +
      `rss_anon_growth_mb=${((statusKb('RssAnon') - anon0) / 1024).toFixed(1)} ` +
      `rss_file_growth_mb=${((statusKb('RssFile') - file0) / 1024).toFixed(1)}\n`);
    return;
  }
  const feeds = {};
  for (const name of session.inputNames) {
    if (!(name in a.inputs)) throw new Error(`no --input for graph input '${name}'`);
    feeds[name] = readNpy(a.inputs[name]);
  }
  const batch = feeds[session.inputNames[0]].dims[0] || 1;
  let warmMs = 0;
  for (let i = 0; i < a.warmup; i++) {
    const s = nowNs();
    await session.run(feeds);
    warmMs = Number(nowNs() - s) / 1e6;
  }
  if (a.serve) {
    const outs = await session.run(feeds);
    process.stdout.write(`ready runtime=ort threads=${a.threads} batch=${batch} ` +
      `create_ms=${createMs.toFixed(1)} warm_ms=${warmMs.toFixed(3)}${checksum(outs)}\n`);
    const rl = readline.createInterface({ input: process.stdin });
    for await (const line of rl) {
      if (line.startsWith('quit')) break;
      const m = /^run (\d+)/.exec(line);
      if (!m) throw new Error(`bad command: ${line}`);
      const n = Number(m[1]);
      const times = new Array(n);
      const cpu0 = process.cpuUsage();
      for (let i = 0; i < n; i++) {
        const s = nowNs();
        await session.run(feeds);
        times[i] = nowNs() - s;
      }
      const cpu = process.cpuUsage(cpu0);
      process.stdout.write(`times ${times.join(' ')} cpu=${(cpu.user + cpu.system) * 1000}\n`);
    }
    rl.close();
  } else {
    const t = [];
    for (let i = 0; i < a.iters; i++) {
      const s = nowNs();
      await session.run(feeds);
      t.push(Number(nowNs() - s) / 1e6);
    }
    t.sort((x, y) => x - y);
    const q = (p) => t[Math.floor(p * (t.length - 1) + 0.5)];
    process.stdout.write(`${a.model} threads=${a.threads} batch=${batch} iters=${a.iters} ` +
      `create=${createMs.toFixed(1)} ms: median ${q(0.5).toFixed(3)} ms, p10 ${q(0.1).toFixed(3)}, ` +
      `p90 ${q(0.9).toFixed(3)}, throughput ${(batch / q(0.5) * 1e3).toFixed(1)} samples/s\n`);
  }
  await session.release();
}

main().catch((e) => { process.stderr.write(`bench_ort: ${e.message}\n`); process.exit(1); });
