"""Writes stages/tests/fixtures/generate/ntxent.json: the symmetric (CLIP-style) NT-Xent loss in PyTorch.

Run from the repository root (never in CI):
    /work/pyref/bin/python scripts/generate/ntxent_reference.py

The loss, for projections `p` `[N, k]` and weight latents `h` `[N, k]` (row i of each is a positive pair):
    P = p / |p|,  H = h / |h|  (row-wise L2),  S = P Hᵀ / τ
    loss = ½ (CE(S, arange(N)) + CE(Sᵀ, arange(N)))   (mean cross-entropy over rows)
The Rust test `generate::ntxent::tests::matches_pytorch_reference` computes it with candle on the same
inputs (stored in the fixture as values) and compares the loss and its gradient with respect to `p`.
Inputs are drawn from torch.Generator seeded 0 in float64; the expected numbers are computed in float64.
"""
import json
import pathlib

import torch
import torch.nn.functional as F


def ntxent(p, h, tau):
    s = F.normalize(p, dim=1) @ F.normalize(h, dim=1).T / tau
    target = torch.arange(p.shape[0])
    return 0.5 * (F.cross_entropy(s, target) + F.cross_entropy(s.T, target))


def case(gen, n, k, tau):
    p = torch.randn(n, k, generator=gen, dtype=torch.float64).requires_grad_(True)
    h = torch.randn(n, k, generator=gen, dtype=torch.float64)
    loss = ntxent(p, h, tau)
    loss.backward()
    return {
        "n": n,
        "k": k,
        "tau": tau,
        "p": p.detach().flatten().tolist(),
        "h": h.flatten().tolist(),
        "loss": loss.item(),
        "grad_p": p.grad.flatten().tolist(),
    }


def main():
    gen = torch.Generator().manual_seed(0)
    cases = [case(gen, 4, 3, 0.5), case(gen, 6, 5, 0.1), case(gen, 3, 8, 1.0)]
    out = {
        "produced_by": "scripts/generate/ntxent_reference.py (torch %s, float64)" % torch.__version__,
        "cases": cases,
    }
    path = pathlib.Path("stages/tests/fixtures/generate/ntxent.json")
    path.write_text(json.dumps(out, indent=1) + "\n")
    print("wrote", path, [c["loss"] for c in cases])


if __name__ == "__main__":
    main()
