"""Parity: does a bundle answer like the PyTorch reference on the same weights?

The reference is segment_anything's own `SamPredictor` on the checkpoint the bundle
was built from; the bundle runs through `runtime.Session`. Both see the same images
and prompts (points, boxes, mask input, multimask on and off) and every case reports
mask IoU, max |logit difference| (absolute and relative to the largest logit) and
max score difference.

    python -m runtime.parity BUNDLE [--checkpoint CKPT] [--images a.jpg b.png] [--out parity.json]

fp16 TensorRT engines answer within fp16 rounding, not float32's: check them with
looser thresholds, e.g. --backend tensorrt --min-iou 0.98 --max-relative-logit-error 0.02.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
# Parity runs the torch reference, so it needs the compress extra, which brings these too.
from skimage import data
from tqdm import tqdm

from .atomic import atomic_write, check_output_file
from .backends import BACKENDS
from .images import load_image
from .reference import ReferencePredictor, load_reference_model, parity_shapes
from .session import Session

DEFAULT_MIN_IOU = 0.99
DEFAULT_MAX_RELATIVE_LOGIT_ERROR = 1e-3


@dataclass
class Thresholds:
    min_mask_iou: float = DEFAULT_MIN_IOU
    max_relative_logit_error: float = DEFAULT_MAX_RELATIVE_LOGIT_ERROR

    def __post_init__(self):
        # A threshold no comparison can meet (IoU 2) or that every one meets (error -1) says nothing.
        if not 0.0 <= self.min_mask_iou <= 1.0:
            raise ValueError(f"min mask IoU {self.min_mask_iou:g} is outside 0..1 (an IoU is a fraction); "
                             f"e.g. --min-iou {DEFAULT_MIN_IOU}")
        if not 0.0 <= self.max_relative_logit_error < float("inf"):
            raise ValueError(f"max relative logit error {self.max_relative_logit_error:g} must be a finite number "
                             f">= 0; e.g. --max-relative-logit-error {DEFAULT_MAX_RELATIVE_LOGIT_ERROR:g}")


def standard_images() -> dict[str, np.ndarray]:
    """Real photographs shipped with scikit-image, and two synthetic-shape images."""
    return {**{name: getattr(data, name)() for name in ("astronaut", "coffee", "chelsea")}, **parity_shapes(2)}


def prompt_cases(height: int, width: int) -> list[dict]:
    """Prompts placed relative to the image size, so they suit any image."""
    def point(fx, fy):
        return [fx * width, fy * height]

    box = [0.25 * width, 0.2 * height, 0.75 * width, 0.8 * height]
    return [
        {"name": "one point", "points": [point(0.5, 0.45)], "labels": [1]},
        {"name": "one point, single mask", "points": [point(0.5, 0.45)], "labels": [1],
         "multimask_output": False},
        {"name": "fg + bg points", "points": [point(0.4, 0.4), point(0.9, 0.9)], "labels": [1, 0]},
        {"name": "box", "box": box, "multimask_output": False},
        {"name": "box + point", "box": box, "points": [point(0.5, 0.5)], "labels": [1],
         "multimask_output": False},
        {"name": "point + mask input", "points": [point(0.5, 0.45)], "labels": [1],
         "multimask_output": False, "mask_from_previous": True},
    ]


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


@dataclass
class CaseResult:
    image: str
    prompt: str
    mask_iou: float  # worst mask of the case
    max_abs_logit_diff: float
    max_relative_logit_diff: float  # divided by the reference's largest |logit|
    max_score_diff: float
    passed: bool


def compare(session: Session, model, images: dict[str, np.ndarray], thresholds: Thresholds,
            progress=None) -> list[CaseResult]:
    reference = ReferencePredictor(model)
    results = []
    for image_name, image in images.items():
        image = load_image(image)
        reference.set_image(image)
        session.set_image(image)
        previous = None
        for case in prompt_cases(*image.shape[:2]):
            mask_input = previous if case.get("mask_from_previous") else None
            prompt = dict(points=case.get("points"), labels=case.get("labels"), box=case.get("box"),
                          mask_input=mask_input, multimask_output=case.get("multimask_output", True))
            ref_masks, ref_scores, ref_logits = reference.predict(**prompt)
            ours = session.predict(**prompt)
            previous = ref_logits[np.argmax(ref_scores)][None]
            iou = min(mask_iou(a, b) for a, b in zip(ours.masks, ref_masks))
            abs_diff = float(np.abs(ours.low_res_logits - ref_logits).max())
            rel_diff = abs_diff / max(float(np.abs(ref_logits).max()), 1e-6)
            results.append(CaseResult(
                image=image_name, prompt=case["name"], mask_iou=iou,
                max_abs_logit_diff=abs_diff, max_relative_logit_diff=rel_diff,
                max_score_diff=float(np.abs(ours.scores - ref_scores).max()),
                passed=iou >= thresholds.min_mask_iou and rel_diff <= thresholds.max_relative_logit_error,
            ))
        if progress is not None:
            progress.update(1)
    return results


def run_parity(bundle, checkpoint=None, images: dict | None = None,
               thresholds: Thresholds | None = None, out=None, show_progress: bool = True,
               backend: str = "auto") -> dict:
    """Compare a bundle with the PyTorch reference; write the report to `out` if given."""
    thresholds = thresholds or Thresholds()
    if out is not None:
        check_output_file(out)
    # No ONNX Runtime arenas: between its runs the reference runs, and both peaks would add up.
    with Session(bundle, backend=backend, low_memory=True) as session:
        checkpoint = checkpoint or session.bundle.checkpoint
        if checkpoint is None:
            raise ValueError(f"parity needs the checkpoint {bundle} was built from; pass --checkpoint")
        model = reference_model(session.bundle, checkpoint)
        images = images if images is not None else standard_images()
        with tqdm(total=len(images), desc="parity", unit="image", disable=not show_progress) as bar:
            results = compare(session, model, images, thresholds, bar)
    report = {
        "bundle": str(bundle),
        "checkpoint": str(checkpoint),
        "backend": session.backend.name,
        "thresholds": asdict(thresholds),
        "passed": all(r.passed for r in results),
        "worst": {
            "mask_iou": min(r.mask_iou for r in results),
            "max_abs_logit_diff": max(r.max_abs_logit_diff for r in results),
            "max_relative_logit_diff": max(r.max_relative_logit_diff for r in results),
            "max_score_diff": max(r.max_score_diff for r in results),
        },
        "cases": [asdict(r) for r in results],
    }
    if out is not None:
        atomic_write(out, lambda tmp: Path(tmp).write_text(json.dumps(report, indent=2)))
    return report


def reference_model(bundle, checkpoint):
    """The checkpoint's model, as the checkpoint itself (or the architecture named at build
    time) says, refused before any work when it is not the bundle's architecture."""
    model = load_reference_model(checkpoint, bundle.manifest.get("model", {}).get("model_type"))
    built_from = bundle.manifest.get("model", {}).get("architecture")
    architecture = json.loads(json.dumps(model.config.to_dict()))  # tuples as the manifest's lists
    differences = [f"{key}: bundle {built_from.get(key)!r}, checkpoint {value!r}" for key, value in architecture.items()
                   if isinstance(built_from, dict) and key != "name" and built_from.get(key) != value]
    if differences:
        raise ValueError(f"{checkpoint} holds another architecture than {bundle.root} was built from "
                         f"({'; '.join(differences[:4])}); pass the checkpoint the bundle was built from")
    return model


def summary(report: dict) -> str:
    worst = report["worst"]
    verdict = "PASS" if report["passed"] else "FAIL"
    lines = [
        f"parity {verdict}: {len(report['cases'])} cases, {report['backend']} vs PyTorch reference",
        f"  worst mask IoU {worst['mask_iou']:.5f} (>= {report['thresholds']['min_mask_iou']})",
        f"  max |logit diff| {worst['max_abs_logit_diff']:.2e}, relative "
        f"{worst['max_relative_logit_diff']:.2e} (<= {report['thresholds']['max_relative_logit_error']:g})",
        f"  max |score diff| {worst['max_score_diff']:.2e}",
    ]
    for case in report["cases"]:
        if not case["passed"]:
            lines.append(f"  failed: {case['image']} / {case['prompt']}: IoU {case['mask_iou']:.4f}, "
                         f"relative logit diff {case['max_relative_logit_diff']:.2e}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--checkpoint", type=Path, help="default: the one named in the bundle's manifest")
    parser.add_argument("--images", nargs="+", type=Path, help="default: astronaut, coffee, chelsea + 2 synthetic")
    parser.add_argument("--out", type=Path, help="default: BUNDLE/parity.json")
    parser.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="auto: TensorRT engines when built and tensorrt is installed, else ONNX Runtime")
    parser.add_argument("--min-iou", type=float, default=DEFAULT_MIN_IOU)
    parser.add_argument("--max-relative-logit-error", type=float, default=DEFAULT_MAX_RELATIVE_LOGIT_ERROR)
    args = parser.parse_args(argv)
    try:
        thresholds = Thresholds(args.min_iou, args.max_relative_logit_error)
        images = None if args.images is None else {str(p): load_image(p) for p in args.images}
        report = run_parity(args.bundle, args.checkpoint, images, thresholds,
                            out=args.out or args.bundle / "parity.json", backend=args.backend)
    except ValueError as err:  # BundleError, CheckpointError, ImageError
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary(report))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
