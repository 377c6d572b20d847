"""How a model family maps an image onto its square input and back (a bundle's `preprocessing.resize`).

Three rules cover the families so far; a new family names one of them in its manifest (or adds
one here, a few lines of numpy):

- "longest_side" (SAM 1, segment_anything's ResizeLongestSide): the longer side scaled to S with
  Pillow's bilinear resize on uint8, zero-padded bottom/right; masks come back by upscaling to S,
  cropping the padding and resizing to the image (runtime/masks.py).
- "square" (SAM 2, sam2's SAM2Transforms): the image stretched to S x S, the aspect ratio not kept,
  with torchvision's antialiased bilinear resize on 0..1 floats, which Pillow's bilinear filter on
  float ("F") images computes too; prompts scale by S / W and S / H; masks are the low-res logits
  bilinearly resized to the image in one step.
- "longest_side_prompts_1024" (EfficientViT-SAM's EfficientViTSamPredictor): the pixels as
  "longest_side" at the encoder's S (512 px for the L models), but prompts and masks in SAM's
  1024-px frame whatever S is: its prompt encoder and mask post-processing are SAM's, built for
  1024 px, and its predictor scales prompts and crops masks with the 1024-px resized size.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from .masks import bilinear_matrix, upscale_masks
from .transforms import preprocess, resize_longest_side, scale_coords


class LongestSide:
    name = "longest_side"

    @staticmethod
    def pixels(rgb: np.ndarray, img_size: int, pixel_mean, pixel_std) -> np.ndarray:
        """uint8 RGB [H, W, 3] -> normalised, padded float32 [1, 3, S, S]."""
        return preprocess(rgb, img_size, pixel_mean, pixel_std)

    @staticmethod
    def resized(rgb: np.ndarray, img_size: int) -> np.ndarray:
        """The resized image, float32 0..255 [h, w, 3] (encoder_preprocess.onnx's input)."""
        return resize_longest_side(rgb, img_size).astype(np.float32)

    @staticmethod
    def coords(coords: np.ndarray, image_hw, img_size: int) -> np.ndarray:
        return scale_coords(coords, image_hw, img_size)

    @staticmethod
    def upscale(low_res: np.ndarray, img_size: int, image_hw) -> np.ndarray:
        """[B, M, L, L] low-res logits -> [B, M, H, W]."""
        return upscale_masks(low_res, img_size, image_hw)


class Square:
    name = "square"

    @staticmethod
    def pixels(rgb: np.ndarray, img_size: int, pixel_mean, pixel_std) -> np.ndarray:
        # Per channel in float: Pillow's bilinear filter widens with the scale when shrinking (as
        # torchvision's antialias=True does), and float avoids rounding the resized values to uint8.
        channels = [np.asarray(Image.fromarray(rgb[..., c].astype(np.float32) / 255.0, mode="F")
                               .resize((img_size, img_size), Image.BILINEAR)) for c in range(3)]
        resized = np.stack(channels)  # [3, S, S], 0..1
        mean = np.asarray(pixel_mean, np.float32)[:, None, None] / 255.0
        std = np.asarray(pixel_std, np.float32)[:, None, None] / 255.0
        return ((resized - mean) / std)[None].astype(np.float32)

    @staticmethod
    def resized(rgb: np.ndarray, img_size: int) -> np.ndarray:
        from .bundle import BundleError

        raise BundleError("an encoder that takes the resized image (SAM 1's encoder_preprocess.onnx) does not "
                          "belong to a bundle whose images are stretched to a square (SAM 2's): open the bundle "
                          "directory, or its encoder.onnx")

    @staticmethod
    def coords(coords: np.ndarray, image_hw, img_size: int) -> np.ndarray:
        height, width = image_hw
        scaled = np.array(coords, dtype=np.float64, copy=True)
        scaled[..., 0] *= img_size / width
        scaled[..., 1] *= img_size / height
        return scaled.astype(np.float32)

    @staticmethod
    def upscale(low_res: np.ndarray, img_size: int, image_hw) -> np.ndarray:
        height, width = (int(v) for v in image_hw)
        rows = bilinear_matrix(low_res.shape[-2], height).astype(np.float32)  # [H, L]
        columns = bilinear_matrix(low_res.shape[-1], width).astype(np.float32)  # [W, L]
        return rows @ np.asarray(low_res, np.float32) @ columns.T


class LongestSidePrompts1024(LongestSide):
    """The pixels as LongestSide at the encoder's img_size; prompts and masks in the 1024-px frame."""

    name = "longest_side_prompts_1024"
    PROMPT_FRAME = 1024  # the decoder's frame: SAM's prompt encoder input_image_size

    @classmethod
    def coords(cls, coords: np.ndarray, image_hw, img_size: int) -> np.ndarray:
        return scale_coords(coords, image_hw, cls.PROMPT_FRAME)

    @classmethod
    def upscale(cls, low_res: np.ndarray, img_size: int, image_hw) -> np.ndarray:
        # The crop is the 1024-px frame's resized size, not the encoder's: at 512 px a 3:2 image
        # fills 341 of 512 rows but 683 of 1024 (upstream's postprocess_masks does the same).
        return upscale_masks(low_res, cls.PROMPT_FRAME, image_hw)


GEOMETRIES = {rule.name: rule for rule in (LongestSide, Square, LongestSidePrompts1024)}


def geometry(name: str | None):
    """The rule a manifest names (None: SAM 1's, the bundles from before the field)."""
    try:
        return GEOMETRIES[name or LongestSide.name]
    except KeyError:
        from .bundle import BundleError

        raise BundleError(f"the bundle's images are resized by rule {name!r}, which this samedge does not know "
                          f"(it knows {sorted(GEOMETRIES)}): upgrade samedge") from None
