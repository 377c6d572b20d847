"""The building blocks of automatic mask generation ("segment everything"), in numpy.

Each function means what its namesake in segment_anything/utils/amg.py means (grids of
point prompts, crops, stability score, boxes, run-length encoding, box NMS, small-region
removal), so runtime.everything gives segment_anything's records without torch, which a
Jetson may lack, or OpenCV, which it may lack too. Boxes are XYXY with the right and
bottom edges the last pixel's coordinate (inclusive), as there; masks are bool [..., H, W].
"""

from __future__ import annotations

import importlib
import math
from itertools import product

import numpy as np

EDGE_TOLERANCE = 20.0  # px: a box this close to a crop's edge (not the image's) was cut by the crop
EVERYTHING_EXTRA = 'pip install "samedge[everything]"'


class MaskGeneratorError(ValueError):
    """Settings, an image or a missing package automatic mask generation cannot work with, and the fix."""


def import_extra(module: str, needed_for: str, instead: str):
    """A module of the everything extra (pycocotools, scipy), imported when first needed: the base
    install (numpy, Pillow, a backend) segments everything without them in the other output modes."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MaskGeneratorError(f"{needed_for} needs {module.split('.')[0]}, which is not installed: "
                                 f"{EVERYTHING_EXTRA}, or {instead}") from None


def point_grid(points_per_side: int) -> np.ndarray:
    """[n * n, 2] XY points in [0, 1], the centres of an n x n grid of cells, x varying fastest."""
    half_cell = 1 / (2 * points_per_side)
    centres = np.linspace(half_cell, 1 - half_cell, points_per_side)
    x, y = np.meshgrid(centres, centres)
    return np.stack([x.ravel(), y.ravel()], axis=-1)


def layer_point_grids(points_per_side: int, crop_n_layers: int, downscale_factor: int) -> list[np.ndarray]:
    """One grid per crop layer; layer i has points_per_side / downscale_factor**i points a side."""
    return [point_grid(int(points_per_side / downscale_factor ** layer)) for layer in range(crop_n_layers + 1)]


def _layer_starts(image_hw, layer: int, overlap_ratio: float) -> tuple[list[int], list[int], int, int]:
    """Layer `layer`'s crops: their left and top edges, and their width and height before clipping."""
    height, width = (int(v) for v in image_hw)
    per_side = 2 ** layer
    overlap = int(overlap_ratio * min(height, width) * 2 / per_side)
    crop_w, crop_h = (math.ceil((overlap * (per_side - 1) + side) / per_side) for side in (width, height))
    return ([int((crop_w - overlap) * i) for i in range(per_side)],
            [int((crop_h - overlap) * i) for i in range(per_side)], crop_w, crop_h)


def crop_boxes(image_hw, crop_n_layers: int, overlap_ratio: float) -> tuple[list[list[int]], list[int]]:
    """XYXY crop boxes and their layers: the whole image (layer 0), then 2**i x 2**i crops in layer i
    that overlap by overlap_ratio of the short side (scaled down with the number of crops)."""
    height, width = (int(v) for v in image_hw)
    boxes, layers = [[0, 0, width, height]], [0]
    for layer in range(1, crop_n_layers + 1):
        x0s, y0s, crop_w, crop_h = _layer_starts(image_hw, layer, overlap_ratio)
        for x0, y0 in product(x0s, y0s):  # x-major, as segment_anything orders them
            boxes.append([x0, y0, min(x0 + crop_w, width), min(y0 + crop_h, height)])
            layers.append(layer)
    return boxes, layers


def smallest_crop_side(image_hw, layer: int, overlap_ratio: float) -> int:
    """The shortest side of layer `layer`'s crops (the last row and column are clipped by the image;
    negative where a crop starts past it), without listing the layer's 4**layer crops."""
    x0s, y0s, crop_w, crop_h = _layer_starts(image_hw, layer, overlap_ratio)
    height, width = (int(v) for v in image_hw)
    return min(min(crop_w, width - x0s[-1]), min(crop_h, height - y0s[-1]))


def stability_score(logits: np.ndarray, mask_threshold: float, offset: float) -> np.ndarray:
    """IoU of the masks thresholded at mask_threshold + offset and - offset ([..., H, W] -> [...]).
    The first lies inside the second, so the IoU is a ratio of pixel counts."""
    inner = np.count_nonzero(logits > mask_threshold + offset, axis=(-2, -1))
    outer = np.count_nonzero(logits > mask_threshold - offset, axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):  # an empty outer mask: NaN, which no threshold passes
        return inner.astype(np.float32) / outer.astype(np.float32)  # float32, as torch divides int counts


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """bool [..., H, W] -> int64 [..., 4] XYXY (inclusive); [0, 0, 0, 0] for an empty mask."""
    rows, cols = masks.any(axis=-1), masks.any(axis=-2)  # [..., H], [..., W]

    def first_last(hit: np.ndarray):
        first = np.argmax(hit, axis=-1)
        last = hit.shape[-1] - 1 - np.argmax(hit[..., ::-1], axis=-1)
        return first, last

    (top, bottom), (left, right) = first_last(rows), first_last(cols)
    boxes = np.stack([left, top, right, bottom], axis=-1).astype(np.int64)
    boxes[~rows.any(axis=-1)] = 0
    return boxes


def xyxy_to_xywh(box) -> list:
    x0, y0, x1, y1 = (v.item() if hasattr(v, "item") else v for v in box)
    return [x0, y0, x1 - x0, y1 - y0]


def box_near_crop_edge(boxes: np.ndarray, crop_box, image_box, tolerance: float = EDGE_TOLERANCE) -> np.ndarray:
    """[N] bool: boxes (in the crop's frame) within `tolerance` of an edge of the crop that is not
    also an edge of the image: the crop cut such a mask, a larger crop sees it whole."""
    boxes = uncrop_boxes(boxes, crop_box).astype(np.float32)
    near_crop = np.abs(boxes - np.asarray(crop_box, np.float32)) <= tolerance
    near_image = np.abs(boxes - np.asarray(image_box, np.float32)) <= tolerance
    return np.any(near_crop & ~near_image, axis=-1)


def uncrop_boxes(boxes: np.ndarray, crop_box) -> np.ndarray:
    x0, y0 = crop_box[:2]
    return boxes + np.array([x0, y0, x0, y0], dtype=boxes.dtype)


def uncrop_points(points: np.ndarray, crop_box) -> np.ndarray:
    return points + np.array(crop_box[:2], dtype=points.dtype)


def uncrop_mask(mask: np.ndarray, crop_box, image_hw) -> np.ndarray:
    """A crop's [h, w] mask placed in the image's [H, W] frame (zeros outside the crop)."""
    x0, y0, x1, y1 = crop_box
    if (x0, y0) == (0, 0) and mask.shape == tuple(image_hw):
        return mask
    full = np.zeros(tuple(image_hw), dtype=bool)
    full[y0:y1, x0:x1] = mask
    return full


def mask_to_rle(mask: np.ndarray) -> dict:
    """bool [H, W] -> segment_anything's uncompressed RLE: {"size": [H, W], "counts": [...]}, runs of
    the column-major pixels, zeros first (a leading 0 when the first pixel is set), as pycocotools reads."""
    height, width = mask.shape
    pixels = mask.T.ravel()  # column-major
    changes = np.flatnonzero(pixels[1:] != pixels[:-1]) + 1
    edges = np.concatenate([[0], changes, [pixels.size]])
    counts = np.diff(edges).tolist()
    if pixels.size and pixels[0]:
        counts.insert(0, 0)
    return {"size": [int(height), int(width)], "counts": counts}


def rle_to_mask(rle: dict) -> np.ndarray:
    height, width = rle["size"]
    counts = np.asarray(rle["counts"], np.int64)
    values = np.arange(len(counts)) % 2 == 1  # runs alternate zeros, ones, zeros, ...
    if counts.sum() != height * width:
        raise MaskGeneratorError(f"an RLE of size {height} x {width} has runs summing to {counts.sum()}, not "
                                 f"{height * width}: it is damaged or belongs to another image; re-create it")
    return np.repeat(values, counts).reshape(width, height).T  # back from column-major


def segmentation_to_mask(segmentation) -> np.ndarray:
    """A record's segmentation in any output mode (bool array, uncompressed or COCO RLE) -> bool [H, W]."""
    if isinstance(segmentation, np.ndarray):
        return segmentation.astype(bool, copy=False)
    if isinstance(segmentation.get("counts"), list):
        return rle_to_mask(segmentation)
    coco_mask = import_extra("pycocotools.mask", "decoding a COCO RLE", "write uncompressed RLE instead")
    counts = segmentation["counts"]
    encoded = {**segmentation, "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return coco_mask.decode(encoded).astype(bool)


def rle_area(rle: dict) -> int:
    return int(sum(rle["counts"][1::2]))


def coco_rle(rle: dict) -> dict:
    """segment_anything's uncompressed RLE -> COCO's compressed RLE (counts a str, for JSON)."""
    coco_mask = import_extra("pycocotools.mask", "output_mode 'coco_rle'", "choose output_mode 'uncompressed_rle'")
    height, width = rle["size"]
    encoded = coco_mask.frPyObjects(rle, height, width)
    return {"size": [int(v) for v in encoded["size"]], "counts": encoded["counts"].decode("ascii")}


def box_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices of the boxes greedy NMS keeps, by decreasing score: what torchvision.ops.batched_nms gives
    segment_anything with one category for all. Written here because torchvision needs torch, which
    a Jetson may lack, and cv2.dnn.NMSBoxes sorts and measures boxes otherwise (pixel-inclusive areas).
    As torchvision's kernel: float32 areas (x1 - x0) * (y1 - y0), a box suppressed when its IoU with
    a kept one is > the threshold, equal scores in index order (a stable sort). Above 1000 boxes
    torchvision's batched_nms re-sorts its answer with an unstable sort: the same boxes, but equal
    scores may come out in another order there."""
    boxes = np.asarray(boxes, np.float32)
    order = np.argsort(-np.asarray(scores, np.float32), kind="stable")
    x0, y0, x1, y1 = boxes.T
    areas = (x1 - x0) * (y1 - y0)
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        width = np.maximum(np.minimum(x1[best], x1[rest]) - np.maximum(x0[best], x0[rest]), np.float32(0))
        height = np.maximum(np.minimum(y1[best], y1[rest]) - np.maximum(y0[best], y0[rest]), np.float32(0))
        inter = width * height
        with np.errstate(invalid="ignore", divide="ignore"):  # two empty boxes: NaN, never suppressed
            iou = inter / (areas[best] + areas[rest] - inter)
        order = rest[~(iou.astype(np.float64) > iou_threshold)]  # compared in double, as the kernel does
    return np.array(keep, np.int64)


def remove_small_regions(mask: np.ndarray, min_area: float, mode: str) -> tuple[np.ndarray, bool]:
    """Fill holes ("holes") or drop islands ("islands") of fewer than min_area pixels (8-connected);
    returns the mask and whether it changed. Dropping every island keeps the largest. segment_anything
    labels regions with OpenCV, a heavy install (and often absent on a Jetson); scipy.ndimage labels
    them alike, and scipy comes with the everything extra."""
    ndimage = import_extra("scipy.ndimage", "min_mask_region_area > 0", "set min_mask_region_area to 0")
    if mode not in ("holes", "islands"):
        raise ValueError(f"mode {mode!r} is neither 'holes' nor 'islands'")
    holes = mode == "holes"
    regions, count = ndimage.label(~mask if holes else mask, structure=np.ones((3, 3), bool))
    sizes = np.bincount(regions.ravel(), minlength=count + 1)[1:]  # label 0 is the other side
    small = np.flatnonzero(sizes < min_area) + 1
    if small.size == 0:
        return mask, False
    if holes:
        return mask | np.isin(regions, small), True
    kept = np.setdiff1d(np.arange(1, count + 1), small)
    if kept.size == 0:
        kept = np.array([int(np.argmax(sizes)) + 1])
    return np.isin(regions, kept), True
