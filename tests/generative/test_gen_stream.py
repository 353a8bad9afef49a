#!/usr/bin/python3
"""Tokens streamed over gRPC as they are sampled, and generations stopped when their client goes
away: tiny GPT-2 / Llama served as a generative servable (test_serve_generate.py's setup).

- shardserve.Stream/PredictStream (MindSpore's messages), KServe's ModelStreamInfer (Triton's
  decoupled convention: triton_final_response false on each piece, true on the whole reply) and
  `shardserve infer --stream` (the C client): the pieces concatenated equal the final reply's
  tokens, which equal the unary Predict's and PyTorch's, whole (1 rank) and over 2 ranks;
- a client that disconnects after a few streamed tokens (PredictStream, ModelStreamInfer), or
  whose unary Predict / ModelInfer times out, has its sequence freed at once: running sequences
  and KV blocks used return to 0 after far fewer model calls than max_tokens needs, and another
  client's concurrent request is unaffected (it equals its run alone);
- bad input over either stream is answered with an error naming it, not a hang; a servable that
  does not stream answers PredictStream with one message.

Usage: test_gen_stream.py CASE_DIR [case ...]; prints ok/FAIL per case and "N passed, N failed"."""

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

import grpc
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import test_serve_generate as gen  # noqa: E402  (CASE from argv[1], the servable's setup)
from test_serve_generate import Cluster, run_cases, ssc, instance, metric  # noqa: E402
import grpc_service_pb2 as kpb  # noqa: E402

PROMPT, REF = gen.PROMPT, gen.REF
STREAM = "/shardserve.Stream/PredictStream"
KSTREAM = "/inference.GRPCInferenceService/ModelStreamInfer"
KINFER = "/inference.GRPCInferenceService/ModelInfer"
LONG = 240  # max_tokens of a generation meant to be cut short (prompt + 240 < n_pos 256)
SERVE = {"max_running": 32, "max_context": 256}


def channel(c):
    return grpc.insecure_channel(c.grpc, options=[("grpc.enable_http_proxy", 0)])


def ms_stream(c, inst):
    """PredictStream's messages, each parsed as the Python client parses a PredictReply."""
    ch = channel(c)
    call = ch.unary_stream(STREAM, request_serializer=ssc.PredictRequest.SerializeToString,
                           response_deserializer=ssc.PredictReply.FromString)
    req = ssc._build_request("gen", "generate", 0, [inst])
    try:
        return [ssc._parse_reply(m) for m in call(req, timeout=120)]
    finally:
        ch.close()


def kserve_request(inst, rid="r"):
    r = kpb.ModelInferRequest(model_name="gen.generate", id=rid)
    for name, value in inst.items():
        a = np.asarray(value)
        r.inputs.add(name=name, datatype={np.int64: "INT64", np.float32: "FP32"}[a.dtype.type],
                     shape=list(a.shape))
        r.raw_input_contents.append(a.tobytes())
    return r


def kserve_tokens(resp):
    """The int64 "tokens" output of a ModelInferResponse (raw contents, as requested)."""
    names = [o.name for o in resp.outputs]
    return list(np.frombuffer(resp.raw_output_contents[names.index("tokens")], np.int64))


def final_flag(resp):
    p = resp.parameters.get("triton_final_response")
    return None if p is None else p.bool_param


def kserve_stream(c, insts):
    ch = channel(c)
    call = ch.stream_stream(KSTREAM, request_serializer=lambda m: m.SerializeToString(),
                            response_deserializer=kpb.ModelStreamInferResponse.FromString)
    try:
        return list(call(iter([kserve_request(x, str(i)) for i, x in enumerate(insts)]),
                         timeout=120))
    finally:
        ch.close()


def check_pieces(pieces, final, what):
    streamed = [int(t) for p in pieces for t in p]
    assert len(pieces) >= 2, "%s: %d piece(s) before the final reply" % (what, len(pieces))
    assert streamed == list(final), "%s: streamed %s, final %s" % (what, streamed, list(final))


def c_client_stream(c, inst):
    """`shardserve infer --stream`: the "stream:" line and the final tokens it prints."""
    with tempfile.TemporaryDirectory(prefix="ss-gen-stream-") as d:
        args = [os.environ["SHARDSERVE"], "infer", "--address", c.grpc, "--servable", "gen", "--method", "generate",
                "--stream", "--output-dir", d]
        for name, value in inst.items():
            path = os.path.join(d, "in_%s.npy" % name)
            np.save(path, np.asarray(value))
            args += ["--input", "%s=%s" % (name, path)]
        out = subprocess.run(args, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        line = [x for x in out.stdout.splitlines() if x.startswith("stream:")]
        assert line, out.stdout
        return [int(t) for t in line[0].split()[1:]], list(np.load(os.path.join(d, "tokens.npy")))


def streams_equal_unary(ranks):
    with Cluster() as c:
        gen.serve_generative(c, ranks, SERVE)
        inst = instance(PROMPT, len(REF))
        unary = list(gen.generate(c, inst)["tokens"])
        assert unary == list(REF), (unary, list(REF))
        msgs = ms_stream(c, inst)
        final = msgs[-1][0]
        assert final["finish_reason"] in ("length", b"length"), final
        check_pieces([m[0]["tokens"] for m in msgs[:-1]], final["tokens"], "PredictStream")
        assert list(final["tokens"]) == unary
        resps = kserve_stream(c, [inst])
        assert not any(r.error_message for r in resps), resps[-1].error_message
        flags = [final_flag(r.infer_response) for r in resps]
        assert flags == [False] * (len(resps) - 1) + [True], flags
        check_pieces([kserve_tokens(r.infer_response) for r in resps[:-1]],
                     kserve_tokens(resps[-1].infer_response), "ModelStreamInfer")
        assert kserve_tokens(resps[-1].infer_response) == unary
        streamed, final_c = c_client_stream(c, inst)
        assert streamed == final_c == unary, (streamed, final_c, unary)
        print("    %d rank(s): %d tokens equal PyTorch's over Predict, and streamed in %d "
              "PredictStream / %d ModelStreamInfer pieces and by `infer --stream`" % (
                  ranks, len(unary), len(msgs) - 1, len(resps) - 1))


def test_stream_whole():
    streams_equal_unary(1)


def test_stream_two_ranks():
    streams_equal_unary(2)


def wait_idle(c, timeout=30):
    """Seconds until no sequence runs and no KV block is used."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if metric(c, "shardserve_sequences", state="running") == 0 and \
                metric(c, "shardserve_kv_blocks", state="used") == 0:
            return time.time() - t0
        time.sleep(0.02)
    raise AssertionError("sequences still running %d, KV blocks used %d after %d s" % (
        metric(c, "shardserve_sequences", state="running"),
        metric(c, "shardserve_kv_blocks", state="used"), timeout))


def drop_ms_stream(c, inst, after=3):
    """Read `after` pieces of a PredictStream, then go away."""
    ch = channel(c)
    call = ch.unary_stream(STREAM, request_serializer=ssc.PredictRequest.SerializeToString,
                           response_deserializer=ssc.PredictReply.FromString)
    it = call(ssc._build_request("gen", "generate", 0, [inst]), timeout=120)
    for _ in range(after):
        next(it)
    it.cancel()
    ch.close()


def drop_kserve_stream(c, inst, after=3):
    ch = channel(c)
    call = ch.stream_stream(KSTREAM, request_serializer=lambda m: m.SerializeToString(),
                            response_deserializer=kpb.ModelStreamInferResponse.FromString)
    it = call(iter([kserve_request(inst)]), timeout=120)
    for _ in range(after):
        next(it)
    it.cancel()
    ch.close()


def rank_pid(c):
    """The (one) rank the agents launcher started last (serve_generative's)."""
    launcher = c.procs[-1].pid
    with open("/proc/%d/task/%d/children" % (launcher, launcher)) as f:
        return int(f.read().split()[-1])


class Throttle:
    """Lets a process run about 1 ms in every 20 (SIGSTOP / SIGCONT): the tiny model's tokens
    then come far slower than a client on a loaded machine reacts to them."""

    def __init__(self, pid):
        self.pid, self.done = pid, threading.Event()
        self.thread = threading.Thread(target=self._run)

    def _run(self):
        while not self.done.is_set():
            os.kill(self.pid, signal.SIGSTOP)
            time.sleep(0.02)
            os.kill(self.pid, signal.SIGCONT)
            time.sleep(0.001)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join()
        os.kill(self.pid, signal.SIGCONT)


def timeout_unary(c, inst, kserve, seconds=0.5):
    """A unary call whose client gives up after `seconds`. The tiny model would answer long
    before any deadline, so its rank is stopped meanwhile: the server sees the call cancelled
    while the prefill waits, and once the rank resumes the sequence ends before its next call."""
    ch = channel(c)
    rank = rank_pid(c)
    os.kill(rank, signal.SIGSTOP)
    try:
        if kserve:
            ch.unary_unary(KINFER, request_serializer=lambda m: m.SerializeToString(),
                           response_deserializer=kpb.ModelInferResponse.FromString)(
                kserve_request(inst), timeout=seconds)
        else:
            ssc.Client(c.grpc, "gen", "generate")._predict(
                ssc._build_request("gen", "generate", 0, [inst]), timeout=seconds)
        raise AssertionError("a %d-token generation answered within %.3f s" % (LONG, seconds))
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.DEADLINE_EXCEEDED, e
    finally:
        os.kill(rank, signal.SIGCONT)
        ch.close()


def throttled(c, drop, inst):
    with Throttle(rank_pid(c)):
        drop(c, inst)


def test_cancel_on_disconnect():
    """Each way of going away, alone: far fewer model calls than LONG tokens need, then idle.
    Then one stream dropped while another client's request runs beside it: that one equals its
    run alone."""
    with Cluster() as c:
        gen.serve_generative(c, 1, SERVE)
        long_inst = instance(PROMPT, LONG)
        t0 = time.time()
        calls0 = metric(c, "shardserve_batch_size_count")
        full = gen.generate(c, long_inst)["tokens"]
        full_calls = metric(c, "shardserve_batch_size_count") - calls0
        full_s = time.time() - t0
        assert len(full) == LONG and full_calls >= LONG, (len(full), full_calls)
        ways = [("PredictStream dropped", lambda: throttled(c, drop_ms_stream, long_inst)),
                ("ModelStreamInfer dropped", lambda: throttled(c, drop_kserve_stream, long_inst)),
                ("Predict timed out", lambda: timeout_unary(c, long_inst, False)),
                ("ModelInfer timed out", lambda: timeout_unary(c, long_inst, True))]
        report = []
        for what, go in ways:
            before = metric(c, "shardserve_batch_size_count")
            go()
            idle_s = wait_idle(c)
            calls = metric(c, "shardserve_batch_size_count") - before
            report.append("%s: idle %.2f s later, %d calls" % (what, idle_s, calls))
            assert calls < LONG / 2, "%s: %d model calls (a whole run takes %d)" % (
                what, calls, full_calls)
        other = instance(PROMPT[:4], 60, temperature=0.8, top_k=10, seed=7)
        alone = list(gen.generate(c, other)["tokens"])
        beside = []
        t = threading.Thread(target=lambda: beside.append(list(gen.generate(c, other)["tokens"])))
        t.start()
        drop_ms_stream(c, long_inst)
        t.join(120)
        assert beside == [alone], (beside, alone)
        wait_idle(c)
        print("    a whole %d-token run: %d calls, %.2f s; %s; a request beside a dropped "
              "stream equals its run alone" % (LONG, full_calls, full_s, "; ".join(report)))


def error_of(parsed):
    """The error of a parsed PredictReply: the whole request's, or its one instance's."""
    one = parsed if isinstance(parsed, dict) else parsed[0]
    return one.get("error", "")


def test_bad_input_over_streams():
    with Cluster() as c:
        gen.serve_generative(c, 1, SERVE)
        bad = dict(instance(PROMPT, 4), max_tokens=np.int64(0))
        msgs = ms_stream(c, bad)
        assert len(msgs) == 1 and "max_tokens" in error_of(msgs[0]), msgs
        ch = channel(c)
        call = ch.unary_stream(STREAM, request_serializer=ssc.PredictRequest.SerializeToString,
                               response_deserializer=ssc.PredictReply.FromString)
        unknown = [ssc._parse_reply(m) for m in call(ssc._build_request(
            "nosuch", "generate", 0, [instance(PROMPT, 4)]), timeout=30)]
        ch.close()
        assert len(unknown) == 1 and "nosuch" in error_of(unknown[0]), unknown
        resps = kserve_stream(c, [bad, instance(PROMPT, 4)])
        errors = [r.error_message for r in resps if r.error_message]
        assert len(errors) == 1 and "max_tokens" in errors[0], errors
        good = [r for r in resps if not r.error_message and final_flag(r.infer_response)]
        assert len(good) == 1 and kserve_tokens(good[0].infer_response) == list(REF[:4]), resps
        print("    PredictStream: %s; unknown servable: %s; ModelStreamInfer: %s" % (
            error_of(msgs[0])[:60], error_of(unknown[0])[:60], errors[0][:60]))


def test_one_shot_servable_streams_once():
    """A servable that does not stream (the seed's MatMul+Neg) answers PredictStream with one
    message, Predict's reply."""
    from cluster import matmul_neg_model
    with Cluster() as c:
        path = os.path.join(c.dir, "matmul.onnx")
        matmul_neg_model(path)
        models = c.add_servable("neg", path, 1)
        c.serve([("neg", 1, c.write_rank_table(1))])
        c.agents(c.worker_addresses["neg"][0], models)
        c.wait_ready(1)
        x = {"x": np.ones((128, 96), np.float32)}
        unary = ssc.Client(c.grpc, "neg", "predict").infer([x])
        ch = channel(c)
        call = ch.unary_stream(STREAM, request_serializer=ssc.PredictRequest.SerializeToString,
                               response_deserializer=ssc.PredictReply.FromString)
        msgs = [ssc._parse_reply(m) for m in call(ssc._build_request("neg", "predict", 0, [x]),
                                                    timeout=30)]
        ch.close()
        assert len(msgs) == 1 and np.array_equal(msgs[0][0]["y"], unary[0]["y"]), msgs
        assert float(unary[0]["y"][0][0]) == -48.0, unary


CASES = [test_stream_whole, test_stream_two_ranks, test_cancel_on_disconnect,
         test_bad_input_over_streams, test_one_shot_servable_streams_once]

if __name__ == "__main__":
    sys.exit(run_cases(CASES, sys.argv[2:]))
