"""Parity: does a bundle answer like the PyTorch reference on the same weights?

The reference is segment_anything's own `SamPredictor` on the checkpoint the bundle
was built from; the bundle runs through `runtime.Session`. Both see the same images
and prompts (points, boxes, mask input, multimask on and off) and every case reports
mask IoU, max |logit difference| (absolute and relative to the largest logit) and
max score difference.

    python -m runtime.parity BUNDLE [--checkpoint CKPT] [--images a.jpg b.png] [--out parity.json]

The bundle's batch decoder is checked too: predict_batch against one predict call per
prompt set, on the same backend (--min-batch-iou), and segment-everything
(runtime.everything) against segment_anything's SamAutomaticMaskGenerator on one image
(runtime/everything_parity.py has the criterion).

fp16 TensorRT engines answer within fp16 rounding, not float32's: check them with
looser thresholds, e.g. --backend tensorrt --min-iou 0.98 --max-relative-logit-error 0.02 --min-batch-iou 0.98.
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
from .backends import abilities, registry
from .bundle import PREPROCESS_ENCODER_FILE, open_bundle
from .everything import MaskGenerator
from .everything_parity import DEFAULT_SCORE_MARGIN, compare_records
from .images import load_image
from .reference import (ReferencePredictor, bundle_reference_model, parity_shapes,
                        reference_records)
from .session import Session

DEFAULT_MIN_IOU = 0.99
DEFAULT_MAX_RELATIVE_LOGIT_ERROR = 1e-3
# Predicted IoU scores (about 0..1), absolute: float32 engines differ by about 1e-6 (the demo
# model: 4.8e-7), so 1e-3 leaves room for summation order and flags a broken score head.
DEFAULT_MAX_SCORE_ERROR = 1e-3
# predict_batch against single predict calls on the same backend: the same model, so only
# the upscaling (numpy instead of the official decoder's graph) and summation order differ.
DEFAULT_MIN_BATCH_IOU = 0.999
# Segment-everything is checked on one synthetic image with thresholds that keep masks on
# any model (SAM's 0.88 / 0.95 keep none on seeded weights): the comparison, not the masks.
EVERYTHING_SETTINGS = {"points_per_side": 16, "pred_iou_thresh": 0.6, "stability_score_thresh": 0.8}
# Where the reference keeps no mask even so (a seeded SAM 2's logits are about 0.1, so no stability
# score survives the offset of 1), a comparison of nothing with nothing would pass whatever either
# side did: these settings keep masks of weak logits too.
WEAK_LOGIT_SETTINGS = {"points_per_side": 16, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.5,
                       "stability_score_offset": 0.01}


@dataclass
class Thresholds:
    min_mask_iou: float = DEFAULT_MIN_IOU
    max_relative_logit_error: float = DEFAULT_MAX_RELATIVE_LOGIT_ERROR
    min_batch_iou: float = DEFAULT_MIN_BATCH_IOU
    # segment-everything: how far predicted IoU and stability scores may differ (runtime/everything_parity.py)
    everything_score_margin: float = DEFAULT_SCORE_MARGIN
    max_score_error: float = DEFAULT_MAX_SCORE_ERROR

    def __post_init__(self):
        # A threshold no comparison can meet (IoU 2) or that every one meets (error -1) says nothing.
        for name, value in (("min mask IoU", self.min_mask_iou), ("min batch IoU", self.min_batch_iou)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} {value:g} is outside 0..1 (an IoU is a fraction); "
                                 f"e.g. --min-iou {DEFAULT_MIN_IOU}")
        if not 0.0 <= self.max_relative_logit_error < float("inf"):
            raise ValueError(f"max relative logit error {self.max_relative_logit_error:g} must be a finite number "
                             f">= 0; e.g. --max-relative-logit-error {DEFAULT_MAX_RELATIVE_LOGIT_ERROR:g}")
        if not 0.0 <= self.max_score_error < float("inf"):
            raise ValueError(f"max score error {self.max_score_error:g} must be a finite number >= 0; "
                             f"e.g. --max-score-error {DEFAULT_MAX_SCORE_ERROR:g}")

    def passes(self, mask_iou: float, relative_logit_diff: float, score_diff: float, min_iou: float) -> bool:
        """One case's verdict: masks, logits and scores each within their threshold."""
        return (mask_iou >= min_iou and relative_logit_diff <= self.max_relative_logit_error
                and score_diff <= self.max_score_error)


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
            score_diff = float(np.abs(ours.scores - ref_scores).max())
            results.append(CaseResult(
                image=image_name, prompt=case["name"], mask_iou=iou,
                max_abs_logit_diff=abs_diff, max_relative_logit_diff=rel_diff, max_score_diff=score_diff,
                passed=thresholds.passes(iou, rel_diff, score_diff, thresholds.min_mask_iou),
            ))
        if progress is not None:
            progress.update(1)
    return results


def batch_cases(height: int, width: int) -> list[dict]:
    """Batches predict_batch must answer as single calls: 8 one-point sets, 4 boxes with a point each."""
    grid = [[fx * width, fy * height] for fx in (0.2, 0.4, 0.6, 0.8) for fy in (0.3, 0.7)]
    boxes = [[fx * width, fy * height, (fx + 0.35) * width, (fy + 0.4) * height] for fx in (0.1, 0.5)
             for fy in (0.1, 0.5)]
    return [
        {"name": "8 one-point sets", "points": [[p] for p in grid], "labels": [[1]] * 8},
        {"name": "4 boxes + a point each", "boxes": boxes, "labels": [[1]] * 4, "multimask_output": False,
         "points": [[[(b[0] + b[2]) / 2, (b[1] + b[3]) / 2]] for b in boxes]},
    ]


def compare_batches(session: Session, images: dict[str, np.ndarray], thresholds: Thresholds) -> list[CaseResult]:
    """predict_batch against one predict call per set, on the same session and image."""
    results = []
    for image_name, image in images.items():
        image = load_image(image)
        session.set_image(image)
        for case in batch_cases(*image.shape[:2]):
            multimask = case.get("multimask_output", True)
            batch = session.predict_batch(points=case.get("points"), labels=case.get("labels"),
                                          boxes=case.get("boxes"), multimask_output=multimask)
            ious, abs_diffs, rel_diffs, score_diffs = [], [], [], []
            for n in range(len(batch.scores)):
                one = session.predict(points=case["points"][n] if "points" in case else None,
                                      labels=case["labels"][n] if "points" in case else None,
                                      box=case["boxes"][n] if "boxes" in case else None, multimask_output=multimask)
                ious.append(min(mask_iou(a, b) for a, b in zip(batch.masks[n], one.masks)))
                abs_diffs.append(float(np.abs(batch.low_res_logits[n] - one.low_res_logits).max()))
                rel_diffs.append(abs_diffs[-1] / max(float(np.abs(one.low_res_logits).max()), 1e-6))
                score_diffs.append(float(np.abs(batch.scores[n] - one.scores).max()))
            results.append(CaseResult(image_name, case["name"], min(ious), max(abs_diffs), max(rel_diffs),
                                      max(score_diffs), thresholds.passes(min(ious), max(rel_diffs), max(score_diffs),
                                                                          thresholds.min_batch_iou)))
    return results


def _lacks_batch_decoder(backend) -> bool:
    """An ONNX bundle built before decoder_batch.onnx (TensorRT's decoder engine is the batch decoder,
    and the torch reference loops over single calls)."""
    return abilities(backend).batch_decoding == "missing"


def _batch_report(session: Session, images: dict, thresholds: Thresholds) -> dict:
    """The batch section of a report; skipped (with the reason) where the bundle has no batch decoder."""
    if _lacks_batch_decoder(session.backend):
        return {"skipped": "the bundle has no decoder_batch.onnx (built before samedge made one); rebuild it"}
    results = compare_batches(session, images, thresholds)
    return {"passed": all(r.passed for r in results), "worst_mask_iou": min(r.mask_iou for r in results),
            "max_relative_logit_diff": max(r.max_relative_logit_diff for r in results),
            "max_score_diff": max(r.max_score_diff for r in results), "cases": [asdict(r) for r in results]}


def _preprocess_encoder_report(session: Session, model, images: dict, thresholds: Thresholds) -> dict:
    """encoder_preprocess.onnx (export/clients.py, for AnyLabeling and samexporter) against the
    reference on the first image, every prompt case, as the bundle's encoder.onnx is."""
    path = session.bundle.root / PREPROCESS_ENCODER_FILE  # `session` is closed: its name and bundle only
    # The clients run it on ONNX Runtime: checked there, beside a run of either CPU backend.
    if not session.abilities.reads_onnx_files or not path.is_file():
        return {"skipped": "ONNX Runtime runs it, checked beside a CPU backend's run, not " + session.backend.name
                if path.is_file() else f"no {PREPROCESS_ENCODER_FILE} (built with --no-clients, or before samedge "
                                       "made one)"}
    name = next(iter(images))
    with Session(path, backend="onnxruntime", low_memory=True, verify=False) as preprocessing:
        results = compare(preprocessing, model, {name: images[name]}, thresholds)
    return {"passed": all(r.passed for r in results), "image": name,
            "worst_mask_iou": min(r.mask_iou for r in results),
            "max_relative_logit_diff": max(r.max_relative_logit_diff for r in results),
            "cases": [asdict(r) for r in results]}


def _everything_report(session: Session, model, images: dict, thresholds: Thresholds) -> dict:
    """runtime.everything against segment_anything's SamAutomaticMaskGenerator on one image
    (the first synthetic one, where given), EVERYTHING_SETTINGS; see runtime/everything_parity.py."""
    if _lacks_batch_decoder(session.backend):
        return {"skipped": "the bundle has no decoder_batch.onnx (built before samedge made one); rebuild it"}
    name = next((n for n in images if n.startswith("shapes")), next(iter(images)))
    image = load_image(images[name])
    settings = EVERYTHING_SETTINGS
    reference = reference_records(model, image, **settings)
    if reference is None:
        return {"skipped": "the model's family has no upstream automatic mask generator to compare with"}
    if not reference:
        settings = WEAK_LOGIT_SETTINGS
        reference = reference_records(model, image, **settings)
    ours = MaskGenerator(session, **settings, show_progress=False).generate(image)
    agreement = compare_records(ours, reference, settings["pred_iou_thresh"], settings["stability_score_thresh"],
                                score_margin=thresholds.everything_score_margin)
    return {"passed": agreement.passed and bool(reference), "image": name, "settings": settings,
            "masks": agreement.count, "reference_masks": agreement.reference_count,
            "matched": len(agreement.pairs), "median_iou": agreement.median_iou, "min_iou": agreement.min_iou,
            "max_predicted_iou_diff": agreement.max_predicted_iou_diff,
            "max_stability_diff": agreement.max_stability_diff, "unexplained": agreement.unexplained}


def run_parity(bundle, checkpoint=None, images: dict | None = None,
               thresholds: Thresholds | None = None, out=None, show_progress: bool = True,
               backend: str = "auto", everything: bool = True, video: bool = True) -> dict:
    """Compare a bundle with the PyTorch reference; write the report to `out` if given.

    `everything`: also compare segment-everything with SamAutomaticMaskGenerator, the slowest
    part on a full-size model (vit_b on 2 CPU cores: 5 of its 7 minutes). `video`: a bundle that tracks
    (SAM 2) also tracks a short synthetic clip against SAM2VideoPredictor (runtime/video_parity.py)."""
    thresholds = thresholds or Thresholds()
    if out is not None:
        check_output_file(out)
    # auto: what Session(bundle) opens here, so the backend checked is the one users get.
    backend = registry.resolve(open_bundle(bundle, verify=False), backend).name
    # No ONNX Runtime arenas: between its runs the reference runs, and both peaks would add up.
    with Session(bundle, backend=backend, low_memory=backend == "onnxruntime") as session:
        checkpoint = checkpoint or session.bundle.checkpoint
        if checkpoint is None:
            raise ValueError(f"parity needs the checkpoint {bundle} was built from; pass --checkpoint")
        model = bundle_reference_model(session.bundle, checkpoint)
        images = images if images is not None else standard_images()
        with tqdm(total=len(images), desc="parity", unit="image", disable=not show_progress) as bar:
            results = compare(session, model, images, thresholds, bar)
        batch = _batch_report(session, images, thresholds)
        everything = (_everything_report(session, model, images, thresholds) if everything
                      else {"skipped": "not asked for (runtime.parity --skip-everything)"})
    # After the bundle's session is closed: its models and this one's would add up (vit_h: 2.5 GB).
    preprocess_encoder = _preprocess_encoder_report(session, model, images, thresholds)
    video_section = {}
    if session.bundle.tracking is not None:
        if video:
            from .video_parity import build_check

            video_section = build_check(bundle, checkpoint, backend)
        else:
            video_section = {"skipped": "not asked for (runtime.parity --skip-video)"}
    report = {
        "bundle": str(bundle),
        "checkpoint": str(checkpoint),
        "backend": session.backend.name,
        "thresholds": asdict(thresholds),
        "passed": all(r.passed for r in results) and all(section.get("passed", True) for section in
                                                          (batch, preprocess_encoder, everything, video_section)),
        "worst": {
            "mask_iou": min(r.mask_iou for r in results),
            "max_abs_logit_diff": max(r.max_abs_logit_diff for r in results),
            "max_relative_logit_diff": max(r.max_relative_logit_diff for r in results),
            "max_score_diff": max(r.max_score_diff for r in results),
        },
        "cases": [asdict(r) for r in results],
        "batch": batch,
        "preprocess_encoder": preprocess_encoder,
        "everything": everything,
    }
    if video_section:
        report["video"] = video_section
    if out is not None:
        atomic_write(out, lambda tmp: Path(tmp).write_text(json.dumps(report, indent=2)))
    return report


def failed_rows(report: dict) -> list[str]:
    """The rows of a report that failed, as "image / prompt" (cases) or the section's name."""
    sections = ("batch", "preprocess_encoder", "everything")
    rows = [f"{case['image']} / {case['prompt']}" for case in report["cases"] if not case["passed"]]
    for name in sections:
        section = report.get(name, {})
        failed = [f"{name}: {case['image']} / {case['prompt']}" for case in section.get("cases", [])
                  if not case["passed"]]
        rows += failed or ([name] if section.get("passed") is False else [])
    video = report.get("video", {})
    if video.get("passed") is False:
        rows += [f"video: {row}" for row in video.get("failed", [])] or ["video"]
    return rows


def _section_line(section: dict, name: str, describe) -> list[str]:
    """The summary's line of a report section (batch, everything): skipped, or `describe(section)`."""
    if "skipped" in section:
        return [f"  {name}: skipped ({section['skipped']})"]
    return [f"  {name}: {describe(section)}"] if section else []


def summary(report: dict) -> str:
    worst = report["worst"]
    verdict = "PASS" if report["passed"] else "FAIL"
    lines = [
        f"parity {verdict}: {len(report['cases'])} cases, {report['backend']} vs PyTorch reference",
        f"  worst mask IoU {worst['mask_iou']:.5f} (>= {report['thresholds']['min_mask_iou']})",
        f"  max |logit diff| {worst['max_abs_logit_diff']:.2e}, relative "
        f"{worst['max_relative_logit_diff']:.2e} (<= {report['thresholds']['max_relative_logit_error']:g})",
        f"  max |score diff| {worst['max_score_diff']:.2e} (<= {report['thresholds']['max_score_error']:g})",
    ]
    batch, everything = report.get("batch", {}), report.get("everything", {})
    preprocess_encoder = report.get("preprocess_encoder", {})
    lines += _section_line(batch, "batch vs single calls", lambda b: (
        f"worst mask IoU {b['worst_mask_iou']:.5f} (>= {report['thresholds']['min_batch_iou']}), relative logit "
        f"diff {b['max_relative_logit_diff']:.2e}"))
    lines += _section_line(preprocess_encoder, "encoder_preprocess.onnx vs PyTorch reference", lambda p: (
        f"{'PASS' if p['passed'] else 'FAIL'} on {p['image']}, worst mask IoU {p['worst_mask_iou']:.5f}, relative "
        f"logit diff {p['max_relative_logit_diff']:.2e}"))
    lines += _section_line(everything, "segment-everything vs the upstream automatic mask generator", lambda e: (
        f"{'PASS' if e['passed'] else 'FAIL'} on {e['image']}, {e['masks']} masks vs {e['reference_masks']}, "
        f"median IoU {e['median_iou']:.5f}, {e['unexplained']} unmatched away from the thresholds"))
    video = report.get("video", {})
    lines += _section_line(video, "video tracking vs SAM2VideoPredictor", lambda v: (
        f"{'PASS' if v['passed'] else 'FAIL'} on {v['frames']} frames, objects {v['objects']}, worst mask IoU "
        f"{v['worst']['mask_iou']:.5f}, relative logit diff {v['worst']['logit_error']:.2e}, pointer diff "
        f"{v['worst']['pointer_error']:.2e}"))
    for case in report["cases"] + batch.get("cases", []) + preprocess_encoder.get("cases", []):
        if not case["passed"]:
            lines.append(f"  failed: {case['image']} / {case['prompt']}: IoU {case['mask_iou']:.4f}, "
                         f"relative logit diff {case['max_relative_logit_diff']:.2e}, "
                         f"score diff {case['max_score_diff']:.2e}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--checkpoint", type=Path, help="default: the one named in the bundle's manifest")
    parser.add_argument("--images", nargs="+", type=Path, help="default: astronaut, coffee, chelsea + 2 synthetic")
    parser.add_argument("--out", type=Path, help="default: BUNDLE/parity.json")
    parser.add_argument("--backend", choices=registry.choices(), default="auto",
                        help="auto: what runtime.Session opens by default here (TensorRT engines when built and "
                             "tensorrt is installed, else the faster CPU engine for the bundle's kind)")
    parser.add_argument("--min-iou", type=float, default=DEFAULT_MIN_IOU)
    parser.add_argument("--max-relative-logit-error", type=float, default=DEFAULT_MAX_RELATIVE_LOGIT_ERROR)
    parser.add_argument("--max-score-error", type=float, default=DEFAULT_MAX_SCORE_ERROR,
                        help="largest |predicted IoU score difference| from the reference")
    parser.add_argument("--min-batch-iou", type=float, default=DEFAULT_MIN_BATCH_IOU,
                        help="predict_batch against single predict calls on the same backend")
    parser.add_argument("--skip-everything", action="store_true",
                        help="leave out the segment-everything comparison (vit_b: 5 minutes on 2 CPU cores)")
    parser.add_argument("--skip-video", action="store_true",
                        help="SAM 2 bundles: leave out the short tracking check against SAM2VideoPredictor")
    parser.add_argument("--video", type=Path,
                        help="SAM 2 bundles: track this folder of JPEG frames against SAM2VideoPredictor instead "
                             "(runtime/video_parity.py; report: BUNDLE/video_parity.json unless --out)")
    args = parser.parse_args(argv)
    if args.video is not None:
        return _video_main(args)
    try:
        thresholds = Thresholds(args.min_iou, args.max_relative_logit_error, args.min_batch_iou,
                                max_score_error=args.max_score_error)
        images = None if args.images is None else {str(p): load_image(p) for p in args.images}
        report = run_parity(args.bundle, args.checkpoint, images, thresholds,
                            out=args.out or args.bundle / "parity.json", backend=args.backend,
                            everything=not args.skip_everything, video=not args.skip_video)
    except ValueError as err:  # BundleError, CheckpointError, ImageError
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary(report))
    return 0 if report["passed"] else 1


def _video_main(args) -> int:
    from .video_parity import run_video_parity, video_summary

    try:
        report = run_video_parity(args.bundle, args.video, args.checkpoint, backend=args.backend)
    except ValueError as err:  # BundleError, VideoError, CheckpointError
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = args.out or args.bundle / "video_parity.json"
    atomic_write(out, lambda tmp: Path(tmp).write_text(json.dumps(report, indent=1)))
    print(video_summary(report))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
