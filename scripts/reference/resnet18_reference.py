#!/usr/bin/env python3
"""Independent PyTorch + torchvision reference for the candle ResNet-18 (stages/src/resnet).

Writes stages/tests/fixtures/resnet18_reference.json, which `resnet::tests` compares against:
  * torchvision.models.resnet18(num_classes=3).state_dict(): every name, shape and dtype, in order;
  * for a fixed batch and fixed weights: train-mode logits and mean cross-entropy, every parameter
    gradient (sum, L2 norm, sum of |g|, four sampled entries), the BatchNorm running statistics after
    that forward, and eval-mode logits;
  * two SGD (momentum 0.9) steps and two Adam steps on that batch: the loss of each step, the loss of
    a third forward, and for a few tensors the weights after the two steps (sum, norm, entries);
  * MaxPool2d(3, stride=2, padding=1) on a small input with ties: output and input gradient, in full;
  * the same forward/backward and the same two-step runs in float64 (`f64`): the values the Rust tests
    compare with, both for wspace in float32 and for wspace in float64;
  * `f32_spread`: how far PyTorch's own float32 runs land from that float64 run, for several legitimate
    float32 reduction orders (oneDNN convolutions or the native im2col + BLAS path, NCHW or
    channels-last, 1 or 4 threads), each error measured exactly as the Rust test measures its own.
    This is the measured float32 sensitivity of these computations (rounding error amplified by the
    network and the training steps), from which the Rust tests derive their bounds (see
    `stages/src/resnet/tests.rs`). `f32_spread.max` is the maximum over the orders.

Inputs and weights come from an integer hash that the Rust test evaluates too (exactly; then f64
arithmetic in the same order, cast to f32). u(t, e, salt) in [0, 1):
    h = (e * 2654435761 + t * 40503 + salt * 977 + 12345) mod 2^32;  h ^= h >> 13;
    h = (h * 1274126177) mod 2^32;  h ^= h >> 16;  u = h / 2^32
  input (2, 3, 64, 64), flat index f:  x = u(0, f, 2);   labels: [0, 2]
  state_dict entry t (0..121, buffers included), element e, with s = (2 u(t, e, 1) - 1) * sqrt(3):
    conv weight   s * sqrt(2 / fan_out)          (fan_out = out_channels * kh * kw)
    bn weight     1 + 0.2 * (s / sqrt(3))        bn bias       0.1 * s
    running_mean  0.1 * s                        running_var   1 + 0.25 * (s / sqrt(3))
    num_batches_tracked 0                        fc weight and bias   s / sqrt(3 * 512)
  (Random-like values keep the training-mode network well conditioned: float32 and float64 logits
  agree to ~2e-6, which the smooth formulas of the cnn-s reference did not achieve here.)
  max-pool input (1, 2, 7, 6), flat index f:  v = round(4 sin(1.3 f + 0.2)) / 4  (many ties);
    upstream gradient at output flat index k: 1 + 0.1 k

Run:  /work/pyref/bin/python scripts/reference/resnet18_reference.py   (CPU; float32 and float64)
      (from the repository root or anywhere; never in CI: the fixture is committed)
"""
import json
import math
import os

import torch
import torch.nn.functional as F
import torchvision

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

N, H, W = 2, 64, 64
LABELS = [0, 2]
TRACKED = [
    "conv1.weight",
    "bn1.weight",
    "layer1.0.conv1.weight",
    "layer2.0.downsample.0.weight",
    "layer3.1.bn2.bias",
    "layer4.1.conv2.weight",
    "fc.weight",
    "fc.bias",
]
STAT_TRACKED = ["bn1", "layer2.0.downsample.1", "layer4.1.bn2"]


MASK = 0xFFFFFFFF


def hash_u(t, numel, salt):
    e = torch.arange(numel, dtype=torch.int64)
    h = (e * 2654435761 + (t * 40503 + salt * 977 + 12345)) & MASK
    h = h ^ (h >> 13)
    h = (h * 1274126177) & MASK
    h = h ^ (h >> 16)
    return h.to(torch.float64) / 4294967296.0


def make_model(dtype=torch.float32):
    """The formula weights, rounded to float32 (what the Rust test builds), then cast to `dtype`."""
    model = torchvision.models.resnet18(num_classes=3)
    sd = model.state_dict()
    new = {}
    for t, (name, p) in enumerate(sd.items()):
        if name.endswith("num_batches_tracked"):
            new[name] = torch.zeros_like(p)
            continue
        s = (2.0 * hash_u(t, p.numel(), 1) - 1.0) * math.sqrt(3.0)
        if p.dim() == 4:
            v = s * math.sqrt(2.0 / (p.shape[0] * p.shape[2] * p.shape[3]))
        elif name.startswith("fc."):
            v = s / math.sqrt(3.0 * 512.0)
        elif name.endswith("running_mean"):
            v = 0.1 * s
        elif name.endswith("running_var"):
            v = 1.0 + 0.25 * (s / math.sqrt(3.0))
        elif name.endswith("weight"):
            v = 1.0 + 0.2 * (s / math.sqrt(3.0))
        else:
            v = 0.1 * s
        new[name] = v.to(torch.float32).reshape(p.shape)
    model.load_state_dict(new)
    return model.to(dtype)


def inputs(dtype=torch.float32):
    x = hash_u(0, N * 3 * H * W, 2).to(torch.float32).reshape(N, 3, H, W)
    return x.to(dtype), torch.tensor(LABELS)


def sample_idx(numel):
    return sorted({0, numel // 3, (2 * numel) // 3, numel - 1})


def summary(t):
    flat = t.detach().double().flatten()
    return {
        "sum": flat.sum().item(),
        "norm": flat.norm().item(),
        "abs_sum": flat.abs().sum().item(),
        "entries": [[i, flat[i].item()] for i in sample_idx(flat.numel())],
    }


def stats_of(model):
    return stats_of_sd(model.state_dict())


def stats_of_sd(sd):
    out = {}
    for bn in STAT_TRACKED:
        out[bn] = {
            "running_mean": summary(sd[bn + ".running_mean"]),
            "running_var": summary(sd[bn + ".running_var"]),
            "num_batches_tracked": int(sd[bn + ".num_batches_tracked"].item()),
        }
    return out


def prepared(dtype, channels_last):
    """The formula model and batch in `dtype`, in channels-last memory order if asked."""
    model = make_model(dtype)
    x, y = inputs(dtype)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    return model, x, y


def two_steps_raw(make_opt, dtype=torch.float32, channels_last=False):
    """Two steps on the formula batch: (losses, loss after, state_dict)."""
    model, x, y = prepared(dtype, channels_last)
    model.train()
    opt = make_opt(model.parameters())
    losses = []
    for _ in range(2):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # The state after two steps, copied before the third forward (train mode: it updates the running
    # statistics again).
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        after = F.cross_entropy(model(x), y).item()
    return losses, after, sd


def two_steps(make_opt, dtype=torch.float32):
    losses, after, sd = two_steps_raw(make_opt, dtype)
    params = {name: summary(sd[name]) for name in TRACKED}
    return {"losses": losses, "loss_after": after, "params": params, "running": stats_of_sd(sd)}


def forward_raw(dtype=torch.float32, channels_last=False):
    """Eval logits, then train-mode logits, loss, gradients and state_dict after one forward."""
    model, x, y = prepared(dtype, channels_last)
    model.eval()
    with torch.no_grad():
        eval_logits = model(x)
    model.train()
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    return eval_logits, logits.detach(), loss.item(), grads, model.state_dict()


# The Rust tests' error measures (stages/src/resnet/tests.rs: `rel`, `summary_error`, `running_error`).
def rel(got, want, scale):
    return abs(got - want) / max(abs(want), scale)


def summary_error(t, s):
    v = t.detach().double().flatten()
    n = v.numel()
    l1 = max(s["abs_sum"], 1e-30)
    rms = s["norm"] / math.sqrt(n)
    err = max(rel(v.sum().item(), s["sum"], l1), rel(v.norm().item(), s["norm"], 1e-30),
              rel(v.abs().sum().item(), s["abs_sum"], 1e-30))
    for i, want in s["entries"]:
        err = max(err, rel(v[i].item(), want, max(rms, 1e-30)))
    return err


def running_error(sd, want):
    err = 0.0
    for bn, w in want.items():
        err = max(err, summary_error(sd[bn + ".running_mean"], w["running_mean"]))
        err = max(err, summary_error(sd[bn + ".running_var"], w["running_var"]))
    return err


def max_abs(a, b):
    return (a.double().flatten() - torch.tensor(b, dtype=torch.float64)).abs().max().item()


# Legitimate float32 reduction orders in PyTorch itself: the same as the cnn-s reference's.
from cnn_s_reference import ORDERS  # noqa: E402


def spread(ref64, optimizers):
    """Errors of each float32 order against the float64 reference, as the Rust tests measure them."""
    out = {}
    for order, o in ORDERS.items():
        torch.set_num_threads(o["threads"])
        with torch.backends.mkldnn.flags(enabled=o["mkldnn"]):
            ev, lg, loss, grads, sd = forward_raw(torch.float32, o["channels_last"])
            e = {
                "eval_logits": max_abs(ev, ref64["eval"]["logits"]),
                "train_logits": max_abs(lg, ref64["train"]["logits"]),
                "loss": abs(loss - ref64["train"]["loss"]),
                "grads": max(summary_error(g, ref64["train"]["grads"][n]) for n, g in grads.items()),
                "running": running_error(sd, ref64["train"]["running"]),
            }
            for key, make_opt in optimizers.items():
                want = ref64[key]
                losses, after, sd = two_steps_raw(make_opt, torch.float32, o["channels_last"])
                loss_err = max(rel(l, w, 1e-3) for l, w in zip(losses + [after], want["losses"] + [want["loss_after"]]))
                e[key] = {
                    "losses": loss_err,
                    "params": max(summary_error(sd[n], w) for n, w in want["params"].items()),
                    "running": running_error(sd, want["running"]),
                }
        out[order] = e
        print(order, json.dumps(e))
    torch.set_num_threads(1)
    worst = {}
    for e in out.values():
        for k, v in e.items():
            if isinstance(v, dict):
                for k2, v2 in v.items():
                    worst.setdefault(k, {})[k2] = max(worst.get(k, {}).get(k2, 0.0), v2)
            else:
                worst[k] = max(worst.get(k, 0.0), v)
    out["max"] = worst
    return out


def maxpool_case():
    f = torch.arange(1 * 2 * 7 * 6, dtype=torch.float64)
    x = (torch.round(4.0 * torch.sin(1.3 * f + 0.2)) / 4.0).to(torch.float32).reshape(1, 2, 7, 6)
    x.requires_grad_(True)
    out = F.max_pool2d(x, 3, stride=2, padding=1)
    g = (1.0 + 0.1 * torch.arange(out.numel(), dtype=torch.float64)).to(torch.float32).reshape(out.shape)
    out.backward(g)
    return {
        "input_shape": list(x.shape),
        "input": x.detach().flatten().tolist(),
        "output_shape": list(out.shape),
        "output": out.detach().flatten().tolist(),
        "grad_input": x.grad.flatten().tolist(),
    }


def main():
    ref = {
        "torch_version": torch.__version__,
        "torchvision_version": torchvision.__version__,
        "input": {"n": N, "h": H, "w": W, "labels": LABELS},
    }
    model = torchvision.models.resnet18(num_classes=3)
    ref["state_dict"] = [[k, list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in model.state_dict().items()]
    ref["num_parameters"] = sum(p.numel() for p in model.parameters())

    model = make_model()
    model.train()
    x, y = inputs()
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    ref["train"] = {
        "logits": logits.detach().flatten().tolist(),
        "loss": loss.item(),
        "grads": {name: summary(p.grad) for name, p in model.named_parameters()},
        "running": stats_of(model),
    }
    model = make_model()
    model.eval()
    with torch.no_grad():
        ref["eval"] = {"logits": model(x).flatten().tolist()}

    ref["sgd"] = {"lr": 0.01, "momentum": 0.9, **two_steps(lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9))}
    ref["adam"] = {"lr": 1e-4, **two_steps(lambda p: torch.optim.Adam(p, lr=1e-4))}
    ref["maxpool"] = maxpool_case()

    # The float64 reference and the measured float32 spread around it.
    ev, lg, loss, grads, sd = forward_raw(torch.float64)
    sgd = lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9)
    adam = lambda p: torch.optim.Adam(p, lr=1e-4)
    ref64 = {
        "eval": {"logits": ev.flatten().tolist()},
        "train": {
            "logits": lg.flatten().tolist(),
            "loss": loss,
            "grads": {name: summary(g) for name, g in grads.items()},
            "running": stats_of_sd(sd),
        },
        "sgd": two_steps(sgd, torch.float64),
        "adam": two_steps(adam, torch.float64),
    }
    ref["f64"] = ref64
    ref["f32_spread"] = spread(ref64, {"sgd": sgd, "adam": adam})

    out = os.path.join(os.path.dirname(__file__), "..", "..", "stages", "tests", "fixtures", "resnet18_reference.json")
    with open(out, "w") as fh:
        json.dump(ref, fh, indent=1)
        fh.write("\n")
    print("wrote", os.path.normpath(out), os.path.getsize(out), "bytes")


if __name__ == "__main__":
    main()
