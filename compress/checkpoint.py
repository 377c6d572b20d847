"""Loading and saving SAM weights without ever running code from a file.

Two formats are read:
- samedge's own: one safetensors file whose metadata holds the architecture as JSON
  (compress.checkpoint_file; docs/formats.md), Birkhoff-compressed or not.
- official checkpoints (segment_anything's `sam_vit_b_01ec64.pth`, sam2's `sam2.1_hiera_tiny.pt`
  as `{"model": state dict}`, ...): read with `torch.load(weights_only=True)`; each registered model
  family (compress/families) reads the architecture from the tensor shapes, so a vit_l file passed
  as vit_b fails with a clear message.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from .architectures import SamConfig
from .birkhoff.storage import build_compressed
from .checkpoint_file import CheckpointError, check_weights, read_samedge, sniff_format, write_checkpoint
from .families.sam import detect_official_type, infer_sam_config  # noqa: F401 (SAM 1's, named here too)
from .families import build_model, config_for, families, family_of_type


def save_checkpoint(model, path, config: SamConfig | None = None, extra_metadata: dict | None = None):
    """Write `model` (a segment_anything Sam) in samedge's format."""
    config = config or getattr(model, "config", None)
    if config is None:
        raise ValueError("the model has no .config; pass config= to save_checkpoint")
    write_checkpoint(model.state_dict(), path, config, extra_metadata)


def seeded_checkpoint(model_type: str, folder: Path) -> Path:
    """<folder>/<type>_seed0.safetensors: the architecture with seeded random weights, written
    once (the full-size architectures without a download: for trying the pipeline). Each family
    seeds its own way (SAM 2 perturbs the cloned layers apart: compress/families/sam2.py)."""
    path = Path(folder) / f"{model_type}_seed0.safetensors"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(family_of_type(model_type).seeded(model_type, seed=0), path)
    return path


def _unpickling_reason(err: Exception) -> str:
    """torch's own reason, without its advice to retry with weights_only=False (never do)."""
    text = str(err)
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1]
    reason = next((line.strip() for line in text.splitlines() if line.strip()), type(err).__name__)
    return reason.split(" Please use", 1)[0][:200]  # torch's ways to allow the objects: not for us


def _load_torch(path, model_type: str | None):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 171": noise for a corrupt file
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for bad files
        raise CheckpointError(
            f"{path}: not readable as a PyTorch state dict with weights_only=True ({_unpickling_reason(err)}): "
            "the file is corrupt, or holds Python objects besides tensors. samedge never unpickles code; "
            "re-save the weights with torch.save(model.state_dict(), path)"
        ) from None
    for wrapper in ("model", "state_dict"):  # sam2's and EfficientViT-SAM's training checkpoints wrap the weights
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors (torch.save(model.state_dict())), "
                              f"found {type(state).__name__} with other values")
    for family in families():
        try:
            config = family.detect(state, model_type, name=Path(path).stem)
        except CheckpointError as err:
            raise CheckpointError(f"{path}: {err}") from None
        if config is not None:
            return config, state
    if model_type is not None:
        return config_for(model_type), state  # the caller's architecture; strict loading checks it
    known = ", ".join(family.name for family in families())
    raise CheckpointError(f"{path}: not a state dict of any registered family's kind ({known}: each reads its own "
                          "tensor names and shapes); pass --model-type, or save it with compress.save_checkpoint")



def load_checkpoint(path, model_type: str | None = None):
    """Build the model (eval mode, `.config` set; its family's kind) from a samedge or official checkpoint."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory; pass the checkpoint file itself "
                              "(a samedge .safetensors or an official .pth)")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    kind = sniff_format(path)
    if kind == "samedge":
        config, state, metadata = read_samedge(path)
        if model_type is not None and model_type != config.name:
            raise CheckpointError(
                f"{path} holds a {config.name} model, but model type {model_type} was asked for"
            )
        if metadata.get("compression") == "birkhoff":
            return build_compressed(path, config, state, metadata).model
    elif kind == "torch":
        config, state = _load_torch(path, model_type)
    elif kind == "safetensors":
        raise CheckpointError(
            f"{path} is a safetensors file without samedge metadata; "
            "load its state dict yourself and write it with compress.save_checkpoint"
        )
    else:
        raise CheckpointError(
            f"{path} is neither a samedge checkpoint (safetensors) nor a PyTorch "
            "checkpoint; the file is corrupt or of another kind"
        )
    check_weights(state, path)
    model = build_model(config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(
            f"{path}: weights do not fit the {config.name} architecture: {str(err)[:500]}"
        ) from err
    return model
