"""Loading and saving SAM weights without ever running code from a file.

Two formats are read:
- samedge's own: one safetensors file whose metadata holds the architecture as JSON
  (`format` = "samedge.checkpoint"); see docs/formats.md.
- official segment_anything checkpoints (`sam_vit_b_01ec64.pth` ...): a plain state
  dict read with `torch.load(weights_only=True)`; the architecture is checked against
  the tensor shapes so a vit_l file passed as vit_b fails with a clear message.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from runtime.atomic import atomic_write

from .architectures import ARCHITECTURES, OFFICIAL_MODEL_TYPES, SamConfig, build_sam, get_config

FORMAT_NAME = "samedge.checkpoint"
FORMAT_VERSION = "1"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used, with the reason and what to do instead."""


def save_checkpoint(model, path, config: SamConfig | None = None, extra_metadata: dict | None = None):
    """Write `model` (a segment_anything Sam) in samedge's format."""
    config = config or getattr(model, "config", None)
    if config is None:
        raise ValueError("the model has no .config; pass config= to save_checkpoint")
    write_checkpoint(model.state_dict(), path, config, extra_metadata)


def write_checkpoint(tensors: dict, path, config: SamConfig, extra_metadata: dict | None = None):
    """Write named tensors with samedge's metadata (the architecture as JSON), atomically."""
    from safetensors.torch import save_file

    metadata = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "architecture": json.dumps(config.to_dict()),
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
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def _load_samedge(path):
    from safetensors import SafetensorError
    from safetensors.torch import load_file

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
        config = SamConfig.from_dict(json.loads(metadata["architecture"]))
    except (KeyError, json.JSONDecodeError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: unreadable architecture metadata ({err})") from err
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: corrupt samedge checkpoint ({err}); re-create it") from err
    return config, state, metadata


def detect_official_type(state: dict) -> str:
    """Which official architecture a segment_anything state dict has, from its shapes."""
    try:
        embed_dim = state["image_encoder.patch_embed.proj.weight"].shape[0]
    except KeyError:
        raise CheckpointError(
            "not a SAM state dict: it has no 'image_encoder.patch_embed.proj.weight'"
        ) from None
    depth = len({k.split(".")[2] for k in state if k.startswith("image_encoder.blocks.")})
    for model_type in OFFICIAL_MODEL_TYPES:
        config = ARCHITECTURES[model_type]
        if (config.encoder_embed_dim, config.encoder_depth) == (embed_dim, depth):
            return model_type
    raise CheckpointError(
        f"SAM state dict with embed dim {embed_dim} and {depth} blocks matches none of "
        f"{OFFICIAL_MODEL_TYPES}; if it is a pruned model, convert it to samedge's format"
    )


def infer_sam_config(state: dict, name: str = "sam-pruned") -> SamConfig:
    """A SAM architecture read from a state dict's shapes: for pruned models such as the
    published uniform SlimSAM checkpoints (vit_p50 / vit_p77), whose widths are not official."""
    try:
        patch_weight = state["image_encoder.patch_embed.proj.weight"]  # [E, 3, p, p]
        embed, patch = patch_weight.shape[0], patch_weight.shape[-1]
        grid = state["image_encoder.pos_embed"].shape[1]
        depth = len({k.split(".")[2] for k in state if k.startswith("image_encoder.blocks.")})
        attn_dims, mlp_dims, head_dims, rel_rows = [], [], [], []
        for i in range(depth):
            prefix = f"image_encoder.blocks.{i}."
            qkv = state.get(prefix + "attn.qkv.weight")
            attn_dims.append(qkv.shape[0] // 3 if qkv is not None else state[prefix + "attn.q.weight"].shape[0])
            mlp_dims.append(state[prefix + "mlp.lin1.weight"].shape[0])
            head_dims.append(state[prefix + "attn.rel_pos_h"].shape[1])
            rel_rows.append(state[prefix + "attn.rel_pos_h"].shape[0])
        prompt_dim = state["image_encoder.neck.0.weight"].shape[0]
        decoder_mlp = state["mask_decoder.transformer.layers.0.mlp.lin1.weight"].shape[0]
    except (KeyError, AttributeError, IndexError) as err:
        raise CheckpointError(f"not a SAM state dict: no {err}") from None
    heads = {a // h for a, h in zip(attn_dims, head_dims)}
    windows = {(r + 1) // 2 for r in rel_rows if r != 2 * grid - 1}
    if len(heads) != 1 or len(windows) > 1:
        raise CheckpointError("SAM state dict with blocks of different head counts or windows; not supported")
    base = get_config("vit_b")
    return base.replace(
        name=name, img_size=grid * patch, patch_size=patch, encoder_embed_dim=embed, encoder_depth=depth,
        encoder_num_heads=heads.pop(), window_size=windows.pop() if windows else base.window_size,
        encoder_global_attn_indexes=tuple(i for i, r in enumerate(rel_rows) if r == 2 * grid - 1),
        prompt_embed_dim=prompt_dim, decoder_mlp_dim=decoder_mlp,
        encoder_attn_dims=None if set(attn_dims) == {embed} else tuple(attn_dims),
        encoder_mlp_dims=tuple(mlp_dims),
    )


def _load_torch(path, model_type: str | None):
    import torch

    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for bad files
        raise CheckpointError(
            f"{path}: cannot read as a PyTorch checkpoint with weights_only=True ({err}). "
            "samedge never unpickles code; re-save the state dict with torch.save(model.state_dict())"
        ) from err
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors (torch.save(model.state_dict())), "
                              f"found {type(state).__name__} with other values")
    try:
        detected = detect_official_type(state)
    except CheckpointError:
        if model_type is not None or "image_encoder.patch_embed.proj.weight" not in state:
            raise
        # Not an official size: a pruned SAM (e.g. SlimSAM's uniform releases); read its widths.
        return infer_sam_config(state, name=Path(path).stem), state
    if model_type is not None and model_type != detected:
        raise CheckpointError(
            f"{path} holds a {detected} model, but model type {model_type} was asked for; "
            f"pass --model-type {detected}"
        )
    return get_config(detected), state


def load_checkpoint(path, model_type: str | None = None):
    """Build a Sam (eval mode, `.config` set) from a samedge or official checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    kind = sniff_format(path)
    if kind == "samedge":
        config, state, metadata = _load_samedge(path)
        if model_type is not None and model_type != config.name:
            raise CheckpointError(
                f"{path} holds a {config.name} model, but model type {model_type} was asked for"
            )
        if metadata.get("compression") == "birkhoff":
            from .birkhoff.storage import build_compressed

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
    model = build_sam(config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(
            f"{path}: weights do not fit the {config.name} architecture: {str(err)[:500]}"
        ) from err
    return model
