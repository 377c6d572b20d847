"""Attention exported as one fused node (com.microsoft.MultiHeadAttention), or as plain ONNX ops.

Two forms of the same arithmetic, chosen at export (`export.build --attention`):

- "plain": MatMul, Add, Softmax, MatMul: standard ONNX that every runtime reads. OpenVINO's CPU
  plugin fuses it itself: its snippets put each attention's MatMul -> (Add) -> Softmax -> MatMul into
  one Subgraph node, as long as the relative position is added to the scores term by term (a
  pre-summed bias between reshapes broke the match). NVIDIA documents that TensorRT fuses MatMul ->
  Softmax -> MatMul (q scaled before the first) into its attention kernels, so the TensorRT files
  are always plain (not checked against a build log: no TensorRT here).
- "fused": one `com.microsoft.MultiHeadAttention` node per attention: ONNX Runtime runs it with its
  own CPU attention kernel, and OpenVINO's ONNX frontend reads it into the same Subgraph nodes
  (tests/test_fused_attention.py checks both compiled models). SAM 1's decomposed relative
  position goes in as the node's `attention_bias`.

Only encoders' and memory pieces' attention changes form; decoders and the clients' files stay
plain. The PyTorch modules are untouched: export_piece traces each piece inside `tracing_in_form`,
which, under `attention_form(FUSED)`, swaps in `multi_head_attention` (SAM 1: its global bands in
compress/families/sam_attention.py; SAM 2 and its forks: every `F.scaled_dot_product_attention`
call, which their attention modules make).
Which form is faster depends on the model and the engine: docs/benchmarks/cpu-attention.md.
"""

from __future__ import annotations

import contextlib
import contextvars

import torch
import torch.nn.functional as F
from torch.onnx import symbolic_helper

PLAIN, FUSED = "plain", "fused"
FORMS = (PLAIN, FUSED)
DOMAIN = "com.microsoft"  # ONNX Runtime's contrib operators; OpenVINO's ONNX frontend reads this one too
OP_TYPE = "MultiHeadAttention"
ROLES = ("encoder", "memory")  # the pieces whose attention takes the chosen form (registry.Piece.role)

_form: contextvars.ContextVar[str] = contextvars.ContextVar("attention_form", default=PLAIN)


def current_form() -> str:
    return _form.get()


@contextlib.contextmanager
def attention_form(form: str):
    """While open, pieces traced for export emit attention in `form` (FORMS)."""
    if form not in FORMS:
        raise ValueError(f"unknown attention form {form!r}; choose one of {FORMS}")
    token = _form.set(form)
    try:
        yield form
    finally:
        _form.reset(token)


def _split_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    batch, tokens, _ = t.shape
    return t.reshape(batch, tokens, heads, -1).transpose(1, 2)  # [B, L, heads * d] -> [B, heads, L, d]


def _attention(q, k, v, bias, heads: int, scale: float) -> torch.Tensor:
    # q [B, L, heads * d_qk], k [B, S, heads * d_qk], v [B, S, heads * d_v], bias [B or 1, heads, L, S] or None
    scores = (_split_heads(q, heads) * scale) @ _split_heads(k, heads).transpose(-2, -1)
    if bias is not None:
        scores = scores + bias
    out = scores.softmax(dim=-1) @ _split_heads(v, heads)  # [B, heads, L, d_v]
    return out.transpose(1, 2).reshape(q.shape[0], q.shape[1], -1)


def _node(g, inputs, q, v, heads: int, scale: float):
    out = g.op(f"{DOMAIN}::{OP_TYPE}", *inputs, num_heads_i=heads, scale_f=scale)
    # The exporter cannot see through the node: [B, L, heads * d_v].
    q_sizes, v_sizes = symbolic_helper._get_tensor_sizes(q), symbolic_helper._get_tensor_sizes(v)
    if q_sizes is not None and v_sizes is not None:
        out.setType(q.type().with_sizes(q_sizes[:-1] + v_sizes[-1:]))
    return out


class _MultiHeadAttention(torch.autograd.Function):
    """softmax(q k^T * scale) v per head; exported as one com.microsoft.MultiHeadAttention node.
    (The tracer takes no None among a Function's tensors: the biased form is its own Function.)"""

    @staticmethod
    def forward(ctx, q, k, v, heads: int, scale: float):
        return _attention(q, k, v, None, heads, scale)

    @staticmethod
    def symbolic(g, q, k, v, heads: int, scale: float):
        return _node(g, [q, k, v], q, v, heads, scale)


class _BiasedMultiHeadAttention(torch.autograd.Function):
    """softmax(q k^T * scale + bias) v per head: the node's inputs 4 and 5 (bias, key padding mask)
    are left empty, its `attention_bias` (input 6) is `bias`."""

    @staticmethod
    def forward(ctx, q, k, v, bias, heads: int, scale: float):
        return _attention(q, k, v, bias, heads, scale)

    @staticmethod
    def symbolic(g, q, k, v, bias, heads: int, scale: float):
        absent = symbolic_helper._optional_input_placeholder_tensor(g)
        return _node(g, [q, k, v, absent, absent, bias], q, v, heads, scale)


def multi_head_attention(q, k, v, heads: int, scale: float, bias=None) -> torch.Tensor:
    """q [B, L, heads * d], k/v [B, S, heads * d] (bias [B or 1, heads, L, S]) -> [B, L, heads * d_v]."""
    if bias is None:
        return _MultiHeadAttention.apply(q, k, v, heads, float(scale))
    return _BiasedMultiHeadAttention.apply(q, k, v, bias, heads, float(scale))


def merge_heads(t: torch.Tensor) -> torch.Tensor:
    batch, heads, tokens, dim = t.shape
    return t.transpose(1, 2).reshape(batch, tokens, heads * dim)  # [B, heads, L, d] -> [B, L, heads * d]


@contextlib.contextmanager
def fused_scaled_dot_product_attention():
    """While open, F.scaled_dot_product_attention on [B, heads, L, d] inputs (sam2's attention modules,
    Hiera's blocks) runs through `multi_head_attention`; calls with a mask, causality or dropout
    keep the original."""
    original = F.scaled_dot_product_attention

    def fused(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **others):
        if attn_mask is not None or is_causal or dropout_p or others or query.dim() != 4:
            return original(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                            scale=scale, **others)
        batch, heads, tokens, dim = query.shape
        # int(): while tracing, sizes are traced values; the node's attributes are plain numbers.
        out = multi_head_attention(merge_heads(query), merge_heads(key), merge_heads(value), int(heads),
                                   int(dim) ** -0.5 if scale is None else scale)
        return out.reshape(batch, tokens, heads, -1).transpose(1, 2)

    F.scaled_dot_product_attention = fused
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original


@contextlib.contextmanager
def tracing_in_form(role: str):
    """Open while a piece of `role` is traced: the current form for encoders and memory pieces,
    plain for decoders and the clients' files."""
    form = current_form() if role in ROLES else PLAIN
    with attention_form(form):
        if form == FUSED:
            with fused_scaled_dot_product_attention():
                yield
        else:
            yield
