"""mindspore_serving.client for scripts written against MindSpore Serving: `Client(address,
servable_name, method_name, version_number=0, ssl_config=None).infer(...)` and SSLConfig, which
shardserve's own client (shardserve_client) provides with MindSpore's signatures and replies."""
from shardserve_client import Client, SSLConfig

__all__ = ["Client", "SSLConfig"]
