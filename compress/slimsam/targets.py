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
from .settings import HEAD_DIMS, STEP2_ATTENTION, SlimSettings, check_attention


def config_for(encoder: nn.Module, base: SamConfig, name: str) -> SamConfig:
    """The SamConfig of a (pruned) encoder: its embed width, head count and per-block widths."""
    embed = encoder.patch_embed.proj.out_channels
    attn = [b.attn.q.out_features if hasattr(b.attn, "q") else b.attn.qkv.out_features // 3 for b in encoder.blocks]
    mlp = [b.mlp.lin1.out_features for b in encoder.blocks]
    heads = {b.attn.num_heads for b in encoder.blocks}  # whole-head pruning changes it, in every block alike
    if len(heads) != 1:
        raise ValueError(f"encoder blocks with different head counts {sorted(heads)}: SamConfig records one")
    return base.replace(name=name, encoder_embed_dim=embed, encoder_num_heads=heads.pop(),
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

    attention = STEP2_ATTENTION  # step 2: head dims or whole heads (prune.py)
    label = "SAM 1's ViT encoder"

    def encoder(self, model) -> nn.Module:
        encoder = copy.deepcopy(model.image_encoder)
        split_attention(encoder)
        return encoder

    def model(self, sam, encoder: nn.Module, name: str):
        return with_encoder(sam, encoder, config_for(encoder, sam.config, name))

    def prune_embedding(self, encoder, ratio, importance, example) -> list:
        return prune_embedding(encoder, ratio, importance, example)

    def prune_bottleneck(self, encoder, ratio, importance, example, global_pruning: bool = False,
                         attention: str = HEAD_DIMS) -> list:
        return prune_bottleneck(encoder, ratio, importance, example, global_pruning=global_pruning,
                                attention=attention)

    def describe(self, model) -> str:
        config = model.config
        return (f"embed {config.encoder_embed_dim}, q/k/v {config.attn_dim(0)} in {config.encoder_num_heads} heads, "
                f"MLP {config.encoder_mlp_dims[0]}")


class Sam2Target(HieraTarget):
    """SAM 2's Hiera (hiera.py), step 2 in head dims only: whole heads are not offered there
    (Hiera doubles its heads per stage and sam2's config fixes each stage's count)."""

    attention = (HEAD_DIMS,)
    label = "SAM 2's Hiera encoder"

    def prune_bottleneck(self, encoder, ratio, importance, example, global_pruning: bool = False,
                         attention: str = HEAD_DIMS) -> list:
        _check_target_attention(self, attention)
        return super().prune_bottleneck(encoder, ratio, importance, example, global_pruning=global_pruning)


TARGETS = {"sam": VitTarget(), "sam2": Sam2Target()}  # by ModelFamily.name


def check_target_settings(target, settings: SlimSettings) -> None:
    """Refuse, before any pruning, step-2 settings `target` does not take."""
    check_attention(settings.attention, settings.global_pruning)
    _check_target_attention(target, settings.attention)


def _check_target_attention(target, attention: str) -> None:
    if attention not in target.attention:
        raise ValueError(f"whole-head pruning (attention={attention!r}: --heads, --compress slimsam-R-heads) is "
                         f"for SAM 1's ViT encoder; {target.label} prunes head dims only: use --compress "
                         "slimsam-50 or slimsam-77, or leave out --heads")


def target_for(model):
    family = type(model.config).family
    if family not in TARGETS:
        raise ValueError(f"SlimSAM prunes {' and '.join(sorted(TARGETS))} models, not {family}")
    return TARGETS[family]
