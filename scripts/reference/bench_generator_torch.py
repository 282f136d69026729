"""The generator's training loop in PyTorch, with the shapes of `wspace bench generator` (the peer figure
for the README's benchmark table). Never run by CI.

    /work/venv-ref/bin/python scripts/reference/bench_generator_torch.py [--threads 1] [--models 140] [--epochs 5]
        [--conv loop|grouped|vmap|shared]

Data (built before the clock starts, as `crate::synthetic::zoo`): N train + V val examples; example m is
a `cnn-s` (`cnn_s_reference.CnnS`, PyTorch init of seed 0) plus N(0, 0.05^2) per weight, with P probe
images of U(0, 1) pixels ([P, 1, 28, 28]), that network's own logits on them as the teacher ([P, 3]),
labels `i mod 3`, classes (m, m + 1, m + 2) mod 10 and loss 0.1 + (m mod 10) * 0.1; 10 classes of
standard-normal 1280-value embeddings.

Timed per run (as `Generator::init` + `generator::fit_examples`): the generator, a row MLP
Linear(1280 + 1 + 8, 128) -> ELU -> Linear(128, 21) and one learned body of 2254 values (model 0's);
the val loss once before training; then E epochs of shuffled batches of B (a short last batch kept),
each step:
  * prompts -> the MLP's input [3B, 1289]: row k of prompt b = [embedding of class c_k (1280); t (1);
    xi_k (8)], t = (loss - 0.1) / 0.9, xi ~ N(0, 1) fresh per example;
  * flat weights [B, 2317] = [body broadcast to B (2254); the rows' first 20 values (fc2.weight, 3 x 20);
    their last value (fc2.bias, 3)], exactly the layout `Generator::forward` builds;
  * each generated network on its own P probes -> logits [B, P, 3];
  * loss = mean over the B networks of (1 - lam) * KL(softmax(teacher / T) || softmax(student / T)) * T^2
    + lam * CE(student, labels), each a mean over the P images (T = 1, lam = --label-weight);
  * backward into the MLP and the body, AdamW (lr 1e-3, weight decay 0, as `FitParams` here).
After each epoch the val loss (no gradient, xi = 0, all V in one batch) and, when it improved, a copy of
the weights (the loop's early-stopping snapshot). The same work per step as one `wspace bench generator`
run; the values are not its values (other random streams).

`--conv`: how the B generated networks run, all from the same flat [B, 2317] weights:
  loop     (default) a one-network functional cnn-s (F.conv2d, F.linear on slices of the flat
           vector), B times, each on its P probes;
  grouped  the B networks as one grouped convolution per layer (groups = B, the probes as the conv
           batch), the two linear layers as batched matmuls;
  vmap     torch.func.vmap of the one-network functional cnn-s over (weights, probes);
  shared   not a per-network run: since all B bodies are the same vector, conv1..fc1 run once on the
           B * P images with the body itself, then each network's head (same FLOPs; a shortcut the
           Rust kernel does not take, for reference only).
Measured here (torch 2.15 CPU, 1 thread, forward + backward of B = 16 networks on P = 64 and 128
probes, a loaded 2-core machine): the loop was the fastest (~100 and ~195 ms), grouped and vmap
(which lowers to much the same grouped convolutions) about 1.5-2x slower, shared in between.

Before the timed runs, one untimed warm-up run on a single example: PyTorch's first optimizer
imports torch._dynamo (seconds on this machine), which is no part of the loop.

Prints one JSON line: the best and median wall time of `--repeats` runs, train examples per second
(N * E / median) and probe images per second (N * E * P / median), in all and per thread.
"""
import argparse
import json
import pathlib
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from cnn_s_reference import CnnS  # noqa: E402

# cnn_s_reference switches deterministic algorithms on at import (for its fixture); not wanted here.
torch.use_deterministic_algorithms(False)

BODY = 2254  # conv1 .. fc1
ROW = 21  # fc2.weight row (20) and fc2.bias value
NUM_PARAMS = BODY + 3 * ROW
CLASSES, EMBED_DIM = 10, 1280
# (offset, shape) of each tensor in the flat vector (state_dict order, `nn::PARAM_SPECS`).
SPECS = {}
_at = 0
for _name, _shape in [("c1w", (8, 1, 5, 5)), ("c1b", (8,)), ("c2w", (6, 8, 5, 5)), ("c2b", (6,)),
                      ("c3w", (4, 6, 2, 2)), ("c3b", (4,)), ("f1w", (20, 36)), ("f1b", (20,)),
                      ("f2w", (3, 20)), ("f2b", (3,))]:
    _n = 1
    for _s in _shape:
        _n *= _s
    SPECS[_name] = (_at, _shape)
    _at += _n
assert _at == NUM_PARAMS and SPECS["f2w"][0] == BODY


def part(w, name):
    """Tensor `name` of flat weights `w` [..., 2317] -> [..., *shape]."""
    at, shape = SPECS[name]
    n = 1
    for s in shape:
        n *= s
    return w[..., at:at + n].reshape(*w.shape[:-1], *shape)


def net_one(w, x):
    """One network: flat weights [2317], images [P, 1, 28, 28] -> logits [P, 3] (CnnS.forward)."""
    h = torch.tanh(F.max_pool2d(F.conv2d(x, part(w, "c1w"), part(w, "c1b")), 2))
    h = torch.tanh(F.max_pool2d(F.conv2d(h, part(w, "c2w"), part(w, "c2b")), 2))
    h = torch.tanh(F.conv2d(h, part(w, "c3w"), part(w, "c3b")))
    h = torch.tanh(F.linear(h.flatten(1), part(w, "f1w"), part(w, "f1b")))
    return F.linear(h, part(w, "f2w"), part(w, "f2b"))


def net_grouped(w, x):
    """B networks at once: flat weights [B, 2317], images [B, P, 1, 28, 28] -> logits [B, P, 3]."""
    b, p = x.shape[0], x.shape[1]
    h = x.reshape(b, p, 28, 28).transpose(0, 1)  # [P, B, 28, 28]: network g's images are channel g

    def conv(h, wn, bn):
        wt = part(w, wn)  # [B, out, in, k, k]
        return F.conv2d(h, wt.reshape(-1, *wt.shape[2:]), part(w, bn).reshape(-1), groups=b)

    h = torch.tanh(F.max_pool2d(conv(h, "c1w", "c1b"), 2))  # [P, 8B, 12, 12]
    h = torch.tanh(F.max_pool2d(conv(h, "c2w", "c2b"), 2))  # [P, 6B, 4, 4]
    h = torch.tanh(conv(h, "c3w", "c3b"))  # [P, 4B, 3, 3]
    h = h.reshape(p, b, 36).transpose(0, 1)  # [B, P, 36] (c, i, j order per network)
    h = torch.tanh(torch.baddbmm(part(w, "f1b").unsqueeze(1), h, part(w, "f1w").transpose(1, 2)))
    return torch.baddbmm(part(w, "f2b").unsqueeze(1), h, part(w, "f2w").transpose(1, 2))


_net_vmap = torch.func.vmap(net_one)


def run_nets(mode, w, x, body):
    if mode == "grouped":
        return net_grouped(w, x)
    if mode == "vmap":
        return _net_vmap(w, x)
    if mode == "loop":
        return torch.stack([net_one(w[g], x[g]) for g in range(w.shape[0])])
    # shared: the body once on all B * P images, then the B heads.
    b, p = x.shape[0], x.shape[1]
    h = torch.tanh(F.max_pool2d(F.conv2d(x.reshape(b * p, 1, 28, 28), part(body, "c1w"), part(body, "c1b")), 2))
    h = torch.tanh(F.max_pool2d(F.conv2d(h, part(body, "c2w"), part(body, "c2b")), 2))
    h = torch.tanh(F.conv2d(h, part(body, "c3w"), part(body, "c3b")))
    h = torch.tanh(F.linear(h.flatten(1), part(body, "f1w"), part(body, "f1b"))).reshape(b, p, 20)
    return torch.baddbmm(part(w, "f2b").unsqueeze(1), h, part(w, "f2w").transpose(1, 2))


class Generator(torch.nn.Module):
    def __init__(self, body, embeddings, hidden, noise_dim):
        super().__init__()
        self.body = torch.nn.Parameter(body.clone())
        self.l1 = torch.nn.Linear(embeddings.shape[1] + 1 + noise_dim, hidden)
        self.l2 = torch.nn.Linear(hidden, ROW)
        self.register_buffer("embeddings", embeddings)

    def forward(self, classes, t, xi):
        """classes [B, 3], t [B], xi [B, 3, q] -> flat weights [B, 2317]."""
        b = classes.shape[0]
        x = torch.cat([self.embeddings[classes], t[:, None, None].expand(b, 3, 1), xi], dim=2)
        rows = self.l2(F.elu(self.l1(x.reshape(3 * b, -1)))).reshape(b, 3, ROW)
        weights = rows[:, :, :ROW - 1].reshape(b, 3 * (ROW - 1))
        bias = rows[:, :, ROW - 1]
        return torch.cat([self.body.unsqueeze(0).expand(b, BODY), weights, bias], dim=1)


def distill_loss(student, teacher, labels, temperature, lam):
    """Mean over networks and images of (1 - lam) * KL * T^2 + lam * CE; student, teacher [B, P, 3]."""
    s = student.reshape(-1, 3)
    kl = F.kl_div(F.log_softmax(s / temperature, 1), F.log_softmax(teacher.reshape(-1, 3) / temperature, 1),
                  reduction="batchmean", log_target=True) * temperature ** 2
    if lam == 0.0:
        return kl
    return (1.0 - lam) * kl + lam * F.cross_entropy(s, labels.reshape(-1))


def run(a, data, seed):
    images, teacher, labels, classes, t, body0, embeddings = data
    n, q = a.models, a.noise_dim
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    torch.manual_seed(seed)
    model = Generator(body0, embeddings, a.hidden, q)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    val = slice(n, n + a.val)

    def val_loss():
        with torch.no_grad():
            w = model(classes[val], t[val], torch.zeros(a.val, 3, q))
            return distill_loss(run_nets(a.conv, w, images[val], model.body), teacher[val], labels[val],
                                a.temperature, a.label_weight).item()

    val_loss()  # `val_untrained`
    best, best_state = float("inf"), None
    for _ in range(a.epochs):
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for i in range(0, n, a.batch):
            rows = order[i:i + a.batch]
            xi = a.noise * torch.randn(len(rows), 3, q, generator=gen)
            w = model(classes[rows], t[rows], xi)
            loss = distill_loss(run_nets(a.conv, w, images[rows], model.body), teacher[rows], labels[rows],
                                a.temperature, a.label_weight)
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


def synthetic(a):
    """The examples of `crate::synthetic::zoo` and the class embeddings (see the module doc)."""
    total, p = a.models + a.val, a.probes
    torch.manual_seed(0)
    base = CnnS()
    flat0 = torch.cat([v.flatten() for v in base.state_dict().values()])
    gen = torch.Generator().manual_seed(1)
    images = torch.rand(total, p, 1, 28, 28, generator=gen)
    teacher = torch.empty(total, p, 3)
    flats = []
    with torch.no_grad():
        for m in range(total):
            net = CnnS()
            net.load_state_dict(base.state_dict())
            for v in net.parameters():
                v.add_(0.05 * torch.randn(v.shape, generator=gen))
            teacher[m] = net(images[m])
            flats.append(torch.cat([v.flatten() for v in net.state_dict().values()]))
        # The functional networks are CnnS: same logits from the flat vectors.
        w = torch.stack(flats[:2])
        for mode in ("grouped", "vmap", "loop"):
            err = (run_nets(mode, w, images[:2, :8], None) - teacher[:2, :8]).abs().max().item()
            assert err < 1e-4, f"--conv {mode}: {err} from CnnS"
    assert flat0.numel() == NUM_PARAMS
    labels = (torch.arange(p) % 3).expand(total, p).contiguous()
    m = torch.arange(total)
    classes = torch.stack([m % 10, (m + 1) % 10, (m + 2) % 10], dim=1)
    loss = 0.1 + (m % 10).float() * 0.1
    t = (loss - 0.1) / (1.0 - 0.1)  # loss_min 0.1, loss_max 1.0 as the bench's config
    embeddings = torch.randn(CLASSES, EMBED_DIM, generator=torch.Generator().manual_seed(7))
    return images, teacher, labels, classes, t, flats[0][:BODY].clone(), embeddings


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", type=int, default=140)
    ap.add_argument("--val", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--probes", type=int, default=256)
    ap.add_argument("--label-weight", type=float, default=0.5)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--noise-dim", type=int, default=8)
    ap.add_argument("--noise", type=float, default=1.0)
    ap.add_argument("--conv", choices=["grouped", "vmap", "loop", "shared"], default="loop")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    if not 0.0 <= a.label_weight <= 1.0:
        ap.error(f"--label-weight {a.label_weight}: expected a number in [0, 1]")
    torch.set_num_threads(a.threads)
    data = synthetic(a)
    run(argparse.Namespace(**{**vars(a), "models": 1, "val": 1, "epochs": 1}), data, 0)  # warm-up
    times = sorted(run(a, data, r) for r in range(a.repeats))
    median = statistics.median(times)
    examples = a.models * a.epochs / median
    images = examples * a.probes
    print(json.dumps({
        "bench": "generator-torch", "torch": torch.__version__, "threads": a.threads, "conv": a.conv,
        "models": a.models, "val": a.val, "epochs": a.epochs, "batch": a.batch, "probes": a.probes,
        "label_weight": a.label_weight, "repeats": a.repeats, "best_s": times[0], "median_s": median,
        "examples_per_s": examples, "examples_per_s_per_thread": examples / a.threads,
        "images_per_s": images, "images_per_s_per_thread": images / a.threads,
    }))


if __name__ == "__main__":
    main()
