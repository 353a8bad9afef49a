#!/usr/bin/python3
"""Interleaved A/B latency comparison: shardserve (bench_runtime) vs onnxruntime-node (bench_ort.js).

Called by bench/run_runtime.sh; standard library only. For every (model, batch, threads) case both
runtimes are started once in --serve mode (each loads the model and warms up), then driven in
alternating rounds A B, B A, A B, ... of about --round-seconds each, so that a noisy neighbour on
the shared machine hits both sides alike. Medians are over all timed calls of a side; the ratio
column is ORT median / shardserve median (> 1: shardserve is faster), and "round ratios" gives
the range of that ratio over the individual rounds, which shows how much noise there was.
"CPU/call" is the process CPU time (all threads, spin-waiting included) per call, median over
rounds: less sensitive than wall time to being descheduled by neighbours, but it counts the
spinning of idle pool threads.

The ready lines carry output checksums; a side whose checksum differs from the other's is flagged
in the "check" column (it would mean the two runtimes did not compute the same thing).
"""
import argparse
import os
import select
import statistics
import subprocess
import sys
import time

CASES = [  # label, model folder, batch label, {graph input: npy file}
    ("seed MatMul+Neg", "seed", "128", {"x": "x.npy"}),
    ("MLP 4x4096 Relu", "mlp", "1", {"x": "x_b1.npy"}),
    ("MLP 4x4096 Relu", "mlp", "32", {"x": "x_b32.npy"}),
    # the same MLP as torch.onnx exports nn.Linear on 2-D input (Gemm, transB, bias)
    ("MLP 4x4096 Linear+Relu (Gemm transB)", "mlpgemm", "1", {"x": "x_b1.npy"}),
    ("MLP 4x4096 Linear+Relu (Gemm transB)", "mlpgemm", "8", {"x": "x_b8.npy"}),
    ("BERT-tiny s8", "bert", "2", {"input_ids": "input_ids.npy", "attention_mask": "attention_mask.npy",
                                   "token_type_ids": "token_type_ids.npy"}),
    ("GPT-2-tiny s8", "gpt2", "2", {"input_ids": "input_ids.npy", "attention_mask": "attention_mask.npy"}),
    # bench/models.py's larger random-weight models (batch 1; sequence 128 or 224x224 images)
    ("BERT-base encoder s128", "bertbase", "1", {"input_ids": "input_ids.npy", "attention_mask": "attention_mask.npy",
                                                 "token_type_ids": "token_type_ids.npy"}),
    ("GPT-2-small decoder, 2 blocks s128", "gpt2small", "1",
     {"input_ids": "input_ids.npy", "attention_mask": "attention_mask.npy"}),
    ("MobileNetV2 224x224", "mobilenet", "1", {"x": "x.npy"}),
    ("ResNet-50 224x224", "resnet", "1", {"x": "x.npy"}),
    # int8 in onnxruntime's QOperator format: 8 QLinearConv 64x64 3x3 on 56x56 (models.py qresnet)
    ("QOperator int8 ResNet stage 56x56", "qresnet", "1", {"x": "x.npy"}),
    # the MLP's shape as MatMulNBits 4-bit weights, accuracy_level 4 (models.py mlp4bit)
    ("MLP 4x4096 Relu, MatMulNBits 4-bit", "mlp4bit", "1", {"x": "x_b1.npy"}),
    ("MLP 4x4096 Relu, MatMulNBits 4-bit", "mlp4bit", "32", {"x": "x_b32.npy"}),
    # BERT-base as onnxruntime's quantize_dynamic writes it (models.py qbertbase)
    ("BERT-base s128, dynamic int8 MatMuls", "qbertbase", "1",
     {"input_ids": "input_ids.npy", "attention_mask": "attention_mask.npy", "token_type_ids": "token_type_ids.npy"}),
    # shardserve with MatMul weights held as bf16 (f32 accumulation), against onnxruntime's f32
    ("MLP 4x4096 Relu, ours bf16 weights", "mlp", "1", {"x": "x_b1.npy"}),
    ("MLP 4x4096 Relu, ours bf16 weights", "mlp", "32", {"x": "x_b32.npy"}),
    # ... as int8 (a scale per column; activations quantized per row on every call) on CPUs with
    # AVX512-VNNI, float32 elsewhere
    ("MLP 4x4096 Relu, ours int8 weights", "mlp", "1", {"x": "x_b1.npy"}),
    ("MLP 4x4096 Relu, ours int8 weights", "mlp", "32", {"x": "x_b32.npy"}),
]
# Floating-point work per call where it is known (model folder, batch label): the MLP is 4 MatMuls
# of batch x 4096 x 4096 (the Relus are noise); models.py writes a flops.txt (2 x the MatMul/Conv
# multiply-adds) beside the models it exports from torch, read by flops_of(); the table quotes these rows as GFLOP/s and as a
# fraction of the CPU's f32 FMA peak measured in the same run (bench_runtime --fma-peak).
FLOPS = {("mlp", "1"): 4 * 2 * 1 * 4096 * 4096, ("mlp", "32"): 4 * 2 * 32 * 4096 * 4096,
         ("mlpgemm", "1"): 4 * 2 * 1 * 4096 * 4096, ("mlpgemm", "8"): 4 * 2 * 8 * 4096 * 4096}
REAL_TOL = 1e-2  # real models: float16 weights and long reductions round differently per runtime
BF16_TOL = 2e-2  # checksum agreement for bf16 rows (the op test bounds the L2 error at 1e-2)
INT8_TOL = 5e-2  # ... for int8 rows (each operand off by up to half an int8 step)
INT8_MODELS = {"mlp4bit"}  # models whose nodes allow int8 math in both runtimes (accuracy_level 4)


class Side:
    """One runtime process in --serve mode."""

    def __init__(self, name, argv, timeout, env=None):
        self.name, self.error, self.ready = name, None, {}
        self.times = []       # ns, all rounds
        self.round_medians = []
        self.cpu_per_call = []  # ns of process CPU time per call, one entry per round
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, bufsize=1, env=env)
        line = self._readline(timeout)
        if line is None or not line.startswith("ready"):
            try:
                self.proc.wait(timeout=5)
                err = self.proc.stderr.read()
            except subprocess.TimeoutExpired:
                err = ""
            self.error = (err.strip().splitlines() or [line or "no ready line"])[-1]
            if "unsupported" in self.error:  # drop the path prefixes, keep the reason
                self.error = self.error[self.error.index("unsupported"):]
            self.close()
            return
        for kv in line.split()[1:]:
            k, _, v = kv.partition("=")
            self.ready[k] = v

    def _readline(self, timeout):
        r, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not r:
            return None
        line = self.proc.stdout.readline()
        return line.strip() if line else None

    def run(self, n, timeout):
        self.proc.stdin.write(f"run {n}\n")
        self.proc.stdin.flush()
        line = self._readline(timeout)
        if not line or not line.startswith("times"):
            self.error = "no answer to run"
            self.close()
            return
        t = [int(x) for x in line.split()[1:] if not x.startswith("cpu=")]
        cpu = [int(x[4:]) for x in line.split()[1:] if x.startswith("cpu=")]
        if cpu:
            self.cpu_per_call.append(cpu[0] / len(t))
        self.times += t
        self.round_medians.append(statistics.median(t))

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()

    def ok(self):
        return self.error is None

    def pct(self, q):
        s = sorted(self.times)
        return s[int(q * (len(s) - 1) + 0.5)] / 1e6


def fmt_ms(ms):
    if ms < 1:
        return f"{ms * 1e3:.1f} us"
    return f"{ms:.2f} ms"


def checksums_agree(a, b, rel=1e-3):
    for key in ("asum", "sum"):
        x, y = float(a.ready.get(key, "nan")), float(b.ready.get(key, "nan"))
        tol = rel * max(1.0, float(a.ready.get("asum", "1")))
        if not abs(x - y) <= tol:
            return False
    return True


def real_cases(root):
    """(label, folder, batch, inputs) of each bench/real_cases.py folder under root, in the order
    real_cases.py lists them (the folder name is the case name in the real-models cache)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from real_cases import REAL
    cases = []
    for name, label in REAL:
        listing = os.path.join(root, name, "inputs.txt")
        if not os.path.isfile(listing):
            continue
        with open(listing) as f:
            inputs = dict(line.split() for line in f if line.strip())
        cases.append((label, os.path.join(root, name), "1", inputs))
    return cases


def flops_of(d, folder, batch):
    if (folder, batch) in FLOPS:
        return FLOPS[(folder, batch)]
    try:
        with open(os.path.join(d, "flops.txt")) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def run_case(args, label, folder, batch, inputs, threads):
    d = os.path.join(args.models, folder)  # an absolute folder (real models) stays as it is
    model = os.path.join(d, "model.onnx")
    ins = []
    for name, f in inputs.items():
        ins += ["--input", f"{name}={os.path.join(d, f)}"]
    common = [model] + ins + ["--threads", str(threads), "--warmup", str(args.warmup), "--serve"]
    reduced = "bf16" if "bf16" in label else "int8" if "int8" in label else None
    bf16 = reduced is not None
    a = Side("shardserve", [args.bench] + common + (["--weights", reduced] if reduced else []), args.timeout)
    b = Side("ort", ["node", args.ort] + common, args.timeout)
    # --kernels-also: the same f32 row again with SHARDSERVE_KERNELS forced, interleaved with both
    extras = []
    if args.kernels_also and not bf16 and not os.path.isabs(folder):
        for mode in args.kernels_also.split(","):
            env = dict(os.environ, SHARDSERVE_KERNELS=mode)
            extras.append((mode, Side(f"shardserve {mode}", [args.bench] + common, args.timeout, env)))
    row = {"label": label, "batch": batch, "threads": threads, "a": a, "b": b, "extras": extras,
           "flops": flops_of(d, folder, batch)}
    live = [s for s in [a] + [x for _, x in extras] + [b] if s.ok()]
    if live:
        warm = max(float(s.ready["warm_ms"]) for s in live)
        n = max(2, min(args.max_iters, int(args.round_seconds * 1e3 / max(warm, 1e-3))))
        for r in range(args.rounds):
            for s in (live if r % 2 == 0 else live[::-1]):
                if s.ok():
                    s.run(n, args.timeout)
            # Re-size rounds from the mean (tails included) so each lasts about --round-seconds.
            means = [statistics.mean(s.times) / 1e9 for s in live if s.ok() and s.times]
            if means:
                n = max(2, min(args.max_iters, int(args.round_seconds / max(means))))
        row["iters"] = n
    for s in [a, b] + [x for _, x in extras]:
        s.close()
    tol = INT8_TOL if reduced == "int8" or folder in INT8_MODELS else BF16_TOL if bf16 else REAL_TOL if os.path.isabs(folder) else 1e-3
    agree = checksums_agree(a, b, tol)
    row["check"] = ("ok" if agree else "MISMATCH") if a.ok() and b.ok() else "-"
    for mode, x in extras:
        row[f"check {mode}"] = ("ok" if checksums_agree(x, b, tol) else "MISMATCH") if x.ok() and b.ok() else "-"
    return row


def fma_peaks(args, threads):
    """{threads: (isa, GFLOP/s)}: the f32 FMA peak of `threads` cores, as the CPU-time rate of
    independent FMA chains (what the cores do while they run; on a quiet machine the wall rate)."""
    peaks = {}
    for t in threads:
        p = subprocess.run([args.bench, "--fma-peak", str(t)], capture_output=True, text=True)
        kv = dict(x.partition("=")[::2] for x in p.stdout.split()[1:])
        try:
            peaks[t] = (kv["isa"], float(kv["gflops_cpu"]), float(kv["gflops_wall"]),
                        float(kv["read_gbps"]))
        except (KeyError, ValueError):
            pass
    return peaks


def print_table(rows, peaks):
    hdr = ["model", "batch", "threads", "shardserve median (p10-p90)", "ORT median (p10-p90)",
           "ratio ORT/ours", "round ratios", "throughput ours / ORT (samples/s)",
           "CPU/call ours / ORT", "check"]
    if peaks:
        hdr[-1:-1] = ["GFLOP/s ours / ORT", "of FMA peak ours / ORT",
                      "per busy core (CPU time) of 1-core peak ours / ORT"]
    print("| " + " | ".join(hdr) + " |")
    print("|" + "|".join("---" for _ in hdr) + "|")
    expanded = []
    for r in rows:
        expanded.append(r)
        for mode, x in r.get("extras", []):
            expanded.append(dict(r, a=x, label=f"{r['label']}, ours SHARDSERVE_KERNELS={mode}",
                                 check=r[f"check {mode}"]))
    for r in expanded:
        a, b = r["a"], r["b"]
        cells = [r["label"], r["batch"], str(r["threads"])]
        for s in (a, b):
            if s.ok():
                cells.append(f"{fmt_ms(s.pct(0.5))} ({fmt_ms(s.pct(0.1))}-{fmt_ms(s.pct(0.9))})")
            else:
                cells.append(f"n/a: {s.error}")
        if a.ok() and b.ok():
            cells.append(f"**{b.pct(0.5) / a.pct(0.5):.2f}**")
            rr = [y / x for x, y in zip(a.round_medians, b.round_medians)]
            cells.append(f"{min(rr):.2f}-{max(rr):.2f}")
        else:
            cells += ["-", "-"]
        bs = float(r["batch"])
        tp = [f"{bs / s.pct(0.5) * 1e3:,.0f}" if s.ok() else "-" for s in (a, b)]
        cells.append(" / ".join(tp))
        cpu = [fmt_ms(statistics.median(s.cpu_per_call) / 1e6) if s.ok() and s.cpu_per_call else "-"
               for s in (a, b)]
        cells.append(" / ".join(cpu))
        if peaks:
            f, pk = r.get("flops"), peaks.get(r["threads"])
            # one core's peak: measured, or the row's thread count's share of its peak
            pk1 = peaks.get(1) or (pk and (pk[0], pk[1] / r["threads"]))
            if f and pk:
                g = [f / (s.pct(0.5) * 1e6) if s.ok() else None for s in (a, b)]
                cells.append(" / ".join(f"{x:.0f}" if x else "-" for x in g))
                cells.append(" / ".join(f"{100 * x / pk[1]:.0f}%" if x else "-" for x in g))
                # flops over the process CPU time of a call (all threads; spin-waiting counts)
                c = [f / statistics.median(s.cpu_per_call) if s.ok() and s.cpu_per_call else None
                     for s in (a, b)]
                cells.append(" / ".join(f"{100 * x / pk1[1]:.0f}%" if x else "-" for x in c))
            else:
                cells += ["-", "-", "-"]
        cells.append(r["check"])
        print("| " + " | ".join(cells) + " |")
    sys.stdout.flush()


def load_line(args):
    d = os.path.join(args.models, "big")
    model = os.path.join(d, "model.onnx")
    size = os.path.getsize(os.path.join(d, "weights.bin")) / (1 << 30)
    out = {}
    for name, argv in (("shardserve", [args.bench, model, "--load-only", "--threads", "1"]),
                       ("ort", ["node", args.ort, model, "--load-only", "--threads", "1"])):
        p = subprocess.run(argv, capture_output=True, text=True, timeout=args.timeout)
        line = p.stdout.strip() or p.stderr.strip()
        out[name] = line
    print(f"\nLoad, {size:.2f} GiB of external-data weights (16 x MatMul 4096x4096 f32, x[1,4096]). shardserve "
          "first (page cache cold when models.py evicted it; its first run reads the file), then ORT "
          "(page cache warm):")
    for name, line in out.items():
        print(f"  {name:10s} {line}")
    a = dict(kv.partition("=")[::2] for kv in out["shardserve"].split()[1:] if "=" in kv)
    try:
        ms, mb = float(a["create_ms"]), float(a["rss_anon_growth_mb"])
        verdict = "PASS" if ms < 1000 and mb < 50 else "FAIL"
        print(f"  target create < 1000 ms and RssAnon growth < 50 MB: {verdict} ({ms:.1f} ms, {mb:.1f} MB)")
    except (KeyError, ValueError):
        print("  target: could not parse shardserve's load line")


def header(args):
    rev = os.environ.get("SS_BENCH_REV") or subprocess.run(["git", "-C", os.path.dirname(os.path.abspath(__file__)), "describe", "--always",
                          "--dirty"], capture_output=True, text=True).stdout.strip() or "unknown"
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    flags = set()
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(next(l.split(":", 1)[1].split() for l in f if l.startswith("flags")))
    except (OSError, StopIteration):
        pass
    isa = [x for x in ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8") if x in flags]
    info = subprocess.run([args.bench, "--print-kernels"], capture_output=True, text=True).stdout.strip()
    print(f"commit {rev}; {os.cpu_count()} CPUs ({cpu}); loadavg {os.getloadavg()[0]:.2f}; "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}; "
          f"{args.rounds} interleaved rounds of ~{args.round_seconds}s per side")
    print(f"CPU ISA: {' '.join(isa) or '(none of the listed)'}; shardserve: {info or '(unknown)'}; "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}, "
          f"GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT', '(unset)')}, "
          f"pool {'own pthreads' if os.environ.get('SHARDSERVE_POOL') == 'own' else 'libgomp team'}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", required=True, help="bench_runtime binary")
    ap.add_argument("--ort", required=True, help="bench/ort/bench_ort.js")
    ap.add_argument("--models", required=True, help="bench/models.py output folder")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--round-seconds", type=float, default=0.5)
    ap.add_argument("--max-iters", type=int, default=5000)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--only", default="",
                    help="comma-separated model folders (seed,mlp,mlpgemm,bert,gpt2,bertbase,gpt2small,"
                         "mobilenet,resnet,big,real)")
    ap.add_argument("--real", default="", help="bench/real_cases.py output folder (the 'real' rows)")
    ap.add_argument("--kernels-also", default="",
                    help="comma-separated SHARDSERVE_KERNELS modes to run as extra shardserve sides "
                         "of the f32 rows (e.g. onednn,blas), interleaved with the others")
    ap.add_argument("--no-peak", dest="peak", action="store_false",
                    help="skip the FMA peak measurement (GFLOP/s and %% of peak columns)")
    args = ap.parse_args()
    only = set(args.only.split(",")) if args.only else None
    header(args)
    ts = sorted({int(x) for x in args.threads.split(",")})
    peaks_before = fma_peaks(args, ts) if args.peak else {}
    rows = []
    cases = CASES + ([c for c in real_cases(args.real) if not only or "real" in only] if args.real else [])
    for label, folder, batch, inputs in cases:
        if only and folder not in only and not os.path.isabs(folder):
            continue
        for t in (int(x) for x in args.threads.split(",")):
            t0 = time.time()
            rows.append(run_case(args, label, folder, batch, inputs, t))
            print(f"  ... {label} b{batch} t{t}: {time.time() - t0:.1f}s", file=sys.stderr)
    peaks = {}
    if args.peak:
        after = fma_peaks(args, ts)
        for t in ts:  # the better of the measurements before and after the rows
            got = [p[t] for p in (peaks_before, after) if t in p]
            if got:
                best = max(got, key=lambda p: p[1])
                peaks[t] = best[:3] + (max(p[3] for p in got),)
        for t, (isa, cpu, wall, bw) in sorted(peaks.items()):
            print(f"f32 FMA peak, {isa} chains, {t} thread(s): {cpu:.1f} GFLOP/s while running (CPU-time "
                  f"rate, best of before and after the rows; the % of peak column divides by it), "
                  f"{wall:.1f} GFLOP/s wall; memory read {bw:.1f} GB/s")
    if rows:
        print_table(rows, peaks)
    for t, p in sorted(peaks.items()):
        if any(r["label"].startswith("MLP") for r in rows):
            mb = 4 * 4096 * 4096 * 4 / 1e6  # the MLP's f32 weights, read once per call
            print(f"  MLP floors at {t} thread(s): f32 weights {mb:.0f} MB / {p[3]:.1f} GB/s = "
                  f"{mb / p[3]:.1f} ms; batch 32's {FLOPS[('mlp', '32')] / 1e9:.2f} GFLOP / "
                  f"{p[1]:.0f} GFLOP/s = {FLOPS[('mlp', '32')] / 1e6 / p[1]:.1f} ms")
    if not only or "big" in only:
        load_line(args)


if __name__ == "__main__":
    main()
