#!/usr/bin/env python3
"""PyTorch CPU training throughput of `cnn-s` (Adam, lr 1e-3), the peer of `wspace bench zoo`.

Same work as `wspace bench zoo --models M --epochs E --batch B --threads T`: M models, each trained for
E epochs on the 3,000 embedded Fashion-MNIST training images of classes 0, 1, 2 (pixels/255), batch B;
PyTorch runs the models one after another with T intra-op threads. Prints training images per second
(data preparation and one warm-up epoch excluded).

Run:  /work/pyref/bin/python scripts/reference/bench_cnn_s_torch.py [--models M] [--epochs E] [--batch B] [--threads T]
"""
import argparse
import gzip
import pathlib
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from cnn_s_reference import CnnS  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--models", type=int, default=8)
ap.add_argument("--epochs", type=int, default=2)
ap.add_argument("--batch", type=int, default=64)
ap.add_argument("--threads", type=int, default=1)
a = ap.parse_args()
torch.set_num_threads(a.threads)

assets = pathlib.Path(__file__).resolve().parents[2] / "assets" / "fashion-mnist"
images = np.frombuffer(gzip.open(assets / "train-images-idx3-ubyte.gz").read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
labels = np.frombuffer(gzip.open(assets / "train-labels-idx1-ubyte.gz").read(), np.uint8, offset=8)
keep = labels < 3
x = torch.tensor(images[keep], dtype=torch.float32) / 255.0
y = torch.tensor(labels[keep], dtype=torch.long)
n = len(y)


def epoch(model, opt):
    perm = torch.randperm(n)
    for i in range(0, n, a.batch):
        idx = perm[i:i + a.batch]
        opt.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()


torch.manual_seed(0)
warm = CnnS()
epoch(warm, torch.optim.Adam(warm.parameters(), lr=1e-3))  # warm-up, not timed
t = time.perf_counter()
for m in range(a.models):
    model = CnnS()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(a.epochs):
        epoch(model, opt)
dt = time.perf_counter() - t
ips = a.models * a.epochs * n / dt
print(f"torch {torch.__version__}, {a.threads} thread(s): {a.models} models x {a.epochs} epochs x {n} images, "
      f"batch {a.batch}: {ips:.0f} images/s ({ips / a.threads:.0f} per thread)")
