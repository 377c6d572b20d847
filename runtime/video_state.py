"""A tracking state (SAM2VideoPredictor's inference_state: VideoState, ObjectState), and the state on disk,
so a long run can stop and resume exactly (runtime.track --resume).

What a saved state keeps is what tracking can still read: every object's prompts and conditioning frames,
and its tracked frames within `window` frames of the frame tracked last (the 6 memory frames and 15
pointers a next frame reads, forward or in reverse). Tracking on from the saved frame then answers as the
uninterrupted run; a correction click far back in the video would read less memory than upstream keeps
(SAM2VideoPredictor keeps every frame).

One .npz file (numpy's own format, read with allow_pickle=False: no code runs from the file),
written under a temporary name and renamed. Object ids are stored as JSON (int or str).
"""

from __future__ import annotations

import io
import json
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .atomic import atomic_write
from .tracker import FrameFeatures, FrameOutput

FORMAT = "samedge-video-state/1"
OUTPUT_FIELDS = ("low_res", "obj_ptr", "object_score", "memory")


@dataclass
class ObjectState:
    """One object's prompts and outputs (SAM2VideoPredictor's per-object slices of its state)."""

    points: dict = field(default_factory=dict)  # frame -> (coords [1, P, 2] in the S x S frame, labels [1, P])
    masks: dict = field(default_factory=dict)  # frame -> 0/1 mask [S, S]
    cond: dict = field(default_factory=dict)  # frame -> FrameOutput of a prompted frame (memory)
    non_cond: dict = field(default_factory=dict)  # frame -> FrameOutput of a tracked (or corrected) frame
    temp_cond: dict = field(default_factory=dict)  # prompted since the last propagation, memory not encoded yet
    temp_non_cond: dict = field(default_factory=dict)
    tracked: dict = field(default_factory=dict)  # frame -> whether it was tracked in reverse


@dataclass
class VideoState:
    """What init_state returns and every other call takes (SAM2VideoPredictor's inference_state)."""

    frames: object  # runtime.video_frames.VideoFrames
    objects: "OrderedDict[object, ObjectState]" = field(default_factory=OrderedDict)
    cached: tuple[int, FrameFeatures] | None = None  # the last frame encoded
    last_tracked: int | None = None  # the frame propagation answered last (a saved state keeps memory around it)
    live: bool = False  # a stream (runtime/stream.py): frames arrive one by one, their count is unknown

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    @property
    def frame_limit(self) -> int | None:
        """The frame count tracking may assume (pointers from up to min(it, 16) frames); None: a stream's."""
        return None if self.live else len(self.frames)

    @property
    def video_hw(self) -> tuple[int, int]:
        return self.frames.height, self.frames.width

    @property
    def obj_ids(self) -> list:
        return list(self.objects)


def _put_output(arrays: dict, prefix: str, output: FrameOutput) -> None:
    for name in OUTPUT_FIELDS:
        value = getattr(output, name)
        if value is not None:
            arrays[f"{prefix}/{name}"] = value
    arrays[f"{prefix}/score"] = np.array(output.score, np.float32)


def _get_output(arrays, prefix: str) -> FrameOutput:
    memory = f"{prefix}/memory"
    return FrameOutput(arrays[f"{prefix}/low_res"], arrays[f"{prefix}/obj_ptr"], arrays[f"{prefix}/object_score"],
                       arrays[memory] if memory in arrays else None, float(arrays[f"{prefix}/score"]))


def save_state(state, path, window: int = 16) -> Path:
    """Write `state` (runtime.video.VideoState) to `path`; see the module's docstring for what is kept."""
    arrays, objects = {}, []
    for index, (obj_id, obj) in enumerate(state.objects.items()):
        if obj.temp_cond or obj.temp_non_cond:
            raise ValueError(f"object {obj_id!r} has prompts not tracked yet: save the state after propagate_in_video "
                             "(or after the frame's tracking step)")
        last = state.last_tracked  # where tracking goes on from, forward or in reverse
        kept = {t: out for t, out in obj.non_cond.items() if last is not None and abs(t - last) <= window}
        entry = {"id": obj_id, "cond": sorted(obj.cond), "non_cond": sorted(kept),
                 "tracked": {str(t): bool(reverse) for t, reverse in obj.tracked.items()},
                 "points": sorted(obj.points), "masks": sorted(obj.masks)}
        objects.append(entry)
        for kind, outputs in (("cond", obj.cond), ("non_cond", kept)):
            for t, output in outputs.items():
                _put_output(arrays, f"{index}/{kind}/{t}", output)
        for t, (coords, labels) in obj.points.items():
            arrays[f"{index}/points/{t}/coords"], arrays[f"{index}/points/{t}/labels"] = coords, labels
        for t, mask in obj.masks.items():
            arrays[f"{index}/masks/{t}"] = np.packbits(mask > 0.5)
    meta = {"format": FORMAT, "num_frames": state.num_frames, "video_hw": list(state.video_hw),
            "last_tracked": state.last_tracked,
            "frame_names": list(state.frames.names), "objects": objects}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)

    def write(tmp):
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        Path(tmp).write_bytes(buffer.getvalue())

    atomic_write(path, write)
    return Path(path)


def load_state(path, frames, image_size: int):
    """The state saved at `path`, on `frames` (runtime.video_frames.VideoFrames: the same video)."""
    path = Path(path)
    try:
        arrays = dict(np.load(path, allow_pickle=False))
        meta = json.loads(arrays.pop("meta").tobytes().decode())
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"{path} is not a samedge tracking state ({err}); start the run again without it") from err
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} holds {meta.get('format')!r}, not {FORMAT}: start the run again without it")
    if (meta["num_frames"], tuple(meta["video_hw"])) != (len(frames), (frames.height, frames.width)) \
            or meta["frame_names"] != list(frames.names):
        raise ValueError(f"{path} was saved for another video ({meta['num_frames']} frames of "
                         f"{meta['video_hw'][1]}x{meta['video_hw'][0]}); resume on the same video, or start again")
    state = VideoState(frames, last_tracked=meta.get("last_tracked"))
    for index, entry in enumerate(meta["objects"]):
        obj = ObjectState()
        obj.cond = {t: _get_output(arrays, f"{index}/cond/{t}") for t in entry["cond"]}
        obj.non_cond = {t: _get_output(arrays, f"{index}/non_cond/{t}") for t in entry["non_cond"]}
        obj.tracked = {int(t): reverse for t, reverse in entry["tracked"].items()}
        obj.points = {t: (arrays[f"{index}/points/{t}/coords"], arrays[f"{index}/points/{t}/labels"])
                      for t in entry["points"]}
        obj.masks = {t: np.unpackbits(arrays[f"{index}/masks/{t}"])[:image_size * image_size]
                     .reshape(image_size, image_size).astype(np.float32) for t in entry["masks"]}
        state.objects[entry["id"]] = obj
    return state
