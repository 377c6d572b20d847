"""SAM architectures as plain data, and the one function that builds a model from them.

A `SamConfig` is what samedge stores in a checkpoint's metadata, so every model we
write (original, pruned, compressed) can be rebuilt with no pickled code.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import ClassVar

import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from torch import nn

from .config_data import ConfigData
from .slimsam.attention import SplitAttention

# Pixel statistics of the official SAM models (ImageNet, in 0..255 units).
SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class SamConfig(ConfigData):
    name: str
    img_size: int
    patch_size: int
    encoder_embed_dim: int
    encoder_depth: int
    encoder_num_heads: int
    encoder_global_attn_indexes: tuple[int, ...]
    window_size: int
    prompt_embed_dim: int
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_num_heads: int = 8
    mlp_ratio: float = 4.0
    mask_in_chans: int = 16
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    num_multimask_outputs: int = 3
    pixel_mean: tuple[float, float, float] = SAM_PIXEL_MEAN
    pixel_std: tuple[float, float, float] = SAM_PIXEL_STD
    # Pruned encoders (SlimSAM): per-block q/k/v widths and MLP hidden widths. None: the
    # standard ones (embed dim and int(embed dim * mlp_ratio)).
    encoder_attn_dims: tuple[int, ...] | None = None
    encoder_mlp_dims: tuple[int, ...] | None = None

    family: ClassVar[str] = "sam"  # compress/families/sam.py

    def attn_dim(self, block: int) -> int:
        return self.encoder_attn_dims[block] if self.encoder_attn_dims else self.encoder_embed_dim

    def mlp_dim(self, block: int) -> int:
        if self.encoder_mlp_dims:
            return self.encoder_mlp_dims[block]
        return int(self.encoder_embed_dim * self.mlp_ratio)

    @property
    def embedding_size(self) -> int:
        """Side of the image-embedding grid (64 for the official models)."""
        return self.img_size // self.patch_size

    @property
    def low_res_size(self) -> int:
        """Side of the low-resolution mask logits (256 for the official models)."""
        return 4 * self.embedding_size


def _official(name, embed_dim, depth, num_heads, global_attn_indexes) -> SamConfig:
    return SamConfig(
        name=name,
        img_size=1024,
        patch_size=16,
        encoder_embed_dim=embed_dim,
        encoder_depth=depth,
        encoder_num_heads=num_heads,
        encoder_global_attn_indexes=global_attn_indexes,
        window_size=14,
        prompt_embed_dim=256,
    )


ARCHITECTURES: dict[str, SamConfig] = {
    "vit_b": _official("vit_b", 768, 12, 12, (2, 5, 8, 11)),
    "vit_l": _official("vit_l", 1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": _official("vit_h", 1280, 32, 16, (7, 15, 23, 31)),
    # The bundled demonstration model (compress/demo): same classes, 256 px input.
    "demo": SamConfig(
        name="demo",
        img_size=256,
        patch_size=16,
        encoder_embed_dim=192,
        encoder_depth=4,
        encoder_num_heads=3,
        encoder_global_attn_indexes=(1, 3),
        window_size=8,
        prompt_embed_dim=128,
        decoder_mlp_dim=512,
        decoder_num_heads=4,
    ),
    # A model small enough for unit tests to build and export in about a second.
    "tiny": SamConfig(
        name="tiny",
        img_size=64,
        patch_size=8,
        encoder_embed_dim=32,
        encoder_depth=2,
        encoder_num_heads=2,
        encoder_global_attn_indexes=(1,),
        window_size=4,
        prompt_embed_dim=32,
        decoder_mlp_dim=64,
        decoder_num_heads=2,
        iou_head_hidden_dim=32,
    ),
}

OFFICIAL_MODEL_TYPES = ("vit_b", "vit_l", "vit_h")


def get_config(model_type: str) -> SamConfig:
    try:
        return ARCHITECTURES[model_type]
    except KeyError:
        raise ValueError(
            f"unknown model type {model_type!r}; choose one of {sorted(ARCHITECTURES)}"
        ) from None


def build_sam(config: SamConfig | str, seed: int | None = None):
    """Build a `segment_anything` Sam in eval mode from a config (random weights).

    With `seed` the random initialisation is reproducible, which is how tests get
    full-size architectures without downloadable weights.
    """

    if isinstance(config, str):
        config = get_config(config)
    if seed is not None:
        torch.manual_seed(seed)
    grid = config.embedding_size
    sam = Sam(
        image_encoder=ImageEncoderViT(
            img_size=config.img_size,
            patch_size=config.patch_size,
            embed_dim=config.encoder_embed_dim,
            depth=config.encoder_depth,
            num_heads=config.encoder_num_heads,
            mlp_ratio=config.mlp_ratio,
            out_chans=config.prompt_embed_dim,
            qkv_bias=True,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            use_rel_pos=True,
            window_size=config.window_size,
            global_attn_indexes=config.encoder_global_attn_indexes,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=config.prompt_embed_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(config.img_size, config.img_size),
            mask_in_chans=config.mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=config.num_multimask_outputs,
            transformer=TwoWayTransformer(
                depth=config.decoder_depth,
                embedding_dim=config.prompt_embed_dim,
                mlp_dim=config.decoder_mlp_dim,
                num_heads=config.decoder_num_heads,
            ),
            transformer_dim=config.prompt_embed_dim,
            iou_head_depth=config.iou_head_depth,
            iou_head_hidden_dim=config.iou_head_hidden_dim,
        ),
        pixel_mean=list(config.pixel_mean),
        pixel_std=list(config.pixel_std),
    )
    _apply_block_widths(sam.image_encoder, config)
    # The relative-position tables start at zero in segment_anything; random values
    # make seeded full-size models exercise them like trained weights do.
    if seed is not None:
        with torch.no_grad():
            for name, param in sam.image_encoder.named_parameters():
                if "rel_pos" in name:
                    param.normal_(0.0, 0.02)
    sam.eval()
    sam.config = config
    return sam


def _apply_block_widths(encoder, config: SamConfig) -> None:
    """Give pruned blocks their own q/k/v and MLP widths (randomly initialised layers).

    Blocks whose q/k/v width equals the embed dim keep segment_anything's Attention (its
    fused qkv layout, so published uniform SlimSAM state dicts load as they are);
    others get the split-q/k/v attention used while pruning.
    """
    embed = config.encoder_embed_dim
    for index, block in enumerate(encoder.blocks):
        hidden = config.mlp_dim(index)
        if block.mlp.lin1.out_features != hidden:
            block.mlp.lin1, block.mlp.lin2 = nn.Linear(embed, hidden), nn.Linear(hidden, embed)
        width = config.attn_dim(index)
        if width != embed:
            attn = block.attn
            heads = attn.num_heads
            rel = [nn.Parameter(nn.init.zeros_(p.new_empty(p.shape[0], width // heads)))
                   for p in (attn.rel_pos_h, attn.rel_pos_w)]
            block.attn = SplitAttention(nn.Linear(embed, width), nn.Linear(embed, width), nn.Linear(embed, width),
                                        nn.Linear(width, embed), heads, *rel)


def parameter_count(model) -> int:
    """Weights of the model, a HyperLinear's encoded weight counted as the dense one it stands for."""
    count = sum(p.numel() for p in model.parameters())
    for module in model.modules():
        if hasattr(module, "codes") and hasattr(module, "in_features"):
            count += module.in_features * module.out_features
    return count
