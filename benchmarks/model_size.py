"""Parameters and MACs of a model, and the bytes its files take.

Counts come from the architecture (for a bundle: the one in its manifest), built on
torch's meta device (no weights allocated, no arithmetic done), so vit_b costs nothing
to count. A Birkhoff model has the architecture of its source: each HyperLinear stands
for an nn.Linear of the same shape, and that Linear is what is counted. A quantised
bundle counts as its fp32 architecture (same graph; int8/int4 weights).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from compress import SamConfig, build_sam
from compress.families import config_from_dict
from runtime.bundle import DECODER_FILE, ENCODER_FILE, WEIGHTS_FILE

# The deployable pair; decoder_single.onnx is an optional alternative to decoder.onnx.
DEPLOYED_FILES = (ENCODER_FILE, DECODER_FILE)


def leaf_parameters(model: nn.Module) -> int:
    """Parameters of leaf modules only (the published convention: no free `pos_embed`, no
    relative-position tables)."""
    return sum(p.numel() for m in model.modules() if not list(m.children()) for p in m.parameters(recurse=False))


def _hook_layers(module: nn.Module, total: list) -> list:
    """Forward hooks adding each Linear's and Conv2d's MACs to total[0]; returns the handles."""

    def linear(layer, inputs, output):
        total[0] += output.numel() * layer.in_features

    def conv(layer, inputs, output):
        kernel = layer.in_channels // layer.groups * layer.kernel_size[0] * layer.kernel_size[1]
        total[0] += output.numel() * kernel

    return [m.register_forward_hook(linear if isinstance(m, nn.Linear) else conv)
            for m in module.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def layer_macs(module: nn.Module, inputs: tuple) -> int:
    """Linear + Conv2d MACs of module(*inputs)."""
    total = [0]
    handles = _hook_layers(module, total)
    with torch.no_grad():
        module(*inputs)
    for handle in handles:
        handle.remove()
    return total[0]


def encoder_macs(encoder: nn.Module) -> tuple[int, int]:
    """(Linear + Conv2d MACs, all MACs) of one forward pass on a [1, 3, S, S] input; all MACs
    add attention's two matmuls and the relative-position terms."""
    layer_total, attention_macs = [0], [0]

    def attention(module, inputs, output):
        batch, height, width, _ = inputs[0].shape
        tokens = height * width
        q_width = module.q.out_features if hasattr(module, "q") else module.qkv.out_features // 3
        attention_macs[0] += 2 * batch * tokens * tokens * q_width  # q k^T and attn v
        if module.use_rel_pos:
            attention_macs[0] += batch * tokens * (height + width) * q_width

    handles = _hook_layers(encoder, layer_total)
    handles += [m.register_forward_hook(attention) for m in encoder.modules()
                if type(m).__name__ in ("Attention", "SplitAttention")]
    size = encoder.img_size
    device = next(encoder.parameters()).device  # the meta device too: counting needs no arithmetic
    with torch.no_grad():
        encoder(torch.zeros(1, 3, size, size, device=device))
    for handle in handles:
        handle.remove()
    return layer_total[0], layer_total[0] + attention_macs[0]


def decoder_macs(model) -> int:
    """Linear + conv MACs of the prompt encoder and mask decoder for one point prompt
    (transposed convs counted as input elements x out channels x kernel area)."""
    total = [0]

    def linear(module, inputs, output):
        total[0] += output.numel() * module.in_features

    def conv(module, inputs, output):
        kernel = module.kernel_size[0] * module.kernel_size[1]
        if isinstance(module, nn.ConvTranspose2d):
            total[0] += inputs[0].numel() * module.out_channels // module.groups * kernel
        else:
            total[0] += output.numel() * module.in_channels // module.groups * kernel

    handles = []
    for part in (model.prompt_encoder, model.mask_decoder):
        for module in part.modules():
            if isinstance(module, nn.Linear):
                handles.append(module.register_forward_hook(linear))
            elif isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                handles.append(module.register_forward_hook(conv))
    grid = model.prompt_encoder.image_embedding_size
    embeddings = torch.zeros(1, model.prompt_encoder.embed_dim, *grid)
    with torch.no_grad():
        sparse, dense = model.prompt_encoder(points=(torch.zeros(1, 1, 2), torch.ones(1, 1)), boxes=None, masks=None)
        model.mask_decoder(image_embeddings=embeddings, image_pe=model.prompt_encoder.get_dense_pe(),
                           sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=False)
    for handle in handles:
        handle.remove()
    return total[0]


def encoder_counts(architecture: dict | SamConfig) -> dict:
    """{'params', 'macs_linear_conv', 'macs_all'} of one [1, 3, S, S] encoder forward pass."""
    config = architecture if isinstance(architecture, SamConfig) else config_from_dict(architecture)
    with torch.device("meta"):
        encoder = build_sam(config).image_encoder
        layer_macs, all_macs = encoder_macs(encoder)
    return {"params": sum(p.numel() for p in encoder.parameters()),
            "macs_linear_conv": layer_macs, "macs_all": all_macs}


def onnx_bytes(bundle: Path) -> int:
    """encoder.onnx + decoder.onnx and the external weights they read: a bundle's shared weights.bin
    (export/shared_weights.py), or a file's own .data (bundles from before it)."""
    total = 0
    for name in DEPLOYED_FILES:
        path = bundle / name
        total += path.stat().st_size
        data = path.with_name(path.name + ".data")
        if data.is_file():
            total += data.stat().st_size
    shared = bundle / WEIGHTS_FILE
    return total + (shared.stat().st_size if shared.is_file() else 0)


def checkpoint_bytes(checkpoint: Path | None) -> int | None:
    return None if checkpoint is None else checkpoint.stat().st_size
