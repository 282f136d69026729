#!/usr/bin/env python3
"""Independent PyTorch reference for the hand-written `cnn-s` kernel (stages/src/nn).

Writes stages/tests/fixtures/cnn_s_reference.json, which `nn::tests` compares against:
  * logits, mean cross-entropy and every parameter gradient for a fixed batch and fixed weights;
  * the weights after two Adam steps and after two SGD-momentum steps (same batch each step);
  * max-pool's tie-breaking (input gradient of a 2x2 pool over tied windows);
  * `f64`: the logits, loss, gradients and two-step weights computed in float64 (same float32 inputs
    and weights), which the Rust tests compare with;
  * `f32_spread`: for each of those quantities, the largest |float32 - float64| over several
    legitimate PyTorch float32 reduction orders (oneDNN or native im2col + BLAS convolutions, NCHW or
    channels-last, 1 or 4 threads): per parameter tensor for gradients and weights (lists in
    state_dict order), one number for the logits and the loss. This measured float32 sensitivity is
    what the Rust tests' bounds are derived from (see `stages/src/nn/tests.rs`);
  * `tanh_fast_sensitivity`: the same per-quantity maxima for a float64 run in which every tanh output
    is off by up to 5e-7 (the bound of the kernel's `tanh_fast` approximation), over 8 random draws:
    the approximation's share of the budget.

Inputs and weights come from closed formulas that the Rust test evaluates too (in f64, cast to f32):
  image n (0..4), pixel p = 28*i + j:  x = 0.5 + 0.5 * sin(0.37 * (784 n + p) + 0.1)
    except that image 3 has rows 0..9 set to 0.0 (flat regions: ties inside conv1's max-pool windows)
  labels: [0, 1, 2, 1]
  tensor t (state_dict order, 0..9), element e:  w = 2 sin(0.91 e + 1.7 t + 0.3) / sqrt(fan_in)

Run:  /work/pyref/bin/python scripts/reference/cnn_s_reference.py   (torch 2.x, CPU, float32 and float64)
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
        x = tanh(F.max_pool2d(self.conv1(x), 2))
        x = tanh(F.max_pool2d(self.conv2(x), 2))
        x = tanh(self.conv3(x))
        x = tanh(self.fc1(x.flatten(1)))
        return self.fc2(x)


# When set (a torch.Generator), every tanh output gets an independent error uniform in
# [-TANH_FAST_ERROR, TANH_FAST_ERROR]: the bound that `nn::tests::nn_tanh_fast_is_accurate` asserts for
# the kernel's rational approximation `tanh_fast`. Used to measure how far that approximation can move
# each compared quantity (`tanh_fast_sensitivity`).
TANH_NOISE = None
TANH_FAST_ERROR = 5e-7


def tanh(x):
    y = torch.tanh(x)
    if TANH_NOISE is not None:
        y = y + TANH_FAST_ERROR * (2.0 * torch.rand(y.shape, generator=TANH_NOISE, dtype=y.dtype) - 1.0)
    return y


N = 4
LABELS = [0, 1, 2, 1]
FAN_IN = {"conv1": 25, "conv2": 200, "conv3": 24, "fc1": 36, "fc2": 20}


def inputs(dtype=torch.float32):
    x = torch.empty(N, 1, 28, 28, dtype=torch.float32)
    for n in range(N):
        for i in range(28):
            for j in range(28):
                v = 0.5 + 0.5 * math.sin(0.37 * (784 * n + 28 * i + j) + 0.1)
                if n == 3 and i < 10:
                    v = 0.0
                x[n, 0, i, j] = v
    return x.to(dtype)


def set_weights(model):
    with torch.no_grad():
        for t, (name, p) in enumerate(model.state_dict().items()):
            fan = FAN_IN[name.split(".")[0]]
            flat = [2.0 * math.sin(0.91 * e + 1.7 * t + 0.3) / math.sqrt(fan) for e in range(p.numel())]
            p.copy_(torch.tensor(flat, dtype=torch.float64).to(torch.float32).reshape(p.shape))


def flat_params(model):
    return [v for p in model.state_dict().values() for v in p.flatten().tolist()]


def params_by_tensor(model):
    return [p.detach().double().flatten() for p in model.state_dict().values()]


def make(dtype=torch.float32, channels_last=False):
    """The formula model (float32 weights) cast to `dtype`, and the formula batch."""
    model = CnnS()
    set_weights(model)
    model = model.to(dtype)
    x = inputs(dtype)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    return model, x, torch.tensor(LABELS)


def two_steps(make_opt, dtype=torch.float32, channels_last=False, flat=True):
    model, x, y = make(dtype, channels_last)
    opt = make_opt(model.parameters())
    for _ in range(2):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return flat_params(model) if flat else params_by_tensor(model)


def adam(p):
    return torch.optim.Adam(p, lr=0.01)


def sgd(p):
    return torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=0.001)


def forward(dtype=torch.float32, channels_last=False):
    """Logits, loss and per-tensor gradients of the formula batch."""
    model, x, y = make(dtype, channels_last)
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    return logits.detach().double().flatten(), loss.item(), [p.grad.double().flatten() for p in model.parameters()]


# Legitimate float32 reduction orders in PyTorch itself.
ORDERS = {
    "onednn_nchw_1thread": dict(mkldnn=True, channels_last=False, threads=1),
    "native_im2col_blas_1thread": dict(mkldnn=False, channels_last=False, threads=1),
    "onednn_channels_last_1thread": dict(mkldnn=True, channels_last=True, threads=1),
    "onednn_nchw_4threads": dict(mkldnn=True, channels_last=False, threads=4),
}


def max_abs(a, b):
    return (a - b).abs().max().item()


def spread():
    """Largest |float32 - float64| over ORDERS, per quantity (per tensor for gradients and weights)."""
    lg64, loss64, g64 = forward(torch.float64)
    adam64 = two_steps(adam, torch.float64, flat=False)
    sgd64 = two_steps(sgd, torch.float64, flat=False)
    ref64 = {
        "logits": lg64.tolist(),
        "loss": loss64,
        "grads": [v for g in g64 for v in g.tolist()],
        "adam_after_2_steps": [v for t in adam64 for v in t.tolist()],
        "sgd_after_2_steps": [v for t in sgd64 for v in t.tolist()],
    }
    worst = {"logits": 0.0, "loss": 0.0, "grads": [0.0] * len(g64),
             "adam_after_2_steps": [0.0] * len(adam64), "sgd_after_2_steps": [0.0] * len(sgd64)}
    per_order = {}
    for order, o in ORDERS.items():
        torch.set_num_threads(o["threads"])
        with torch.backends.mkldnn.flags(enabled=o["mkldnn"]):
            lg, loss, g = forward(torch.float32, o["channels_last"])
            e = {
                "logits": max_abs(lg, lg64),
                "loss": abs(loss - loss64),
                "grads": [max_abs(a, b) for a, b in zip(g, g64)],
                "adam_after_2_steps": [max_abs(a, b) for a, b in zip(two_steps(adam, torch.float32, o["channels_last"], False), adam64)],
                "sgd_after_2_steps": [max_abs(a, b) for a, b in zip(two_steps(sgd, torch.float32, o["channels_last"], False), sgd64)],
            }
        per_order[order] = e
        for k, v in e.items():
            worst[k] = [max(a, b) for a, b in zip(worst[k], v)] if isinstance(v, list) else max(worst[k], v)
        print(order, json.dumps(e))
    torch.set_num_threads(1)
    per_order["max"] = worst
    return ref64, per_order, tanh_sensitivity(ref64)


def tanh_sensitivity(ref64):
    """Largest |change| of each quantity (float64) when every tanh output is off by up to
    TANH_FAST_ERROR (uniform, independent), over 8 seeds: the kernel's tanh approximation's share."""
    global TANH_NOISE
    worst = None
    for seed in range(8):
        TANH_NOISE = torch.Generator().manual_seed(seed)
        lg, loss, g = forward(torch.float64)
        e = {
            "logits": max_abs(lg, torch.tensor(ref64["logits"], dtype=torch.float64)),
            "loss": abs(loss - ref64["loss"]),
            "grads": per_tensor(g, ref64["grads"]),
            "adam_after_2_steps": per_tensor(two_steps(adam, torch.float64, flat=False), ref64["adam_after_2_steps"]),
            "sgd_after_2_steps": per_tensor(two_steps(sgd, torch.float64, flat=False), ref64["sgd_after_2_steps"]),
        }
        worst = e if worst is None else {
            k: [max(a, b) for a, b in zip(worst[k], v)] if isinstance(v, list) else max(worst[k], v) for k, v in e.items()
        }
    TANH_NOISE = None
    print("tanh_fast sensitivity", json.dumps(worst))
    return worst


def per_tensor(tensors, flat):
    """Max |a - b| per tensor, `flat` the float64 reference flattened in the same order."""
    out, at = [], 0
    for t in tensors:
        ref = torch.tensor(flat[at:at + t.numel()], dtype=torch.float64)
        out.append(max_abs(t, ref))
        at += t.numel()
    return out


def write_fixture(out_path, fixture, loss):
    """Compact JSON with a trailing newline (the Rust tests read it); says where it went."""
    with open(out_path, "w") as f:
        json.dump(fixture, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {out_path}: loss {loss:.6f}")


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
        "adam_after_2_steps": f32s(two_steps(adam)),
        "sgd_lr": 0.05,
        "sgd_momentum": 0.9,
        "sgd_weight_decay": 0.001,
        "sgd_after_2_steps": f32s(two_steps(sgd)),
        "maxpool_tie_input": xp.detach().flatten().tolist(),
        "maxpool_tie_upstream": [1.0, 2.0],
        "maxpool_tie_input_grad": xp.grad.flatten().tolist(),
    }
    fixture["f64"], fixture["f32_spread"], fixture["tanh_fast_sensitivity"] = spread()
    write_fixture(out_path, fixture, loss.item())


if __name__ == "__main__":
    main()
