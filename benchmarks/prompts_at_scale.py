"""Many prompts per image: the batch decoder against a loop of single calls, and segment-everything.

    python -m benchmarks.run prompts-at-scale [--models demo vit_b] [--repeats 5] [--everything-repeats 1]

Decoder: for N prompt sets on the astronaut (one point each), the seconds per prompt of
`Session.predict_batch` (masks at image size, and low-res only) and of N `Session.predict`
calls (what a client of the official decoder does), interleaved in this one process on
ONNX Runtime's CPU provider. Segment-everything: `runtime.everything.MaskGenerator` on
ONNX Runtime against segment_anything's `SamAutomaticMaskGenerator` on torch's CPU, the
same weights, image and default settings, one after the other in this run (the masks
each found and how well they match are in the table). Bundles: the session-open page's
(.cache/benchmarks/session-open). Writes docs/benchmarks/prompts-at-scale.md.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
from segment_anything import SamAutomaticMaskGenerator
from skimage import data

from runtime import Session, open_bundle
from runtime.everything import MaskGenerator
from runtime.everything_parity import compare_records
from runtime.reference import load_reference_model

from .latency import interleaved
from .report import DOCS, Page, fmt, table
from .session_open import bundle_for

PROMPT_COUNTS = (1, 8, 64)
# SAM's grid (32 x 32 points, 64 per call, no crops) with thresholds that keep masks on the
# demo model and on seeded weights (SAM's 0.88 / 0.95 keep none or one there).
SETTINGS = {"points_per_side": 32, "points_per_batch": 64, "pred_iou_thresh": 0.6, "stability_score_thresh": 0.8}


def add_arguments(parser) -> None:
    parser.add_argument("--models", nargs="+", default=["demo", "vit_b"], help="demo or a model type (seeded)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds of the decoder timings")
    parser.add_argument("--everything-repeats", type=int, default=1, help="images generated per generator")


def _points(count: int, height: int, width: int) -> np.ndarray:
    rng = np.random.default_rng(count)
    return rng.uniform([0, 0], [width, height], size=(count, 1, 2))


def decoder_rows(model: str, session: Session, image: np.ndarray, repeats: int) -> tuple[list, dict]:
    session.set_image(image)
    height, width = image.shape[:2]
    rows, results = [], {}
    for count in PROMPT_COUNTS:
        points, labels = _points(count, height, width), np.ones((count, 1))

        def loop():
            for one in points:
                session.predict(points=one, labels=[1])

        runs = interleaved({"batch": lambda: session.predict_batch(points=points, labels=labels),
                            "batch, low-res only": lambda: session.predict_batch(points=points, labels=labels,
                                                                                  upscale=False),
                            "loop of predict": loop}, repeats)
        per_prompt = {name: statistics.median(times) / count for name, times in runs.items()}
        results[f"{model} N={count}"] = per_prompt
        rows.append([model, count, *(fmt(1e3 * per_prompt[name], ".2f") for name in per_prompt),
                     fmt(per_prompt["loop of predict"] / per_prompt["batch"], ".2f") + "x"])
    return rows, results


def everything_rows(model: str, bundle, image: np.ndarray, repeats: int) -> tuple[list, dict]:
    reference = SamAutomaticMaskGenerator(load_reference_model(open_bundle(bundle, verify=False).checkpoint),
                                          **SETTINGS)
    with Session(bundle, backend="onnxruntime") as session:
        ours = MaskGenerator(session, **SETTINGS, show_progress=False)
        seconds = {"samedge": [], "segment_anything": []}
        for _ in range(repeats):  # alternated, so that machine noise hits both alike
            began = time.perf_counter()
            our_masks = ours.generate(image)
            seconds["samedge"].append(time.perf_counter() - began)
            began = time.perf_counter()
            their_masks = reference.generate(image)
            seconds["segment_anything"].append(time.perf_counter() - began)
    agreement = compare_records(our_masks, their_masks, SETTINGS["pred_iou_thresh"], SETTINGS["stability_score_thresh"])
    ours_s, theirs_s = (statistics.median(seconds[k]) for k in ("samedge", "segment_anything"))
    result = {"seconds": seconds, "masks": [len(our_masks), len(their_masks)], "passed": agreement.passed,
              "median_iou": agreement.median_iou, "min_iou": agreement.min_iou,
              "max_predicted_iou_diff": agreement.max_predicted_iou_diff}
    row = [model, fmt(ours_s, ".1f"), fmt(theirs_s, ".1f"), fmt(ours_s / theirs_s, ".2f") + "x",
           f"{len(our_masks)} / {len(their_masks)}", fmt(agreement.median_iou, ".4f"),
           "yes" if agreement.passed else "no"]
    return [row], {f"{model} everything": result}


def measure(args) -> Page:
    image = data.astronaut()
    decoder, everything, results = [], [], {}
    for model in args.models:
        bundle = bundle_for(model)
        with Session(bundle, backend="onnxruntime") as session:
            rows, timings = decoder_rows(model, session, image, args.repeats)
        decoder += rows
        results.update(timings)
        rows, generated = everything_rows(model, bundle, image, args.everything_repeats)
        everything += rows
        results.update(generated)
    intro = ("ONNX Runtime CPU, the astronaut photograph (512 x 512), one foreground point per prompt set. "
             "Milliseconds per prompt: predict_batch decodes up to 64 sets per call and upscales each mask to "
             "the image (or not: low-res only); the loop calls predict (the official decoder, masks upscaled in "
             "its graph) once per set. Segment-everything: SAM's grid (32 x 32 points, 64 per call, no crops) with "
             "predicted-IoU and stability thresholds 0.6 / 0.8 (SAM's 0.88 / 0.95 keep no mask on seeded weights), "
             "seconds per image, encoder included, and the masks each generator kept, matched one-to-one by IoU "
             "(runtime/everything_parity.py's criterion: 'agree').")
    body = ("## Decoder, per prompt (ms)\n\n" + table(
        ["model", "N", "predict_batch", "predict_batch, low-res only", "loop of predict", "loop / batch"], decoder)
        + "\n\n## Segment-everything, per image\n\n" + table(
            ["model", "samedge on ORT (s)", "segment_anything on torch (s)", "ratio", "masks (ours / theirs)",
             "matched masks' median IoU", "agree"], everything))
    return Page(DOCS / "prompts-at-scale.md", "Prompts at scale: batch decoder and segment-everything", intro, body,
                data=results)
