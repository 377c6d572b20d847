"""Segment everything: every mask in an image from a grid of point prompts, on a bundle.

    python -m runtime.everything BUNDLE IMAGE --out masks.json [--overlay all.png] [--crop-n-layers 1] ...

`MaskGenerator(session).generate(image)` gives the records segment_anything's
`SamAutomaticMaskGenerator` gives (same settings, same meaning, same filters in the same
order; on a SAM 2 bundle sam2's `SAM2AutomaticMaskGenerator`'s, with its mask_threshold,
multimask_output and use_m2m) on any backend, without torch: the grid's points go through the session's batch
decoder, and runtime/amg.py holds the pieces. The JSON holds the records under "masks";
JSON cannot hold arrays, so --output-mode binary_mask writes uncompressed RLE there
(runtime.amg.rle_to_mask turns it back into a mask).

Each --setting is segment_anything's of the same name, with its default (chosen for SAM
ViT-H). The bundled demo model keeps few masks at those thresholds: try it with
--pred-iou-thresh 0.6 --stability-score-thresh 0.8.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from . import amg
from .amg import MaskGeneratorError
from .atomic import OutputError, atomic_write, check_output_file
from .backends import registry
from .images import load_image
from .mask_overlay import draw_masks
from .predict import image_format
from .prompts import known_pixels
from .session import MASK_THRESHOLD, Session

try:
    from tqdm import tqdm
except ImportError:  # tqdm comes with the compress extra; the base install runs without a progress bar
    tqdm = None

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")
# Masks upscaled at once: their float32 logits at crop size, not the 64 x 3 of a batch, bound the
# memory (a 1500 x 1500 crop: 16 masks 144 MB, a batch's 192 masks 1.7 GB).
UPSCALE_CHUNK = 16
MIN_CROP_SIDE = int(2 * amg.EDGE_TOLERANCE) + 1


@dataclass
class _Found:
    """Masks found so far, as parallel arrays (segment_anything's MaskData)."""

    rles: list  # uncompressed RLE in the image's frame
    boxes: np.ndarray  # int64 [n, 4] XYXY, in the crop's frame until the crop is done
    predicted_iou: np.ndarray  # float32 [n]
    stability: np.ndarray  # float32 [n]
    points: np.ndarray  # float64 [n, 2] XY, the prompt; in the crop's frame until the crop is done
    crop_boxes: np.ndarray  # int64 [n, 4] XYXY

    @classmethod
    def concat(cls, parts: list[_Found]) -> _Found:
        if not parts:
            return cls([], np.zeros((0, 4), np.int64), np.zeros(0, np.float32), np.zeros(0, np.float32),
                       np.zeros((0, 2)), np.zeros((0, 4), np.int64))
        return cls([rle for part in parts for rle in part.rles],
                   *(np.concatenate([getattr(part, name) for part in parts])
                     for name in ("boxes", "predicted_iou", "stability", "points", "crop_boxes")))

    def take(self, indices: np.ndarray) -> _Found:
        return _Found([self.rles[i] for i in indices], self.boxes[indices], self.predicted_iou[indices],
                      self.stability[indices], self.points[indices], self.crop_boxes[indices])


class MaskGenerator:
    """segment_anything's SamAutomaticMaskGenerator (and sam2's SAM2AutomaticMaskGenerator) on a
    runtime.Session; the settings mean what they mean there. sam2's adds three, which SAM 1's lacks
    (their defaults are SAM 1's behaviour): `mask_threshold` (the logit that makes a mask pixel),
    `multimask_output` (three masks per point, or the single-mask answer) and `use_m2m` (each mask
    refined once by the decoder with itself as mask input). `generate` leaves the session's current
    image as it found it."""

    def __init__(self, session: Session, points_per_side: int | None = 32, points_per_batch: int = 64,
                 pred_iou_thresh: float = 0.88, stability_score_thresh: float = 0.95,
                 stability_score_offset: float = 1.0, box_nms_thresh: float = 0.7, crop_n_layers: int = 0,
                 crop_nms_thresh: float = 0.7, crop_overlap_ratio: float = 512 / 1500,
                 crop_n_points_downscale_factor: int = 1, point_grids=None, min_mask_region_area: int = 0,
                 output_mode: str = "binary_mask", show_progress: bool = True, mask_threshold: float = MASK_THRESHOLD,
                 multimask_output: bool = True, use_m2m: bool = False):
        _check_counts(points_per_batch, crop_n_layers, crop_n_points_downscale_factor, crop_overlap_ratio,
                      min_mask_region_area)
        self.point_grids = _point_grids(points_per_side, point_grids, crop_n_layers, crop_n_points_downscale_factor)
        if output_mode not in OUTPUT_MODES:
            raise MaskGeneratorError(f"output_mode {output_mode!r} is not one of {', '.join(OUTPUT_MODES)}")
        if output_mode == "coco_rle":  # refused now, not after the model has run
            amg.import_extra("pycocotools.mask", "output_mode 'coco_rle'", "choose output_mode 'uncompressed_rle'")
        if min_mask_region_area > 0:
            amg.import_extra("scipy.ndimage", "min_mask_region_area > 0", "set min_mask_region_area to 0")
        self.session = session
        self.points_per_batch = points_per_batch
        self.pred_iou_thresh, self.stability_score_thresh = pred_iou_thresh, stability_score_thresh
        self.stability_score_offset = stability_score_offset
        self.box_nms_thresh, self.crop_nms_thresh = box_nms_thresh, crop_nms_thresh
        self.crop_n_layers, self.crop_overlap_ratio = crop_n_layers, crop_overlap_ratio
        self.min_mask_region_area, self.output_mode = min_mask_region_area, output_mode
        self.show_progress = show_progress
        self.mask_threshold, self.multimask_output, self.use_m2m = float(mask_threshold), multimask_output, use_m2m

    def generate(self, image) -> list[dict]:
        """Records for every mask: segmentation, area, bbox (XYWH), predicted_iou, point_coords,
        stability_score, crop_box (XYWH), as SamAutomaticMaskGenerator.generate gives them."""
        rgb = load_image(image)
        image_hw = rgb.shape[:2]
        self._check_crop_sizes(image_hw)
        crops, layers = amg.crop_boxes(image_hw, self.crop_n_layers, self.crop_overlap_ratio)
        jobs = zip(crops, layers)
        if tqdm is not None and self.show_progress and len(crops) > 1:
            jobs = tqdm(jobs, total=len(crops), desc="everything", unit="crop")
        # Each crop is encoded, and the caller's image stays current; the grid's points are pixels.
        with self.session.keeping_image(), known_pixels():
            found = _Found.concat([self._crop(rgb, crop, layer) for crop, layer in jobs])
        if len(crops) > 1:  # duplicates between crops: the smaller crop's mask is kept
            x0, y0, x1, y1 = found.crop_boxes.T
            smaller_first = np.float32(1) / ((x1 - x0) * (y1 - y0)).astype(np.float32)
            found = found.take(amg.box_nms(found.boxes, smaller_first, self.crop_nms_thresh))
        if self.min_mask_region_area > 0:
            found = self._without_small_regions(found)
        return [self._record(found, index) for index in range(len(found.rles))]

    def _crop(self, rgb: np.ndarray, crop_box: list[int], layer: int) -> _Found:
        x0, y0, x1, y1 = crop_box
        crop = rgb[y0:y1, x0:x1]
        self.session.set_image(crop)
        crop_hw = crop.shape[:2]
        points = self.point_grids[layer] * np.array(crop_hw)[None, ::-1]  # [0, 1] -> the crop's pixels
        step = self.points_per_batch
        found = _Found.concat([self._batch(points[start:start + step], crop_hw, crop_box, rgb.shape[:2])
                               for start in range(0, len(points), step)])
        found = found.take(amg.box_nms(found.boxes, found.predicted_iou, self.box_nms_thresh))
        return replace(found, boxes=amg.uncrop_boxes(found.boxes, crop_box),
                       points=amg.uncrop_points(found.points, crop_box),
                       crop_boxes=np.tile(np.array(crop_box, np.int64), (len(found.rles), 1)))

    def _batch(self, points: np.ndarray, crop_hw, crop_box, image_hw) -> _Found:
        answer = self.session.predict_batch(points=points[:, None, :], labels=np.ones((len(points), 1)),
                                            multimask_output=self.multimask_output, upscale=False)
        masks_per_point = answer.scores.shape[1]
        scores = answer.scores.reshape(-1)  # point-major: point 0's masks, point 1's, ...
        low_res = answer.low_res_logits.reshape(-1, 1, *answer.low_res_logits.shape[-2:])
        prompts = np.repeat(points, masks_per_point, axis=0)
        if self.use_m2m:
            scores, low_res = self._refined(prompts, low_res)
        # The predicted-IoU filter needs no mask, so only its survivors are upscaled.
        confident = scores > self.pred_iou_thresh if self.pred_iou_thresh > 0 else np.ones(len(scores), bool)
        candidates = np.flatnonzero(confident)
        parts = []
        for start in range(0, len(candidates), UPSCALE_CHUNK):
            chosen = candidates[start:start + UPSCALE_CHUNK]
            logits = self.session.upscale(low_res[chosen], crop_hw)[:, 0]
            stability = amg.stability_score(logits, self.mask_threshold, self.stability_score_offset)
            stable = stability >= self.stability_score_thresh if self.stability_score_thresh > 0 else slice(None)
            masks = logits[stable] > self.mask_threshold
            chosen, stability = chosen[stable], stability[stable]
            boxes = amg.masks_to_boxes(masks)
            whole = ~amg.box_near_crop_edge(boxes, crop_box, [0, 0, image_hw[1], image_hw[0]])
            rles = [amg.mask_to_rle(amg.uncrop_mask(mask, crop_box, image_hw)) for mask in masks[whole]]
            parts.append(_Found(rles, boxes[whole], scores[chosen[whole]], stability[whole], prompts[chosen[whole]],
                                np.zeros((len(rles), 4), np.int64)))
        return _Found.concat(parts)

    def _refined(self, prompts: np.ndarray, low_res: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """sam2's mask-to-mask refinement: each mask's point again, with the mask as mask input,
        single-mask answer; points_per_batch at a time. Returns scores [n] and low-res logits [n, 1, L, L]."""
        scores, refined = [], []
        for start in range(0, len(prompts), self.points_per_batch):
            chunk = slice(start, start + self.points_per_batch)
            answer = self.session.predict_batch(points=prompts[chunk, None, :], labels=np.ones((len(prompts[chunk]), 1)),
                                                mask_input=low_res[chunk], multimask_output=False, upscale=False)
            scores.append(answer.scores[:, 0])
            refined.append(answer.low_res_logits)
        return np.concatenate(scores), np.concatenate(refined)

    def _without_small_regions(self, found: _Found) -> _Found:
        """Holes and islands under min_mask_region_area removed, then NMS again, preferring the masks
        that needed no change (segment_anything's postprocess_small_regions)."""
        if not found.rles:
            return found
        rles, boxes, unchanged = list(found.rles), [], []
        for index, rle in enumerate(found.rles):
            mask, filled = amg.remove_small_regions(amg.rle_to_mask(rle), self.min_mask_region_area, "holes")
            mask, dropped = amg.remove_small_regions(mask, self.min_mask_region_area, "islands")
            boxes.append(amg.masks_to_boxes(mask))
            unchanged.append(not (filled or dropped))
            if filled or dropped:
                rles[index] = amg.mask_to_rle(mask)
        boxes = np.stack(boxes)
        keep = amg.box_nms(boxes, np.array(unchanged, np.float32), max(self.box_nms_thresh, self.crop_nms_thresh))
        return replace(found, rles=rles, boxes=boxes).take(keep)

    def _record(self, found: _Found, index: int) -> dict:
        rle = found.rles[index]
        if self.output_mode == "binary_mask":
            segmentation = amg.rle_to_mask(rle)
        elif self.output_mode == "coco_rle":
            segmentation = amg.coco_rle(rle)
        else:
            segmentation = rle
        return {
            "segmentation": segmentation,
            "area": amg.rle_area(rle),
            "bbox": amg.xyxy_to_xywh(found.boxes[index]),
            "predicted_iou": float(found.predicted_iou[index]),
            "point_coords": [found.points[index].tolist()],
            "stability_score": float(found.stability[index]),
            "crop_box": amg.xyxy_to_xywh(found.crop_boxes[index]),
        }

    def _check_crop_sizes(self, image_hw) -> None:
        """Layer by layer, so that a deep crop_n_layers is refused before its 4**layers crops are listed."""
        for layer in range(1, self.crop_n_layers + 1):
            smallest = amg.smallest_crop_side(image_hw, layer, self.crop_overlap_ratio)
            if smallest < MIN_CROP_SIDE:
                size = f"crops as small as {smallest} px" if smallest > 0 else "crops that start past its edge"
                raise MaskGeneratorError(
                    f"crop_n_layers={self.crop_n_layers} cuts this {image_hw[1]} x {image_hw[0]} image into {size}; "
                    f"masks within {amg.EDGE_TOLERANCE:g} px of a crop's edge are dropped (a larger crop sees them "
                    f"whole), so crops under {MIN_CROP_SIDE} px add nothing: use crop_n_layers <= {layer - 1} for "
                    "this image")


def _check_counts(points_per_batch, crop_n_layers, downscale_factor, overlap_ratio, min_area) -> None:
    for name, value, least in (("points_per_batch", points_per_batch, 1), ("crop_n_layers", crop_n_layers, 0),
                               ("crop_n_points_downscale_factor", downscale_factor, 1)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < least:
            raise MaskGeneratorError(f"{name} must be an integer >= {least}, got {value!r}")
    if not 0 <= overlap_ratio < 1:
        raise MaskGeneratorError(f"crop_overlap_ratio must lie in [0, 1) (a fraction of the image's short side), "
                                 f"got {overlap_ratio!r}; segment_anything's default is {512 / 1500:.4f}")
    if not min_area >= 0:
        raise MaskGeneratorError(f"min_mask_region_area must be >= 0 pixels (0: keep every region), got {min_area!r}")


def _point_grids(points_per_side, point_grids, crop_n_layers: int, downscale_factor: int) -> list[np.ndarray]:
    """One grid of [0, 1] XY points per crop layer, from points_per_side or as given."""
    if (points_per_side is None) == (point_grids is None):
        raise MaskGeneratorError("give exactly one of points_per_side (a regular grid, e.g. 32) and point_grids "
                                 "(your own [0, 1] XY points, one array per crop layer); set the other to None")
    if points_per_side is not None:
        if not isinstance(points_per_side, (int, np.integer)) or points_per_side < 1:
            raise MaskGeneratorError(f"points_per_side must be an integer >= 1, got {points_per_side!r}")
        if points_per_side // downscale_factor ** crop_n_layers < 1:
            raise MaskGeneratorError(
                f"points_per_side={points_per_side} / crop_n_points_downscale_factor={downscale_factor}**"
                f"{crop_n_layers} leaves crop layer {crop_n_layers} no point; raise points_per_side or lower "
                "crop_n_layers or crop_n_points_downscale_factor")
        return amg.layer_point_grids(points_per_side, crop_n_layers, downscale_factor)
    grids = [np.asarray(grid, np.float64) for grid in point_grids]
    if len(grids) < crop_n_layers + 1:
        raise MaskGeneratorError(f"point_grids holds {len(grids)} grid(s) but crop_n_layers={crop_n_layers} needs "
                                 f"{crop_n_layers + 1} (one per layer, the whole image first)")
    for layer, grid in enumerate(grids):
        if grid.ndim != 2 or grid.shape[1] != 2 or not len(grid) or not np.all((grid >= 0) & (grid <= 1)):
            raise MaskGeneratorError(f"point_grids[{layer}] must be [N >= 1, 2] XY points in [0, 1] (fractions "
                                     f"of the crop's width and height), got shape {grid.shape}")
    return grids


def _picture_format(path: Path) -> str:
    try:
        return image_format(check_output_file(path, "--overlay"))
    except OutputError as err:  # image_format names runtime.predict's option
        raise OutputError(str(err).replace(f"--out {path}", f"--overlay {path}", 1)) from None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("image", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="the records, as JSON (written atomically)")
    parser.add_argument("--overlay", type=Path, help="a picture of every mask, one colour each (.png, .jpg, ...)")
    parser.add_argument("--backend", choices=registry.choices(), default="auto",
                        help="auto: as runtime.Session opens by default (TensorRT engines, else the faster CPU engine)")
    settings = inspect.signature(MaskGenerator).parameters
    numeric = [p for p in settings.values() if type(p.default) in (int, float)]
    for parameter in numeric:
        parser.add_argument(f"--{parameter.name.replace('_', '-')}", type=type(parameter.default),
                            default=parameter.default, help=f"default {parameter.default:g}")
    parser.add_argument("--output-mode", choices=OUTPUT_MODES, default="binary_mask",
                        help="JSON cannot hold arrays: binary_mask is written as uncompressed_rle")
    parser.add_argument("--single-mask", action="store_true",
                        help="sam2's multimask_output=False: the single-mask answer per point, not three")
    parser.add_argument("--use-m2m", action="store_true", help="sam2's use_m2m: refine each mask once with itself")
    args = parser.parse_args(argv)
    chosen = {p.name: getattr(args, p.name) for p in numeric}
    chosen.update(multimask_output=not args.single_mask, use_m2m=args.use_m2m)
    mode = "uncompressed_rle" if args.output_mode == "binary_mask" else args.output_mode
    try:
        check_output_file(args.out)
        picture_format = _picture_format(args.overlay) if args.overlay else None
        image = load_image(args.image)
        with Session(args.bundle, backend=args.backend) as session:
            print(f"backend: {session.backend.name} ({session.backend_choice.reason})")
            records = MaskGenerator(session, **chosen, output_mode=mode).generate(image)
            backend = session.backend.name
    except (ValueError, RuntimeError) as err:  # MaskGeneratorError, ImageError, BundleError, OutputError
        print(f"error: {err}", file=sys.stderr)
        return 2
    report = {"image": str(args.image), "size": list(image.shape[:2]), "bundle": str(args.bundle), "backend": backend,
              "settings": {**chosen, "output_mode": mode}, "masks": records}
    atomic_write(args.out, lambda tmp: Path(tmp).write_text(json.dumps(report)))
    if args.overlay:
        largest_first = sorted(records, key=lambda record: -record["area"])  # small masks stay visible on top
        picture = draw_masks(image, (amg.segmentation_to_mask(r["segmentation"]) for r in largest_first))
        atomic_write(args.overlay, lambda tmp: picture.save(tmp, format=picture_format))
    print(f"{len(records)} masks -> {args.out}" + (f", {args.overlay}" if args.overlay else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
