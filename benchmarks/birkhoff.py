"""Birkhoff against the data-free baselines: ratio, time, weight error, accuracy.

    python -m benchmarks.birkhoff [--count 200] [--skip-vit-b]
    python -m benchmarks.birkhoff --unit-rms-sweep      # the scaled variant's UNIT_RMS table

1. Full-size vit_b architecture (seeded random weights): compression wall time (encode
   + write) and ratio (original checkpoint bytes / compressed file bytes, as the
   reference computes it) for the reference-exact codec and the scale-aware variant.
2. The bundled demo model: the same two variants, per-channel int8 and 4-bit (blocks of
   32) ONNX Runtime quantisation, each with its size, time, image-encoder weight error
   and mIoU on the held-out synthetic images, next to the uncompressed model.

Everything runs in this one process, one method after another. Writes
docs/benchmarks/birkhoff.md (and .json next to it).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks" / "birkhoff.md"
VARIANTS = ("reference", "scaled")


def _encoder_weight_error(entries) -> tuple[float, float]:
    """Size-weighted MAE, and ||W - W'|| / ||W|| over the image encoder's encoded tensors together."""
    rows = [e for n, e in entries.items() if n.startswith("image_encoder.") and e.encoded is not None]
    mae = sum(e.encoded.mae * e.numel for e in rows) / sum(e.numel for e in rows)
    sq_err = sum(((e.rel_rmse or 0.0) * e.norm) ** 2 for e in rows)
    sq_ref = sum(e.norm**2 for e in rows)
    return mae, float(np.sqrt(sq_err / sq_ref))


def vit_b_rows(work: Path) -> list[dict]:
    from compress import build_sam, save_checkpoint
    from compress.birkhoff.model import compress_model
    from compress.birkhoff.storage import save_compressed

    source = work / "vit_b_seed0.safetensors"
    save_checkpoint(build_sam("vit_b", seed=0), source)
    rows = []
    for variant in VARIANTS:
        model = build_sam("vit_b", seed=0)
        began = time.perf_counter()
        compressed = compress_model(model, variant, show_progress=False)
        out = work / f"vit_b.{variant}.safetensors"
        save_compressed(compressed, out)
        seconds = time.perf_counter() - began
        mae, rel = _encoder_weight_error(compressed.entries)
        rows.append({"model": "vit_b (seeded)", "method": f"birkhoff-{variant}", "seconds": seconds,
                     "encode_seconds": compressed.seconds, "ratio": source.stat().st_size / out.stat().st_size,
                     "source_bytes": source.stat().st_size, "bytes": out.stat().st_size,
                     "mae": mae, "rel_rmse": rel,
                     "fell_back": sum(e.fell_back for e in compressed.entries.values())})
        out.unlink()
    return rows


def _onnx_bytes(bundle: Path) -> int:
    return sum((bundle / name).stat().st_size for name in ("encoder.onnx", "decoder.onnx"))


def demo_rows(work: Path, count: int) -> list[dict]:
    from compress.birkhoff.model import compress_model
    from compress.birkhoff.storage import save_compressed
    from compress.checkpoint import load_checkpoint
    from compress.demo.evaluate import DEFAULT_CHECKPOINT, evaluate
    from export.build import build_bundle
    from export.quantize import quantize_bundle, weight_error

    base_bundle = work / "demo-cpu"
    build_bundle(base_bundle, "cpu", DEFAULT_CHECKPOINT, run_parity=False)
    base = evaluate(base_bundle, count, show_progress=False)
    rows = [{"model": "demo", "method": "fp32 (none)", "seconds": 0.0, "ratio": 1.0, "onnx_ratio": 1.0,
             "bytes": DEFAULT_CHECKPOINT.stat().st_size, "onnx_bytes": _onnx_bytes(base_bundle),
             "mae": 0.0, "rel_rmse": 0.0, **base}]
    for variant in VARIANTS:
        began = time.perf_counter()
        compressed = compress_model(load_checkpoint(DEFAULT_CHECKPOINT), variant, show_progress=False)
        path = work / f"demo.{variant}.safetensors"
        save_compressed(compressed, path)
        seconds = time.perf_counter() - began
        bundle = work / f"demo-{variant}"
        build_bundle(bundle, "cpu", path, run_parity=False)
        mae, rel = _encoder_weight_error(compressed.entries)
        rows.append({"model": "demo", "method": f"birkhoff-{variant}", "seconds": seconds,
                     "ratio": DEFAULT_CHECKPOINT.stat().st_size / path.stat().st_size, "bytes": path.stat().st_size,
                     "onnx_bytes": _onnx_bytes(bundle), "mae": mae, "rel_rmse": rel,
                     **evaluate(bundle, count, show_progress=False)})
    for method in ("int8", "int4"):
        began = time.perf_counter()
        bundle = quantize_bundle(base_bundle, work / f"demo-{method}", method)
        seconds = time.perf_counter() - began
        error = weight_error(base_bundle / "encoder.onnx", bundle / "encoder.onnx", method)
        rows.append({"model": "demo", "method": f"ort-{method}", "seconds": seconds, "ratio": None,
                     "bytes": None, "onnx_bytes": _onnx_bytes(bundle), "mae": error["mae"],
                     "rel_rmse": error["rel_rmse"],
                     "weights_covered": error["weights_quantized"] / error["weights_total"],
                     **evaluate(bundle, count, show_progress=False)})
    for row in rows[1:]:
        row["onnx_ratio"] = rows[0]["onnx_bytes"] / row["onnx_bytes"]
        row["point_delta"] = row["point_miou"] - base["point_miou"]
        row["box_delta"] = row["box_miou"] - base["box_miou"]
    return rows


def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


def tables(vit_b: list[dict], demo: list[dict]) -> str:
    lines = []
    if vit_b:
        lines += ["| vit_b (seeded) | ratio | time s (encode + write) | weight MAE | rel. RMS error | tensors raw |",
                  "|---|---|---|---|---|---|"]
        for r in vit_b:
            lines.append(f"| {r['method']} | {r['ratio']:.2f} | {r['seconds']:.1f} ({r['encode_seconds']:.1f} + "
                         f"{r['seconds'] - r['encode_seconds']:.1f}) | {r['mae']:.2e} | {r['rel_rmse']:.3f} | "
                         f"{r['fell_back']} |")
        lines.append("")
    lines += ["| demo model | checkpoint ratio | ONNX ratio | time s | encoder weight MAE | rel. RMS error "
              "| point mIoU (delta) | box mIoU (delta) |",
              "|---|---|---|---|---|---|---|---|"]
    for r in demo:
        delta = lambda k: "" if "point_delta" not in r else f" ({r[k] * 100:+.2f})"  # noqa: E731
        lines.append(f"| {r['method']} | {_fmt(r['ratio'], '.2f')} | {r['onnx_ratio']:.2f} | {r['seconds']:.1f} | "
                     f"{r['mae']:.2e} | {r['rel_rmse']:.3f} | {r['point_miou']:.4f}{delta('point_delta')} | "
                     f"{r['box_miou']:.4f}{delta('box_delta')} |")
    return "\n".join(lines)


def unit_rms_sweep(values=(0.02, 0.03, 0.04, 0.05, 0.07)) -> str:
    """Ratio and encoder relative error of the scaled variant on the demo model per UNIT_RMS."""
    from compress.birkhoff.model import compress_model
    from compress.birkhoff.storage import save_compressed
    from compress.checkpoint import load_checkpoint
    from compress.demo.evaluate import DEFAULT_CHECKPOINT

    ratios, errors = [], []
    with tempfile.TemporaryDirectory() as work:
        for unit in values:
            compressed = compress_model(load_checkpoint(DEFAULT_CHECKPOINT), "scaled", show_progress=False,
                                        unit_rms=unit)
            path = Path(work) / "sweep.safetensors"
            save_compressed(compressed, path)
            ratios.append(DEFAULT_CHECKPOINT.stat().st_size / path.stat().st_size)
            errors.append(_encoder_weight_error(compressed.entries)[1])
    return "\n".join([
        "| UNIT_RMS | " + " | ".join(f"{u:g}" for u in values) + " |",
        "|---|" + "---|" * len(values),
        "| ratio | " + " | ".join(f"{r:.2f}" for r in ratios) + " |",
        "| rel. RMS error | " + " | ".join(f"{e:.3f}" for e in errors) + " |",
    ])


def main(argv=None) -> int:
    import onnxruntime
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200, help="held-out images for mIoU")
    parser.add_argument("--skip-vit-b", action="store_true")
    parser.add_argument("--unit-rms-sweep", action="store_true", help="only print the UNIT_RMS sweep table")
    args = parser.parse_args(argv)
    if args.unit_rms_sweep:
        print(unit_rms_sweep())
        return 0
    with tempfile.TemporaryDirectory() as work:
        vit_b = [] if args.skip_vit_b else vit_b_rows(Path(work))
        demo = demo_rows(Path(work), args.count)
    text = tables(vit_b, demo)
    print(text)
    header = [
        "# Birkhoff and data-free baselines",
        "",
        f"Measured {datetime.date.today()} with `python -m benchmarks.birkhoff --count {args.count}` on "
        f"{platform.machine()} ({platform.processor() or 'cpu'}), torch {torch.__version__}, "
        f"onnxruntime {onnxruntime.__version__}; mIoU on {args.count} held-out synthetic images "
        "(docs/demo-model.md). Deltas in mIoU points against the uncompressed model.",
        "",
        "- checkpoint ratio: original checkpoint bytes / compressed checkpoint bytes (the reference's figure);",
        "- ONNX ratio: fp32 encoder.onnx + decoder.onnx bytes / the method's (Birkhoff codes travel as int32",
        "  words holding two indices, 8 bits per weight, and non-Linear tensors are dense there);",
        "- weight error over the image encoder's encoded (or quantised) tensors; int8 also quantises",
        "  activations at run time (`quantize_dynamic`), int4 is weight-only (`MatMulNBits`).",
        "",
    ]
    DOCS.parent.mkdir(parents=True, exist_ok=True)
    DOCS.write_text("\n".join(header) + text + "\n")
    DOCS.with_suffix(".json").write_text(json.dumps({"vit_b": vit_b, "demo": demo}, indent=2))
    print(f"\nwritten to {DOCS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
