"""SAM 2.1's per-frame memory pieces as ONNX-exportable modules: memory encoder, memory attention.

A numpy runtime tracks a video by calling these every frame (docs in shared/reference/sam2.md):
`MemoryEncoderPiece` turns the frame's features and predicted mask into the memory it stores,
`MemoryAttentionPiece` conditions the next frame's features on the stored memories.

Why a rewrite of the memory attention: sam2's RoPEAttention rotates queries and keys with
complex tensors (torch.view_as_complex, torch.polar), and neither torch exporter takes them
(the TorchScript one stops with "ComplexFloat is an unexpected tensor scalar type", and so
does the dynamo one). Here the rotation is real-valued on pairs of channels (2i, 2i+1), which
is what the complex product computes:
    out0 = x0*cos - x1*sin,   out1 = x0*sin + x1*cos
with cos/sin precomputed once as buffers shared by every attention of every layer, so an
exported file holds them once as initializers.

The original also needs a Python int, num_obj_ptr_tokens, to keep the rotation off the
object-pointer tokens at the end of the memory. Here spatial memory and pointer tokens are
separate inputs: the split comes from their shapes, and both counts are dynamic axes.

A model whose memory is compressed into latents (EdgeTAM's spatial perceiver, upstream applied in
SAM2Base._encode_new_memory) stores tokens, not a grid: the memory encoder runs the perceiver and
answers [1, T, 64] (T latents per frame, upstream's layout), and its cross-attention (RoPEAttentionv2)
rotates each frame's keys with a table of its own (`memory_tokens_per_frame`, `key_rope_tables`).

Both pieces reuse the model's own submodules (no copies): perturbing or loading weights into
the SAM2Base after building a piece changes the piece too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .sam2_perceiver import PerceiverPiece

# sam2's RoPEAttention, and the same class of the sam2 forks (compress/families/sam2_forks.py: EfficientTAM's,
# EdgeTAM's), which are other classes of the same name: an attention is recognised by its class name.
ROPE_ATTENTION = "RoPEAttention"
# EdgeTAM's cross-attention: queries on the feature grid (q_sizes), keys on the perceiver's 2D latents (k_sizes).
ROPE_ATTENTION_V2 = "RoPEAttentionv2"


def is_rope_attention(attn) -> bool:
    return type(attn).__name__ == ROPE_ATTENTION and hasattr(attn, "compute_cis")


def is_rope_attention_v2(attn) -> bool:
    return type(attn).__name__ == ROPE_ATTENTION_V2 and hasattr(attn, "freqs_cis_k")


def feature_grid_side(sam2_base) -> int:
    """Side of the level-2 (stride 16) feature grid: 64 at 1024 px."""
    return sam2_base.image_size // sam2_base.backbone_stride


def memory_tokens_per_frame(sam2_base) -> int:
    """Tokens one memory frame holds: the feature grid's g*g, or a spatial perceiver's latents (EdgeTAM:
    its 1D latents, then its 2D ones, 256 + 256 at 1024 px)."""
    perceiver = getattr(sam2_base, "spatial_perceiver", None)
    if perceiver is None:
        return feature_grid_side(sam2_base) ** 2
    return max(perceiver.num_latents, 0) + max(perceiver.num_latents_2d, 0)


class MemoryEncoderPiece(nn.Module):
    """SAM2Base._encode_new_memory for one object, batch 1.

    The caller passes `mask_probs`, the high-res mask in 0..1, not the scaled logits:
      - sigmoid(high-res mask logits) for a tracked frame,
      - (high-res mask logits > 0) as float for a frame whose mask came from clicks, because
        the video predictor sets binarize_mask_from_pts_for_mem_enc.
    The piece applies the model's sigmoid_scale_for_mem_enc and sigmoid_bias_for_mem_enc
    (20 and -10 in SAM 2.1) itself, so the runtime needs no model constants.
    non_overlap_masks_for_mem_enc (off in SAM 2.1 configs, and a no-op for one object) is not applied.
    With a spatial perceiver (EdgeTAM) the memory is its latents: maskmem_features and maskmem_pos_enc
    [1, T, 64] instead of [1, 64, g, g], as upstream stores them.
    """

    INPUT_NAMES = ("pix_feat", "mask_probs", "object_score_logits")
    OUTPUT_NAMES = ("maskmem_features", "maskmem_pos_enc")
    DYNAMIC_AXES: dict = {}  # every shape is fixed by the model (one object per call)

    def __init__(self, sam2_base):
        super().__init__()
        self.memory_encoder = sam2_base.memory_encoder
        # [1, mem_dim]; None in SAM 2.1 configs without it, absent from SAM 2.0-based forks (EfficientTAM)
        self.no_obj_embed_spatial = getattr(sam2_base, "no_obj_embed_spatial", None)
        self.mask_scale = float(sam2_base.sigmoid_scale_for_mem_enc)
        self.mask_bias = float(sam2_base.sigmoid_bias_for_mem_enc)
        self.hidden_dim = sam2_base.hidden_dim
        self.image_size = sam2_base.image_size
        self.grid_side = feature_grid_side(sam2_base)
        perceiver = getattr(sam2_base, "spatial_perceiver", None)  # EdgeTAM's; None in SAM 2
        self.spatial_perceiver = None if perceiver is None else PerceiverPiece(perceiver, self.grid_side)

    def forward(self, pix_feat, mask_probs, object_score_logits):
        # pix_feat [1, 256, 64, 64]: raw level-2 features (no no_mem_embed added)
        # mask_probs [1, 1, 1024, 1024] in 0..1; object_score_logits [1, 1]
        mask_for_mem = mask_probs
        # The same conditions as _encode_new_memory, so a model with scale 1 or bias 0 traces alike.
        if self.mask_scale != 1.0:
            mask_for_mem = mask_for_mem * self.mask_scale
        if self.mask_bias != 0.0:
            mask_for_mem = mask_for_mem + self.mask_bias
        encoded = self.memory_encoder(pix_feat, mask_for_mem, skip_mask_sigmoid=True)
        features = encoded["vision_features"]  # [1, 64, 64, 64]
        pos_enc = encoded["vision_pos_enc"][0]  # [1, 64, 64, 64], the same every frame
        if self.no_obj_embed_spatial is not None:
            # An occluded object (score <= 0) marks its memory with the learned no-object embedding.
            absent = 1.0 - (object_score_logits > 0).float()  # [1, 1]
            features = features + absent[..., None, None] * self.no_obj_embed_spatial[..., None, None]
        if self.spatial_perceiver is not None:
            # Compressed as upstream stores it: [1, T, 64] latents and their positions (zeros for the 1D
            # latents, a sine encoding of the 2D latents' grid), the positions again the same every frame.
            features, pos_enc = self.spatial_perceiver(features, pos_enc)
        return features, pos_enc

    def dummy_inputs(self):
        generator = torch.Generator().manual_seed(0)
        pix_feat = torch.randn(1, self.hidden_dim, self.grid_side, self.grid_side, generator=generator)
        mask_probs = torch.rand(1, 1, self.image_size, self.image_size, generator=generator)
        object_score_logits = torch.ones(1, 1)
        return pix_feat, mask_probs, object_score_logits


def rotate_pairs(x, cos, sin):
    """RoPE on channel pairs (2i, 2i+1) of x [B, heads, T*N, D], where the N-token grid repeats T
    times (T = 1 for queries, one per memory frame for spatial keys); cos, sin [N, D/2]."""
    batch, heads, _, dim = x.shape
    pairs = x.reshape(batch, heads, -1, cos.shape[0], dim // 2, 2)  # [B, heads, T, N, D/2, 2]
    x0, x1 = pairs[..., 0], pairs[..., 1]
    rotated = torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1)
    return rotated.reshape(batch, heads, -1, dim)


def split_heads(x, heads: int, head_dim: int):
    # [B, L, heads*D] -> [B, heads, L, D]. No -1 in the shape and D a Python int: with L = 0
    # (no pointer tokens) neither torch nor ONNX Reshape could infer a -1.
    batch, length, _ = x.shape
    return x.reshape(batch, length, heads, head_dim).transpose(1, 2)


def merge_heads(x):
    # [B, heads, L, D] -> [B, L, heads*D]
    batch, heads, length, dim = x.shape
    return x.transpose(1, 2).reshape(batch, length, heads * dim)


def rope_attention(attn, q, k_rotated, k_plain, v, cos, sin, key_cos=None, key_sin=None):
    """RoPEAttention.forward with real rotation. Keys come in two parts: `k_rotated` [B, T*N, C]
    gets RoPE, `k_plain` [B, K, C] (object pointers, K may be 0; None in self-attention) does not;
    v [B, T*N + K, C]; q [B, N, C]. Returns [B, N, C]. cos, sin [N, D/2] rotate the queries, and the
    keys too unless key_cos, key_sin [M, D/2] (one memory frame's M tokens: RoPEAttentionv2) are given."""
    head_shape = (attn.num_heads, attn.internal_dim // attn.num_heads)  # (heads, D)
    q = rotate_pairs(split_heads(attn.q_proj(q), *head_shape), cos, sin)
    if key_cos is not None:
        cos, sin = key_cos, key_sin
    if k_plain is None:
        k = rotate_pairs(split_heads(attn.k_proj(k_rotated), *head_shape), cos, sin)
    else:
        # One k_proj call on both parts, split by shape: a layer traced once (a Birkhoff HyperLinear
        # cannot be traced twice in one graph), and the same rows either way.
        spatial_count = k_rotated.shape[1]
        keys = split_heads(attn.k_proj(torch.cat([k_rotated, k_plain], dim=1)), *head_shape)
        k = torch.cat([rotate_pairs(keys[:, :, :spatial_count], cos, sin), keys[:, :, spatial_count:]], dim=2)
    # k: [B, heads, T*N + K, D]
    v = split_heads(attn.v_proj(v), *head_shape)
    return attn.out_proj(merge_heads(F.scaled_dot_product_attention(q, k, v)))


def axial_rope_tables(attn, side: int):
    """cos, sin [side*side, D/2] of the attention's own axial frequencies (its theta, head dim)."""
    freqs = attn.compute_cis(end_x=side, end_y=side)  # complex [N, D/2]
    return freqs.real.float().contiguous(), freqs.imag.float().contiguous()


def key_rope_tables(attn, tokens: int):
    """cos, sin [tokens, D/2] for one memory frame's keys under RoPEAttentionv2: its k_sizes grid on the
    frame's last tokens (a perceiver's 2D latents), and no rotation (cos 1, sin 0: exactly the input) on
    the tokens before them (its 1D latents), which apply_rotary_enc_v2 leaves as they are."""
    freqs = attn.freqs_cis_k  # complex [k_w * k_h, D/2]
    plain = tokens - freqs.shape[0]
    if plain < 0:
        raise ValueError(f"this memory attention rotates {freqs.shape[0]} keys per memory frame (k_sizes), but a "
                         f"frame holds {tokens} memory tokens; k_sizes must fit the perceiver's 2D latents")
    half = freqs.shape[1]
    cos = torch.cat([torch.ones(plain, half), freqs.real.float()])
    sin = torch.cat([torch.zeros(plain, half), freqs.imag.float()])
    return cos.contiguous(), sin.contiguous()


class MemoryAttentionPiece(nn.Module):
    """sam2's MemoryAttention with real-valued RoPE and the memory split into spatial and pointer tokens.

    Equal to memory_attention(curr, cat(spatial, pointers), curr_pos, cat(spatial_pos, pointer_pos),
    num_obj_ptr_tokens=K). Token layouts are seq-first, as sam2 passes them:
      curr, curr_pos            [N, 1, 256]    N = (image_size / 16)^2 = 4096
      spatial_mem(_pos)         [S*M, 1, 64]   S memory frames, frame after frame, of M tokens each
                                               (M = N, or a spatial perceiver's latents: EdgeTAM)
      ptr_mem(_pos)             [K, 1, 64]     K object-pointer tokens (4 per pointer in SAM 2.1)
      -> pix_feat_with_mem      [N, 1, 256]
    """

    INPUT_NAMES = ("curr", "curr_pos", "spatial_mem", "spatial_mem_pos", "ptr_mem", "ptr_mem_pos")
    OUTPUT_NAMES = ("pix_feat_with_mem",)
    DYNAMIC_AXES = {
        "spatial_mem": {0: "num_spatial_tokens"},
        "spatial_mem_pos": {0: "num_spatial_tokens"},
        "ptr_mem": {0: "num_ptr_tokens"},
        "ptr_mem_pos": {0: "num_ptr_tokens"},
    }

    def __init__(self, sam2_base):
        super().__init__()
        memory_attention = sam2_base.memory_attention
        if not memory_attention.batch_first:
            raise ValueError("this SAM 2 memory attention takes seq-first tokens; samedge exports the batch-first "
                             "layout of sam2 1.1.0's released configs (configs/sam2*/): build from one of them")
        self.layers = memory_attention.layers
        self.final_norm = memory_attention.norm
        self.pos_enc_at_input = memory_attention.pos_enc_at_input
        self.hidden_dim = memory_attention.d_model
        self.grid_side = feature_grid_side(sam2_base)
        self.memory_tokens = memory_tokens_per_frame(sam2_base)  # per memory frame: g*g, or a perceiver's latents
        cos, sin = self._shared_rope_tables()
        # [N, D/2] each. Persistent on purpose: the TorchScript exporter turns a non-persistent
        # buffer into a Constant node at every use (64 copies here), a persistent one into one initializer.
        self.register_buffer("rope_cos", cos, persistent=True)
        self.register_buffer("rope_sin", sin, persistent=True)
        # [M, D/2]: the memory keys' own tables (RoPEAttentionv2); None where keys rotate as queries do.
        key_cos, key_sin = self._shared_key_tables() or (None, None)
        self.register_buffer("key_cos", key_cos, persistent=True)
        self.register_buffer("key_sin", key_sin, persistent=True)

    def _attentions(self):
        for layer in self.layers:
            yield layer.self_attn
            yield layer.cross_attn_image

    def _shared_rope_tables(self):
        """One cos/sin pair for all attentions; refuse a model whose attentions would need several."""
        tables = []
        for attn in self._attentions():
            if is_rope_attention(attn):
                tables.append(axial_rope_tables(attn, self.grid_side))
            elif is_rope_attention_v2(attn):
                queries = attn.freqs_cis_q  # complex [q_w * q_h, D/2]
                if queries.shape[0] != self.grid_side**2:
                    raise ValueError(f"this memory attention's RoPEAttentionv2 rotates {queries.shape[0]} queries "
                                     f"(q_sizes), but the feature grid has {self.grid_side}^2: set q_sizes to "
                                     f"[{self.grid_side}, {self.grid_side}] for image size {self.grid_side * 16}")
                tables.append((queries.real.float().contiguous(), queries.imag.float().contiguous()))
            else:
                raise ValueError(f"this SAM 2 memory attention uses {type(attn).__name__}, not RoPEAttention as sam2 "
                                 "1.1.0's released configs do (or EdgeTAM's RoPEAttentionv2 for memory); samedge "
                                 "exports only those: build from one of them")
        cos, sin = tables[0]
        if any(not (torch.equal(cos, c) and torch.equal(sin, s)) for c, s in tables[1:]):
            raise ValueError("this SAM 2 memory attention's layers use different RoPE frequencies; samedge stores one "
                             "cos/sin table for all of them, as sam2 1.1.0's released configs need")
        return cos, sin

    def _shared_key_tables(self):
        """The memory keys' cos/sin [M, D/2] where the cross-attention is RoPEAttentionv2 (the same in every
        layer), or None: RoPEAttention rotates each memory frame's g*g keys with the queries' table."""
        tables = [key_rope_tables(layer.cross_attn_image, self.memory_tokens) for layer in self.layers
                  if is_rope_attention_v2(layer.cross_attn_image)]
        if not tables:
            if self.memory_tokens != self.grid_side**2:
                raise ValueError(f"memory frames of {self.memory_tokens} tokens (a spatial perceiver) need a "
                                 "cross-attention that rotates keys on their own grid (RoPEAttentionv2)")
            return None
        cos, sin = tables[0]
        if len(tables) != len(self.layers) or any(not (torch.equal(cos, c) and torch.equal(sin, s))
                                                  for c, s in tables[1:]):
            raise ValueError("this memory attention's layers rotate memory keys differently; samedge stores one "
                             "key table for all of them, as EdgeTAM's config needs")
        return cos, sin

    @property
    def memory_dim(self) -> int:
        return self.layers[0].cross_attn_image.kv_in_dim

    def _layer(self, layer, x, x_pos, spatial, spatial_pos, ptr, ptr_pos):
        """MemoryAttentionLayer.forward (eval: dropouts are identities); tokens batch-first."""
        cos, sin = self.rope_cos, self.rope_sin
        # Self-attention over the current frame, RoPE on q and k.
        normed = layer.norm1(x)
        qk = normed + x_pos if layer.pos_enc_at_attn else normed
        x = x + rope_attention(layer.self_attn, qk, qk, None, normed, cos, sin)
        # Cross-attention to memory: RoPE on queries and spatial keys, never on the pointer tokens.
        normed = layer.norm2(x)
        q = normed + x_pos if layer.pos_enc_at_cross_attn_queries else normed
        if layer.pos_enc_at_cross_attn_keys:
            spatial_keys, ptr_keys = spatial + spatial_pos, ptr + ptr_pos
        else:
            spatial_keys, ptr_keys = spatial, ptr
        values = torch.cat((spatial, ptr), dim=1)
        x = x + rope_attention(layer.cross_attn_image, q, spatial_keys, ptr_keys, values, cos, sin, self.key_cos,
                               self.key_sin)
        # Feed-forward.
        return x + layer.linear2(layer.activation(layer.linear1(layer.norm3(x))))

    def forward(self, curr, curr_pos, spatial_mem, spatial_mem_pos, ptr_mem, ptr_mem_pos):
        # curr, curr_pos [N, 1, 256]; spatial_mem(_pos) [S*M, 1, 64]; ptr_mem(_pos) [K, 1, 64]
        x = curr + 0.1 * curr_pos if self.pos_enc_at_input else curr
        # seq-first -> batch-first, as MemoryAttention does before its layers
        x, x_pos = x.transpose(0, 1), curr_pos.transpose(0, 1)  # [1, N, 256]
        spatial, spatial_pos = spatial_mem.transpose(0, 1), spatial_mem_pos.transpose(0, 1)  # [1, S*M, 64]
        ptr, ptr_pos = ptr_mem.transpose(0, 1), ptr_mem_pos.transpose(0, 1)  # [1, K, 64]
        for layer in self.layers:
            x = self._layer(layer, x, x_pos, spatial, spatial_pos, ptr, ptr_pos)
        return self.final_norm(x).transpose(0, 1)  # [N, 1, 256]

    def dummy_inputs(self, num_frames: int = 2, num_ptr_tokens: int = 8):
        # Distinct S and K (and neither 1) so the tracer cannot mistake one dynamic size for another.
        generator = torch.Generator().manual_seed(0)
        tokens = self.grid_side**2

        def tokens_of(length, dim):
            return torch.randn(length, 1, dim, generator=generator)

        spatial_length = num_frames * self.memory_tokens
        return (tokens_of(tokens, self.hidden_dim), tokens_of(tokens, self.hidden_dim),
                tokens_of(spatial_length, self.memory_dim), tokens_of(spatial_length, self.memory_dim),
                tokens_of(num_ptr_tokens, self.memory_dim), tokens_of(num_ptr_tokens, self.memory_dim))
