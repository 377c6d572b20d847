"""SAM's image-encoder attention with q, k and v as separate Linear layers.

torch-pruning's dependency graph does not finish on SAM's fused qkv Linear (the
reshape/unbind of one 3x-wide output), and grouping is clearer with three layers.
`split_attention` swaps every block's attention for `SplitAttention` before pruning,
`fuse_attention` puts standard segment_anything `Attention` modules back afterwards,
so the pruned model is again a plain SAM (as long as q, k and v keep equal widths).
"""

from __future__ import annotations

import torch
from segment_anything.modeling.image_encoder import Attention, add_decomposed_rel_pos
from torch import nn


class SplitAttention(nn.Module):
    """Same computation as segment_anything's Attention; q/k/v may be narrower than the input."""

    def __init__(self, q: nn.Linear, k: nn.Linear, v: nn.Linear, proj: nn.Linear, num_heads: int,
                 rel_pos_h: nn.Parameter | None, rel_pos_w: nn.Parameter | None):
        super().__init__()
        self.q, self.k, self.v, self.proj = q, k, v, proj
        self.num_heads = num_heads
        self.use_rel_pos = rel_pos_h is not None
        self.rel_pos_h, self.rel_pos_w = rel_pos_h, rel_pos_w
        self.scale = self.head_dim**-0.5

    @property
    def head_dim(self) -> int:
        return self.q.out_features // self.num_heads

    def _heads(self, t: torch.Tensor, batch: int, tokens: int) -> torch.Tensor:
        # [B, H, W, heads*d] -> [B*heads, H*W, d]
        return t.reshape(batch, tokens, self.num_heads, -1).permute(0, 2, 1, 3).reshape(batch * self.num_heads,
                                                                                       tokens, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, _ = x.shape
        tokens = height * width
        q = self._heads(self.q(x), batch, tokens)  # [B*heads, HW, d_qk]
        k = self._heads(self.k(x), batch, tokens)
        v = self._heads(self.v(x), batch, tokens)  # [B*heads, HW, d_v]
        attn = (q * self.scale) @ k.transpose(-2, -1)
        if self.use_rel_pos:
            attn = add_decomposed_rel_pos(attn, q, self.rel_pos_h, self.rel_pos_w, (height, width), (height, width))
        attn = attn.softmax(dim=-1)
        out = (attn @ v).view(batch, self.num_heads, height, width, -1).permute(0, 2, 3, 1, 4)
        return self.proj(out.reshape(batch, height, width, -1))


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    return layer


def split_attention(encoder: nn.Module) -> None:
    """Replace each block's fused-qkv Attention by SplitAttention (same weights)."""
    for block in encoder.blocks:
        attn = block.attn
        if isinstance(attn, SplitAttention):
            continue
        weight = attn.qkv.weight.detach().chunk(3, dim=0)  # [3 * C, C] -> q, k, v
        bias = attn.qkv.bias.detach().chunk(3) if attn.qkv.bias is not None else (None,) * 3
        layers = [_linear(w, b) for w, b in zip(weight, bias)]
        block.attn = SplitAttention(*layers, attn.proj, attn.num_heads,
                                    attn.rel_pos_h if attn.use_rel_pos else None,
                                    attn.rel_pos_w if attn.use_rel_pos else None)


def fuse_attention(encoder: nn.Module) -> None:
    """Put segment_anything Attention modules back where q/k/v are as wide as the block's
    input (the layout `build_sam` gives a config); other blocks stay split."""
    for block in encoder.blocks:
        split = block.attn
        if not isinstance(split, SplitAttention):
            continue
        if split.q.out_features != split.q.in_features:
            continue
        dim_in = split.q.in_features  # = q/k/v width here, the only layout Attention(dim) has
        fused = Attention(dim_in, num_heads=split.num_heads, qkv_bias=split.q.bias is not None,
                          use_rel_pos=split.use_rel_pos, input_size=None if not split.use_rel_pos else
                          ((split.rel_pos_h.shape[0] + 1) // 2, (split.rel_pos_w.shape[0] + 1) // 2))
        bias = None
        if split.q.bias is not None:
            bias = torch.cat([split.q.bias, split.k.bias, split.v.bias]).detach()
        fused.qkv = _linear(torch.cat([split.q.weight, split.k.weight, split.v.weight]).detach(), bias)
        fused.proj = split.proj
        fused.scale = split.head_dim**-0.5
        if split.use_rel_pos:
            fused.rel_pos_h, fused.rel_pos_w = split.rel_pos_h, split.rel_pos_w
        block.attn = fused
