#!/bin/bash
# A recurrent op between tensor-parallel MatMuls: Linear-ReLU-Linear, LSTM, Linear-ReLU-Linear
# (PyTorch export) over 2 ranks. The Linear pairs are split; the LSTM cannot be, so every rank
# runs it whole on gathered inputs and the tool says so ("replicates ... LSTM x1"); y matches
# PyTorch.
# usage: lstm.sh shm|mpi
. "$(dirname "$0")/common.sh"
backend=$1
[ "$backend" = mpi ] && mpi_setup
$PY - "$WORK" <<'PY' 2>/dev/null || fail "making the model"
import sys
import numpy as np
import torch
import torch.nn as nn
out = sys.argv[1]
torch.manual_seed(15)
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(16, 64), nn.Linear(64, 16)
        self.rnn = nn.LSTM(16, 32, batch_first=True)
        self.c, self.d = nn.Linear(32, 64), nn.Linear(64, 8)
    def forward(self, x):
        y, _ = self.rnn(self.b(torch.relu(self.a(x))))
        return self.d(torch.relu(self.c(y)))
net, x = Net().eval(), torch.randn(2, 5, 16)
with torch.no_grad():
    torch.onnx.export(net, (x,), out + "/model.onnx", input_names=["x"], output_names=["y"],
                      opset_version=14)
    np.save(out + "/y_ref.npy", net(x).numpy())
np.save(out + "/x.npy", x.numpy())
PY
shard_and_run 2 "$backend" "--ranks 2" --input "x=$WORK/x.npy" || finish "$backend"
grep -q "replicates on each of its 2 ranks (not split):.*LSTM x1" "$WORK/shard-2.log" ||
  { cat "$WORK/shard-2.log"; fail "the shard tool does not say that it replicates the LSTM"; }
$PY - "$WORK" <<'PY' || fail "layout or outputs wrong"
import sys
import numpy as np
import onnx
work, ok = sys.argv[1], True
for r in range(2):
    ops = [n.op_type for n in onnx.load(f"{work}/shards-2/device{r}/model.onnx", load_external_data=False).graph.node]
    good = ops.count("LSTM") == 1 and ops.count("AllReduce") == 2
    print(f"{'ok  ' if good else 'FAIL'} rank {r}: {ops}, want the LSTM whole and two AllReduce")
    ok &= good
y, ref = np.load(f"{work}/out-2/y.npy"), np.load(f"{work}/y_ref.npy")
good = y.shape == ref.shape and np.allclose(y, ref, atol=1e-5)
print(f"{'ok  ' if good else 'FAIL'} y {y.shape}: max |y - torch| {np.abs(y - ref).max() if y.shape == ref.shape else 'shape'}")
sys.exit(0 if ok and good else 1)
PY
finish "$backend"
