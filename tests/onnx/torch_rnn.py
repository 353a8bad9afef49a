#!/usr/bin/python3
"""PyTorch exports of LSTM, GRU and RNN, and of a scripted loop building a list, PyTorch as the
oracle (backend-test-style cases).

What ONNX's own node cases leave out: bidirectional layers (the reverse direction), stacked
layers, GRU with linear_before_reset (PyTorch's form), ReLU RNNs, initial states given as
inputs, batch_first models, a batch dim the plan only learns from the data, and float64.
Usage: torch_rnn.py OUTDIR
"""
import os
import sys

import onnx
import torch
import torch.nn as nn
from onnx import numpy_helper

torch.manual_seed(12)


class Recurrent(nn.Module):
    """The sequence output and the final hidden state of one recurrent module."""

    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn

    def forward(self, x, *state):
        if len(state) == 2:  # LSTM: (h0, c0)
            state = (state,)
        y, h = self.rnn(x, *state)
        if isinstance(h, tuple):
            return y, h[0], h[1]
        return y, h


class ListLoop(nn.Module):
    """A scripted for loop appending to a list, then torch.stack: the exporter writes
    SequenceEmpty, a Loop-carried SequenceInsert and ConcatFromSequence (a scan output here)."""

    def forward(self, x, n: int):
        ys = []
        h = x
        for _ in range(n):
            h = torch.tanh(h * 1.5 + 0.1)
            ys.append(h)
        return h, torch.stack(ys)


class ListLoopByRows(nn.Module):
    def __init__(self):
        super().__init__()
        self.loop = torch.jit.script(ListLoop())

    def forward(self, x):
        return self.loop(x, x.shape[0])


def write(out, name, model, args, ins, opset=14, dynamic=None):
    d = os.path.join(out, f"test_{name}")
    os.makedirs(os.path.join(d, "test_data_set_0"), exist_ok=True)
    model.eval()
    with torch.no_grad():
        r = model(*args)
        outs = [f"out{i}" for i in range(len(r))]
        torch.onnx.export(model, args, os.path.join(d, "model.onnx"), input_names=ins,
                          output_names=outs, opset_version=opset, dynamic_axes=dynamic)
    for kind, names, ts in (("input", ins, args), ("output", outs, r)):
        for i, (n, t) in enumerate(zip(names, ts)):
            onnx.save_tensor(numpy_helper.from_array(t.numpy(), n),
                             os.path.join(d, "test_data_set_0", f"{kind}_{i}.pb"))


def main(out):
    x = torch.randn(7, 3, 5)
    h2 = torch.randn(4, 3, 6)
    write(out, "lstm_bidirectional_2layers", Recurrent(nn.LSTM(5, 6, num_layers=2, bidirectional=True)),
          (x, h2, torch.randn(4, 3, 6)), ["x", "h0", "c0"])
    write(out, "gru_bidirectional_2layers", Recurrent(nn.GRU(5, 6, num_layers=2, bidirectional=True)),
          (x, h2), ["x", "h0"])
    write(out, "rnn_relu_bidirectional", Recurrent(nn.RNN(5, 6, nonlinearity="relu", bidirectional=True)),
          (x,), ["x"])
    write(out, "lstm_batch_first_dynamic", Recurrent(nn.LSTM(5, 8, batch_first=True)),
          (torch.randn(2, 9, 5),), ["x"], 17, {"x": {0: "batch", 1: "time"}})
    write(out, "gru_single", Recurrent(nn.GRU(5, 4)), (x,), ["x"], 17)
    write(out, "for_loop_list_stack", torch.jit.script(ListLoopByRows()), (torch.randn(4, 3),), ["x"], 14)
    # float64 runs the float32 kernel on converted copies
    write(out, "lstm_float64_bidirectional", Recurrent(nn.LSTM(5, 6, bidirectional=True).double()),
          (x.double(),), ["x"])
    write(out, "gru_float64", Recurrent(nn.GRU(5, 4).double()), (x.double(), torch.randn(1, 3, 4).double()),
          ["x", "h0"])


if __name__ == "__main__":
    main(sys.argv[1])
