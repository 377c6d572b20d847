"""A SAM 2.1 test model whose tracking depends on its memory, for video parity tests.

Seeded weights (compress/families/sam2.py's perturb, 0.1 of each tensor's spread) give a model whose
masks barely depend on memory: a dropped memory frame moved its logits by 1e-3, a wrong temporal position
by 8e-5, a pointer one frame off by 4e-6, too close to float32's 1e-6 for a test to tell them apart.
Larger noise (one spread) and a sharper cross-attention to memory (queries and keys x3) make the
same bugs move logits by 2e-2, 9e-3 and 1e-3 (runtime/video_parity.py's thresholds).
"""

from __future__ import annotations

from pathlib import Path

import torch

from compress.checkpoint import save_checkpoint
from compress.families import family_of_type

MODEL_TYPE = "sam2.1_hiera_t_256"
NOISE = 1.0
SHARPER_ATTENTION = 3.0


def memory_sensitive_model(seed: int = 0):
    model = family_of_type(MODEL_TYPE).seeded(MODEL_TYPE, seed)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for parameter in model.parameters():
            spread = float(parameter.std()) if parameter.numel() > 1 else 0.0
            noise = torch.randn(parameter.shape, generator=generator)
            parameter.add_(noise * (NOISE * spread if spread > 0 else 0.2 * NOISE))
        for layer in model.memory_attention.layers:
            layer.cross_attn_image.q_proj.weight.mul_(SHARPER_ATTENTION)
            layer.cross_attn_image.k_proj.weight.mul_(SHARPER_ATTENTION)
    return model


def memory_sensitive_checkpoint(folder: Path) -> Path:
    path = Path(folder) / "sam2.1_hiera_t_256_memory_sensitive.safetensors"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(memory_sensitive_model(), path)
    return path
