"""shardserve_client: a Python client for shardserve (and MindSpore Serving) over gRPC.

Behaves like ``mindspore_serving.client``: ``Client(address, servable_name, method_name,
version_number=0).infer(instances)`` returns a list with one dict of outputs per instance
(numpy arrays, str or bytes), ``{"error": msg}`` when the whole request failed, and
``{"error": msg}`` in place of a failed instance. ``infer_async`` returns an object whose
``result()`` blocks for the same value. ``ssl_config=SSLConfig(certificate, private_key,
custom_ca)`` (PEM file paths, as MindSpore's) makes the channel TLS: custom_ca verifies the server
(None = gRPC's default roots), certificate + private_key answer a server that verifies clients.

``KServe`` (shardserve_client.kserve) speaks the Open Inference Protocol (KServe v2) instead:
REST JSON, REST binary tensors or gRPC, and ModelStreamInfer.

Needs only Debian's python3-grpcio, python3-protobuf and python3-numpy. The message classes of
MindSpore's ms_service.proto are built at import time from a descriptor written out below, so no
generated code and no protoc are needed; the field numbers are the wire contract (note that
PredictRequest.instances is 2 but PredictReply.instances is 3, and ErrorMsg.error_msg is bytes).
"""

import grpc
import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

__all__ = ["Client", "SSLConfig", "KServe", "KServeError", "SharedMemory", "ShmTensor"]

_PACKAGE = "mindspore.serving.proto"
_PREDICT = "/mindspore.serving.proto.MSService/Predict"
_MAX_MSG = 512 * 1024 * 1024

_F = descriptor_pb2.FieldDescriptorProto
_DTYPES = ["MS_UNKNOWN", "MS_BOOL", "MS_INT8", "MS_UINT8", "MS_INT16", "MS_UINT16", "MS_INT32",
           "MS_UINT32", "MS_INT64", "MS_UINT64", "MS_FLOAT16", "MS_FLOAT32", "MS_FLOAT64",
           "MS_STRING", "MS_BYTES"]
MS_STRING, MS_BYTES = 13, 14


def _message_classes(fd, *names):
    """Message classes of a FileDescriptorProto built in code, in a pool of their own."""
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    factory = message_factory.MessageFactory(pool)

    def cls(name):
        d = pool.FindMessageTypeByName(fd.package + "." + name)
        if hasattr(message_factory, "GetMessageClass"):
            return message_factory.GetMessageClass(d)
        return factory.GetPrototype(d)

    return tuple(cls(n) for n in names)


def _build_messages():
    fd = descriptor_pb2.FileDescriptorProto(
        name="shardserve_client/ms_service.proto", package=_PACKAGE, syntax="proto3")
    enum = fd.enum_type.add(name="DataType")
    for number, name in enumerate(_DTYPES):
        enum.value.add(name=name, number=number)

    def message(name, fields, nested=()):
        m = fd.message_type.add(name=name)
        for nm in nested:
            m.nested_type.add().CopyFrom(nm)
        for fname, number, ftype, label, type_name, oneof in fields:
            f = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                f.type_name = type_name
            if oneof is not None:
                f.oneof_index = oneof
        return m

    opt, rep = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
    msg, t_bytes, t_str = _F.TYPE_MESSAGE, _F.TYPE_BYTES, _F.TYPE_STRING
    p = "." + _PACKAGE + "."

    def map_entry(name, value_type):
        e = descriptor_pb2.DescriptorProto(name=name)
        e.options.map_entry = True
        e.field.add(name="key", number=1, type=t_str, label=opt)
        e.field.add(name="value", number=2, type=msg, label=opt, type_name=value_type)
        return e

    message("ServableSpec", [("name", 1, t_str, opt, None, None),
                             ("method_name", 2, t_str, opt, None, None),
                             ("version_number", 3, _F.TYPE_UINT64, opt, None, None)])
    message("TensorShape", [("dims", 1, _F.TYPE_INT64, rep, None, None)])
    message("ShmTensorData", [("memory_key", 1, t_str, opt, None, None),
                              ("bytes_size", 2, _F.TYPE_UINT64, opt, None, None),
                              ("data_offset", 3, _F.TYPE_UINT64, opt, None, None),
                              ("data_size", 4, _F.TYPE_UINT64, opt, None, None)])
    tensor = message("Tensor", [("shape", 1, msg, opt, p + "TensorShape", None),
                                ("dtype", 2, _F.TYPE_ENUM, opt, p + "DataType", None),
                                ("data", 3, t_bytes, opt, None, 0),
                                ("shm_data", 5, msg, opt, p + "ShmTensorData", 0),
                                ("bytes_val", 4, t_bytes, rep, None, None)])
    tensor.oneof_decl.add(name="tensor_data")
    message("Instance", [("items", 1, msg, rep, p + "Instance.ItemsEntry", None),
                         ("output_buffers", 2, msg, rep, p + "Instance.OutputBuffersEntry", None)],
            nested=[map_entry("ItemsEntry", p + "Tensor"),
                    map_entry("OutputBuffersEntry", p + "ShmTensorData")])
    message("ErrorMsg", [("error_code", 1, _F.TYPE_INT64, opt, None, None),
                         ("error_msg", 2, t_bytes, opt, None, None)])
    message("PredictRequest", [("servable_spec", 1, msg, opt, p + "ServableSpec", None),
                               ("instances", 2, msg, rep, p + "Instance", None)])
    message("PredictReply", [("servable_spec", 1, msg, opt, p + "ServableSpec", None),
                             ("instances", 3, msg, rep, p + "Instance", None),
                             ("error_msg", 4, msg, rep, p + "ErrorMsg", None)])

    return _message_classes(fd, "PredictRequest", "PredictReply")


PredictRequest, PredictReply = _build_messages()

_NP_TO_MS = {
    np.dtype(np.bool_): 1, np.dtype(np.int8): 2, np.dtype(np.uint8): 3,
    np.dtype(np.int16): 4, np.dtype(np.uint16): 5, np.dtype(np.int32): 6,
    np.dtype(np.uint32): 7, np.dtype(np.int64): 8, np.dtype(np.uint64): 9,
    np.dtype(np.float16): 10, np.dtype(np.float32): 11, np.dtype(np.float64): 12,
}
_MS_TO_NP = {v: k for k, v in _NP_TO_MS.items()}


class SSLConfig:
    """TLS settings for the channel: PEM file paths, as in MindSpore's client."""

    def __init__(self, certificate=None, private_key=None, custom_ca=None):
        if (certificate is None) != (private_key is None):
            raise RuntimeError("certificate and private_key should be given together")
        self.certificate = certificate
        self.private_key = private_key
        self.custom_ca = custom_ca


def _read(path):
    if path is None:
        return None
    with open(path, "rb") as f:
        return f.read()


def _fill_tensor(tensor, value):
    if isinstance(value, (np.ndarray, np.generic)):
        arr = np.asarray(value)
        ms = _NP_TO_MS.get(arr.dtype)
        if ms is None:
            raise RuntimeError("Unknown data type " + str(arr.dtype))
        tensor.dtype = ms
        tensor.shape.dims.extend(arr.shape)
        tensor.data = np.ascontiguousarray(arr).tobytes()
    elif isinstance(value, str):
        tensor.dtype = MS_STRING
        tensor.shape.dims.append(1)
        tensor.bytes_val.append(value.encode("utf-8"))
    elif isinstance(value, bytes):
        tensor.dtype = MS_BYTES
        tensor.shape.dims.append(1)
        tensor.bytes_val.append(value)
    elif isinstance(value, (bool, int, float)):
        _fill_tensor(tensor, np.array((value,)))
    else:
        raise RuntimeError("Not support value type " + str(type(value)))


def _build_request(servable_name, method_name, version_number, instances):
    if isinstance(instances, dict):
        instances = [instances]
    if not isinstance(instances, (list, tuple)):
        raise RuntimeError("instances should be a map or a list of maps")
    request = PredictRequest()
    request.servable_spec.name = servable_name
    request.servable_spec.method_name = method_name
    request.servable_spec.version_number = version_number
    for instance in instances:
        if not isinstance(instance, dict):
            raise RuntimeError("instance should be a map")
        proto_instance = request.instances.add()
        for name, value in instance.items():
            _fill_tensor(proto_instance.items[name], value)
    return request


def _tensor_value(tensor):
    if tensor.dtype in (MS_STRING, MS_BYTES):
        values = list(tensor.bytes_val)
        if tensor.dtype == MS_STRING:
            values = [v.decode("utf-8") for v in values]
        return values[0] if len(values) == 1 else values
    dtype = _MS_TO_NP.get(tensor.dtype)
    if dtype is None:
        raise RuntimeError("Unknown data type " + str(tensor.dtype))
    return np.frombuffer(tensor.data, dtype=dtype).reshape(tuple(tensor.shape.dims))


def _parse_reply(reply):
    errors = reply.error_msg
    if len(errors) == 1 and errors[0].error_code != 0:
        return {"error": errors[0].error_msg.decode("utf-8", "replace")}
    if errors and len(errors) != len(reply.instances):
        raise RuntimeError("reply has %d error entries for %d instances"
                           % (len(errors), len(reply.instances)))
    result = []
    for i, instance in enumerate(reply.instances):
        if errors and errors[i].error_code != 0:
            result.append({"error": errors[i].error_msg.decode("utf-8", "replace")})
            continue
        result.append({name: _tensor_value(t) for name, t in instance.items.items()})
    return result


def _grpc_error(e):
    print("Grpc Error, details:", e.details(), ", code:", e.code().name, e.code().value)
    return {"error": "Grpc Error, " + str(e.code().value) + ", " + str(e.details())}


class _AsyncResult:
    def __init__(self, future):
        self._future = future

    def result(self):
        return _parse_reply(self._future.result())


class _AsyncError:
    def __init__(self, error):
        self._error = error

    def result(self):
        return self._error


class Client:
    """Client(address, servable_name, method_name, version_number=0, ssl_config=None).

    address is "host:port" or "unix:path"; version_number 0 means the latest version."""

    def __init__(self, address, servable_name, method_name, version_number=0, ssl_config=None):
        for what, value in (("address", address), ("servable_name", servable_name),
                            ("method_name", method_name)):
            if not isinstance(value, str) or not value:
                raise RuntimeError("Parameter '%s' should be a non-empty str" % what)
        if isinstance(version_number, bool) or not isinstance(version_number, int) \
                or version_number < 0:
            raise RuntimeError("Parameter 'version_number' should be an int >= 0")
        self.address = address
        self.servable_name = servable_name
        self.method_name = method_name
        self.version_number = version_number
        options = [("grpc.max_send_message_length", _MAX_MSG),
                   ("grpc.max_receive_message_length", _MAX_MSG),
                   ("grpc.enable_http_proxy", 0)]
        if ssl_config is None:
            self.channel = grpc.insecure_channel(address, options=options)
        else:
            creds = grpc.ssl_channel_credentials(
                root_certificates=_read(ssl_config.custom_ca),
                private_key=_read(ssl_config.private_key),
                certificate_chain=_read(ssl_config.certificate))
            self.channel = grpc.secure_channel(address, creds, options=options)
        self._predict = self.channel.unary_unary(
            _PREDICT, request_serializer=PredictRequest.SerializeToString,
            response_deserializer=PredictReply.FromString)

    def _request(self, instances):
        return _build_request(self.servable_name, self.method_name, self.version_number,
                              instances)

    def infer(self, instances):
        """Run one request; see the module docstring for the result."""
        request = self._request(instances)
        try:
            return _parse_reply(self._predict(request))
        except grpc.RpcError as e:
            return _grpc_error(e)

    def infer_async(self, instances):
        """Start one request; .result() of the returned object blocks for infer()'s value."""
        request = self._request(instances)
        try:
            return _AsyncResult(self._predict.future(request))
        except grpc.RpcError as e:
            return _AsyncError(_grpc_error(e))

    def close(self):
        self.channel.close()


from .kserve import KServe, KServeError, SharedMemory, ShmTensor  # noqa: E402  (after Client)
