"""Birkhoff-compressed models in samedge's checkpoint format (no pickle, no code).

A compressed checkpoint is a samedge checkpoint (docs/formats.md) with two more
metadata entries: `compression` = "birkhoff" and `birkhoff`, JSON with the variant and,
per encoded tensor, what decoding needs (U, K, bit width, pair count, shape, padding,
centre and farthest pair as exact float64 JSON numbers). Its tensors:

- `<name>`: a raw tensor (buffers, small or fallen-back parameters);
- `<name>.codes`: int32 words, the indices at the tensor's bit width in the layout of
  plugins/hyperlinear/spec.py (the ONNX files and the TensorRT plugin take the same words);
  checkpoints written before that layout hold uint8, MSB first (packing.py), still read;
- `<name>.scale`: float32 units of the scale-aware variant ([out] or [1]).
"""

from __future__ import annotations

import json

import numpy as np
import torch

from ..architectures import SamConfig
from ..families import build_model
from ..checkpoint_file import CheckpointError, check_weights, read_samedge, sniff_format, write_checkpoint
from plugins.hyperlinear import reference

from .codec import EncodedTensor
from .model import DECODE_AT_LOAD, HYPER_LINEAR, CompressedModel, Entry, decoded_values, install_hyper_linears
from .packing import unpack_indices

CODES, SCALE = ".codes", ".scale"


def tensor_spec(entry: Entry) -> dict:
    e = entry.encoded
    return {
        "role": entry.role, "codebook_size": e.codebook_size, "rings": e.rings, "bits": e.bits,
        "pairs": int(e.indices.size), "shape": list(e.shape), "padded": e.padded,
        "row_pairs": e.row_pairs, "side": e.side, "mae": e.mae, "rel_rmse": entry.rel_rmse,
        "center": [float(v) for v in e.center], "farthest": [float(v) for v in e.farthest],
    }


def save_compressed(compressed: CompressedModel, path, config: SamConfig | None = None,
                    extra_metadata: dict | None = None) -> None:
    config = config or compressed.model.config
    state = compressed.model.state_dict()
    tensors, specs = {}, {}
    for name, entry in compressed.entries.items():
        if entry.encoded is None:
            tensors[name] = state[name]
            continue
        e = entry.encoded
        tensors[name + CODES] = torch.from_numpy(reference.pack(e.indices, e.bits))
        if e.scale is not None:
            tensors[name + SCALE] = torch.from_numpy(np.asarray(e.scale, np.float32))
        specs[name] = tensor_spec(entry)
    metadata = {"compression": "birkhoff",
                "birkhoff": {"variant": compressed.variant, "tensors": specs}}
    metadata.update(extra_metadata or {})
    write_checkpoint(tensors, path, config, metadata)


def build_compressed(path, config: SamConfig, state: dict, metadata: dict) -> CompressedModel:
    """The model and its entries from a compressed checkpoint's tensors and metadata."""
    check_weights(state, path, packed_suffix=CODES)
    try:
        birkhoff = json.loads(metadata["birkhoff"])
        specs, variant = birkhoff["tensors"], birkhoff["variant"]
    except (KeyError, json.JSONDecodeError, TypeError) as err:
        raise CheckpointError(f"{path}: unreadable Birkhoff metadata ({err}); re-compress the model") from err
    model = build_model(config)
    entries, dense = {}, {}
    for name, spec in specs.items():
        try:
            packed = state.pop(name + CODES).numpy()
            scale = state.pop(name + SCALE, None)
            indices = _unpack(packed, spec["pairs"], spec["bits"])
            encoded = EncodedTensor(
                indices, np.array(spec["center"]), np.array(spec["farthest"]), spec["codebook_size"],
                spec["rings"], tuple(spec["shape"]), spec["padded"], spec["row_pairs"], spec["mae"],
                spec["side"], None if scale is None else scale.numpy().astype(np.float64))
        except (KeyError, ValueError) as err:
            raise CheckpointError(f"{path}: tensor {name} is damaged ({err}); re-compress the model") from err
        entries[name] = Entry(name, spec["role"], encoded.shape, encoded, rel_rmse=spec.get("rel_rmse", 0.0))
        if spec["role"] == DECODE_AT_LOAD:
            dense[name] = torch.from_numpy(decoded_values(encoded))
    for name, tensor in state.items():
        entries[name] = Entry(name, "raw", tuple(tensor.shape))
    try:
        result = model.load_state_dict({**state, **dense}, strict=False)
    except RuntimeError as err:  # a tensor of the wrong shape
        raise CheckpointError(f"{path}: tensors do not fit the {config.name} architecture ({str(err)[:300]})") from None
    hyper = {n for n, e in entries.items() if e.role == HYPER_LINEAR}
    if result.unexpected_keys or set(result.missing_keys) != hyper:
        missing = sorted(set(result.missing_keys) - hyper)
        raise CheckpointError(
            f"{path}: tensors do not fit the {config.name} architecture "
            f"(missing {missing[:5]}, unexpected {result.unexpected_keys[:5]})"
        )
    install_hyper_linears(model, entries)
    return CompressedModel(model.eval(), entries, variant)


def _unpack(packed: np.ndarray, count: int, bits: int) -> np.ndarray:
    if packed.dtype == np.uint8:  # a checkpoint from before the shared layout: same indices
        return unpack_indices(packed, count, bits)
    return reference.unpack(packed, count, bits)


def load_compressed(path) -> CompressedModel:
    if sniff_format(path) != "samedge":
        raise CheckpointError(f"{path} is not a samedge checkpoint; compress one with python -m compress.birkhoff")
    config, state, metadata = read_samedge(path)
    if metadata.get("compression") != "birkhoff":
        raise CheckpointError(f"{path} is an uncompressed samedge checkpoint; compress it with "
                              "python -m compress.birkhoff")
    return build_compressed(path, config, state, metadata)
