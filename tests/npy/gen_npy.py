#!/usr/bin/python3
"""Good and bad .npy files for test_core_npy, and the numpy side of the C -> numpy round trip.

    gen_npy.py generate DIR   writes DIR/good_*.npy (+ .raw: the C-order little-endian bytes
                              numpy holds) and DIR/bad_*.npy, listed in DIR/manifest.txt:
                                good NAME DTYPE NDIM DIM...
                                bad NAME
    gen_npy.py check DIR      loads every DIR/c_NAME.npy that test_core_npy wrote back with
                              ss_npy_write and compares it with the original NAME.npy.
numpy writes the good files (versions 1.0, 2.0 and 3.0); bad files are numpy output that
shardserve must refuse, or numpy output cut, padded or patched by hand.
"""
import io
import os
import struct
import sys

import numpy as np

SEED = 20261127
# numpy dtype -> shardserve dtype name
DTYPES = {
    "<f4": "float32", "<f8": "float64", "<f2": "float16", "|i1": "int8", "<i2": "int16",
    "<i4": "int32", "<i8": "int64", "|u1": "uint8", "<u2": "uint16", "<u4": "uint32",
    "<u8": "uint64", "|b1": "bool",
}
SHAPES = {"0d": (), "1d": (7,), "2d": (3, 4), "3d": (2, 3, 4), "empty1": (0,),
          "empty3": (3, 0, 2), "8d": (1, 2, 1, 2, 1, 2, 1, 2)}


def values(descr, shape, rng):
    dt = np.dtype(descr)
    n = int(np.prod(shape, dtype=np.int64))
    if dt.kind == "b":
        flat = rng.integers(0, 2, n).astype(bool)
    elif dt.kind == "f":
        flat = (rng.standard_normal(n) * 1000).astype(dt)
        specials = np.array([np.nan, np.inf, -np.inf, -0.0, np.finfo(dt).max, np.finfo(dt).tiny],
                            dtype=dt)
        k = min(n, len(specials))
        flat[:k] = specials[:k]
    else:
        info = np.iinfo(dt)
        flat = rng.integers(info.min, info.max, n, dtype=dt, endpoint=True)
        k = min(n, 2)
        flat[:k] = [info.min, info.max][:k]
    return flat.reshape(shape).astype(dt)


def npy_bytes(arr, version=None, allow_pickle=False):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, version=version, allow_pickle=allow_pickle)
    return buf.getvalue()


def handmade(header, data=b"", major=1, hlen=None):
    """An npy file with an arbitrary header dict text, padded as numpy pads."""
    head = header.encode("latin1")
    pre = 10 if major == 1 else 12
    pad = (-(pre + len(head) + 1)) % 64
    head = head + b" " * pad + b"\n"
    size = len(head) if hlen is None else hlen
    fmt = "<H" if major == 1 else "<I"
    return b"\x93NUMPY" + bytes([major, 0]) + struct.pack(fmt, size) + head + data


def bad_files():
    f4 = np.arange(6, dtype="<f4").reshape(2, 3)
    good = npy_bytes(f4)
    good_v2 = npy_bytes(f4, version=(2, 0))
    hdr = "{'descr': '<f4', 'fortran_order': False, 'shape': %s, }"
    return {
        "fortran": npy_bytes(np.asfortranarray(f4)),
        "bigendian": npy_bytes(np.arange(4, dtype=">f4")),
        "bigendian_i8": npy_bytes(np.arange(4, dtype=">i8")),
        "object": npy_bytes(np.array([1, "a", None], dtype=object), allow_pickle=True),
        "structured": npy_bytes(np.zeros(3, dtype=[("a", "<f4"), ("b", "<i4")])),
        "complex": npy_bytes(np.zeros(3, dtype=np.complex64)),
        "unicode": npy_bytes(np.array(["ab", "c"])),
        "datetime": npy_bytes(np.array(["2026-11-27"], dtype="datetime64[D]")),
        "truncated_header": good[:40],
        "truncated_preamble": good[:9],
        "truncated_data": good[:-3],
        "truncated_data_v2": good_v2[:-1],
        "extra_data": good + b"\0" * 5,
        "bad_magic": b"\x93NUMPX" + good[6:],
        "text_file": b"this is not an npy file, just text\n",
        "empty": b"",
        "absurd_header_len": handmade(hdr % "(2,)", b"\0" * 8, major=2, hlen=0xFFFFFFF0),
        "absurd_header_len_v1": handmade(hdr % "(2,)", major=1, hlen=0xFFFF)[:100],
        "dims_overflow": handmade(hdr % "(1099511627776, 1099511627776, 1099511627776)", b"\0" * 16),
        "dims_overflow_zero": handmade(hdr % "(1099511627776, 1099511627776, 0)"),
        "dim_too_big": handmade(hdr % "(99999999999999999999,)", b"\0" * 16),
        "huge_shape": handmade(hdr % "(1099511627776,)", b"\0" * 16),
        "negative_dim": handmade(hdr % "(-1,)"),
        "too_many_dims": npy_bytes(np.zeros((1,) * 9, dtype="<f4")),
        "version9": good[:6] + b"\x09" + good[7:],
        "version0": good[:6] + b"\x00" + good[7:],
        "no_descr": handmade("{'fortran_order': False, 'shape': (2,), }", b"\0" * 8),
        "descr_no_order": handmade("{'descr': 'f4', 'fortran_order': False, 'shape': (2,), }",
                                   b"\0" * 8),
        "shape_list": handmade("{'descr': '<f4', 'fortran_order': False, 'shape': [2], }",
                               b"\0" * 8),
        "fortran_garbage": handmade("{'descr': '<f4', 'fortran_order': maybe, 'shape': (2,), }",
                                    b"\0" * 8),
        "header_nul": handmade("{\0'descr': '<f4', 'fortran_order': False, 'shape': (2,), }",
                               b"\0" * 8),
        "unterminated_descr": handmade("{'descr': '<f4", b""),
        "unterminated_shape": handmade("{'descr': '<f4', 'fortran_order': False, 'shape': (2,"),
    }


def generate(out):
    os.makedirs(out, exist_ok=True)
    for f in os.listdir(out):
        if f.endswith((".npy", ".raw", ".txt")):
            os.remove(os.path.join(out, f))
    rng = np.random.default_rng(SEED)
    lines = []

    def put(name, data):
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)

    for descr, ssname in DTYPES.items():
        for tag, shape in SHAPES.items():
            versions = [(1, 0), (2, 0), (3, 0)] if tag in ("0d", "3d", "empty3") else [(1, 0)]
            arr = values(descr, shape, rng)
            for v in versions:
                name = f"good_{ssname}_{tag}_v{v[0]}"
                data = npy_bytes(arr, version=v)
                assert data[6] == v[0]
                put(name + ".npy", data)
                put(name + ".raw", arr.astype(np.dtype(descr).newbyteorder("<")).tobytes("C"))
                lines.append(" ".join(["good", name, ssname, str(len(shape))] + [str(d) for d in shape]))
    # '>i1', '>u1' and '>b1' have no byte order to get wrong; numpy never writes them, but they
    # are legal and mean the same as '|i1'.
    arr = np.array([-1, 2, -3], dtype="i1")
    put("good_int8_bigendian_mark.npy",
        handmade("{'descr': '>i1', 'fortran_order': False, 'shape': (3,), }", arr.tobytes()))
    put("good_int8_bigendian_mark.raw", arr.tobytes())
    lines.append("good good_int8_bigendian_mark int8 1 3")
    for name, data in bad_files().items():
        put(f"bad_{name}.npy", data)
        lines.append(f"bad bad_{name}")
    with open(os.path.join(out, "manifest.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {sum(l.startswith('good') for l in lines)} good and "
          f"{sum(l.startswith('bad') for l in lines)} bad npy files to {out}")


def check(out):
    failures, checked = [], 0
    with open(os.path.join(out, "manifest.txt")) as f:
        goods = [l.split()[1] for l in f if l.startswith("good ")]
    for name in goods:
        path = os.path.join(out, f"c_{name}.npy")
        if not os.path.exists(path):
            failures.append(f"{path}: missing (test_core_npy did not write it)")
            continue
        with open(path, "rb") as f:
            raw = f.read()
        major = raw[6]
        pre = 10 if major == 1 else 12
        hlen = struct.unpack("<H" if major == 1 else "<I", raw[8:pre])[0]
        if major != 1 or (pre + hlen) % 64 or raw[pre + hlen - 1:pre + hlen] != b"\n":
            failures.append(f"{path}: header is not a 64-byte aligned version 1.0 header")
        try:
            got = np.load(path, allow_pickle=False)
        except Exception as e:  # numpy's own reader is the judge here
            failures.append(f"{path}: numpy cannot load it: {e}")
            continue
        want = np.load(os.path.join(out, f"{name}.npy"), allow_pickle=False)
        if got.dtype != want.dtype or got.shape != want.shape or got.tobytes() != want.tobytes():
            what = "data" if (got.dtype, got.shape) == (want.dtype, want.shape) else "array"
            failures.append(f"{path}: {what} {got.dtype}{got.shape} differs from the original "
                            f"{want.dtype}{want.shape}")
        checked += 1
    for f in failures:
        print("FAIL", f)
    print(f"numpy read {checked} files written by ss_npy_write, {len(failures)} failures")
    return 1 if failures or checked == 0 else 0


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("generate", "check"):
        sys.exit(__doc__)
    if sys.argv[1] == "generate":
        generate(sys.argv[2])
    else:
        sys.exit(check(sys.argv[2]))
