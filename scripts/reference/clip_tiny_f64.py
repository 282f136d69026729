#!/usr/bin/env python3
"""Float64 reference and measured float32 spread for the tiny CLIP vision tower (stages/src/encoders).

Writes stages/tests/fixtures/clip/tiny/reference_f64.json, which
`encoders::tests::clip_vision_matches_transformers_on_a_tiny_random_model` compares against.

`transformers` (which wrote reference.json with scripts/encoders/clip_tiny_fixture.py) is not needed:
this script is a plain PyTorch forward of the CLIP vision tower (patch embedding, class token, position
embeddings, pre-LayerNorm, 2 pre-norm layers of 4-head attention + quick_gelu MLP, post-LayerNorm of the
class token = `pooled`, `visual_projection` = `image_features`) on the weights of
stages/tests/fixtures/clip/tiny/model.safetensors. It first checks itself: in float32 it must
reproduce transformers' reference.json to 1e-6 (printed). It then writes
  * `image_features` [2, 16] and `pooled` [2, 32] in float64 (same float32 weights and input);
  * `f32_spread`: per output, the largest |float32 - float64| over float32 evaluations of this forward
    (1 and 4 threads; attention by explicit softmax or by `F.scaled_dot_product_attention`; the MLP and
    projections by `F.linear` or by an explicit `x @ W.T + b`).

Run (never in CI):  /work/pyref/bin/python scripts/reference/clip_tiny_f64.py
"""
import json
import os

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(REPO, "stages", "tests", "fixtures", "clip", "tiny")


def inputs(b, h, w):
    bi, c, y, x = torch.meshgrid(torch.arange(b), torch.arange(3), torch.arange(h), torch.arange(w), indexing="ij")
    v = torch.sin(0.05 * ((y * w + x) * (c + 1)).double() + 0.7 * bi.double())
    return v.to(torch.float32)


def forward(sd, cfg, x, sdpa=False, explicit_linear=False):
    p = "vision_model."
    heads = cfg["num_attention_heads"]
    eps = cfg["layer_norm_eps"]

    def lin(t, name, bias=True):
        w = sd[name + ".weight"]
        b = sd[name + ".bias"] if bias else None
        if explicit_linear:
            return t @ w.T + (b if b is not None else 0)
        return F.linear(t, w, b)

    def ln(t, name):
        return F.layer_norm(t, t.shape[-1:], sd[name + ".weight"], sd[name + ".bias"], eps)

    patch = sd[p + "embeddings.patch_embedding.weight"]
    e = F.conv2d(x, patch, stride=patch.shape[-1]).flatten(2).transpose(1, 2)  # [B, P, D]
    cls = sd[p + "embeddings.class_embedding"].expand(x.shape[0], 1, -1)
    h = torch.cat([cls, e], dim=1) + sd[p + "embeddings.position_embedding.weight"]
    h = ln(h, p + "pre_layrnorm")
    bsz, n, d = h.shape
    hd = d // heads
    for i in range(cfg["num_hidden_layers"]):
        lp = f"{p}encoder.layers.{i}."
        r = h
        t = ln(h, lp + "layer_norm1")
        q, k, v = (lin(t, lp + f"self_attn.{m}_proj").view(bsz, n, heads, hd).transpose(1, 2) for m in "qkv")
        if sdpa:
            a = F.scaled_dot_product_attention(q, k, v)
        else:
            a = torch.softmax((q * hd ** -0.5) @ k.transpose(-1, -2), dim=-1) @ v
        h = r + lin(a.transpose(1, 2).reshape(bsz, n, d), lp + "self_attn.out_proj")
        r = h
        t = lin(ln(h, lp + "layer_norm2"), lp + "mlp.fc1")
        t = t * torch.sigmoid(1.702 * t)  # quick_gelu
        h = r + lin(t, lp + "mlp.fc2")
    pooled = ln(h[:, 0], p + "post_layernorm")
    return lin(pooled, "visual_projection", bias=False), pooled


def main():
    torch.set_num_threads(1)
    ref = json.load(open(os.path.join(TINY, "reference.json")))
    cfg = json.load(open(os.path.join(TINY, "config.json")))
    cfg = cfg.get("vision_config", cfg)
    sd = load_file(os.path.join(TINY, "model.safetensors"))
    x = inputs(ref["batch"], ref["height"], ref["width"])
    with torch.no_grad():
        f32 = forward(sd, cfg, x)
        check = max((f32[0] - torch.tensor(ref["image_features"])).abs().max().item(),
                    (f32[1] - torch.tensor(ref["pooled"])).abs().max().item())
        print("float32 forward vs transformers' reference.json: max error", check)
        assert check < 1e-6, "this forward is not transformers' CLIP vision tower"
        f64 = forward({k: v.double() for k, v in sd.items()}, cfg, x.double())
        spread = {}
        for threads in (1, 4):
            for sdpa in (False, True):
                for explicit in (False, True):
                    torch.set_num_threads(threads)
                    g = forward(sd, cfg, x, sdpa, explicit)
                    name = f"threads{threads}_{'sdpa' if sdpa else 'softmax'}_{'matmul' if explicit else 'linear'}"
                    spread[name] = {key: (a.double() - b).abs().max().item()
                                    for key, a, b in zip(("image_features", "pooled"), g, f64)}
        torch.set_num_threads(1)
    spread["max"] = {k: max(s[k] for s in spread.values()) for k in ("image_features", "pooled")}
    print("float32 spread", json.dumps(spread["max"]))
    out = {
        "produced_by": "scripts/reference/clip_tiny_f64.py (torch %s, CPU)" % torch.__version__,
        "image_features": f64[0].tolist(),
        "pooled": f64[1].tolist(),
        "f32_spread": spread,
        "transformers_f32_error": {key: (torch.tensor(ref[key], dtype=torch.float64) - t).abs().max().item()
                                   for key, t in zip(("image_features", "pooled"), f64)},
    }
    path = os.path.join(TINY, "reference_f64.json")
    with open(path, "w") as fh:
        json.dump(out, fh, indent=1)
        fh.write("\n")
    print("wrote", path, "transformers float32 vs float64:", out["transformers_f32_error"])


if __name__ == "__main__":
    main()
