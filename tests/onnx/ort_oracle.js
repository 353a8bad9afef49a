#!/usr/bin/env node
/*
 * Fills in the expected outputs of backend-test folders with onnxruntime-node's answers: for
 * every DIR/test_* folder, runs model.onnx on test_data_set_N/input_N.pb and writes output_N.pb.
 * The cases that need onnxruntime as their oracle (its com.microsoft contrib ops, which numpy
 * cannot be trusted to mirror) are written without outputs by a Python generator, then here.
 *
 *   node ort_oracle.js NODE_MODULES DIR
 *
 * A case that already has its outputs (an op onnxruntime has no CPU kernel for, with the
 * generator's own oracle) is left as it is.
 * NODE_MODULES holds onnxruntime-node and onnx-proto (the real-model suite's cache:
 * ~/.cache/shardserve-real-models/node/node_modules). A model onnxruntime refuses fails the run.
 */
'use strict';
const fs = require('fs');
const path = require('path');

const TYPED = {
  1: ['float32', Float32Array], 2: ['uint8', Uint8Array], 3: ['int8', Int8Array],
  4: ['uint16', Uint16Array], 5: ['int16', Int16Array], 6: ['int32', Int32Array], 7: ['int64', BigInt64Array], 9: ['bool', Uint8Array],
  10: ['float16', Uint16Array], 11: ['float64', Float64Array],
};
const ONNX_TYPE = { float32: 1, uint8: 2, int8: 3, uint16: 4, int16: 5, int32: 6, int64: 7, bool: 9, float16: 10, float64: 11 };

function readTensor(ort, onnx, file) {
  const t = onnx.TensorProto.decode(fs.readFileSync(file));
  const kind = TYPED[t.dataType];
  if (!kind) throw new Error(`${file}: data type ${t.dataType} is not handled`);
  if (!t.rawData || !t.rawData.length) {
    const dims0 = t.dims.map(Number);
    if (dims0.reduce((a, b) => a * b, 1) !== 0) throw new Error(`${file}: expects raw_data`);
  }
  const raw = Buffer.from(t.rawData || []);
  const bytes = new Uint8Array(raw.length);
  bytes.set(raw);
  const data = new kind[1](bytes.buffer, 0, raw.length / kind[1].BYTES_PER_ELEMENT);
  return [t.name, new ort.Tensor(kind[0], data, t.dims.map(Number))];
}

function writeTensor(onnx, file, name, tensor) {
  const dataType = ONNX_TYPE[tensor.type];
  if (!dataType) throw new Error(`output '${name}' has type ${tensor.type}`);
  const rawData = Buffer.from(tensor.data.buffer, tensor.data.byteOffset, tensor.data.byteLength);
  const proto = onnx.TensorProto.create({ name, dims: tensor.dims, dataType, rawData });
  fs.writeFileSync(file, onnx.TensorProto.encode(proto).finish());
}

async function fillCase(ort, onnx, dir) {
  if (fs.existsSync(path.join(dir, 'test_data_set_0', 'output_0.pb'))) return;
  const session = await ort.InferenceSession.create(
    path.join(dir, 'model.onnx'), { intraOpNumThreads: 1, interOpNumThreads: 1, logSeverityLevel: 3 });
  for (const set of fs.readdirSync(dir).filter((f) => f.startsWith('test_data_set_'))) {
    const sdir = path.join(dir, set);
    const feeds = {};
    for (const f of fs.readdirSync(sdir).filter((f) => /^input_\d+\.pb$/.test(f))) {
      const [name, tensor] = readTensor(ort, onnx, path.join(sdir, f));
      feeds[name] = tensor;
    }
    const outs = await session.run(feeds);
    session.outputNames.forEach((name, i) =>
      writeTensor(onnx, path.join(sdir, `output_${i}.pb`), name, outs[name]));
  }
  await session.release();
}

async function main() {
  const [nodeModules, root] = process.argv.slice(2);
  if (!nodeModules || !root) throw new Error('usage: ort_oracle.js NODE_MODULES DIR');
  const ort = require(path.join(nodeModules, 'onnxruntime-node'));
  const { onnx } = require(path.join(nodeModules, 'onnx-proto'));
  let failed = 0, done = 0;
  for (const c of fs.readdirSync(root).filter((f) => f.startsWith('test_')).sort()) {
    try {
      await fillCase(ort, onnx, path.join(root, c));
      done++;
    } catch (e) {
      failed++;
      console.log(`ERROR ${c}: ${e.message}`);
    }
  }
  console.log(`ort_oracle: ${done} cases filled, ${failed} failed`);
  process.exitCode = failed ? 1 : 0;
}

main().catch((e) => {
  console.error(`ort_oracle: ${e.message}`);
  process.exitCode = 2;
});
