"""The one interface every inference backend implements (after Polygraphy's runners)."""

from __future__ import annotations

from typing import Protocol

import numpy as np

DecoderOutputs = tuple[np.ndarray, np.ndarray, np.ndarray]  # masks, iou_predictions, low_res_masks


class Backend(Protocol):
    name: str
    img_size: int  # side S of the encoder's square input
    embedding_size: int  # side of the image-embedding grid (S / 16 for official SAM)

    def encode(self, pixels: np.ndarray) -> np.ndarray:
        """Normalised, padded pixels [1, 3, S, S] -> image embeddings [1, C, h, w]."""

    def decode(self, inputs: dict[str, np.ndarray]) -> DecoderOutputs:
        """The official SAM ONNX decoder's inputs -> its three outputs (all 4 masks)."""
