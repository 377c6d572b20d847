"""A video stream tracked on a Triton server: runtime.stream.StreamTracker's step, add_new_points_or_box and
close, over the network (not yet: masks as prompts, removing objects, a lag budget).

    with RemoteStreamTracker("grpc://gpu-box:8001/samedge") as tracker:
        tracker.step(first_frame)                                         # uint8 RGB [H, W, 3]
        tracker.add_new_points_or_box(obj_id=1, points=[[320, 240]], labels=[1])
        for frame in frames:
            masks = tracker.step(frame) > 0                                # [objects, 1, H, W]

Each tracker is one Triton sequence of the repository's `<model>_tracker` model (its correlation id
a random 63-bit number): the server keeps the stream's memory, as a local StreamTracker does, and the
answers are a local StreamTracker's. `close()` ends the sequence and frees the server's state; a
client that vanishes is freed after the model's idle limit. Frames go out whole and mask logits come
back as float32: about 4 bytes per pixel per object and frame.
"""

from __future__ import annotations

import secrets

import numpy as np

from ..backends.triton_backend import Address, TritonError, _reason
from .protocol import (FRAME, FRAME_INDEX, MASK_LOGITS, OBJECT_IDS, PROMPT_BOXES, PROMPT_LABELS, PROMPT_OBJECT_IDS,
                       PROMPT_POINTS, STREAMS_HELD, TRACKER_SUFFIX)


class RemoteStreamTracker:
    def __init__(self, url: str):
        self.address = Address(url)
        self.model = self.address.model + TRACKER_SUFFIX
        self.client = self.address.client()
        self.stream = secrets.randbits(63) or 1  # 0 means "no sequence" to Triton
        self.started = False
        self.obj_ids: list = []
        self.index = -1  # the current frame's number in the stream
        self.last_masks: np.ndarray | None = None
        self.streams_held = 0  # streams the server held after this one's last request (its own included)

    def step(self, rgb: np.ndarray) -> np.ndarray:
        """Track every object on the next frame; its mask logits [objects, 1, H, W]."""
        rgb = np.asarray(rgb)
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[-1] != 3:
            raise ValueError(f"a frame is uint8 RGB [H, W, 3], got {rgb.dtype} {rgb.shape}")
        return self._send({FRAME: rgb[None]})

    def add_new_points_or_box(self, obj_id: int, points=None, labels=None, box=None) -> np.ndarray:
        """Clicks and/or a box for `obj_id` on the current frame; every object's mask logits after it."""
        if points is None and box is None:
            raise ValueError("give points with labels, a box, or both")
        feeds = {PROMPT_OBJECT_IDS: np.array([[obj_id]], np.int32)}
        if points is not None:
            points = np.asarray(points, np.float32).reshape(-1, 2)
            labels = np.asarray(labels, np.float32).reshape(-1)
            if len(labels) != len(points):
                raise ValueError(f"{len(points)} points need {len(points)} labels, got {len(labels)}")
            feeds[PROMPT_POINTS], feeds[PROMPT_LABELS] = points[None, None], labels[None, None]
        if box is not None:
            feeds[PROMPT_BOXES] = np.asarray(box, np.float32).reshape(1, 1, 4)
        return self._send(feeds)

    def close(self) -> None:
        """End the stream: the server frees its memory."""
        if self.started:
            self.started = False
            try:
                self._infer({}, end=True)
            except TritonError:
                pass  # the server already forgot it (idle, restarted): nothing left to free
        self.client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _send(self, feeds: dict) -> np.ndarray:
        answer = self._infer(feeds, start=not self.started)
        self.started = True
        self.obj_ids = answer[OBJECT_IDS][0].tolist()
        self.index = int(answer[FRAME_INDEX].reshape(-1)[0])
        self.last_masks = answer[MASK_LOGITS][0]
        self.streams_held = int(answer[STREAMS_HELD].reshape(-1)[0])
        return self.last_masks

    def _infer(self, feeds: dict, start: bool = False, end: bool = False) -> dict:
        from tritonclient.utils import InferenceServerException

        outputs = (OBJECT_IDS, MASK_LOGITS, FRAME_INDEX, STREAMS_HELD)
        inputs, requested = self.address.request(feeds, outputs)
        try:
            result = self.client.infer(self.model, inputs, model_version=self.address.version, outputs=requested,
                                       sequence_id=self.stream, sequence_start=start, sequence_end=end)
        except InferenceServerException as err:
            raise TritonError(f"the Triton server at {self.address.host} refused stream {self.stream} of "
                              f"{self.model}: {_reason(err)}") from None
        return {name: result.as_numpy(name) for name in outputs}
