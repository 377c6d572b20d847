"""runtime.amg (numpy) against segment_anything.utils.amg and torchvision (torch), on random inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pycocotools import mask as coco_mask
from scipy import ndimage
from segment_anything.utils import amg as sam_amg
from torchvision.ops import batched_nms

from runtime import amg



def _random_masks(rng, count=12, height=37, width=53) -> np.ndarray:
    """Blobs of several sizes, some empty, some touching the borders, some full."""
    noise = ndimage.gaussian_filter(rng.normal(size=(count, height, width)), sigma=(0, 3, 3))
    masks = noise > rng.uniform(-0.1, 0.1, size=(count, 1, 1))
    masks[0] = False
    masks[1] = True
    masks[2, :, :] = False
    masks[2, 5, 7] = True  # a single pixel
    return masks


def _random_boxes(rng, count: int, size: int = 60, integers: bool = True) -> np.ndarray:
    corner = rng.integers(0, size, (count, 2)) if integers else rng.uniform(0, size, (count, 2))
    extent = rng.integers(1, size // 2, (count, 2)) if integers else rng.uniform(0.5, size / 2, (count, 2))
    return np.concatenate([corner, corner + extent], axis=1).astype(np.float32)


@pytest.mark.parametrize("side", [1, 2, 7, 32])
def test_point_grid_equals_segment_anything(side):
    np.testing.assert_array_equal(amg.point_grid(side), sam_amg.build_point_grid(side))


def test_layer_point_grids_equal_segment_anything():
    ours, theirs = amg.layer_point_grids(32, 3, 2), sam_amg.build_all_layer_point_grids(32, 3, 2)
    assert [g.shape for g in ours] == [(1024, 2), (256, 2), (64, 2), (16, 2)]
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("hw", [(256, 256), (480, 640), (1000, 333), (77, 1500)])
@pytest.mark.parametrize("layers", [0, 1, 2, 3])
@pytest.mark.parametrize("overlap", [512 / 1500, 0.0, 0.5])
def test_crop_boxes_equal_segment_anything(hw, layers, overlap):
    boxes, box_layers = amg.crop_boxes(hw, layers, overlap)
    assert (boxes, box_layers) == sam_amg.generate_crop_boxes(hw, layers, overlap)
    if layers:
        last = [min(x1 - x0, y1 - y0) for (x0, y0, x1, y1), layer in zip(boxes, box_layers) if layer == layers]
        assert amg.smallest_crop_side(hw, layers, overlap) == min(last)


def test_stability_score_equals_segment_anything():
    rng = np.random.default_rng(0)
    logits = (rng.normal(0, 4, size=(2, 5, 40, 60))).astype(np.float32)
    logits[0, 0] = -10  # empty at every threshold: NaN on both sides
    for offset in (1.0, 0.5, 0.0):
        theirs = sam_amg.calculate_stability_score(torch.from_numpy(logits), 0.0, offset).numpy()
        ours = amg.stability_score(logits, 0.0, offset)
        assert ours.dtype == theirs.dtype == np.float32
        np.testing.assert_array_equal(ours, theirs)


def test_masks_to_boxes_equal_segment_anything():
    masks = _random_masks(np.random.default_rng(1))
    theirs = sam_amg.batched_mask_to_box(torch.from_numpy(masks)).numpy()
    np.testing.assert_array_equal(amg.masks_to_boxes(masks), theirs)
    np.testing.assert_array_equal(amg.masks_to_boxes(masks.reshape(3, 4, *masks.shape[1:])),
                                  theirs.reshape(3, 4, 4))
    assert amg.masks_to_boxes(masks[:0]).shape == (0, 4)
    assert amg.masks_to_boxes(masks[1]).tolist() == [0, 0, masks.shape[2] - 1, masks.shape[1] - 1]


@pytest.mark.parametrize("crop_box", [[0, 0, 100, 80], [30, 20, 100, 80], [0, 40, 70, 80]])
def test_box_near_crop_edge_equals_segment_anything(crop_box):
    rng = np.random.default_rng(2)
    boxes = _random_boxes(rng, 200, size=70).astype(np.int64)
    image_box = [0, 0, 100, 80]
    theirs = sam_amg.is_box_near_crop_edge(torch.from_numpy(boxes), crop_box, image_box).numpy()
    np.testing.assert_array_equal(amg.box_near_crop_edge(boxes, crop_box, image_box), theirs)
    if crop_box != image_box:  # the whole image has no crop edge to be near
        assert 0 < theirs.sum() < len(theirs)


def test_uncrop_boxes_points_and_masks_equal_segment_anything():
    rng = np.random.default_rng(3)
    crop_box = [11, 7, 64, 44]
    boxes, points = rng.integers(0, 30, (5, 4)), rng.uniform(0, 30, (5, 2))
    np.testing.assert_array_equal(amg.uncrop_boxes(boxes, crop_box),
                                  sam_amg.uncrop_boxes_xyxy(torch.from_numpy(boxes), crop_box).numpy())
    np.testing.assert_array_equal(amg.uncrop_points(points, crop_box),
                                  sam_amg.uncrop_points(torch.from_numpy(points), crop_box).numpy())
    masks = _random_masks(rng, 4, 37, 53)
    theirs = sam_amg.uncrop_masks(torch.from_numpy(masks), crop_box, 50, 70).numpy()
    for mask, expected in zip(masks, theirs):
        np.testing.assert_array_equal(amg.uncrop_mask(mask, crop_box, (50, 70)), expected)
    whole = masks[0]
    assert amg.uncrop_mask(whole, [0, 0, 53, 37], (37, 53)) is whole  # the crop is the image: no copy


def test_rle_equals_segment_anything_and_round_trips():
    masks = _random_masks(np.random.default_rng(4))
    theirs = sam_amg.mask_to_rle_pytorch(torch.from_numpy(masks))
    for mask, expected in zip(masks, theirs):
        rle = amg.mask_to_rle(mask)
        assert rle == expected
        assert all(type(c) is int for c in rle["counts"])  # JSON-ready
        np.testing.assert_array_equal(amg.rle_to_mask(rle), mask)
        np.testing.assert_array_equal(amg.rle_to_mask(rle), sam_amg.rle_to_mask(rle))
        assert amg.rle_area(rle) == sam_amg.area_from_rle(rle) == mask.sum()


def test_rle_of_another_size_is_refused_with_the_fix():
    rle = amg.mask_to_rle(np.ones((4, 5), bool))
    with pytest.raises(amg.MaskGeneratorError, match="damaged or belongs to another image"):
        amg.rle_to_mask({**rle, "size": [5, 5]})


def test_coco_rle_equals_segment_anything_and_pycocotools_decodes_it():
    masks = _random_masks(np.random.default_rng(5))
    for mask in masks:
        rle = amg.mask_to_rle(mask)
        ours = amg.coco_rle(rle)
        assert ours == sam_amg.coco_encode_rle(rle)
        assert isinstance(ours["counts"], str)
        np.testing.assert_array_equal(coco_mask.decode({**ours, "counts": ours["counts"].encode()}), mask)
        assert coco_mask.area({**ours, "counts": ours["counts"].encode()}) == amg.rle_area(rle)


def _their_nms(boxes, scores, threshold) -> np.ndarray:
    return batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.zeros(len(boxes)),
                       iou_threshold=threshold).numpy()


@pytest.mark.parametrize("count", [0, 1, 40, 900])  # up to 1000 boxes torchvision runs its kernel's order
@pytest.mark.parametrize("threshold", [0.7, 0.3, 0.0])
def test_box_nms_equals_torchvision_in_order(count, threshold):
    rng = np.random.default_rng(count)
    boxes = _random_boxes(rng, count, integers=count % 2 == 0)
    scores = rng.uniform(size=count).astype(np.float32)
    np.testing.assert_array_equal(amg.box_nms(boxes, scores, threshold), _their_nms(boxes, scores, threshold))


def test_box_nms_breaks_ties_as_torchvision():
    """Equal scores (the crop NMS: one score per crop; small-region removal: 0 or 1), duplicate boxes
    and empty ones. Above 1000 boxes torchvision re-sorts unstably: the same set, scores still ordered."""
    rng = np.random.default_rng(6)
    for count in (30, 600, 2500):
        boxes = _random_boxes(rng, count, size=40)
        boxes[: count // 10] = boxes[count // 10: 2 * (count // 10)]  # exact duplicates
        boxes[-3:, 2:] = boxes[-3:, :2]  # zero area
        scores = rng.integers(0, 3, count).astype(np.float32)
        ours, theirs = amg.box_nms(boxes, scores, 0.7), _their_nms(boxes, scores, 0.7)
        if count <= 1000:
            np.testing.assert_array_equal(ours, theirs)
        else:
            assert sorted(ours) == sorted(theirs)
            assert np.all(np.diff(scores[ours]) <= 0)


def test_box_nms_at_exactly_the_threshold_keeps_both():
    """IoU 0.5 exactly: kept, as "> threshold" suppresses in torchvision."""
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 20]], np.float32)
    scores = np.array([0.9, 0.8], np.float32)
    assert amg.box_nms(boxes, scores, 0.5).tolist() == _their_nms(boxes, scores, 0.5).tolist() == [0, 1]


@pytest.mark.parametrize("mode", ["holes", "islands"])
@pytest.mark.parametrize("area", [1, 5, 40, 400, 5000])
def test_remove_small_regions_equals_segment_anything(mode, area):
    for mask in _random_masks(np.random.default_rng(7), count=8, height=60, width=70):
        theirs, their_change = sam_amg.remove_small_regions(mask, area, mode)
        ours, our_change = amg.remove_small_regions(mask, area, mode)
        assert our_change == their_change
        np.testing.assert_array_equal(ours, theirs)
