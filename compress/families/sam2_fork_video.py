"""The video reference of a sam2 fork whose SAM2VideoPredictor is sam2's legacy one (EfficientTAM's).

efficient-track-anything 1.0 forked sam2 before its December 2024 predictor: `add_new_points` without a box,
objects added only before tracking starts, outputs consolidated across objects, and no object score kept
per frame. runtime/video_parity.py drives predictors with sam2 1.1.0's calls and reads each frame's
object score; `LegacyVideoReference` gives the fork's predictor those calls (a box as two points labelled
2 and 3 before the clicks, as sam2 1.1.0's add_new_points_or_box does and as the model was trained) and
`scored_predictor` a subclass that keeps the object score logits its own heads computed, beside the other
per-object outputs. The tracking itself is the fork's, untouched: on scripts both predictors accept
(objects prompted before propagation) the numpy tracker follows it.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from .sam2 import _memory_in_float32
from .sam2_forks import Fork, call_in


def scored_predictor(base):
    """A subclass of the fork's SAM2VideoPredictor `base` that stores object_score_logits per frame."""

    class ScoredVideoPredictor(base):
        def _forward_sam_heads(self, *args, **kwargs):
            out = super()._forward_sam_heads(*args, **kwargs)
            self._object_scores = out[-1]  # [B, 1]
            return out

        def _use_mask_as_output(self, *args, **kwargs):
            out = super()._use_mask_as_output(*args, **kwargs)
            self._object_scores = out[-1]
            return out

        def _run_single_frame_inference(self, *args, **kwargs):
            compact, masks = super()._run_single_frame_inference(*args, **kwargs)
            compact["object_score_logits"] = self._object_scores
            return compact, masks

        def _consolidate_temp_output_across_obj(self, inference_state, frame_idx, is_cond, run_mem_encoder,
                                                consolidate_at_video_res=False):
            out = super()._consolidate_temp_output_across_obj(inference_state, frame_idx, is_cond, run_mem_encoder,
                                                              consolidate_at_video_res)
            key = "cond_frame_outputs" if is_cond else "non_cond_frame_outputs"
            scores = []
            for obj_idx in range(self._get_obj_num(inference_state)):
                found = inference_state["temp_output_dict_per_obj"][obj_idx][key].get(frame_idx)
                for kind in ("cond_frame_outputs", "non_cond_frame_outputs"):
                    found = found or inference_state["output_dict_per_obj"][obj_idx][kind].get(frame_idx)
                missing = torch.full((1, 1), -1024.0)  # an object with no output here (never in our scripts)
                scores.append(missing if found is None else found.get("object_score_logits", missing))
            out["object_score_logits"] = torch.cat(scores)
            return out

        def _add_output_per_object(self, inference_state, frame_idx, current_out, storage_key):
            super()._add_output_per_object(inference_state, frame_idx, current_out, storage_key)
            scores = current_out.get("object_score_logits")
            if scores is not None:
                for obj_idx, outputs in inference_state["output_dict_per_obj"].items():
                    outputs[storage_key][frame_idx]["object_score_logits"] = scores[obj_idx: obj_idx + 1]

    return ScoredVideoPredictor


class LegacyVideoReference:
    """sam2 1.1.0's SAM2VideoPredictor calls on a legacy predictor."""

    def __init__(self, predictor):
        self.predictor = predictor

    def init_state(self, video_path):
        return self.predictor.init_state(video_path)

    def add_new_points_or_box(self, inference_state, frame_idx, obj_id, points=None, labels=None, box=None):
        points = np.zeros((0, 2), np.float32) if points is None else np.asarray(points, np.float32).reshape(-1, 2)
        labels = np.zeros(0, np.int32) if labels is None else np.asarray(labels, np.int32).reshape(-1)
        if box is not None:
            points = np.concatenate([np.asarray(box, np.float32).reshape(2, 2), points])
            labels = np.concatenate([np.array([2, 3], np.int32), labels])
        return self.predictor.add_new_points(inference_state, frame_idx, obj_id, points=points, labels=labels)

    def add_new_mask(self, inference_state, frame_idx, obj_id, mask):
        return self.predictor.add_new_mask(inference_state, frame_idx, obj_id, mask)

    def propagate_in_video(self, inference_state, start_frame_idx=None, max_frame_num_to_track=None, reverse=False):
        return self.predictor.propagate_in_video(inference_state, start_frame_idx, max_frame_num_to_track, reverse)


def legacy_video_reference(fork: Fork, model):
    """The fork's SAM2VideoPredictor on `model`'s own modules (a copy), as its build_sam2_video_predictor
    sets it up: binarized clicked masks for memory, no hole filling (the fork's builder leaves
    fill_hole_area at 0), the other settings at their defaults."""
    with fork.active():
        from sam2.sam2_video_predictor import SAM2VideoPredictor  # the fork's (inside the block)

        predictor = copy.deepcopy(model)
        predictor.__class__ = scored_predictor(SAM2VideoPredictor)
    predictor.fill_hole_area = 0
    predictor.non_overlap_masks = False
    predictor.clear_non_cond_mem_around_input = False
    predictor.clear_non_cond_mem_for_multi_obj = False
    predictor.binarize_mask_from_pts_for_mem_enc = True
    _memory_in_float32(predictor.memory_attention)
    return call_in(fork, LegacyVideoReference(predictor.eval()))
