"""The image encoder's global attention, exported a band of query rows at a time.

A global-attention block of a 1024-px SAM attends 4096 tokens to 4096: its attention
matrix is [heads, 4096, 4096], 805 MB in float32 for vit_b, and ONNX Runtime holds about
three of them at once (scores, scores + relative position, softmax). Those matrices, not
the weights, are most of an encoder session's peak. Each query row of the grid needs only
its own scores, so the exported graph computes them QUERY_CHUNK_TOKENS queries at a time:
the same arithmetic row by row (bit-identical outputs on ORT's CPU provider), with
vit_b's peak from 3.7 GB to 1.7 GB and no loss of speed (docs/benchmarks/hyperlinear-deploy.md).
Only the exported graph changes (compress/families/sam_pieces.py traces the encoder inside
`banded_global_attention`); the PyTorch modules, and so the reference, stay as they are.
"""

from __future__ import annotations

import contextlib
import types

import torch
from segment_anything.modeling.image_encoder import get_rel_pos

from compress.slimsam.attention import SplitAttention

from .fused_attention import FUSED, current_form, merge_heads, multi_head_attention

# 512 queries: vit_b's score matrices become 100 MB each. Smaller bands save little more
# (weights and the windowed blocks are then the peak) and add nodes to the graph.
QUERY_CHUNK_TOKENS = 512
# A band holds at most this much float32 score (vit_b's 12 heads x 512 queries x 4096 keys), so an encoder
# with fewer heads (SlimSAM-77 whole heads: 3) takes wider bands at the same peak: fewer, larger matmuls,
# 0.85x the time on OpenVINO for 3 heads x 56 (docs/benchmarks/cpu-attention.md). Never under 512 queries.
SCORE_BAND_BYTES = 12 * QUERY_CHUNK_TOKENS * 4096 * 4


def _heads(t: torch.Tensor, batch: int, heads: int) -> torch.Tensor:
    # [B, H, W, heads * d] -> [B * heads, H * W, d]
    _, height, width, _ = t.shape
    return t.reshape(batch, height * width, heads, -1).permute(0, 2, 1, 3).reshape(batch * heads, height * width, -1)


def _qkv(attn, x: torch.Tensor):
    """q, k, v as [B * heads, H * W, d] from segment_anything's Attention or SplitAttention."""
    batch, height, width, _ = x.shape
    heads = attn.num_heads
    if isinstance(attn, SplitAttention):
        return tuple(_heads(layer(x), batch, heads) for layer in (attn.q, attn.k, attn.v))
    qkv = attn.qkv(x).reshape(batch, height * width, 3, heads, -1).permute(2, 0, 3, 1, 4)  # [3, B, heads, HW, d]
    return qkv.reshape(3, batch * heads, height * width, -1).unbind(0)


def _merge_heads(t: torch.Tensor, batch: int, heads: int) -> torch.Tensor:
    return merge_heads(t.reshape(batch, heads, t.shape[1], -1))  # [B * heads, L, d] -> [B, L, heads * d]


def banded_forward(attn, x: torch.Tensor, rows: int) -> torch.Tensor:
    """segment_anything's Attention.forward on x [B, H, W, C], `rows` query rows at a time; each band's
    attention as plain ops, or one fused node with the relative position as its bias (fused_attention.py)."""
    batch, height, width, _ = x.shape
    heads = attn.num_heads
    fused = current_form() == FUSED
    q, k, v = _qkv(attn, x)  # [B * heads, H * W, d]
    if fused:
        keys, values = _merge_heads(k, batch, heads), _merge_heads(v, batch, heads)  # [B, H * W, heads * d]
    else:
        keys_t = k.transpose(-2, -1)  # [B * heads, d, H * W]
    if attn.use_rel_pos:
        rel_h_table = get_rel_pos(height, height, attn.rel_pos_h)  # [H, H, d]
        rel_w_table = get_rel_pos(width, width, attn.rel_pos_w)  # [W, W, d]
    bands = []
    for top in range(0, height, rows):
        bottom = min(height, top + rows)
        band = bottom - top
        q_band = q[:, top * width:bottom * width]  # [B * heads, band * W, d]
        if attn.use_rel_pos:
            r_q = q_band.reshape(q_band.shape[0], band, width, -1)
            rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, rel_h_table[top:bottom])  # [B * heads, band, W, H]
            rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, rel_w_table)  # [B * heads, band, W, W]
        if fused:
            bias = None  # the relative position's share of the scores: [B, heads, band * W, H * W]
            if attn.use_rel_pos:
                bias = (rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]).reshape(batch, heads, band * width,
                                                                                     height * width)
            # [B, band * W, heads * d_v]
            bands.append(multi_head_attention(_merge_heads(q_band, batch, heads), keys, values, heads, attn.scale, bias))
            continue
        scores = (q_band * attn.scale) @ keys_t  # [B * heads, band * W, H * W]
        if attn.use_rel_pos:
            scores = (scores.view(-1, band, width, height, width) + rel_h[:, :, :, :, None]
                      + rel_w[:, :, :, None, :]).view(-1, band * width, height * width)
        bands.append(scores.softmax(dim=-1) @ v)  # [B * heads, band * W, d_v]
    if fused:
        return attn.proj(torch.cat(bands, dim=1).reshape(batch, height, width, -1))
    out = torch.cat(bands, dim=1).view(batch, heads, height, width, -1).permute(0, 2, 3, 1, 4)
    return attn.proj(out.reshape(batch, height, width, -1))


def band_tokens(heads: int, keys: int) -> int:
    """Queries per band: SCORE_BAND_BYTES of scores for `heads` x `keys`, at least QUERY_CHUNK_TOKENS."""
    return max(QUERY_CHUNK_TOKENS, SCORE_BAND_BYTES // (4 * heads * keys))


@contextlib.contextmanager
def banded_global_attention(encoder, chunk_tokens: int | None = None):
    """While open, the encoder's global-attention blocks run banded_forward (for tracing);
    `chunk_tokens` queries per band (default: band_tokens for each block's heads)."""
    patched = []
    try:
        for block in encoder.blocks:
            if block.window_size != 0:
                continue  # windowed blocks attend a window's 196 tokens: nothing to save
            grid_width = encoder.img_size // encoder.patch_embed.proj.stride[1]
            tokens = chunk_tokens or band_tokens(block.attn.num_heads, grid_width * grid_width)
            rows = max(1, tokens // grid_width)
            block.attn.forward = types.MethodType(lambda self, x, rows=rows: banded_forward(self, x, rows), block.attn)
            patched.append(block.attn)
        yield encoder
    finally:
        for attn in patched:
            del attn.forward  # the class's forward again
