"""Writes stages/tests/fixtures/transformer/: a small token transformer in the `autoencoder` stage's output
format, and its outputs computed by PyTorch's own transformer layers.

Run from the repository root (never in CI):
    /work/pyref/bin/python scripts/weights/transformer_reference.py

What it checks: `weights::transformer` builds its encoder and decoder by hand from candle ops. Here the same
weights run through `torch.nn.TransformerEncoderLayer` (norm_first=True, GELU (erf), dim_feedforward = 2·d,
dropout 0, LayerNorm ε 1e-5, batch_first) with `self_attn.in_proj_*` = our `attn.qkv.*` (rows q, k, v) and
`self_attn.out_proj.*` = our `attn.proj.*`, between our input projection + position embedding and our
final LayerNorm + output projection. The Rust test `weights::transformer_tests::transformer_matches_pytorch`
loads the directory with `TokenAutoencoder::load`, runs `encode_tensor` / `decode_tensor` on `input` and
compares with `latents` and `decoded`.

Weights: torch.Generator seeded 0, N(0, 0.3²) (LayerNorm weights 1 + N(0, 0.1²)), stored as float32. Input:
N(0, 1) of shape [1, 41, 201]. Expected outputs are computed in float64 from the float32 weights.
"""
import json
import pathlib

import torch
from safetensors.torch import save_file

TOKENS, WIDTH, D, HEADS, LAYERS, LATENT = 41, 201, 8, 2, 2, 3
OUT = pathlib.Path("stages/tests/fixtures/transformer")


def stack_tensors(gen, prefix, inp, out):
    t = {}

    def rnd(*shape, scale=0.3):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).float()

    t[f"{prefix}.input.weight"], t[f"{prefix}.input.bias"] = rnd(D, inp), rnd(D)
    t[f"{prefix}.position"] = rnd(TOKENS, D)
    for layer in range(LAYERS):
        p = f"{prefix}.blocks.{layer}"
        for ln in ("ln1", "ln2"):
            t[f"{p}.{ln}.weight"], t[f"{p}.{ln}.bias"] = 1 + rnd(D, scale=0.1), rnd(D, scale=0.1)
        t[f"{p}.attn.qkv.weight"], t[f"{p}.attn.qkv.bias"] = rnd(3 * D, D), rnd(3 * D)
        t[f"{p}.attn.proj.weight"], t[f"{p}.attn.proj.bias"] = rnd(D, D), rnd(D)
        t[f"{p}.mlp.fc1.weight"], t[f"{p}.mlp.fc1.bias"] = rnd(2 * D, D), rnd(2 * D)
        t[f"{p}.mlp.fc2.weight"], t[f"{p}.mlp.fc2.bias"] = rnd(D, 2 * D), rnd(D)
    t[f"{prefix}.ln.weight"], t[f"{prefix}.ln.bias"] = 1 + rnd(D, scale=0.1), rnd(D, scale=0.1)
    t[f"{prefix}.output.weight"], t[f"{prefix}.output.bias"] = rnd(out, D), rnd(out)
    return t


def run_stack(t, prefix, x):
    """PyTorch's layers, float64."""
    d = lambda name: t[name].double()  # noqa: E731
    h = x @ d(f"{prefix}.input.weight").T + d(f"{prefix}.input.bias") + d(f"{prefix}.position")
    for layer in range(LAYERS):
        p = f"{prefix}.blocks.{layer}"
        enc = torch.nn.TransformerEncoderLayer(
            D, HEADS, dim_feedforward=2 * D, dropout=0.0, activation="gelu", layer_norm_eps=1e-5, batch_first=True, norm_first=True
        ).double()
        enc.eval()
        with torch.no_grad():
            enc.self_attn.in_proj_weight.copy_(d(f"{p}.attn.qkv.weight"))
            enc.self_attn.in_proj_bias.copy_(d(f"{p}.attn.qkv.bias"))
            enc.self_attn.out_proj.weight.copy_(d(f"{p}.attn.proj.weight"))
            enc.self_attn.out_proj.bias.copy_(d(f"{p}.attn.proj.bias"))
            enc.linear1.weight.copy_(d(f"{p}.mlp.fc1.weight"))
            enc.linear1.bias.copy_(d(f"{p}.mlp.fc1.bias"))
            enc.linear2.weight.copy_(d(f"{p}.mlp.fc2.weight"))
            enc.linear2.bias.copy_(d(f"{p}.mlp.fc2.bias"))
            enc.norm1.weight.copy_(d(f"{p}.ln1.weight"))
            enc.norm1.bias.copy_(d(f"{p}.ln1.bias"))
            enc.norm2.weight.copy_(d(f"{p}.ln2.weight"))
            enc.norm2.bias.copy_(d(f"{p}.ln2.bias"))
            h = enc(h)
    h = torch.nn.functional.layer_norm(h, (D,), d(f"{prefix}.ln.weight"), d(f"{prefix}.ln.bias"), eps=1e-5)
    return h @ d(f"{prefix}.output.weight").T + d(f"{prefix}.output.bias")


def main():
    gen = torch.Generator().manual_seed(0)
    tensors = stack_tensors(gen, "encoder", WIDTH, LATENT)
    tensors.update(stack_tensors(gen, "decoder", LATENT, WIDTH))
    tensors["normaliser.mean"] = torch.zeros(TOKENS, WIDTH)
    tensors["normaliser.std"] = torch.ones(5)
    x = torch.randn(1, TOKENS, WIDTH, generator=gen, dtype=torch.float64).float()
    with torch.no_grad():
        z = run_stack(tensors, "encoder", x.double())
        y = run_stack(tensors, "decoder", z.float().double())
    OUT.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, OUT / "transformer.safetensors")
    config = {"arch": "cnn-s", "tokens": TOKENS, "token_width": WIDTH, "d_model": D, "heads": HEADS, "layers": LAYERS, "token_latent": LATENT, "best_epoch": 0, "epochs_run": 0}
    (OUT / "transformer.json").write_text(json.dumps(config, indent=2) + "\n")
    expected = {
        "torch": torch.__version__,
        "shape": [1, TOKENS, WIDTH],
        "input": [float(f"{v:.9g}") for v in x.flatten().tolist()],
        "latents": [float(f"{v:.9g}") for v in z.flatten().tolist()],
        "decoded": [float(f"{v:.9g}") for v in y.flatten().tolist()],
    }
    (OUT / "expected.json").write_text(json.dumps(expected) + "\n")
    print(f"wrote {OUT}: |z| max {z.abs().max().item():.3f}, |y| max {y.abs().max().item():.3f}")


if __name__ == "__main__":
    main()
