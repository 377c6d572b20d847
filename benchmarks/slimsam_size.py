"""SlimSAM-50 / -77 from the full-size vit_b architecture: widths, parameters, MACs.

    python -m benchmarks.run slimsam-size

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

import time

import torch

from compress import build_sam
from compress.slimsam.attention import split_attention
from compress.slimsam.importance import make_importance
from compress.slimsam.pipeline import config_for, with_encoder
from compress.slimsam.prune import prune_bottleneck, prune_embedding

from .model_size import decoder_macs, encoder_macs, leaf_parameters
from .report import DOCS, Page, table

PUBLISHED = {"vit_b": (93e6, 372e9), "slimsam-50": (26e6, 98e9), "slimsam-77": (9.1e6, 23e9)}
RATIOS = (("slimsam-50", 0.5), ("slimsam-77", 0.77))


def slimmed_vit_b(ratio: float):
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


def _cells(r: dict) -> list[str]:
    pub_params, pub_macs = PUBLISHED[r["name"]]
    params, macs, whole = r["params_published_convention"], r["macs_published_convention"], r["macs_with_decoder"]
    return [r["name"], r["embed"], r["qkv"], r["mlp"], f"{params / 1e6:.2f}M", f"{pub_params / 1e6:.1f}M",
            f"{(params / pub_params - 1) * 100:+.1f} %", f"{pub_macs / 1e9:.0f}G", f"{macs / 1e9:.1f}G",
            f"{(macs / pub_macs - 1) * 100:+.1f} %", f"{whole / 1e9:.1f}G", f"{(whole / pub_macs - 1) * 100:+.1f} %",
            f"{r['params_all'] / 1e6:.2f}M", f"{r['macs_all'] / 1e9:.1f}G"]


def measure(args) -> Page:
    torch.set_grad_enabled(True)  # torch-pruning traces the model through autograd's graph
    began = time.perf_counter()
    rows = [row("vit_b", build_sam("vit_b", seed=0))] + [row(name, slimmed_vit_b(ratio)) for name, ratio in RATIOS]
    body = table(["model", "embed", "q/k/v", "MLP", "params (published convention)", "published", "diff",
                  "published MACs", "encoder MACs (Linear+Conv)", "diff", "+ decoder, one point", "diff",
                  "params, all", "encoder MACs, all"], [_cells(r) for r in rows])
    intro = (f"The run took {time.perf_counter() - began:.0f} s. Published figures: SlimSAM paper (SAM-B 93M / 372G). "
             "'Published convention': parameters of leaf layers (no `pos_embed`, no relative-position tables) "
             "and the image encoder's Linear + Conv2d MACs at 1024 px, window padding included. 'All': every "
             "parameter of the whole model; MACs with attention's matmuls and relative-position terms.")
    return Page(DOCS / "slimsam-size.md", "SlimSAM widths, parameters and MACs (vit_b)", intro, body)
