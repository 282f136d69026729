#!/usr/bin/env python3
"""PyTorch CPU training throughput of `cnn-s` (batch 64, Adam), to compare with
`cargo run --release -p wspace-stages --example bench_cnn_s`.

Run:  /work/pyref/bin/python scripts/reference/bench_cnn_s_torch.py [threads] [epochs]
"""
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from cnn_s_reference import CnnS  # noqa: E402

threads = int(sys.argv[1]) if len(sys.argv) > 1 else 1
epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
torch.set_num_threads(threads)
torch.manual_seed(0)
n = 2048
x = torch.rand(n, 1, 28, 28)
y = torch.randint(0, 3, (n,))
model = CnnS()
opt = torch.optim.Adam(model.parameters(), lr=1e-3)


def epoch():
    perm = torch.randperm(n)
    for i in range(0, n, 64):
        idx = perm[i:i + 64]
        opt.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()


epoch()  # warm-up
t = time.perf_counter()
for _ in range(epochs):
    epoch()
dt = time.perf_counter() - t
print(f"torch {torch.__version__}, {threads} thread(s): {epochs * n / dt:.0f} img/s")
