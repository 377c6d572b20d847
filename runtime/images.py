"""Turn what users hand us (paths, PIL images, arrays) into uint8 RGB [H, W, 3]."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps


class ImageError(ValueError):
    """An image samedge cannot use, with the reason and the fix."""


def _from_pil(image: Image.Image) -> np.ndarray:
    # Phone photos store their rotation in EXIF; prompts refer to the image as it is shown.
    image = ImageOps.exif_transpose(image)
    if image.mode.startswith("I"):  # 16-bit greyscale PNG/TIFF ("I;16*", or "I" holding 16-bit values)
        pixels = np.asarray(image)
        if pixels.size and (pixels.min() < 0 or pixels.max() > 65535):
            raise ImageError(f"{image.mode} image with values outside 0..65535; convert it to 8-bit RGB")
        return to_rgb_uint8(pixels.astype(np.uint16))
    if image.mode == "P":  # palette: through RGBA so transparency does not pick colours
        image = image.convert("RGBA")
    return np.asarray(image.convert("RGB"))  # alpha dropped, colours kept


def to_rgb_uint8(array: np.ndarray) -> np.ndarray:
    """Greyscale, RGBA and 16-bit arrays become uint8 RGB; anything else is refused."""
    array = np.asarray(array)
    if array.dtype == np.uint16:
        # 16-bit pixels: scale 0..65535 to 0..255, rounded.
        array = np.round(array.astype(np.float64) / 257.0).astype(np.uint8)
    elif array.dtype.kind in "iu" and array.dtype != np.uint8:
        # Other integer types (int64 from np.array(list), PIL mode "I"): only unambiguous values.
        low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
        if 0 <= low and high <= 255:
            array = array.astype(np.uint8)
        elif 0 <= low and high <= 65535:
            raise ImageError(f"{array.dtype} image with values up to {high}: if these are 16-bit "
                             "pixels pass array.astype(np.uint16), else scale them to uint8 0..255")
        else:
            raise ImageError(f"{array.dtype} image with values {low}..{high} outside 0..255; "
                             "pass uint8 (0..255) or uint16 (0..65535) pixels")
    elif array.dtype != np.uint8:
        raise ImageError(f"image dtype {array.dtype} is not supported; pass uint8 RGB "
                         "(0..255), e.g. (image * 255).round().astype(np.uint8) for 0..1 floats")
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    elif array.ndim == 3 and array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    elif array.ndim == 3 and array.shape[2] == 4:
        array = array[:, :, :3]
    elif array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[2] not in (1, 3, 4):
        raise ImageError(f"image shape {array.shape} looks channels-first; pass [H, W, 3] "
                         "(e.g. array.transpose(1, 2, 0))")
    if array.ndim != 3 or array.shape[2] != 3:
        raise ImageError(f"image shape {array.shape} is not [H, W], [H, W, 3] or [H, W, 4]")
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise ImageError(f"image shape {array.shape} is empty")
    return np.ascontiguousarray(array)


def load_image(image) -> np.ndarray:
    """uint8 RGB [H, W, 3] from a path, a PIL image or a numpy array."""
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise ImageError(f"image file {path} does not exist")
        try:
            with Image.open(path) as opened:
                opened.load()
                return _from_pil(opened)
        except (OSError, SyntaxError) as err:
            raise ImageError(f"{path} is not a readable image ({err})") from err
    if isinstance(image, Image.Image):
        return _from_pil(image)
    if isinstance(image, np.ndarray):
        return to_rgb_uint8(image)
    raise ImageError(f"cannot read an image from {type(image).__name__}; "
                     "pass a file path, a PIL image or a uint8 numpy array")
