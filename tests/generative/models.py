#!/usr/bin/python3
"""Tiny decoder-only transformers with a KV cache, exported to ONNX, and PyTorch's own greedy
generation as the oracle for shardserve's token loop (tests/generative).

Two families, random weights from a fixed seed, nothing downloaded:
  gpt2   learned positions, LayerNorm, tanh-GELU, fused c_attn [d,3d] + bias, tied LM head
  llama  rotary positions, RMSNorm, SwiGLU, bias-free projections, grouped-query attention
         (fewer KV heads than query heads)
Both follow the tensor operations of HF transformers' modeling_gpt2.py / modeling_llama.py, so
the exported attention is the MatMul -> Reshape(.., C[heads], C[head_dim]) -> Transpose chain an
exporter writes for real checkpoints (what the shard tool must recognise).

ONNX I/O (HF optimum's convention): input_ids, position_ids [batch, seq], attention_mask
[batch, past+seq] (int64), past_key_values.L.key/.value [batch, kv_heads, past, head_dim] ->
logits [batch, seq, vocab], present.L.key/.value [batch, kv_heads, past+seq, head_dim]; batch,
sequence and past length are dynamic.

Usage: models.py --family gpt2|llama --out DIR [--opset 14|17] [--prompt-len 7] [--steps 64]
                 [--size tiny|small|mid] [--score-bias] [--vocab N]
--vocab sets the vocabulary (tiny: 128), e.g. a prime that no rank count divides (131).
--score-bias (gpt2) adds a learned per-head bias to the attention scores: not a mask, so
`shard --kv-pool` must leave such an attention alone.
writes DIR/model.onnx, DIR/prompt.npy (int64 [prompt-len]), DIR/ref_tokens.npy (int64 [steps],
greedy, prefill then one decode step per token with the cache fed back) and DIR/meta.txt.
"""
import argparse
import math
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

NEG = torch.finfo(torch.float32).min


def causal_bias(attention_mask, q_len, past_len):
    """0 where query i (at absolute position past+i) may see key j, float min elsewhere."""
    total = attention_mask.shape[1]
    q_pos = torch.arange(q_len).unsqueeze(1) + past_len
    k_pos = torch.arange(total).unsqueeze(0)
    ok = (k_pos <= q_pos).unsqueeze(0) & (attention_mask.unsqueeze(1) > 0)
    return torch.where(ok, torch.tensor(0.0), torch.tensor(NEG)).unsqueeze(1)


def attend(q, k, v, bias, head_bias=None):
    scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1]) + bias
    if head_bias is not None:
        scores = scores + head_bias
    return torch.matmul(torch.softmax(scores, dim=-1), v)


# ---------------------------------------------------------------- GPT-2
class GPT2Block(nn.Module):
    def __init__(self, d, nh, score_bias=False):
        super().__init__()
        self.head_bias = nn.Parameter(torch.randn(nh, 1, 1)) if score_bias else None
        self.nh, self.hd = nh, d // nh
        self.ln_1, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d)
        # HF's Conv1D stores [in, out] and computes addmm: MatMul + Add in ONNX
        self.c_attn_w = nn.Parameter(torch.randn(d, 3 * d) * 0.2)
        self.c_attn_b = nn.Parameter(torch.randn(3 * d) * 0.1)
        self.c_proj_w = nn.Parameter(torch.randn(d, d) * 0.2)
        self.c_proj_b = nn.Parameter(torch.randn(d) * 0.1)
        self.fc_w = nn.Parameter(torch.randn(d, 4 * d) * 0.2)
        self.fc_b = nn.Parameter(torch.randn(4 * d) * 0.1)
        self.fc2_w = nn.Parameter(torch.randn(4 * d, d) * 0.4)
        self.fc2_b = nn.Parameter(torch.randn(d) * 0.1)

    def split_heads(self, t):
        return t.view(t.shape[0], t.shape[1], self.nh, self.hd).transpose(1, 2)

    def forward(self, x, bias, past_k, past_v):
        h = self.ln_1(x)
        q, k, v = (torch.matmul(h, self.c_attn_w) + self.c_attn_b).split(x.shape[-1], dim=2)
        q, k, v = self.split_heads(q), self.split_heads(k), self.split_heads(v)
        k, v = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
        a = attend(q, k, v, bias, self.head_bias).transpose(1, 2)
        a = a.reshape(a.shape[0], a.shape[1], self.nh * self.hd)
        x = x + torch.matmul(a, self.c_proj_w) + self.c_proj_b
        m = F.gelu(torch.matmul(self.ln_2(x), self.fc_w) + self.fc_b, approximate="tanh")
        return x + torch.matmul(m, self.fc2_w) + self.fc2_b, k, v


class GPT2(nn.Module):
    def __init__(self, vocab=128, d=64, nh=4, layers=2, n_pos=256, score_bias=False):
        super().__init__()
        self.kv_heads, self.head_dim, self.layers = nh, d // nh, layers
        self.wte = nn.Parameter(torch.randn(vocab, d) * 0.2)
        self.wpe = nn.Parameter(torch.randn(n_pos, d) * 0.1)
        self.blocks = nn.ModuleList([GPT2Block(d, nh, score_bias) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(d)

    def forward(self, input_ids, position_ids, attention_mask, *past):
        bias = causal_bias(attention_mask, input_ids.shape[1], past[0].shape[2])
        x = F.embedding(input_ids, self.wte) + F.embedding(position_ids, self.wpe)
        present = []
        for i, blk in enumerate(self.blocks):
            x, k, v = blk(x, bias, past[2 * i], past[2 * i + 1])
            present += [k, v]
        return (torch.matmul(self.ln_f(x), self.wte.t()), *present)


# ---------------------------------------------------------------- Llama
class RMSNorm(nn.Module):
    def __init__(self, d, eps=1e-6):
        super().__init__()
        self.weight, self.eps = nn.Parameter(1 + 0.1 * torch.randn(d)), eps

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class LlamaBlock(nn.Module):
    def __init__(self, d, nh, kvh, ffn):
        super().__init__()
        self.nh, self.kvh, self.hd = nh, kvh, d // nh
        lin = lambda i, o: nn.Linear(i, o, bias=False)  # noqa: E731
        self.q_proj, self.k_proj = lin(d, nh * self.hd), lin(d, kvh * self.hd)
        self.v_proj, self.o_proj = lin(d, kvh * self.hd), lin(nh * self.hd, d)
        self.gate_proj, self.up_proj, self.down_proj = lin(d, ffn), lin(d, ffn), lin(ffn, d)
        self.input_layernorm, self.post_attention_layernorm = RMSNorm(d), RMSNorm(d)
        for m in (self.q_proj, self.k_proj, self.v_proj, self.o_proj, self.gate_proj, self.up_proj):
            nn.init.normal_(m.weight, std=0.2)
        nn.init.normal_(self.down_proj.weight, std=0.1)

    def repeat_kv(self, t):
        b, _, s, hd = t.shape
        rep = self.nh // self.kvh
        return t[:, :, None, :, :].expand(b, self.kvh, rep, s, hd).reshape(b, self.nh, s, hd)

    def forward(self, x, bias, cos, sin, past_k, past_v):
        b, t = x.shape[0], x.shape[1]
        h = self.input_layernorm(x)
        q = self.q_proj(h).view(b, t, self.nh, self.hd).transpose(1, 2)
        k = self.k_proj(h).view(b, t, self.kvh, self.hd).transpose(1, 2)
        v = self.v_proj(h).view(b, t, self.kvh, self.hd).transpose(1, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        k, v = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
        a = attend(q, self.repeat_kv(k), self.repeat_kv(v), bias).transpose(1, 2)
        x = x + self.o_proj(a.reshape(b, t, self.nh * self.hd))
        h = self.post_attention_layernorm(x)
        return x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h)), k, v


class Llama(nn.Module):
    def __init__(self, vocab=128, d=64, nh=4, kvh=2, layers=2, ffn=172, theta=10000.0):
        super().__init__()
        self.kv_heads, self.head_dim, self.layers = kvh, d // nh, layers
        self.embed_tokens = nn.Embedding(vocab, d)
        self.layers_ = nn.ModuleList([LlamaBlock(d, nh, kvh, ffn) for _ in range(layers)])
        self.norm = RMSNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        nn.init.normal_(self.lm_head.weight, std=0.5)
        hd = d // nh
        self.register_buffer("inv_freq", 1.0 / theta ** (torch.arange(0, hd, 2).float() / hd))

    def forward(self, input_ids, position_ids, attention_mask, *past):
        bias = causal_bias(attention_mask, input_ids.shape[1], past[0].shape[2])
        freqs = position_ids.unsqueeze(-1).float() * self.inv_freq
        emb = torch.cat((freqs, freqs), dim=-1).unsqueeze(1)
        cos, sin = emb.cos(), emb.sin()
        x = self.embed_tokens(input_ids)
        present = []
        for i, blk in enumerate(self.layers_):
            x, k, v = blk(x, bias, cos, sin, past[2 * i], past[2 * i + 1])
            present += [k, v]
        return (self.lm_head(self.norm(x)), *present)


# ---------------------------------------------------------------- export and reference
# --size small: GPT-2-124M's shape, and a Llama of the same width with GQA (for benchmarks; the
# tests use tiny)
# --size mid: ~215 MB of GPT-2 weights on disk for the memory-limit test (test_gen_cgroup.py)
SIZES = {("gpt2", "small"): dict(vocab=50257, d=768, nh=12, layers=12, n_pos=1024),
         ("gpt2", "mid"): dict(vocab=16384, d=768, nh=12, layers=4, n_pos=512),
         ("llama", "small"): dict(vocab=32000, d=768, nh=12, kvh=4, layers=12, ffn=2048)}


def make(family, size="tiny", score_bias=False, vocab=None):
    torch.manual_seed(0 if family == "gpt2" else 1)
    kw = dict(SIZES.get((family, size), {}), **({"score_bias": True} if score_bias else {}))
    if vocab:
        kw["vocab"] = vocab
    return (GPT2(**kw) if family == "gpt2" else Llama(**kw)).eval()


def empty_past(model, batch, past_len=0):
    shape = (batch, model.kv_heads, past_len, model.head_dim)
    return [torch.zeros(shape) for _ in range(2 * model.layers)]


def step(model, ids, start, past):
    """One forward of `ids` [1, T] at positions start.. with the cache `past`."""
    t = ids.shape[1]
    pos = torch.arange(start, start + t).unsqueeze(0)
    mask = torch.ones(1, start + t, dtype=torch.int64)
    out = model(ids, pos, mask, *past)
    return out[0], list(out[1:])


@torch.no_grad()
def greedy(model, prompt, steps):
    """Prefill, then one decode step per token feeding `present` back as `past`; returns the
    tokens and the smallest gap between the best and second-best logit (a tie makes the test
    meaningless, so the caller checks it)."""
    logits, past = step(model, torch.tensor([prompt]), 0, empty_past(model, 1))
    tokens, gap, pos = [], float("inf"), len(prompt)
    for _ in range(steps):
        top2 = torch.topk(logits[0, -1], 2).values
        gap = min(gap, float(top2[0] - top2[1]))
        tok = int(torch.argmax(logits[0, -1]))
        tokens.append(tok)
        logits, past = step(model, torch.tensor([[tok]]), pos, past)
        pos += 1
    return tokens, gap


def export(model, path, opset):
    n = model.layers
    past_names = [f"past_key_values.{i}.{kv}" for i in range(n) for kv in ("key", "value")]
    present_names = [f"present.{i}.{kv}" for i in range(n) for kv in ("key", "value")]
    ids = torch.tensor([[3, 5, 7, 9]])  # traced with a non-empty past (3) and 4 new tokens
    args = (ids, torch.arange(3, 7).unsqueeze(0), torch.ones(1, 7, dtype=torch.int64),
            *empty_past(model, 1, 3))
    # optimum's dim names: the mask's length is named as the sum it is
    b, s, p, t = "batch_size", "sequence_length", "past_sequence_length", \
        "past_sequence_length + sequence_length"
    axes = {"input_ids": {0: b, 1: s}, "position_ids": {0: b, 1: s},
            "attention_mask": {0: b, 1: t}, "logits": {0: b, 1: s}}
    axes.update({n: {0: b, 2: p} for n in past_names})
    axes.update({n: {0: b, 2: t} for n in present_names})
    torch.onnx.export(model, args, path, opset_version=opset, do_constant_folding=True,
                      input_names=["input_ids", "position_ids", "attention_mask"] + past_names,
                      output_names=["logits"] + present_names, dynamic_axes=axes)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--family", choices=["gpt2", "llama"], required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--opset", type=int, default=17)
    ap.add_argument("--prompt-len", type=int, default=7)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--size", choices=["tiny", "small", "mid"], default="tiny")
    ap.add_argument("--score-bias", action="store_true")
    ap.add_argument("--vocab", type=int)
    a = ap.parse_args()
    if a.score_bias and a.family != "gpt2":
        raise SystemExit("--score-bias is for --family gpt2")
    os.makedirs(a.out, exist_ok=True)
    model = make(a.family, a.size, a.score_bias, a.vocab)
    prompt = [int(t) for t in torch.randint(0, 128, (a.prompt_len,), generator=torch.Generator().manual_seed(7))]
    tokens, gap = greedy(model, prompt, a.steps)
    if gap < 1e-3:
        raise SystemExit(f"{a.family}: greedy tie (top-2 gap {gap:g}); change the seed")
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export(model, os.path.join(a.out, "model.onnx"), a.opset)
    np.save(os.path.join(a.out, "prompt.npy"), np.array(prompt, np.int64))
    np.save(os.path.join(a.out, "ref_tokens.npy"), np.array(tokens, np.int64))
    with open(os.path.join(a.out, "meta.txt"), "w") as f:
        f.write(f"family {a.family}\nlayers {model.layers}\nkv_heads {model.kv_heads}\n"
                f"head_dim {model.head_dim}\nmin_top2_gap {gap:.4g}\ndistinct {len(set(tokens))}\n")
    print(f"{a.family}: prompt {prompt} -> {tokens[:16]}... ({len(set(tokens))} distinct, "
          f"top-2 gap >= {gap:.3g})")


if __name__ == "__main__":
    main()
