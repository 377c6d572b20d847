"""samedge's checkpoint file: one safetensors file whose metadata holds the architecture.

What every reader and writer of that file shares (docs/formats.md): the format stamp,
telling the file from other kinds by its bytes, reading and writing it, and refusing
weights that would load wrongly. compress.checkpoint builds models from it;
compress.birkhoff.storage adds the compressed layout on top.
"""

from __future__ import annotations

import json
import struct

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from runtime.atomic import atomic_write

from .errors import CheckpointError
from .families import config_from_dict, config_to_dict

FORMAT_NAME = "samedge.checkpoint"
FORMAT_VERSION = "1"



def write_checkpoint(tensors: dict, path, config, extra_metadata: dict | None = None):
    """Write named tensors with samedge's metadata (the architecture as JSON), atomically."""
    metadata = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "architecture": json.dumps(config_to_dict(config)),
    }
    for key, value in (extra_metadata or {}).items():
        metadata[key] = value if isinstance(value, str) else json.dumps(value)
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def sniff_format(path) -> str:
    """'samedge', 'safetensors' (someone else's), 'torch' or 'unknown', from the bytes."""
    with open(path, "rb") as f:
        head = f.read(9)
    # safetensors first: its 8-byte header length may well start with 0x80 (a header of
    # 0x..80 bytes), which would otherwise pass for a pickle stream.
    if len(head) == 9 and head[8:9] == b"{":
        (header_len,) = struct.unpack("<Q", head[:8])
        if header_len < 100_000_000:
            with open(path, "rb") as f:
                f.seek(8)
                header = f.read(header_len)
            try:
                meta = json.loads(header).get("__metadata__") or {}
            except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
                meta = None
            if meta is not None:
                samedge = isinstance(meta, dict) and meta.get("format") == FORMAT_NAME
                return "samedge" if samedge else "safetensors"
    if head[:2] == b"PK" or head[:1] == b"\x80":  # torch.save zip, or its legacy pickle stream
        return "torch"
    return "unknown"


def read_checkpoint_metadata(path) -> dict:
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def read_samedge(path) -> tuple[object, dict, dict]:
    """(architecture: a family's config, tensors, metadata) of a samedge checkpoint, or a CheckpointError."""
    try:
        metadata = read_checkpoint_metadata(path)
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: corrupt samedge checkpoint ({err}); re-create it") from err
    if metadata.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: samedge checkpoint format version {metadata.get('format_version')!r}, "
            f"this samedge reads version {FORMAT_VERSION}; upgrade samedge"
        )
    try:
        config = config_from_dict(json.loads(metadata["architecture"]))
    except (KeyError, json.JSONDecodeError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: unreadable architecture metadata ({err})") from err
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: corrupt samedge checkpoint ({err}); re-create it") from err
    return config, state, metadata



def check_weights(state: dict, path, packed_suffix: str | None = None) -> None:
    """Refuse integer or non-finite weights: loading would truncate or spread them silently.

    fp16/bf16 weights are fine (upcast on loading). Tensors named `*<packed_suffix>` are
    packed integer codes (Birkhoff) and must be int32 words (uint8 in older files) instead."""
    for name, tensor in state.items():
        if packed_suffix and name.endswith(packed_suffix):
            if tensor.dtype not in (torch.int32, torch.uint8):
                raise CheckpointError(f"{path}: {name} holds {tensor.dtype} codes, not int32; re-compress the model")
            continue
        if not tensor.is_floating_point():
            raise CheckpointError(
                f"{path}: tensor {name} is {tensor.dtype}; SAM weights are floating point (float32, float16 or "
                "bfloat16), and integers would be loaded truncated. Re-save the original floating-point weights"
            )
        if not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise CheckpointError(f"{path}: tensor {name} holds {bad} NaN or infinite values of {tensor.numel()}; "
                                  "the checkpoint is damaged (or training diverged): use an earlier or intact copy")


