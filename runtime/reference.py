"""The PyTorch reference: segment_anything's own SamPredictor, with Session's keywords.

Imports torch and segment_anything when constructed; used by parity and evaluation.
"""

from __future__ import annotations

import numpy as np


class ReferencePredictor:
    """`SamPredictor` behind the same `set_image` / `predict` calls as `runtime.Session`."""

    def __init__(self, model):
        from segment_anything import SamPredictor

        self.predictor = SamPredictor(model)

    def set_image(self, image: np.ndarray) -> None:
        self.predictor.set_image(image)

    def predict(self, points=None, labels=None, box=None, mask_input=None, multimask_output=True):
        return self.predictor.predict(
            point_coords=None if points is None else np.asarray(points, np.float32),
            point_labels=None if labels is None else np.asarray(labels),
            box=None if box is None else np.asarray(box, np.float32),
            mask_input=mask_input,
            multimask_output=multimask_output,
        )
