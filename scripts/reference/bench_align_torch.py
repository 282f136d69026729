"""The alignment's training loop in PyTorch, with the shapes of `wspace bench align` (the peer figure
for the README's benchmark table). Never run by CI.

    /work/venv-ref/bin/python scripts/reference/bench_align_torch.py [--threads 1] [--pairs 280] [--epochs 20]

Per run: N train + V val pairs of standard-normal dataset embeddings (3 x 1280) and weight latents (32),
losses in 10 bins; the embeddings standardised with the train statistics; the prompt encoder
[d; E[bin]] -> Linear(3840 + 512, 512) -> ELU -> Linear(512, 32); the symmetric NT-Xent at tau = 0.1
against the latents; AdamW (lr 1e-3, weight decay 1e-4) on shuffled batches of 32 (a last batch of
fewer than 2 pairs skipped, as the project's loop does); the val loss after every epoch without
gradients. The same work as one `wspace bench align` run. Prints the best and median wall time of
`--repeats` runs and train pairs per second.
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F


def ntxent(p, h, tau):
    s = F.normalize(p, dim=1) @ F.normalize(h, dim=1).T / tau
    target = torch.arange(p.shape[0])
    return 0.5 * (F.cross_entropy(s, target) + F.cross_entropy(s.T, target))


class Aligner(torch.nn.Module):
    def __init__(self, d, bins, results_dim, hidden, k):
        super().__init__()
        self.results = torch.nn.Embedding(bins, results_dim)
        self.l1 = torch.nn.Linear(d + results_dim, hidden)
        self.l2 = torch.nn.Linear(hidden, k)

    def forward(self, x, b):
        return self.l2(F.elu(self.l1(torch.cat([x, self.results(b)], dim=1))))


def run(a, x, bins, h):
    n = a.pairs
    model = Aligner(x.shape[1], 10, a.results_dim, a.hidden, h.shape[1])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    mean, std = x[:n].mean(0), x[:n].std(0).clamp_min(1e-3)
    xs = (x - mean) / std
    gen = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for _ in range(a.epochs):
        order = torch.randperm(n, generator=gen)
        for i in range(0, n, a.batch):
            rows = order[i:i + a.batch]
            if len(rows) < 2:
                continue
            loss = ntxent(model(xs[rows], bins[rows]), h[rows], 0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            ntxent(model(xs[n:], bins[n:]), h[n:], 0.1).item()
    return time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=280)
    ap.add_argument("--val", type=int, default=40)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--dataset-dim", type=int, default=3 * 1280)
    ap.add_argument("--latent-dim", type=int, default=32)
    ap.add_argument("--results-dim", type=int, default=512)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    total = a.pairs + a.val
    x = torch.randn(total, a.dataset_dim)
    h = torch.randn(total, a.latent_dim)
    bins = torch.arange(total) % 10
    times = sorted(run(a, x, bins, h) for _ in range(a.repeats))
    median = statistics.median(times)
    print(json.dumps({
        "bench": "align-torch", "torch": torch.__version__, "threads": a.threads, "pairs": a.pairs, "val": a.val,
        "epochs": a.epochs, "batch": a.batch, "best_s": times[0], "median_s": median,
        "pairs_per_s": a.pairs * a.epochs / median, "pairs_per_s_per_thread": a.pairs * a.epochs / median / a.threads,
    }))


if __name__ == "__main__":
    main()
