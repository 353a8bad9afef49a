"""The malformed-request table for the Open Inference Protocol (KServe v2) against one test server:
REST (JSON, the binary tensor extension, routes, repository) and gRPC (ModelInfer, the other RPCs,
ModelStreamInfer). Each case asserts the protocol's status and a clear error text naming the input,
the model or the limit; afterwards the server still answers a valid request."""

import json
import struct
import sys
import urllib.error
import urllib.request

import grpc

import grpc_service_pb2 as pb
from server_harness import Checker, TestServer

SERVICE = "/inference.GRPCInferenceService/"
server = None
channel = None

ADD = "/v2/models/add/infer"


def fp32(name, shape, data):
    return {"name": name, "datatype": "FP32", "shape": shape, "data": data}


def add_json(x1=None, x2=None, **extra):
    body = {"inputs": [x1 or fp32("x1", [1, 2], [1, 2]), x2 or fp32("x2", [1, 2], [3, 4])]}
    body.update(extra)
    return json.dumps(body).encode()


def binary(header, blob, header_len=None):
    head = json.dumps(header).encode()
    hl = str(len(head)) if header_len is None else header_len
    return head + blob, {"Inference-Header-Content-Length": hl}


def bin_input(name, shape, size, datatype="FP32"):
    return {"name": name, "datatype": datatype, "shape": shape,
            "parameters": {"binary_data_size": size}}


X8 = struct.pack("<2f", 1, 2)
B2 = binary({"inputs": [bin_input("x1", [1, 2], 8), bin_input("x2", [1, 2], 8)]}, X8 + X8)

# (what, method, path, body, headers, status, fragment of the error)
REST_CASES = [
    ("body not JSON", "POST", ADD, b"{", None, 400, "not a JSON object"),
    ("body a JSON array", "POST", ADD, b"[]", None, 400, "not a JSON object"),
    ("body a JSON number", "POST", ADD, b"42", None, 400, "not a JSON object"),
    ("empty body", "POST", ADD, b"", None, 400, "empty"),
    ("trailing garbage", "POST", ADD, add_json() + b"xx", None, 400, "not a JSON object"),
    ("inputs not an array", "POST", ADD, b'{"inputs": {}}', None, 400, "array of at most 64"),
    ("input not an object", "POST", ADD, b'{"inputs": [1]}', None, 400, "name"),
    ("input without name", "POST", ADD,
     b'{"inputs": [{"datatype": "FP32", "shape": [1], "data": [1]}]}', None, 400, "name"),
    ("input name a number", "POST", ADD,
     b'{"inputs": [{"name": 5, "datatype": "FP32", "shape": [1], "data": [1]}]}', None, 400,
     "name"),
    ("unknown datatype", "POST", ADD,
     add_json(x1={"name": "x1", "datatype": "FLOAT32", "shape": [1, 2], "data": [1, 2]}), None,
     400, "unknown datatype 'FLOAT32'"),
    ("wrong datatype", "POST", ADD,
     add_json(x1={"name": "x1", "datatype": "FP64", "shape": [1, 2], "data": [1, 2]}), None, 400,
     "datatype FP64 does not match the model's FP32"),
    ("datatype missing", "POST", ADD,
     add_json(x1={"name": "x1", "shape": [1, 2], "data": [1, 2]}), None, 400, "x1"),
    ("shape missing", "POST", ADD,
     add_json(x1={"name": "x1", "datatype": "FP32", "data": [1, 2]}), None, 400, "shape"),
    ("shape not an array", "POST", ADD, add_json(x1=fp32("x1", "1,2", [1, 2])), None, 400,
     "shape must be an array"),
    ("negative dim", "POST", ADD, add_json(x1=fp32("x1", [-1, 2], [1, 2])), None, 400,
     "not a count"),
    ("fractional dim", "POST", ADD, add_json(x1=fp32("x1", [1.5, 2], [1, 2])), None, 400,
     "not a count"),
    ("dim a string", "POST", ADD, add_json(x1=fp32("x1", ["1", 2], [1, 2])), None, 400,
     "not a count"),
    ("too many dims", "POST", ADD, add_json(x1=fp32("x1", [1] * 40, [1])), None, 400,
     "at most"),
    ("shape overflows", "POST", ADD,
     add_json(x1=fp32("x1", [2 ** 40, 2 ** 40], [1])), None, 400, "too large"),
    ("shape/data size mismatch", "POST", ADD, add_json(x1=fp32("x1", [1, 3], [1, 2])), None, 400,
     "data has 2 elements, shape needs 3"),
    ("shape not the model's", "POST", ADD, add_json(x1=fp32("x1", [2], [1, 2])), None, 400,
     "does not match the model's"),
    ("batch sizes differ", "POST", ADD,
     add_json(x2=fp32("x2", [2, 2], [1, 2, 3, 4])), None, 400, "batch size"),
    ("data a string", "POST", ADD, add_json(x1=fp32("x1", [1, 2], "12")), None, 400, "x1"),
    ("data element a string", "POST", ADD, add_json(x1=fp32("x1", [1, 2], [1, "2"])), None, 400,
     "element 1 is not a valid FP32"),
    ("data element null", "POST", ADD, add_json(x1=fp32("x1", [1, 2], [1, None])), None, 400,
     "is not a valid FP32"),
    ("data element out of FP32 range", "POST", ADD, add_json(x1=fp32("x1", [1, 2], [1, 1e300])),
     None, 400, "is not a valid FP32"),
    ("data nested too deep", "POST", ADD,
     add_json(x1=fp32("x1", [1, 2], [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]])),
     None, 400, "nested too deep"),
    ("data and binary_data_size", "POST", ADD,
     add_json(x1=dict(fp32("x1", [1, 2], [1, 2]), parameters={"binary_data_size": 8})), None, 400,
     "has both"),
    ("neither data nor binary", "POST", ADD,
     add_json(x1={"name": "x1", "datatype": "FP32", "shape": [1, 2]}), None, 400, "has neither"),
    ("BYTES string with a NUL escape", "POST", "/v2/models/typed.bytes/infer",
     b'{"inputs": [{"name": "x", "datatype": "BYTES", "shape": [1], "data": ["a\\u0000b"]}]}',
     None, 400, "cannot carry NUL bytes"),
    ("input given twice", "POST", ADD,
     json.dumps({"inputs": [fp32("x1", [1, 2], [1, 2])] * 2 + [fp32("x2", [1, 2], [1, 2])]})
     .encode(), None, 400, "given twice"),
    ("missing input", "POST", ADD, json.dumps({"inputs": [fp32("x1", [1, 2], [1, 2])]}).encode(),
     None, 400, "expects input 'x2'"),
    ("unexpected input", "POST", ADD,
     add_json(x1=fp32("x1", [1, 2], [1, 2]), x2=fp32("x9", [1, 2], [1, 2])), None, 400,
     "x9"),
    ("unknown output", "POST", ADD, add_json(outputs=[{"name": "z"}]), None, 400,
     "unexpected inference output 'z'"),
    ("output without name", "POST", ADD, add_json(outputs=[{}]), None, 400, "name"),
    ("output twice", "POST", ADD, add_json(outputs=[{"name": "y"}, {"name": "y"}]), None, 400,
     "requested twice"),
    ("classification", "POST", ADD,
     add_json(outputs=[{"name": "y", "parameters": {"classification": 2}}]), None, 400,
     "classification"),
    ("id not a string", "POST", ADD, add_json(id=5), None, 400, "id"),
    ("unknown model", "POST", "/v2/models/nope/infer", add_json(), None, 404, "nope"),
    ("unknown version", "POST", "/v2/models/add/versions/9/infer", add_json(), None, 404, "add"),
    ("version not a number", "POST", "/v2/models/add/versions/x1/infer", add_json(), None, 404,
     "unknown version 'x1'"),
    ("several methods, no METHOD", "POST", "/v2/models/mixed/infer", add_json(), None, 404,
     "mixed.METHOD"),
    ("unknown method", "POST", "/v2/models/add.nope/infer", add_json(), None, 404, "nope"),
    ("model not ready", "POST", "/v2/models/notready/infer", add_json(), None, 503, "not ready"),
    ("model name too long", "POST", "/v2/models/%s/infer" % ("m" * 300), add_json(), None, 400,
     "too long"),
    ("unknown route", "POST", "/v2/models/add/predict", add_json(), None, 404, "unknown route"),
    # the binary tensor extension
    ("header length not a number", "POST", ADD, B2[0], {"Inference-Header-Content-Length": "ab"},
     400, "is not a byte count"),
    ("header length negative", "POST", ADD, B2[0], {"Inference-Header-Content-Length": "-4"},
     400, "is not a byte count"),
    ("header length past the body", "POST", ADD, B2[0],
     {"Inference-Header-Content-Length": "99999"}, 400, "larger than the body"),
    ("header length cuts the JSON", "POST", ADD, B2[0],
     {"Inference-Header-Content-Length": "10"}, 400, "header is not a JSON object"),
    ("header length 0 (raw)", "POST", ADD, B2[0], {"Inference-Header-Content-Length": "0"}, 400,
     "not supported"),
    ("binary size past the end", "POST", ADD,
     *binary({"inputs": [bin_input("x1", [1, 2], 8), bin_input("x2", [1, 2], 80)]}, X8 + X8),
     400, "runs past the end of the body"),
    ("binary bytes left over", "POST", ADD,
     *binary({"inputs": [bin_input("x1", [1, 2], 8), bin_input("x2", [1, 2], 8)]},
             X8 + X8 + b"xxxx"), 400, "after the JSON header"),
    ("binary size not the shape's", "POST", ADD,
     *binary({"inputs": [bin_input("x1", [1, 2], 4), bin_input("x2", [1, 2], 12)]}, X8 + X8),
     400, "do not hold shape"),
    ("binary size negative", "POST", ADD,
     *binary({"inputs": [bin_input("x1", [1, 2], -8), bin_input("x2", [1, 2], 8)]}, X8 + X8),
     400, "binary_data_size must be a byte count"),
    ("binary size a string", "POST", ADD,
     *binary({"inputs": [bin_input("x1", [1, 2], "8"), bin_input("x2", [1, 2], 8)]}, X8 + X8),
     400, "binary_data_size must be a byte count"),
    ("binary BYTES bad lengths", "POST", "/v2/models/typed.bytes/infer",
     *binary({"inputs": [bin_input("x", [1, 1], 8, "BYTES")]}, struct.pack("<I", 100) + b"abcd"),
     400, "x"),
    # GET routes, statistics and the repository
    ("stats of an unknown model", "GET", "/v2/models/nope/stats", None, None, 404, "nope"),
    ("stats of an unknown version", "GET", "/v2/models/add/versions/7/stats", None, None, 404,
     "add"),
    ("metadata of an unknown model", "GET", "/v2/models/nope", None, None, 404, "nope"),
    ("ready of an unknown version", "GET", "/v2/models/add/versions/x/ready", None, None, 404,
     "unknown version"),
    ("unknown GET route", "GET", "/v2/models/add/config", None, None, 404, "unknown route"),
    ("repository without one", "POST", "/v2/repository/index", b"{}", None, 501,
     "no model repository"),
    ("DELETE a model", "DELETE", "/v2/models/add", None, None, 404, "unknown route"),
]


def rest_call(method, path, body, headers):
    req = urllib.request.Request(server.rest_url + path, data=body, method=method,
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def rest_cases(c):
    for what, method, path, body, headers, status, fragment in REST_CASES:
        got, reply = rest_call(method, path, body, headers)
        try:
            error = json.loads(reply).get("error", "")
        except ValueError:
            error = "(not JSON: %r)" % reply[:80]
        c.check(got == status and fragment in error,
                "REST %s: got %d %r, want %d with %r" % (what, got, error, status, fragment))


def infer_request(**kw):
    req = pb.ModelInferRequest(model_name=kw.pop("model", "add"), id="bad")
    for name in ("x1", "x2"):
        t = req.inputs.add(name=name, datatype="FP32", shape=[1, 2])
        t.contents.fp32_contents.extend([1.0, 2.0])
    for k, v in kw.items():
        v(req)
    return req.SerializeToString()


def set_raw(req):
    for t in req.inputs:
        t.ClearField("contents")
    req.raw_input_contents.extend([struct.pack("<2f", 1, 2)] * 2)


INV, NF, UNAV, UNIMP = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                        grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNIMPLEMENTED)

# (what, rpc, serialized request, status code, fragment of the details)
GRPC_CASES = [
    ("undecodable ModelInfer", "ModelInfer", b"\xff\xff\xff", INV, "cannot parse ModelInferRequest"),
    ("truncated ModelInfer", "ModelInfer", infer_request()[:-3], INV, "cannot parse"),
    ("unknown model", "ModelInfer", infer_request(model="nope"), NF, "nope"),
    ("unknown version", "ModelInfer",
     infer_request(v=lambda r: setattr(r, "model_version", "9")), NF, "add"),
    ("version text", "ModelInfer",
     infer_request(v=lambda r: setattr(r, "model_version", "latest")), NF, "unknown version"),
    ("model not ready", "ModelInfer", infer_request(model="notready"), UNAV, "not ready"),
    ("wrong datatype", "ModelInfer",
     infer_request(d=lambda r: setattr(r.inputs[0], "datatype", "INT32")), INV,
     "does not match the model's FP32"),
    ("unknown datatype", "ModelInfer",
     infer_request(d=lambda r: setattr(r.inputs[0], "datatype", "F32")), INV, "unknown datatype"),
    ("contents count", "ModelInfer",
     infer_request(d=lambda r: r.inputs[0].contents.fp32_contents.append(3.0)), INV,
     "contents has 3 FP32 elements, shape needs 2"),
    ("contents of another type", "ModelInfer",
     infer_request(d=lambda r: (r.inputs[0].contents.ClearField("fp32_contents"),
                                r.inputs[0].contents.int_contents.extend([1, 2]))), INV, "x1"),
    ("negative dim", "ModelInfer", infer_request(d=lambda r: r.inputs[0].shape.__setitem__(0, -3)),
     INV, "not a count"),
    ("raw count", "ModelInfer",
     infer_request(d=lambda r: (set_raw(r), r.raw_input_contents.pop())), INV,
     "raw_input_contents has 1 entries for 2 inputs"),
    ("raw size", "ModelInfer",
     infer_request(d=lambda r: (set_raw(r), r.raw_input_contents.__setitem__(1, b"abc"))), INV,
     "3 bytes of data do not hold shape [1,2]"),
    ("raw and contents", "ModelInfer",
     infer_request(d=lambda r: (set_raw(r), r.inputs[0].contents.fp32_contents.append(1.0))), INV,
     "sets contents"),
    ("missing input", "ModelInfer", infer_request(d=lambda r: r.inputs.pop()), INV,
     "expects input 'x2'"),
    ("unknown output", "ModelInfer", infer_request(d=lambda r: r.outputs.add(name="z")), INV,
     "unexpected inference output 'z'"),
    ("undecodable ModelMetadata", "ModelMetadata", b"\x0a\x05ab", INV, "cannot parse"),
    ("metadata of an unknown model", "ModelMetadata",
     pb.ModelMetadataRequest(name="nope").SerializeToString(), NF, "nope"),
    ("ready of an unknown model", "ModelReady",
     pb.ModelReadyRequest(name="nope").SerializeToString(), NF, "nope"),
    ("stats of an unknown model", "ModelStatistics",
     pb.ModelStatisticsRequest(name="nope").SerializeToString(), NF, "nope"),
    ("undecodable ModelStatistics", "ModelStatistics", b"\x12\x09", INV, "cannot parse"),
    ("repository without one", "RepositoryIndex", b"", UNIMP, "no model repository"),
    ("unknown RPC", "ModelConfig", b"", UNIMP, "unknown method"),
]


def grpc_cases(c):
    for what, rpc, payload, code, fragment in GRPC_CASES:
        call = channel.unary_unary(SERVICE + rpc)
        try:
            call(payload, timeout=20)
            got = (None, "call succeeded")
        except grpc.RpcError as e:
            got = (e.code(), e.details() or "")
        c.check(got[0] == code and fragment in got[1],
                "gRPC %s: got %s %r, want %s with %r" % (what, got[0], got[1], code, fragment))


def stream_cases(c):
    """The same bad requests on one ModelStreamInfer: each answered in error_message, in any
    order, and the stream still answers the good request sent last."""
    bad = [(what, payload, fragment) for what, rpc, payload, code, fragment in GRPC_CASES
           if rpc == "ModelInfer"]
    call = channel.stream_stream(SERVICE + "ModelStreamInfer",
                                 response_deserializer=pb.ModelStreamInferResponse.FromString)
    got = list(call(iter([p for _, p, _ in bad] + [infer_request()]), timeout=30))
    c.eq(len(got), len(bad) + 1, "one answer per streamed request")
    errors = [r.error_message for r in got if r.error_message]
    for what, _, fragment in bad:
        c.check(any(fragment in e for e in errors), "stream %s: no error with %r" % (what, fragment))
    good = [r for r in got if not r.error_message]
    c.check(len(good) == 1 and good[0].infer_response.outputs[0].name in ("y", "version"),
            "the good request after them: %r" % good)


def still_serving(c):
    got, reply = rest_call("POST", ADD, add_json(), None)
    c.eq(got, 200, "REST still answers")
    c.eq(json.loads(reply)["outputs"][0]["data"], [4.0, 6.0], "REST y")
    # an escaped backslash before "u0000" is text, not a NUL escape
    body = json.dumps({"inputs": [{"name": "x", "datatype": "BYTES", "shape": [1],
                                   "data": ["a\\u0000b"]}]}).encode()
    got, reply = rest_call("POST", "/v2/models/typed.bytes/infer", body, None)
    c.eq((got, json.loads(reply).get("outputs", [{}])[0].get("data")), (200, ["a\\u0000b"]),
         "a backslash-u text is not refused")


def main():
    global server, channel
    with TestServer(rest="127.0.0.1:0") as s:
        server = s
        channel = grpc.insecure_channel(s.grpc_address, options=[("grpc.enable_http_proxy", 0)])
        print("%d REST + %d gRPC KServe cases" % (len(REST_CASES), len(GRPC_CASES)))
        return Checker().run([rest_cases, grpc_cases, stream_cases, still_serving], server=s)


if __name__ == "__main__":
    sys.exit(main())
