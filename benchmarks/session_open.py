"""What checking a bundle's hashes adds to opening it: Session(verify=True) vs verify=False.

    python -m benchmarks.run session-open [--models demo vit_b] [--repeats 5]

Both ways are timed in this one process, interleaved, after a warm-up open (so the files
are in the page cache for both), together with the hashing alone (Bundle.verify). The
bundles are built once (vit_b with seeded weights) under .cache/benchmarks/session-open.
Writes docs/benchmarks/session-open.md.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from compress import seeded_checkpoint
from compress.demo import DEFAULT_CHECKPOINT
from export.build import build_bundle
from runtime import Session, open_bundle

from .latency import interleaved
from .report import CACHE, DOCS, Page, fmt, table

FOLDER = CACHE / "session-open"


def add_arguments(parser) -> None:
    parser.add_argument("--models", nargs="+", default=["demo", "vit_b"], help="demo or a model type (seeded)")
    parser.add_argument("--repeats", type=int, default=5)


def bundle_for(model_type: str) -> Path:
    out = FOLDER / f"{model_type}-cpu"
    if not (out / "manifest.json").is_file():
        checkpoint = DEFAULT_CHECKPOINT if model_type == "demo" else seeded_checkpoint(model_type, FOLDER)
        build_bundle(out, "cpu", checkpoint, run_parity=False, overwrite=out.exists())
    return out


def opening(bundle: Path, repeats: int) -> dict:
    """Median seconds of each way to open `bundle`, and the bytes its manifest lists."""
    runs = interleaved({"verified": lambda: Session(bundle, backend="onnxruntime", verify=True),
                        "unverified": lambda: Session(bundle, backend="onnxruntime", verify=False),
                        "hashing": open_bundle(bundle, verify=False).verify}, repeats)
    listed = open_bundle(bundle, verify=False).manifest["files"]
    return {"bytes": sum(info["bytes"] for info in listed.values()),
            **{name: statistics.median(times) for name, times in runs.items()}}


def measure(args) -> Page:
    rows = []
    for model_type in args.models:
        result = opening(bundle_for(model_type), args.repeats)
        rows.append([model_type, fmt(result["bytes"] / 1e6, ".1f"), fmt(result["unverified"], ".3f"),
                     fmt(result["verified"], ".3f"), fmt(result["hashing"], ".3f"),
                     fmt(result["verified"] / result["unverified"], ".2f")])
    intro = ("Median seconds of `Session(bundle)` (ONNX Runtime, files in the page cache) with and without the "
             "SHA-256 check of every file the manifest lists, and of the hashing alone, over "
             f"{args.repeats} interleaved runs; the ratio is from the same run. Session hashes in a thread while "
             "the backend loads the models, so the check costs little more than the longer of the two.")
    body = table(["model", "listed MB", "open, verify=False (s)", "open, verify=True (s)", "hashing (s)", "ratio"],
                 rows)
    return Page(DOCS / "session-open.md", "Opening a bundle: the cost of checking its hashes", intro, body)
