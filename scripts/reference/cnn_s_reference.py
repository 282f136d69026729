#!/usr/bin/env python3
"""Independent PyTorch reference for the hand-written `cnn-s` kernel (stages/src/nn).

Writes stages/tests/fixtures/cnn_s_reference.json, which `nn::tests` compares against:
  * logits, mean cross-entropy and every parameter gradient for a fixed batch and fixed weights;
  * the weights after two Adam steps and after two SGD-momentum steps (same batch each step);
  * max-pool's tie-breaking (input gradient of a 2x2 pool over tied windows).

Inputs and weights come from closed formulas that the Rust test evaluates too (in f64, cast to f32):
  image n (0..4), pixel p = 28*i + j:  x = 0.5 + 0.5 * sin(0.37 * (784 n + p) + 0.1)
    except that image 3 has rows 0..9 set to 0.0 (flat regions: ties inside conv1's max-pool windows)
  labels: [0, 1, 2, 1]
  tensor t (state_dict order, 0..9), element e:  w = 2 sin(0.91 e + 1.7 t + 0.3) / sqrt(fan_in)

Run:  /work/pyref/bin/python scripts/reference/cnn_s_reference.py   (torch 2.x, CPU, float32)
"""
import json
import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)


class CnnS(nn.Module):
    """The Model-Zoos CNN (`cnn-s`)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 5)
        self.conv2 = nn.Conv2d(8, 6, 5)
        self.conv3 = nn.Conv2d(6, 4, 2)
        self.fc1 = nn.Linear(36, 20)
        self.fc2 = nn.Linear(20, 3)

    def forward(self, x):
        x = torch.tanh(F.max_pool2d(self.conv1(x), 2))
        x = torch.tanh(F.max_pool2d(self.conv2(x), 2))
        x = torch.tanh(self.conv3(x))
        x = torch.tanh(self.fc1(x.flatten(1)))
        return self.fc2(x)


N = 4
LABELS = [0, 1, 2, 1]
FAN_IN = {"conv1": 25, "conv2": 200, "conv3": 24, "fc1": 36, "fc2": 20}


def inputs():
    x = torch.empty(N, 1, 28, 28, dtype=torch.float32)
    for n in range(N):
        for i in range(28):
            for j in range(28):
                v = 0.5 + 0.5 * math.sin(0.37 * (784 * n + 28 * i + j) + 0.1)
                if n == 3 and i < 10:
                    v = 0.0
                x[n, 0, i, j] = v
    return x


def set_weights(model):
    with torch.no_grad():
        for t, (name, p) in enumerate(model.state_dict().items()):
            fan = FAN_IN[name.split(".")[0]]
            flat = [2.0 * math.sin(0.91 * e + 1.7 * t + 0.3) / math.sqrt(fan) for e in range(p.numel())]
            p.copy_(torch.tensor(flat, dtype=torch.float64).to(torch.float32).reshape(p.shape))


def flat_params(model):
    return [v for p in model.state_dict().values() for v in p.flatten().tolist()]


def two_steps(make_opt):
    model = CnnS()
    set_weights(model)
    opt = make_opt(model.parameters())
    x, y = inputs(), torch.tensor(LABELS)
    for _ in range(2):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return flat_params(model)


def f32s(values):
    """Shortest decimal that round-trips each float32 (keeps the fixture small)."""
    return [float("%.9g" % v) for v in values]


def main():
    out_path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(__file__), "..", "..", "stages", "tests", "fixtures", "cnn_s_reference.json")
    model = CnnS()
    set_weights(model)
    x, y = inputs(), torch.tensor(LABELS)
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    grads = [v for p in model.parameters() for v in p.grad.flatten().tolist()]

    # Max-pool ties: windows [[1,1],[1,0]] and [[0,2],[2,2]]; upstream gradient [1, 2].
    xp = torch.tensor([[[[1.0, 1.0, 0.0, 2.0], [1.0, 0.0, 2.0, 2.0]]]], requires_grad=True)
    (F.max_pool2d(xp, 2) * torch.tensor([1.0, 2.0]).reshape(1, 1, 1, 2)).sum().backward()

    fixture = {
        "produced_by": "scripts/reference/cnn_s_reference.py with torch " + torch.__version__
                       + " (CPU, float32, 1 thread); formulas in the script's docstring",
        "labels": LABELS,
        "logits": f32s(logits.detach().flatten().tolist()),
        "loss": loss.item(),
        "grads": f32s(grads),
        "adam_lr": 0.01,
        "adam_after_2_steps": f32s(two_steps(lambda p: torch.optim.Adam(p, lr=0.01))),
        "sgd_lr": 0.05,
        "sgd_momentum": 0.9,
        "sgd_weight_decay": 0.001,
        "sgd_after_2_steps": f32s(two_steps(lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=0.001))),
        "maxpool_tie_input": xp.detach().flatten().tolist(),
        "maxpool_tie_upstream": [1.0, 2.0],
        "maxpool_tie_input_grad": xp.grad.flatten().tolist(),
    }
    with open(out_path, "w") as f:
        json.dump(fixture, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {out_path}: loss {loss.item():.6f}")


if __name__ == "__main__":
    main()
