#!/usr/bin/python3
"""MatMulNBits on the int8 kernels: a 4-bit (and an 8-bit) MatMulNBits with packed zero points and
a bias, run by `shardserve run` at accuracy_level 0 (float32 weights: equal to numpy's dequantized
product within float32 rounding), at accuracy_level 4 and under `--weights int8` (int8 weights and
activations where the CPU has AVX512-VNNI: within relative L2 1e-2 of numpy's, and not equal to the
float32 run, which shows the int8 path ran; on a CPU without VNNI both equal the float32 run), the
kernel level 4 took, from the debug log (4-bit weights: the kernel on the 4-bit values as stored,
for every row count, or the int8 copy above 4 rows under SHARDSERVE_NBITS_COPY=int8; 8-bit
weights: the int8 copy), and the level-0 model re-planned for 6 row
counts in one session, each equal to numpy's.

Usage: nbits_int8.py SHARDSERVE OUTDIR"""
import os
import subprocess
import sys

import numpy as np
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(2031)


def field(arr, e, bits):
    bit = e * bits
    return (int(arr[bit // 8]) >> (bit % 8)) & ((1 << bits) - 1)


def make(d, K, N, block, bits, level):
    blocks = (K + block - 1) // block
    blob = block * bits // 8
    B = rng.integers(0, 256, (N, blocks, blob), dtype=np.uint8)
    scales = rng.uniform(0.01, 0.1, N * blocks).astype(np.float32)
    zrow = (blocks * bits + 7) // 8
    zp = rng.integers(0, 256, N * zrow, dtype=np.uint8)
    bias = rng.uniform(-1, 1, N).astype(np.float32)
    W = np.zeros((N, K), np.float32)
    for n in range(N):
        for b in range(blocks):
            z = field(zp[n * zrow:(n + 1) * zrow], b, bits)
            s = scales[n * blocks + b]
            for i in range(block):
                k = b * block + i
                if k < K:
                    W[n, k] = (field(B[n, b], i, bits) - z) * s
    nd = helper.make_node("MatMulNBits", ["a", "B", "scales", "zp", "", "bias"], ["y"],
                          domain="com.microsoft", K=K, N=N, bits=bits, block_size=block,
                          accuracy_level=level)
    g = helper.make_graph([nd], "nbits", [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["M", K])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(B, "B"), numpy_helper.from_array(scales, "scales"),
                           numpy_helper.from_array(zp, "zp"), numpy_helper.from_array(bias, "bias")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17),
                                            helper.make_opsetid("com.microsoft", 1)])
    m.ir_version = 8
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "model_level%d.onnx" % level)
    with open(path, "wb") as f:
        f.write(m.SerializeToString())
    return path, W, bias


def run(shardserve, model, a, d, extra=(), log=None, env_add=None):
    """y, and with log a list the run's debug lines are appended to."""
    os.makedirs(d, exist_ok=True)
    np.save(os.path.join(d, "a.npy"), a)
    env = dict(os.environ, **(env_add or {}))
    if log is not None:
        env["SHARDSERVE_LOG"] = "debug"
    r = subprocess.run([shardserve, "run", model, "--input", "a=" + os.path.join(d, "a.npy"),
                        "--output-dir", d, *extra], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True, env=env)
    if log is not None:
        log.extend(r.stderr.splitlines())
    return np.load(os.path.join(d, "y.npy"))


def last_kernel(log, want):
    """Whether the last plan's MatMulNBits kernel line (the plan that ran: a load-time trial plan
    of one row logs first) says `want`."""
    lines = [line for line in log if "MatMulNBits" in line and "kernel on" in line]
    return bool(lines) and want in lines[-1]


def replanned(shardserve, out, model, W, bias, K):
    """The level-0 model in one session over inputs of 6 row counts (each a re-plan that must find
    the session's packed copy of the weights, not a stale or foreign one), as a backend-test
    folder with numpy's outputs, run by `shardserve onnx-test`."""
    d = os.path.join(out, "replanned", "test_nbits_replanned")
    with open(model, "rb") as f:
        data = f.read()
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "model.onnx"), "wb") as f:
        f.write(data)
    for i, M in enumerate((1, 5, 70, 1, 33, 5)):
        s = os.path.join(d, "test_data_set_%d" % i)
        os.makedirs(s, exist_ok=True)
        a = rng.uniform(-2, 2, (M, K)).astype(np.float32)
        y = (a.astype(np.float64) @ W.T.astype(np.float64) + bias).astype(np.float32)
        for name, arr, fn in (("a", a, "input_0.pb"), ("y", y, "output_0.pb")):
            with open(os.path.join(s, fn), "wb") as f:
                f.write(numpy_helper.from_array(arr, name).SerializeToString())
    r = subprocess.run([shardserve, "onnx-test", os.path.dirname(d)], capture_output=True, text=True)
    last = (r.stdout.strip().splitlines() or [""])[-1]
    ok = r.returncode == 0 and last.startswith("1 passed, 0 failed")
    print("%s level 0 re-planned over 6 row counts in one session: %s" % ("PASS" if ok else "FAIL", last))
    return ok


def rel_l2(x, ref):
    return float(np.linalg.norm(x - ref) / np.linalg.norm(ref))


def main():
    shardserve, out = sys.argv[1], sys.argv[2]
    vnni = "avx512_vnni" in open("/proc/cpuinfo").read()
    failures = total = 0
    for bits, K, N, block in ((4, 256, 200, 32), (8, 96, 70, 16)):
        for M in (1, 5, 70):
            d = os.path.join(out, "b%d_m%d" % (bits, M))
            state = rng.bit_generator.state
            m0, W, bias = make(d, K, N, block, bits, 0)
            rng.bit_generator.state = state  # the same weights for level 4
            m4, W4, _ = make(d, K, N, block, bits, 4)
            assert np.array_equal(W, W4)
            a = rng.uniform(-2, 2, (M, K)).astype(np.float32)
            ref = a.astype(np.float64) @ W.T.astype(np.float64) + bias
            y0 = run(shardserve, m0, a, os.path.join(d, "l0"))
            log = []
            y4 = run(shardserve, m4, a, os.path.join(d, "l4"), log=log)
            yw = run(shardserve, m0, a, os.path.join(d, "w8"), ("--weights", "int8"))
            e0, e4, ew = rel_l2(y0, ref), rel_l2(y4, ref), rel_l2(yw, ref)
            checks = [("level 0 within 1e-5 of numpy", e0 <= 1e-5),
                      ("level 4 within 1e-2 of numpy", e4 <= 1e-2),
                      ("--weights int8 equals level 4", np.array_equal(yw, y4)),
                      ("level 4 %s the float32 run" % ("differs from" if vnni else "equals"),
                       (not np.array_equal(y4, y0)) if vnni else np.array_equal(y4, y0))]
            if vnni:  # 4-bit weights: the kernel on the 4-bit values, any rows; 8-bit: the int8 copy
                want = ("on the 4-bit weights as stored" if bits == 4
                        else "on requantized %d-bit weights" % bits)
                checks.append(("level 4 runs the VNNI kernel " + want, last_kernel(log, want)))
            if vnni and bits == 4 and M > 4:  # speed over memory: the int8 copy for many rows
                logc = []
                yc = run(shardserve, m4, a, os.path.join(d, "l4c"), log=logc,
                         env_add={"SHARDSERVE_NBITS_COPY": "int8"})
                checks.append(("SHARDSERVE_NBITS_COPY=int8 takes the int8 copy within 1e-2",
                               rel_l2(yc, ref) <= 1e-2 and
                               last_kernel(logc, "on requantized 4-bit weights")))
            if bits == 4 and M == 1:
                checks.append(("re-plans", replanned(shardserve, out, m0, W, bias, K)))
            for what, ok in checks:
                print("%s bits=%d M=%d: %s (rel L2: level 0 %.2e, level 4 %.2e, --weights int8 %.2e)"
                      % ("PASS" if ok else "FAIL", bits, M, what, e0, e4, ew))
                failures += not ok
                total += 1
    print("%d passed, %d failed" % (total - failures, failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
