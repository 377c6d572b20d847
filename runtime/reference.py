"""The PyTorch reference: the checkpoint's own model, run by segment_anything.

runtime is the bottom layer and needs no torch; this module is its one sanctioned upward
dependency. A bundle is only as good as its agreement with the model it was built from, and
that model comes from compress (architectures, checkpoint formats), as do the synthetic
images parity checks on. So the reference model, the synthetic parity images and the
`SamPredictor` wrapper live here, for runtime.parity and the torch backend; no other
runtime module imports compress (tests/test_layers.py). Importing this module imports
torch, segment_anything and compress: nothing on the path of `runtime.Session` with ONNX
Runtime or TensorRT imports it (tests/test_runtime_without_torch.py, test_light_install.py).
"""

from __future__ import annotations

import numpy as np
from segment_anything import SamAutomaticMaskGenerator, SamPredictor

from compress import load_checkpoint
from compress.demo.shapes import make_sample


def load_reference_model(checkpoint, model_type: str | None = None):
    """segment_anything's `Sam` (eval mode, `.config` set) from a samedge or official checkpoint;
    `model_type` names the architecture where the file's shapes do not (compress.load_checkpoint)."""
    return load_checkpoint(checkpoint, model_type)


def parity_shapes(count: int = 2) -> dict[str, np.ndarray]:
    """Synthetic-shape images (the demo model's kind), the same every run: 'shapes-0', 'shapes-1', ..."""
    return {f"shapes-{index}": make_sample(np.random.default_rng([7, index])).image for index in range(count)}


class ReferencePredictor:
    """`SamPredictor` behind the same `set_image` / `predict` calls as `runtime.Session`."""

    def __init__(self, model):
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


def reference_records(model, image: np.ndarray, **settings) -> list[dict]:
    """segment_anything's SamAutomaticMaskGenerator's records for `image` (uint8 RGB) with `settings`
    (MaskGenerator's names). Imports torch: call it only where the compress extra is installed."""
    if settings.get("min_mask_region_area", 0) > 0:
        try:
            import cv2  # noqa: F401 (segment_anything's small-region removal imports it when it runs)
        except ImportError:
            raise ImportError("the reference's small-region removal needs OpenCV: pip install opencv-python-headless, "
                              "or compare with min_mask_region_area=0") from None
    return SamAutomaticMaskGenerator(model, **settings).generate(image)
