"""Check prompts and turn them into the official SAM ONNX decoder's inputs."""

from __future__ import annotations

import reprlib
import threading
import warnings
from contextlib import contextmanager

import numpy as np

from .geometry import LongestSide

# Labels of the official decoder: 1 foreground, 0 background, 2/3 box corners, -1 padding.
BOX_LABELS = (2.0, 3.0)
PADDING_LABEL = -1.0
# Where a family's decoder wants a box's corners (a manifest's decoder.prompt_layout): "sam", after the
# points, a padding point in their place without a box (the official decoder); "sam2", before the
# points, and no padding point (SAM 2's decoder graphs add one to every prompt, as sam2 does).
LAYOUTS = ("sam", "sam2")


class PromptError(ValueError):
    """A prompt samedge cannot use, with the reason and the fix."""


class PromptWarning(UserWarning):
    """A prompt samedge answers as given, though its values suggest another convention."""


_caller = threading.local()  # .pixels: this thread's prompts are known to be pixels (`known_pixels`)


@contextmanager
def known_pixels():
    """Inside the block, this thread's prompts are pixels by construction (segment-everything's grid
    on a small crop lies within [0, 1] px): no warning that they look normalised."""
    before = getattr(_caller, "pixels", False)
    _caller.pixels = True
    try:
        yield
    finally:
        _caller.pixels = before


def _warn_if_normalised(coords: np.ndarray, image_hw, what: str) -> None:
    """Fractional coordinates all within [0, 1] on an image larger than 2x2 look like 0..1 fractions
    of the image, not pixels: answered as pixels (a point near the corner is legal), with a warning.
    Whole pixels (0 or 1) say nothing."""
    height, width = image_hw
    if getattr(_caller, "pixels", False):
        return
    if (max(height, width) > 2 and coords.size and coords.min() >= 0 and coords.max() <= 1
            and (coords != np.round(coords)).any()):
        warnings.warn(f"{what} {np.round(coords.reshape(-1, 2), 3).tolist()[:4]} all lie within [0, 1] on a "
                      f"{width}x{height} image: normalised coordinates? samedge takes XY pixels, e.g. "
                      f"points * [{width}, {height}]; answered as pixels", PromptWarning, stacklevel=4)


# What numpy makes of inputs that are not numbers, in words.
_NOT_NUMBERS = {"U": "text", "S": "bytes", "O": "Python objects", "c": "complex numbers"}


def _shown(value) -> str:
    """User data in an error message, cut short: a message must stay readable whatever was passed."""
    text = reprlib.repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _finite_array(value, name: str, expected: str, dtype=np.float64) -> np.ndarray:
    """`value` as a `dtype` array of finite numbers, else a PromptError naming the first bad one."""
    try:
        array = np.asarray(value)
    except ValueError as err:  # unevenly nested lists
        raise PromptError(f"{name} must be {expected}, got unevenly nested {_shown(value)}") from err
    # Text, objects and complex numbers would convert only by luck or by dropping a part.
    if array.dtype.kind not in "biuf":
        what = _NOT_NUMBERS.get(array.dtype.kind, f"{array.dtype} values")
        raise PromptError(f"{name} must be {expected}, got {what}: {_shown(value)}")
    with np.errstate(over="ignore"):  # a value too large for dtype becomes inf, refused below
        converted = array.astype(dtype, copy=False)
    bad = ~np.isfinite(converted)
    if bad.any():
        first = np.unravel_index(np.argmax(bad), bad.shape)
        where = f"{name}[{', '.join(map(str, first))}]" if first else name
        raise PromptError(f"{name} contains NaN or infinite values ({int(bad.sum())} of {bad.size}; the "
                          f"first is {where} = {float(array[first]):g}); pass finite {expected}")
    return converted


def check_points(points, labels, image_hw) -> tuple[np.ndarray, np.ndarray]:
    height, width = image_hw
    points = _finite_array(points, "points", "XY pixel coordinates [[x, y], ...]")
    if points.ndim == 1 and points.shape == (2,):
        points = points[None]
    if points.ndim != 2 or points.shape[1] != 2 or len(points) == 0:
        raise PromptError(f"points must have shape [N, 2] (XY pixels) with N >= 1, got {points.shape}; "
                          "e.g. [[x0, y0], [x1, y1]]")
    if labels is None:
        raise PromptError("points need labels: 1 for foreground, 0 for background, one per point")
    labels = _finite_array(labels, "labels", "numbers (1 foreground, 0 background)").reshape(-1)
    if len(labels) != len(points):
        raise PromptError(f"{len(points)} points but {len(labels)} labels; give one label per point")
    wrong = ~np.isin(labels, (0.0, 1.0))
    if wrong.any():
        first = np.argmax(wrong)
        raise PromptError(f"labels must be 1 (foreground) or 0 (background), got labels[{first}] = "
                          f"{labels[first]:g} ({int(wrong.sum())} of {len(labels)} are neither)")
    outside = (points[:, 0] < 0) | (points[:, 0] > width) | (points[:, 1] < 0) | (points[:, 1] > height)
    if outside.any():
        first = np.argmax(outside)
        x, y = points[first]
        swapped = points[:, ::-1]
        row_col = " ((row, col) order? swap them: points[:, ::-1])" if not (
            (swapped[:, 0] < 0) | (swapped[:, 0] > width) | (swapped[:, 1] < 0) | (swapped[:, 1] > height)).any() else ""
        raise PromptError(
            f"point {first} ({x:g}, {y:g}) lies outside the {width}x{height} image "
            f"({int(outside.sum())} of {len(points)} points do); points are XY pixel "
            f"coordinates with 0 <= x <= {width} and 0 <= y <= {height}{row_col}"
        )
    _warn_if_normalised(points, image_hw, "points")
    return points, labels


def check_box(box, image_hw) -> np.ndarray:
    """One XYXY box; [[x0, y0], [x1, y1]] (its two corners) is the same box."""
    height, width = image_hw
    given = _finite_array(box, "box", "pixel coordinates [x0, y0, x1, y1]")
    if given.size != 4:
        several = " (one box per call: predict once per box)" if given.size % 4 == 0 and given.size else ""
        raise PromptError(f"box must be [x0, y0, x1, y1] in pixels, got shape {given.shape}{several}")
    box = given.reshape(-1)
    x0, y0, x1, y1 = box
    if x1 <= x0 or y1 <= y0:
        raise PromptError(f"box {box.tolist()} is empty or reversed; use [x0, y0, x1, y1] with x1 > x0, "
                          "y1 > y0 (for an [x, y, w, h] box pass [x, y, x + w, y + h])")
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        raise PromptError(f"box {box.tolist()} reaches outside the {width}x{height} image; clip it to the image")
    _warn_if_normalised(box, image_hw, "box")
    return box


def check_mask_input(mask_input, low_res_size: int) -> np.ndarray:
    """Low-res logits [1, L, L] ([L, L] and the decoder's own [1, 1, L, L] too) as float32 [1, 1, L, L]."""
    given = np.asarray(mask_input).dtype
    if given.kind in "biu":  # a mask (e.g. the bool masks of predict) where logits belong
        raise PromptError(f"mask_input must be float logits, got {given} values; "
                          "pass the third result of a previous predict (low_res_logits), not its masks")
    expected = f"float32 logits of shape [1, {low_res_size}, {low_res_size}]"
    mask = _finite_array(mask_input, "mask_input", expected, dtype=np.float32)
    if mask.shape[-2:] != (low_res_size, low_res_size) or mask.size != low_res_size ** 2:
        several = (" (one mask: e.g. logits[np.argmax(scores)][None])"
                   if mask.shape[-2:] == (low_res_size, low_res_size) else "")
        raise PromptError(f"mask_input must be low-res logits of shape [1, {low_res_size}, {low_res_size}] "
                          f"(the third result of a previous predict), got {mask.shape}{several}")
    return mask.reshape(1, 1, low_res_size, low_res_size)


def _ordered(layout: str, points: list, boxes: list, padding) -> list:
    """Points and box corners (lists of arrays, one entry or none each) in `layout`'s order."""
    if layout == "sam2":
        return boxes + points
    return points + (boxes or [padding])


def prompt_inputs(image_hw, img_size, low_res_size, points=None, labels=None, box=None, mask_input=None,
                  geometry=LongestSide, layout: str = "sam") -> dict:
    """The decoder's inputs for one set of prompts, all but the image features: the official SAM
    ONNX decoder's (`layout` "sam"), or SAM 2's with a leading prompt axis of 1 ("sam2")."""
    if points is None and box is None:
        raise PromptError("empty prompt: give points (with labels), a box, or both; "
                          "mask_input only refines such a prompt")
    given, corners = [], []
    if points is not None:
        given.append(check_points(points, labels, image_hw))
    elif labels is not None:
        raise PromptError("labels were given without points; pass the points too, or no labels")
    if box is not None:
        corners.append((check_box(box, image_hw).reshape(2, 2), np.array(BOX_LABELS)))
    # The official decoder expects a padding point when there is no box.
    ordered = _ordered(layout, given, corners, (np.zeros((1, 2)), np.array([PADDING_LABEL])))
    coords, point_labels = [c for c, _ in ordered], [l for _, l in ordered]
    scaled = geometry.coords(np.concatenate(coords), image_hw, img_size)
    if mask_input is None:
        mask, has_mask = np.zeros((1, 1, low_res_size, low_res_size), np.float32), 0.0
    else:
        mask, has_mask = check_mask_input(mask_input, low_res_size), 1.0
    return {
        "point_coords": scaled[None],
        "point_labels": np.concatenate(point_labels)[None].astype(np.float32),
        "mask_input": mask,
        "has_mask_input": np.array([has_mask], np.float32),
        "orig_im_size": np.array(image_hw, np.float32),
    }


def _prompt_count(name: str, array: np.ndarray, count: int | None, shape: str) -> int:
    """`count` prompt sets so far (None: none yet); `array`'s leading axis must agree."""
    if array.shape[0] == 0:
        raise PromptError(f"{name} holds no prompt (shape {array.shape}); pass at least one, as {shape}")
    if count is not None and array.shape[0] != count:
        raise PromptError(f"{name} holds {array.shape[0]} prompt(s) but the other arguments {count}; "
                          "give every argument one entry per prompt")
    return array.shape[0]


def batch_prompt_inputs(image_hw, img_size, low_res_size, points=None, labels=None, boxes=None,
                        mask_input=None, geometry=LongestSide, layout: str = "sam") -> dict:
    """The batch decoder's inputs (export/batch_decoder.py) for N prompt sets, all but the embedding.

    points [N, P, 2] with labels [N, P], and/or boxes [N, 4]; mask_input [N, 1, L, L] or [N, L, L].
    Every set has the same layout (P points, a box or not), so each answers as it would alone:
    the official decoder's tokens for it are the same, padding point included."""
    if points is None and boxes is None:
        raise PromptError("empty prompt: give points [N, P, 2] (with labels [N, P]), boxes [N, 4], or both; "
                          "mask_input only refines such prompts")
    count, given, corners = None, [], []
    if points is not None:
        points = _finite_array(points, "points", "XY pixel coordinates [N, P, 2]")
        if points.ndim != 3 or points.shape[2] != 2 or points.shape[1] == 0:
            hint = " (one point per prompt: points[:, None])" if points.ndim == 2 and points.shape[-1] == 2 else ""
            raise PromptError(f"points must have shape [N, P, 2] (N prompts of P >= 1 XY pixel points), got "
                              f"{points.shape}{hint}")
        count = _prompt_count("points", points, count, "[N, P, 2]")
        if labels is None:
            raise PromptError("points need labels [N, P]: 1 for foreground, 0 for background, one per point")
        labels = _finite_array(labels, "labels", "numbers (1 foreground, 0 background)")
        if labels.shape != points.shape[:2]:  # reshaping [P, N] or a flat list would pair labels with other points
            transposed = " (transposed? pass labels.T)" if labels.shape == points.shape[1::-1] else ""
            raise PromptError(f"points has shape {points.shape} but labels {labels.shape}; give labels of shape "
                              f"{list(points.shape[:2])} ([N, P]), one per point{transposed}")
        for index, (one_set, one_labels) in enumerate(zip(points, labels)):
            try:
                check_points(one_set, one_labels, image_hw)
            except PromptError as err:
                raise PromptError(f"prompt {index}: {err}") from None
        given.append((points, labels))
    elif labels is not None:
        raise PromptError("labels were given without points; pass the points too, or no labels")
    if boxes is not None:
        boxes = _finite_array(boxes, "boxes", "pixel boxes [N, 4] (x0, y0, x1, y1)")
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise PromptError(f"boxes must have shape [N, 4] (x0, y0, x1, y1 pixels), got {boxes.shape}")
        count = _prompt_count("boxes", boxes, count, "[N, 4]")
        for index, box in enumerate(boxes):
            try:
                check_box(box, image_hw)
            except PromptError as err:
                raise PromptError(f"boxes[{index}]: {err}") from None
        corners.append((boxes.reshape(count, 2, 2), np.broadcast_to(np.array(BOX_LABELS), (count, 2))))
    # The padding point the official decoder adds to every prompt without a box.
    ordered = _ordered(layout, given, corners, (np.zeros((count, 1, 2)), np.full((count, 1), PADDING_LABEL)))
    coords, point_labels = [c for c, _ in ordered], [l for _, l in ordered]
    stacked = np.concatenate(coords, axis=1)  # [N, T, 2]
    scaled = geometry.coords(stacked.reshape(-1, 2), image_hw, img_size).reshape(stacked.shape)
    if mask_input is None:
        masks, has_mask = np.zeros((count, 1, low_res_size, low_res_size), np.float32), 0.0
    else:
        masks = np.asarray(mask_input)
        if masks.ndim == 3:
            masks = masks[:, None]
        shape = f"[N, 1, {low_res_size}, {low_res_size}]"
        if masks.ndim != 4:
            raise PromptError(f"mask_input must be low-res logits {shape}, one per prompt, got {masks.shape}")
        _prompt_count("mask_input", masks, count, shape)
        masks = np.concatenate([check_mask_input(mask, low_res_size) for mask in masks])
        has_mask = 1.0
    return {
        "point_coords": scaled.astype(np.float32),
        "point_labels": np.concatenate(point_labels, axis=1).astype(np.float32),
        "mask_input": masks,
        "has_mask_input": np.full(count, has_mask, np.float32),
    }
