"""SlimSAM's alternate slimming on SAM 2's Hiera image encoder (trunk + FPN neck).

What can be pruned, and what is pruned here:

- **Stage widths** (step 1, SlimSAM's "embedding"). Inside a stage every block adds into one
  residual stream, so its width is one group: the patch embed and positional tables (stage 0),
  each block's norms, attention-proj and MLP-lin2 outputs, the next stage's first block's norm1,
  q/k/v and shortcut-proj inputs, and the neck's lateral conv input. The stage transitions do
  not tie neighbouring stages: the shortcut is proj (Linear dim -> dim_out) then a max-pool, and
  the attention's q is pooled likewise; pooling works per channel, so it only carries the new
  stage's channels through. Each stage's width is thus its own group, pruned by the ratio
  (torch-pruning's DependencyGraph finds these groups; a test checks every output keeps its
  shape). The neck's lateral convs keep their 256 outputs (the decoder and memory take them).
- **Attention inner widths** (step 2, "bottleneck"): per block, q, k, v outputs and the proj
  input, the same head-dim positions in every head (the head count stays: Hiera doubles its
  heads per stage and sam2's attention reshapes by it). The q pooling of a stage's first block
  pools per channel, so it follows q.
- **MLP hidden widths** (step 2): per block, lin1 out and lin2 in (second pass, rounded).

Not pruned: the neck's output width and everything after the image encoder (prompt encoder,
mask decoder, memory), as SlimSAM keeps SAM's decoder.

Hiera's published widths (embed_dim C doubling at each stage, q/k/v as wide as the block
output, MLP 4x) become: each stage width, q/k/v width and MLP width times (1 - ratio),
rounded down to a multiple of the rounding unit (stage and MLP widths: 8; q/k/v: the head count, as the same head dims
are pruned in every head), so a uniform ratio keeps
Hiera's doubling ladder up to the rounding: hiera_t at 50 % is 48/96/192/384, at 77 % 16/40/88/176;
hiera_b+ at 50 % 56/112/224/448, at 77 % 24/48/96/200.

q/k/v are split into three Linear layers while pruning and distilling (`SplitMultiScaleAttention`,
the same computation), and fused back into sam2's MultiScaleAttention afterwards, so a pruned
model is sam2's modules with narrower layers (compress/families/sam2_widths.py builds it from
its config).
"""

from __future__ import annotations

import copy
import math

import torch
import torch_pruning as tp
from torch import nn

from ..families.sam2_widths import HieraWidths, hiera_widths, sync_attributes
from .attention import _linear  # a Linear holding given weights, as SAM 1's split attention builds them

STAGE_ROUND_TO = 8  # stage widths stay multiples of 8 (vector units; hiera_t's 96-wide stage 0 at 77 %: 16)
MLP_ROUND_TO = 8


class SplitMultiScaleAttention(nn.Module):
    """sam2's MultiScaleAttention with q, k and v as separate layers (and an explicit softmax,
    which torch-pruning's graph follows)."""

    def __init__(self, q: nn.Linear, k: nn.Linear, v: nn.Linear, proj: nn.Linear, num_heads: int, q_pool):
        super().__init__()
        self.q, self.k, self.v, self.proj = q, k, v, proj
        self.num_heads, self.q_pool = num_heads, q_pool

    def _heads(self, t: torch.Tensor) -> torch.Tensor:  # [B, H, W, heads*d] -> [B, heads, HW, d]
        batch, height, width, _ = t.shape
        return t.reshape(batch, height * width, self.num_heads, -1).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.q(x)  # [B, H, W, d_qkv]
        if self.q_pool is not None:  # the stage's first block: q at half resolution (per-channel max-pool)
            q = self.q_pool(q.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        batch, height, width, _ = q.shape
        q, k, v = self._heads(q), self._heads(self.k(x)), self._heads(self.v(x))
        attn = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)  # [B, heads, HW_q, HW]
        out = attn.softmax(dim=-1) @ v  # [B, heads, HW_q, d]
        return self.proj(out.transpose(1, 2).reshape(batch, height, width, -1))


def split_attention(image_encoder: nn.Module) -> None:
    """Each block's MultiScaleAttention -> SplitMultiScaleAttention (same weights)."""
    for block in image_encoder.trunk.blocks:
        attn = block.attn
        if isinstance(attn, SplitMultiScaleAttention):
            continue
        weights = attn.qkv.weight.detach().chunk(3)  # [3 * d, C] -> q, k, v
        biases = attn.qkv.bias.detach().chunk(3) if attn.qkv.bias is not None else (None,) * 3
        layers = [_linear(w, b) for w, b in zip(weights, biases)]
        block.attn = SplitMultiScaleAttention(*layers, attn.proj, attn.num_heads, attn.q_pool)


def fuse_attention(image_encoder: nn.Module) -> None:
    """sam2's MultiScaleAttention back in every block (its qkv as wide as the split q/k/v)."""
    from sam2.modeling.backbones.hieradet import MultiScaleAttention

    for block in image_encoder.trunk.blocks:
        split = block.attn
        if not isinstance(split, SplitMultiScaleAttention):
            continue
        fused = MultiScaleAttention(split.q.in_features, split.proj.out_features, split.num_heads, split.q_pool)
        bias = None
        if split.q.bias is not None:
            bias = torch.cat([split.q.bias, split.k.bias, split.v.bias]).detach()
        fused.qkv = _linear(torch.cat([split.q.weight, split.k.weight, split.v.weight]).detach(), bias)
        fused.proj = split.proj
        block.attn = fused
    sync_attributes(image_encoder)


class HieraFeatures(nn.Module):
    """The image encoder as the distillation sees it: image [1, 3, S, S] -> one tensor holding
    the neck's three levels (strides 4, 8, 16; 256 channels each), each level's values scaled
    by sqrt(total / (levels * its size)) so that an MSE over this tensor is the mean of the
    three levels' MSEs (otherwise the stride-4 level, 16x the stride-16 one, would dominate).
    `blocks`: the trunk's blocks (for the feature taps of the distillation)."""

    def __init__(self, image_encoder: nn.Module):
        super().__init__()
        self.image_encoder = image_encoder

    @property
    def blocks(self) -> nn.ModuleList:
        return self.image_encoder.trunk.blocks

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        levels = self.image_encoder(image)["backbone_fpn"]  # [B, 256, 4g, 4g], [B, 256, 2g, 2g], [B, 256, g, g]
        batch = image.shape[0]
        sizes = [level[0].numel() for level in levels]
        total = sum(sizes)
        return torch.cat([level.reshape(batch, -1) * math.sqrt(total / (len(levels) * size))
                          for level, size in zip(levels, sizes)], dim=1)


def features(image_encoder: nn.Module, split: bool = True) -> HieraFeatures:
    """A copy of `image_encoder` as HieraFeatures (with split attention: what is pruned)."""
    encoder = copy.deepcopy(image_encoder)
    if split:
        split_attention(encoder)
    return HieraFeatures(encoder)


def _pruner(module, example, importance, ratio, ignored, *, round_to=None, num_heads=None, unwrapped=()):
    return tp.pruner.MetaPruner(
        module, example, importance=importance, pruning_ratio=ratio, ignored_layers=ignored,
        round_to=round_to, num_heads=num_heads or {}, prune_head_dims=True, prune_num_heads=False,
        unwrapped_parameters=list(unwrapped))


def _not_trunk(image_encoder) -> list[nn.Module]:
    """The neck's convs: their 256 outputs are what the decoder takes."""
    return [lateral.conv for lateral in image_encoder.neck.convs]


def _stage_dims(model: HieraFeatures) -> list:
    trunk = model.image_encoder.trunk
    return [(trunk.pos_embed, 1), (trunk.pos_embed_window, 1)]  # [1, C0, h, w]: channel dim 1


def prune_stages(model: HieraFeatures, ratio: float, importance, example: torch.Tensor) -> list:
    """Step 1: each stage's residual width shrinks by `ratio` (rounded to STAGE_ROUND_TO)."""
    encoder = model.image_encoder
    ignored = _not_trunk(encoder)
    for block in encoder.trunk.blocks:
        ignored += [block.attn.q, block.attn.k, block.attn.v, block.mlp.layers[0]]
    pruner = _pruner(model, example, importance, ratio, ignored, round_to=STAGE_ROUND_TO,
                     unwrapped=_stage_dims(model))
    pruner.step()
    sync_attributes(encoder)
    return pruner.DG.pruning_history()


def prune_bottlenecks(model: HieraFeatures, ratio: float, importance, example: torch.Tensor) -> list:
    """Step 2: q/k/v head dims (heads kept), then the MLP hidden widths (rounded to MLP_ROUND_TO)."""
    encoder = model.image_encoder
    blocks = encoder.trunk.blocks
    residual = [encoder.trunk.patch_embed.proj] + _not_trunk(encoder)
    for block in blocks:
        residual += [block.attn.proj, block.mlp.layers[1]] + ([block.proj] if hasattr(block, "proj") else [])
    heads = {layer: block.attn.num_heads for block in blocks for layer in (block.attn.q, block.attn.k, block.attn.v)}
    history = []
    # Pass 1, attention: q/k/v with their head structure, no rounding (it would break the head widths).
    pruner = _pruner(model, example, importance, ratio, residual + [b.mlp.layers[0] for b in blocks],
                     num_heads=heads, unwrapped=_stage_dims(model))
    pruner.step()
    history += pruner.DG.pruning_history()
    del pruner  # its traced graph holds the example's activations
    # Pass 2, MLP: lin1 roots, rounded.
    qkv = [layer for b in blocks for layer in (b.attn.q, b.attn.k, b.attn.v)]
    pruner = _pruner(model, example, importance, ratio, residual + qkv, round_to=MLP_ROUND_TO,
                     unwrapped=_stage_dims(model))
    pruner.step()
    history += pruner.DG.pruning_history()
    sync_attributes(encoder)
    return history


def widths_of(model) -> HieraWidths:
    return hiera_widths(model.image_encoder)


class HieraTarget:
    """SlimSAM's view of a SAM 2 model (compress/slimsam/targets.py): what is pruned and distilled is
    `HieraFeatures` around a split-attention copy of the image encoder."""

    def encoder(self, model) -> HieraFeatures:
        return features(model.image_encoder)

    def model(self, sam, encoder: HieraFeatures, name: str):
        """`sam` with `encoder`'s image encoder (attention fused back) and a config recording its widths."""
        model = copy.deepcopy(sam)
        image_encoder = copy.deepcopy(encoder.image_encoder)
        fuse_attention(image_encoder)
        model.image_encoder = image_encoder
        model.config = sam.config.with_widths(hiera_widths(image_encoder), name)
        return model.eval()

    def prune_embedding(self, encoder: HieraFeatures, ratio: float, importance, example: torch.Tensor) -> list:
        return prune_stages(encoder, ratio, importance, example)

    def prune_bottleneck(self, encoder: HieraFeatures, ratio: float, importance, example: torch.Tensor,
                         global_pruning: bool = False) -> list:
        if global_pruning:
            raise ValueError("global SlimSAM pruning (--global-pruning) ranks head dims across blocks of equal "
                             "head counts; Hiera's head count doubles per stage: prune SAM 2 locally (without it)")
        return prune_bottlenecks(encoder, ratio, importance, example)

    def describe(self, model) -> str:
        widths = hiera_widths(model.image_encoder)
        return f"Hiera stages {list(widths.stages)}, q/k/v {list(widths.attn)}, MLP {list(widths.mlp)}"
