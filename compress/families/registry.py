"""Model families: one registered unit per kind of SAM (after torch-pruning's registry of layer kinds).

A family says everything samedge needs of a kind of model, so the rest of the toolkit asks it
instead of knowing SAM 1 from SAM 2:

- its named architectures (`model_types`) and the config class that describes them as plain data,
  written into checkpoints and manifests (`config.to_dict()`, with `"family"`);
- `build(config, seed)`: the model (eval mode, `.config` set), seeded random weights if `seed`;
- `detect(state, model_type)`: the config of a state dict of its kind from the tensors' shapes (None: not its kind);
- `pieces(model)`: what each exported ONNX file computes (export/ traces them, nothing else);
- `tensors(model)`: small constants beside the ONNX files (SAM 2's tracking constants);
- `manifest(config)`: the pre-processing and the decoder's signature the numpy runtime follows
  (runtime/geometry.py names the resize rules; the runtime never imports a family);
- `compressions` / `refusal(name)`: the --compress recipes it takes, and why others are refused;
- `reference(model)` / `reference_mask_generator(model, **settings)`: the upstream predictors parity
  compares the bundle with.

The first families are compress/families/sam.py (SAM 1 sizes, SlimSAM-pruned SAMs, the demo and test
models) and compress/families/sam2.py (SAM 2.1); tests/test_families.py registers one of its own.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable, ContextManager

FAMILY_KEY = "family"  # in a config's dict; absent: "sam" (checkpoints and manifests from before families)
DEFAULT_FAMILY = "sam"


@dataclass
class Piece:
    """One exported ONNX file: the module traced, its example inputs and its signature."""

    file: str  # the bundle's file name, e.g. "encoder.onnx"
    module: object  # torch.nn.Module in eval mode: what the graph computes
    example: tuple  # example input tensors, in input_names' order
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    dynamic_axes: dict | None = None
    # While tracing: e.g. SAM 1's global attention in bands (compress/families/sam_pieces.py).
    tracing: Callable[[], ContextManager] = field(default=contextlib.nullcontext)
    # Outputs' static shapes {name: shape}, which the exporter cannot always see (through samedge nodes,
    # through Hiera's reshapes) and the runtime checks when it opens the file; a str names a dynamic axis.
    output_shapes: dict | None = None
    role: str = "decoder"  # "encoder", "decoder" (the runtime's), "memory" (video), "client"


class ModelFamily(ABC):
    """Subclass, fill in the class attributes and the abstract methods, and `register()` an instance."""

    name: str
    config_class: type
    model_types: dict  # {model type: config}
    compressions: tuple[str, ...] = ()  # --compress names it takes (compress/recipe.py)
    # The files AnyLabeling and samexporter open (export/clients.py: "sam", "sam2"); None: no clients' files.
    client_format: str | None = None

    @abstractmethod
    def build(self, config, seed: int | None = None):
        """The model of `config` (eval mode, `.config` set); seeded random weights with `seed`."""

    @abstractmethod
    def detect(self, state: dict, model_type: str | None = None, name: str = "checkpoint"):
        """The config of `state` (a state dict of this family's kind), None when it is another kind's.
        `model_type`: the architecture the user named (checked against the shapes); `name`: for a config
        read from the shapes alone. Raises compress.CheckpointError for a state dict of this kind that
        fits none of its sizes, or not `model_type`."""

    @abstractmethod
    def pieces(self, model) -> list[Piece]:
        """Every ONNX file of a bundle of `model`, as the module it is traced from."""

    def tensors(self, model) -> dict:
        """{file name: {tensor name: float32 numpy array}}: constants the runtime reads beside the ONNX
        files, written as safetensors (SAM 2's tracking constants); none by default."""
        return {}

    @abstractmethod
    def manifest(self, config) -> dict:
        """{"preprocessing": {...}, "decoder": {...}}: what the runtime reads (docs/formats.md)."""

    @abstractmethod
    def reference(self, model):
        """An upstream predictor with set_image(rgb) and predict(points, labels, box, mask_input,
        multimask_output) -> (masks, scores, low_res_logits), as segment_anything's SamPredictor."""

    def reference_mask_generator(self, model, **settings):
        """Upstream's automatic mask generator with `settings`, or None where it has none."""
        return None

    def refusal(self, compression: str) -> str | None:
        """Why `compression` cannot run on this family (None: it can)."""
        if compression in self.compressions:
            return None
        return (f"--compress {compression} is not available for {self.name} models; this family takes "
                f"{', '.join(self.compressions) or 'none'}")

    def seeded(self, model_type: str, seed: int = 0):
        """`model_type` with seeded random weights, as tests and --seeded-weights use it."""
        return self.build(self.model_types[model_type], seed=seed)


class NumpyPrompts:
    """An upstream predictor (SamPredictor, SAM2ImagePredictor: the same `predict` keywords) behind
    `ModelFamily.reference`'s calls, prompts as numpy arrays."""

    def __init__(self, predictor):
        self.predictor = predictor

    def set_image(self, image):
        self.predictor.set_image(image)

    def predict(self, points=None, labels=None, box=None, mask_input=None, multimask_output=True):
        import numpy as np

        return self.predictor.predict(
            point_coords=None if points is None else np.asarray(points, np.float32),
            point_labels=None if labels is None else np.asarray(labels),
            box=None if box is None else np.asarray(box, np.float32),
            mask_input=mask_input, multimask_output=multimask_output)


_FAMILIES: dict[str, ModelFamily] = {}


def register(family: ModelFamily) -> ModelFamily:
    """Add `family`; its model types must not clash with another family's."""
    for other in _FAMILIES.values():
        clash = set(other.model_types) & set(family.model_types)
        if other.name != family.name and clash:
            raise ValueError(f"model types {sorted(clash)} of family {family.name!r} are {other.name!r}'s already")
    _FAMILIES[family.name] = family
    return family


def unregister(name: str) -> None:
    _FAMILIES.pop(name, None)


def get_family(name: str) -> ModelFamily:
    try:
        return _FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown model family {name!r}; registered: {sorted(_FAMILIES)}") from None


def families() -> list[ModelFamily]:
    return list(_FAMILIES.values())


def model_types() -> list[str]:
    """Every registered family's named architectures (--model-type's choices)."""
    return sorted(name for family in _FAMILIES.values() for name in family.model_types)


def family_of_type(model_type: str) -> ModelFamily:
    for family in _FAMILIES.values():
        if model_type in family.model_types:
            return family
    raise ValueError(f"unknown model type {model_type!r}; choose one of {model_types()}")


def config_for(model_type: str):
    return family_of_type(model_type).model_types[model_type]


def family_of(config) -> ModelFamily:
    return get_family(getattr(config, "family", DEFAULT_FAMILY))


def config_from_dict(data: dict):
    """A config from its dict (a checkpoint's metadata, a manifest's architecture)."""
    values = dict(data)
    family = get_family(values.pop(FAMILY_KEY, DEFAULT_FAMILY))
    return family.config_class.from_dict(values)


def config_to_dict(config) -> dict:
    return {FAMILY_KEY: family_of(config).name, **config.to_dict()}


def build_model(config, seed: int | None = None):
    return family_of(config).build(config, seed)
