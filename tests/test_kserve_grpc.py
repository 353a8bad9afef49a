"""The Open Inference Protocol's (KServe v2) gRPC service against ss_test_server, with a client
written from the specification alone: messages from grpc_service_pb2 (protoc --python_out of
proto/grpc_service.proto) and grpcio's generic unary calls. Covers ServerLive, ServerReady,
ServerMetadata, ModelReady, ModelMetadata and ModelInfer with typed contents and with
raw_input_contents / raw_output_contents, the batch-dim and model-name rules, and errors as gRPC
status codes."""

import queue
import struct
import sys
import time

import grpc

import grpc_service_pb2 as pb
from server_harness import Checker, KServeRpc, TestServer

SERVICE = "/inference.GRPCInferenceService/"
OPTIONS = [("grpc.enable_http_proxy", 0)]
srv = None
chan = None


def rpc(name, req, resp_type):
    return KServeRpc(chan)(name, req, resp_type)


def rpc_error(name, req, resp_type):
    return KServeRpc(chan).error(name, req, resp_type)


def infer(req):
    return rpc("ModelInfer", req, pb.ModelInferResponse)


def infer_error(req):
    return rpc_error("ModelInfer", req, pb.ModelInferResponse)


def fp32_input(req, name, shape, values, raw=False):
    t = req.inputs.add(name=name, datatype="FP32", shape=shape)
    if raw:
        req.raw_input_contents.append(struct.pack("<%df" % len(values), *values))
    else:
        t.contents.fp32_contents.extend(values)
    return t


def add_request(raw=False, n=2, model="add", version=""):
    req = pb.ModelInferRequest(model_name=model, model_version=version, id="g1")
    fp32_input(req, "x1", [n, 3], [float(i) for i in range(n * 3)], raw)
    fp32_input(req, "x2", [n, 3], [0.5] * (n * 3), raw)
    return req


def outputs(resp):
    return {o.name: o for o in resp.outputs}


def err_is(c, got, code, fragment, what):
    c.eq(got[0], code, what + " code")
    c.check(fragment in (got[1] or ""), "%s: %r lacks %r" % (what, got[1], fragment))


# ------------------------------------------------------------------ health and metadata

def health(c):
    c.eq(rpc("ServerLive", pb.ServerLiveRequest(), pb.ServerLiveResponse).live, True, "live")
    c.eq(rpc("ServerReady", pb.ServerReadyRequest(), pb.ServerReadyResponse).ready, True, "ready")
    req = pb.ModelInferRequest(model_name="control")
    req.inputs.add(name="value", datatype="BOOL", shape=[]).contents.bool_contents.append(False)
    infer(req)
    c.eq(rpc("ServerReady", pb.ServerReadyRequest(), pb.ServerReadyResponse).ready, False,
         "not ready after set_ready(false)")
    req.inputs[0].contents.bool_contents[0] = True
    infer(req)
    c.eq(rpc("ServerReady", pb.ServerReadyRequest(), pb.ServerReadyResponse).ready, True,
         "ready again")


def server_metadata(c):
    meta = rpc("ServerMetadata", pb.ServerMetadataRequest(), pb.ServerMetadataResponse)
    c.eq(meta.name, "shardserve", "name")
    c.check(meta.version != "", "version set")
    c.check("binary_tensor_data" in meta.extensions, "extensions: %r" % list(meta.extensions))


def model_metadata(c):
    meta = rpc("ModelMetadata", pb.ModelMetadataRequest(name="add"), pb.ModelMetadataResponse)
    c.eq((meta.name, list(meta.versions), meta.platform), ("add", ["2"], "onnx_onnxv1"), "add")
    c.eq([(t.name, t.datatype, list(t.shape)) for t in meta.inputs],
         [("x1", "FP32", [-1, -1]), ("x2", "FP32", [-1, -1])], "inputs")
    c.eq([(t.name, t.datatype, list(t.shape)) for t in meta.outputs],
         [("y", "FP32", [-1, -1]), ("version", "INT64", [-1])], "outputs")
    meta = rpc("ModelMetadata", pb.ModelMetadataRequest(name="add", version="1"),
               pb.ModelMetadataResponse)
    c.eq(list(meta.versions), ["1"], "version 1")
    meta = rpc("ModelMetadata", pb.ModelMetadataRequest(name="mixed.scale"),
               pb.ModelMetadataResponse)
    c.eq([(t.name, list(t.shape)) for t in meta.inputs], [("x", [-1, 2]), ("w", [2])],
         "batched and whole inputs")
    nf = grpc.StatusCode.NOT_FOUND
    err_is(c, rpc_error("ModelMetadata", pb.ModelMetadataRequest(name="nope"),
                        pb.ModelMetadataResponse), nf, "nope", "unknown model")
    err_is(c, rpc_error("ModelMetadata", pb.ModelMetadataRequest(name="add", version="3"),
                        pb.ModelMetadataResponse), nf, "add", "unknown version")
    err_is(c, rpc_error("ModelMetadata", pb.ModelMetadataRequest(name="add", version="v1"),
                        pb.ModelMetadataResponse), nf, "unknown version", "version text")
    err_is(c, rpc_error("ModelMetadata", pb.ModelMetadataRequest(name="mixed"),
                        pb.ModelMetadataResponse), nf, "mixed.METHOD", "several methods")
    err_is(c, rpc_error("ModelMetadata", pb.ModelMetadataRequest(name="notready"),
                        pb.ModelMetadataResponse), grpc.StatusCode.UNAVAILABLE, "not ready",
           "not ready")


def model_ready(c):
    def ready(name, version=""):
        return rpc("ModelReady", pb.ModelReadyRequest(name=name, version=version),
                   pb.ModelReadyResponse).ready
    c.eq(ready("add"), True, "add")
    c.eq(ready("add", "1"), True, "add v1")
    c.eq(ready("typed.fp16"), True, "typed.fp16")
    c.eq(ready("notready"), False, "not ready is an answer")
    err_is(c, rpc_error("ModelReady", pb.ModelReadyRequest(name="nope"), pb.ModelReadyResponse),
           grpc.StatusCode.NOT_FOUND, "nope", "unknown model")
    err_is(c, rpc_error("ModelReady", pb.ModelReadyRequest(name="add", version="5"),
                        pb.ModelReadyResponse), grpc.StatusCode.NOT_FOUND, "add",
           "unknown version")


# ------------------------------------------------------------------ inference

def infer_typed_contents(c):
    resp = infer(add_request())
    c.eq((resp.model_name, resp.model_version, resp.id), ("add", "2", "g1"), "header")
    c.eq(len(resp.raw_output_contents), 0, "typed in, typed out")
    outs = outputs(resp)
    c.eq((list(outs["y"].shape), list(outs["y"].contents.fp32_contents)),
         ([2, 3], [0.5, 1.5, 2.5, 3.5, 4.5, 5.5]), "y")
    c.eq((list(outs["version"].shape), list(outs["version"].contents.int64_contents)),
         ([2], [2, 2]), "version")
    resp = infer(add_request(version="1"))
    c.eq(list(outputs(resp)["version"].contents.int64_contents), [1, 1], "version 1 answers")
    req = add_request()
    req.outputs.add(name="version")
    resp = infer(req)
    c.eq([o.name for o in resp.outputs], ["version"], "requested outputs only")


def infer_raw(c):
    resp = infer(add_request(raw=True, n=3))
    c.eq(len(resp.raw_output_contents), 2, "raw in, raw out")
    names = [o.name for o in resp.outputs]
    raw = dict(zip(names, resp.raw_output_contents))
    c.eq(struct.unpack("<9f", raw["y"]), tuple(i + 0.5 for i in range(9)), "y")
    c.eq(struct.unpack("<3q", raw["version"]), (2, 2, 2), "version")
    c.check(not resp.outputs[0].HasField("contents"), "no contents beside raw outputs")
    # the non-batched input goes with every instance
    req = pb.ModelInferRequest(model_name="mixed.scale")
    fp32_input(req, "x", [2, 2], [1, 2, 3, 4], raw=True)
    fp32_input(req, "w", [2], [10, -1], raw=True)
    resp = infer(req)
    c.eq((list(resp.outputs[0].shape), struct.unpack("<4f", resp.raw_output_contents[0])),
         ([2, 2], (10, -2, 30, -4)), "mixed.scale")


TYPED = [  # datatype, values, struct code, contents field
    ("BOOL", [True, False, True], "?", "bool_contents"),
    ("UINT8", [0, 7, 255], "B", "uint_contents"),
    ("UINT16", [0, 7, 65535], "H", "uint_contents"),
    ("UINT32", [0, 7, 4294967295], "I", "uint_contents"),
    ("UINT64", [0, 7, 2 ** 63], "Q", "uint64_contents"),
    ("INT8", [-128, 0, 127], "b", "int_contents"),
    ("INT16", [-32768, 0, 32767], "h", "int_contents"),
    ("INT32", [-2147483648, 0, 2147483647], "i", "int_contents"),
    ("INT64", [-(2 ** 63), 0, 2 ** 63 - 1], "q", "int64_contents"),
    ("FP32", [1.5, -2.0, 0.25], "f", "fp32_contents"),
    ("FP64", [1.5, -2.0, 0.1], "d", "fp64_contents"),
]


def typed_all(c):
    for dt, values, code, field in TYPED:
        req = pb.ModelInferRequest(model_name="typed." + dt.lower())
        t = req.inputs.add(name="x", datatype=dt, shape=[3, 1])
        getattr(t.contents, field).extend(values)
        resp = infer(req)
        out = resp.outputs[0]
        c.eq((out.datatype, list(out.shape), list(getattr(out.contents, field))),
             (dt, [3, 1], values), dt + " typed")
        req = pb.ModelInferRequest(model_name="typed." + dt.lower())
        req.inputs.add(name="x", datatype=dt, shape=[3, 1])
        blob = struct.pack("<3" + code, *values)
        req.raw_input_contents.append(blob)
        resp = infer(req)
        c.eq(list(resp.raw_output_contents), [blob], dt + " raw")
    for dt, blob in [("FP16", struct.pack("<3e", 1.5, -2.0, 0.25)),
                     ("BF16", b"\xc0\x3f\x00\xc0\x80\x3e")]:
        req = pb.ModelInferRequest(model_name="typed." + dt.lower())
        req.inputs.add(name="x", datatype=dt, shape=[3, 1])
        req.raw_input_contents.append(blob)
        c.eq(list(infer(req).raw_output_contents), [blob], dt + " raw")
        req = pb.ModelInferRequest(model_name="typed." + dt.lower())
        req.inputs.add(name="x", datatype=dt, shape=[3, 1]).contents.fp32_contents.extend([1] * 3)
        err_is(c, infer_error(req), grpc.StatusCode.INVALID_ARGUMENT, "raw_input_contents",
               dt + " needs raw contents")
    strings = [b"", b"\x00\xff", b"hello"]
    req = pb.ModelInferRequest(model_name="typed.bytes")
    req.inputs.add(name="x", datatype="BYTES", shape=[3]).contents.bytes_contents.extend(strings)
    out = infer(req).outputs[0]
    c.eq((list(out.shape), list(out.contents.bytes_contents)), ([3], strings), "BYTES typed")
    req = pb.ModelInferRequest(model_name="typed.bytes")
    req.inputs.add(name="x", datatype="BYTES", shape=[3])
    blob = b"".join(struct.pack("<I", len(s)) + s for s in strings)
    req.raw_input_contents.append(blob)
    c.eq(list(infer(req).raw_output_contents), [blob], "BYTES raw")


def infer_errors(c):
    inv, nf = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
    err_is(c, infer_error(add_request(model="nope")), nf, "nope", "unknown model")
    err_is(c, infer_error(add_request(version="9")), nf, "add", "unknown version")
    err_is(c, infer_error(add_request(model="mixed")), nf, "mixed.METHOD", "several methods")
    err_is(c, infer_error(add_request(model="notready")), grpc.StatusCode.UNAVAILABLE,
           "not ready", "not ready")
    req = add_request()
    req.inputs[0].datatype = "FP64"
    err_is(c, infer_error(req), inv, "datatype FP64 does not match the model's FP32",
           "wrong datatype")
    req = add_request()
    req.inputs[0].datatype = "FLOAT32"
    err_is(c, infer_error(req), inv, "unknown datatype", "unknown datatype")
    req = add_request()
    del req.inputs[0].shape[:]
    req.inputs[0].shape.extend([6])
    err_is(c, infer_error(req), inv, "shape [6] does not match the model's [-1,-1]",
           "wrong shape")
    req = add_request()
    req.inputs[0].shape[1] = 4
    err_is(c, infer_error(req), inv, "contents has 6 FP32 elements, shape needs 8",
           "contents count")
    req = add_request()
    req.inputs[0].shape[0] = -2
    err_is(c, infer_error(req), inv, "not a count", "negative dim")
    req = add_request()
    del req.inputs[1]
    err_is(c, infer_error(req), inv, "expects input 'x2'", "missing input")
    req = add_request()
    fp32_input(req, "x9", [1], [1.0])
    err_is(c, infer_error(req), inv, "unexpected inference input 'x9'", "unknown input")
    req = add_request()
    req.outputs.add(name="z")
    err_is(c, infer_error(req), inv, "unexpected inference output 'z'", "unknown output")
    req = add_request(raw=True)
    del req.raw_input_contents[1]
    err_is(c, infer_error(req), inv, "raw_input_contents has 1 entries for 2 inputs",
           "raw count")
    req = add_request(raw=True)
    req.raw_input_contents[1] = req.raw_input_contents[1][:-4]
    err_is(c, infer_error(req), inv, "20 bytes of data do not hold shape [2,3]", "raw size")
    req = add_request(raw=True)
    req.inputs[0].contents.fp32_contents.append(1.0)
    err_is(c, infer_error(req), inv, "sets contents", "contents beside raw")
    req = pb.ModelInferRequest(model_name="add")
    req.inputs.add(name="x1", datatype="FP32", shape=[1, 1])
    err_is(c, infer_error(req), inv, "neither", "no data")
    req = pb.ModelInferRequest(model_name="typed.int8")
    req.inputs.add(name="x", datatype="INT8", shape=[1, 1]).contents.int_contents.append(300)
    err_is(c, infer_error(req), inv, "out of range", "INT8 out of range")
    # the handler's verdicts
    req = pb.ModelInferRequest(model_name="add")
    fp32_input(req, "x1", [1, 2], [1, 2])
    fp32_input(req, "x2", [1, 3], [1, 2, 3])
    err_is(c, infer_error(req), inv, "not match the size", "handler: invalid inputs")
    err_is(c, infer_error(pb.ModelInferRequest(model_name="error.fail")),
           grpc.StatusCode.INTERNAL, "fixed failure", "handler failure")
    call = chan.unary_unary(SERVICE + "ModelInfer")
    try:
        call(b"\xff\xff\xff", timeout=20)
        got = (None, "")
    except grpc.RpcError as e:
        got = (e.code(), e.details())
    err_is(c, got, inv, "cannot parse ModelInferRequest", "undecodable message")
    err_is(c, rpc_error("ModelConfig", pb.ServerLiveRequest(), pb.ServerLiveResponse),
           grpc.StatusCode.UNIMPLEMENTED, "unknown method", "unknown RPC")


def statistics_and_repository(c):
    """ModelStatistics (zeros: this handler keeps no /metrics counters); no repository here."""
    st = rpc("ModelStatistics", pb.ModelStatisticsRequest(name="add", version="1"),
             pb.ModelStatisticsResponse).model_stats
    c.eq([(m.name, m.version) for m in st], [("add", "1")], "stats entries")
    c.eq((st[0].inference_stats.success.count, st[0].inference_stats.queue.ns), (0, 0), "zeros")
    err_is(c, rpc_error("ModelStatistics", pb.ModelStatisticsRequest(name="nope"),
                        pb.ModelStatisticsResponse), grpc.StatusCode.NOT_FOUND, "nope",
           "stats of an unknown model")
    meta = rpc("ServerMetadata", pb.ServerMetadataRequest(), pb.ServerMetadataResponse)
    c.eq(list(meta.extensions), ["binary_tensor_data", "statistics", "system_shared_memory"],
         "extensions (no model_repository: this handler has none)")
    err_is(c, rpc_error("RepositoryIndex", pb.RepositoryIndexRequest(),
                        pb.RepositoryIndexResponse), grpc.StatusCode.UNIMPLEMENTED,
           "no model repository", "index without a repository")
    err_is(c, rpc_error("RepositoryModelUnload", pb.RepositoryModelUnloadRequest(model_name="add"),
                        pb.RepositoryModelUnloadResponse), grpc.StatusCode.UNIMPLEMENTED,
           "no model repository", "unload without a repository")


# ------------------------------------------------------------------ ModelStreamInfer

def stream(requests, timeout=20):
    call = chan.stream_stream(SERVICE + "ModelStreamInfer",
                              request_serializer=lambda m: m.SerializeToString(),
                              response_deserializer=pb.ModelStreamInferResponse.FromString)
    return list(call(iter(requests), timeout=timeout))


def slow_request(rid):
    req = pb.ModelInferRequest(model_name="slow", id=rid)
    fp32_input(req, "x", [1, 2], [3.0, 4.0])
    return req


def stream_infer(c):
    """Answers as they are ready, errors in error_message, the stream stays up for the rest."""
    bad = add_request(model="nope")
    bad.id = "bad"
    reqs = [slow_request("slow")] + [add_request(n=k) for k in (1, 2, 3)] + [bad]
    for k, r in enumerate(reqs[1:4]):
        r.id = "add%d" % (k + 1)
    got = stream(reqs)
    c.eq(len(got), 5, "one answer per request")
    by_id = {r.infer_response.id: r for r in got if not r.error_message}
    c.eq(sorted(by_id), ["add1", "add2", "add3", "slow"], "answered ids")
    for k in (1, 2, 3):
        y = outputs(by_id["add%d" % k].infer_response)["y"]
        c.eq(list(y.shape), [k, 3], "add%d shape" % k)
        c.eq(list(y.contents.fp32_contents), [i + 0.5 for i in range(k * 3)], "add%d y" % k)
    c.eq(list(outputs(by_id["slow"].infer_response)["x"].contents.fp32_contents), [3.0, 4.0],
         "slow echo")
    errors = [r.error_message for r in got if r.error_message]
    c.eq(len(errors), 1, "one error answer")
    c.check(errors and "nope" in errors[0], "error names the model: %r" % errors)
    c.check(got[-1].infer_response.id == "slow",
            "the slow request is answered last, not in order: %r"
            % [r.infer_response.id or r.error_message for r in got])


def stream_errors(c):
    """Bad messages and failed inferences on a stream; a cancelled stream leaves the server up."""
    raw = chan.stream_stream(SERVICE + "ModelStreamInfer",
                             response_deserializer=pb.ModelStreamInferResponse.FromString)
    req = add_request()
    req.inputs[0].datatype = "FP64"
    got = list(raw(iter([b"\xff\xff\xff", pb.ModelInferRequest(model_name="error.fail")
                         .SerializeToString(), req.SerializeToString(),
                         add_request().SerializeToString()]), timeout=20))
    c.eq(len(got), 4, "four answers")
    msgs = sorted(r.error_message for r in got)
    c.check(any("cannot parse ModelInferRequest" in m for m in msgs), "undecodable: %r" % msgs)
    c.check(any("fixed failure" in m for m in msgs), "handler failure: %r" % msgs)
    c.check(any("datatype FP64" in m for m in msgs), "wrong datatype: %r" % msgs)
    c.eq(sum(1 for r in got if not r.error_message), 1, "the good request still answered")
    c.eq(stream([]), [], "an empty stream ends with OK")
    call = chan.stream_stream(SERVICE + "ModelStreamInfer",
                              request_serializer=lambda m: m.SerializeToString(),
                              response_deserializer=pb.ModelStreamInferResponse.FromString)
    it = call(iter([slow_request("s%d" % i) for i in range(3)]), timeout=20)
    it.cancel()
    c.eq(rpc("ServerLive", pb.ServerLiveRequest(), pb.ServerLiveResponse).live, True,
         "live after a cancelled stream")
    c.eq(len(stream([add_request()])), 1, "a new stream works after a cancelled one")


def stream_flow_control(c):
    """A stream holds at most 64 requests in the handler: 200 slow ones (300 ms each, each on a
    thread of its own) take at least four rounds (1.2 s), and every one is answered. Without the
    bound they all run at once (about 0.6 s here)."""
    t0 = time.time()
    got = stream([slow_request("f%d" % k) for k in range(200)], timeout=60)
    elapsed = time.time() - t0
    c.eq(sorted(r.infer_response.id for r in got), sorted("f%d" % k for k in range(200)),
         "all answered")
    c.check(elapsed >= 1.1, "200 slow requests took %.2f s: more than 64 ran at once" % elapsed)


def stream_open_at_stop(c):
    """A server stopped while a client holds an idle stream open exits cleanly (status 0, within
    its 5 s drain period plus slack); the client sees the stream end."""
    own = TestServer(grpc="127.0.0.1:0")
    ch = grpc.insecure_channel(own.grpc_address, options=OPTIONS)
    pending = queue.Queue()

    def requests():
        while True:
            item = pending.get()
            if item is None:
                return
            yield item

    call = ch.stream_stream(SERVICE + "ModelStreamInfer",
                            request_serializer=lambda m: m.SerializeToString(),
                            response_deserializer=pb.ModelStreamInferResponse.FromString)
    answers = call(requests(), timeout=60)
    pending.put(add_request(n=1))
    c.eq(next(answers).infer_response.id, "g1", "first answer on the stream")
    t0 = time.time()
    code = own.stop()
    c.check(code == 0 and time.time() - t0 < 15, "stop: exit %r after %.1f s" %
            (code, time.time() - t0))
    try:
        next(answers)
        c.check(False, "the stream outlived the server")
    except grpc.RpcError as e:
        c.check(e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED),
                "stream end: %s" % e.code())
    pending.put(None)
    ch.close()


def main():
    global srv, chan
    srv = TestServer(grpc="127.0.0.1:0")
    chan = grpc.insecure_channel(srv.grpc_address, options=OPTIONS)
    Checker().run([health, server_metadata, model_metadata, model_ready, infer_typed_contents,
                   infer_raw, typed_all, infer_errors, statistics_and_repository, stream_infer, stream_errors, stream_flow_control, stream_open_at_stop], server=srv)


if __name__ == "__main__":
    sys.exit(main())
