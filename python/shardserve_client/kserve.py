"""shardserve_client.kserve: a client for the Open Inference Protocol (KServe v2), which shardserve
speaks beside MindSpore's protocol (and Triton, KServe, MLServer speak too).

``KServe(address, model, version="", protocol="grpc")`` with protocol ``"grpc"``
(inference.GRPCInferenceService, tensors in raw_input_contents), ``"rest"`` (JSON tensors) or
``"rest-binary"`` (the binary tensor extension). ``infer({"x": array})`` returns ``{name: array}``
and raises ``KServeError`` (``.status``: the HTTP status, or the gRPC status code's name; ``.message``)
when the server refuses the request. ``stream(requests)`` (gRPC only) sends each dict of inputs on
one ModelStreamInfer call and yields, as they arrive, ``(id, outputs)`` or ``(id, KServeError)``
(ids are "0", "1", ... in sending order). ``ready()``, ``metadata()``, ``stats()``.

System shared memory (a server on this host; REST or gRPC): ``SharedMemory(key, byte_size)`` makes
a POSIX object (``write(offset, array)``, ``array(tensor)``, ``close()`` unmaps and removes it);
``register_shm(name, key, byte_size, offset=0)``, ``unregister_shm(name=None)`` (None: all) and
``shm_status(name=None)`` ({name: {"key", "offset", "byte_size"}}) call the extension. An input
given as ``ShmTensor(region, offset, byte_size, datatype, shape)`` travels as its region; an entry
``name: ShmTensor(region, offset, byte_size)`` of an ``outputs`` dict has the server write that
output there, and ``infer`` returns it as a ShmTensor with its datatype and shape filled in.

Needs only Debian's python3-grpcio, python3-protobuf and python3-numpy: the messages are built at
import time from a descriptor written out below (the subset of grpc_service.proto this client uses;
field numbers are the protocol's).
"""

import collections
import json
import mmap
import os
import struct
import urllib.error
import urllib.request

import grpc
import numpy as np
from google.protobuf import descriptor_pb2

from . import _message_classes  # the package defines it before importing this module

__all__ = ["KServe", "KServeError", "SharedMemory", "ShmTensor"]

_PACKAGE = "inference"
_SERVICE = "/inference.GRPCInferenceService/"
_MAX_MSG = 512 * 1024 * 1024
_F = descriptor_pb2.FieldDescriptorProto

_NP_TO_KS = {
    np.dtype(np.bool_): "BOOL", np.dtype(np.uint8): "UINT8", np.dtype(np.uint16): "UINT16",
    np.dtype(np.uint32): "UINT32", np.dtype(np.uint64): "UINT64", np.dtype(np.int8): "INT8",
    np.dtype(np.int16): "INT16", np.dtype(np.int32): "INT32", np.dtype(np.int64): "INT64",
    np.dtype(np.float16): "FP16", np.dtype(np.float32): "FP32", np.dtype(np.float64): "FP64",
}
_KS_TO_NP = {v: k for k, v in _NP_TO_KS.items()}


class KServeError(RuntimeError):
    def __init__(self, status, message):
        super().__init__("%s: %s" % (status, message))
        self.status = status
        self.message = message


ShmTensor = collections.namedtuple("ShmTensor", "region offset byte_size datatype shape",
                                   defaults=(None, None))


class SharedMemory:
    """A POSIX shared-memory object this process creates (``key`` "/name", which must not exist),
    mapped here; ``close()`` unmaps and removes it."""

    def __init__(self, key, byte_size):
        if not key.startswith("/") or "/" in key[1:]:
            raise KServeError("client", "shared memory key %r must be '/name'" % key)
        self.key, self.byte_size = key, byte_size
        fd = os.open("/dev/shm" + key, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, byte_size)
            self._map = mmap.mmap(fd, byte_size)
        except OSError:
            os.unlink("/dev/shm" + key)
            raise
        finally:
            os.close(fd)

    def write(self, offset, value):
        """An array's bytes at offset; the ShmTensor describing them (region = the key's name)."""
        dt, shape, raw = _tensor(value)
        if offset + len(raw) > self.byte_size:
            raise KServeError("client", "%d bytes at %d do not fit %s (%d bytes)"
                              % (len(raw), offset, self.key, self.byte_size))
        self._map[offset:offset + len(raw)] = raw
        return ShmTensor(None, offset, len(raw), dt, shape)

    def array(self, t):
        """The numpy array (a copy) a ShmTensor with datatype and shape describes here."""
        return _array(t.datatype, list(t.shape), bytes(self._map[t.offset:t.offset + t.byte_size]))

    def close(self):
        if self._map is not None:
            self._map.close()
            self._map = None
            os.unlink("/dev/shm" + self.key)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _shm_params(t):
    p = {"shared_memory_region": t.region, "shared_memory_byte_size": t.byte_size}
    if t.offset:
        p["shared_memory_offset"] = t.offset
    return p


def _build_messages():
    fd = descriptor_pb2.FileDescriptorProto(name="shardserve_client/kserve.proto",
                                            package=_PACKAGE, syntax="proto3")
    opt, rep = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
    s, b, i64, msg = _F.TYPE_STRING, _F.TYPE_BYTES, _F.TYPE_INT64, _F.TYPE_MESSAGE
    p = "." + _PACKAGE + "."

    def message(name, fields, nested=()):
        m = fd.message_type.add(name=name)
        for n in nested:
            m.nested_type.add().CopyFrom(n)
        for fname, number, ftype, label, type_name in fields:
            f = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                f.type_name = type_name

    def nested(name, fields, params=None):
        """A nested message; params = the field number of its map<string, InferParameter>."""
        d = descriptor_pb2.DescriptorProto(name=name)
        for fname, number, ftype, label in fields:
            d.field.add(name=fname, number=number, type=ftype, label=label)
        if params:
            e = d.nested_type.add(name="ParametersEntry")
            e.options.map_entry = True
            e.field.add(name="key", number=1, type=s, label=opt)
            e.field.add(name="value", number=2, type=msg, label=opt, type_name=p + "InferParameter")
            d.field.add(name="parameters", number=params, type=msg, label=rep,
                        type_name="%s%s.%s.ParametersEntry" % (p, parent[0], name))
        return d

    message("InferParameter", [("bool_param", 1, _F.TYPE_BOOL, opt, None),
                               ("int64_param", 2, i64, opt, None),
                               ("string_param", 3, s, opt, None),
                               ("double_param", 4, _F.TYPE_DOUBLE, opt, None),
                               ("uint64_param", 5, _F.TYPE_UINT64, opt, None)])
    oneof = fd.message_type[-1].oneof_decl.add(name="parameter_choice")
    for f in fd.message_type[-1].field:
        f.oneof_index = 0
    del oneof
    tensor = [("name", 1, s, opt), ("datatype", 2, s, opt), ("shape", 3, i64, rep)]
    parent = ["ModelInferRequest"]
    message("ModelInferRequest",
            [("model_name", 1, s, opt, None), ("model_version", 2, s, opt, None),
             ("id", 3, s, opt, None),
             ("inputs", 5, msg, rep, p + "ModelInferRequest.InferInputTensor"),
             ("outputs", 6, msg, rep, p + "ModelInferRequest.InferRequestedOutputTensor"),
             ("raw_input_contents", 7, b, rep, None)],
            [nested("InferInputTensor", tensor, 4),
             nested("InferRequestedOutputTensor", [("name", 1, s, opt)], 2)])
    parent[0] = "ModelInferResponse"
    message("ModelInferResponse",
            [("model_name", 1, s, opt, None), ("model_version", 2, s, opt, None),
             ("id", 3, s, opt, None),
             ("outputs", 5, msg, rep, p + "ModelInferResponse.InferOutputTensor"),
             ("raw_output_contents", 6, b, rep, None)],
            [nested("InferOutputTensor", tensor, 4)])
    message("ModelStreamInferResponse",
            [("error_message", 1, s, opt, None),
             ("infer_response", 2, msg, opt, p + "ModelInferResponse")])
    u64 = _F.TYPE_UINT64
    region = [("name", 1, s, opt), ("key", 2, s, opt), ("offset", 3, u64, opt),
              ("byte_size", 4, u64, opt)]
    message("SystemSharedMemoryRegisterRequest", [f + (None,) for f in region])
    message("SystemSharedMemoryUnregisterRequest", [("name", 1, s, opt, None)])
    message("SystemSharedMemoryStatusRequest", [("name", 1, s, opt, None)])
    message("SystemSharedMemoryEmpty", [])  # the Register and Unregister responses: no fields
    status = fd.message_type.add(name="SystemSharedMemoryStatusResponse")
    status.nested_type.add().CopyFrom(nested("RegionStatus", region))
    entry = status.nested_type.add(name="RegionsEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=s, label=opt)
    entry.field.add(name="value", number=2, type=msg, label=opt,
                    type_name=p + "SystemSharedMemoryStatusResponse.RegionStatus")
    status.field.add(name="regions", number=1, type=msg, label=rep,
                     type_name=p + "SystemSharedMemoryStatusResponse.RegionsEntry")
    return _message_classes(fd, "ModelInferRequest", "ModelInferResponse",
                            "ModelStreamInferResponse", "SystemSharedMemoryRegisterRequest",
                            "SystemSharedMemoryUnregisterRequest",
                            "SystemSharedMemoryStatusRequest", "SystemSharedMemoryEmpty",
                            "SystemSharedMemoryStatusResponse")


(ModelInferRequest, ModelInferResponse, ModelStreamInferResponse, ShmRegisterRequest,
 ShmUnregisterRequest, ShmStatusRequest, ShmEmpty, ShmStatusResponse) = _build_messages()


def _bytes_blob(arr):
    """BYTES elements in the binary layout: a 4-byte little-endian length, then the bytes."""
    out = b""
    for v in np.asarray(arr, dtype=object).ravel():
        v = v.encode() if isinstance(v, str) else bytes(v)
        out += struct.pack("<I", len(v)) + v
    return out


def _bytes_array(blob, shape):
    items, off = [], 0
    while off < len(blob):
        (n,) = struct.unpack_from("<I", blob, off)
        items.append(blob[off + 4:off + 4 + n])
        off += 4 + n
    return np.array(items, dtype=object).reshape(shape)


def _tensor(value):
    """(datatype, shape, raw bytes) of an input."""
    arr = np.asarray(value)
    if arr.dtype.kind in "OSU":
        return "BYTES", list(arr.shape), _bytes_blob(arr)
    ks = _NP_TO_KS.get(arr.dtype)
    if ks is None:
        raise KServeError("client", "no KServe datatype for numpy %s" % arr.dtype)
    return ks, list(arr.shape), np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes()


def _array(datatype, shape, raw):
    if datatype == "BYTES":
        return _bytes_array(raw, shape)
    dt = _KS_TO_NP.get(datatype)
    if dt is None:
        raise KServeError("client", "unsupported output datatype %s" % datatype)
    return np.frombuffer(raw, dt.newbyteorder("<")).reshape(shape)


def _asked(outputs, name):
    return outputs.get(name) if isinstance(outputs, dict) else None


def _requested_json(name, outputs):
    t = outputs[name] if isinstance(outputs, dict) else None
    return {"name": name, "parameters": _shm_params(t)} if isinstance(t, ShmTensor) else {"name": name}


def _grpc_params(field, params):
    for key, v in params.items():
        if isinstance(v, str):
            field[key].string_param = v
        else:
            field[key].int64_param = v


def _shm_answer(params, datatype, shape, asked):
    """An output the server wrote into a region (a reply may leave the offset out: the one asked)."""
    offset = asked.offset if isinstance(asked, ShmTensor) else 0
    return ShmTensor(params["shared_memory_region"], params.get("shared_memory_offset", offset),
                     params["shared_memory_byte_size"], datatype, list(shape))


class KServe:
    def __init__(self, address, model, version="", protocol="grpc", timeout=None):
        if protocol not in ("grpc", "rest", "rest-binary"):
            raise KServeError("client", "protocol must be grpc, rest or rest-binary")
        self.address, self.model, self.version = address, model, str(version or "")
        self.protocol, self.timeout = protocol, timeout
        self._channel = None
        if protocol == "grpc":
            self._channel = grpc.insecure_channel(
                address, options=[("grpc.max_send_message_length", _MAX_MSG),
                                  ("grpc.max_receive_message_length", _MAX_MSG),
                                  ("grpc.enable_http_proxy", 0)])

    def close(self):
        if self._channel:
            self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---------------------------------------------------------------- REST plumbing

    def _model_path(self, tail=""):
        v = "/versions/%s" % self.version if self.version else ""
        return "/v2/models/%s%s%s" % (self.model, v, tail)

    def _http(self, method, path, body=None, headers=None):
        req = urllib.request.Request("http://%s%s" % (self.address, path), data=body,
                                     method=method, headers=headers or {})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(req, timeout=self.timeout) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    def _rest_json(self, method, path, body=None):
        status, _, reply = self._http(method, path, body)
        data = json.loads(reply) if reply else {}
        if status != 200:
            raise KServeError(status, data.get("error", "") if isinstance(data, dict) else data)
        return data

    def _infer_rest(self, inputs, outputs, binary):
        head = {"inputs": [], "parameters": {"binary_data_output": True} if binary else {}}
        blobs = []
        for name, value in inputs.items():
            if isinstance(value, ShmTensor):
                head["inputs"].append({"name": name, "datatype": value.datatype,
                                       "shape": list(value.shape), "parameters": _shm_params(value)})
                continue
            dt, shape, raw = _tensor(value)
            t = {"name": name, "datatype": dt, "shape": shape}
            if binary:
                t["parameters"] = {"binary_data_size": len(raw)}
                blobs.append(raw)
            elif dt == "BYTES":
                t["data"] = [x.decode() for x in _bytes_array(raw, shape).ravel()]
            else:
                t["data"] = np.asarray(value).ravel().tolist()
            head["inputs"].append(t)
        if outputs:
            head["outputs"] = [_requested_json(n, outputs) for n in outputs]
        body = json.dumps(head).encode()
        headers = {"Content-Type": "application/json"}
        if binary:
            headers["Inference-Header-Content-Length"] = str(len(body))
            body += b"".join(blobs)
        status, rh, reply = self._http("POST", self._model_path("/infer"), body, headers)
        hlen = int(rh.get("Inference-Header-Content-Length") or len(reply))
        data = json.loads(reply[:hlen])
        if status != 200:
            raise KServeError(status, data.get("error", ""))
        result, off = {}, hlen
        for o in data["outputs"]:
            params = o.get("parameters") or {}
            size = params.get("binary_data_size")
            if "shared_memory_region" in params:
                result[o["name"]] = _shm_answer(params, o["datatype"], o["shape"],
                                                _asked(outputs, o["name"]))
            elif size is not None:
                result[o["name"]] = _array(o["datatype"], o["shape"], reply[off:off + size])
                off += size
            elif o["datatype"] == "BYTES":
                result[o["name"]] = np.array([x.encode() for x in o["data"]],
                                             dtype=object).reshape(o["shape"])
            else:
                result[o["name"]] = np.array(o["data"], _KS_TO_NP[o["datatype"]]).reshape(o["shape"])
        return result

    # ---------------------------------------------------------------- gRPC plumbing

    def _request(self, inputs, outputs, rid=""):
        req = ModelInferRequest(model_name=self.model, model_version=self.version, id=rid)
        for name, value in inputs.items():
            if isinstance(value, ShmTensor):
                t = req.inputs.add(name=name, datatype=value.datatype, shape=list(value.shape))
                _grpc_params(t.parameters, _shm_params(value))
                req.raw_input_contents.append(b"")
                continue
            dt, shape, raw = _tensor(value)
            req.inputs.add(name=name, datatype=dt, shape=shape)
            req.raw_input_contents.append(raw)
        for n in outputs or ():
            o = req.outputs.add(name=n)
            if isinstance(outputs, dict) and isinstance(outputs[n], ShmTensor):
                _grpc_params(o.parameters, _shm_params(outputs[n]))
        return req

    @staticmethod
    def _outputs(resp, outputs=None):
        result = {}
        for k, o in enumerate(resp.outputs):
            if "shared_memory_region" in o.parameters:
                params = {key: getattr(v, v.WhichOneof("parameter_choice"))
                          for key, v in o.parameters.items()}
                result[o.name] = _shm_answer(params, o.datatype, list(o.shape),
                                             _asked(outputs, o.name))
            else:
                result[o.name] = _array(o.datatype, list(o.shape), resp.raw_output_contents[k])
        return result

    def _unary(self, rpc, resp_type):
        return self._channel.unary_unary(_SERVICE + rpc,
                                         request_serializer=lambda m: m.SerializeToString(),
                                         response_deserializer=resp_type.FromString)

    # ---------------------------------------------------------------- API

    def infer(self, inputs, outputs=None):
        if self.protocol != "grpc":
            return self._infer_rest(inputs, outputs, self.protocol == "rest-binary")
        try:
            resp = self._unary("ModelInfer", ModelInferResponse)(
                self._request(inputs, outputs), timeout=self.timeout)
        except grpc.RpcError as e:
            raise KServeError(e.code().name, e.details()) from None
        return self._outputs(resp, outputs)

    def stream(self, requests, outputs=None):
        if self.protocol != "grpc":
            raise KServeError("client", "streaming needs protocol grpc")
        call = self._channel.stream_stream(
            _SERVICE + "ModelStreamInfer", request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=ModelStreamInferResponse.FromString)
        msgs = (self._request(inp, outputs, str(k)) for k, inp in enumerate(requests))
        try:
            for r in call(msgs, timeout=self.timeout):
                if r.error_message:
                    yield r.infer_response.id, KServeError("stream", r.error_message)
                else:
                    yield r.infer_response.id, self._outputs(r.infer_response, outputs)
        except grpc.RpcError as e:
            raise KServeError(e.code().name, e.details()) from None

    def _need_rest(self, what):
        if self.protocol == "grpc":
            raise KServeError("client", "%s() uses REST: use protocol rest or rest-binary" % what)

    def ready(self):
        self._need_rest("ready")
        return self._http("GET", self._model_path("/ready"))[0] == 200

    def metadata(self):
        self._need_rest("metadata")
        return self._rest_json("GET", self._model_path())

    def stats(self):
        self._need_rest("stats")
        return self._rest_json("GET", self._model_path("/stats"))["model_stats"]

    # ---------------------------------------------------------------- system shared memory

    def _shm_grpc(self, rpc, request, resp_type):
        try:
            return self._unary("SystemSharedMemory" + rpc, resp_type)(request, timeout=self.timeout)
        except grpc.RpcError as e:
            raise KServeError(e.code().name, e.details()) from None

    def register_shm(self, name, key, byte_size, offset=0):
        """Register [offset, offset + byte_size) of POSIX shm object `key` as region `name`."""
        if self.protocol == "grpc":
            self._shm_grpc("Register", ShmRegisterRequest(name=name, key=key, offset=offset,
                                                          byte_size=byte_size), ShmEmpty)
            return
        body = json.dumps({"key": key, "offset": offset, "byte_size": byte_size}).encode()
        self._rest_json("POST", "/v2/systemsharedmemory/region/%s/register" % name, body)

    def unregister_shm(self, name=None):
        """Unregister region `name` (None: every region)."""
        if self.protocol == "grpc":
            self._shm_grpc("Unregister", ShmUnregisterRequest(name=name or ""), ShmEmpty)
            return
        where = "/region/%s" % name if name else ""
        self._rest_json("POST", "/v2/systemsharedmemory%s/unregister" % where, b"")

    def shm_status(self, name=None):
        """{name: {"key", "offset", "byte_size"}} of the registered regions (or of `name`)."""
        if self.protocol == "grpc":
            r = self._shm_grpc("Status", ShmStatusRequest(name=name or ""), ShmStatusResponse)
            return {k: {"key": v.key, "offset": v.offset, "byte_size": v.byte_size}
                    for k, v in r.regions.items()}
        where = "/region/%s" % name if name else ""
        return {r["name"]: {k: r[k] for k in ("key", "offset", "byte_size")}
                for r in self._rest_json("GET", "/v2/systemsharedmemory%s/status" % where)}
