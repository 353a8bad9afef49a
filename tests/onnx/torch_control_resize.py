#!/usr/bin/python3
"""PyTorch exports with Resize and If, PyTorch as the oracle (backend-test-style cases).

F.interpolate in every mode PyTorch exports (nearest, bilinear, bicubic, trilinear, with and
without align_corners, by scale and by size) at opsets 11, 13 and 17, a small segmentation-like
net (Conv, Upsample, Concat), and a scripted model whose branch depends on a dim (the exporter
writes If). Usage: torch_control_resize.py OUTDIR
"""
import os
import sys

import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnx import numpy_helper

torch.manual_seed(11)


class Interp(nn.Module):
    def __init__(self, **kw):
        super().__init__()
        self.kw = kw

    def forward(self, x):
        return F.interpolate(x, **self.kw)


class TinySeg(nn.Module):
    def __init__(self):
        super().__init__()
        self.down = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.mid = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Conv2d(11, 2, 1)

    def forward(self, x):
        h = F.relu(self.mid(F.relu(self.down(x))))
        up = F.interpolate(h, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.head(torch.cat([up, x], dim=1))


class ShapeBranch(nn.Module):
    """The branch depends on a dim only: decided when the plan is made."""

    def forward(self, x):
        if x.size(1) > 4:
            return F.interpolate(x.unsqueeze(0), scale_factor=2.0, mode="nearest").squeeze(0)
        return x * 2 + 1


class FlagBranch(nn.Module):
    """The branch depends on data: both branches planned, one run per request."""

    def forward(self, x, flag):
        if bool(flag.sum() > 0):
            y = torch.relu(x) * 3
        else:
            y = x - 1
        return y


def write(out, name, model, args, ins, opset, dynamic=None):
    d = os.path.join(out, f"test_{name}_op{opset}")
    os.makedirs(os.path.join(d, "test_data_set_0"), exist_ok=True)
    model.eval()
    with torch.no_grad():
        r = model(*args)
        torch.onnx.export(model, args, os.path.join(d, "model.onnx"), input_names=ins, output_names=["y"],
                          opset_version=opset, dynamic_axes=dynamic)
    for kind, names, ts in (("input", ins, args), ("output", ["y"], (r,))):
        for i, (n, t) in enumerate(zip(names, ts)):
            onnx.save_tensor(numpy_helper.from_array(t.numpy(), n),
                             os.path.join(d, "test_data_set_0", f"{kind}_{i}.pb"))


def main(out):
    x4 = torch.randn(1, 3, 5, 7)
    x5 = torch.randn(1, 2, 3, 4, 5)
    interps = [
        ("nearest_scale", dict(scale_factor=2.0, mode="nearest"), x4),
        ("nearest_size", dict(size=(8, 11), mode="nearest"), x4),
        ("bilinear_scale", dict(scale_factor=1.5, mode="bilinear", align_corners=False), x4),
        ("bilinear_size_align", dict(size=(9, 4), mode="bilinear", align_corners=True), x4),
        ("bicubic_size", dict(size=(10, 13), mode="bicubic", align_corners=False), x4),
        ("bicubic_align", dict(scale_factor=2.0, mode="bicubic", align_corners=True), x4),
        ("trilinear_size", dict(size=(5, 6, 3), mode="trilinear", align_corners=False), x5),
        ("bilinear_down", dict(size=(3, 4), mode="bilinear", align_corners=False), x4),
    ]
    for opset in (11, 13, 17):
        for name, kw, x in interps:
            write(out, f"interp_{name}", Interp(**kw), (x,), ["x"], opset)
    write(out, "tiny_seg", TinySeg(), (torch.randn(1, 3, 16, 12),), ["x"], 17,
          {"x": {0: "batch", 2: "h", 3: "w"}})
    scripted = torch.jit.script(ShapeBranch())
    write(out, "if_on_shape_taken", scripted, (torch.randn(2, 6, 3),), ["x"], 17, {"x": {1: "c"}})
    write(out, "if_on_shape_other", scripted, (torch.randn(2, 3, 3),), ["x"], 17, {"x": {1: "c"}})
    flag = torch.jit.script(FlagBranch())
    write(out, "if_on_flag_true", flag, (torch.randn(2, 3), torch.tensor([1.0])), ["x", "flag"], 17)
    write(out, "if_on_flag_false", flag, (torch.randn(2, 3), torch.tensor([-1.0])), ["x", "flag"], 17)


if __name__ == "__main__":
    main(sys.argv[1])
