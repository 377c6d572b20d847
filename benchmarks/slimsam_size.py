"""SlimSAM-50 / -77 from the full-size vit_b architecture: widths, parameters, MACs.

    python -m benchmarks.slimsam_size

Prunes a seeded vit_b with both steps at 0.5 and at 0.77 (local pruning; the widths do
not depend on the importance scores, so random importance is used and no distillation
is run) and counts, next to the published figures:

- published convention (thop-style): parameters of the model's layers (leaf modules:
  the free `pos_embed` and the relative-position tables are not counted), and the
  image encoder's MACs of Linear and Conv2d layers only, window padding (64 -> 70
  tokens a side) included;
- our full count: every parameter, and MACs including attention's two matmuls and the
  relative-position terms.

Writes docs/benchmarks/slimsam-size.md.
"""

from __future__ import annotations

import datetime
import time
from pathlib import Path

import torch
from torch import nn

from .report import write_page

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks" / "slimsam-size.md"
PUBLISHED = {"vit_b": (93e6, 372e9), "slimsam-50": (26e6, 98e9), "slimsam-77": (9.1e6, 23e9)}


def leaf_parameters(model: nn.Module) -> int:
    return sum(p.numel() for m in model.modules() if not list(m.children()) for p in m.parameters(recurse=False))


def encoder_macs(encoder: nn.Module) -> tuple[int, int]:
    """(Linear + Conv2d MACs, all MACs) of one forward pass on a [1, 3, S, S] input."""
    layer_macs, attention_macs = [0], [0]

    def linear(module, inputs, output):
        layer_macs[0] += output.numel() * module.in_features

    def conv(module, inputs, output):
        kernel = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        layer_macs[0] += output.numel() * kernel

    def attention(module, inputs, output):
        batch, height, width, _ = inputs[0].shape
        tokens = height * width
        q_width = module.q.out_features if hasattr(module, "q") else module.qkv.out_features // 3
        attention_macs[0] += 2 * batch * tokens * tokens * q_width  # q k^T and attn v
        if module.use_rel_pos:
            attention_macs[0] += batch * tokens * (height + width) * q_width

    handles = []
    for module in encoder.modules():
        if isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear))
        elif isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv))
        elif type(module).__name__ in ("Attention", "SplitAttention"):
            handles.append(module.register_forward_hook(attention))
    size = encoder.img_size
    with torch.no_grad():
        encoder(torch.zeros(1, 3, size, size))
    for handle in handles:
        handle.remove()
    return layer_macs[0], layer_macs[0] + attention_macs[0]


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


def slimmed_vit_b(ratio: float):
    from compress import build_sam
    from compress.slimsam.attention import split_attention
    from compress.slimsam.importance import make_importance
    from compress.slimsam.pipeline import config_for, with_encoder
    from compress.slimsam.prune import prune_bottleneck, prune_embedding

    sam = build_sam("vit_b", seed=0)
    encoder = sam.image_encoder
    split_attention(encoder)
    example = torch.zeros(1, 3, 1024, 1024)
    prune_embedding(encoder, ratio, make_importance("random", "mean"), example)
    prune_bottleneck(encoder, ratio, make_importance("random", "gaussian"), example)
    return with_encoder(sam, encoder, config_for(encoder, sam.config, f"vit_b-slimsam-{round(ratio * 100)}"))


def row(name: str, model) -> dict:
    layer_macs, all_macs = encoder_macs(model.image_encoder)
    config = model.config
    return {"name": name, "embed": config.encoder_embed_dim,
            "qkv": config.attn_dim(0), "mlp": config.mlp_dim(0),
            "params_published_convention": leaf_parameters(model),
            "params_all": sum(p.numel() for p in model.parameters()),
            "encoder_params_all": sum(p.numel() for p in model.image_encoder.parameters()),
            "macs_published_convention": layer_macs, "macs_all": all_macs,
            "macs_with_decoder": layer_macs + decoder_macs(model)}


def main() -> int:
    from compress import build_sam

    torch.set_grad_enabled(True)
    began = time.perf_counter()
    rows = [row("vit_b", build_sam("vit_b", seed=0))]
    for name, ratio in (("slimsam-50", 0.5), ("slimsam-77", 0.77)):
        rows.append(row(name, slimmed_vit_b(ratio)))
    lines = ["| model | embed | q/k/v | MLP | params (published convention) | published | diff | published MACs "
             "| encoder MACs (Linear+Conv) | diff | + decoder, one point | diff | params, all | encoder MACs, all |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        pub_params, pub_macs = PUBLISHED[r["name"]]
        lines.append(
            f"| {r['name']} | {r['embed']} | {r['qkv']} | {r['mlp']} | {r['params_published_convention'] / 1e6:.2f}M "
            f"| {pub_params / 1e6:.1f}M | {(r['params_published_convention'] / pub_params - 1) * 100:+.1f} % "
            f"| {pub_macs / 1e9:.0f}G "
            f"| {r['macs_published_convention'] / 1e9:.1f}G | {(r['macs_published_convention'] / pub_macs - 1) * 100:+.1f} % "
            f"| {r['macs_with_decoder'] / 1e9:.1f}G | {(r['macs_with_decoder'] / pub_macs - 1) * 100:+.1f} % "
            f"| {r['params_all'] / 1e6:.2f}M | {r['macs_all'] / 1e9:.1f}G |")
    write_page(DOCS, "SlimSAM widths, parameters and MACs (vit_b)",
               f"Measured {datetime.date.today()} with `python -m benchmarks.slimsam_size` "
               f"({time.perf_counter() - began:.0f} s). Published figures: SlimSAM paper (SAM-B 93M / 372G). "
               "'Published convention': parameters of leaf layers (no `pos_embed`, no relative-position "
               "tables) and the image encoder's Linear + Conv2d MACs at 1024 px, window padding included. "
               "'All': every parameter of the whole model; MACs with attention's matmuls and relative-position "
               "terms.", "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
