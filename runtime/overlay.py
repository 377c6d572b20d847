"""Draw masks and prompts over an image, with Pillow only."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

MASK_COLOUR = np.array([30, 144, 255], np.float32)  # segment_anything's demo blue
FOREGROUND, BACKGROUND, BOX = (40, 220, 60), (230, 40, 40), (255, 200, 0)


def _edge(mask: np.ndarray) -> np.ndarray:
    inner = mask.copy()
    inner[1:] &= mask[:-1]
    inner[:-1] &= mask[1:]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return mask & ~inner


def draw_overlay(image: np.ndarray, mask: np.ndarray, points=None, labels=None, box=None,
                 caption: str | None = None) -> Image.Image:
    """uint8 RGB image + bool mask [H, W] -> picture with the mask tinted and outlined."""
    picture = image.astype(np.float32)
    picture[mask] = 0.45 * picture[mask] + 0.55 * MASK_COLOUR
    picture[_edge(mask)] = 255.0
    result = Image.fromarray(picture.round().astype(np.uint8))
    draw = ImageDraw.Draw(result)
    radius = max(3, round(min(image.shape[:2]) / 80))
    if box is not None:
        draw.rectangle([float(v) for v in box], outline=BOX, width=max(2, radius // 2))
    for (x, y), label in zip(points if points is not None else [], labels if labels is not None else []):
        colour = FOREGROUND if label == 1 else BACKGROUND
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=colour, outline=(255, 255, 255))
    if caption:
        draw.text((6, 4), caption, fill=(255, 255, 255), stroke_width=2, stroke_fill=(0, 0, 0))
    return result
