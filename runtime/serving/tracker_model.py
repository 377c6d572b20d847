"""SAM 2.1 video tracking inside Triton: one runtime.stream.StreamTracker per Triton sequence.

A repository's `<model>_tracker/<version>/model.py` imports `TritonPythonModel` from here; its config
(export/triton.py) has Triton's sequence batcher, which routes every request of a sequence (a stream,
named by its correlation id) to this instance in order, and hands this model its START, END and
correlation-id control inputs. The trackers share one Session (the bundle's models are loaded once);
each holds its stream's memory, bounded as StreamTracker bounds it. A stream ends with END, or is freed
after `stream_idle_seconds` without a request (a client that disconnected), as Triton frees its slot.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ..session import Session
from ..stream import StreamTracker
from .protocol import (END, FRAME, FRAME_INDEX, MASK_LOGITS, OBJECT_IDS, PROMPT_BOXES, PROMPT_LABELS,
                       PROMPT_OBJECT_IDS, PROMPT_POINTS, START, STREAM, STREAMS_HELD, UNKNOWN_STREAM, RequestError)
from .bridge import refusal, to_numpy, to_triton

DEFAULT_IDLE_SECONDS = 60.0


class TrackerModel:
    """Triton's Python-backend model interface for streams: initialize, execute, finalize."""

    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        parameters = {name: value.get("string_value", "") for name, value in config.get("parameters", {}).items()}
        folder = Path(args["model_repository"]) / args["model_version"] / "bundle"
        # Its files checked against the hashes in its manifest.
        self.session = Session(folder, backend=parameters.get("backend") or "auto", verify=True)
        self.idle_seconds = float(parameters.get("stream_idle_seconds") or DEFAULT_IDLE_SECONDS)
        self.streams: dict[int, list] = {}  # correlation id -> [StreamTracker, last request's time]

    def execute(self, requests) -> list:
        import triton_python_backend_utils as pb_utils

        batch = [{tensor.name(): to_numpy(tensor) for tensor in request.inputs()} for request in requests]
        self._free_idle(busy={int(feeds[STREAM].reshape(-1)[0]) for feeds in batch if STREAM in feeds})
        answers = []
        for feeds in batch:
            try:
                answers.append(pb_utils.InferenceResponse(output_tensors=[
                    to_triton(name, value) for name, value in self._step(feeds).items()]))
            except Exception as err:
                answers.append(refusal(err))
        return answers

    def finalize(self) -> None:
        for tracker, _ in self.streams.values():
            tracker.close()
        self.streams.clear()
        self.session.close()

    def _step(self, feeds: dict) -> dict:
        stream = int(feeds.pop(STREAM).reshape(-1)[0])
        started, ending = bool(feeds.pop(START).reshape(-1)[0]), bool(feeds.pop(END).reshape(-1)[0])
        try:
            if started:
                self._end(stream)  # a correlation id used again: a new stream
                self.streams[stream] = [StreamTracker(self.session), time.monotonic()]
            held = self.streams.get(stream)
            if held is None:
                raise RequestError(f"{UNKNOWN_STREAM} {stream}: this server holds no tracker for it (it ended, was "
                                   f"idle over {self.idle_seconds:.0f} s, or the server restarted): start a new stream "
                                   "(a new RemoteStreamTracker) with its frame and prompts")
            tracker = held[0]
            masks = None
            if FRAME in feeds:
                masks = tracker.step(feeds.pop(FRAME)[0])
            if PROMPT_OBJECT_IDS in feeds:
                masks = self._prompt(tracker, feeds)
            if feeds:
                raise RequestError(f"unknown inputs {sorted(feeds)} for a stream request")
            if masks is None:
                if tracker.last_masks is None:
                    raise RequestError(f"a stream request holds a {FRAME}, prompts ({PROMPT_OBJECT_IDS} ...), or both")
                masks = tracker.last_masks
            return {OBJECT_IDS: np.array([tracker.obj_ids], np.int32), MASK_LOGITS: masks[None].astype(np.float32),
                    FRAME_INDEX: np.array([[tracker.frames.index]], np.int64),
                    STREAMS_HELD: np.array([[len(self.streams) - ending]], np.int32)}
        finally:
            if stream in self.streams:
                self.streams[stream][1] = time.monotonic()  # idle from the answer on, as the client sees it
            if ending:
                self._end(stream)

    @staticmethod
    def _prompt(tracker: StreamTracker, feeds: dict) -> np.ndarray:
        ids = feeds.pop(PROMPT_OBJECT_IDS)[0]
        points, labels = feeds.pop(PROMPT_POINTS, None), feeds.pop(PROMPT_LABELS, None)
        boxes = feeds.pop(PROMPT_BOXES, None)
        if (points is None) != (labels is None):
            raise RequestError(f"{PROMPT_POINTS} and {PROMPT_LABELS} go together")
        for name, value, rows in ((PROMPT_POINTS, points, 2), (PROMPT_BOXES, boxes, 1)):
            if value is not None and len(value[0]) != len(ids):
                raise RequestError(f"{name} holds {len(value[0])} objects' prompts, {PROMPT_OBJECT_IDS} {len(ids)}")
        masks = None
        for k, obj_id in enumerate(ids.tolist()):
            kept = labels[0, k] >= 0 if labels is not None else None
            clicks = (points[0, k][kept], labels[0, k][kept]) if labels is not None and kept.any() else (None, None)
            box = boxes[0, k] if boxes is not None and not np.isnan(boxes[0, k]).any() else None
            if clicks[0] is None and box is None:
                raise RequestError(f"object {obj_id} has neither a click nor a box in this request")
            masks = tracker.add_new_points_or_box(obj_id, points=clicks[0], labels=clicks[1], box=box)
        return masks

    def _end(self, stream: int) -> None:
        held = self.streams.pop(stream, None)
        if held is not None:
            held[0].close()

    def _free_idle(self, busy: set) -> None:
        """Free the streams idle past the limit, but for those with a request in this batch. Triton frees its
        slot for a stream after the same limit counted from the request's arrival; this one counts from the
        answer and so never frees a stream Triton still holds."""
        now = time.monotonic()
        for stream in [s for s, (_, seen) in self.streams.items() if now - seen > self.idle_seconds and s not in busy]:
            self._end(stream)


TritonPythonModel = TrackerModel
