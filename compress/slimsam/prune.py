"""The two SlimSAM pruning steps, on torch-pruning's DependencyGraph and MetaPruner.

Step 1 (embedding): only the residual width shrinks: patch-embed output, positional
embedding, every block's norms, attention-proj and MLP-lin2 outputs, and the neck's
input. q/k/v and lin1 outputs, the neck convs' outputs and LayerNorm2d are not roots.

Step 2 (bottleneck): q/k/v outputs (the same head-dim positions in every head, so the
head count stays) with the proj input, then the MLP hidden width (lin1 out, lin2 in)
in a second pass with `round_to` (one pass with both breaks the attention widths).
The residual width is left alone: patch embed, proj/lin2 outputs and the convs are not
roots.

The relative-position tables are taken out while torch-pruning traces the model (they
make its graph walk hang, torch-pruning issue 337) and put back sliced to the head-dim
positions q kept, so the trained tables survive; `scale` follows the new head dim.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn

from .attention import SplitAttention

NORMALIZERS = ("mean", "max", "sum", "gaussian", "standarization")  # torch-pruning's spelling


@dataclass
class Widths:
    embed: int
    qkv: list[int]  # per block (q = k = v)
    mlp: list[int]  # per block

    @property
    def uniform(self) -> bool:
        return len(set(self.qkv)) == 1 and len(set(self.mlp)) == 1


def encoder_widths(encoder: nn.Module) -> Widths:
    blocks = encoder.blocks
    return Widths(embed=encoder.patch_embed.proj.out_channels,
                  qkv=[b.attn.q.out_features for b in blocks], mlp=[b.mlp.lin1.out_features for b in blocks])


@contextmanager
def _rel_pos_set_aside(encoder: nn.Module):
    """Hide rel_pos from torch-pruning; afterwards slice them to the kept q positions."""
    saved = {}
    for index, block in enumerate(encoder.blocks):
        attn = block.attn
        if attn.use_rel_pos:
            saved[index] = (attn.rel_pos_h, attn.rel_pos_w, attn.head_dim)
            del attn.rel_pos_h, attn.rel_pos_w  # unregister the parameters
            attn.rel_pos_h = attn.rel_pos_w = None
            attn.use_rel_pos = False
    kept_positions: dict[int, list[int]] = {}
    try:
        yield kept_positions
    finally:
        for index, (rel_h, rel_w, old_head_dim) in saved.items():
            attn = encoder.blocks[index].attn
            keep = kept_positions.get(index, list(range(old_head_dim)))
            attn.rel_pos_h = nn.Parameter(rel_h.detach()[:, keep].clone())
            attn.rel_pos_w = nn.Parameter(rel_w.detach()[:, keep].clone())
            attn.use_rel_pos = True


def _kept_head_positions(history, block: int, width_before: int, num_heads: int) -> list[int]:
    """Head-dim positions block `block`'s q/k/v kept (the same in every head).

    torch-pruning records only each group's root: for the q/k/v group that is the
    attention proj's input (q, k, v and proj-in are pruned with the same indices)."""
    roots = {(f"blocks.{block}.attn.proj", False), (f"blocks.{block}.attn.q", True)}
    pruned = set()
    for module_name, is_out, idxs in history:
        if (module_name, bool(is_out)) in roots:
            pruned.update(int(i) for i in idxs)
    kept = [i for i in range(width_before) if i not in pruned]
    head_dim = width_before // num_heads
    positions = [i for i in kept if i < head_dim]
    expected = [h * head_dim + p for h in range(num_heads) for p in positions]
    if kept != expected:
        raise RuntimeError(f"block {block}: heads kept different positions; expected head-dim pruning")
    return positions


def _pruner(encoder, example, importance, ratio, ignored, *, round_to=None, num_heads=None,
            global_pruning=False):
    return tp.pruner.MetaPruner(
        encoder, example, importance=importance, pruning_ratio=ratio, ignored_layers=ignored,
        round_to=round_to, num_heads=num_heads or {}, prune_head_dims=True, prune_num_heads=False,
        global_pruning=global_pruning,
        unwrapped_parameters=_unwrapped_parameters(encoder),
    )


def _unwrapped_parameters(encoder) -> list:
    """Parameters torch-pruning sees outside a module it knows, with their channel dim:
    the positional embedding [1, h, w, C] and the neck's LayerNorm2d weights [C]."""
    unwrapped = [(encoder.pos_embed, 3)] if encoder.pos_embed is not None else []
    for module in encoder.neck:
        if type(module).__name__ == "LayerNorm2d":
            unwrapped += [(module.weight, 0), (module.bias, 0)]
    return unwrapped


def _neck_and_norms(encoder) -> list[nn.Module]:
    return [m for m in encoder.neck.modules() if m is not encoder.neck]


def prune_embedding(encoder: nn.Module, ratio: float, importance, example: torch.Tensor,
                    round_to: int | None = None) -> list:
    """Step 1: shrink the residual (embedding) width by `ratio`. Returns the pruning history."""
    ignored = _neck_and_norms(encoder)
    for block in encoder.blocks:
        ignored += [block.attn.q, block.attn.k, block.attn.v, block.mlp.lin1]
    round_to = round_to or encoder.blocks[0].attn.num_heads
    with _rel_pos_set_aside(encoder):
        pruner = _pruner(encoder, example, importance, ratio, ignored, round_to=round_to)
        pruner.step()
        return pruner.DG.pruning_history()


def prune_bottleneck(encoder: nn.Module, ratio: float, importance, example: torch.Tensor,
                     mlp_round_to: int | None = None, global_pruning: bool = False) -> list:
    """Step 2: shrink q/k/v head dims and the MLP hidden width by `ratio`."""
    residual = [encoder.patch_embed.proj] + _neck_and_norms(encoder)
    for block in encoder.blocks:
        residual += [block.attn.proj, block.mlp.lin2]
    history = []
    with _rel_pos_set_aside(encoder) as kept_positions:
        # Pass 1, attention: q/k/v roots with their head structure, no round_to.
        before = {i: (b.attn.q.out_features, b.attn.num_heads) for i, b in enumerate(encoder.blocks)}
        heads = {}
        for block in encoder.blocks:
            for layer in (block.attn.q, block.attn.k, block.attn.v):
                heads[layer] = block.attn.num_heads
        ignored = residual + [b.mlp.lin1 for b in encoder.blocks]
        pruner = _pruner(encoder, example, importance, ratio, ignored, num_heads=heads,
                         global_pruning=global_pruning)
        pruner.step()
        history += pruner.DG.pruning_history()
        del pruner  # its traced graph holds every activation of the example forward pass
        for index, block in enumerate(encoder.blocks):
            width, num_heads = before[index]
            kept_positions[index] = _kept_head_positions(history, index, width, num_heads)
            block.attn.scale = block.attn.head_dim**-0.5
        # Pass 2, MLP: lin1 roots, rounded.
        ignored = residual + [layer for b in encoder.blocks for layer in (b.attn.q, b.attn.k, b.attn.v)]
        round_to = mlp_round_to or encoder.blocks[0].attn.num_heads
        pruner = _pruner(encoder, example, importance, ratio, ignored, round_to=round_to,
                         global_pruning=global_pruning)
        pruner.step()
        history += pruner.DG.pruning_history()
    for block in encoder.blocks:
        assert isinstance(block.attn, SplitAttention)
    return history
