#!/usr/bin/python3
"""Turns the real-model test cases of scripts/test-real-models.sh into bench_runtime / bench_ort.js
inputs: for every case folder (model.onnx + test_data_set_0/input_N.pb, written by
tests/real_models/make_cases.js with raw_data) one folder with a link to the model, one .npy per
input and inputs.txt ("name file" lines, in graph-input order). Nothing is downloaded: the cases
come from the cache (SHARDSERVE_REAL_MODELS_CACHE, default ~/.cache/shardserve-real-models).

    real_cases.py OUT_DIR [CASE ...]     (default: the CNN and audio models listed in REAL)
"""
import os
import struct
import sys

import numpy as np

# name in the cache, row label (what the model is)
REAL = [
    ("ppocr_v4_det", "PP-OCRv4 det (CNN) 96x128"),
    ("ppocr_v4_rec", "PP-OCRv4 rec (CNN+SVTR)"),
    ("ppocr_mobile_v2_cls", "PP-OCR v2 cls (MobileNet)"),
    ("oww_embedding", "openWakeWord embedding (CNN, LeakyRelu)"),
    ("oww_melspectrogram", "openWakeWord melspectrogram"),
    ("silero_vad_v5", "silero VAD v5 (Conv+LSTM)"),
]
# imgly ISNet (1024x1024 U-Net) is left out: ~8-16 s per call here, minutes per row.
DTYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 6: np.int32, 7: np.int64, 9: np.bool_,
          10: np.float16, 11: np.float64}


def varint(buf, i):
    v = shift = 0
    while True:
        b = buf[i]
        i += 1
        v |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return v, i


def tensor_proto(buf):
    """name, numpy array of an ONNX TensorProto with dims, data_type and raw_data."""
    dims, dt, name, raw, i = [], 1, "", b"", 0
    while i < len(buf):
        key, i = varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            v, i = varint(buf, i)
            if field == 1:
                dims.append(v)
            elif field == 2:
                dt = v
        elif wire == 2:
            n, i = varint(buf, i)
            chunk = buf[i:i + n]
            i += n
            if field == 1:  # packed dims
                j = 0
                while j < len(chunk):
                    v, j = varint(chunk, j)
                    dims.append(v)
            elif field == 8:
                name = chunk.decode()
            elif field == 9:
                raw = bytes(chunk)
        elif wire == 5:
            i += 4
        elif wire == 1:
            i += 8
        else:
            raise ValueError(f"unexpected wire type {wire}")
    if dt not in DTYPES:
        raise ValueError(f"input '{name}': data type {dt} not handled")
    arr = np.frombuffer(raw, dtype=DTYPES[dt]).reshape(dims)
    return name, arr


def convert(cache, case, out):
    src = os.path.join(cache, "cases", case)
    if not os.path.isfile(os.path.join(src, "model.onnx")):
        return False
    dst = os.path.join(out, case)
    os.makedirs(dst, exist_ok=True)
    link = os.path.join(dst, "model.onnx")
    if not os.path.islink(link):
        os.symlink(os.path.join(src, "model.onnx"), link)
    lines, k = [], 0
    while os.path.isfile(os.path.join(src, "test_data_set_0", f"input_{k}.pb")):
        with open(os.path.join(src, "test_data_set_0", f"input_{k}.pb"), "rb") as f:
            name, arr = tensor_proto(f.read())
        np.save(os.path.join(dst, f"input_{k}.npy"), arr)
        lines.append(f"{name} input_{k}.npy")
        k += 1
    with open(os.path.join(dst, "inputs.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return True


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    cache = os.environ.get("SHARDSERVE_REAL_MODELS_CACHE",
                           os.path.expanduser("~/.cache/shardserve-real-models"))
    names = sys.argv[2:] or [c for c, _ in REAL]
    for case in names:
        if not convert(cache, case, sys.argv[1]):
            print(f"real_cases.py: {case} is not in {cache}/cases (scripts/test-real-models.sh "
                  "--fetch-only fills it)", file=sys.stderr)


if __name__ == "__main__":
    main()
