"""Parameters and MACs of a variant's image encoder, and the bytes its files take.

Counts come from the architecture in the bundle's manifest, built on torch's meta
device (no weights allocated, no arithmetic done), so vit_b costs nothing to count. A
Birkhoff model has the architecture of its source: each HyperLinear stands for an
nn.Linear of the same shape, and that Linear is what is counted. A quantised bundle
counts as its fp32 architecture (same graph; int8/int4 weights).
"""

from __future__ import annotations

from pathlib import Path

from runtime.bundle import DECODER_FILE, ENCODER_FILE

# The deployable pair; decoder_single.onnx is an optional alternative to decoder.onnx.
DEPLOYED_FILES = (ENCODER_FILE, DECODER_FILE)


def encoder_counts(architecture: dict) -> dict:
    """{'params', 'macs_linear_conv', 'macs_all'} of one [1, 3, S, S] encoder forward pass."""
    import torch

    from benchmarks.slimsam_size import encoder_macs
    from compress import SamConfig, build_sam

    with torch.device("meta"):  # encoder_macs' own example input lands on meta too
        encoder = build_sam(SamConfig.from_dict(architecture)).image_encoder
        layer_macs, all_macs = encoder_macs(encoder)
    return {"params": sum(p.numel() for p in encoder.parameters()),
            "macs_linear_conv": layer_macs, "macs_all": all_macs}


def onnx_bytes(bundle: Path) -> int:
    """encoder.onnx + decoder.onnx, with external weight files (vit_h) where there are any."""
    total = 0
    for name in DEPLOYED_FILES:
        path = bundle / name
        total += path.stat().st_size
        data = path.with_name(path.name + ".data")
        if data.is_file():
            total += data.stat().st_size
    return total


def checkpoint_bytes(checkpoint: Path | None) -> int | None:
    return None if checkpoint is None else checkpoint.stat().st_size
