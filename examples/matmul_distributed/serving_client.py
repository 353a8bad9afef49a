#!/usr/bin/python3
"""The role of serving_client.py: one instance x = ones(128, 96) to matmul.predict over gRPC."""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
from shardserve_client import Client  # noqa: E402


def main():
    client = Client("127.0.0.1:5500", "matmul", "predict")
    result = client.infer({"x": np.ones((128, 96), np.float32)})
    print("result:", result)
    y = result[0]["y"]
    print("y:", y.dtype, y.shape, "all -48:", bool((y == -48).all()))
    assert len(result) == 1 and y.shape == (128, 16) and y.dtype == np.float32 and (y == -48).all()


if __name__ == "__main__":
    main()
