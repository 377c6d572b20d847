"""The two SlimSAM pruning steps, on torch-pruning's DependencyGraph and MetaPruner.

Step 1 (embedding): only the residual width shrinks: patch-embed output, positional
embedding, every block's norms, attention-proj and MLP-lin2 outputs, and the neck's
input. q/k/v and lin1 outputs, the neck convs' outputs and LayerNorm2d are not roots.

Step 2 (bottleneck): q/k/v outputs with the proj input, then the MLP hidden width (lin1
out, lin2 in) in a second pass with `round_to` (one pass with both breaks the attention
widths). The residual width is left alone: patch embed, proj/lin2 outputs and the convs
are not roots. What step 2 removes from q/k/v (`attention`):

- "head-dims" (the paper's): the same head-dim positions in every head, so the head count
  stays. Width rule (torch-pruning's local rule, `head_dim_width`): each head keeps
  int(head_dim * (1 - ratio)) dims; vit_b at 77 %: 12 x 14 = 168, at 50 %: 12 x 32 = 384.
- "heads": fewer, wider heads at the same total width (`whole_heads_layout`). With ratio r
  and H heads, keep `kept = ceil(H * (1 - r))` heads (at least 1), chosen by importance
  (a head's score is the sum of its channels' group scores over q, k, v and the proj input);
  then prune head dims so that the q/k/v width is the "head-dims" width above: per-head dim
  = that width / kept. If it does not divide, the per-head dim is rounded down to a multiple
  of 2 (a warning says so) and the width ends a little under the head-dim recipe's. vit_b
  at 77 %: 3 heads x 56 = 168; at 50 %: 6 heads x 64 = 384. The kept head-dim positions are
  the same in every kept head. Head counts are uniform across blocks (local pruning; global
  pruning is refused), since SamConfig records one encoder head count.

The relative-position tables are taken out while torch-pruning traces the model (they
make its graph walk hang, torch-pruning issue 337) and put back sliced to the head-dim
positions q kept, so the trained tables survive; `scale` follows the new head dim.
"""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn

from .attention import SplitAttention
from .settings import HEAD_DIMS, HEADS, check_attention

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


def _kept_channels(history, block: int, width_before: int) -> list[int]:
    """The q/k/v channels (of `width_before`) block `block` kept in one pruning pass.

    torch-pruning records only each group's root: for the q/k/v group that is the
    attention proj's input (q, k, v and proj-in are pruned with the same indices)."""
    roots = {(f"blocks.{block}.attn.proj", False), (f"blocks.{block}.attn.q", True)}
    pruned = set()
    for module_name, is_out, idxs in history:
        if (module_name, bool(is_out)) in roots:
            pruned.update(int(i) for i in idxs)
    return [i for i in range(width_before) if i not in pruned]


def _head_layout(kept: list[int], head_dim: int, block: int) -> tuple[list[int], list[int]]:
    """(heads, positions) of kept q/k/v channels in the original numbering: every kept head
    must keep the same head-dim positions (what the rel-pos slicing and the reshape assume)."""
    if not kept:
        raise RuntimeError(f"block {block}: pruning removed every q/k/v channel; choose a smaller ratio")
    heads = sorted({i // head_dim for i in kept})
    positions = [i % head_dim for i in kept if i // head_dim == heads[0]]
    if kept != [h * head_dim + p for h in heads for p in positions]:
        raise RuntimeError(f"block {block}: heads kept different head-dim positions; expected the same in each")
    return heads, positions


def _pruner(encoder, example, importance, ratio, ignored, *, round_to=None, num_heads=None,
            global_pruning=False, head_ratio=0.0):
    """MetaPruner; `head_ratio` > 0 removes that share of whole heads instead of head dims."""
    return tp.pruner.MetaPruner(
        encoder, example, importance=importance, pruning_ratio=ratio, ignored_layers=ignored,
        round_to=round_to, num_heads=num_heads or {}, prune_head_dims=head_ratio == 0,
        prune_num_heads=head_ratio > 0, head_pruning_ratio=head_ratio, global_pruning=global_pruning,
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


def head_dim_width(num_heads: int, head_dim: int, ratio: float) -> int:
    """The q/k/v width "head-dims" pruning gives: each head keeps int(head_dim * (1 - ratio)) dims
    (torch-pruning's local rule, n_pruned = n - int(n * (1 - ratio)), over one head's dims)."""
    return num_heads * int(head_dim * (1 - ratio))


@dataclass(frozen=True)
class HeadLayout:
    heads: int  # kept per block
    head_dim: int
    rounded: bool  # the per-head dim was rounded down: width under the head-dim recipe's

    @property
    def width(self) -> int:
        return self.heads * self.head_dim


def whole_heads_layout(num_heads: int, head_dim: int, ratio: float) -> HeadLayout:
    """The "heads" rule (module docstring): ceil(H (1 - r)) heads sharing the head-dim recipe's width."""
    kept = max(1, math.ceil(round(num_heads * (1 - ratio), 9)))  # round: 10 * (1 - 0.7) is 3.0000000000000004
    width = head_dim_width(num_heads, head_dim, ratio)
    per_head, rounded = width // kept, width % kept != 0
    if rounded:
        per_head -= per_head % 2
        warnings.warn(f"whole-head pruning: q/k/v width {width} does not divide into {kept} heads; each keeps "
                      f"{per_head} dims (rounded down to a multiple of 2), width {kept * per_head}", stacklevel=2)
    if per_head < 1:
        raise ValueError(f"pruning ratio {ratio} leaves no head dims ({num_heads} heads of {head_dim}): "
                         "choose a smaller ratio")
    return HeadLayout(kept, per_head, rounded)


def _uniform_heads(encoder) -> tuple[int, int]:
    """(heads, head_dim) shared by every block; whole-head pruning keeps one count for all."""
    shapes = {(b.attn.num_heads, b.attn.head_dim) for b in encoder.blocks}
    if len(shapes) != 1:
        raise ValueError(f"whole-head pruning needs blocks of one head count and width; this encoder has "
                         f"(heads, head dim) {sorted(shapes)}: start from a uniform model")
    return shapes.pop()


def _attention_passes(encoder, ratio: float, attention: str) -> tuple[list[dict], HeadLayout | None]:
    """The MetaPruner settings of step 2's attention pass(es), in order, and the layout "heads" aims at.

    "heads" runs torch-pruning twice: its MetaPruner removes whole heads (prune_num_heads) and
    head dims in one pass only as a union (the kept heads lose dims by the ratio too), which
    is not the width rule. So pass 1 removes heads only (head dims off; its pruning_ratio > 0
    merely lets the head step run), pass 2 the head dims of the kept heads. torch-pruning
    ranks heads on split q/k/v as on a fused qkv (the proj input as root, the group's scores
    averaged per head: the same order as the sum). Ratios are set half a step off the
    integers they should give, so float rounding cannot tip torch-pruning's ceil / int."""
    if attention != HEADS:
        return [{"ratio": ratio}], None
    heads, head_dim = _uniform_heads(encoder)
    layout = whole_heads_layout(heads, head_dim, ratio)
    passes = []
    if layout.heads < heads:  # removes ceil(head_ratio * H) = H - kept heads
        passes.append({"ratio": ratio, "head_ratio": (heads - layout.heads - 0.5) / heads})
    if layout.head_dim < head_dim:  # keeps int(head_dim * (1 - ratio')) = layout.head_dim dims per head
        passes.append({"ratio": 1 - (layout.head_dim + 0.5) / head_dim})
    return passes, layout


def prune_bottleneck(encoder: nn.Module, ratio: float, importance, example: torch.Tensor,
                     mlp_round_to: int | None = None, global_pruning: bool = False,
                     attention: str = HEAD_DIMS) -> list:
    """Step 2: shrink q/k/v (head dims, or whole heads and head dims: `attention`, module
    docstring) and the MLP hidden width by `ratio`."""
    check_attention(attention, global_pruning)
    residual = [encoder.patch_embed.proj] + _neck_and_norms(encoder)
    for block in encoder.blocks:
        residual += [block.attn.proj, block.mlp.lin2]
    mlp_round_to = mlp_round_to or encoder.blocks[0].attn.num_heads  # the count before any head goes
    history = []
    with _rel_pos_set_aside(encoder) as kept_positions:
        # Attention pass(es): q/k/v roots with their head structure, no round_to.
        head_dims = [b.attn.head_dim for b in encoder.blocks]
        kept = [list(range(b.attn.q.out_features)) for b in encoder.blocks]  # in the original numbering
        ignored = residual + [b.mlp.lin1 for b in encoder.blocks]
        passes, layout = _attention_passes(encoder, ratio, attention)
        for settings in passes:
            heads = {layer: b.attn.num_heads for b in encoder.blocks for layer in (b.attn.q, b.attn.k, b.attn.v)}
            pruner = _pruner(encoder, example, importance, settings["ratio"], ignored, num_heads=heads,
                             global_pruning=global_pruning, head_ratio=settings.get("head_ratio", 0.0))
            pruner.step()
            step_history = pruner.DG.pruning_history()
            history += step_history
            del pruner  # its traced graph holds every activation of the example forward pass
            for index, block in enumerate(encoder.blocks):
                kept[index] = [kept[index][i] for i in _kept_channels(step_history, index, len(kept[index]))]
                kept_heads, kept_positions[index] = _head_layout(kept[index], head_dims[index], index)
                block.attn.num_heads = len(kept_heads)  # before the next pass traces the forward
        for index, block in enumerate(encoder.blocks):
            if layout and (block.attn.num_heads, block.attn.head_dim) != (layout.heads, layout.head_dim):
                raise RuntimeError(f"block {index}: {block.attn.num_heads} heads of {block.attn.head_dim} after "
                                   f"whole-head pruning, expected {layout.heads} of {layout.head_dim}")
            block.attn.scale = block.attn.head_dim**-0.5
        # MLP pass: lin1 roots, rounded.
        ignored = residual + [layer for b in encoder.blocks for layer in (b.attn.q, b.attn.k, b.attn.v)]
        pruner = _pruner(encoder, example, importance, ratio, ignored, round_to=mlp_round_to,
                         global_pruning=global_pruning)
        pruner.step()
        history += pruner.DG.pruning_history()
    for block in encoder.blocks:
        assert isinstance(block.attn, SplitAttention)
    return history
