#!/usr/bin/python3
"""Reference values for core's float16/bfloat16 conversions, written for test_core_dtype.

numpy (float32 -> float16) and torch (float32 -> bfloat16) are the oracles; the C code is never
consulted. Output file layout (all little-endian):
    "SSFO" u32 version=1, u32 n
    n x u32   float32 input bits (edge cases first, then random)
    n x u16   numpy float16 bits of each input
    n x u16   torch bfloat16 bits of each input
    65536 x u32   float32 bits of every float16 pattern (numpy)
    65536 x u32   float32 bits of every bfloat16 pattern (torch)
Usage: float_oracle.py OUT_FILE [N_RANDOM]
"""
import os
import struct
import sys

import numpy as np
import torch

SEED = 20261127


def edge_cases():
    """Bit patterns where rounding, overflow and subnormal handling go wrong first."""
    f32 = lambda v: int(np.array(v, dtype=np.float32).view(np.uint32))
    bits = [0x00000000, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00000, 0x7F800001,
            0x7FBFFFFF, 0xFF800001, 0x00000001, 0x807FFFFF, 0x00800000, 0x7F7FFFFF, 0xFF7FFFFF]
    for v in [65504.0, 65519.0, 65519.996, 65520.0, 65520.004, 65535.0, 65536.0, 1e10,
              2.0**-24, 2.0**-25, 2.0**-26, 2.0**-14, 2.0**-14 - 2.0**-24, 2.0**-15,
              1.0, 1.0 + 2.0**-11, 1.0 + 3 * 2.0**-11, 1.0 + 2.0**-11 + 2.0**-23, 0.1, 1.0 / 3]:
        bits += [f32(v), f32(-v)]
    for b in list(bits):  # neighbours of every edge
        bits += [(b + 1) & 0xFFFFFFFF, (b - 1) & 0xFFFFFFFF]
    # Every exact tie and its neighbours between consecutive float16 values (normal and subnormal),
    # and between consecutive bfloat16 values over a range of exponents.
    h = np.arange(0, 0x7C00, dtype=np.uint16)
    lo = h.view(np.float16).astype(np.float64)
    hi = (h + 1).view(np.float16).astype(np.float64)
    mid = ((lo + hi) / 2).astype(np.float32).view(np.uint32)  # exact: halves fit in float32
    ties = np.concatenate([mid, mid + 1, mid - 1])
    bf = (np.arange(0, 0x7F80, 7, dtype=np.uint32) << 16) | 0x8000
    ties = np.concatenate([ties, bf, bf + 1, bf - 1])
    ties = np.concatenate([ties, ties | 0x80000000])
    return np.concatenate([np.array(bits, dtype=np.uint32), ties.astype(np.uint32)])


def random_inputs(n):
    rng = np.random.default_rng(SEED)
    any_bits = rng.integers(0, 2**32, n // 2, dtype=np.uint64).astype(np.uint32)
    # Concentrate the rest where float16 is interesting: exponents from deep subnormal to overflow.
    exp = rng.integers(100, 145, n - n // 2, dtype=np.uint32)
    mant = rng.integers(0, 2**23, n - n // 2, dtype=np.uint32)
    sign = rng.integers(0, 2, n - n // 2, dtype=np.uint32) << 31
    return np.concatenate([any_bits, sign | (exp << 23) | mant])


def main():
    out = sys.argv[1]
    n_random = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000
    inputs = np.concatenate([edge_cases(), random_inputs(n_random)]).astype("<u4")
    x = inputs.view(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        f16 = x.astype(np.float16).view("<u2")
    bf16 = torch.from_numpy(x.copy()).to(torch.bfloat16).view(torch.int16).numpy().view("<u2")
    all16 = np.arange(65536, dtype=np.uint16)
    f16_dec = all16.view(np.float16).astype(np.float32).view("<u4")
    bf16_dec = (torch.from_numpy(all16.view(np.int16).copy()).view(torch.bfloat16)
                .to(torch.float32).numpy().view("<u4"))
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "wb") as f:
        f.write(b"SSFO" + struct.pack("<II", 1, len(inputs)))
        for arr in (inputs, f16, bf16, f16_dec, bf16_dec):
            f.write(np.ascontiguousarray(arr).tobytes())
    print(f"wrote {len(inputs)} conversions ({n_random} random, seed {SEED}) to {out}")


if __name__ == "__main__":
    main()
