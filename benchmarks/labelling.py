"""Labelling a folder with runtime.label: images per second in one process and on Ray Data.

    python -m benchmarks.run labelling [--images 24] [--size 256] [--points-per-side 16] [--workers 1 2]
    python -m benchmarks.run labelling --images 4 --size 128 --points-per-side 4 --workers 1 --out /tmp/l.md  # smoke

The demo bundle (the session-open page's, .cache/benchmarks/session-open), segment-everything with
--points-per-side points a side and the thresholds that keep masks on the demo model (predicted IoU 0.6,
stability 0.8), on --images synthetic-shape pictures of --size px (compress.demo.shapes, seeded) written as
PNG files. Each way labels the whole folder into a fresh output folder, one shard per image: in this
process with one Session (the backend `auto` picks), then on Ray Data with each --workers count (one actor,
one Session, 1 CPU each). The local Ray cluster is started once, untimed; each Ray run's time includes its
actors' start (the import of the runtime and the opening of the bundle in each worker), as a user's run
pays it. "Steady": images after the first over the time between the first and the last shard written,
the rate once every worker is up. Each run's annotations.json must equal the single-process run's.
Writes docs/benchmarks/labelling.md.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from compress.demo.shapes import make_sample
from runtime.label import label_dataset

from .report import DOCS, Page, fmt, table
from .session_open import bundle_for

THRESHOLDS = {"pred_iou_thresh": 0.6, "stability_score_thresh": 0.8}


def add_arguments(parser) -> None:
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--size", type=int, default=256, help="square pictures of this many pixels a side")
    parser.add_argument("--points-per-side", type=int, default=16)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Ray worker counts to time")
    parser.add_argument("--out", type=Path, default=DOCS / "labelling.md", help="the page to write")


def _timed(bundle: Path, folder: Path, out: Path, **options) -> dict:
    began = time.perf_counter()
    summary = label_dataset(bundle, [folder], out, shard_size=1, show_progress=False, **options)
    seconds = time.perf_counter() - began
    finished = sorted(path.stat().st_mtime for path in (out / "shards").glob("shard-*.json"))
    steady = (len(finished) - 1) / (finished[-1] - finished[0]) if len(finished) > 1 else None
    return {"seconds": seconds, "images_per_s": summary.images / seconds, "steady_images_per_s": steady,
            "annotations": summary.annotations, "result": (out / "annotations.json").read_bytes()}


def measure(args) -> Page:
    import ray

    bundle = bundle_for("demo")
    settings = {"points_per_side": args.points_per_side, **THRESHOLDS}
    work = Path(tempfile.mkdtemp(prefix="samedge-labelling-"))
    try:
        folder = work / "images"
        folder.mkdir()
        for index in range(args.images):
            Image.fromarray(make_sample(np.random.default_rng([11, index]), size=args.size).image).save(
                folder / f"{index:05d}.png")
        runs = {"single process": _timed(bundle, folder, work / "single", **settings)}
        ray.init(num_cpus=max(args.workers) + 1, include_dashboard=False, log_to_driver=False)
        try:
            for workers in args.workers:
                runs[f"Ray Data, {workers} worker{'s' * (workers > 1)}"] = _timed(
                    bundle, folder, work / f"ray-{workers}", use_ray=True, workers=workers, **settings)
        finally:
            ray.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    reference = runs["single process"]["result"]
    rows, results = [], {}
    for name, run in runs.items():
        same = run.pop("result") == reference
        results[name] = {**run, "same_as_single_process": same}
        rows.append([name, fmt(run["seconds"], ".1f"), fmt(run["images_per_s"], ".2f"),
                     fmt(run["steady_images_per_s"], ".2f"), run["annotations"], "yes" if same else "no"])
    intro = (f"{args.images} synthetic-shape pictures of {args.size} x {args.size} px, segment-everything with "
             f"{args.points_per_side} x {args.points_per_side} points (predicted IoU 0.6, stability 0.8) on the demo "
             "bundle, `python -m runtime.label` in one process and on a local Ray Data cluster (Ray "
             f"{ray.__version__}; one actor with one Session per worker, 1 CPU each). End to end: from the call to "
             "annotations.json, the Ray actors' start included (the cluster itself was started before, untimed). "
             "Steady: images after the first over the time from the first to the last image finished.")
    body = table(["run", "seconds", "images/s, end to end", "images/s, steady", "annotations",
                  "annotations.json as single process"], rows)
    return Page(args.out, "Labelling a folder: one process and Ray Data", intro, body, data=results)
