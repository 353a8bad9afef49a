#!/usr/bin/env node
/*
 * Writes one ONNX backend-test folder per model of manifest.json (model.onnx +
 * test_data_set_0/input_N.pb, output_N.pb) with onnxruntime-node's outputs as the oracle.
 *
 *   node make_cases.js --cache DIR [--only a,b] [--quick]
 *
 * The packages must already be unpacked under DIR/packages/<name>@<version>/package/ (the
 * script scripts/test-real-models.sh does that with `npm pack`); onnxruntime-node and onnx-proto
 * are loaded from DIR/node/node_modules. A model whose bytes differ from the manifest's sha256 is
 * refused: the oracle would otherwise silently test something else. Inputs are seeded random data
 * (seed = the model's name), so two runs write identical bytes; a case already written for the
 * same model bytes and generator is kept as is, which keeps reruns cheap and offline.
 */
'use strict';
const fs = require('fs');
const path = require('path');
const crypto = require('crypto');

const GENERATOR = 1; /* bump when the inputs or the file layout change: rewrites every case */

function parseArgs(argv) {
  const args = { cache: null, only: null, quick: false };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--cache') args.cache = argv[++i];
    else if (argv[i] === '--only') args.only = new Set(argv[++i].split(','));
    else if (argv[i] === '--quick') args.quick = true;
    else throw new Error(`unknown argument '${argv[i]}'`);
  }
  if (!args.cache) throw new Error('--cache DIR is required');
  return args;
}

/* mulberry32: tiny, seedable, and the same on every platform (Math.random is not seedable). */
function prng(seedText) {
  let a = crypto.createHash('sha256').update(seedText).digest().readUInt32LE(0);
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function sha256File(file) {
  return crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

/* @imgly ships each model as 4 MiB chunks named by their sha256, listed in resources.json. */
function assembleResource(pkgDir, model) {
  const index = JSON.parse(fs.readFileSync(path.join(pkgDir, model.path), 'utf8'));
  const entry = index[model.resource];
  if (!entry) throw new Error(`${model.path} has no resource '${model.resource}'`);
  const dir = path.dirname(path.join(pkgDir, model.path));
  return Buffer.concat(entry.chunks.map((c) => fs.readFileSync(path.join(dir, c.hash))));
}

function modelBytes(cache, model) {
  const pkgDir = path.join(cache, 'packages', `${model.package}@${model.version}`, 'package');
  if (!fs.existsSync(pkgDir)) throw new Error(`package not unpacked: ${pkgDir}`);
  const bytes = model.resource ? assembleResource(pkgDir, model)
                               : fs.readFileSync(path.join(pkgDir, model.path));
  const sha = crypto.createHash('sha256').update(bytes).digest('hex');
  if (sha !== model.sha256)
    throw new Error(`${model.package}@${model.version} ${model.path}: sha256 ${sha}, manifest says ${model.sha256}`);
  return bytes;
}

const TYPED = {
  float32: Float32Array, float64: Float64Array, int8: Int8Array, uint8: Uint8Array,
  int16: Int16Array, uint16: Uint16Array, int32: Int32Array, uint32: Uint32Array,
  int64: BigInt64Array, uint64: BigUint64Array, bool: Uint8Array,
};

function inputShape(inputs, meta) {
  const fixed = (inputs.shapes || {})[meta.name];
  if (fixed) return fixed;
  if (meta.shape.some((d) => typeof d !== 'number' || d < 0))
    throw new Error(`input '${meta.name}' has dynamic dims ${JSON.stringify(meta.shape)}: give its shape in the manifest`);
  return meta.shape;
}

function makeInput(ort, inputs, meta, rand) {
  const shape = inputShape(inputs, meta);
  const n = shape.reduce((a, b) => a * b, 1);
  const Typed = TYPED[meta.type];
  if (!Typed) throw new Error(`input '${meta.name}' has type ${meta.type}, which this generator does not fill`);
  const data = new Typed(n);
  const values = (inputs.values || {})[meta.name];
  const ranges = inputs.ranges || {};
  const [lo, hi] = ranges[meta.name] || ranges['*'] || [-1, 1];
  for (let i = 0; i < n; i++) {
    let v = values ? values[i % values.length] : lo + (hi - lo) * rand();
    if (meta.type === 'bool') v = v > (lo + hi) / 2 ? 1 : 0;
    else if (!meta.type.startsWith('float')) v = Math.round(v);
    data[i] = typeof data[0] === 'bigint' ? BigInt(v) : v;
  }
  return new ort.Tensor(meta.type, data, shape);
}

const ONNX_TYPE = {
  float32: 1, uint8: 2, int8: 3, uint16: 4, int16: 5, int32: 6, int64: 7, string: 8, bool: 9,
  float16: 10, float64: 11, uint32: 12, uint64: 13,
};

function tensorProto(onnx, name, tensor) {
  const dataType = ONNX_TYPE[tensor.type];
  if (!dataType) throw new Error(`output '${name}' has type ${tensor.type}, which this generator cannot write`);
  const fields = { name, dims: tensor.dims, dataType };
  if (tensor.type === 'string') fields.stringData = tensor.data.map((s) => Buffer.from(s));
  else fields.rawData = Buffer.from(tensor.data.buffer, tensor.data.byteOffset, tensor.data.byteLength);
  return onnx.TensorProto.encode(onnx.TensorProto.create(fields)).finish();
}

/* The inputs of data set k: the model's shapes, values and ranges, overridden by its sets[k-1]
 * (a second set reaches another branch of a model's If, e.g. silero's 8 kHz path). */
function dataSets(model) {
  const base = { shapes: model.shapes, values: model.values, ranges: model.ranges };
  return [base, ...(model.sets || []).map((o) => ({
    shapes: { ...base.shapes, ...o.shapes }, values: { ...base.values, ...o.values },
    ranges: { ...base.ranges, ...o.ranges } }))];
}

async function writeDataSet(lib, session, dir, seed, inputs) {
  fs.mkdirSync(dir, { recursive: true });
  const rand = prng(seed);
  const feeds = {};
  session.inputMetadata.forEach((meta, i) => {
    feeds[meta.name] = makeInput(lib.ort, inputs, meta, rand);
    fs.writeFileSync(path.join(dir, `input_${i}.pb`), tensorProto(lib.onnx, meta.name, feeds[meta.name]));
  });
  const outs = await session.run(feeds);
  session.outputNames.forEach((name, i) => {
    fs.writeFileSync(path.join(dir, `output_${i}.pb`), tensorProto(lib.onnx, name, outs[name]));
  });
}

async function makeCase(lib, cache, model) {
  const dir = path.join(cache, 'cases', model.name);
  const stampFile = path.join(dir, 'case.json');
  const sets = dataSets(model);
  /* Everything the written bytes depend on: a change to any of it rewrites the case. */
  const stamp = { generator: GENERATOR, oracle: lib.oracle, sha256: model.sha256,
                  package: model.package, version: model.version, path: model.path, sets };
  if (fs.existsSync(stampFile) && fs.readFileSync(stampFile, 'utf8') === JSON.stringify(stamp))
    return 'cached';
  const bytes = modelBytes(cache, model);
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'model.onnx'), bytes);
  const session = await lib.ort.InferenceSession.create(
    path.join(dir, 'model.onnx'), { intraOpNumThreads: 1, interOpNumThreads: 1, logSeverityLevel: 3 });
  for (let k = 0; k < sets.length; k++)
    await writeDataSet(lib, session, path.join(dir, `test_data_set_${k}`),
                       k ? `${model.name}#${k}` : model.name, sets[k]);
  await session.release();
  fs.writeFileSync(stampFile, JSON.stringify(stamp)); /* last: a half-written case is redone */
  return `written ${sets.length} data set${sets.length > 1 ? 's' : ''} for`;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const cache = path.resolve(args.cache);
  const nodeModules = path.join(cache, 'node', 'node_modules');
  const ort = require(path.join(nodeModules, 'onnxruntime-node'));
  const { onnx } = require(path.join(nodeModules, 'onnx-proto'));
  const ortVersion = require(path.join(nodeModules, 'onnxruntime-node', 'package.json')).version;
  const lib = { ort, onnx, oracle: `onnxruntime-node ${ortVersion}` };
  const manifest = JSON.parse(fs.readFileSync(path.join(__dirname, 'manifest.json'), 'utf8'));
  let failed = 0;
  for (const model of manifest.models) {
    if (args.only && !args.only.has(model.name)) continue;
    if (args.quick && model.quick === false) continue;
    const t0 = Date.now();
    try {
      const what = await makeCase(lib, cache, model);
      console.log(`${what} ${model.name} (${Date.now() - t0} ms)`);
    } catch (e) {
      failed++;
      console.log(`ERROR ${model.name}: ${e.message}`);
    }
  }
  process.exitCode = failed ? 1 : 0;
}

main().catch((e) => {
  console.error(`make_cases: ${e.message}`);
  process.exitCode = 2;
});
