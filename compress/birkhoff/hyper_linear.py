"""HyperLinear: a Linear layer that keeps its weight as Birkhoff codes.

The weight is decoded inside `forward` and multiplied, so the layer holds the codes at their
bit width (11 to 13 bits per pair of weights) instead of 64 bits. The codes are laid out as
plugins/hyperlinear/spec.py describes (the same bits as the checkpoint, the ONNX node and the
TensorRT plugin); the node's name, inputs and attributes come from there too. The decode
goes through the table of plugins/hyperlinear/reference.py, computed on the CPU (a CUDA
division rounds differently in the last place), so every device gets the same weights as
the numpy reference, the ONNX function body and the plugin: bit for bit (tested).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.onnx import symbolic_helper

from plugins.hyperlinear import reference, spec

from .codec import EncodedTensor, lattice_side

# torch.onnx's attribute suffixes (`name_i=`) for the spec's attribute types.
_ATTRIBUTE_SUFFIX = {"INT": "i", "FLOAT": "f", "FLOATS": "f", "STRING": "s"}


def unpack_codes(words: torch.Tensor, count: int, bits: int) -> torch.Tensor:
    """int32 words -> int64 indices [count]: reference.unpack in torch ops (any device)."""
    unsigned = words.reshape(-1).to(torch.int64) & 0xFFFFFFFF
    offset = torch.arange(count, dtype=torch.int64, device=words.device) * bits
    word, shift = offset >> 5, offset & 31
    low = unsigned[word] >> shift
    high = unsigned[torch.clamp(word + 1, max=unsigned.numel() - 1)] << (32 - shift)
    return (low | high) & ((1 << bits) - 1)


def decode_weight(codes: torch.Tensor, row_scale: torch.Tensor, table: torch.Tensor, *,
                  in_features: int, index_bits: int) -> torch.Tensor:
    """float32 W [out, in]: each index's table pair times its row's scale."""
    out_features = row_scale.shape[0]
    pairs = (in_features + 1) // 2
    index = unpack_codes(codes, out_features * pairs, index_bits)
    weight = table[index].reshape(out_features, 2 * pairs)[:, :in_features]
    return weight * row_scale.to(torch.float32)[:, None]


class _HyperLinearOp(torch.autograd.Function):
    """Emits one samedge::HyperLinear node when exported (TorchScript exporter)."""

    @staticmethod
    def forward(ctx, x, codes, row_scale, bias, layer):
        return F.linear(x, layer.decoded_weight(), bias)

    @staticmethod
    def symbolic(g, x, codes, row_scale, bias, layer):
        values = {"in_features": layer.in_features, "out_features": layer.out_features,
                  "codebook_size": layer.codebook_size, "lattice_side": lattice_side(layer.codebook_size),
                  "index_bits": layer.index_bits, "side": layer.side, "center": layer.center, "gains": layer.gains,
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

    def __init__(self, in_features: int, out_features: int, *, codebook_size: int, index_bits: int,
                 side: float, center, gains, codes: torch.Tensor, row_scale: torch.Tensor,
                 bias: torch.Tensor | None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.codebook_size, self.index_bits = int(codebook_size), int(index_bits)
        # float32-representable from the start: ONNX FLOATS attributes are float32.
        self.side = float(np.float32(side))
        self.center = [float(v) for v in np.asarray(center, np.float32)]
        self.gains = [float(v) for v in np.asarray(gains, np.float32)]
        count = out_features * ((in_features + 1) // 2)
        if codes.numel() != reference.word_count(count, self.index_bits):
            raise ValueError(f"{codes.numel()} code words for {count} pairs of {self.index_bits} bits")
        self.register_buffer("codes", codes.to(torch.int32).reshape(-1))  # [ceil(pairs * bits / 32)]
        self.register_buffer("row_scale", row_scale.to(torch.float32))  # [out]
        table = reference.pair_table(self.codebook_size, lattice_side(self.codebook_size), self.side,
                                     self.center, self.gains)
        # Derived from the attributes, so not saved; moved with the module by .to().
        self.register_buffer("table", torch.from_numpy(table), persistent=False)  # [U * (K + 1), 2]
        self.bias = nn.Parameter(bias.detach().clone()) if bias is not None else None

    @classmethod
    def from_encoded(cls, encoded: EncodedTensor, bias: torch.Tensor | None = None) -> "HyperLinear":
        if not encoded.row_pairs:
            raise ValueError("HyperLinear needs a weight encoded with pairs along its rows")
        out_features, in_features = encoded.shape
        scale = encoded.scale if encoded.scale is not None else np.ones(1)
        row_scale = np.broadcast_to(np.asarray(scale, np.float32), (out_features,)).copy()
        return cls(in_features, out_features, codebook_size=encoded.codebook_size, index_bits=encoded.bits,
                   side=encoded.side, center=encoded.center, gains=encoded.gains,
                   codes=torch.from_numpy(reference.pack(encoded.indices, encoded.bits)),
                   row_scale=torch.from_numpy(row_scale), bias=bias)

    def decoded_weight(self) -> torch.Tensor:
        return decode_weight(self.codes, self.row_scale, self.table, in_features=self.in_features,
                             index_bits=self.index_bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export():
            bias = self.bias if self.bias is not None else torch.zeros(self.out_features, device=x.device)
            return _HyperLinearOp.apply(x, self.codes, self.row_scale, bias, self)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.decoded_weight().to(x.dtype), bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"U={self.codebook_size}, rings={len(self.gains) - 1}, bits={self.index_bits}")
