"""Does runtime.everything segment an image as segment_anything's SamAutomaticMaskGenerator does?

Two generators cannot be compared record by record: scores that differ in their last bits
let a mask whose predicted IoU or stability score lies at a threshold pass on one side and
fail on the other. So the masks are matched one to one by IoU (the Hungarian assignment;
pairs under MATCH_IOU are not the same mask), and what is left unmatched must be explained
by the thresholds:

- the matched masks' median IoU is >= min_median_iou;
- their predicted_iou and stability_score differ by <= score_margin (the backend's precision);
- every reference mask left unmatched lies within score_margin of a threshold (it may fall under
  it here), and so does every unmatched mask of ours (the reference may have had it just under).
  The count difference is then within the masks near the thresholds.

A mask NMS kept on one side and suppressed on the other (box IoUs at box_nms_thresh) is not
excused: with fp32 ONNX Runtime no such case has been seen (tests/test_everything.py).

The comparison needs numpy and scipy only; the reference's records come from
runtime.reference.reference_records (torch).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .amg import import_extra, segmentation_to_mask

MATCH_IOU = 0.5  # under it two masks are different masks, whatever the assignment pairs them with
DEFAULT_MIN_MEDIAN_IOU = 0.99
# fp32 ONNX Runtime on the demo model: scores within 6e-7 of the reference's, stability scores equal.
DEFAULT_SCORE_MARGIN = 0.005


@dataclass
class Agreement:
    reference_count: int
    count: int
    pairs: list[tuple[int, int]]  # (our index, reference index) of each matched pair
    matched_ious: list[float]  # one per pair
    max_predicted_iou_diff: float  # over the matched pairs
    max_stability_diff: float
    unmatched_reference: int
    unmatched: int  # masks of ours without a partner
    near_thresholds_reference: int  # reference masks within score_margin of a threshold
    near_thresholds: int  # masks of ours within score_margin of a threshold
    unexplained: int  # unmatched masks on either side that lie nowhere near a threshold
    passed: bool

    @property
    def median_iou(self) -> float:
        return float(np.median(self.matched_ious)) if self.matched_ious else 1.0

    @property
    def min_iou(self) -> float:
        return min(self.matched_ious, default=1.0)

    def summary(self) -> str:
        return (f"{'PASS' if self.passed else 'FAIL'}: {self.count} masks vs {self.reference_count} "
                f"({len(self.matched_ious)} matched, median IoU {self.median_iou:.5f}, min {self.min_iou:.5f}; "
                f"max predicted_iou diff {self.max_predicted_iou_diff:.2e}, stability diff "
                f"{self.max_stability_diff:.2e}; unmatched {self.unmatched} ours, {self.unmatched_reference} "
                f"reference, {self.unexplained} not near a threshold)")


def match_masks(ours: list[np.ndarray], reference: list[np.ndarray]) -> tuple[list[tuple[int, int]], list[float]]:
    """Pairs (our index, reference index) of the one-to-one assignment with the largest total IoU,
    those under MATCH_IOU left out, and their IoUs."""
    optimize = import_extra("scipy.optimize", "matching masks", "compare the masks otherwise")
    if not ours or not reference:
        return [], []
    stacked = np.stack([mask.ravel() for mask in reference])  # bool [m, H * W]
    areas = stacked.sum(axis=1)
    iou = np.zeros((len(ours), len(reference)))
    for row, mask in enumerate(ours):
        pixels = np.flatnonzero(mask)  # one mask's pixels at a time: no float [n, H * W] matrices
        inter = np.count_nonzero(stacked[:, pixels], axis=1)
        union = areas + pixels.size - inter
        iou[row] = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    rows, cols = optimize.linear_sum_assignment(-iou)
    pairs = [(int(r), int(c)) for r, c in zip(rows, cols) if iou[r, c] >= MATCH_IOU]
    return pairs, [float(iou[r, c]) for r, c in pairs]


def _near_thresholds(record: dict, pred_iou_thresh: float, stability_score_thresh: float, margin: float) -> bool:
    """Within margin of a threshold, on either side: a score further under it shows a broken filter."""
    return (abs(record["predicted_iou"] - pred_iou_thresh) < margin
            or abs(record["stability_score"] - stability_score_thresh) < margin)


def compare_records(ours: list[dict], reference: list[dict], pred_iou_thresh: float = 0.88,
                    stability_score_thresh: float = 0.95, min_median_iou: float = DEFAULT_MIN_MEDIAN_IOU,
                    score_margin: float = DEFAULT_SCORE_MARGIN) -> Agreement:
    """Our records against the reference's for one image and the same settings (see the module's
    docstring for the criterion); segmentations in any output mode."""
    pairs, ious = match_masks([segmentation_to_mask(r["segmentation"]) for r in ours],
                              [segmentation_to_mask(r["segmentation"]) for r in reference])

    def diff(key: str) -> float:
        return max((abs(ours[i][key] - reference[j][key]) for i, j in pairs), default=0.0)

    def near(record: dict) -> bool:
        return _near_thresholds(record, pred_iou_thresh, stability_score_thresh, score_margin)

    lone_ours = [ours[i] for i in sorted(set(range(len(ours))) - {i for i, _ in pairs})]
    lone_reference = [reference[j] for j in sorted(set(range(len(reference))) - {j for _, j in pairs})]
    unexplained = sum(not near(record) for record in lone_ours + lone_reference)
    agreement = Agreement(
        reference_count=len(reference), count=len(ours), pairs=pairs, matched_ious=ious,
        max_predicted_iou_diff=diff("predicted_iou"), max_stability_diff=diff("stability_score"),
        unmatched_reference=len(lone_reference), unmatched=len(lone_ours),
        near_thresholds_reference=sum(map(near, reference)), near_thresholds=sum(map(near, ours)),
        unexplained=unexplained, passed=False)
    agreement.passed = (agreement.median_iou >= min_median_iou and unexplained == 0
                        and max(agreement.max_predicted_iou_diff, agreement.max_stability_diff) <= score_margin)
    return agreement
