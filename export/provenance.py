"""Stamp a bundle's ONNX files with the model they were exported from (runtime/provenance.py reads it).

The digest is of the weights themselves (names, dtypes, shapes and bytes of the state dict),
so the same model gives the same digest whether it came from a .pth or a .safetensors file,
and any two models that answer differently give different ones.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import onnx
import torch

from runtime.atomic import temporary_name, PARTIAL
from runtime.provenance import MODEL_DIGEST, PREPROCESSING


def model_digest(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def derived_digest(source: str, change: str) -> str:
    """The digest of a model made from `source` by `change` (e.g. "quantize:int8")."""
    return hashlib.sha256(f"{source}\n{change}".encode()).hexdigest()


def stamp(path, digest: str, config_preprocessing: dict) -> None:
    """Write the digest and the pre-processing into the ONNX file's metadata_props, in place.

    Only the graph file is rewritten (its external data, if any, is referenced, not read),
    under a temporary name first: an interrupted stamp leaves the old file."""
    path = Path(path)
    model = onnx.load(str(path), load_external_data=False)
    kept = [entry for entry in model.metadata_props if entry.key not in (MODEL_DIGEST, PREPROCESSING)]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    onnx.helper.set_model_props(model, {**{e.key: e.value for e in kept}, MODEL_DIGEST: digest,
                                        PREPROCESSING: json.dumps(config_preprocessing, sort_keys=True)})
    staged = temporary_name(path, PARTIAL)
    try:
        staged.write_bytes(model.SerializeToString())
        os.replace(staged, path)
    finally:
        staged.unlink(missing_ok=True)


def stamp_all(root, digest: str, config_preprocessing: dict) -> list[Path]:
    """Every .onnx file below `root` (a bundle being written), stamped; returns them."""
    files = sorted(Path(root).rglob("*.onnx"))
    for path in files:
        stamp(path, digest, config_preprocessing)
    return files


def preprocessing_of(config) -> dict:
    return {"img_size": config.img_size, "pixel_mean": list(config.pixel_mean), "pixel_std": list(config.pixel_std)}
