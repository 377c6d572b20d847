"""Check prompts and turn them into the official SAM ONNX decoder's inputs."""

from __future__ import annotations

import numpy as np

from .transforms import scale_coords

# Labels of the official decoder: 1 foreground, 0 background, 2/3 box corners, -1 padding.
BOX_LABELS = (2.0, 3.0)
PADDING_LABEL = -1.0


class PromptError(ValueError):
    """A prompt samedge cannot use, with the reason and the fix."""


def _finite_array(value, name: str, dtype=np.float64) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as err:
        raise PromptError(f"{name} must be numeric ({err})") from err
    if not np.all(np.isfinite(array)):
        raise PromptError(f"{name} contains NaN or infinite values: {value!r}")
    return array


def check_points(points, labels, image_hw) -> tuple[np.ndarray, np.ndarray]:
    height, width = image_hw
    points = _finite_array(points, "points")
    if points.ndim == 1 and points.shape == (2,):
        points = points[None]
    if points.ndim != 2 or points.shape[1] != 2 or len(points) == 0:
        raise PromptError(f"points must have shape [N, 2] (XY pixels) with N >= 1, got {points.shape}")
    if labels is None:
        raise PromptError("points need labels: 1 for foreground, 0 for background, one per point")
    labels = _finite_array(labels, "labels").reshape(-1)
    if len(labels) != len(points):
        raise PromptError(f"{len(points)} points but {len(labels)} labels; give one label per point")
    if not np.all(np.isin(labels, (0.0, 1.0))):
        raise PromptError(f"labels must be 1 (foreground) or 0 (background), got {labels.tolist()}")
    outside = (points[:, 0] < 0) | (points[:, 0] > width) | (points[:, 1] < 0) | (points[:, 1] > height)
    if outside.any():
        x, y = points[np.argmax(outside)]
        raise PromptError(
            f"point ({x:g}, {y:g}) lies outside the {width}x{height} image; points are XY pixel "
            f"coordinates with 0 <= x <= {width} and 0 <= y <= {height}"
        )
    return points, labels


def check_box(box, image_hw) -> np.ndarray:
    height, width = image_hw
    box = _finite_array(box, "box").reshape(-1)
    if box.shape != (4,):
        raise PromptError(f"box must be [x0, y0, x1, y1] in pixels, got shape {box.shape}")
    x0, y0, x1, y1 = box
    if x1 <= x0 or y1 <= y0:
        raise PromptError(f"box {box.tolist()} is empty or reversed; use [x0, y0, x1, y1] with x1 > x0, y1 > y0")
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        raise PromptError(f"box {box.tolist()} reaches outside the {width}x{height} image; clip it to the image")
    return box


def check_mask_input(mask_input, low_res_size: int) -> np.ndarray:
    mask = _finite_array(mask_input, "mask_input")
    if mask.shape not in ((low_res_size, low_res_size), (1, low_res_size, low_res_size)):
        raise PromptError(
            f"mask_input must be low-res logits of shape [1, {low_res_size}, {low_res_size}] "
            f"(the third result of a previous predict), got {mask.shape}"
        )
    return mask.reshape(1, 1, low_res_size, low_res_size)


def prompt_inputs(image_hw, img_size, low_res_size,
                  points=None, labels=None, box=None, mask_input=None) -> dict:
    """The official SAM ONNX decoder's inputs for one set of prompts, all but the embedding."""
    if points is None and box is None:
        raise PromptError("empty prompt: give points (with labels), a box, or both; "
                          "mask_input only refines such a prompt")
    coords, point_labels = [], []
    if points is not None:
        points, labels = check_points(points, labels, image_hw)
        coords.append(points)
        point_labels.append(labels)
    elif labels is not None:
        raise PromptError("labels were given without points")
    if box is not None:
        coords.append(check_box(box, image_hw).reshape(2, 2))
        point_labels.append(np.array(BOX_LABELS))
    else:  # the official decoder expects a padding point when there is no box
        coords.append(np.zeros((1, 2)))
        point_labels.append(np.array([PADDING_LABEL]))
    scaled = scale_coords(np.concatenate(coords), image_hw, img_size)
    if mask_input is None:
        mask, has_mask = np.zeros((1, 1, low_res_size, low_res_size), np.float32), 0.0
    else:
        mask, has_mask = check_mask_input(mask_input, low_res_size).astype(np.float32), 1.0
    return {
        "point_coords": scaled[None],
        "point_labels": np.concatenate(point_labels)[None].astype(np.float32),
        "mask_input": mask,
        "has_mask_input": np.array([has_mask], np.float32),
        "orig_im_size": np.array(image_hw, np.float32),
    }
