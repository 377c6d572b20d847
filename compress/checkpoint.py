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
        f"{OFFICIAL_MODEL_TYPES}; a pruned model (SlimSAM) loads without --model-type, its widths read from the file"
    )


# What a state dict cannot tell: attention head counts are not stored in any tensor, and
# segment_anything keeps pixel_mean/std out of the state dict (non-persistent buffers).
# The encoder's head count is read from its relative-position tables; the decoder's is
# known only for SAM's own decoder, which the SAM family (official sizes, SlimSAM and
# other encoder-only compressions) shares unchanged.
_DECODER_FIELDS = ("prompt_embed_dim", "decoder_depth", "decoder_mlp_dim", "mask_in_chans", "iou_head_depth",
                   "iou_head_hidden_dim", "num_multimask_outputs")


def _count(state: dict, prefix: str) -> int:
    """How many numbered submodules `prefix.N.` the state dict holds."""
    return len({k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix)})


def infer_sam_config(state: dict, name: str = "sam-pruned") -> SamConfig:
    """A SAM architecture read from a state dict's shapes: for pruned models such as the
    published uniform SlimSAM checkpoints (vit_p50 / vit_p77), whose widths are not official.

    Only what the tensors determine is read; a decoder other than SAM's is refused, since
    its head count cannot be known (pass the architecture instead)."""
    try:
        patch_weight = state["image_encoder.patch_embed.proj.weight"]  # [E, 3, p, p]
        embed, patch = patch_weight.shape[0], patch_weight.shape[-1]
        grid = state["image_encoder.pos_embed"].shape[1]
        depth = _count(state, "image_encoder.blocks.")
        attn_dims, mlp_dims, head_dims, rel_rows = [], [], [], []
        for i in range(depth):
            prefix = f"image_encoder.blocks.{i}."
            qkv = state.get(prefix + "attn.qkv.weight")
            attn_dims.append(qkv.shape[0] // 3 if qkv is not None else state[prefix + "attn.q.weight"].shape[0])
            mlp_dims.append(state[prefix + "mlp.lin1.weight"].shape[0])
            head_dims.append(state[prefix + "attn.rel_pos_h"].shape[1])
            rel_rows.append(state[prefix + "attn.rel_pos_h"].shape[0])
        decoder = {
            "prompt_embed_dim": state["image_encoder.neck.0.weight"].shape[0],
            "decoder_depth": _count(state, "mask_decoder.transformer.layers."),
            "decoder_mlp_dim": state["mask_decoder.transformer.layers.0.mlp.lin1.weight"].shape[0],
            "mask_in_chans": state["prompt_encoder.mask_downscaling.3.weight"].shape[0],
            "iou_head_depth": _count(state, "mask_decoder.iou_prediction_head.layers."),
            "iou_head_hidden_dim": state["mask_decoder.iou_prediction_head.layers.0.weight"].shape[0],
            "num_multimask_outputs": state["mask_decoder.mask_tokens.weight"].shape[0] - 1,
        }
    except (KeyError, AttributeError, IndexError) as err:
        raise CheckpointError(f"not a SAM state dict: no {err}") from None
    heads = {a // h for a, h in zip(attn_dims, head_dims)}
    windows = {(r + 1) // 2 for r in rel_rows if r != 2 * grid - 1}
    if len(heads) != 1 or len(windows) > 1:
        raise CheckpointError("SAM state dict with blocks of different head counts or windows; not supported")
    sam = get_config("vit_b")
    if decoder != {field: getattr(sam, field) for field in _DECODER_FIELDS}:
        widths = ", ".join(f"{k} {v}" for k, v in decoder.items())
        raise CheckpointError(
            f"this state dict's decoder is not SAM's ({widths}), and a state dict does not store the decoder's "
            f"attention head count: pass its architecture with --model-type (one of {sorted(ARCHITECTURES)}), "
            "or save it in samedge's format with compress.save_checkpoint(model, path, config=...)"
        )
    return sam.replace(
        name=name, img_size=grid * patch, patch_size=patch, encoder_embed_dim=embed, encoder_depth=depth,
        encoder_num_heads=heads.pop(), window_size=windows.pop() if windows else sam.window_size,
        encoder_global_attn_indexes=tuple(i for i, r in enumerate(rel_rows) if r == 2 * grid - 1),
        encoder_attn_dims=None if set(attn_dims) == {embed} else tuple(attn_dims),
        encoder_mlp_dims=tuple(mlp_dims), **decoder,
    )


def _unpickling_reason(err: Exception) -> str:
    """torch's own reason, without its advice to retry with weights_only=False (never do)."""
    text = str(err)
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1]
    reason = next((line.strip() for line in text.splitlines() if line.strip()), type(err).__name__)
    return reason.split(" Please use", 1)[0][:200]  # torch's ways to allow the objects: not for us


def _load_torch(path, model_type: str | None):
    import warnings

    import torch

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
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors (torch.save(model.state_dict())), "
                              f"found {type(state).__name__} with other values")
    try:
        detected = detect_official_type(state)
    except CheckpointError:
        if model_type is not None and model_type not in OFFICIAL_MODEL_TYPES:
            return get_config(model_type), state  # the caller's architecture; strict loading checks it
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


def check_weights(state: dict, path, packed_suffix: str | None = None) -> None:
    """Refuse integer or non-finite weights: loading would truncate or spread them silently.

    fp16/bf16 weights are fine (upcast on loading). Tensors named `*<packed_suffix>` are
    packed integer codes (Birkhoff) and must be uint8 instead."""
    import torch

    for name, tensor in state.items():
        if packed_suffix and name.endswith(packed_suffix):
            if tensor.dtype != torch.uint8:
                raise CheckpointError(f"{path}: {name} holds {tensor.dtype} codes, not uint8; re-compress the model")
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


def load_checkpoint(path, model_type: str | None = None):
    """Build a Sam (eval mode, `.config` set) from a samedge or official checkpoint."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory; pass the checkpoint file itself "
                              "(a samedge .safetensors or an official .pth)")
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
    check_weights(state, path)
    model = build_sam(config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(
            f"{path}: weights do not fit the {config.name} architecture: {str(err)[:500]}"
        ) from err
    return model
