#!/usr/bin/python3
"""What a user might write instead of shardserve for the seed example: a grpcio server with numpy
answering MindSpore's MSService/Predict with y = -(x @ W), W = 0.5 of shape [96, 16].
Usage: bench_py_server.py [ADDRESS (127.0.0.1:0)] [THREADS (4)]. Prints GRPC_PORT=N once listening."""

import os
import signal
import sys
from concurrent import futures

import grpc
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
from shardserve_client import PredictReply, PredictRequest  # noqa: E402

W = np.full((96, 16), 0.5, np.float32)


def predict(request, context):
    reply = PredictReply()
    reply.servable_spec.CopyFrom(request.servable_spec)
    for inst in request.instances:
        t = inst.items["x"]
        x = np.frombuffer(t.data, np.float32).reshape(tuple(t.shape.dims))
        y = -(x @ W)
        out = reply.instances.add().items["y"]
        out.dtype = 11  # float32
        out.shape.dims.extend(y.shape)
        out.data = y.tobytes()
    return reply


def main():
    address = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:0"
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads),
                         options=[("grpc.max_receive_message_length", 512 << 20),
                                  ("grpc.max_send_message_length", 512 << 20)])
    handler = grpc.method_handlers_generic_handler("mindspore.serving.proto.MSService", {
        "Predict": grpc.unary_unary_rpc_method_handler(
            predict, request_deserializer=PredictRequest.FromString,
            response_serializer=PredictReply.SerializeToString)})
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port(address)
    server.start()
    print("GRPC_PORT=%d" % port, flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    server.stop(0)


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    main()
