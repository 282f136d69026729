#!/usr/bin/env python3
"""Tiny public-zoo fixtures for the `zoo-import` stage (stages/tests/fixtures/zoos/), in exactly the
layouts of the published zoos, with models trained a little on Fashion-MNIST so that the accuracies
they record mean something.

Images: the project's embedded Fashion-MNIST subset (assets/fashion-mnist/, what the `dataset` stage
loads with `format = "embedded"`): the first TRAIN_IMAGES training images and the first TEST_IMAGES
test images, in file order, pixels / 255 (no normalisation). Every recorded test accuracy is on those
TEST_IMAGES test images, so the Rust tests can recompute it with the project's own forward pass.

Written (all under stages/tests/fixtures/zoos/):

* model-zoos/seed/ -- a Model Zoos (Schürholt et al. 2022) "seed" zoo: a ray-tune experiment
  directory, one directory per model with params.json (flat `model::nlin`-style keys), result.json
  (JSON lines, one record per epoch; the first, training_iteration 0, is the untrained model with
  train_loss = train_acc = -999), progress.csv (the same records as CSV) and
  checkpoint_00000N/checkpoints (`torch.save` zip format, a state dict with keys
  `module_list.{i}.weight|bias`). The CNN-s with a 10-class head, tanh, no dropout, seeds 1..3.
* model-zoos/hyp/ -- a "hyperparameter" zoo: nlin relu (with dropout 0.1: Dropout modules shift the
  module_list indices), gelu, sigmoid (SGD), leakyrelu; checkpoint directories named checkpoint_N.
* model-zoos/legacy.pt -- one state dict saved in the legacy (non-zip) torch format, for the error
  test.
* expected.json -- every written checkpoint's tensors under the project's names and shapes (OIHW
  kernels, (out, in) dense weights): float64 sum and five exact float32 samples each, so the Rust
  tests check the import (and the documented reshapes) bit for bit without Python.
* small-cnn-zoo/ -- a Small CNN Zoo (Unterthiner et al. 2020) dataset directory: weights.npy (one
  float32 row of 4,970 per run and step), metrics.csv.gz (`config.*`, modeldir, step, test_accuracy,
  test_loss, train_accuracy, train_loss; one row per weights row, same order) and layout.csv
  (varname, start_idx, end_idx, shape; bias before kernel, kernels HWIO, dense (in, out)). The
  network: 3 x Conv2D(16, 3x3, stride 2, padding "same" as TensorFlow pads: the extra row/column at
  the bottom/right) -> global average pool -> Dense(10). 3 runs x 3 steps.

Epoch N's checkpoint holds the weights after N epochs; result.json's record with training_iteration N
holds the metrics of those weights. Training is seeded (one thread,
deterministic algorithms), but the files' bytes are not reproducible (torch.save writes a random
serialization id, and float results may differ between torch versions), so the fixtures are
committed and this script is never run by CI.

Run (torch 2.x CPU and numpy; a venv outside the repository):
    python3 -m venv /work/venv-ref && /work/venv-ref/bin/pip install torch numpy
    /work/venv-ref/bin/python scripts/reference/zoo_fixtures.py
"""
import csv
import gzip
import io
import json
import shutil
import struct
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

ROOT = Path(__file__).resolve().parents[2]
ASSETS = ROOT / "assets" / "fashion-mnist"
OUT = ROOT / "stages" / "tests" / "fixtures" / "zoos"
TRAIN_IMAGES = 600
TEST_IMAGES = 200
EPOCHS = 4
CHECKPOINT_EPOCHS = [0, 2, 4]


def read_idx(path):
    data = gzip.decompress(path.read_bytes())
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    assert zero == 0 and dtype == 0x08, f"{path}: not an unsigned-byte IDX file"
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    return np.frombuffer(data[4 + 4 * ndim :], dtype=np.uint8).reshape(dims)


def images(split, n):
    x = read_idx(ASSETS / f"{split}-images-idx3-ubyte.gz")[:n]
    y = read_idx(ASSETS / f"{split}-labels-idx1-ubyte.gz")[:n]
    return torch.tensor(x, dtype=torch.float32).unsqueeze(1) / 255.0, torch.tensor(y, dtype=torch.long)


TRAIN = images("train", TRAIN_IMAGES)
TEST = images("t10k", TEST_IMAGES)


def nlin(name):
    return {"tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU, "sigmoid": nn.Sigmoid, "leakyrelu": nn.LeakyReLU}[name]()


class ModelZoosCNN(nn.Module):
    """The Model Zoos CNN-s: module_list = conv, pool, act, [dropout], conv, pool, act, [dropout],
    conv, act, flatten, [dropout], linear, act, [dropout], linear."""

    def __init__(self, act, dropout, classes=10):
        super().__init__()
        layers = [nn.Conv2d(1, 8, 5), nn.MaxPool2d(2, 2), nlin(act)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers += [nn.Conv2d(8, 6, 5), nn.MaxPool2d(2, 2), nlin(act)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers += [nn.Conv2d(6, 4, 2), nlin(act), nn.Flatten()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers += [nn.Linear(36, 20), nlin(act)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(20, classes))
        self.module_list = nn.ModuleList(layers)

    def forward(self, x):
        for m in self.module_list:
            x = m(x)
        return x


def tf_same_pad(x):
    """TensorFlow's "same" padding for a 3x3 kernel at stride 2: total max((ceil(n/2)-1)*2+3-n, 0),
    the smaller half at the top/left."""
    n = x.shape[-1]
    total = max((-(-n // 2) - 1) * 2 + 3 - n, 0)
    return F.pad(x, (total // 2, total - total // 2, total // 2, total - total // 2))


class SmallCNN(nn.Module):
    """The Small CNN Zoo network, computed in PyTorch's NCHW layout."""

    def __init__(self, act):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(1, 16, 3, stride=2), nn.Conv2d(16, 16, 3, stride=2), nn.Conv2d(16, 16, 3, stride=2)])
        self.dense = nn.Linear(16, 10)
        self.act = nlin(act)

    def forward(self, x):
        for c in self.convs:
            x = self.act(c(tf_same_pad(x)))
        return self.dense(x.mean(dim=(2, 3)))


def evaluate(model, data):
    model.eval()
    with torch.no_grad():
        x, y = data
        z = model(x)
        loss = F.cross_entropy(z, y).item()
        acc = (z.argmax(1) == y).float().mean().item()
    model.train()
    return loss, acc


def train_epoch(model, opt, batch, gen):
    model.train()
    x, y = TRAIN
    order = torch.randperm(len(y), generator=gen)
    total, n = 0.0, 0
    correct = 0
    for i in range(0, len(y), batch):
        idx = order[i : i + batch]
        opt.zero_grad()
        z = model(x[idx])
        loss = F.cross_entropy(z, y[idx])
        loss.backward()
        opt.step()
        total += loss.item() * len(idx)
        correct += (z.argmax(1) == y[idx]).sum().item()
        n += len(idx)
    return total / n, correct / n


def make_optimizer(name, params, lr, wd):
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=wd)


# expected.json: for every written checkpoint / weights row, each tensor under the project's name and
# shape (PyTorch's OIHW / (out, in) layout) as its float64 sum and five exact float32 samples.
EXPECTED = {}


def summary(tensors):
    out = {}
    for name, t in tensors:
        flat = t.detach().contiguous().reshape(-1)
        n = flat.numel()
        picks = sorted({0, n // 3, n // 2, (2 * n) // 3, n - 1})
        out[name] = {
            "shape": list(t.shape),
            "sum": float(flat.double().sum()),
            "samples": [[i, float(flat[i])] for i in picks],
        }
    return out


PROJECT_NAMES = ["conv1", "conv2", "conv3", "fc1", "fc2"]


def project_tensors(model):
    params = [p for _, p in model.state_dict().items()]
    names = [f"{n}.{w}" for n in PROJECT_NAMES for w in ("weight", "bias")]
    return list(zip(names, params))


def model_zoo(name, configs, long_names):
    root = OUT / "model-zoos" / name
    for i, cfg in enumerate(configs):
        torch.manual_seed(cfg["seed"])
        model = ModelZoosCNN(cfg["model::nlin"], cfg["model::dropout"])
        opt = make_optimizer(cfg["optim::optimizer"], model.parameters(), cfg["optim::lr"], cfg["optim::wd"])
        gen = torch.Generator().manual_seed(cfg["seed"])
        trial = f"NN_tune_trainable_{name}_{i:05d}_{i}_seed={cfg['seed']}_2026-12-02_18-00-00"
        d = root / trial
        d.mkdir(parents=True)
        (d / "params.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
        records = []
        for epoch in range(EPOCHS + 1):
            if epoch == 0:
                train_loss, train_acc = -999.0, -999.0
            else:
                train_loss, train_acc = train_epoch(model, opt, cfg["training::batchsize"], gen)
            test_loss, test_acc = evaluate(model, TEST)
            records.append(
                {
                    "train_loss": train_loss,
                    "train_acc": train_acc,
                    "test_loss": test_loss,
                    "test_acc": test_acc,
                    "training_iteration": epoch,
                    "trial_id": f"{name}_{i:05d}",
                    "done": epoch == EPOCHS,
                }
            )
            if epoch in CHECKPOINT_EPOCHS:
                ck = d / (f"checkpoint_{epoch:06d}" if long_names else f"checkpoint_{epoch}")
                ck.mkdir()
                torch.save(model.state_dict(), ck / "checkpoints")
                EXPECTED[f"model-zoos/{name}/{trial}/{ck.name}"] = summary(project_tensors(model))
        with open(d / "result.json", "w") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")
        with open(d / "progress.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(records[0].keys()))
            w.writeheader()
            w.writerows(records)
        print(f"{name}/{trial}: test_acc {[round(r['test_acc'], 3) for r in records]}")


def base_config(seed, nlin_name, dropout=0.0, optimizer="adam", lr=3e-3):
    return {
        "model::type": "CNN",
        "model::channels_in": 1,
        "model::o_dim": 10,
        "model::nlin": nlin_name,
        "model::dropout": dropout,
        "model::init_type": "kaiming_uniform",
        "model::use_bias": True,
        "optim::optimizer": optimizer,
        "optim::lr": lr,
        "optim::wd": 0.0,
        "seed": seed,
        "training::batchsize": 20,
        "training::epochs_train": EPOCHS,
        "training::start_epoch": 1,
        "training::output_epoch": 1,
        "training::mode": "cnn",
        "cuda": False,
        "dataset::dump": "fmnist_first600_200.pt",
    }


def small_cnn_zoo():
    root = OUT / "small-cnn-zoo"
    root.mkdir(parents=True)
    layout, offset = [], 0
    names = ["conv2d", "conv2d_1", "conv2d_2", "dense"]
    shapes = [[(16,), (3, 3, 1, 16)], [(16,), (3, 3, 16, 16)], [(16,), (3, 3, 16, 16)], [(10,), (16, 10)]]
    for n, (b, k) in zip(names, shapes):
        for var, shape in ((f"sequential/{n}/bias:0", b), (f"sequential/{n}/kernel:0", k)):
            size = int(np.prod(shape))
            layout.append((var, offset, offset + size, str(shape)))
            offset += size
    assert offset == 4970, offset
    with open(root / "layout.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["varname", "start_idx", "end_idx", "shape"])
        w.writerows(layout)

    def flatten(model):
        parts = []
        for c in list(model.convs):
            parts += [c.bias.detach().numpy(), c.weight.detach().permute(2, 3, 1, 0).numpy()]  # OIHW -> HWIO
        parts += [model.dense.bias.detach().numpy(), model.dense.weight.detach().t().numpy()]  # (out,in) -> (in,out)
        return np.concatenate([p.astype(np.float32).ravel() for p in parts])

    runs = [("relu", "adam", 1e-2, 11), ("tanh", "adam", 1e-2, 12), ("relu", "sgd", 0.2, 13)]
    rows, weights = [], []
    steps_per_epoch = TRAIN_IMAGES // 30
    for r, (act, optimizer, lr, seed) in enumerate(runs):
        torch.manual_seed(seed)
        model = SmallCNN(act)
        opt = make_optimizer(optimizer, model.parameters(), lr, 0.0)
        gen = torch.Generator().manual_seed(seed)
        train_loss, train_acc = evaluate(model, TRAIN)
        for epoch in range(0, 7):
            if epoch > 0:
                train_epoch(model, opt, 30, gen)
            if epoch not in (0, 3, 6):
                continue
            if epoch > 0:
                train_loss, train_acc = evaluate(model, TRAIN)
            test_loss, test_acc = evaluate(model, TEST)
            weights.append(flatten(model))
            convs = [(f"conv{k + 1}", c) for k, c in enumerate(model.convs)] + [("fc", model.dense)]
            EXPECTED[f"small-cnn-zoo/row{len(weights) - 1}"] = summary(
                [(f"{n}.{w}", getattr(m, w)) for n, m in convs for w in ("weight", "bias")]
            )
            rows.append(
                {
                    "config.activation": act,
                    "config.b_init": "zeros",
                    "config.dnn_architecture": "cnn",
                    "config.dropout": 0.0,
                    "config.init_std": 0.05,
                    "config.l2reg": 0.0,
                    "config.learning_rate": lr,
                    "config.optimizer": optimizer,
                    "config.train_fraction": 1.0,
                    "config.w_init": "he_uniform",
                    "modeldir": f"fmnist/run{r:03d}",
                    "step": epoch * steps_per_epoch,
                    "test_accuracy": test_acc,
                    "test_loss": test_loss,
                    "train_accuracy": train_acc,
                    "train_loss": train_loss,
                }
            )
            print(f"small-cnn-zoo run {r} step {epoch * steps_per_epoch}: test_accuracy {test_acc:.3f}")
    np.save(root / "weights.npy", np.stack(weights).astype(np.float32))
    text = io.StringIO()
    w = csv.DictWriter(text, fieldnames=list(rows[0].keys()), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    with open(root / "metrics.csv.gz", "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=raw, mtime=0) as gz:
            gz.write(text.getvalue().encode())


def main():
    for old in ("model-zoos", "small-cnn-zoo"):
        shutil.rmtree(OUT / old, ignore_errors=True)
    model_zoo("seed", [base_config(s, "tanh") for s in (1, 2, 3)], long_names=True)
    model_zoo(
        "hyp",
        [
            base_config(4, "relu", dropout=0.1),
            base_config(5, "gelu"),
            base_config(6, "sigmoid", lr=1e-2),
            base_config(7, "leakyrelu"),
        ],
        long_names=False,
    )
    torch.manual_seed(0)
    torch.save(ModelZoosCNN("tanh", 0.0).state_dict(), OUT / "model-zoos" / "legacy.pt", _use_new_zipfile_serialization=False)
    small_cnn_zoo()
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "expected.json").write_text(json.dumps(EXPECTED, sort_keys=True, separators=(",", ":")) + "\n")
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"wrote {OUT} ({total} bytes)")


if __name__ == "__main__":
    main()
