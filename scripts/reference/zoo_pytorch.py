"""Train the same zoo in PyTorch and compare mean final test accuracy with wspace's zoo stage.

Every model of a wspace zoo (zoo.csv, final checkpoints) is retrained in PyTorch with the same
architecture (cnn-s), the same task images (tasks' index lists into the dataset), the same optimizer,
learning rate, batch size and number of epochs, and PyTorch's own default initialisation. The two
implementations share the recipe, not the random streams (init and data order differ), so individual
models differ; the means over the zoo must agree (issue: within 2 points).

Usage (paths of the cached stage outputs, e.g. from `wspace show pipelines/quick.toml zoo --format json`):
    python scripts/reference/zoo_pytorch.py --zoo ZOO_OUT --data DATA_OUT --tasks TASKS_OUT [--momentum 0.9]
Needs torch, numpy, safetensors. Not run in CI.
"""
import argparse
import csv
import pathlib
import sys
import time

import numpy as np
import torch
import torch.nn as nn
from safetensors.numpy import load_file

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from cnn_s_reference import CnnS  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--zoo", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--tasks", required=True)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    train = load_file(f"{a.data}/train.safetensors")
    test = load_file(f"{a.data}/test.safetensors")
    idx = load_file(f"{a.tasks}/indices.safetensors")
    rows = [r for r in csv.DictReader(open(f"{a.zoo}/zoo.csv")) if r["checkpoint"] == "final" and r["status"] == "ok"]
    ours, theirs = [], []
    t0 = time.time()
    for r in rows:
        tid = int(r["task_id"])
        classes = [int(r["class_0"]), int(r["class_1"]), int(r["class_2"])]
        lut = {c: k for k, c in enumerate(classes)}

        def take(split, name):
            ii = idx[name][idx[f"{name}_offsets"][tid]: idx[f"{name}_offsets"][tid + 1]]
            x = torch.tensor(split["images"][ii], dtype=torch.float32) / 255.0
            y = torch.tensor([lut[int(l)] for l in split["labels"][ii]])
            return x, y

        xtr, ytr = take(train, "train")
        xte, yte = take(test, "test")
        torch.manual_seed(int(r["seed"]) % (2**63))
        model = CnnS()
        lr = float(r["lr"])
        opt = (torch.optim.Adam(model.parameters(), lr=lr) if r["optimizer"] == "adam"
               else torch.optim.SGD(model.parameters(), lr=lr, momentum=a.momentum))
        bs = int(r["batch_size"])
        for _ in range(int(r["epoch"])):
            perm = torch.randperm(len(ytr))
            for s in range(0, len(ytr), bs):
                b = perm[s: s + bs]
                opt.zero_grad()
                loss = nn.functional.cross_entropy(model(xtr[b]), ytr[b])
                loss.backward()
                opt.step()
        with torch.no_grad():
            acc = (model(xte).argmax(1) == yte).float().mean().item()
        theirs.append(acc)
        ours.append(float(r["test_acc"]))
    print(f"models: {len(rows)}  ({time.time() - t0:.0f} s in PyTorch)")
    for name, sel in [("all", lambda r: True), ("adam", lambda r: r["optimizer"] == "adam"), ("sgd", lambda r: r["optimizer"] == "sgd")]:
        i = [k for k, r in enumerate(rows) if sel(r)]
        if i:
            o, t = np.mean([ours[k] for k in i]), np.mean([theirs[k] for k in i])
            print(f"{name:5s} n={len(i):3d}  wspace {100 * o:.2f} %   PyTorch {100 * t:.2f} %   difference {100 * (o - t):+.2f} points")


if __name__ == "__main__":
    main()
