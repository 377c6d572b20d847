"""What a Birkhoff compression did, per tensor and in total: JSON, and a PNG to look at."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from runtime.atomic import atomic_write

from .model import FELL_BACK_REL, HYPER_LINEAR, RAW, CompressedModel


def build_report(compressed: CompressedModel, source_bytes: int | None, compressed_bytes: int) -> dict:
    """Per-tensor figures and totals. The ratio is the reference's: original checkpoint
    bytes / compressed file bytes."""
    tensors = []
    for name, entry in compressed.entries.items():
        e = entry.encoded
        tensors.append({
            "name": name, "role": entry.role, "shape": list(entry.shape), "numel": entry.numel,
            "fell_back": entry.fell_back,
            "bits_per_weight": 32.0 if e is None else e.bits * e.indices.size / entry.numel,
            "codebook_size": None if e is None else e.codebook_size,
            "rings": None if e is None else e.rings,
            "mae": 0.0 if e is None else e.mae,
            "rel_rmse": entry.rel_rmse if e is not None else 0.0,
            # error relative to the tensor's bulk (codec.robust_relative_error); known for fall-backs too
            "robust_rel_rmse": entry.robust_rel_rmse,
            "fall_back_reason": entry.fall_back_reason,
        })
    encoded = [t for t in tensors if t["role"] != RAW]
    weights = sum(t["numel"] for t in tensors)
    encoded_weights = sum(t["numel"] for t in encoded)
    mae_known = [t for t in encoded if t["mae"] is not None]
    rel_known = [t for t in encoded if t["rel_rmse"] is not None]
    return {
        "variant": compressed.variant,
        "settings": None if compressed.settings is None else compressed.settings.to_dict(),
        "seconds": compressed.seconds,
        "source_bytes": source_bytes,
        "compressed_bytes": compressed_bytes,
        "ratio": None if not source_bytes else source_bytes / compressed_bytes,
        "weights": weights,
        "encoded_fraction": encoded_weights / max(weights, 1),
        "hyper_linear_layers": sum(t["role"] == HYPER_LINEAR for t in tensors),
        "fell_back": [t["name"] for t in tensors if t["fell_back"]],
        "fell_back_by_relative_error": [t["name"] for t in tensors if t["fall_back_reason"] == FELL_BACK_REL],
        # weighted by tensor size: the error of an average encoded weight
        "mae": _weighted(mae_known, "mae"),
        "rel_rmse": _weighted(rel_known, "rel_rmse"),
        "bits_per_encoded_weight": _weighted(encoded, "bits_per_weight"),
        "tensors": tensors,
    }


def _weighted(rows: list[dict], key: str) -> float | None:
    total = sum(r["numel"] for r in rows)
    return sum(r[key] * r["numel"] for r in rows) / total if total else None


def write_report(report: dict, json_path, png_path=None) -> None:
    atomic_write(json_path, lambda tmp: Path(tmp).write_text(json.dumps(report, indent=2)))
    if png_path is not None:
        plot_report(report, png_path)


def plot_report(report: dict, path) -> None:
    """Relative RMS error and bits per weight of every encoded tensor, largest first."""
    import matplotlib  # here, not at the top: the backend must be chosen before pyplot is imported

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted((t for t in report["tensors"] if t["role"] != RAW and t["rel_rmse"] is not None),
                  key=lambda t: -t["numel"])
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(8, len(rows) * 0.06), 6), sharex=True)
    x = np.arange(len(rows))
    colours = ["tab:blue" if t["role"] == HYPER_LINEAR else "tab:orange" for t in rows]
    top.bar(x, [t["rel_rmse"] for t in rows], color=colours, width=1.0)
    top.set_yscale("log")
    top.set_ylabel("relative RMS error")
    ratio = f", ratio {report['ratio']:.2f}" if report["ratio"] else ""
    top.set_title(f"Birkhoff ({report['variant']}): {len(rows)} encoded tensors{ratio}, "
                  f"{len(report['fell_back'])} stored raw (blue: HyperLinear, orange: decoded at load)")
    bottom.bar(x, [t["bits_per_weight"] for t in rows], color=colours, width=1.0)
    bottom.set_ylabel("bits per weight")
    bottom.set_xlabel("tensors, largest first")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
