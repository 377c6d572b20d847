"""EdgeTAM's spatial perceiver (sam2/modeling/perceiver.py of edgetam-dimos) as an exportable module.

PerceiverResampler compresses one frame's memory [1, C, g, g] into latents: `num_latents` 1D latents that
cross-attend to every token (their keys and values plus the memory's position encoding), then
`num_latents_2d` 2D latents, one per window of the grid, each attending to its own window (no positions).
Both kinds pass through the same layers, one after the other: upstream calls each Linear twice per frame.

Why a rewrite: a Birkhoff HyperLinear (compress/birkhoff/hyper_linear.py) is exported as one custom node
per layer and cannot be traced twice in one graph (torch.onnx stops with "unordered_map::at"). Here every
Linear and LayerNorm runs once per layer on the rows of both kinds together, which is the same arithmetic:
- queries, outputs, feed-forwards and the latents' self-attention act row by row, so the 1D and 2D
  latents go through them concatenated and are split after;
- keys and values come from the memory's tokens (norm_x, to_kv: row by row too), so they are computed once
  on the grid and the 2D latents read them window by window (window_partition is a permutation of rows).
Only the attentions themselves stay apart: 1D latents over all g*g tokens (positions added to keys and
values), each 2D latent over its window. Eval only (dropouts are identities).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def split_heads(x, heads: int):
    # [B, N, heads*D] -> [B, heads, N, D]
    batch, tokens, channels = x.shape
    return x.reshape(batch, tokens, heads, channels // heads).transpose(1, 2)


def merge_heads(x):
    # [B, heads, N, D] -> [B, N, heads*D]
    batch, heads, tokens, dim = x.shape
    return x.transpose(1, 2).reshape(batch, tokens, heads * dim)


def windows_of(tokens, side: int, window: int):
    """[side*side, C] row-major grid tokens -> [(side/window)^2, window*window, C], window after window in
    row-major order: the perceiver's window_partition of the grid."""
    channels = tokens.shape[-1]
    count = side // window
    grid = tokens.reshape(count, window, count, window, channels).permute(0, 2, 1, 3, 4)
    return grid.reshape(count * count, window * window, channels)


class PerceiverPiece(nn.Module):
    """PerceiverResampler.forward(x [1, C, g, g], pos [1, C, g, g]) -> latents [1, L1 + L2, C], their
    positions [1, L1 + L2, C] (zeros for the 1D latents, the sine encoding of the 2D latents' grid)."""

    def __init__(self, perceiver, grid_side: int):
        super().__init__()
        if perceiver.num_latents <= 0 or perceiver.num_latents_2d <= 0:
            raise ValueError("samedge exports a spatial perceiver with both 1D and 2D latents (EdgeTAM's config)")
        if any(layer.attn.concat_kv_latents for layer in perceiver.layers):
            raise ValueError("samedge exports a spatial perceiver without concat_kv_latents (EdgeTAM's config)")
        self.perceiver = perceiver  # its own modules, read at every call (a Birkhoff build replaces Linears)
        self.grid_side = grid_side
        self.latent_side = math.isqrt(perceiver.num_latents_2d)
        self.window = grid_side // self.latent_side
        if self.latent_side**2 != perceiver.num_latents_2d or self.window * self.latent_side != grid_side:
            raise ValueError(f"{perceiver.num_latents_2d} 2D latents do not tile a {grid_side} x {grid_side} grid")
        with torch.no_grad():  # depends on the 2D latents' grid only
            channels = perceiver.latents_2d.shape[1]
            pos_2d = perceiver.position_encoding(torch.zeros(1, channels, self.latent_side, self.latent_side))
        positions = torch.cat([torch.zeros(perceiver.num_latents, channels), pos_2d.flatten(2)[0].T])
        self.register_buffer("positions", positions[None].contiguous(), persistent=True)  # [1, L1 + L2, C]

    def _cross_attention(self, attn, latents, tokens_kv, pos):
        """PerceiverAttention for both kinds: latents [L1 + L2, C]; tokens_kv [g*g, 2*inner] (to_kv of the
        normed memory tokens); pos [g*g, C]. Returns [L1 + L2, C]."""
        ones = self.perceiver.num_latents
        q = attn.to_q(attn.norm_latents(latents))  # [L1 + L2, inner]
        k, v = tokens_kv.chunk(2, dim=-1)  # [g*g, inner] each
        heads = attn.heads
        # 1D latents: all tokens, the memory's positions added to keys and values (pos_enc_at_key_value;
        # upstream adds them whenever positions are passed, as the memory encoder always does).
        q_1d = split_heads(q[None, :ones], heads)
        out_1d = F.scaled_dot_product_attention(q_1d, split_heads((k + pos)[None], heads),
                                                split_heads((v + pos)[None], heads))  # [1, h, L1, D]
        # 2D latents: one per window, each over its window's tokens, no positions.
        q_2d = split_heads(q[ones:, None], heads)  # [L2, h, 1, D]
        k_2d = split_heads(windows_of(k, self.grid_side, self.window), heads)  # [L2, h, w*w, D]
        v_2d = split_heads(windows_of(v, self.grid_side, self.window), heads)
        out_2d = F.scaled_dot_product_attention(q_2d, k_2d, v_2d)  # [L2, h, 1, D]
        out = torch.cat([merge_heads(out_1d)[0], merge_heads(out_2d)[:, 0]])  # [L1 + L2, inner]
        return attn.to_out(out)

    def _self_attention(self, attn, latents):
        """Attention over the 1D latents together; each 2D latent attends to itself alone (upstream's
        [L2, 1, C] batch of one-token sequences)."""
        ones, heads = self.perceiver.num_latents, attn.heads
        normed = attn.norm(latents)
        q = attn.to_q(normed)
        k, v = attn.to_kv(normed).chunk(2, dim=-1)
        out_1d = F.scaled_dot_product_attention(*(split_heads(t[None, :ones], heads) for t in (q, k, v)))
        out_2d = F.scaled_dot_product_attention(*(split_heads(t[ones:, None], heads) for t in (q, k, v)))
        return attn.to_out(torch.cat([merge_heads(out_1d)[0], merge_heads(out_2d)[:, 0]]))

    def forward(self, x, pos):
        # x, pos [1, C, g, g] -> grid tokens [g*g, C], row-major
        tokens, pos = x.flatten(2)[0].T, pos.flatten(2)[0].T
        perceiver = self.perceiver
        latents = torch.cat([perceiver.latents, perceiver.latents_2d])  # [L1 + L2, C]
        for layer in perceiver.layers:
            tokens_kv = layer.attn.to_kv(layer.attn.norm_x(tokens))  # [g*g, 2*inner]
            latents = self._cross_attention(layer.attn, latents, tokens_kv, pos) + latents
            latents = layer.ff(latents) + latents
            if layer.use_self_attn:
                latents = self._self_attention(layer.self_attn, latents) + latents
                latents = layer.self_ff(latents) + latents
        return perceiver.norm(latents)[None], self.positions  # [1, L1 + L2, C] each
