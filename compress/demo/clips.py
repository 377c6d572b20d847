"""Synthetic video clips of moving shapes, fully seeded: what video parity and the tracking tests run on.

A disc, a rectangle and a triangle cross a textured background on straight paths; the rectangle passes
behind the disc half-way (an occlusion the tracker's object score sees). Frames are written as
numbered JPEG files, the folder layout SAM2VideoPredictor reads (00000.jpg, 00001.jpg, ...).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image


def _texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A smooth coloured background with grain: gradients and a few blobs, not flat (flat hides bugs)."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(40, 200, size=3).astype(np.float32)
    slope = rng.uniform(-0.4, 0.4, size=(2, 3)).astype(np.float32)
    image = base + ys[..., None] * slope[0] + xs[..., None] * slope[1]
    for _ in range(4):
        cy, cx, radius = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(8, 30)
        blob = np.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * radius**2))
        image += blob[..., None] * rng.uniform(-60, 60, size=3).astype(np.float32)
    return image + rng.normal(0, 6, size=image.shape).astype(np.float32)


def moving_shapes(num_frames: int = 18, height: int = 96, width: int = 128, seed: int = 0) -> np.ndarray:
    """uint8 RGB frames [T, H, W, 3]."""
    rng = np.random.default_rng([11, seed])
    background = _texture(rng, height, width)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    colours = rng.uniform(0, 255, size=(3, 3)).astype(np.float32)
    frames = []
    for t in range(num_frames):
        f = t / max(num_frames - 1, 1)
        image = background.copy()
        # the rectangle first: the disc passes over it
        top, left = 0.2 * height + 0.3 * height * f, 0.1 * width + 0.6 * width * f
        rect = (ys >= top) & (ys < top + 0.25 * height) & (xs >= left) & (xs < left + 0.2 * width)
        image[rect] = colours[0]
        cy, cx, radius = 0.5 * height, 0.8 * width - 0.6 * width * f, 0.15 * min(height, width)
        image[(ys - cy) ** 2 + (xs - cx) ** 2 <= radius**2] = colours[1]
        ty, tx, side = 0.85 * height - 0.2 * height * f, 0.3 * width + 0.4 * width * f, 0.18 * min(height, width)
        triangle = (ys <= ty) & (ys >= ty - side) & (np.abs(xs - tx) <= (ys - (ty - side)) * 0.6)
        image[triangle] = colours[2]
        frames.append(np.clip(image, 0, 255).astype(np.uint8))
    return np.stack(frames)


def write_jpeg_folder(frames: np.ndarray, folder, quality: int = 95) -> Path:
    """frames [T, H, W, 3] as folder/00000.jpg ..., each written under a temporary name, then renamed."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for index, frame in enumerate(frames):
        path = folder / f"{index:05d}.jpg"
        partial = folder / f".{index:05d}.jpg.partial"
        Image.fromarray(frame).save(partial, format="JPEG", quality=quality)
        os.replace(partial, path)
    return folder
