"""`Session`: SAM prompts in, masks out, from a bundle, with no torch needed."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .backends import make_backend
from .bundle import open_bundle
from .images import load_image
from .prompts import prompt_inputs
from .transforms import preprocess

MASK_THRESHOLD = 0.0  # logits above this are mask pixels, as in segment_anything


class Prediction(NamedTuple):
    """Same meaning and order as `segment_anything.SamPredictor.predict`'s result."""

    masks: np.ndarray  # bool [M, H, W]; M = 3 with multimask_output, else 1
    scores: np.ndarray  # float32 [M], the model's predicted IoU of each mask
    low_res_logits: np.ndarray  # float32 [M, L, L] (L = 256 for official SAM), usable as mask_input


class Session:
    """Run a samedge bundle.

    >>> session = Session("bundles/demo-cpu")
    >>> session.set_image("photo.jpg")
    >>> masks, scores, logits = session.predict(points=[[120, 80]], labels=[1])
    """

    def __init__(self, source, backend: str = "auto", providers=None, device: str = "cpu",
                 low_memory: bool = False):
        """`low_memory`: ONNX Runtime returns activation memory after each run instead of
        keeping it for the next (for small devices, or many sessions in one process)."""
        self.bundle = open_bundle(source)
        self.backend = make_backend(self.bundle, backend, providers, device, low_memory)
        self.img_size = self.bundle.img_size or self.backend.img_size
        # The decoder upscales the embedding grid 4x (256 x 256 for official SAM).
        self.low_res_size = 4 * self.backend.embedding_size
        self._embedding = None
        self._image_hw = None

    def set_image(self, image) -> None:
        """Encode an image (path, PIL image or uint8 array; greyscale/RGBA/16-bit converted)."""
        self._encode(load_image(image))

    def _encode(self, rgb: np.ndarray) -> None:
        pixels = preprocess(rgb, self.img_size, self.bundle.pixel_mean, self.bundle.pixel_std)
        self._embedding = self.backend.encode(pixels)
        self._image_hw = rgb.shape[:2]

    @property
    def image_embedding(self) -> np.ndarray:
        if self._embedding is None:
            raise RuntimeError("no image set: call set_image(image) first, or pass image= to predict")
        return self._embedding

    def predict(self, image=None, points=None, labels=None, box=None, mask_input=None,
                multimask_output: bool = True) -> Prediction:
        """Masks for XY pixel `points` (labels 1 fg / 0 bg) and/or an XYXY `box`."""
        rgb = None if image is None else load_image(image)
        image_hw = rgb.shape[:2] if rgb is not None else self._image_hw
        if image_hw is None:
            raise RuntimeError("no image set: call set_image(image) first, or pass image= to predict")
        # Prompts are checked before the (costly) encoder runs on a new image.
        prompt = prompt_inputs(image_hw, self.img_size, self.low_res_size, points, labels, box, mask_input)
        if rgb is not None:
            self._encode(rgb)
        logits, scores, low_res = self.backend.decode({"image_embeddings": self.image_embedding, **prompt})
        # Mask 0 is SAM's single-mask answer, masks 1..3 the multimask ones.
        chosen = slice(1, None) if multimask_output else slice(0, 1)
        return Prediction(
            masks=logits[0, chosen] > MASK_THRESHOLD,
            scores=scores[0, chosen].astype(np.float32),
            low_res_logits=low_res[0, chosen].astype(np.float32),
        )
