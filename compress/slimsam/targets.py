"""What SlimSAM prunes in each model family it takes: one target object per family.

The pipeline (pipeline.py) is the same for every family; a target says how to get the image
encoder in its prunable form (q/k/v split), how to prune its embedding (step 1) and bottleneck
(step 2) widths, and how to put a pruned encoder back into a model whose config records the
widths. SAM 1's ViT: attention.py and prune.py; SAM 2's Hiera: hiera.py.
"""

from __future__ import annotations

import copy

from torch import nn

from ..architectures import SamConfig
from .attention import fuse_attention, split_attention
from .hiera import HieraTarget
from .prune import prune_bottleneck, prune_embedding


def config_for(encoder: nn.Module, base: SamConfig, name: str) -> SamConfig:
    """The SamConfig of a (pruned) encoder: its embed width and per-block widths."""
    embed = encoder.patch_embed.proj.out_channels
    attn = [b.attn.q.out_features if hasattr(b.attn, "q") else b.attn.qkv.out_features // 3 for b in encoder.blocks]
    mlp = [b.mlp.lin1.out_features for b in encoder.blocks]
    return base.replace(name=name, encoder_embed_dim=embed,
                        encoder_attn_dims=None if set(attn) == {embed} else tuple(attn),
                        encoder_mlp_dims=tuple(mlp))


def with_encoder(sam: nn.Module, encoder: nn.Module, config: SamConfig) -> nn.Module:
    """A Sam with `encoder` (attention fused back where it can be) and the other parts of `sam`."""
    model = copy.deepcopy(sam)
    encoder = copy.deepcopy(encoder)
    fuse_attention(encoder)
    model.image_encoder = encoder
    model.config = config
    return model.eval()


class VitTarget:
    """SAM 1's ViT image encoder (segment_anything's, with SplitAttention while pruned)."""

    def encoder(self, model) -> nn.Module:
        encoder = copy.deepcopy(model.image_encoder)
        split_attention(encoder)
        return encoder

    def model(self, sam, encoder: nn.Module, name: str):
        return with_encoder(sam, encoder, config_for(encoder, sam.config, name))

    def prune_embedding(self, encoder, ratio, importance, example) -> list:
        return prune_embedding(encoder, ratio, importance, example)

    def prune_bottleneck(self, encoder, ratio, importance, example, global_pruning: bool = False) -> list:
        return prune_bottleneck(encoder, ratio, importance, example, global_pruning=global_pruning)

    def describe(self, model) -> str:
        return f"embed {model.config.encoder_embed_dim}, MLP {model.config.encoder_mlp_dims[0]}"


TARGETS = {"sam": VitTarget(), "sam2": HieraTarget()}  # by ModelFamily.name


def target_for(model):
    family = type(model.config).family
    if family not in TARGETS:
        raise ValueError(f"SlimSAM prunes {' and '.join(sorted(TARGETS))} models, not {family}")
    return TARGETS[family]
