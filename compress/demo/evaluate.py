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

from runtime.atomic import atomic_write

from .shapes import held_out_cases

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent.parent / "weights" / "demo_sam.safetensors"


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


class _PredictorAdapter:
    """segment_anything's SamPredictor with runtime.Session's keyword names."""

    def __init__(self, model):
        from segment_anything import SamPredictor

        self.predictor = SamPredictor(model)

    def set_image(self, image):
        self.predictor.set_image(image)

    def predict(self, points=None, labels=None, box=None, multimask_output=True):
        return self.predictor.predict(
            point_coords=None if points is None else np.asarray(points, np.float32),
            point_labels=None if labels is None else np.asarray(labels),
            box=None if box is None else np.asarray(box, np.float32),
            multimask_output=multimask_output,
        )


def open_predictor(source):
    """A Session for a bundle directory, a SamPredictor for a checkpoint or a model."""
    if isinstance(source, (str, Path)) and Path(source).is_dir():
        from runtime import Session

        return Session(source)
    if isinstance(source, (str, Path)):
        from ..checkpoint import load_checkpoint

        source = load_checkpoint(source)
    return _PredictorAdapter(source)


def evaluate(source, count: int = 200, show_progress: bool = True) -> dict:
    """{'point_miou', 'box_miou', 'count'} on the first `count` held-out cases."""
    predictor = open_predictor(source)
    point_ious, box_ious = [], []
    for case in tqdm(held_out_cases(count), desc="evaluate", disable=not show_progress):
        predictor.set_image(case.image)
        masks, scores, _ = predictor.predict(points=case.point[None], labels=[1])
        point_ious.append(_iou(masks[int(np.argmax(scores))], case.mask))
        masks, _, _ = predictor.predict(box=case.box, multimask_output=False)
        box_ious.append(_iou(masks[0], case.mask))
    return {"count": count, "point_miou": float(np.mean(point_ious)), "box_miou": float(np.mean(box_ious))}


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
