#!/usr/bin/env bash
# GPU check of the ResNet-18 (stages/src/resnet): builds the `resnet18_gpu_check` example with the
# `cuda` feature, then on CUDA device 0 compares one training step (loss, logits, 8 gradient norms,
# the loss after one SGD-momentum step) with the CPU, trains 20 Adam steps on the GPU and times steps
# at batch 32 (28×28 and 224×224). Exit status: 0 passed, 1 a comparison failed, 2 no GPU / no CUDA.
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
"$target/release/examples/resnet18_gpu_check" gpu "${1:-28}"
