"""The SAM zoo on the CPU: one row per family, each through samedge's whole pipeline.

    python -m benchmarks.run zoo [--models MODEL_TYPE ...] [--repeats 3] [--fresh]
    python -m benchmarks.run zoo --from-json docs/benchmarks/zoo.json   # the text again, nothing measured

Per model type (seeded weights, compress.seeded_checkpoint, each family's own seeding; built on first
use and cached in .cache/benchmarks/<model type>/, as benchmarks/sam2.py builds them): the dense
bundle, its Birkhoff bundle (recipe "birkhoff", reference variant) and its int8 quantisation
(export.quantize). Parameters: the whole model's, from the bundle's manifest. Sizes: the checkpoint
torch loads (fp32 safetensors) against each bundle's ONNX files with their weights, and Birkhoff's
compressed checkpoint. Encoder latency: the family's upstream predictor (torch CPU, the reference
parity compares with) against runtime.Session on the dense bundle with ONNX Runtime and with
OpenVINO, open at once in one process and timed interleaved (benchmarks/sam2.py's engines and
benchmarks.latency.interleaved), so each ratio comes from the same minutes; set_image on the
astronaut photo. Birkhoff against dense: two ONNX Runtime Sessions, one per bundle, on three
photographs, one foreground point at each of a 4 x 4 grid: the IoU of the masks each answers (the
best-scored of three), and the largest difference of their low-res logits relative to the dense
bundle's largest |logit|. Seeded weights: the agreement says how closely the compressed bundle follows
the dense one, not how well either segments. Writes docs/benchmarks/zoo.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
from pathlib import Path

import numpy as np
from skimage import data

from .report import CACHE, DOCS, Page, fmt, table
from .sam2 import (BIRKHOFF, INT8, ORIGINAL, _birkhoff_settings, _build, _latency, _measured_line, _ratio,
                   _settings_text, _sizes, _torch_threads, _version)

PAGE = DOCS / "zoo.md"
# One architecture per family of the zoo: the one edge users start from (official sizes, seeded).
MODELS = ("mobile_sam", "sam_hq_vit_b", "efficientvit_sam_l0", "efficienttam_ti", "edgetam")
UPSTREAM = ("mobilesam-mirror", "segment-anything-hq", "efficientsam", "efficient-track-anything", "edgetam-dimos",
            "timm")
PHOTOS = ("astronaut", "coffee", "chelsea")
GRID = 4  # points per side of the agreement grid
MB = 1e6


def add_arguments(parser) -> None:
    parser.add_argument("--models", nargs="+", default=list(MODELS),
                        help="registered model types, seeded (a small one, e.g. sam2.1_hiera_t_256: a smoke run)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timed rounds after one warm-up")
    parser.add_argument("--fresh", action="store_true", help="rebuild the models' bundles instead of reusing the cache")
    parser.add_argument("--from-json", type=Path, metavar="JSON",
                        help="render the page again from a run's .json, measuring nothing")
    parser.add_argument("--work", type=Path, default=CACHE, help=argparse.SUPPRESS)  # the bundle cache (tests)
    parser.add_argument("--page", type=Path, default=PAGE, help=argparse.SUPPRESS)  # where the page goes (tests)


def _agreement(dense: Path, birkhoff: Path) -> dict:
    """Mask IoU and relative low-res logit difference of the Birkhoff bundle against the dense one."""
    from runtime import Session

    sessions = [Session(bundle, backend="onnxruntime", providers=["CPUExecutionProvider"])
                for bundle in (dense, birkhoff)]
    ious, logit_diffs = [], []
    for photo in PHOTOS:
        image = getattr(data, photo)()
        height, width = image.shape[:2]
        for session in sessions:
            session.set_image(image)
        for row in range(GRID):
            for column in range(GRID):
                point = [[(column + 0.5) * width / GRID, (row + 0.5) * height / GRID]]
                answers = [session.predict(points=point, labels=[1]) for session in sessions]
                best = [answer[0][int(np.argmax(answer[1]))] for answer in answers]
                union = np.logical_or(*best).sum()
                ious.append(float(np.logical_and(*best).sum() / union) if union else 1.0)
                dense_logits, birkhoff_logits = (np.asarray(answer[2], np.float64) for answer in answers)
                scale = np.abs(dense_logits).max()
                logit_diffs.append(float(np.abs(birkhoff_logits - dense_logits).max() / scale) if scale else 0.0)
    return {"miou": float(np.mean(ious)), "min_iou": float(np.min(ious)), "prompts": len(ious),
            "max_relative_logit_diff": float(np.max(logit_diffs))}


def measure(args) -> Page:
    if args.from_json:
        return _page(json.loads(args.from_json.read_text()), args.page, measured=_measured_line(args.page))
    from compress.families import family_of_type

    if args.repeats < 1:
        raise ValueError("--repeats must be at least 1")
    image = getattr(data, PHOTOS[0])()
    ov_cache = args.work / "zoo-openvino-cache"
    results = {"settings": {"repeats": args.repeats, "photo": PHOTOS[0], "agreement_photos": list(PHOTOS),
                            "torch_threads": _torch_threads(), "birkhoff_settings": _birkhoff_settings(),
                            "upstream": {name: _version(name) for name in UPSTREAM}},
               "models": {}}
    for model_type in args.models:
        family = family_of_type(model_type)  # an unknown type: the registry's error, before any build
        if args.fresh:
            shutil.rmtree(args.work / model_type, ignore_errors=True)
        print(f"{model_type}: building its bundles", flush=True)
        built, failed = _build(model_type, args.work)
        dense = built[ORIGINAL]
        manifest = dense.manifest
        row = results["models"][model_type] = {
            "family": family.name, "img_size": manifest["preprocessing"]["img_size"],
            "parameters": manifest["model"]["parameters"], "checkpoint_bytes": dense.checkpoint.stat().st_size,
            "sizes": _sizes(built, failed)}
        print(f"{model_type}: timing torch, ONNX Runtime and OpenVINO", flush=True)
        # The decoder is timed too (the engines' calls come in pairs); the page reports the encoder.
        row["latency"] = _latency(dense.checkpoint, dense.bundle, image, args.repeats, 1, ov_cache)
        if BIRKHOFF in built:
            print(f"{model_type}: Birkhoff against dense", flush=True)
            row["birkhoff_agreement"] = _agreement(dense.bundle, built[BIRKHOFF].bundle)
        gc.collect()
    return _page(results, args.page)


def _megabytes(size: dict, key: str) -> str:
    if "not_built" in size:
        return f"not built: {size['not_built'].replace('|', '/')}"
    return fmt(size[key] / MB, ".1f") if size.get(key) else "-"


def _rows(results: dict) -> tuple[list[list], list[list]]:
    size_rows, speed_rows = [], []
    for model_type, row in results["models"].items():
        sizes, checkpoint = row["sizes"], row["checkpoint_bytes"]
        dense, int8, birkhoff = (sizes.get(v, {"not_built": "not in this run"}) for v in (ORIGINAL, INT8, BIRKHOFF))
        size_rows.append([
            model_type, row["family"], row["img_size"], fmt(row["parameters"] / 1e6, ".2f") + "M",
            fmt(checkpoint / MB, ".1f"), _megabytes(dense, "model_files_bytes"), _megabytes(int8, "model_files_bytes"),
            _ratio(checkpoint, int8.get("model_files_bytes")), _megabytes(birkhoff, "checkpoint_inside_bytes"),
            _ratio(checkpoint, birkhoff.get("checkpoint_inside_bytes")), _megabytes(birkhoff, "model_files_bytes")])
        latency = row["latency"]
        torch_s = latency["torch"]["encoder_s"]
        agreement = row.get("birkhoff_agreement")
        speed_rows.append([
            model_type, fmt(torch_s, ".3f"), fmt(latency["onnxruntime"]["encoder_s"], ".3f"),
            _ratio(latency["onnxruntime"]["encoder_s"], torch_s), fmt(latency["openvino"]["encoder_s"], ".3f"),
            _ratio(latency["openvino"]["encoder_s"], torch_s),
            fmt(max(latency[e]["logits_diff"] for e in ("onnxruntime", "openvino")), ".1e"),
            "-" if agreement is None else fmt(agreement["miou"], ".4f"),
            "-" if agreement is None else fmt(agreement["min_iou"], ".4f"),
            "-" if agreement is None else fmt(agreement["max_relative_logit_diff"], ".1e")])
    return size_rows, speed_rows


def _page(results: dict, path: Path, measured: str | None = None) -> Page:
    settings = results["settings"]
    size_rows, speed_rows = _rows(results)
    upstream = ", ".join(f"{name} {version}" for name, version in settings["upstream"].items() if version)
    intro = (__doc__.split("\n\n", 2)[2].replace("\n", " ").strip()
             + f" This run: {settings['repeats']} timed rounds; torch with {settings['torch_threads']} threads; "
               f"Birkhoff {_settings_text(settings['birkhoff_settings'])}; upstream packages: {upstream}.")
    body = ("## Sizes (MB; ratios: the checkpoint's bytes over each)\n\n"
            + table(["model", "family", "px", "parameters", "checkpoint", "dense ONNX + weights",
                     "int8 ONNX + weights", "checkpoint / int8", "Birkhoff compressed checkpoint",
                     "checkpoint / Birkhoff", "Birkhoff ONNX + weights"], size_rows)
            + "\n\n## Encoder latency (median seconds; ratio to torch, same run) and Birkhoff against dense\n\n"
              "logits diff: max |low-res logits - torch's| of the dense bundle's Sessions, one point. Birkhoff: "
              f"{GRID * GRID} points on each of {len(settings['agreement_photos'])} photographs.\n\n"
            + table(["model", "torch CPU (s)", "ONNX Runtime (s)", "ORT / torch", "OpenVINO (s)", "OpenVINO / torch",
                     "logits diff", "Birkhoff mIoU with dense", "worst IoU", "max logit diff / max |logit|"],
                    speed_rows))
    return Page(path, "The SAM zoo on the CPU: sizes, encoder latency and Birkhoff against dense, per family",
                intro, body, data=results, measured=measured)
