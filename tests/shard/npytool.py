#!/usr/bin/python3
"""Python helpers for the sharding tests (tests/shard/*.sh).

  npytool.py case CASE_DIR OUT_DIR
      Convert CASE_DIR/test_data_set_0/input_*.pb to OUT_DIR/<input name>.npy. Prints one line
      per input, "NAME=OUT_DIR/NAME.npy", then a line "SHAPE NAME=D0,D1,..." per input (for
      shardserve shard --input-shape).
  npytool.py const FILE.npy VALUE [ATOL]
      Exit 1 unless every element of FILE.npy equals VALUE (within ATOL, default 0).
  npytool.py compare REF_DIR ATOL NAME[,NAME...] DIR...
      Exit 1 unless, for every DIR and NAME, DIR/NAME.npy has the shape and dtype of
      REF_DIR/NAME.npy and agrees with it within ATOL (absolute, plus ATOL relative to the
      magnitude).
  npytool.py expected CASE_DIR DIR ATOL
      Compare DIR/<output name>.npy with CASE_DIR/test_data_set_0/output_*.pb (the exporter's
      reference outputs), within ATOL.
  npytool.py random FILE.npy D0,D1,... [SEED]
      Write a float32 array of that shape with values uniform in [-1, 1).
Every check prints what it compared, so a failing test explains itself.
"""
import glob
import os
import sys

import numpy as np
import onnx
from onnx import numpy_helper


def load_pb(path):
    t = onnx.TensorProto()
    with open(path, "rb") as f:
        t.ParseFromString(f.read())
    return t.name, numpy_helper.to_array(t)


def case_inputs(case_dir, out_dir):
    model = onnx.load(os.path.join(case_dir, "model.onnx"), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in inits]
    files = sorted(glob.glob(os.path.join(case_dir, "test_data_set_0", "input_*.pb")),
                   key=lambda p: int(p.rsplit("_", 1)[1].split(".")[0]))
    if len(files) != len(names):
        sys.exit(f"{case_dir}: {len(files)} input files for {len(names)} graph inputs")
    os.makedirs(out_dir, exist_ok=True)
    shapes = []
    for path, gname in zip(files, names):
        name, arr = load_pb(path)
        name = name or gname
        out = os.path.join(out_dir, name + ".npy")
        np.save(out, arr)
        print(f"{name}={out}")
        shapes.append(f"SHAPE {name}={','.join(str(d) for d in arr.shape)}")
    print("\n".join(shapes))


def describe(a):
    return f"shape {a.shape} dtype {a.dtype}"


def check_close(label, got, want, atol):
    if got.shape != want.shape or got.dtype != want.dtype:
        print(f"FAIL {label}: got {describe(got)}, want {describe(want)}")
        return False
    if got.size == 0:
        print(f"ok   {label}: empty")
        return True
    g = got.astype(np.float64)
    w = want.astype(np.float64)
    if not np.all(np.isfinite(g) == np.isfinite(w)):
        print(f"FAIL {label}: non-finite values differ")
        return False
    diff = np.abs(g - w)
    diff[~np.isfinite(diff)] = 0
    tol = atol + atol * np.abs(w)
    tol[~np.isfinite(tol)] = np.inf
    worst = float(diff.max())
    bad = int(np.count_nonzero(diff > tol))
    if bad:
        i = np.unravel_index(int(np.argmax(diff - tol)), diff.shape)
        print(f"FAIL {label}: {bad}/{got.size} elements differ by more than {atol}; "
              f"worst at {tuple(int(x) for x in i)}: got {g[i]!r} want {w[i]!r}; max |diff| {worst:.3g}")
        return False
    print(f"ok   {label}: {describe(got)}, max |diff| {worst:.3g} <= {atol}")
    return True


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "case":
        case_inputs(args[0], args[1])
    elif cmd == "const":
        a = np.load(args[0])
        v = float(args[1])
        atol = float(args[2]) if len(args) > 2 else 0.0
        ok = a.size > 0 and bool(np.all(np.abs(a.astype(np.float64) - v) <= atol))
        lo, hi = (float(a.min()), float(a.max())) if a.size else (None, None)
        print(f"{'ok  ' if ok else 'FAIL'} {args[0]}: {describe(a)}, min {lo} max {hi}, want all {v}")
        sys.exit(0 if ok else 1)
    elif cmd == "compare":
        ref, atol, names, dirs = args[0], float(args[1]), args[2].split(","), args[3:]
        ok = bool(dirs)
        for d in dirs:
            for n in names:
                pa, pb = os.path.join(d, n + ".npy"), os.path.join(ref, n + ".npy")
                if not os.path.exists(pa) or not os.path.exists(pb):
                    print(f"FAIL {n}: missing {pa if not os.path.exists(pa) else pb}")
                    ok = False
                    continue
                ok &= check_close(f"{os.path.basename(d)} {n} vs unsharded", np.load(pa), np.load(pb), atol)
        sys.exit(0 if ok else 1)
    elif cmd == "compare_rel":
        # compare_rel REF REL MUST_DIFFER NAMES DIR: |got - want| <= REL * max|want| for every
        # output; MUST_DIFFER=1 also wants some difference (reduced precision took effect), 0 none
        ref, rel, must_differ, names, d = args[0], float(args[1]), args[2] == "1", args[3].split(","), args[4]
        ok = True
        for n in names:
            got, want = np.load(os.path.join(d, n + ".npy")), np.load(os.path.join(ref, n + ".npy"))
            if got.shape != want.shape or got.dtype != want.dtype:
                print(f"FAIL {n}: got {describe(got)}, want {describe(want)}")
                ok = False
                continue
            scale = float(np.abs(want.astype(np.float64)).max()) or 1.0
            worst = float(np.abs(got.astype(np.float64) - want).max())
            good = worst <= rel * scale and (worst > 0) == must_differ
            print(f"{'ok  ' if good else 'FAIL'} {n}: max |diff| {worst:.3g} vs {rel} x max |want| "
                  f"{scale:.3g}{', must differ' if must_differ else ', must be equal'}")
            ok &= good
        sys.exit(0 if ok else 1)
    elif cmd == "expected":
        case_dir, out_dir, atol = args[0], args[1], float(args[2])
        ok = True
        for path in sorted(glob.glob(os.path.join(case_dir, "test_data_set_0", "output_*.pb"))):
            name, want = load_pb(path)
            p = os.path.join(out_dir, name + ".npy")
            if not os.path.exists(p):
                print(f"FAIL {name}: {p} missing")
                ok = False
                continue
            ok &= check_close(f"{name} vs exporter reference", np.load(p), want, atol)
        sys.exit(0 if ok else 1)
    elif cmd == "random":
        shape = tuple(int(d) for d in args[1].split(","))
        seed = int(args[2]) if len(args) > 2 else 0
        rng = np.random.default_rng(seed)
        np.save(args[0], rng.uniform(-1, 1, shape).astype(np.float32))
    else:
        sys.exit(f"unknown command {cmd}\n{__doc__}")


if __name__ == "__main__":
    main()
