#!/usr/bin/env python3
"""Independent PyTorch reference for the distillation loss and its weight gradient (stages/src/nn/distill.rs).

Writes stages/tests/fixtures/distill_reference.json, which `nn::distill` tests compare against:
the loss  T^2 * F.kl_div(F.log_softmax(s / T, 1), F.softmax(t / T, 1), reduction="batchmean")
and its gradient with respect to every cnn-s parameter, where
  * the student is the cnn-s of scripts/reference/cnn_s_reference.py with its formula weights,
  * the images are that script's 4 formula images,
  * the teacher logits are  t[n][k] = 3 sin(1.3 n + 0.7 k + 0.2)  (n = image, k = class),
  * T = 2.

Run:  /work/pyref/bin/python scripts/weights/distill_reference.py   (torch 2.x, CPU, float32)
"""
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "reference"))
from cnn_s_reference import CnnS, f32s, inputs, set_weights, write_fixture  # noqa: E402

torch.set_num_threads(1)
T = 2.0


def main():
    out_path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(__file__), "..", "..", "stages", "tests", "fixtures", "distill_reference.json")
    model = CnnS()
    set_weights(model)
    x = inputs()
    teacher = torch.tensor([[3.0 * math.sin(1.3 * n + 0.7 * k + 0.2) for k in range(3)] for n in range(x.shape[0])],
                           dtype=torch.float64).to(torch.float32)
    s = model(x)
    loss = F.kl_div(F.log_softmax(s / T, 1), F.softmax(teacher / T, 1), reduction="batchmean") * T * T
    loss.backward()
    grads = [v for p in model.parameters() for v in p.grad.flatten().tolist()]
    fixture = {
        "produced_by": "scripts/weights/distill_reference.py with torch " + torch.__version__
                       + " (CPU, float32, 1 thread); formulas in the script's docstring",
        "temperature": T,
        "teacher": f32s(teacher.flatten().tolist()),
        "loss": loss.item(),
        "grads": f32s(grads),
    }
    write_fixture(out_path, fixture, loss.item())


if __name__ == "__main__":
    main()
