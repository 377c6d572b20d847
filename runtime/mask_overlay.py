"""Draw many masks over an image, one colour each (segment everything's picture), with numpy and Pillow."""

from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image

from .overlay import _edge as mask_edge  # the outline runtime.predict's overlay draws

GOLDEN_RATIO = (5 ** 0.5 - 1) / 2  # hue steps of it never repeat and keep neighbours apart
TINT = 0.55  # the mask colour's share of a tinted pixel


def mask_colour(index: int) -> np.ndarray:
    """A bright, saturated colour for the index-th mask, the same every run."""
    hue = (0.6 + index * GOLDEN_RATIO) % 1.0
    return np.array(colorsys.hsv_to_rgb(hue, 0.75, 1.0), np.float32) * 255


def draw_masks(image: np.ndarray, masks) -> Image.Image:
    """uint8 RGB image + an iterable of bool [H, W] masks -> the picture with each mask tinted in its
    own colour and outlined; later masks are drawn over earlier ones (give the largest first)."""
    picture = image.astype(np.float32)
    for index, mask in enumerate(masks):
        if mask.shape != image.shape[:2]:
            raise ValueError(f"mask {index} is {mask.shape[1]} x {mask.shape[0]} but the image "
                             f"{image.shape[1]} x {image.shape[0]}; draw each mask on the image it was made for")
        picture[mask] = (1 - TINT) * picture[mask] + TINT * mask_colour(index)
        picture[mask_edge(mask)] = 255.0
    return Image.fromarray(picture.round().astype(np.uint8))
