"""Track objects through a video with a SAM 2 bundle, numpy only, in SAM2VideoPredictor's words.

    >>> predictor = VideoPredictor("bundles/sam2.1-t")
    >>> state = predictor.init_state("clip/")                       # a folder of frames, a video file, an array
    >>> predictor.add_new_points_or_box(state, frame_idx=0, obj_id=1, points=[[210, 350]], labels=[1])
    >>> for frame_idx, obj_ids, mask_logits in predictor.propagate_in_video(state):
    ...     masks = mask_logits > 0                                 # [objects, 1, H, W]

Every call answers as sam2 1.1.0's SAM2VideoPredictor does on the same weights (runtime.video_parity
checks it, frame by frame): prompts on a frame not tracked yet make it a conditioning frame, decoded
without memory; prompts on a tracked frame correct it, decoded with memory and the frame's previous
logits; `propagate_in_video` first encodes the memory of every prompted frame, then tracks each object
frame by frame, forward or in reverse. Objects share each frame's encoding. Mask logits come back at
the video's size, > 0 inside the mask. Unlike the CUDA reference, no holes are filled (as sam2 on a CPU,
which skips its fill_holes_in_mask_scores).

Bad input is refused with the fix: prompts on frames outside the video, on an object id not
prompted yet where one is needed, prompts after the state was reset are fine (a new start).
"""

from __future__ import annotations

import numpy as np

from .session import Session
from .tracker import FrameFeatures, TrackerModel, resize_float
from .video_frames import VideoError, open_video
from .video_state import ObjectState, VideoState, load_state, save_state


class VideoPredictor:
    """SAM2VideoPredictor's API on a samedge SAM 2 bundle (any backend with run_piece)."""

    def __init__(self, bundle, backend: str = "auto", add_all_frames_to_correct_as_cond: bool = False, **options):
        """`bundle`: a path or an open runtime.Session; `backend`, `options`: as Session takes them.
        `add_all_frames_to_correct_as_cond`: a corrected frame becomes a conditioning frame (read by every
        later frame) instead of a tracked one (read by the next 6); upstream's default is False."""
        self._own_session = not isinstance(bundle, Session)
        self.session = Session(bundle, backend=backend, **options) if self._own_session else bundle
        self.model = TrackerModel(self.session)
        self.image_size = self.model.img_size
        self.add_all_frames_to_correct_as_cond = add_all_frames_to_correct_as_cond

    def close(self) -> None:
        if self._own_session:
            self.session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # ---- state ----------------------------------------------------------------------------------
    def init_state(self, video) -> VideoState:
        """`video`: a folder of frames, a video file, or a uint8 array [T, H, W, 3] (runtime.video_frames)."""
        frames = video if hasattr(video, "names") else open_video(video)
        state = VideoState(frames)
        self._features(state, 0)  # as upstream: the first frame is encoded at once (and read: errors now)
        return state

    def save_state(self, state: VideoState, path) -> None:
        """Write what tracking can still read (runtime/video_state.py) to `path`, atomically: a run stopped
        after frame k resumes with load_state and propagate_in_video(state, k + 1), answering as one run."""
        save_state(state, path)

    def load_state(self, path, video) -> VideoState:
        """The state save_state wrote, on the same `video` (checked: frame count, size, names)."""
        frames = video if hasattr(video, "names") else open_video(video)
        return load_state(path, frames, self.image_size)

    def reset_state(self, state: VideoState) -> None:
        """Forget every object, prompt and result; the video stays."""
        state.objects.clear()

    def remove_object(self, state: VideoState, obj_id, strict: bool = False):
        """Drop `obj_id` and everything about it. Returns (remaining obj_ids, []) as upstream (whose second
        item lists frames re-rendered without the object: masks are per object here, none change)."""
        if obj_id not in state.objects:
            if strict:
                raise KeyError(f"object id {obj_id!r} is not tracked (tracked: {state.obj_ids}); remove one of those")
            return state.obj_ids, []
        del state.objects[obj_id]
        return state.obj_ids, []

    # ---- prompts --------------------------------------------------------------------------------
    def add_new_points_or_box(self, state: VideoState, frame_idx: int, obj_id, points=None, labels=None,
                              clear_old_points: bool = True, normalize_coords: bool = True, box=None):
        """Clicks (XY in the video's pixels; labels 1 foreground, 0 background) and/or a box (XYXY) for
        `obj_id` on `frame_idx`. Returns (frame_idx, obj_ids, mask logits [objects, 1, H, W])."""
        self._check_frame(state, frame_idx)
        if (points is None) != (labels is None):
            raise ValueError("points and labels go together: pass both (labels 1 foreground, 0 background)")
        if points is None and box is None:
            raise ValueError("give points with labels, or a box, or both")
        coords, point_labels = self._prompt_arrays(points, labels, box, clear_old_points)
        if normalize_coords:
            height, width = state.video_hw
            coords = coords / np.array([width, height], np.float32)
        coords = (coords * np.float32(self.image_size)).astype(np.float32)
        obj = state.objects.setdefault(obj_id, ObjectState())
        if not clear_old_points and frame_idx in obj.points:
            old_coords, old_labels = obj.points[frame_idx]
            coords = np.concatenate([old_coords, coords], axis=1)
            point_labels = np.concatenate([old_labels, point_labels], axis=1)
        obj.points[frame_idx] = (coords, point_labels)
        obj.masks.pop(frame_idx, None)

        is_init, reverse, is_cond = self._frame_kind(obj, frame_idx)
        temp = obj.temp_cond if is_cond else obj.temp_non_cond
        previous = temp.get(frame_idx) or obj.cond.get(frame_idx) or obj.non_cond.get(frame_idx)
        features = self._features(state, frame_idx)
        if is_init:
            pix_feat = features.embed
        else:
            pix_feat = self.model.conditioned(features, frame_idx, obj.cond, obj.non_cond, state.frame_limit, reverse)
        # The frame's last logits for this object go in with the new clicks (upstream clamps them to +-32).
        mask_input = None if previous is None else np.clip(previous.low_res, -32.0, 32.0)
        multimask = self._multimask(point_labels.shape[1])
        temp[frame_idx] = self.model.decode(features, pix_feat, coords, point_labels, mask_input, multimask)
        return frame_idx, state.obj_ids, self._frame_masks(state, frame_idx, is_cond)

    def add_new_mask(self, state: VideoState, frame_idx: int, obj_id, mask):
        """A mask [H, W] (bool, or 0/1) for `obj_id` on `frame_idx`, taken as the answer itself."""
        self._check_frame(state, frame_idx)
        mask = np.asarray(mask)
        if mask.ndim != 2:
            raise ValueError(f"mask: one [H, W] array per call, got shape {mask.shape}; pass masks[i] for each object")
        if mask.dtype != bool and not np.isin(mask, (0, 1)).all():
            raise ValueError("mask: pass a bool (or 0/1) mask, not logits or a label image; threshold it first")
        size = self.image_size
        resized = mask.astype(np.float32)
        if resized.shape != (size, size):
            resized = (resize_float(resized, (size, size)) >= 0.5).astype(np.float32)
        obj = state.objects.setdefault(obj_id, ObjectState())
        obj.masks[frame_idx] = resized
        obj.points.pop(frame_idx, None)
        _, _, is_cond = self._frame_kind(obj, frame_idx)
        temp = obj.temp_cond if is_cond else obj.temp_non_cond
        temp[frame_idx] = self.model.mask_as_output(self._features(state, frame_idx), resized)
        return frame_idx, state.obj_ids, self._frame_masks(state, frame_idx, is_cond)

    def clear_all_prompts_in_frame(self, state: VideoState, frame_idx: int, obj_id):
        """Forget `obj_id`'s prompts on `frame_idx` (a prompted frame's result stays, as a tracked frame's)."""
        self._check_frame(state, frame_idx)
        obj = self._object(state, obj_id)
        obj.points.pop(frame_idx, None)
        obj.masks.pop(frame_idx, None)
        obj.temp_cond.pop(frame_idx, None)
        obj.temp_non_cond.pop(frame_idx, None)
        output = obj.cond.pop(frame_idx, None)
        if output is not None:
            obj.non_cond[frame_idx] = output
            obj.tracked.pop(frame_idx, None)
        is_cond = any(frame_idx in o.temp_cond for o in state.objects.values())
        return frame_idx, state.obj_ids, self._frame_masks(state, frame_idx, is_cond)

    # ---- tracking -------------------------------------------------------------------------------
    def propagate_in_video(self, state: VideoState, start_frame_idx: int | None = None,
                           max_frame_num_to_track: int | None = None, reverse: bool = False):
        """Track every object from `start_frame_idx` (default: the first prompted frame), forward or in
        reverse, over `max_frame_num_to_track` frames (default: to the end). Yields (frame_idx, obj_ids,
        mask logits [objects, 1, H, W]) frame by frame."""
        self.propagate_in_video_preflight(state)
        if start_frame_idx is None:
            start_frame_idx = min(t for obj in state.objects.values() for t in obj.cond)
        self._check_frame(state, start_frame_idx, "start_frame_idx")
        count = state.num_frames if max_frame_num_to_track is None else int(max_frame_num_to_track)
        if reverse:
            end = max(start_frame_idx - count, 0)
            order = range(start_frame_idx, end - 1, -1) if start_frame_idx > 0 else range(0)
        else:
            end = min(start_frame_idx + count, state.num_frames - 1)
            order = range(start_frame_idx, end + 1)
        for frame_idx in order:
            yield frame_idx, state.obj_ids, self.track_frame(state, frame_idx, reverse)

    def track_frame(self, state: VideoState, frame_idx: int, reverse: bool = False) -> np.ndarray:
        """One frame of propagation for every object: mask logits [objects, 1, H, W]."""
        low_res = []
        for obj in state.objects.values():
            if frame_idx in obj.cond:
                output = obj.cond[frame_idx]
            else:
                features = self._features(state, frame_idx)
                pix_feat = self.model.conditioned(features, frame_idx, obj.cond, obj.non_cond, state.frame_limit,
                                                  reverse)
                output = self.model.decode(features, pix_feat, multimask=self._multimask(0))
                output.memory = self.model.encode_memory(features, output, from_prompts=False)
                obj.non_cond[frame_idx] = output
            obj.tracked[frame_idx] = reverse
            low_res.append(output.low_res)
        state.last_tracked = frame_idx
        return self.model.upscale(np.concatenate(low_res), state.video_hw)

    def propagate_in_video_preflight(self, state: VideoState) -> None:
        """SAM2VideoPredictor.propagate_in_video_preflight: encode the memory of every prompted frame and
        move it into the object's memory."""
        if not state.objects:
            raise ValueError("no object to track: add points, a box or a mask for an object first")
        for obj_id, obj in state.objects.items():
            for temp, kept in ((obj.temp_non_cond, obj.non_cond), (obj.temp_cond, obj.cond)):
                for frame_idx, output in temp.items():
                    if output.memory is None:
                        output.memory = self.model.encode_memory(self._features(state, frame_idx), output,
                                                                 from_prompts=True)
                    kept[frame_idx] = output
                temp.clear()
            if not obj.cond:
                raise ValueError(f"object id {obj_id!r} has no prompted frame to track from: add points, a box or "
                                 "a mask for it, or remove it (remove_object)")
            for frame_idx in obj.cond:
                obj.non_cond.pop(frame_idx, None)

    # ---- helpers --------------------------------------------------------------------------------
    def _features(self, state: VideoState, frame_idx: int) -> FrameFeatures:
        """The frame's features; the last frame's are kept (the objects of a frame share them)."""
        if state.cached is None or state.cached[0] != frame_idx:
            state.cached = (frame_idx, self.model.features(state.frames[frame_idx]))
        return state.cached[1]

    def _frame_kind(self, obj: ObjectState, frame_idx: int) -> tuple[bool, bool, bool]:
        """(an initial conditioning frame, tracked in reverse, kept as conditioning)."""
        is_init = frame_idx not in obj.tracked
        reverse = False if is_init else obj.tracked[frame_idx]
        return is_init, reverse, is_init or self.add_all_frames_to_correct_as_cond

    def _multimask(self, num_points: int) -> bool:
        low, high = self.model.settings["multimask_points"]
        return low <= num_points <= high

    def _frame_masks(self, state: VideoState, frame_idx: int, is_cond: bool) -> np.ndarray:
        """Every object's latest logits on the frame at the video's size ([objects, 1, H, W]; no result: -1024)."""
        low_res = []
        for obj in state.objects.values():
            temp = obj.temp_cond if is_cond else obj.temp_non_cond
            output = temp.get(frame_idx) or obj.cond.get(frame_idx) or obj.non_cond.get(frame_idx)
            low_res.append(output.low_res if output is not None else
                           np.full((1, 1, self.model.low_res_size, self.model.low_res_size), self.model.no_object,
                                   np.float32))
        if not low_res:
            return np.zeros((0, 1, *state.video_hw), np.float32)
        return self.model.upscale(np.concatenate(low_res), state.video_hw)

    @staticmethod
    def _check_frame(state: VideoState, frame_idx, what: str = "frame_idx") -> None:
        if isinstance(frame_idx, bool) or not isinstance(frame_idx, (int, np.integer)):
            raise TypeError(f"{what} must be a frame number (int), got {frame_idx!r}")
        if not 0 <= frame_idx < state.num_frames:
            raise VideoError(f"{what} {frame_idx} is outside the video (frames 0..{state.num_frames - 1}); "
                             "prompt a frame of the video")

    @staticmethod
    def _object(state: VideoState, obj_id) -> ObjectState:
        if obj_id not in state.objects:
            raise KeyError(f"object id {obj_id!r} is not tracked (tracked: {state.obj_ids}); prompt it first with "
                           "add_new_points_or_box or add_new_mask")
        return state.objects[obj_id]

    @staticmethod
    def _prompt_arrays(points, labels, box, clear_old_points: bool) -> tuple[np.ndarray, np.ndarray]:
        """[1, P, 2] float32 coords and [1, P] labels, a box's corners first (labels 2, 3) as upstream."""
        coords = np.zeros((1, 0, 2), np.float32) if points is None else np.asarray(points, np.float32)
        point_labels = np.zeros((1, 0), np.float32) if labels is None else np.asarray(labels, np.float32)
        if coords.ndim == 2:
            coords = coords[None]
        if point_labels.ndim == 1:
            point_labels = point_labels[None]
        if coords.ndim != 3 or coords.shape[0] != 1 or coords.shape[-1] != 2:
            raise ValueError(f"points: XY pairs [P, 2], got shape {np.shape(points)}")
        if point_labels.shape != coords.shape[:2]:
            raise ValueError(f"labels: one per point ({coords.shape[1]}), got shape {np.shape(labels)}")
        if not np.isin(point_labels, (0, 1)).all():
            raise ValueError("labels: 1 (foreground) or 0 (background) per point; a box goes in box=")
        if not (np.isfinite(coords).all()):
            raise ValueError("points: finite pixel coordinates only")
        if box is not None:
            if not clear_old_points:
                raise ValueError("a box must come before any click on its frame: pass clear_old_points=True with a box")
            corners = np.asarray(box, np.float32).reshape(1, 2, 2)
            coords = np.concatenate([corners, coords], axis=1)
            point_labels = np.concatenate([np.array([[2, 3]], np.float32), point_labels], axis=1)
        return coords, point_labels

