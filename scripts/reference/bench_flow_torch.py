"""The flow's training loop in PyTorch, with the shapes of `wspace bench flow` (the peer figure for the
README's benchmark table). Never run by CI.

    /work/venv-ref/bin/python scripts/reference/bench_flow_torch.py [--threads 1] [--models 140] [--orders 6] [--epochs 5]

Data (built before the clock starts): N * O train examples (N models under O class orders) and V val
models, each a standard-normal latent of T x K (tokens x width, 41 x 32) with a prompt: example i has
classes (i, i + 1, i + 2) mod 10 and loss 0.1 + (i mod 10) * 0.1 (r = (loss - 0.1) / 0.9); 10 classes
of 9 standard-normal coordinates.

The network (`flow::model` + `layers::Stack`): per token j the input (F = K + 2 * 9 + 16 + 2 = 68)
    [ x_j (K) ; c_j (9) ; sin, cos(2^i pi t), i < 8 (16, interleaved) ; r (1) ; m (9) ; delta (1) ]
c_j the coordinates of the prompt's s-th class on head token T - 3 + s (s < 3), else 0; m the mean of the
three classes' coordinates; delta = 1 for a dropped prompt (then c, r, m = 0). Then
    Linear(68, 64) + a learned position [T, 64] (N(0, 0.02^2))
    -> 2 x nn.TransformerEncoderLayer(d_model 64, 4 heads, feed-forward 128, GELU (erf), dropout 0,
       norm_first: x + MHA(LN(x)); x + MLP(LN(x)); its attention is one qkv Linear(64, 192) and
       Linear(64, 64) out, as `layers::Block`)
    -> LayerNorm(64) -> Linear(64, K)                                            [B, T, K]
(LayerNorm eps 1e-5; 76,192 parameters with T = 41, K = 32, as `Flow::parameter_count`.)

Timed per run (as `Flow::init` + `flow::fit_examples`): the network; 4 fixed draws per val model; E
epochs of shuffled batches of B (a short last batch kept), each step: per example the prompt dropped
with probability 0.1, x0 ~ N(0, I), t ~ U(0, 1), x_t = (1 - t) x0 + t x1; the input built, the network's
output against the velocity x1 - x0 by MSE (mean over B * T * K), backward, AdamW (lr 1e-3, weight decay
0, as `FitParams` here). After each epoch the val loss (no gradient, the fixed draws in chunks of 64,
weighted by chunk length) and, when it improved, a copy of the weights (the early-stopping snapshot).
The same work per step as one `wspace bench flow` run; the values are not its values.

Before the timed runs, one untimed warm-up run on a single example: PyTorch's first optimizer
imports torch._dynamo (seconds on this machine), which is no part of the loop.

Prints one JSON line: the best and median wall time of `--repeats` runs and train examples per second
(N * O * E / median), in all and per thread.
"""
import argparse
import json
import math
import statistics
import time

import torch
import torch.nn.functional as F

TIME_FREQUENCIES = 8
VAL_DRAWS = 4
VAL_CHUNK = 64


class Velocity(torch.nn.Module):
    def __init__(self, tokens, features, width, d_model, heads, layers):
        super().__init__()
        self.input = torch.nn.Linear(features, d_model)
        self.position = torch.nn.Parameter(0.02 * torch.randn(tokens, d_model))
        self.blocks = torch.nn.ModuleList(
            torch.nn.TransformerEncoderLayer(d_model, heads, dim_feedforward=2 * d_model, dropout=0.0,
                                             activation="gelu", layer_norm_eps=1e-5, batch_first=True,
                                             norm_first=True)
            for _ in range(layers))
        self.ln = torch.nn.LayerNorm(d_model, eps=1e-5)
        self.output = torch.nn.Linear(d_model, width)

    def forward(self, x):
        h = self.input(x) + self.position
        for block in self.blocks:
            h = block(h)
        return self.output(self.ln(h))


def features(xt, t, classes, r, keep, coords):
    """The network's input [B, T, F] (see the module doc); xt [B, T, K], t [B], keep [B] (1: prompt kept)."""
    b, tokens, _ = xt.shape
    a = math.pi * (2.0 ** torch.arange(TIME_FREQUENCIES)) * t[:, None]
    tau = torch.stack([a.sin(), a.cos()], dim=2).reshape(b, 2 * TIME_FREQUENCIES)
    c = coords[classes] * keep[:, None, None]  # [B, 3, q]
    glob = torch.cat([tau, (r * keep)[:, None], c.mean(1), (1.0 - keep)[:, None]], dim=1)
    head = torch.zeros(b, tokens, coords.shape[1])
    head[:, tokens - 3:] = c
    return torch.cat([xt, head, glob[:, None, :].expand(b, tokens, glob.shape[1])], dim=2)


def draw(x1, gen):
    """x_t, t and the velocity target for latents x1 [B, T, K]."""
    x0 = torch.randn(x1.shape, generator=gen)
    t = torch.rand(x1.shape[0], generator=gen)
    tt = t[:, None, None]
    return (1.0 - tt) * x0 + tt * x1, t, x1 - x0


def run(a, data, seed):
    x1, classes, r, coords = data
    n = a.models * a.orders
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    torch.manual_seed(seed)
    f = x1.shape[2] + 2 * coords.shape[1] + 2 * TIME_FREQUENCIES + 2
    model = Velocity(a.tokens, f, a.width, a.d_model, a.heads, a.layers)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    # The fixed val draws: 4 per val model, prompts kept.
    vi = torch.arange(n, n + a.val).repeat_interleave(VAL_DRAWS)
    vxt, vt, vtarget = draw(x1[vi], gen)
    vinput = features(vxt, vt, classes[vi], r[vi], torch.ones(len(vi)), coords)

    def val_loss():
        model.eval()
        with torch.no_grad():
            total = 0.0
            for i in range(0, len(vi), VAL_CHUNK):
                rows = slice(i, i + VAL_CHUNK)
                total += F.mse_loss(model(vinput[rows]), vtarget[rows]).item() * len(vt[rows])
        model.train()
        return total / len(vi)

    best, best_state = float("inf"), None
    for _ in range(a.epochs):
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for i in range(0, n, a.batch):
            rows = order[i:i + a.batch]
            keep = (torch.rand(len(rows), generator=gen) >= a.cond_dropout).float()
            xt, t, target = draw(x1[rows], gen)
            loss = F.mse_loss(model(features(xt, t, classes[rows], r[rows], keep, coords)), target)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(rows)
        assert total == total, "training loss became NaN"
        v = val_loss()
        if v < best:
            best, best_state = v, {k: p.detach().clone() for k, p in model.state_dict().items()}
    model.load_state_dict(best_state)
    return time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", type=int, default=140)
    ap.add_argument("--val", type=int, default=20)
    ap.add_argument("--orders", type=int, default=6, choices=range(1, 7))
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=41)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--cond-dropout", type=float, default=0.1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    if a.tokens < 3 or a.d_model % a.heads:
        ap.error("--tokens must be at least 3 and --heads must divide --d-model")
    torch.set_num_threads(a.threads)
    total = a.models * a.orders + a.val
    gen = torch.Generator().manual_seed(0)
    x1 = torch.randn(total, a.tokens, a.width, generator=gen)
    i = torch.arange(total)
    classes = torch.stack([i % 10, (i + 1) % 10, (i + 2) % 10], dim=1)
    r = ((0.1 + (i % 10).float() * 0.1) - 0.1) / (1.0 - 0.1)  # loss_min 0.1, loss_max 1.0 as the bench's config
    coords = torch.randn(10, 9, generator=torch.Generator().manual_seed(7))
    data = (x1, classes, r, coords)
    run(argparse.Namespace(**{**vars(a), "models": 1, "orders": 1, "val": 1, "epochs": 1}), data, 0)  # warm-up
    times = sorted(run(a, data, s) for s in range(a.repeats))
    median = statistics.median(times)
    examples = a.models * a.orders * a.epochs / median
    print(json.dumps({
        "bench": "flow-torch", "torch": torch.__version__, "threads": a.threads, "models": a.models,
        "orders": a.orders, "examples": a.models * a.orders, "val": a.val, "epochs": a.epochs, "batch": a.batch,
        "tokens": a.tokens, "width": a.width, "repeats": a.repeats, "best_s": times[0], "median_s": median,
        "examples_per_s": examples, "examples_per_s_per_thread": examples / a.threads,
    }))


if __name__ == "__main__":
    main()
