"""SAM's pre-processing in numpy and Pillow, step for step as segment_anything does it.

segment_anything resizes with torchvision's `to_pil_image` + `resize`, which for a PIL
image is Pillow's bilinear resize; doing the same here keeps torch out of the runtime
and gives bit-identical pixels.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from .images import ImageError


def resized_shape(height: int, width: int, long_side: int) -> tuple[int, int]:
    """(h, w) after scaling the longer side to `long_side` (segment_anything's rounding)."""
    scale = long_side * 1.0 / max(height, width)
    new_hw = int(height * scale + 0.5), int(width * scale + 0.5)
    if min(new_hw) < 1:  # segment_anything fails there too, deep inside the resize
        short = math.ceil(max(height, width) / (2 * long_side))  # the least that rounds to 1 px,
        short += int(short * scale + 0.5) < 1  # unless float rounding at the edge needs one more
        raise ImageError(f"a {width}x{height} image is too elongated for the model's {long_side}-px "
                         f"input: its short side would shrink to 0 px; crop it, or pad its short side "
                         f"to at least {short} px (e.g. with np.pad)")
    return new_hw


def resize_longest_side(image: np.ndarray, long_side: int) -> np.ndarray:
    height, width = resized_shape(image.shape[0], image.shape[1], long_side)
    return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


def preprocess(image: np.ndarray, img_size: int, pixel_mean, pixel_std) -> np.ndarray:
    """uint8 RGB [H, W, 3] -> normalised, zero-padded float32 [1, 3, S, S]."""
    resized = resize_longest_side(image, img_size).astype(np.float32)
    normalised = (resized - np.asarray(pixel_mean, np.float32)) / np.asarray(pixel_std, np.float32)
    padded = np.zeros((1, 3, img_size, img_size), np.float32)
    height, width = normalised.shape[:2]
    padded[0, :, :height, :width] = normalised.transpose(2, 0, 1)
    return padded


def scale_coords(coords: np.ndarray, original_hw: tuple[int, int], img_size: int) -> np.ndarray:
    """XY pixel coordinates of the original image -> the model's resized frame."""
    height, width = original_hw
    new_h, new_w = resized_shape(height, width, img_size)
    # float64 like segment_anything, rounded to float32 once at the end.
    scaled = np.array(coords, dtype=np.float64, copy=True)
    scaled[..., 0] *= new_w / width
    scaled[..., 1] *= new_h / height
    return scaled.astype(np.float32)
