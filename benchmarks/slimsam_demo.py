"""SlimSAM-50 on the bundled demo model: mIoU at every stage, per importance criterion.

    python -m benchmarks.run slimsam-demo [--images 384] [--epochs 6] [--count 200]

For disturbed Taylor, plain Taylor and random importance, in this one process: prune
at 0.5 (both steps), distil on synthetic shape images (unlabelled: the teacher gives
the targets), and measure one-point and box mIoU on the held-out set after pruning
step 1, distillation 1, pruning step 2 and distillation 2, next to the unpruned model.
Also records the wall time per step. Writes docs/benchmarks/slimsam-demo.md (+ .json).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from compress.checkpoint import load_checkpoint
from compress.demo import DEFAULT_CHECKPOINT
from compress.demo.evaluate import evaluate
from compress.slimsam.images import preprocess_images, synthetic_images
from compress.slimsam.pipeline import slim
from compress.slimsam.settings import SlimSettings

from .report import DOCS, Page, table

STAGES = ("pruned-1", "distilled-1", "pruned-2", "distilled-2")
IMPORTANCES = ("disturbed-taylor", "taylor", "random")


def add_arguments(parser) -> None:
    parser.add_argument("--images", type=int, default=384, help="synthetic training images")
    parser.add_argument("--val", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=6, help="epochs of each distillation step")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--importance-images", type=int, default=128)
    parser.add_argument("--count", type=int, default=200, help="held-out images for mIoU")


def run(kind: str, sam, images, val_images, args, work: Path) -> dict:
    began = time.perf_counter()
    marks = {}

    def stage_end(name, model):
        marks[name] = time.perf_counter() - began
        return evaluate(model, count=args.count, show_progress=False)

    settings = SlimSettings(ratio=0.5, importance=kind, importance_images=args.importance_images,
                            epochs1=args.epochs, epochs2=args.epochs, feature_epochs=args.epochs // 2,
                            alpha_epochs=args.epochs // 2, lr=args.lr, batch_size=4, accumulate=1,
                            show_progress=False)
    slim(sam, images, val_images, settings, work / kind, stage_end)
    results = {stage: settings.log[stage] for stage in STAGES}
    return {"importance": kind, "stages": results, "seconds": time.perf_counter() - began,
            "step1_log": settings.log["step1_log"], "step2_log": settings.log["step2_log"], "marks": marks}


def _delta(metrics: dict, baseline: dict) -> str:
    return (f"{(metrics['point_miou'] - baseline['point_miou']) * 100:+.2f} / "
            f"{(metrics['box_miou'] - baseline['box_miou']) * 100:+.2f}")


def measure(args) -> Page:
    torch.set_num_threads(2)  # as the page was measured: two threads on any machine keep reruns comparable
    sam = load_checkpoint(DEFAULT_CHECKPOINT)
    tensors = preprocess_images(synthetic_images(args.images + args.val), sam.config)
    images, val_images = tensors[: args.images], tensors[args.images:]
    baseline = evaluate(sam, count=args.count, show_progress=False)
    with tempfile.TemporaryDirectory() as work:
        runs = [run(kind, sam, images, val_images, args, Path(work)) for kind in IMPORTANCES]
    rows = [["-", "unpruned", f"{baseline['point_miou']:.4f}", f"{baseline['box_miou']:.4f}", ""]]
    rows += [[r["importance"], stage, f"{m['point_miou']:.4f}", f"{m['box_miou']:.4f}", _delta(m, baseline)]
             for r in runs for stage, m in r["stages"].items()]
    intro = (f"{args.images} synthetic training images, {args.val} for validation, {args.epochs} + {args.epochs} "
             f"epochs (batch 4, lr {args.lr:g}), importance from {args.importance_images} images; mIoU on "
             f"{args.count} held-out images (docs/demo-model.md). Wall time per run: "
             + ", ".join(f"{r['importance']} {r['seconds']:.0f} s" for r in runs) + ".")
    body = table(["importance", "stage", "point mIoU", "box mIoU", "delta vs unpruned (point / box)"], rows)
    return Page(DOCS / "slimsam-demo.md", "SlimSAM-50 on the demo model", intro, body,
                data={"baseline": baseline, "runs": runs})
