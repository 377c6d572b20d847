"""mIoU of a model on the held-out synthetic shapes, with one point and with a box.

    python -m compress.demo.evaluate [CHECKPOINT_OR_BUNDLE] [--count 200] [--out metrics.json]

A checkpoint is run by segment_anything's SamPredictor, a bundle directory by
runtime.Session. One point is answered with the best-scoring of the three multimask
outputs (SAM's own practice for an ambiguous click), a box with the single mask.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from runtime import Session
from runtime.atomic import atomic_write
from runtime.parity import mask_iou
from runtime.reference import ReferencePredictor

from ..checkpoint import load_checkpoint
from . import DEFAULT_CHECKPOINT
from .shapes import held_out_cases


def open_predictor(source):
    """A Session for a bundle directory, segment_anything's SamPredictor otherwise."""
    if isinstance(source, (str, Path)):
        if Path(source).is_dir():
            return Session(source)
        source = load_checkpoint(source)
    return ReferencePredictor(source)


def evaluate(source, count: int = 200, show_progress: bool = True) -> dict:
    """{'point_miou', 'box_miou', 'count', 'box_miou_by_area_quartile'} on the first `count`
    held-out cases; the last splits box mIoU by shape area (where the small model loses)."""
    predictor = open_predictor(source)
    point_ious, box_ious, areas = [], [], []
    for case in tqdm(held_out_cases(count), desc="evaluate", disable=not show_progress):
        predictor.set_image(case.image)
        masks, scores, _ = predictor.predict(points=case.point[None], labels=[1])
        point_ious.append(mask_iou(masks[int(np.argmax(scores))], case.mask))
        masks, _, _ = predictor.predict(box=case.box, multimask_output=False)
        box_ious.append(mask_iou(masks[0], case.mask))
        areas.append(int(case.mask.sum()))
    edges = np.percentile(areas, [0, 25, 50, 75, 100])
    quartiles = np.clip(np.searchsorted(edges[1:-1], areas, side="right"), 0, 3)
    by_area = [{"areas": [int(edges[q]), int(edges[q + 1])],
                "box_miou": float(np.mean(np.asarray(box_ious)[quartiles == q]))}
               for q in range(4) if np.any(quartiles == q)]
    return {"count": count, "point_miou": float(np.mean(point_ious)), "box_miou": float(np.mean(box_ious)),
            "box_miou_by_area_quartile": by_area}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", nargs="?", type=Path, default=DEFAULT_CHECKPOINT,
                        help="checkpoint or bundle directory (default: the bundled demo model)")
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--out", type=Path, help="also write the figures as JSON")
    args = parser.parse_args(argv)
    metrics = evaluate(args.source, args.count)
    metrics["source"] = str(args.source)
    print(f"{args.source}: one-point mIoU {metrics['point_miou']:.4f}, box mIoU {metrics['box_miou']:.4f} "
          f"on {args.count} held-out synthetic images")
    if args.out:
        atomic_write(args.out, lambda tmp: Path(tmp).write_text(json.dumps(metrics, indent=2)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
