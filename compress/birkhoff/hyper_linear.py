"""HyperLinear: a Linear layer that keeps its weight as Birkhoff codes.

The weight is decoded inside `forward` and multiplied, so the layer holds 16 bits per
pair of weights (8 per weight) instead of 64. Its decode is float32 and written op by
op like the ONNX function body in export/hyper_linear.py, so the two give the same
bits (tested); the float64 codec decode differs from it by float32 rounding only.

The codes are laid out as plugins/hyperlinear/spec.py describes (shared with the ONNX node
and the TensorRT plugin); the node's name, inputs and attributes come from there too.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.onnx import symbolic_helper

from plugins.hyperlinear import spec

from .codec import EncodedTensor, lattice_side

# torch.onnx's attribute suffixes (`name_i=`) for the spec's attribute types.
_ATTRIBUTE_SUFFIX = {"INT": "i", "FLOAT": "f", "FLOATS": "f", "STRING": "s"}


def pack_words(indices: np.ndarray, out_features: int) -> np.ndarray:
    """int indices [out * pairs] -> int32 words [out, ceil(pairs / 2)]."""
    rows = np.asarray(indices, np.int64).reshape(out_features, -1)
    if rows.shape[1] % 2:
        rows = np.concatenate([rows, np.zeros((out_features, 1), np.int64)], axis=1)
    return (rows[:, 0::2] + (rows[:, 1::2] << spec.INDEX_BITS)).astype(np.int32)


def unpack_words(words: torch.Tensor, pairs: int) -> torch.Tensor:
    """int32 words [out, W] -> int32 indices [out, pairs]. Div/Mod, not bit ops: ORT's
    CUDA provider has no BitwiseAnd, and the ONNX body mirrors this."""
    low = torch.remainder(words, 1 << spec.INDEX_BITS)
    high = torch.div(words, 1 << spec.INDEX_BITS, rounding_mode="floor")
    return torch.stack([low, high], dim=-1).reshape(words.shape[0], -1)[:, :pairs]


def decode_weight(codes, row_scale, *, in_features: int, codebook_size: int, side: float,
                  center: list[float], gains: list[float]) -> torch.Tensor:
    """float32 weight [out, in] from the codes. Every constant is float32, as in ONNX."""
    f32 = torch.float32
    area = lattice_side(codebook_size) ** 2
    pairs = (in_features + 1) // 2
    index = unpack_words(codes, pairs)  # [out, pairs]
    ring = torch.div(index, codebook_size, rounding_mode="floor")
    theta = torch.remainder(index, codebook_size)
    side_t = torch.tensor(side, dtype=f32)
    half = side_t * torch.tensor(0.5, dtype=f32)
    x = torch.remainder(theta, area).to(f32) * side_t / torch.tensor(float(area), dtype=f32)
    y = torch.remainder(theta, lattice_side(codebook_size)).to(f32) * side_t / torch.tensor(
        float(lattice_side(codebook_size)), dtype=f32)
    gain = torch.tensor(gains, dtype=f32, device=codes.device)[ring]
    center_t = torch.tensor(center, dtype=f32, device=codes.device)
    w0 = center_t[0] + (x - half) * gain
    w1 = center_t[1] + (y - half) * gain
    weight = torch.stack([w0, w1], dim=-1).reshape(codes.shape[0], -1)[:, :in_features]
    return weight * row_scale.to(f32)[:, None]


class _HyperLinearOp(torch.autograd.Function):
    """Emits one samedge::HyperLinear node when exported (TorchScript exporter)."""

    @staticmethod
    def forward(ctx, x, codes, row_scale, bias, layer):
        return F.linear(x, layer.decoded_weight(), bias)

    @staticmethod
    def symbolic(g, x, codes, row_scale, bias, layer):
        values = {"in_features": layer.in_features, "out_features": layer.out_features,
                  "codebook_size": layer.codebook_size, "lattice_side": lattice_side(layer.codebook_size),
                  "side": layer.side, "center": layer.center, "gains": layer.gains,
                  "plugin_namespace": spec.PLUGIN_NAMESPACE, "plugin_version": spec.PLUGIN_VERSION}
        # Every attribute of the spec, and nothing else, with the type the spec gives it.
        attributes = {f"{name}_{_ATTRIBUTE_SUFFIX[kind]}": values[name] for name, kind in spec.ATTRIBUTES}
        y = g.op(f"{spec.DOMAIN}::{spec.OP_TYPE}", x, codes, row_scale, bias, **attributes)
        # Tell the exporter the output's type and shape ([..., out]): it cannot see through the node.
        sizes = symbolic_helper._get_tensor_sizes(x)
        if sizes is not None:
            y.setType(x.type().with_sizes(sizes[:-1] + [layer.out_features]))
        return y


class HyperLinear(nn.Module):
    """y = x W^T + b with W decoded from Birkhoff codes on every call."""

    def __init__(self, in_features: int, out_features: int, *, codebook_size: int, side: float,
                 center, gains, codes: torch.Tensor, row_scale: torch.Tensor,
                 bias: torch.Tensor | None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.codebook_size = int(codebook_size)
        # float32-representable from the start: ONNX FLOATS attributes are float32.
        self.side = float(np.float32(side))
        self.center = [float(v) for v in np.asarray(center, np.float32)]
        self.gains = [float(v) for v in np.asarray(gains, np.float32)]
        self.register_buffer("codes", codes.to(torch.int32))  # [out, ceil(pairs/2)]
        self.register_buffer("row_scale", row_scale.to(torch.float32))  # [out]
        self.bias = nn.Parameter(bias.detach().clone()) if bias is not None else None

    @classmethod
    def from_encoded(cls, encoded: EncodedTensor, bias: torch.Tensor | None = None) -> "HyperLinear":
        if not encoded.row_pairs:
            raise ValueError("HyperLinear needs a weight encoded with pairs along its rows")
        out_features, in_features = encoded.shape
        scale = encoded.scale if encoded.scale is not None else np.ones(1)
        row_scale = np.broadcast_to(np.asarray(scale, np.float32), (out_features,)).copy()
        return cls(in_features, out_features, codebook_size=encoded.codebook_size, side=encoded.side,
                   center=encoded.center, gains=encoded.gains,
                   codes=torch.from_numpy(pack_words(encoded.indices, out_features)),
                   row_scale=torch.from_numpy(row_scale), bias=bias)

    def decoded_weight(self) -> torch.Tensor:
        return decode_weight(self.codes, self.row_scale, in_features=self.in_features,
                             codebook_size=self.codebook_size, side=self.side,
                             center=self.center, gains=self.gains)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export():
            bias = self.bias if self.bias is not None else torch.zeros(self.out_features, device=x.device)
            return _HyperLinearOp.apply(x, self.codes, self.row_scale, bias, self)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.decoded_weight().to(x.dtype), bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"U={self.codebook_size}, rings={len(self.gains) - 1}")
