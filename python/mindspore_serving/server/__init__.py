"""mindspore_serving.server: the declaration API (register, distributed). Starting servers is
`shardserve serve`'s job; the start functions say so instead of pretending."""
from . import distributed, register


def _not_here(name):
    def refuse(*args, **kwargs):
        raise RuntimeError("mindspore_serving.server.%s is not provided by shardserve's shim: start the servable "
                           "with `shardserve serve --servable-dir DIR --servable NAME ...`" % name)
    refuse.__name__ = name
    return refuse


start_servables = _not_here("start_servables")
start_grpc_server = _not_here("start_grpc_server")
start_restful_server = _not_here("start_restful_server")
stop = _not_here("stop")

__all__ = ["register", "distributed", "start_servables", "start_grpc_server", "start_restful_server", "stop"]
