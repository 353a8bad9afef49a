#!/usr/bin/python3
"""The ~1B-parameter Llama-shaped model of the generation bench (bench/run_generate.sh --llama1b):
tests/generative/models.py's Llama at hidden 2048, 16 layers, 32 heads, 8 KV heads, intermediate
5632, vocabulary 32000 (0.85e9 parameters: TinyLlama-1.1B's widths at 16 of its 22 layers),
random weights from a fixed seed, exported to ONNX in float32 with its weights as external data
(3.4 GB, one file per tensor as torch writes them; beyond protobuf's 2 GB), plus PyTorch's 64
greedy tokens from a 7-token prompt as the reference. Made once into a cache folder and reused:
the export takes minutes and ~10 GB of RAM at its peak.

  gen_llama1b.py OUT_DIR      (writes OUT_DIR/model.onnx + weight files, prompt.npy, ref_tokens.npy)
"""
import os
import sys
import warnings

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "generative"))
import models  # noqa: E402

SHAPE = dict(vocab=32000, d=2048, nh=32, kvh=8, layers=16, ffn=5632)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(11)
    model = models.Llama(**SHAPE).eval()
    n = sum(p.numel() for p in model.parameters())
    prompt = [int(t) for t in torch.randint(0, 32000, (7,), generator=torch.Generator().manual_seed(7))]
    tokens, gap = models.greedy(model, prompt, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # torch writes the weights of a model over 2 GB as external data files beside it
        models.export(model, os.path.join(out, "model.onnx"), 17)
    np.save(os.path.join(out, "prompt.npy"), np.array(prompt, np.int64))
    np.save(os.path.join(out, "ref_tokens.npy"), np.array(tokens, np.int64))
    with open(os.path.join(out, "meta.txt"), "w") as f:
        f.write(f"family llama\nparameters {n}\nlayers {model.layers}\nkv_heads {model.kv_heads}\n"
                f"head_dim {model.head_dim}\nmin_top2_gap {gap:.4g}\n")
    print(f"llama-1b: {n / 1e9:.2f}e9 parameters, prompt {prompt} -> {tokens[:8]}... "
          f"(top-2 gap >= {gap:.3g})")


if __name__ == "__main__":
    main()
