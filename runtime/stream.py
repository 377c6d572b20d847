"""Track objects in a live feed (a camera, an RTSP stream, frames from your own loop) with a SAM 2 bundle.

    >>> tracker = StreamTracker("bundles/sam2.1-t")
    >>> for result in tracker.track("rtsp://camera/stream", lag_budget=0.2):
    ...     if result.index == 0:
    ...         tracker.add_new_points_or_box(obj_id=1, points=[[320, 240]], labels=[1])  # on this frame
    ...     masks = result.mask_logits > 0                       # [objects, 1, H, W]; None on a dropped frame

The same tracking as runtime.video's VideoPredictor, frame after frame: each new frame is tracked from
the memory of the frames before it, prompts apply to the frame last returned (a new object starts there,
a click on a tracked object corrects it), and their memory is encoded before the next frame.
A frame tracked here answers as SAM2VideoPredictor answers the same frame of the same video tracked
forward (tests/test_stream.py), with one setting changed by default: a correction becomes a conditioning
frame (read by every later frame, as add_all_frames_to_correct_as_cond=True), not a tracked frame that
memory forgets after 6 frames.

Memory is bounded: after each frame, tracked outputs that no later frame can read are dropped (memory
reads the last 6 tracked frames, pointers the last 15), and the stream keeps only the current frame's
pixels and features. What stays grows only with prompts (their conditioning frames), never with time.

`lag_budget` (seconds): a live source's frames carry timestamps; a frame that arrives more than this
late against the feed's own clock is not tracked: `on_lag="drop"` yields it with no masks, "reuse"
with the last masks (flagged `dropped`). It leaves no memory, as a frame missing from a video.
"""

from __future__ import annotations

import time
from typing import Iterator, NamedTuple

import numpy as np

from .video import VideoPredictor
from .video_frames import StreamFrame, VideoError, open_stream
from .video_state import VideoState

LAG_ACTIONS = ("drop", "reuse")


class StreamResult(NamedTuple):
    index: int  # the frame's number in the feed (dropped frames count)
    time: float | None  # its timestamp in the feed, seconds (None: the source gives none)
    obj_ids: list
    mask_logits: np.ndarray | None  # [objects, 1, H, W] float32, > 0 inside; None: dropped, nothing to reuse
    dropped: bool = False  # not tracked: over the lag budget


class _CurrentFrame:
    """The frames a stream holds: the current one only (VideoFrames' interface for VideoPredictor)."""

    def __init__(self):
        self.index, self.rgb, self.count = -1, None, 0

    def push(self, index: int, rgb: np.ndarray) -> None:
        if self.rgb is not None and rgb.shape != self.rgb.shape:
            raise VideoError(f"frame {index} of the stream is {rgb.shape[1]}x{rgb.shape[0]}, the frames before "
                             f"{self.width}x{self.height}: a stream keeps one size; restart the tracker for a new size")
        self.index, self.rgb, self.count = index, rgb, index + 1

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> np.ndarray:
        if index != self.index:
            raise VideoError(f"frame {index} has passed: a stream holds only its current frame ({self.index}); "
                             "prompt the current frame")
        return self.rgb

    @property
    def height(self) -> int:
        return self.rgb.shape[0]

    @property
    def width(self) -> int:
        return self.rgb.shape[1]

    @property
    def names(self) -> list[str]:
        return [f"{self.index:05d}"]


class StreamTracker:
    """Frames in one by one (`step`, or `track` over a source), prompts at any time, bounded memory."""

    def __init__(self, bundle, backend: str = "auto", add_all_frames_to_correct_as_cond: bool = True, **options):
        self.predictor = VideoPredictor(bundle, backend, add_all_frames_to_correct_as_cond, **options)
        self.frames = _CurrentFrame()
        self.state = VideoState(self.frames, live=True)
        settings = self.predictor.model.settings
        # The furthest back a next frame reads a tracked output: memory (6 frames) or pointers (15).
        self.window = max((settings["num_maskmem"] - 1) * settings["memory_stride"], settings["max_obj_ptrs"] - 1)
        self.last_masks = None

    def close(self) -> None:
        self.predictor.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @property
    def obj_ids(self) -> list:
        return self.state.obj_ids

    # ---- frames ---------------------------------------------------------------------------------
    def step(self, rgb: np.ndarray, index: int | None = None) -> np.ndarray:
        """Track every object on the next frame (uint8 RGB [H, W, 3]); `index`: its number in the feed
        (default: the one after the last). Returns mask logits [objects, 1, H, W]."""
        index = self.frames.index + 1 if index is None else int(index)
        if index <= self.frames.index:
            raise VideoError(f"frame {index} comes after frame {self.frames.index}: a stream only moves forward")
        rgb = np.asarray(rgb)
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[-1] != 3:
            raise VideoError(f"a frame is uint8 RGB [H, W, 3], got {rgb.dtype} {rgb.shape}")
        if self.state.objects:
            self.predictor.propagate_in_video_preflight(self.state)  # the memory of the prompts made on the last frame
        self.frames.push(index, rgb)
        masks = self.predictor.track_frame(self.state, index) if self.state.objects else \
            np.zeros((0, 1, rgb.shape[0], rgb.shape[1]), np.float32)
        self._evict(index)
        self.last_masks = masks
        return masks

    def track(self, source, lag_budget: float | None = None, on_lag: str = "drop",
              clock=time.monotonic) -> Iterator[StreamResult]:
        """Track over `source` (runtime.video_frames.open_stream's: a camera, a URL, a file played as live,
        an iterable of frames or StreamFrames), yielding one StreamResult per frame."""
        if on_lag not in LAG_ACTIONS:
            raise ValueError(f"on_lag={on_lag!r}: choose one of {LAG_ACTIONS}")
        if lag_budget is not None and lag_budget < 0:
            raise ValueError("lag_budget: seconds a frame may be late, >= 0 (None: track every frame)")
        start = None  # (the clock, the feed's time) at the first timed frame
        frames = source if _yields_stream_frames(source) else open_stream(source)
        for frame in frames:
            if lag_budget is not None and frame.time is not None:
                start = start or (clock(), frame.time)
                lateness = clock() - (start[0] + frame.time - start[1])
                if lateness > lag_budget:
                    reused = self.last_masks if on_lag == "reuse" else None
                    yield StreamResult(frame.index, frame.time, self.obj_ids, reused, dropped=True)
                    continue
            yield StreamResult(frame.index, frame.time, self.obj_ids, self.step(frame.rgb, frame.index))

    # ---- prompts (on the current frame) ---------------------------------------------------------
    def add_new_points_or_box(self, obj_id, points=None, labels=None, box=None, clear_old_points: bool = True):
        """Clicks and/or a box for `obj_id` on the current frame; returns its mask logits [objects, 1, H, W]."""
        self._require_frame()
        _, _, masks = self.predictor.add_new_points_or_box(self.state, self.frames.index, obj_id, points, labels,
                                                            clear_old_points=clear_old_points, box=box)
        self.last_masks = masks
        return masks

    def add_new_mask(self, obj_id, mask):
        self._require_frame()
        _, _, masks = self.predictor.add_new_mask(self.state, self.frames.index, obj_id, mask)
        self.last_masks = masks
        return masks

    def remove_object(self, obj_id, strict: bool = False):
        return self.predictor.remove_object(self.state, obj_id, strict)[0]

    def reset_state(self) -> None:
        self.predictor.reset_state(self.state)

    # ---- memory ---------------------------------------------------------------------------------
    def held_outputs(self) -> int:
        """Frame outputs held for all objects (conditioning and tracked): bounded, whatever the stream's length."""
        return sum(len(obj.cond) + len(obj.non_cond) for obj in self.state.objects.values())

    def _evict(self, index: int) -> None:
        oldest = index + 1 - self.window  # the next frame reads back to here
        for obj in self.state.objects.values():
            for t in [t for t in obj.non_cond if t < oldest]:
                del obj.non_cond[t]
            for t in [t for t in obj.tracked if t < oldest and t not in obj.cond]:
                del obj.tracked[t]
            for prompts in (obj.points, obj.masks):  # a prompt's frame is past: its output is what stays
                for t in [t for t in prompts if t < oldest]:
                    del prompts[t]

    def _require_frame(self) -> None:
        if self.frames.rgb is None:
            raise VideoError("no frame yet: prompts apply to the current frame; call step (or iterate track) first")


def _yields_stream_frames(source) -> bool:
    """An iterable already of StreamFrames (not a path, a URL or frames as arrays)."""
    if isinstance(source, (list, tuple)) and source:
        return isinstance(source[0], StreamFrame)
    return False
