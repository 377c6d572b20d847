"""The SAM 1 family: the official ViT-B/L/H, SlimSAM-pruned SAMs, the demo and test models
(compress/architectures.py holds their configs and the builder)."""

from __future__ import annotations

from ..architectures import ARCHITECTURES, OFFICIAL_MODEL_TYPES, SamConfig, build_sam, get_config
from ..errors import CheckpointError
from ..recipe import COMPRESSIONS
from .registry import ModelFamily, NumpyPrompts, Piece, register
from .sam_pieces import batch_decoder_piece, decoder_piece, encoder_piece

# The resize rule runtime/geometry.py applies (and the decoders' graphs assume).
RESIZE = "longest_side"


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



class SamFamily(ModelFamily):
    name = "sam"
    config_class = SamConfig
    model_types = ARCHITECTURES
    compressions = COMPRESSIONS
    client_format = "sam"

    def build(self, config, seed=None):
        return build_sam(config, seed)

    def detect(self, state, model_type=None, name="sam-pruned"):
        if "image_encoder.patch_embed.proj.weight" not in state or "mask_decoder.hf_token.weight" in state:
            return None  # not a ViT SAM, or SAM-HQ's (its HQ token: compress/families/sam_hq.py)
        try:
            detected = detect_official_type(state)
        except CheckpointError:
            if model_type is not None and model_type not in ARCHITECTURES:
                raise CheckpointError(f"the file holds a SAM (ViT) model, but model type {model_type} is another "
                                      f"family's; pass one of {sorted(ARCHITECTURES)}, or no --model-type") from None
            if model_type is not None and model_type not in OFFICIAL_MODEL_TYPES:
                return get_config(model_type)  # the caller's architecture; strict loading checks it
            if model_type is not None:
                raise
            # Not an official size: a pruned SAM (e.g. SlimSAM's uniform releases); read its widths.
            return infer_sam_config(state, name=name)
        if model_type is not None and model_type != detected:
            raise CheckpointError(f"the file holds a {detected} model, but model type {model_type} was asked for; "
                                  f"pass --model-type {detected}")
        return get_config(detected)

    def pieces(self, model) -> list[Piece]:
        return [encoder_piece(model), decoder_piece(model, "decoder.onnx"),
                decoder_piece(model, "decoder_single.onnx", return_single_mask=True), batch_decoder_piece(model)]

    def manifest(self, config) -> dict:
        return {
            "preprocessing": {"img_size": config.img_size, "pixel_mean": list(config.pixel_mean),
                              "pixel_std": list(config.pixel_std), "resize_rule": RESIZE,
                              "resize": "longest side to img_size, Pillow bilinear; pad bottom/right with zeros"},
            "decoder": {"signature": "official segment_anything ONNX decoder (opset 17)",
                        "masks": {"decoder.onnx": 4, "decoder_single.onnx": 1, "decoder_batch.onnx": 4},
                        # N prompt sets per call, low-res masks only; not official.
                        "batch": "decoder_batch.onnx", "low_res_size": config.low_res_size,
                        "features": ["image_embeddings"], "prompt_layout": "sam"},
        }

    def reference(self, model):
        from segment_anything import SamPredictor

        return NumpyPrompts(SamPredictor(model))

    def reference_mask_generator(self, model, **settings):
        from segment_anything import SamAutomaticMaskGenerator

        return SamAutomaticMaskGenerator(model, **settings)


SAM = register(SamFamily())
