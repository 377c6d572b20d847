"""Turn what users hand us (paths, PIL images, arrays) into uint8 RGB [H, W, 3]."""

from __future__ import annotations

import os
import stat
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageFile


class ImageError(ValueError):
    """An image samedge cannot use, with the reason and the fix."""


# EXIF orientation -> the transpose that turns the stored pixels upright (1: already upright).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


_UNREADABLE_FIX = "re-save or re-download it (as PNG or JPEG, say), or pass another image"

# Modes whose convert("RGB") Pillow refuses or gets wrong, and the mode to go through first.
_CONVERT_VIA = {
    "P": "RGBA",  # palette: through RGBA so transparency does not pick colours
    "La": "LA",  # premultiplied grey: Pillow un-premultiplies it only on the way to LA
}


def _decode(image: Image.Image) -> None:
    """Read the pixels of a PIL image, which Image.open defers until they are needed."""
    if isinstance(image, ImageFile.ImageFile) and image.tile and image.fp is None:
        # Pillow would fail with a bare AssertionError.
        raise ImageError("the PIL image's file was closed before its pixels were read; call "
                         "image.load() inside the `with Image.open(...)` block, or pass the file path")
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"the PIL image cannot be decoded ({err}); {_UNREADABLE_FIX}") from err


def _as_shown(image: Image.Image) -> Image.Image:
    """The image turned upright as its EXIF orientation says (phone photos store their
    rotation there): prompts refer to the image as it is shown."""
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation)
    except (SyntaxError, struct.error):  # EXIF Pillow cannot parse: viewers show the pixels as stored
        return image
    # Read here rather than by ImageOps.exif_transpose, which also rewrites the EXIF and fails on
    # some that it has just read.
    upright = _UPRIGHT.get(orientation)
    return image if upright is None else image.transpose(upright)


def _from_pil(image: Image.Image) -> np.ndarray:
    """The pixels of a PIL image as the array to_rgb_uint8 would be given for them."""
    _decode(image)
    image = _as_shown(image)
    if image.mode == "I":  # 32-bit integers: how Pillow opens 16-bit PPM/PGM greyscale
        pixels = np.asarray(image)
        if pixels.size and (pixels.min() < 0 or pixels.max() > 65535):
            raise ImageError("PIL mode I image with values outside 0..65535; convert it to 8-bit RGB")
        return pixels.astype(np.uint16)
    if image.mode == "F" or image.mode.startswith("I;16"):
        # Numbers rather than colours: treated exactly as the same numpy array is.
        return np.asarray(image)
    if image.mode in _CONVERT_VIA:
        image = image.convert(_CONVERT_VIA[image.mode])
    try:
        return np.asarray(image.convert("RGB"))  # alpha dropped, colours kept
    except ValueError as err:  # a mode this Pillow cannot turn into RGB
        raise ImageError(f"PIL images of mode {image.mode} cannot be converted to RGB ({err}); "
                         "convert it to RGB yourself") from err


def _shown(source) -> str:
    """A path for an error message; pasted data passed as a path must not flood it."""
    text = os.fsdecode(source)
    return text if len(text) <= 200 else f"{text[:60]}... ({len(text)} characters)"


def _read_file(source) -> Image.Image:
    """The decoded image in a file; of an animation or a multi-page file, the first frame."""
    path, name = Path(source), _shown(source)
    try:
        kind = path.stat().st_mode
    except FileNotFoundError:
        if "://" in name:
            raise ImageError(f"{name} is a URL; samedge reads local files, download it first") from None
        where = "" if path.is_absolute() else f" (relative to {Path.cwd()})"
        raise ImageError(f"image file {name} does not exist{where}; check the path") from None
    except (OSError, ValueError) as err:  # e.g. a name too long or with a NUL byte
        reason = err.strerror if isinstance(err, OSError) else err  # strerror: without the name again
        raise ImageError(f"{name} is not a usable file path ({reason}); pass the path of an image file") from err
    if stat.S_ISDIR(kind):
        raise ImageError(f"{name} is a directory, not an image file; pass the path of one image in it")
    if not stat.S_ISREG(kind):  # reading a pipe or a device could block or never end
        raise ImageError(f"{name} is not a regular file but a pipe, socket or device; "
                         "pass the path of an image file")
    try:
        with Image.open(path) as image:
            image.load()  # the file closes on leaving the block; the pixels stay
            return image
    except Image.DecompressionBombError as err:
        raise ImageError(f"{name} is too large for Pillow's decompression-bomb guard ({err}); if you "
                         "trust the file, raise PIL.Image.MAX_IMAGE_PIXELS first, else shrink it") from err
    except (OSError, SyntaxError, ValueError) as err:  # what Pillow raises for corrupt or unknown files
        raise ImageError(f"{name} is not a readable image ({err}); {_UNREADABLE_FIX}") from err


class ImageWarning(UserWarning):
    """An image samedge uses as given, though its values suggest it was meant otherwise."""


def _as_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        if array.size and int(array.max()) == 1:
            warnings.warn("uint8 image holding only 0 and 1 (near-black): a mask or 0..1 scaled pixels? Pass "
                          "array * 255 for black and white pixels; used as given", ImageWarning, stacklevel=4)
        return array
    if array.dtype == np.bool_:  # black and white, as Pillow shows mode "1"
        return array.astype(np.uint8) * 255
    if array.dtype.kind == "u" and array.dtype.itemsize == 2:  # uint16 of either byte order
        high = int(array.max()) if array.size else 0
        if array.size and high <= 255:
            # 8-bit pixels kept in 16 bits (OpenCV's or a converter's doing) would turn almost black
            # when scaled as 16-bit ones; a true 16-bit image this dark (under 0.4 % of full scale) is rare.
            raise ImageError(f"uint16 image whose values are all at most {high}: 8-bit pixels in a 16-bit array, "
                             "or a 16-bit image that is almost black? Pass array.astype(np.uint8) for 8-bit "
                             "values, or (array / 257).round().astype(np.uint8) to scale 16-bit ones")
        # 16-bit pixels: scale 0..65535 to 0..255, rounded.
        return np.round(array.astype(np.float64) / 257.0).astype(np.uint8)
    if array.dtype.kind in "iu":
        # Other integer types (int64 from np.array(list)): only unambiguous values.
        low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
        if low == 0 and high == 1:
            raise ImageError(f"{array.dtype} image holding only 0 and 1: a mask, or 0..1 scaled pixels? Pass "
                             "array.astype(bool) for black and white, or (array * 255).astype(np.uint8)")
        if 0 <= low and high <= 255:
            return array.astype(np.uint8)
        if 0 <= low and high <= 65535:
            raise ImageError(f"{array.dtype} image with values up to {high}: if these are 16-bit "
                             "pixels pass array.astype(np.uint16), else scale them to uint8 0..255")
        raise ImageError(f"{array.dtype} image with values {low}..{high} outside 0..255; "
                         "pass uint8 (0..255) or uint16 (0..65535) pixels")
    if array.dtype.kind == "f":
        raise ImageError(f"{array.dtype} pixels are not supported; pass uint8 RGB (0..255), e.g. "
                         "(np.asarray(image) * 255).round().astype(np.uint8) for 0..1 floats")
    raise ImageError(f"image dtype {array.dtype} is not supported; pass a uint8 RGB array (0..255)")


def _shape_fix(shape: tuple) -> str:
    if len(shape) == 4 and shape[0] == 1:
        return "drop the batch axis: pass array[0]"
    if len(shape) == 3 and shape[2] == 2:
        return "for grey + alpha pass array[..., 0]"
    return "pass [H, W, 3] RGB, e.g. array[..., :3] if the first three channels are RGB"


def to_rgb_uint8(array: np.ndarray) -> np.ndarray:
    """Greyscale, RGBA, 16-bit and bool arrays become uint8 RGB; anything else is refused."""
    array = _as_uint8(np.asarray(array))
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
        raise ImageError(f"image shape {array.shape} is not [H, W], [H, W, 3] or [H, W, 4]; "
                         f"{_shape_fix(array.shape)}")
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise ImageError(f"image shape {array.shape} is empty; pass an image of at least 1x1 pixels")
    return np.ascontiguousarray(array)


def load_image(image) -> np.ndarray:
    """uint8 RGB [H, W, 3] from a path, a PIL image or a numpy array.

    Of an animated image (GIF, PNG, WebP) or a multi-page TIFF, the first frame is used.
    """
    if isinstance(image, (str, os.PathLike)):
        return to_rgb_uint8(_from_pil(_read_file(image)))
    if isinstance(image, Image.Image):
        return to_rgb_uint8(_from_pil(image))
    if isinstance(image, np.ndarray):
        return to_rgb_uint8(image)
    raise ImageError(f"cannot read an image from {type(image).__name__}; pass a file path, a PIL "
                     "image (Image.open(io.BytesIO(data)) for a file's bytes) or a uint8 numpy array")
