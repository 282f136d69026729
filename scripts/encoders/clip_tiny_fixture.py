#!/usr/bin/env python3
"""Write the tiny-CLIP test fixture for wspace's CLIP ViT-B/32 vision tower (run once; never in CI).

Builds a randomly initialised Hugging Face `transformers` CLIPModel with a tiny config (vision: 32x32
images, 8x8 patches, hidden 32, 4 heads, 2 layers, MLP 64, quick_gelu; projection 16; a tiny text tower
so the checkpoint has the real `openai/clip-vit-base-patch32` layout), saves it with `save_pretrained`
(`model.safetensors`, `config.json`) into `stages/tests/fixtures/clip/tiny/`, and writes
`reference.json` there: for two already-normalised input images

    pixel_values[b, c, h, w] = sin(0.05 * (h * W + w) * (c + 1) + 0.7 * b)      (float32, NCHW)

the outputs of `CLIPModel.get_image_features` (the projected pooled output; `image_features`, [2, 16])
and the vision tower's unprojected `pooler_output` (`pooled`, [2, 32]).

Usage:  pip install torch transformers safetensors numpy
        python scripts/encoders/clip_tiny_fixture.py
Produced with torch 2.15.0, transformers 5.24.0, seed 0.
"""
import json
import os

import numpy as np
import torch
import transformers
from transformers import CLIPConfig, CLIPModel

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(REPO, "stages", "tests", "fixtures", "clip", "tiny")


def main():
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=8, projection_dim=16),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8, num_channels=3, hidden_act="quick_gelu",
                           projection_dim=16),
        projection_dim=16,
    )
    model = CLIPModel(config).eval()
    # Random init leaves LayerNorms at (1, 0) and biases near 0; perturb every tensor so the test
    # exercises all of them.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    os.makedirs(OUT, exist_ok=True)
    model.save_pretrained(OUT, safe_serialization=True)

    b, c, h, w = 2, 3, 32, 32
    bb, cc, hh, ww = np.meshgrid(np.arange(b), np.arange(c), np.arange(h), np.arange(w), indexing="ij")
    x = np.sin(0.05 * (hh * w + ww) * (cc + 1) + 0.7 * bb).astype(np.float32)
    with torch.no_grad():
        px = torch.from_numpy(x)
        feats = model.get_image_features(pixel_values=px)
        feats = feats.pooler_output if hasattr(feats, "pooler_output") else feats
        pooled = model.vision_model(pixel_values=px).pooler_output
    ref = {
        "produced_by": f"scripts/encoders/clip_tiny_fixture.py (torch {torch.__version__}, "
                       f"transformers {transformers.__version__}, seed 0)",
        "input": "pixel_values[b, c, h, w] = sin(0.05 * (h * W + w) * (c + 1) + 0.7 * b), NCHW float32",
        "batch": b, "height": h, "width": w,
        "image_features": feats.tolist(),
        "pooled": pooled.tolist(),
    }
    with open(os.path.join(OUT, "reference.json"), "w") as f:
        json.dump(ref, f, indent=1)
    for name in sorted(os.listdir(OUT)):
        print(name, os.path.getsize(os.path.join(OUT, name)))


if __name__ == "__main__":
    main()
