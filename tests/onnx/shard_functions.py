#!/usr/bin/python3
"""A model made of model-local functions (torch.onnx's export_modules_as_functions, nested) split
by `shardserve shard` over 2 ranks (tensor-parallel) and over 2 pipeline stages, run with
`shardserve run --shards`: each equals onnxruntime's output (the case onnx_ort_function_cases_make
wrote). Usage: shard_functions.py SHARDSERVE CASE_DIR WORK_DIR
"""
import glob
import os
import shutil
import subprocess
import sys

import numpy as np
import onnx
from onnx import numpy_helper


def main(ss, case, work):
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    data = os.path.join(case, "test_data_set_0")
    x = numpy_helper.to_array(onnx.load_tensor(os.path.join(data, "input_0.pb")))
    want = numpy_helper.to_array(onnx.load_tensor(os.path.join(data, "output_0.pb")))
    np.save(os.path.join(work, "x.npy"), x)
    bad = 0
    for name, args in (("2 ranks", ["--ranks", "2"]), ("2 stages", ["--ranks", "2", "--stages", "2"])):
        split, outs = os.path.join(work, name.replace(" ", "_")), os.path.join(work, "out")
        shutil.rmtree(outs, ignore_errors=True)
        subprocess.run([ss, "shard", os.path.join(case, "model.onnx"), *args, "--out", split],
                       check=True, capture_output=True, timeout=120)
        subprocess.run([ss, "run", "--shards", split, "--input", "x=" + os.path.join(work, "x.npy"),
                        "--output-dir", outs], check=True, capture_output=True, timeout=120)
        got = np.load(glob.glob(os.path.join(outs, "*.npy"))[0])
        err = float(np.abs(got - want).max()) if got.shape == want.shape else float("inf")
        good = err <= 1e-5
        bad += not good
        print("%s %s: shape %s, max abs error %.3g against onnxruntime" % (
            "ok  " if good else "FAIL", name, got.shape, err))
    print("%d passed, %d failed" % (2 - bad, bad))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main(*sys.argv[1:4])
