"""The unlabelled images SlimSAM distils on: a folder of the user's, or synthetic shapes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from runtime.images import load_image
from runtime.geometry import geometry

from ..architectures import SamConfig
from ..demo.shapes import make_sample

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


def load_folder(folder: Path) -> list[np.ndarray]:
    """Every image in `folder` (not recursive), as uint8 RGB arrays."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"image folder {folder} {'is a file' if folder.exists() else 'does not exist'}; "
                         "pass a folder of images")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}")
    return [load_image(p) for p in files]


def synthetic_images(count: int, seed: int = 7) -> list[np.ndarray]:
    """Shapes drawn from seeds the demo model's training and held-out sets do not use."""
    return [make_sample(np.random.default_rng([seed, 10_000_000 + i])).image for i in range(count)]


def preprocess_images(arrays, config: SamConfig) -> list[torch.Tensor]:
    """uint8 RGB arrays -> [1, 3, S, S] tensors exactly as the runtime prepares them (the family's
    resize rule: SAM 1 pads the longest side, SAM 2 stretches to a square)."""
    from ..families import family_of

    rule = geometry(family_of(config).manifest(config)["preprocessing"].get("resize_rule"))
    return [torch.from_numpy(np.ascontiguousarray(rule.pixels(a, config.img_size, config.pixel_mean,
                                                              config.pixel_std))) for a in arrays]
