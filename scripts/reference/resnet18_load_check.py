#!/usr/bin/env python3
"""Loads a wspace ResNet-18 (zoo format: every state_dict entry as F32 safetensors) into
torchvision.models.resnet18(num_classes=3) with load_state_dict (strict) and compares its eval-mode
logits with the ones wspace computed.

  cargo run --release -p wspace-stages --example resnet18_gpu_check -- export /tmp/rn
  /work/pyref/bin/python scripts/reference/resnet18_load_check.py /tmp/rn
"""
import sys

import torch
import torchvision
from safetensors.torch import load_file

d = sys.argv[1] if len(sys.argv) > 1 else "resnet18-export"
model = torchvision.models.resnet18(num_classes=3)
state = load_file(f"{d}/model.safetensors")
result = model.load_state_dict(state, strict=True)
model.eval()
check = load_file(f"{d}/check.safetensors")
with torch.no_grad():
    z = model(check["input"])
err = (z - check["logits"]).abs().max().item()
nbt = int(model.state_dict()["bn1.num_batches_tracked"].item())
print(f"load_state_dict: {result}; bn1.num_batches_tracked = {nbt}; max |logits torch - wspace| = {err:.2e}")
sys.exit(0 if err < 1e-4 else 1)
