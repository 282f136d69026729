"""Latent refinement in PyTorch, with the shapes of `wspace bench refine`
(stages/src/weights/bench_codecs.rs, stages/src/weights/behaviour.rs `refine`): the peer figure for the
README's benchmark table. Never run by CI.

    /work/venv-ref/bin/python scripts/reference/bench_refine_torch.py [--codec mlp|transformer] \
        [--threads 1] [--models 32] [--steps 50] [--probes 64] [--label-weight 0]

Not timed: the synthetic zoo of N models (bench_autoencoder_torch.py's, as stages/src/synthetic.rs:
cnn-s weights, `--probes` uniform images each, the model's own logits as the teacher, labels i mod 3),
an untrained codec (seed 0) and each model's latent under it:
- `mlp`: the per-tensor PCA of `--components` components fitted on the N models, the normalised
  coefficients (D = 196 at the defaults: 31 components per large tensor with 32 models), the MLP
  autoencoder D -> 256 -> ELU -> 32 and back; latent 32 values; decoding: the decoder, then the
  fixed linear map coefficients -> cnn-s weights.
- `transformer`: the token autoencoder (41 tokens of width 201, d_model 64, 4 heads, 2 pre-norm
  layers, 32 latent values per token; bench_autoencoder_torch.py's `Stack`), the normaliser fitted on
  the N models; latent 41 x 32 values; decoding: the decoder stack on [1, 41, 32], then
  de-normalising and detokenising to cnn-s weights.

Timed: for each model, Adam (lr 0.01, betas 0.9/0.999, eps 1e-8) on its latent alone, `--steps`
steps minimising (1 - lambda) * distill + lambda * CE on its probes (distill: KL(softmax(teacher / 2)
|| softmax(student / 2)) * 2^2, mean over the images; CE at temperature 1 against the labels, computed
only when lambda > 0), the student the cnn-s decoded from the latent; the loss is measured before each
step and once more after the last (steps + 1 forward passes through decoder and cnn-s, `steps`
backward passes), the best latent kept. The decoder is frozen (requires_grad False, so autograd forms
only the gradient with respect to the latent; candle's backward on the Rust side also forms the
decoder weights' gradients, which it then drops).

Threads: the Rust benchmark refines the models in parallel, one model per worker thread, each model's
steps sequential. Here the models run one after another and `--threads` sets PyTorch's intra-op
threads (torch.set_num_threads), which split each op of one model's step.

Prints one JSON line: best and median wall time of `--repeats` runs, models_per_s = models / median
and images_per_s = models * steps * probes / median, each also per thread.
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_autoencoder_torch import (  # noqa: E402
    CNN, HIDDEN, LATENT, TEMPERATURE, Normaliser, PcaMap, TokenAutoencoder, TokenLayout, distill, mlp, zoo,
)


def objective(student, teacher, labels, label_weight):
    """(1 - lambda) * distill + lambda * CE of one model (as stages/src/nn/distill.rs)."""
    kl = distill(student, teacher, TEMPERATURE).mean()
    if label_weight == 0:
        return kl
    ce = F.cross_entropy(student.reshape(-1, student.shape[-1]), labels.reshape(-1))
    return (1 - label_weight) * kl + label_weight * ce


def refine(decode, latent, images, teacher, labels, a, cnn):
    h = latent.clone().requires_grad_(True)
    opt = torch.optim.Adam([h], lr=0.01)
    best = (float("inf"), None)
    for step in range(a.steps + 1):
        last = step == a.steps
        with torch.set_grad_enabled(not last):
            loss = objective(cnn(decode(h), images), teacher, labels, a.label_weight)
        value = loss.item()
        if value < best[0]:
            best = (value, h.detach().clone())
        if last:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--codec", choices=["mlp", "transformer"], default="transformer")
    ap.add_argument("--models", type=int, default=32)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--probes", type=int, default=64)
    ap.add_argument("--label-weight", type=float, default=0.0)
    ap.add_argument("--components", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cnn", choices=sorted(CNN), default="loop",
                    help="bench_autoencoder_torch.py's batched cnn-s; one model here, so each is the plain network")
    a = ap.parse_args()
    if not 0.0 <= a.label_weight <= 1.0:
        ap.error("--label-weight: expected a number in [0, 1]")
    torch.set_num_threads(a.threads)
    cnn = CNN[a.cnn]
    flat, images, teacher, labels = zoo(a.models, a.probes, cnn)
    torch.manual_seed(0)
    if a.codec == "mlp":
        pca = PcaMap(flat, a.components)
        enc, dec = mlp([pca.dim, HIDDEN, LATENT]), mlp([LATENT, HIDDEN, pca.dim])
        dec.requires_grad_(False)
        with torch.no_grad():
            latents = enc(pca.coefficients(flat))  # [N, 32]

        def decode(h):
            return pca.weights(dec(h))
        extra = {"coefficient_dim": pca.dim, "latent_dim": LATENT}
    else:
        layout = TokenLayout()
        norm = Normaliser(layout, flat)
        model = TokenAutoencoder(layout)
        model.requires_grad_(False)
        with torch.no_grad():
            latents = model.encoder(norm.normalise(flat))  # [N, 41, 32]

        def decode(h):
            return norm.weights(model.decoder(h))
        extra = {"tokens": layout.tokens, "token_width": layout.width, "latent_dim": latents[0].numel()}

    def run():
        start = time.perf_counter()
        for m in range(a.models):
            rows = slice(m, m + 1)
            refine(decode, latents[rows], images[rows], teacher[rows], labels[rows], a, cnn)
        return time.perf_counter() - start

    times = sorted(run() for _ in range(a.repeats))
    median = statistics.median(times)
    imgs = a.models * a.steps * a.probes
    print(json.dumps({
        "bench": "refine-torch", "torch": torch.__version__, "threads": a.threads, "codec": a.codec, "cnn": a.cnn,
        "models": a.models, "steps": a.steps, "probes": a.probes, "label_weight": a.label_weight,
        "components": a.components, "repeats": a.repeats, **extra,
        "best_s": times[0], "median_s": median,
        "models_per_s": a.models / median, "models_per_s_per_thread": a.models / median / a.threads,
        "images_per_s": imgs / median, "images_per_s_per_thread": imgs / median / a.threads,
    }))


if __name__ == "__main__":
    main()
