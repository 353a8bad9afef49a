#!/usr/bin/python3
"""`shardserve onnx-test` tolerances: an Identity case whose expected output is off by 0.001 at an
element near zero of an output whose largest magnitude is 100. The default tolerances fail it
(naming the element); --atol, --rtol and --atol-of-max each let it pass when wide enough and not
when too narrow; PASS names the largest error; a bad option value is a usage error.
Usage: onnx_test_tolerance.py SHARDSERVE OUTDIR
"""
import os
import subprocess
import sys

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper, numpy_helper

shardserve, out = sys.argv[1], sys.argv[2]
case = os.path.join(out, "near_zero")
os.makedirs(os.path.join(case, "test_data_set_0"), exist_ok=True)
graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "near_zero",
                          [helper.make_tensor_value_info("x", T.FLOAT, [2])],
                          [helper.make_tensor_value_info("y", T.FLOAT, [2])])
onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]),
          os.path.join(case, "model.onnx"))
for name, v in (("input_0", [100, 0.001]), ("output_0", [100, 0.002])):
    with open(os.path.join(case, "test_data_set_0", name + ".pb"), "wb") as f:
        f.write(numpy_helper.from_array(np.array(v, np.float32)).SerializeToString())

failures = 0


def expect(args, code, words):
    global failures
    r = subprocess.run([shardserve, "onnx-test", *args, case], capture_output=True, text=True)
    text = r.stdout + r.stderr
    ok = r.returncode == code and all(w in text for w in words)
    print(("ok   " if ok else "FAIL ") + " ".join(args or ["(defaults)"]) + ": " + text.strip().splitlines()[0])
    failures += not ok


expect([], 1, ["FAIL near_zero", "element 1"])
expect(["--atol", "0.0011"], 0, ["PASS near_zero (max abs error 0.001)"])
expect(["--atol", "0.0005"], 1, ["FAIL near_zero"])
expect(["--rtol", "0.6"], 0, ["PASS near_zero"])
expect(["--atol-of-max", "2e-5"], 0, ["PASS near_zero"])
expect(["--atol-of-max", "5e-6"], 1, ["FAIL near_zero"])
expect(["--atol-of-max", "-1"], 2, ["--atol-of-max needs a non-negative number"])
expect(["--rtol"], 2, ["--rtol needs a non-negative number"])
sys.exit(1 if failures else 0)
