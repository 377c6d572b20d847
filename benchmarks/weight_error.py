"""How far each data-free method moves the weights: Birkhoff's two variants, ONNX Runtime's
int8 and int4, and the scaled variant's UNIT_RMS sweep.

    python -m benchmarks.run weight-error [--skip-vit-b] [--unit-rms 0.02 0.03 ...]

The results page (`python -m benchmarks.run`, docs/RESULTS.md) has these methods' sizes,
MACs, mIoU, latency and peak memory; this page has what that one does not measure:

1. Full-size vit_b architecture (seeded random weights): each Birkhoff variant's
   checkpoint ratio, weight error and tensors left raw.
2. The bundled demo model: both variants, per-channel int8 and 4-bit (blocks of 32) ONNX
   Runtime quantisation, each with its image encoder's weight error.
3. The scaled variant on the demo model per UNIT_RMS: ratio and weight error.

Weight error: size-weighted MAE and ||W - W'|| / ||W|| over the image encoder's encoded
(or quantised) tensors together. No figure here depends on the machine or its load (the
compression times are the results page's). Writes docs/benchmarks/weight-error.md (and
.json beside it). Every codec setting's bits per weight against its error and the demo
model's mIoU: the rate-distortion page (benchmarks/rate_distortion.py).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from compress import load_checkpoint, seeded_checkpoint
from compress.birkhoff.model import VARIANTS, compress_model
from compress.birkhoff.storage import save_compressed
from compress.demo import DEFAULT_CHECKPOINT
from export.build import build_bundle
from export.quantize import quantize_bundle
from runtime import open_bundle

from .report import CACHE, DOCS, Page, fmt, table

UNIT_RMS = (0.02, 0.03, 0.04, 0.05, 0.07)


def add_arguments(parser) -> None:
    parser.add_argument("--skip-vit-b", action="store_true", help="the demo model only (seconds, not a minute)")
    parser.add_argument("--unit-rms", nargs="+", type=float, default=list(UNIT_RMS), help="the sweep's values")


def encoder_error(entries) -> tuple[float, float]:
    """Size-weighted MAE, and ||W - W'|| / ||W|| over the image encoder's encoded tensors together."""
    rows = [e for n, e in entries.items() if n.startswith("image_encoder.") and e.encoded is not None]
    mae = sum(e.encoded.mae * e.numel for e in rows) / sum(e.numel for e in rows)
    sq_err = sum(((e.rel_rmse or 0.0) * e.norm) ** 2 for e in rows)
    sq_ref = sum(e.norm**2 for e in rows)
    return mae, float(np.sqrt(sq_err / sq_ref))


def birkhoff(source: Path, variant: str, work: Path, **options) -> dict:
    """Compress the checkpoint `source` and write it: sizes and weight error."""
    compressed = compress_model(load_checkpoint(source), variant, show_progress=False, **options)
    out = work / f"{source.stem}.{variant}.safetensors"
    save_compressed(compressed, out)
    mae, rel = encoder_error(compressed.entries)
    row = {"method": f"birkhoff-{variant}", "ratio": source.stat().st_size / out.stat().st_size, "source_bytes": source.stat().st_size,
           "bytes": out.stat().st_size, "mae": mae, "rel_rmse": rel,
           "fell_back": sum(e.fell_back for e in compressed.entries.values())}
    out.unlink()  # a vit_b one is 60 MB
    return row


def quantized(base: Path, method: str, work: Path) -> dict:
    """ONNX Runtime's quantisation of the bundle `base`: the encoder's weight error."""
    bundle = quantize_bundle(base, work / f"{base.name}-{method}", method)
    error = open_bundle(bundle).manifest["quantization"]["weights"]  # export.quantize.weight_error's
    return {"method": f"ort-{method}", "ratio": None, "mae": error["mae"],
            "rel_rmse": error["rel_rmse"], "weights_covered": error["weights_quantized"] / error["weights_total"]}


def demo_rows(work: Path) -> list[dict]:
    rows = [birkhoff(DEFAULT_CHECKPOINT, variant, work) for variant in VARIANTS]
    base = work / "demo-cpu"
    build_bundle(base, "cpu", DEFAULT_CHECKPOINT, run_parity=False)
    return rows + [quantized(base, method, work) for method in ("int8", "int4")]


def tables(vit_b: list[dict], demo: list[dict], sweep: list[dict]) -> str:
    parts = []
    if vit_b:
        parts.append(table(["vit_b (seeded)", "checkpoint ratio", "weight MAE", "rel. RMS error", "tensors raw"],
                           [[r["method"], f"{r['ratio']:.2f}", f"{r['mae']:.2e}", f"{r['rel_rmse']:.3f}",
                             r["fell_back"]] for r in vit_b]))
    parts.append(table(["demo model", "checkpoint ratio", "encoder weight MAE", "rel. RMS error"],
                       [[r["method"], fmt(r["ratio"], ".2f"), f"{r['mae']:.2e}", f"{r['rel_rmse']:.3f}"]
                        for r in demo]))
    parts.append(table(["UNIT_RMS"] + [f"{r['unit_rms']:g}" for r in sweep],
                       [["ratio"] + [f"{r['ratio']:.2f}" for r in sweep],
                        ["rel. RMS error"] + [f"{r['rel_rmse']:.3f}" for r in sweep]]))
    return "\n\n".join(parts)


def measure(args) -> Page:
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        vit_b = [] if args.skip_vit_b else [
            {"model": "vit_b (seeded)", **birkhoff(seeded_checkpoint("vit_b", CACHE / "vit_b"), variant, work)}
            for variant in VARIANTS]
        demo = [{"model": "demo", **row} for row in demo_rows(work)]
        sweep = [{"unit_rms": unit, **birkhoff(DEFAULT_CHECKPOINT, "scaled", work, unit_rms=unit)}
                 for unit in args.unit_rms]
    intro = ("Sizes, MACs, mIoU, compression time, latency and peak memory of the same methods: the results "
             "page (docs/RESULTS.md, `python -m benchmarks.run`). Checkpoint ratio: original checkpoint bytes / "
             "compressed checkpoint bytes (the reference's figure). Weight error over the image encoder's encoded "
             "(or quantised) tensors: size-weighted MAE and ||W - W'|| / ||W||; int8 also quantises activations at "
             "run time (`quantize_dynamic`), int4 is weight-only (`MatMulNBits`). Last table: the scaled variant on "
             "the demo model per UNIT_RMS (docs/birkhoff.md).")
    return Page(DOCS / "weight-error.md", "Birkhoff and data-free baselines: weight error", intro,
                tables(vit_b, demo, sweep), data={"vit_b": vit_b, "demo": demo, "unit_rms_sweep": sweep})
