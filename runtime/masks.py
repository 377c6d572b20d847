"""Low-res mask logits -> logits at the image's size, in numpy.

The official decoder does this in its graph (segment_anything's
`SamOnnxModel.mask_postprocessing`); TensorRT engines and the batch decoder end at the
low-res masks (export/batch_decoder.py says why), so the runtime does it here, with the
same three steps: upscale to the padded input square, crop the padding, resize to the
image. Each step is linear along each axis, so the three compose into one matrix per
axis, and the whole post-processing is `rows @ logits @ columns.T`: two small BLAS
products instead of a float image of the padded square per mask (about 10x faster for
SAM's 256 -> 1024 -> photo; tests/test_tensorrt.py checks it against torch).
"""

from __future__ import annotations

import functools

import numpy as np


def bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
    """[out_size, in_size] float64: torch's bilinear resize with align_corners=False, as a matrix."""
    scale = in_size / out_size
    source = np.maximum((np.arange(out_size, dtype=np.float32) + 0.5) * np.float32(scale) - 0.5, 0)
    low = np.minimum(np.floor(source).astype(np.int64), in_size - 1)
    high = np.minimum(low + 1, in_size - 1)
    fraction = (source - low).astype(np.float64)
    matrix = np.zeros((out_size, in_size))
    rows = np.arange(out_size)
    np.add.at(matrix, (rows, low), 1 - fraction)
    np.add.at(matrix, (rows, high), fraction)
    return matrix


@functools.lru_cache(maxsize=32)
def _axis_map(low_res: int, img_size: int, kept: int, out_size: int) -> np.ndarray:
    """[out_size, low_res] float32: upscale to img_size, keep the first `kept` (the unpadded part), resize."""
    padded = bilinear_matrix(low_res, img_size)[:kept]  # [kept, low_res]
    return (bilinear_matrix(kept, out_size) @ padded).astype(np.float32)


def resized_hw(img_size: int, image_hw) -> tuple[int, int]:
    """The image's size inside the padded square, as the official decoder's
    resize_longest_image_size computes it: float32, round half up."""
    height, width = (int(v) for v in image_hw)
    scale = np.float32(img_size) / np.float32(max(height, width))
    return tuple(int(np.floor(np.float32(side) * scale + np.float32(0.5))) for side in (height, width))


def upscale_masks(low_res: np.ndarray, img_size: int, image_hw) -> np.ndarray:
    """[B, M, L, L] low-res logits -> [B, M, H, W] logits for an H x W image."""
    height, width = (int(v) for v in image_hw)
    kept_h, kept_w = resized_hw(img_size, image_hw)
    rows = _axis_map(low_res.shape[-2], img_size, kept_h, height)  # [H, L]
    columns = _axis_map(low_res.shape[-1], img_size, kept_w, width)  # [W, L]
    return rows @ np.asarray(low_res, np.float32) @ columns.T
