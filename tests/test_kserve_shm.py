"""The system shared-memory extension of the Open Inference Protocol against ss_test_server:
regions registered, listed and unregistered over REST and gRPC; inputs read from a region and
outputs written into one (REST and gRPC); and the errors: unregistered region, region too small,
an output larger than its byte_size, a key that is too small or malformed, a name taken twice."""

import json
import os
import struct
import sys
import urllib.error
import urllib.request

import grpc
import numpy as np

import grpc_service_pb2 as pb
from server_harness import Checker, KServeRpc, TestServer

SERVICE = "/inference.GRPCInferenceService/"
srv = None
chan = None
KEYS = []


def make_shm(tag, size):
    key = "/ss-kserve-%s-%d" % (tag, os.getpid())
    with open("/dev/shm" + key, "wb") as f:
        f.truncate(size)
    KEYS.append(key)
    return key


def shm_write(key, offset, data):
    with open("/dev/shm" + key, "r+b") as f:
        f.seek(offset)
        f.write(data)


def shm_read(key, offset, n):
    with open("/dev/shm" + key, "rb") as f:
        f.seek(offset)
        return f.read(n)


def call(method, path, body=None):
    req = urllib.request.Request(srv.rest_url + path, data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            status, text = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read()
    return status, json.loads(text) if text else None


def register(name, key, size, offset=0):
    return call("POST", "/v2/systemsharedmemory/region/%s/register" % name,
                json.dumps({"key": key, "offset": offset, "byte_size": size}).encode())


def rpc(name, req, resp_type):
    return KServeRpc(chan)(name, req, resp_type)


def rpc_error(name, req, resp_type):
    return KServeRpc(chan).error(name, req, resp_type)


X1 = np.arange(6, dtype=np.float32)
X2 = np.full(6, 0.5, np.float32)


def shm_in(region, offset, size):
    return {"shared_memory_region": region, "shared_memory_offset": offset,
            "shared_memory_byte_size": size}


def rest_infer(out_params, x2_params=None):
    body = {"inputs": [
        {"name": "x1", "datatype": "FP32", "shape": [2, 3], "parameters": shm_in("in", 0, 24)},
        {"name": "x2", "datatype": "FP32", "shape": [2, 3],
         "parameters": x2_params or shm_in("in", 24, 24)}],
        "outputs": [{"name": "y", "parameters": out_params}]}
    return call("POST", "/v2/models/add/infer", json.dumps(body).encode())


def regions_and_rest(c):
    kin, kout = make_shm("in", 48), make_shm("out", 64)
    shm_write(kin, 0, X1.tobytes() + X2.tobytes())
    c.eq(register("in", kin, 48)[0], 200, "register in")
    c.eq(register("out", kout, 40, offset=16)[0], 200, "register out (offset 16 into its key)")
    status, regions = call("GET", "/v2/systemsharedmemory/status")
    c.eq(sorted((r["name"], r["key"], r["offset"], r["byte_size"]) for r in regions),
         [("in", kin, 0, 48), ("out", kout, 16, 40)], "status")
    c.eq(call("GET", "/v2/systemsharedmemory/region/in/status")[1][0]["byte_size"], 48,
         "status of one region")
    status, reply = rest_infer(shm_in("out", 8, 24))
    c.eq(status, 200, "infer from and into shared memory: %r" % reply)
    y = (reply or {}).get("outputs", [{}])[0]
    c.eq(y.get("parameters"), {"shared_memory_region": "out", "shared_memory_byte_size": 24,
                               "shared_memory_offset": 8}, "y's parameters")
    c.check("data" not in y, "no data beside shared memory: %r" % y)
    got = np.frombuffer(shm_read(kout, 16 + 8, 24), np.float32)
    c.check(np.array_equal(got, X1 + X2), "y in the region: %r" % got)
    meta = call("GET", "/v2")[1]
    c.check("system_shared_memory" in meta["extensions"], "extension advertised: %r" % meta)


def err_of(c, got, status, fragment, what):
    c.eq(got[0], status, what + " status")
    c.check(fragment in ((got[1] or {}).get("error", "")), "%s: %r lacks %r" % (what, got[1],
                                                                               fragment))


def rest_errors(c):
    err_of(c, rest_infer(shm_in("out", 0, 24), shm_in("nope", 0, 24)), 400,
           "input 'x2': shared memory region 'nope' is not registered", "unregistered region")
    err_of(c, rest_infer(shm_in("out", 0, 24), shm_in("in", 40, 24)), 400,
           "input 'x2': offset 40 + byte_size 24 run past shared memory region 'in'",
           "input past the region")
    err_of(c, rest_infer(shm_in("out", 30, 24)), 400, "output 'y': offset 30 + byte_size 24 run "
           "past shared memory region 'out'", "output range past the region")
    err_of(c, rest_infer(shm_in("out", 0, 8)), 400,
           "output 'y': 24 bytes do not fit its shared memory byte_size 8", "output too small")
    err_of(c, rest_infer(shm_in("out", 0, 24), shm_in("in", 0, 20)), 400,
           "20 bytes of data do not hold shape [2,3]", "byte_size vs shape")
    err_of(c, rest_infer(shm_in("out", 0, 24), {"shared_memory_region": "in"}), 400,
           "shared_memory_byte_size", "byte_size missing")
    err_of(c, rest_infer({"shared_memory_region": 5, "shared_memory_byte_size": 4}), 400,
           "shared_memory_region wants a string", "region not a string")
    small = make_shm("small", 16)
    err_of(c, register("big", small, 64), 400, "too small", "key smaller than the region")
    err_of(c, register("in", small, 8), 400, "already registered", "name taken")
    err_of(c, register("k", "no-slash", 8), 400, "POSIX shm name", "malformed key")
    err_of(c, register("k", "/ss-kserve-missing-%d" % os.getpid(), 8), 400, "cannot open",
           "missing key")
    err_of(c, call("POST", "/v2/systemsharedmemory/region/k/register", b'{"key": 1}'), 400,
           "wants", "bad register body")
    err_of(c, call("POST", "/v2/systemsharedmemory/region/nope/unregister"), 404, "nope",
           "unregister unknown")
    err_of(c, call("GET", "/v2/systemsharedmemory/region/nope/status"), 404, "nope",
           "status unknown")
    err_of(c, call("POST", "/v2/systemsharedmemory/region/in/frobnicate"), 404, "unknown route",
           "unknown action")


def grpc_regions_and_infer(c):
    kg = make_shm("grpc", 96)
    shm_write(kg, 0, X1.tobytes() + X2.tobytes())
    rpc("SystemSharedMemoryRegister", pb.SystemSharedMemoryRegisterRequest(
        name="g", key=kg, offset=0, byte_size=96), pb.SystemSharedMemoryRegisterResponse)
    st = rpc("SystemSharedMemoryStatus", pb.SystemSharedMemoryStatusRequest(name="g"),
             pb.SystemSharedMemoryStatusResponse)
    c.eq((st.regions["g"].key, st.regions["g"].byte_size), (kg, 96), "gRPC status")
    req = pb.ModelInferRequest(model_name="add", id="shm")
    for name, off in (("x1", 0), ("x2", 24)):
        t = req.inputs.add(name=name, datatype="FP32", shape=[2, 3])
        t.parameters["shared_memory_region"].string_param = "g"
        t.parameters["shared_memory_offset"].int64_param = off
        t.parameters["shared_memory_byte_size"].int64_param = 24
    o = req.outputs.add(name="y")
    o.parameters["shared_memory_region"].string_param = "g"
    o.parameters["shared_memory_offset"].int64_param = 48
    o.parameters["shared_memory_byte_size"].int64_param = 48
    resp = rpc("ModelInfer", req, pb.ModelInferResponse)
    y = resp.outputs[0]
    c.eq((y.name, y.parameters["shared_memory_region"].string_param,
          y.parameters["shared_memory_byte_size"].int64_param), ("y", "g", 24), "gRPC y params")
    got = np.frombuffer(shm_read(kg, 48, 24), np.float32)
    c.check(np.array_equal(got, X1 + X2), "gRPC y in the region: %r" % got)
    req.inputs[1].parameters["shared_memory_region"].string_param = "gone"
    code, details = rpc_error("ModelInfer", req, pb.ModelInferResponse)
    c.check(code == grpc.StatusCode.INVALID_ARGUMENT and "'gone' is not registered" in details,
            "gRPC unregistered region: %s %r" % (code, details))
    rpc("SystemSharedMemoryUnregister", pb.SystemSharedMemoryUnregisterRequest(name="g"),
        pb.SystemSharedMemoryUnregisterResponse)
    req.inputs[1].parameters["shared_memory_region"].string_param = "g"
    code, details = rpc_error("ModelInfer", req, pb.ModelInferResponse)
    c.check(code == grpc.StatusCode.INVALID_ARGUMENT and "'g' is not registered" in details,
            "gRPC after unregister: %s %r" % (code, details))
    code, details = rpc_error("SystemSharedMemoryStatus",
                              pb.SystemSharedMemoryStatusRequest(name="g"),
                              pb.SystemSharedMemoryStatusResponse)
    c.eq(code, grpc.StatusCode.NOT_FOUND, "gRPC status of an unregistered region")


def unregister_all(c):
    c.eq(call("POST", "/v2/systemsharedmemory/unregister")[0], 200, "unregister all")
    c.eq(call("GET", "/v2/systemsharedmemory/status"), (200, []), "nothing left")
    err_of(c, rest_infer(shm_in("out", 0, 24)), 400, "not registered", "after unregister all")


def main():
    global srv, chan
    srv = TestServer(rest="127.0.0.1:0")
    chan = grpc.insecure_channel(srv.grpc_address, options=[("grpc.enable_http_proxy", 0)])
    try:
        Checker().run([regions_and_rest, rest_errors, grpc_regions_and_infer, unregister_all],
                      server=srv)
    finally:
        for key in KEYS:
            try:
                os.unlink("/dev/shm" + key)
            except OSError:
                pass


if __name__ == "__main__":
    sys.exit(main())
