"""The PyTorch reference: the checkpoint's own model, run by its family's upstream code.

runtime is the bottom layer and needs no torch; this module is its one sanctioned upward
dependency. A bundle is only as good as its agreement with the model it was built from, and
that model comes from compress (model families, checkpoint formats), as do the synthetic
images parity checks on. So the reference model, its upstream predictor (segment_anything's
SamPredictor, sam2's SAM2ImagePredictor: the family says), the synthetic parity images and
the pieces the torch backend runs (and the video predictor and clip of runtime/video_parity.py) live here,
for runtime.parity and the torch backend; no other
runtime module imports compress (tests/test_layers.py). Importing this module imports
torch and compress: nothing on the path of `runtime.Session` with ONNX Runtime or TensorRT
imports it (tests/test_runtime_without_torch.py, test_light_install.py).
"""

from __future__ import annotations

import json

import numpy as np

from compress import load_checkpoint
from compress.demo.shapes import make_sample
from compress.families import config_to_dict, family_of


def load_reference_model(checkpoint, model_type: str | None = None):
    """The model (eval mode, `.config` set) from a samedge or official checkpoint; `model_type` names
    the architecture where the file's shapes do not (compress.load_checkpoint)."""
    return load_checkpoint(checkpoint, model_type)


def bundle_reference_model(bundle, checkpoint):
    """The checkpoint's model, as the checkpoint itself (or the architecture named at build
    time) says, refused before any work when it is not the bundle's architecture."""
    model = load_reference_model(checkpoint, bundle.manifest.get("model", {}).get("model_type"))
    built_from = bundle.manifest.get("model", {}).get("architecture")
    if isinstance(built_from, dict):
        built_from = {"family": "sam", **built_from}  # SAM 1 bundles from before families say none
    architecture = json.loads(json.dumps(architecture_of(model)))  # tuples as the manifest's lists
    differences = [f"{key}: bundle {built_from.get(key)!r}, checkpoint {value!r}" for key, value in architecture.items()
                   if isinstance(built_from, dict) and key != "name" and built_from.get(key) != value]
    if differences:
        raise ValueError(f"{checkpoint} holds another architecture than {bundle.root} was built from "
                         f"({'; '.join(differences[:4])}); pass the checkpoint the bundle was built from")
    return model


def architecture_of(model) -> dict:
    """The model's architecture as a manifest records it (its family's name included)."""
    return config_to_dict(model.config)


def family_manifest(config) -> dict:
    """The manifest sections the family writes for `config` (pre-processing, the decoders' signature)."""
    return family_of(config).manifest(config)


def family_pieces(model) -> dict:
    """{bundle file name: Piece} of what the bundle's ONNX files were traced from (module, input names)."""
    return {piece.file: piece for piece in family_of(model.config).pieces(model)}


def video_reference(model):
    """The family's upstream video predictor (SAM2VideoPredictor) on `model`'s weights."""
    return family_of(model.config).video_reference(model)


def parity_clip(folder, frames: int, height: int = 96, width: int = 128):
    """Synthetic moving shapes (compress/demo/clips.py) written into `folder` as SAM2VideoPredictor's JPEG frames."""
    from compress.demo.clips import moving_shapes, write_jpeg_folder

    return write_jpeg_folder(moving_shapes(frames, height, width), folder)


def parity_shapes(count: int = 2) -> dict[str, np.ndarray]:
    """Synthetic-shape images (the demo model's kind), the same every run: 'shapes-0', 'shapes-1', ..."""
    return {f"shapes-{index}": make_sample(np.random.default_rng([7, index])).image for index in range(count)}


class ReferencePredictor:
    """The family's upstream predictor (SamPredictor, SAM2ImagePredictor) behind the same `set_image` /
    `predict` calls as `runtime.Session`."""

    def __init__(self, model):
        self.predictor = family_of(model.config).reference(model)

    def set_image(self, image: np.ndarray) -> None:
        self.predictor.set_image(image)

    def predict(self, points=None, labels=None, box=None, mask_input=None, multimask_output=True):
        return self.predictor.predict(points=points, labels=labels, box=box, mask_input=mask_input,
                                      multimask_output=multimask_output)


def reference_records(model, image: np.ndarray, **settings) -> list[dict] | None:
    """The family's upstream automatic mask generator's records for `image` (uint8 RGB) with `settings`
    (MaskGenerator's names); None where the family has none. Imports torch: call it only where the
    compress extra is installed."""
    if settings.get("min_mask_region_area", 0) > 0:
        try:
            import cv2  # noqa: F401 (upstream's small-region removal imports it when it runs)
        except ImportError:
            raise ImportError("the reference's small-region removal needs OpenCV: pip install opencv-python-headless, "
                              "or compare with min_mask_region_area=0") from None
    generator = family_of(model.config).reference_mask_generator(model, **settings)
    return None if generator is None else generator.generate(image)
