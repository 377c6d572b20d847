"""Loading and saving SAM weights without ever running code from a file.

Two formats are read:
- samedge's own: one safetensors file whose metadata holds the architecture as JSON
  (compress.checkpoint_file; docs/formats.md), Birkhoff-compressed or not.
- official segment_anything checkpoints (`sam_vit_b_01ec64.pth` ...): a plain state
  dict read with `torch.load(weights_only=True)`; the architecture is checked against
  the tensor shapes so a vit_l file passed as vit_b fails with a clear message.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from .architectures import ARCHITECTURES, OFFICIAL_MODEL_TYPES, SamConfig, build_sam, get_config
from .birkhoff.storage import build_compressed
from .checkpoint_file import CheckpointError, check_weights, read_samedge, sniff_format, write_checkpoint


def save_checkpoint(model, path, config: SamConfig | None = None, extra_metadata: dict | None = None):
    """Write `model` (a segment_anything Sam) in samedge's format."""
    config = config or getattr(model, "config", None)
    if config is None:
        raise ValueError("the model has no .config; pass config= to save_checkpoint")
    write_checkpoint(model.state_dict(), path, config, extra_metadata)


def seeded_checkpoint(model_type: str, folder: Path) -> Path:
    """<folder>/<type>_seed0.safetensors: the architecture with seeded random weights, written
    once (the full-size architectures without a download: for trying the pipeline)."""
    path = Path(folder) / f"{model_type}_seed0.safetensors"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(build_sam(model_type, seed=0), path)
    return path


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
    model = build_sam(config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(
            f"{path}: weights do not fit the {config.name} architecture: {str(err)[:500]}"
        ) from err
    return model
