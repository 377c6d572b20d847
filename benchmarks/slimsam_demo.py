"""SlimSAM-50 on the bundled demo model: mIoU at every stage, per importance criterion.

    python -m benchmarks.slimsam_demo [--images 384] [--epochs 6] [--count 200]

For disturbed Taylor, plain Taylor and random importance, in this one process: prune
at 0.5 (both steps), distil on synthetic shape images (unlabelled: the teacher gives
the targets), and measure one-point and box mIoU on the held-out set after pruning
step 1, distillation 1, pruning step 2 and distillation 2, next to the unpruned model.
Also records the wall time per step. Writes docs/benchmarks/slimsam-demo.md (+ .json).
"""

from __future__ import annotations

import argparse
import datetime
import json
import tempfile
import time
from pathlib import Path

import torch

from .report import write_page

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks" / "slimsam-demo.md"
STAGES = ("pruned-1", "distilled-1", "pruned-2", "distilled-2")


def run(kind: str, sam, images, val_images, args, work: Path) -> dict:
    from compress.demo.evaluate import evaluate
    from compress.slimsam.pipeline import SlimSettings, slim

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


def main(argv=None) -> int:
    from compress.checkpoint import load_checkpoint
    from compress.demo.evaluate import DEFAULT_CHECKPOINT, evaluate
    from compress.slimsam.__main__ import synthetic_images
    from compress.slimsam.pipeline import preprocess_images

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=384, help="synthetic training images")
    parser.add_argument("--val", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=6, help="epochs of each distillation step")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--importance-images", type=int, default=128)
    parser.add_argument("--count", type=int, default=200, help="held-out images for mIoU")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    sam = load_checkpoint(DEFAULT_CHECKPOINT)
    tensors = preprocess_images(synthetic_images(args.images + args.val), sam.config)
    images, val_images = tensors[: args.images], tensors[args.images:]
    baseline = evaluate(sam, count=args.count, show_progress=False)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for kind in ("disturbed-taylor", "taylor", "random"):
            rows.append(run(kind, sam, images, val_images, args, Path(work)))
    lines = ["| importance | stage | point mIoU | box mIoU | delta vs unpruned (point / box) |",
             "|---|---|---|---|---|",
             f"| - | unpruned | {baseline['point_miou']:.4f} | {baseline['box_miou']:.4f} | |"]
    for r in rows:
        for stage, m in r["stages"].items():
            lines.append(f"| {r['importance']} | {stage} | {m['point_miou']:.4f} | {m['box_miou']:.4f} | "
                         f"{(m['point_miou'] - baseline['point_miou']) * 100:+.2f} / "
                         f"{(m['box_miou'] - baseline['box_miou']) * 100:+.2f} |")
    DOCS.with_suffix(".json").write_text(json.dumps({"baseline": baseline, "runs": rows}, indent=2, default=float))
    write_page(DOCS, "SlimSAM-50 on the demo model",
               f"Measured {datetime.date.today()} with `python -m benchmarks.slimsam_demo --images {args.images} "
               f"--epochs {args.epochs} --lr {args.lr}` on this 2-core CPU: {args.images} synthetic training "
               f"images, {args.val} for validation, {args.epochs} + {args.epochs} epochs (batch 4), importance "
               f"from {args.importance_images} images; mIoU on {args.count} held-out images (docs/demo-model.md). "
               "Wall time per run: " + ", ".join(f"{r['importance']} {r['seconds']:.0f} s" for r in rows) + ".",
               "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
