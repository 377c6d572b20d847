"""A SAM 2 Hiera trunk with other widths than its release: what a pruned (SlimSAM) SAM 2 is.

sam2's configs fix Hiera's widths (embed_dim doubling at each stage, q/k/v as wide as the block's
output, MLP 4x); a pruned model keeps the layer layout and narrows the layers. `HieraWidths` is that
as data (kept in Sam2Config, so a checkpoint records it); `narrow_hiera` applies it to a freshly
built model (keeping each layer's leading channels: a checkpoint's weights replace them), and
`hiera_widths` reads it back from a model or `widths_from_state` from a plain state dict.
The modules stay sam2's own (MultiScaleBlock, MultiScaleAttention, MLP, FpnNeck), so the reference
of a pruned model is still upstream's code.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ..errors import CheckpointError


class HieraWidths(NamedTuple):
    stages: tuple[int, ...]  # residual width of each stage (patch embed = stage 0's)
    attn: tuple[int, ...]  # per block: q, k and v width (the attention's inner width; heads unchanged)
    mlp: tuple[int, ...]  # per block: MLP hidden width


def block_stages(trunk) -> list[int]:
    """The stage of each block (Hiera.stage_ends: the last block of each stage)."""
    return [sum(1 for end in trunk.stage_ends if end < index) for index in range(len(trunk.blocks))]


def hiera_widths(image_encoder) -> HieraWidths:
    trunk = image_encoder.trunk
    stages = [0] * len(trunk.stage_ends)
    for block, stage in zip(trunk.blocks, block_stages(trunk)):
        stages[stage] = block.mlp.layers[1].out_features
    attn = []
    for block in trunk.blocks:  # fused (sam2's) or split (compress/slimsam/hiera.py) attention
        attn.append(block.attn.qkv.out_features // 3 if hasattr(block.attn, "qkv") else block.attn.q.out_features)
    return HieraWidths(tuple(stages), tuple(attn), tuple(b.mlp.layers[0].out_features for b in trunk.blocks))


def widths_from_state(state: dict, prefix: str = "image_encoder.trunk.") -> HieraWidths:
    """The widths a plain state dict's Hiera tensors have (sam2's key names)."""
    blocks = sorted({int(key[len(prefix) + 7:].split(".")[0]) for key in state if key.startswith(prefix + "blocks.")})
    attn = tuple(state[f"{prefix}blocks.{i}.attn.qkv.weight"].shape[0] // 3 for i in blocks)
    mlp = tuple(state[f"{prefix}blocks.{i}.mlp.layers.0.weight"].shape[0] for i in blocks)
    outs = [state[f"{prefix}blocks.{i}.mlp.layers.1.weight"].shape[0] for i in blocks]
    stages = tuple(width for i, width in enumerate(outs) if i == 0 or width != outs[i - 1])
    return HieraWidths(stages, attn, mlp)


def _linear(layer: nn.Linear, out_features: int, in_features: int, groups: int = 1) -> nn.Linear:
    """`layer` cut to its leading channels; `groups` > 1: the leading ones of each output chunk (qkv)."""
    weight = layer.weight.detach().reshape(groups, -1, layer.in_features)[:, :out_features // groups, :in_features]
    new = nn.Linear(in_features, out_features, bias=layer.bias is not None)
    with torch.no_grad():
        new.weight.copy_(weight.reshape(out_features, in_features))
        if layer.bias is not None:
            new.bias.copy_(layer.bias.detach().reshape(groups, -1)[:, :out_features // groups].reshape(-1))
    return new


def _layer_norm(norm: nn.LayerNorm, width: int) -> nn.LayerNorm:
    new = nn.LayerNorm(width, eps=norm.eps)
    with torch.no_grad():
        new.weight.copy_(norm.weight[:width])
        new.bias.copy_(norm.bias[:width])
    return new


def _conv_in(conv: nn.Conv2d, in_channels: int = None, out_channels: int = None) -> nn.Conv2d:
    in_channels, out_channels = in_channels or conv.in_channels, out_channels or conv.out_channels
    new = nn.Conv2d(in_channels, out_channels, conv.kernel_size, conv.stride, conv.padding,
                    bias=conv.bias is not None)
    with torch.no_grad():
        new.weight.copy_(conv.weight[:out_channels, :in_channels])
        if conv.bias is not None:
            new.bias.copy_(conv.bias[:out_channels])
    return new


def check_widths(image_encoder, widths: HieraWidths) -> None:
    trunk = image_encoder.trunk
    depth, stages = len(trunk.blocks), len(trunk.stage_ends)
    if len(widths.stages) != stages or len(widths.attn) != depth or len(widths.mlp) != depth:
        raise CheckpointError(f"Hiera widths for {len(widths.stages)} stages and {len(widths.attn)}/"
                              f"{len(widths.mlp)} blocks do not fit a trunk of {stages} stages and {depth} blocks; "
                              "the checkpoint's config names another architecture")
    for index, (block, width) in enumerate(zip(trunk.blocks, widths.attn)):
        if width <= 0 or width % block.attn.num_heads:
            raise CheckpointError(f"Hiera block {index}: q/k/v width {width} is not a positive multiple of its "
                                  f"{block.attn.num_heads} heads")
    if any(w <= 0 for w in widths.stages + widths.mlp):
        raise CheckpointError(f"Hiera widths must be positive: {widths}")
    if any(a == b for a, b in zip(widths.stages, widths.stages[1:])):
        # MultiScaleBlock projects its shortcut only where dim != dim_out: equal widths would skip it.
        raise CheckpointError(f"Hiera stage widths {widths.stages}: neighbouring stages must differ")


def sync_attributes(image_encoder) -> None:
    """The width attributes sam2's modules keep beside their layers, set from the layers."""
    trunk, neck = image_encoder.trunk, image_encoder.neck
    for block in trunk.blocks:
        block.dim = block.norm1.normalized_shape[0]
        block.dim_out = block.norm2.normalized_shape[0]
        block.attn.dim, block.attn.dim_out = block.dim, block.dim_out
    trunk.channel_list = [trunk.blocks[i].dim_out for i in trunk.stage_ends[::-1]]
    neck.backbone_channel_list = list(trunk.channel_list)


def narrow_hiera(image_encoder, widths: HieraWidths) -> None:
    """Give a freshly built image encoder (trunk + FPN neck) the widths `widths` (in place)."""
    check_widths(image_encoder, widths)
    trunk, neck = image_encoder.trunk, image_encoder.neck
    first = widths.stages[0]
    trunk.patch_embed.proj = _conv_in(trunk.patch_embed.proj, out_channels=first)
    trunk.pos_embed = nn.Parameter(trunk.pos_embed.detach()[:, :first].clone())  # [1, C0, 7, 7]
    trunk.pos_embed_window = nn.Parameter(trunk.pos_embed_window.detach()[:, :first].clone())  # [1, C0, 8, 8]
    stage_of = block_stages(trunk)
    for index, block in enumerate(trunk.blocks):
        stage = stage_of[index]
        dim_out = widths.stages[stage]
        dim = widths.stages[stage - 1] if block.dim != block.dim_out else dim_out  # the stage's first block
        attn, mlp = widths.attn[index], widths.mlp[index]
        block.norm1, block.norm2 = _layer_norm(block.norm1, dim), _layer_norm(block.norm2, dim_out)
        block.attn.qkv = _linear(block.attn.qkv, 3 * attn, dim, groups=3)
        block.attn.proj = _linear(block.attn.proj, dim_out, attn)
        block.mlp.layers[0] = _linear(block.mlp.layers[0], mlp, dim_out)
        block.mlp.layers[1] = _linear(block.mlp.layers[1], dim_out, mlp)
        if hasattr(block, "proj"):
            block.proj = _linear(block.proj, dim_out, dim)
    for lateral, width in zip(neck.convs, widths.stages[::-1]):  # the neck's convs: lowest resolution first
        lateral.conv = _conv_in(lateral.conv, in_channels=width)
    sync_attributes(image_encoder)
