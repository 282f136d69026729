#!/usr/bin/env bash
# GPU check, three parts, on CUDA device 0 in builds with the `cuda` feature:
# 1. ResNet-18 (stages/src/resnet): the `resnet18_gpu_check` example compares one training step (loss,
#    logits, 8 gradient norms, the loss after one SGD-momentum step) with the CPU, trains 20 Adam steps
#    on the GPU and times steps at batch 32 (28×28 and 224×224).
# 2. The learned stages' networks (stages/src/gpu_tests.rs: the behavioural term's cnn-s graph, the MLP
#    autoencoder, the token transformer, the aligner, the generator, the flow): outputs and gradients on
#    the GPU against the CPU, within the float tolerance each test states.
# 3. The tiny pipeline (tests/pipelines/tiny-golden.toml) twice, on the CPU and with `device = "cuda"` on
#    every learned stage, each stage's time and metrics side by side (the GPU run must succeed; its
#    figures differ from the CPU's by training on other float orders, and are printed, not compared).
# Exit status: 0 passed, 1 a comparison or the GPU pipeline failed, 2 no GPU / no CUDA.
#
# Needs: an NVIDIA GPU with its driver, the CUDA toolkit (nvcc; candle-kernels compiles its PTX at
# build time; CUDA 12 or 13, cudarc 0.19), a Rust toolchain and the crates (online, or vendored with
# `cargo vendor` for an offline machine: set CARGO_NET_OFFLINE=true).
#
#   scripts/gpu-check.sh [side]        (side of the synthetic grey images, default 28)
#
# CARGO_TARGET_DIR is honoured; CUDA_COMPUTE_CAP (e.g. 90 for H100/H200) skips candle's detection.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu-check: no NVIDIA GPU visible (nvidia-smi); nothing to check" >&2
    exit 2
fi
nvidia-smi -L
if ! command -v nvcc >/dev/null 2>&1; then
    for d in /usr/local/cuda/bin /usr/local/cuda-*/bin; do
        if [ -x "$d/nvcc" ]; then export PATH="$d:$PATH"; break; fi
    done
fi
if ! command -v nvcc >/dev/null 2>&1; then
    echo "gpu-check: nvcc not found (install the CUDA toolkit or put it on PATH)" >&2
    exit 2
fi
nvcc --version | tail -1

start=$(date +%s)
cargo build --release -p wspace-stages --features cuda --example resnet18_gpu_check
echo "gpu-check: build took $(( $(date +%s) - start )) s"
target="${CARGO_TARGET_DIR:-target}"
"$target/release/examples/resnet18_gpu_check" gpu "${1:-28}" || exit 1

echo "gpu-check: the learned stages' networks, GPU against CPU"
cargo test --release -p wspace-stages --features cuda --lib gpu_ || exit 1

echo "gpu-check: the tiny pipeline on the CPU, then with every learned stage on the GPU"
cargo build --release --features cuda
work=$(mktemp -d)
sed "s#FIXTURES#$PWD/stages/tests/fixtures/zoos#" tests/pipelines/tiny-golden.toml > "$work/tiny.toml"
sets=()
for stage in dataset_embed autoencoder tokens reconstruction align generator sample sample_kde flow sample_flow sample_flow_train; do
    sets+=(--set "$stage.device=cuda")
done
wspace="$PWD/$target/release/wspace"
[ -x "$wspace" ] || wspace="$target/release/wspace"
(cd "$work" && "$wspace" run tiny.toml --cache cpu-cache --format json > cpu.json) || exit 1
(cd "$work" && "$wspace" run tiny.toml --cache gpu-cache "${sets[@]}" --format json > gpu.json) || exit 1
python3 - "$work" <<'PY'
import json, pathlib, sys
work = pathlib.Path(sys.argv[1])
def stages(name):
    v = json.loads((work / f"{name}.json").read_text())["variants"][0]["stages"]
    return {s["name"]: s for s in v}
cpu, gpu = stages("cpu"), stages("gpu")
for name, s in cpu.items():
    g = gpu[name]
    def metrics(cache, st):
        f = work / cache / "entries" / st["key"] / "out" / "metrics.json"
        return json.loads(f.read_text()) if f.is_file() else {}
    mc, mg = metrics("cpu-cache", s), metrics("gpu-cache", g)
    numeric = [k for k, v in mc.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    figures = [k for k in numeric if any(w in k for w in ("loss", "acc", "agreement", "mse", "distill"))]
    keys = (figures or numeric)[:4]
    shown = ", ".join(f"{k} {mc[k]:.4g} / {mg.get(k, float('nan')):.4g}" for k in keys)
    print(f"{name:20s} {s.get('seconds', 0):7.2f} s CPU {g.get('seconds', 0):7.2f} s GPU  {shown}")
PY
