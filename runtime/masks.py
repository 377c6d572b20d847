"""Low-res mask logits -> logits at the image's size, in numpy.

The official decoder does this in its graph (segment_anything's
`SamOnnxModel.mask_postprocessing`); TensorRT engines end at the low-res masks
(export/tensorrt_onnx.py says why), so their backend does it here, with the same three
steps: upscale to the padded input square, crop the padding, resize to the image.
"""

from __future__ import annotations

import numpy as np


def _bilinear_weights(in_size: int, out_size: int):
    """Source rows and weights of torch's bilinear resize with align_corners=False."""
    scale = in_size / out_size
    source = np.maximum((np.arange(out_size, dtype=np.float32) + 0.5) * np.float32(scale) - 0.5, 0)
    low = np.minimum(np.floor(source).astype(np.int64), in_size - 1)
    high = np.minimum(low + 1, in_size - 1)
    fraction = (source - low).astype(np.float32)
    return low, high, fraction


def resize_bilinear(logits: np.ndarray, height: int, width: int) -> np.ndarray:
    """[..., h, w] -> [..., height, width] as torch.nn.functional.interpolate(bilinear)."""
    low, high, fraction = _bilinear_weights(logits.shape[-2], height)
    rows = logits[..., low, :] * (1 - fraction)[:, None] + logits[..., high, :] * fraction[:, None]
    low, high, fraction = _bilinear_weights(logits.shape[-1], width)
    return (rows[..., low] * (1 - fraction) + rows[..., high] * fraction).astype(np.float32)


def upscale_masks(low_res: np.ndarray, img_size: int, image_hw) -> np.ndarray:
    """[B, M, L, L] low-res logits -> [B, M, H, W] logits for an H x W image."""
    height, width = (int(v) for v in image_hw)
    # As the official decoder's resize_longest_image_size: float32, round half up.
    scale = np.float32(img_size) / np.float32(max(height, width))
    resized_h, resized_w = (int(np.floor(np.float32(side) * scale + np.float32(0.5))) for side in (height, width))
    padded = resize_bilinear(low_res, img_size, img_size)
    return resize_bilinear(padded[..., :resized_h, :resized_w], height, width)
