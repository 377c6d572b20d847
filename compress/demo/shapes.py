"""Synthetic images of simple shapes with exact masks and prompts, fully seeded.

Each shape is drawn alone by `skimage.draw.random_shapes` (so its mask is exact even
where bounding boxes overlap), then pasted onto a coloured, noisy background if it
does not touch a shape already placed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import distance_transform_edt
from skimage.draw import random_shapes

IMAGE_SIZE = 256
HELD_OUT_SEED = 1_000_003  # training draws seeds from [0, 1e6); the held-out set never does
BACKGROUND = 255  # random_shapes paints the empty canvas white


@dataclass
class ShapeSample:
    image: np.ndarray  # uint8 [H, W, 3]
    masks: list[np.ndarray]  # bool [H, W], one per shape


def make_sample(rng: np.random.Generator, size: int = IMAGE_SIZE, max_shapes: int = 4) -> ShapeSample:
    background = rng.integers(0, 256, size=3)
    image = np.empty((size, size, 3), np.float32)
    image[:] = background
    filled = np.zeros((size, size), bool)
    masks = []
    for _ in range(int(rng.integers(1, max_shapes + 1))):
        canvas, _ = random_shapes(
            (size, size), max_shapes=1, min_shapes=1, min_size=24, max_size=size // 2,
            rng=rng, intensity_range=((0, 254),),
        )
        mask = (canvas != BACKGROUND).any(axis=-1)
        colour = canvas[mask][0].astype(np.float32) if mask.any() else None
        if colour is None or (mask & filled).any() or mask.sum() < 64:
            continue
        if np.abs(colour - background).max() < 40:  # keep every shape visible
            continue
        image[mask] = colour
        filled |= mask
        masks.append(mask)
    if not masks:  # extremely rare; a fresh draw keeps the sample valid
        return make_sample(rng, size, max_shapes)
    image += rng.normal(0.0, 6.0, size=image.shape)
    return ShapeSample(np.clip(image, 0, 255).astype(np.uint8), masks)


def mask_box(mask: np.ndarray) -> np.ndarray:
    """XYXY box around a mask, in pixel units (x1, y1 exclusive)."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], np.float32)


def interior_point(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random point of the mask at least 3 px from its edge when the mask allows it."""
    depth = distance_transform_edt(mask)
    candidates = np.argwhere(depth >= min(3.0, depth.max()))
    row, col = candidates[rng.integers(len(candidates))]
    return np.array([col + 0.5, row + 0.5], np.float32)  # XY, pixel centre


@dataclass
class EvalCase:
    image: np.ndarray
    mask: np.ndarray
    point: np.ndarray  # [2] XY
    box: np.ndarray  # [4] XYXY


def held_out_cases(count: int = 200, seed: int = HELD_OUT_SEED) -> list[EvalCase]:
    """The fixed evaluation set: one target shape per image, with a point and a box."""
    cases = []
    for index in range(count):
        rng = np.random.default_rng([seed, index])
        sample = make_sample(rng)
        mask = sample.masks[int(rng.integers(len(sample.masks)))]
        cases.append(EvalCase(sample.image, mask, interior_point(mask, rng), mask_box(mask)))
    return cases
