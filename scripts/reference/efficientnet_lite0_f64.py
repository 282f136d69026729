#!/usr/bin/env python3
"""Float64 reference and measured float32 spread for EfficientNet-Lite0 (stages/src/encoders).

Writes stages/tests/fixtures/efficientnet_lite0_f64.json, which
`encoders::tests::efficientnet_lite0_matches_the_reference_features_and_top5` compares against:
  * `features` (1280) and `logits_top5` ([class, logit]) of the embedded weights
    (assets/efficientnet-lite0/efficientnet_lite0.safetensors, float32) on the pattern input of
    `stages/tests/fixtures/efficientnet_lite0_pattern64.json` (64x64, phase 0), computed in float64
    with the PyTorch forward of scripts/encoders/convert_efficientnet_lite0.py (same weights, same
    float32 input, cast to float64);
  * `f32_spread`: the largest |float32 - float64| (features; top-5 logits) over several legitimate
    float32 evaluations: oneDNN or the native im2col + BLAS convolutions, NCHW or channels-last, 1 or
    4 threads, and BatchNorm folded into the convolutions in float32 (what wspace does at load time);
  * `external_reference_error`: max |features - float64| of the committed external reference
    (efficientnet_lite0_pattern64.json, float32, computed outside this project).

Run (never in CI):  /work/pyref/bin/python scripts/reference/efficientnet_lite0_f64.py
"""
import importlib.util
import json
import os

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(REPO, "stages", "tests", "fixtures")

spec = importlib.util.spec_from_file_location(
    "convert", os.path.join(REPO, "scripts", "encoders", "convert_efficientnet_lite0.py"))
convert = importlib.util.module_from_spec(spec)
spec.loader.exec_module(convert)

torch.set_num_threads(1)


def pattern(h, w, phase):
    hh, ww, cc = np.meshgrid(np.arange(h), np.arange(w), np.arange(3), indexing="ij")
    x = (1.5 * np.sin(0.013 * (hh * w + ww) * (cc + 1) + phase)).astype(np.float32)
    return torch.from_numpy(x).permute(2, 0, 1)[None].contiguous()


def folded(sd):
    """BatchNorm folded into the preceding convolution, in the weights' dtype (as wspace loads them):
    w' = w * g / sqrt(v + eps), b' = beta - mean * g / sqrt(v + eps)."""
    out = {}
    for k, v in sd.items():
        if not k.endswith(".weight") or v.dim() != 4:
            continue
        conv = k[: -len(".weight")]
        if conv == "_conv_stem":
            bn = "_bn0"
        elif conv == "_conv_head":
            bn = "_bn1"
        else:
            block, name = conv.rsplit(".", 1)
            bn = block + "." + {"_expand_conv": "_bn0", "_depthwise_conv": "_bn1", "_project_conv": "_bn2"}[name]
        scale = sd[bn + ".weight"] / (sd[bn + ".running_var"] + 1e-3).sqrt()
        out[conv] = (v * scale.reshape(-1, 1, 1, 1), sd[bn + ".bias"] - sd[bn + ".running_mean"] * scale)
    return out


def forward_folded(sd, x):
    fw = folded(sd)
    relu6 = lambda t: t.clamp(0.0, 6.0)

    def conv(x, name, s=1, groups=1):
        w, b = fw[name]
        return F.conv2d(convert.same_pad(x, w.shape[-1], s), w, b, stride=s, groups=groups)

    x = relu6(conv(x, "_conv_stem", 2))
    for i, s in enumerate(convert.STRIDES):
        p = f"_blocks.{i}."
        inp = x
        if p + "_expand_conv" in fw:
            x = relu6(conv(x, p + "_expand_conv"))
        x = relu6(conv(x, p + "_depthwise_conv", s, groups=fw[p + "_depthwise_conv"][0].shape[0]))
        x = conv(x, p + "_project_conv")
        if s == 1 and x.shape == inp.shape:
            x = x + inp
    x = relu6(conv(x, "_conv_head"))
    feats = x.mean(dim=(2, 3))
    return feats, feats @ sd["_fc.weight"].T + sd["_fc.bias"]


ORDERS = {
    "onednn_nchw_1thread": dict(mkldnn=True, channels_last=False, threads=1, fold=False),
    "native_im2col_blas_1thread": dict(mkldnn=False, channels_last=False, threads=1, fold=False),
    "onednn_channels_last_1thread": dict(mkldnn=True, channels_last=True, threads=1, fold=False),
    "onednn_nchw_4threads": dict(mkldnn=True, channels_last=False, threads=4, fold=False),
    "bn_folded_in_f32_1thread": dict(mkldnn=True, channels_last=False, threads=1, fold=True),
}


def main():
    external = json.load(open(os.path.join(FIXTURES, "efficientnet_lite0_pattern64.json")))["pattern64"]
    x = pattern(external["height"], external["width"], external["phase"])
    sd = load_file(os.path.join(REPO, "assets", "efficientnet-lite0", "efficientnet_lite0.safetensors"))
    with torch.no_grad():
        f64, l64 = convert.forward({k: v.double() for k, v in sd.items()}, x.double())
    f64, l64 = f64[0], l64[0]
    top5 = l64.topk(5).indices.tolist()
    spread = {}
    for order, o in ORDERS.items():
        torch.set_num_threads(o["threads"])
        xs, weights = x, sd
        if o["channels_last"]:
            xs = x.contiguous(memory_format=torch.channels_last)
            weights = {k: (v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v) for k, v in sd.items()}
        with torch.no_grad(), torch.backends.mkldnn.flags(enabled=o["mkldnn"]):
            f, l = (forward_folded if o["fold"] else convert.forward)(weights, xs)
        spread[order] = {
            "features": (f[0].double() - f64).abs().max().item(),
            "logits_top5": max(abs(l[0][c].item() - l64[c].item()) for c in top5),
        }
        print(order, spread[order])
    torch.set_num_threads(1)
    spread["max"] = {k: max(s[k] for s in spread.values()) for k in ("features", "logits_top5")}
    ext = (torch.tensor(external["features"], dtype=torch.float64) - f64).abs().max().item()
    print("external reference (float32) vs float64: max |features| error", ext)
    out = {
        "produced_by": "scripts/reference/efficientnet_lite0_f64.py (torch %s, CPU)" % torch.__version__,
        "input": {"height": external["height"], "width": external["width"], "phase": external["phase"]},
        "features": f64.tolist(),
        "logits_top5": [[c, l64[c].item()] for c in top5],
        "f32_spread": spread,
        "external_reference_error": ext,
    }
    path = os.path.join(FIXTURES, "efficientnet_lite0_f64.json")
    with open(path, "w") as fh:
        json.dump(out, fh, indent=1)
        fh.write("\n")
    print("wrote", path, "top-5", top5)


if __name__ == "__main__":
    main()
