"""The weight codecs' training loop with the behavioural loss in PyTorch, with the shapes of
`wspace bench autoencoder` (stages/src/weights/bench_codecs.rs): the peer figure for the README's
benchmark table. Never run by CI.

    /work/venv-ref/bin/python scripts/reference/bench_autoencoder_torch.py [--architecture mlp|transformer] \
        [--threads 1] [--models 140] [--val 20] [--epochs 10] [--batch 16] [--probes 64] [--components 32]

The synthetic zoo (as stages/src/synthetic.rs, not timed): N train + V val `cnn-s` models, each the
PyTorch default initialisation of seed 0 (the `CnnS` of cnn_s_reference.py: 2317 weights) plus
N(0, 0.05^2) per weight; per model `--probes` uniform [0, 1) 28x28 images, the teacher logits the
model's own outputs on them.

`mlp`: a per-tensor PCA fitted on the train models (not timed; as stages/src/weights/pca.rs: a tensor
of <= 4 values is centred only, the others keep min(K, N - 1, size) components), coefficients
normalised per coordinate with the train statistics (D = 201 at the defaults). Decoding normalised
coefficients to weights is then a fixed linear map, per tensor `w_p = z_p (s_p V_p) + (mu_p + m_p V_p)`.
Autoencoder D -> Linear(256) -> ELU -> Linear(32), the mirror decoder 32 -> 256 -> ELU -> D.
Batch loss: 0.1 * MSE(z, z^) / MSE0 + 0.9 * distill / distill0, distill the mean over the batch's
models of KL(softmax(teacher / 2) || softmax(student / 2)) * 2^2 (mean over the 64 probes), the
student the cnn-s the batch's decoded coefficients map to, MSE0 and distill0 the first batch's values.

`transformer`: the token autoencoder of stages/src/weights/transformer.rs and layers.rs. cnn-s as 41
tokens (one per output unit: 8 + 6 + 4 + 20 + 3) of width 201 (conv2's fan_in 200 + bias; shorter
units zero-padded), normalised per entry by the train mean and per layer by its std (fitted inside
the timed run, as the Rust objective does). Encoder and decoder are each a Stack:
Linear(in, 64) + learned position [41, 64] -> 2 pre-norm blocks (x + MHA(LN(x)), 4 heads, qkv 64->192,
proj 64->64; x + MLP(LN(x)), 64 -> 128 -> GELU(erf) -> 64; nn.TransformerEncoderLayer with
norm_first=True, dropout 0) -> LayerNorm -> Linear(64, out); encoder in = 201, out = 32 latent values
per token; decoder in = 32, out = 201. Per batch of b models, two views (the model's tokens plus
N(0, 0.05^2) on the non-padding entries; the clean tokens the target): masked MSE over both views'
non-padding entries, NT-Xent (tau 0.1, weight 0.1) between the token-mean-pooled latents of view a
and view b, and the behavioural term on view a's decoded tokens (de-normalised, detokenised to the
cnn-s weights); loss 0.1 * MSE / MSE0 + 0.9 * distill / distill0 + 0.1 * NT-Xent. A last batch of
one model is skipped (NT-Xent needs two). Val: the val models un-augmented, reconstruction terms only.

Both: AdamW (lr 1e-3, weight decay 1e-5, betas 0.9/0.999, eps 1e-8) on the train models shuffled
each epoch in batches of `--batch`, `--epochs` epochs without early stopping, the val loss (no
gradients) after every epoch, a copy of the weights whenever it improves and the best restored at
the end (as stages/src/fit.rs). Timed: the model's initialisation and the whole loop.

The cnn-s models of a batch run one after another (`--cnn loop`, the default: a Python loop over the
batch's models, each the plain network of cnn_s_reference.CnnS on its own probes, written
functionally, logits stacked). It was the fastest way here: one forward and backward of 16 models x
64 probes on 1 thread took about 0.10 s as a loop, 0.13-0.15 s as `--cnn grouped` (the batch's images
as channels [P, B, 28, 28], each conv a grouped convolution with one group per model, the linear
layers as baddbmm), 0.17-0.20 s as `--cnn vmap` (torch.func.vmap of the one-model network) and
0.3 s as unfold + batched matmul (not kept); oneDNN on or off made no difference. The other two
stay selectable, for comparison on other machines or thread counts (those timings were taken on a
loaded 2-core machine: rough). Gradients: autograd end to end (distill -> cnn-s -> the weight map ->
the codec), where the Rust side runs its hand-written cnn-s backward and feeds that gradient into
candle's graph; the work per step is the same.

Prints one JSON line: the best and median wall time of `--repeats` runs, models_per_s =
models * epochs / median and images_per_s = models * epochs * probes / median (behavioural images
through cnn-s forward and backward), each also per thread.
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

# cnn-s in state_dict order (cnn_s_reference.CnnS).
PARAMS = [
    ("conv1.weight", (8, 1, 5, 5)), ("conv1.bias", (8,)),
    ("conv2.weight", (6, 8, 5, 5)), ("conv2.bias", (6,)),
    ("conv3.weight", (4, 6, 2, 2)), ("conv3.bias", (4,)),
    ("fc1.weight", (20, 36)), ("fc1.bias", (20,)),
    ("fc2.weight", (3, 20)), ("fc2.bias", (3,)),
]
SIZES = [int(torch.Size(s).numel()) for _, s in PARAMS]
NUM_PARAMS = sum(SIZES)  # 2317
PIXELS = 784
BETA, TEMPERATURE = 0.1, 2.0
HIDDEN, LATENT = 256, 32
D_MODEL, HEADS, LAYERS, TOKEN_LATENT = 64, 4, 2, 32
NOISE, CONTRASTIVE_WEIGHT, TAU = 0.05, 0.1, 0.1


# ---------------------------------------------------------------- the synthetic zoo

def cnn_s_init(seed=0):
    """Flat weights of cnn_s_reference.CnnS() after torch.manual_seed(seed) (PyTorch's default init).
    Not imported from there: that module sets the thread count and deterministic mode on import."""
    torch.manual_seed(seed)
    layers = [nn.Conv2d(1, 8, 5), nn.Conv2d(8, 6, 5), nn.Conv2d(6, 4, 2), nn.Linear(36, 20), nn.Linear(20, 3)]
    return torch.cat([t.detach().flatten() for l in layers for t in (l.weight, l.bias)])


def split_flat(flat):
    """[B, 2317] -> the ten cnn-s tensors, each [B, *shape]."""
    parts = torch.split(flat, SIZES, dim=1)
    return [p.reshape(flat.shape[0], *s) for p, (_, s) in zip(parts, PARAMS)]


def zoo(count, probes, cnn):
    """`count` models: flat weights [count, 2317], images [count, probes, 784], teacher logits
    [count, probes, 3], labels [count, probes] (i mod 3)."""
    init = cnn_s_init(0)
    gen = torch.Generator().manual_seed(1)
    flat = init + 0.05 * torch.randn(count, NUM_PARAMS, generator=gen)
    images = torch.rand(count, probes, PIXELS, generator=gen)
    with torch.no_grad():
        teacher = torch.cat([cnn(split_flat(flat[i:i + 16]), images[i:i + 16]) for i in range(0, count, 16)])
    labels = (torch.arange(probes) % 3).expand(count, probes).contiguous()
    return flat, images, teacher, labels


# ---------------------------------------------------------------- cnn-s, batched over models

def cnn_grouped(ws, x):
    """Logits [B, P, 3] of B cnn-s models (`ws`: the ten tensors, each [B, *shape]) on their own
    images `x` [B, P, 784]: the models as convolution groups."""
    c1w, c1b, c2w, c2b, c3w, c3b, f1w, f1b, f2w, f2b = ws
    b, p = x.shape[0], x.shape[1]
    h = x.reshape(b, p, 28, 28).transpose(0, 1)  # [P, B, 28, 28]: model m's images are channel m
    h = torch.tanh(F.max_pool2d(F.conv2d(h, c1w.reshape(b * 8, 1, 5, 5), c1b.reshape(-1), groups=b), 2))
    h = torch.tanh(F.max_pool2d(F.conv2d(h, c2w.reshape(b * 6, 8, 5, 5), c2b.reshape(-1), groups=b), 2))
    h = torch.tanh(F.conv2d(h, c3w.reshape(b * 4, 6, 2, 2), c3b.reshape(-1), groups=b))  # [P, B*4, 3, 3]
    h = h.reshape(p, b, 36).transpose(0, 1)  # [B, P, 36], PyTorch's flatten order per model
    h = torch.tanh(torch.baddbmm(f1b.unsqueeze(1), h, f1w.transpose(1, 2)))
    return torch.baddbmm(f2b.unsqueeze(1), h, f2w.transpose(1, 2))


def cnn_one(ws, x):
    """One model's logits [P, 3] (`ws` unbatched, `x` [P, 784]): cnn_s_reference.CnnS.forward."""
    c1w, c1b, c2w, c2b, c3w, c3b, f1w, f1b, f2w, f2b = ws
    h = x.reshape(-1, 1, 28, 28)
    h = torch.tanh(F.max_pool2d(F.conv2d(h, c1w, c1b), 2))
    h = torch.tanh(F.max_pool2d(F.conv2d(h, c2w, c2b), 2))
    h = torch.tanh(F.conv2d(h, c3w, c3b))
    h = torch.tanh(F.linear(h.flatten(1), f1w, f1b))
    return F.linear(h, f2w, f2b)


_cnn_vmapped = torch.func.vmap(cnn_one)


def cnn_vmap(ws, x):
    return _cnn_vmapped(tuple(ws), x)


def cnn_loop(ws, x):
    return torch.stack([cnn_one([w[i] for w in ws], x[i]) for i in range(x.shape[0])])


CNN = {"grouped": cnn_grouped, "vmap": cnn_vmap, "loop": cnn_loop}


def distill(student, teacher, temperature=TEMPERATURE):
    """Per model [B]: KL(softmax(t / T) || softmax(s / T)) * T^2, mean over the images
    (F.kl_div(..., reduction="batchmean") * T^2 per model, stages/src/nn/distill.rs)."""
    log_q = F.log_softmax(student / temperature, dim=-1)
    p = F.softmax(teacher / temperature, dim=-1)
    return F.kl_div(log_q, p, reduction="none").sum(-1).mean(-1) * temperature ** 2


def ntxent(p, h, tau):
    s = F.normalize(p, dim=1) @ F.normalize(h, dim=1).T / tau
    target = torch.arange(p.shape[0])
    return 0.5 * (F.cross_entropy(s, target) + F.cross_entropy(s.T, target))


# ---------------------------------------------------------------- decoder outputs -> cnn-s weights

class PcaMap:
    """The per-tensor PCA of stages/src/weights/pca.rs (components = K, dimension_limit = 4, exact
    PCA in float64) with the per-coordinate normalisation; decoding normalised coefficients is the
    linear map of the module doc."""

    def __init__(self, train_flat, components):
        n = train_flat.shape[0]
        self.blocks, coefficients, at = [], [], 0
        for (_, shape), size in zip(PARAMS, SIZES):
            x = train_flat[:, at:at + size].double()
            at += size
            mean = x.mean(0)
            if size <= 4:  # mode `centre`: every element a coefficient
                v = torch.eye(size, dtype=torch.float64)
            else:  # mode `pca`: k = min(K, n - 1, size) components
                k = min(components, n - 1, size)
                v = torch.linalg.svd(x - mean, full_matrices=False).Vh[:k]
            self.blocks.append((shape, mean, v))
            coefficients.append((x - mean) @ v.T)
        c = torch.cat(coefficients, dim=1)
        self.c_mean, self.c_std = c.mean(0), c.std(0).clamp_min(1e-4)
        self.dim = c.shape[1]
        # Folded into one (A_p, b_p) per tensor: w_p = z_p A_p + b_p.
        self.maps, off = [], 0
        for shape, mean, v in self.blocks:
            k = v.shape[0]
            s, m = self.c_std[off:off + k], self.c_mean[off:off + k]
            self.maps.append((off, k, shape, (s[:, None] * v).float(), (mean + m @ v).float()))
            off += k

    def coefficients(self, flat):
        """Normalised coefficients [n, D] of flat weights [n, 2317]."""
        out, at = [], 0
        for (_, mean, v), size in zip(self.blocks, SIZES):
            out.append((flat[:, at:at + size].double() - mean) @ v.T)
            at += size
        return ((torch.cat(out, dim=1) - self.c_mean) / self.c_std).float()

    def weights(self, z):
        """Normalised coefficients [B, D] -> the ten cnn-s tensors [B, *shape]."""
        return [torch.addmm(b, z[:, off:off + k], a).reshape(z.shape[0], *shape) for off, k, shape, a, b in self.maps]


class TokenLayout:
    """stages/src/weights/tokens.rs for cnn-s: one token per output unit, [weights of the unit, bias,
    zero padding]; 41 tokens of width 201."""

    def __init__(self):
        self.layers, t = [], 0  # (first token, units, fan_in, weight shape)
        for _, wshape in PARAMS[0::2]:
            units = wshape[0]
            fan_in = int(torch.Size(wshape[1:]).numel())
            self.layers.append((t, units, fan_in, wshape))
            t += units
        self.tokens = t
        self.width = max(f for _, _, f, _ in self.layers) + 1
        self.mask = torch.zeros(self.tokens, self.width)
        self.layer_of = torch.zeros(self.tokens, dtype=torch.long)
        for l, (t0, u, f, _) in enumerate(self.layers):
            self.mask[t0:t0 + u, :f + 1] = 1.0
            self.layer_of[t0:t0 + u] = l

    def tokenise(self, flat):
        """[n, 2317] -> [n, 41, 201]."""
        ws = split_flat(flat)
        out = torch.zeros(flat.shape[0], self.tokens, self.width, dtype=flat.dtype)
        for l, (t0, u, f, _) in enumerate(self.layers):
            out[:, t0:t0 + u, :f] = ws[2 * l].reshape(flat.shape[0], u, f)
            out[:, t0:t0 + u, f] = ws[2 * l + 1]
        return out

    def weights(self, tokens):
        """[B, 41, 201] -> the ten cnn-s tensors [B, *shape] (padding entries unread)."""
        out, b = [], tokens.shape[0]
        for t0, u, f, wshape in self.layers:
            out.append(tokens[:, t0:t0 + u, :f].reshape(b, *wshape))
            out.append(tokens[:, t0:t0 + u, f])
        return out


class Normaliser:
    """Per entry minus the train mean, over the layer's std (transformer.rs `Normaliser`)."""

    def __init__(self, layout, train_flat):
        self.layout = layout
        x = layout.tokenise(train_flat.double())
        self.mean = x.mean(0)
        sq = ((x - self.mean) ** 2 * layout.mask).sum(0).sum(1)  # per token
        counts = layout.mask.sum(1).double() * x.shape[0]
        std = torch.zeros(len(layout.layers), dtype=torch.float64)
        for l in range(len(layout.layers)):
            rows = layout.layer_of == l
            std[l] = (sq[rows].sum() / counts[rows].sum()).sqrt().clamp_min(1e-6)
        self.scale = (layout.mask * std[layout.layer_of][:, None].float())
        self.mean = self.mean.float()

    def normalise(self, flat):
        x = self.layout.tokenise(flat)
        return (x - self.mean) / self.scale.clamp_min(1e-30) * self.layout.mask  # padding stays 0

    def weights(self, y):
        """Normalised tokens [B, 41, 201] -> the ten cnn-s tensors (de-normalise, detokenise)."""
        return self.layout.weights(y * self.scale + self.mean)


# ---------------------------------------------------------------- the codecs

def mlp(dims):
    layers = []
    for i, (a, b) in enumerate(zip(dims, dims[1:])):
        layers.append(nn.Linear(a, b))
        if i + 2 < len(dims):
            layers.append(nn.ELU())
    return nn.Sequential(*layers)


class Stack(nn.Module):
    """stages/src/layers.rs `Stack`: [B, T, in] -> [B, T, out]."""

    def __init__(self, tokens, inp, out, d=D_MODEL, heads=HEADS, layers=LAYERS):
        super().__init__()
        self.input = nn.Linear(inp, d)
        self.position = nn.Parameter(0.02 * torch.randn(tokens, d))
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(d, heads, 2 * d, dropout=0.0, activation="gelu", batch_first=True,
                                       norm_first=True)
            for _ in range(layers))
        self.ln = nn.LayerNorm(d)
        self.output = nn.Linear(d, out)

    def forward(self, x):
        h = self.input(x) + self.position
        for block in self.blocks:
            h = block(h)
        return self.output(self.ln(h))


class TokenAutoencoder(nn.Module):
    def __init__(self, layout):
        super().__init__()
        self.encoder = Stack(layout.tokens, layout.width, TOKEN_LATENT)
        self.decoder = Stack(layout.tokens, TOKEN_LATENT, layout.width)


# ---------------------------------------------------------------- the loop (stages/src/fit.rs)

def fit(params, batch_loss, val_loss, n, a, min_batch):
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-5)
    gen = torch.Generator().manual_seed(0)
    best_val, best = float("inf"), [p.detach().clone() for p in params]
    for _ in range(a.epochs):
        order = torch.randperm(n, generator=gen)
        for i in range(0, n, a.batch):
            rows = order[i:i + a.batch]
            if len(rows) < min_batch:
                continue
            loss, _value = batch_loss(rows)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            v = val_loss()
        if v < best_val:
            best_val, best = v, [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, b in zip(params, best):
            p.copy_(b)


class Scales:
    """MSE0 and distill0: the first batch's values (floored at 1e-12)."""

    def __init__(self):
        self.mse = self.behaviour = None

    def combined(self, mse, kl):
        if self.mse is None:
            self.mse, self.behaviour = max(mse.item(), 1e-12), max(kl.item(), 1e-12)
        return BETA * mse / self.mse + (1 - BETA) * kl / self.behaviour


def run_mlp(a, data, cnn):
    tr, va, images, teacher, pca = data
    n = tr.shape[0]
    start = time.perf_counter()
    torch.manual_seed(0)
    enc, dec = mlp([pca.dim, HIDDEN, LATENT]), mlp([LATENT, HIDDEN, pca.dim])
    params = list(enc.parameters()) + list(dec.parameters())
    scales = Scales()

    def losses(x, rows_images, rows_teacher):
        y = dec(enc(x))
        mse = F.mse_loss(y, x)
        kl = distill(cnn(pca.weights(y), rows_images), rows_teacher).mean()
        return scales.combined(mse, kl)

    def batch_loss(rows):
        loss = losses(tr[rows], images[rows], teacher[rows])
        return loss, loss.item()

    def val_loss():
        return losses(va, images[n:], teacher[n:]).item()

    fit(params, batch_loss, val_loss, n, a, min_batch=1)
    return time.perf_counter() - start


def run_transformer(a, data, cnn):
    flat, images, teacher = data
    n = a.models
    start = time.perf_counter()
    layout = TokenLayout()
    norm = Normaliser(layout, flat[:n])
    tr, va = norm.normalise(flat[:n]), norm.normalise(flat[n:])
    mask, mask_sum = layout.mask, float(layout.mask.sum())
    torch.manual_seed(0)
    model = TokenAutoencoder(layout)
    params = list(model.parameters())
    scales = Scales()
    gen = torch.Generator().manual_seed(0x0a067e27)

    def masked_mse(y, x):
        return ((y - x) ** 2 * mask).sum() / (mask_sum * x.shape[0])

    def batch_loss(rows):
        b = len(rows)
        x = torch.cat([tr[rows], tr[rows]])  # views a then b; the clean tokens are the target
        x_in = x + NOISE * torch.randn(x.shape, generator=gen) * mask
        z = model.encoder(x_in)
        y = model.decoder(z)
        mse = masked_mse(y, x)
        kl = distill(cnn(norm.weights(y[:b]), images[rows]), teacher[rows]).mean()
        loss = scales.combined(mse, kl)
        if CONTRASTIVE_WEIGHT > 0 and b >= 2:
            pooled = z.mean(1)
            loss = loss + CONTRASTIVE_WEIGHT * ntxent(pooled[:b], pooled[b:], TAU)
        return loss, loss.item()

    def val_loss():
        y = model.decoder(model.encoder(va))
        kl = distill(cnn(norm.weights(y), images[n:]), teacher[n:]).mean()
        return scales.combined(masked_mse(y, va), kl).item()

    fit(params, batch_loss, val_loss, n, a, min_batch=2 if CONTRASTIVE_WEIGHT > 0 else 1)
    return time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--architecture", choices=["mlp", "transformer"], default="mlp")
    ap.add_argument("--models", type=int, default=140)
    ap.add_argument("--val", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--probes", type=int, default=64)
    ap.add_argument("--components", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cnn", choices=sorted(CNN), default="loop",
                    help="how one batch's cnn-s models run (see the module doc)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cnn = CNN[a.cnn]
    flat, images, teacher, _labels = zoo(a.models + a.val, a.probes, cnn)
    if a.architecture == "mlp":
        pca = PcaMap(flat[:a.models], a.components)
        data = (pca.coefficients(flat[:a.models]), pca.coefficients(flat[a.models:]), images, teacher, pca)
        extra = {"coefficient_dim": pca.dim}
        runner = run_mlp
    else:
        data = (flat, images, teacher)
        extra = {"tokens": TokenLayout().tokens, "token_width": TokenLayout().width}
        runner = run_transformer
    times = sorted(runner(a, data, cnn) for _ in range(a.repeats))
    median = statistics.median(times)
    rows, imgs = a.models * a.epochs, a.models * a.epochs * a.probes
    print(json.dumps({
        "bench": "autoencoder-torch", "torch": torch.__version__, "threads": a.threads,
        "architecture": a.architecture, "cnn": a.cnn, "models": a.models, "val": a.val, "epochs": a.epochs,
        "batch": a.batch, "probes": a.probes, "components": a.components, "repeats": a.repeats, **extra,
        "best_s": times[0], "median_s": median,
        "models_per_s": rows / median, "models_per_s_per_thread": rows / median / a.threads,
        "images_per_s": imgs / median, "images_per_s_per_thread": imgs / median / a.threads,
    }))


if __name__ == "__main__":
    main()
