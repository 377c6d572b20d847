"""runtime.stream: a live feed tracked frame by frame, as the video predictor tracks the same video, in
bounded memory, with a lag budget."""

from __future__ import annotations

import numpy as np
import pytest

from compress.demo.clips import moving_shapes
from runtime.stream import StreamTracker
from runtime.video import VideoPredictor
from runtime.video_frames import StreamFrame, VideoError


def test_stream_answers_as_the_video_predictor(sam2_video_bundle, video_clip):
    with VideoPredictor(sam2_video_bundle, backend="onnxruntime") as predictor:
        state = predictor.init_state(video_clip)
        predictor.add_new_points_or_box(state, 0, 1, points=[[64, 48]], labels=[1])
        predictor.add_new_points_or_box(state, 0, 2, box=[20, 10, 90, 60])
        offline = {t: masks for t, _, masks in predictor.propagate_in_video(state)}
        frames = [state.frames[t] for t in range(state.num_frames)]
    # The upstream setting, so corrections (none here) would be tracked frames as offline.
    with StreamTracker(sam2_video_bundle, backend="onnxruntime", add_all_frames_to_correct_as_cond=False) as stream:
        for result in stream.track(frames):
            if result.index == 0:
                stream.add_new_points_or_box(1, points=[[64, 48]], labels=[1])
                stream.add_new_points_or_box(2, box=[20, 10, 90, 60])
                continue  # frame 0's answer is the prompts' (offline's frame 0 too)
            np.testing.assert_allclose(result.mask_logits, offline[result.index], atol=1e-5)
            assert result.obj_ids == [1, 2]


def _held_bytes(stream) -> int:
    arrays = [out.low_res.nbytes + out.obj_ptr.nbytes + out.memory.nbytes for obj in stream.state.objects.values()
              for out in [*obj.cond.values(), *obj.non_cond.values()]]
    return sum(arrays)


def test_memory_stays_flat_over_a_long_stream(sam2_bundle):
    frames = moving_shapes(38, 48, 64, seed=5)
    held, sizes = [], []
    with StreamTracker(sam2_bundle, backend="onnxruntime") as stream:
        for index, frame in enumerate(frames):
            stream.step(frame)
            if index == 0:
                stream.add_new_points_or_box("a", points=[[32, 24]], labels=[1])
            if index == 20:  # a new object mid-stream, and a correction of the first
                stream.add_new_points_or_box("b", box=[5, 5, 30, 30])
                stream.add_new_points_or_box("a", points=[[40, 30]], labels=[0])
            held.append(stream.held_outputs())
            sizes.append(_held_bytes(stream))
    # 1 conditioning frame + the 15 tracked frames a next frame can read, per object; corrections add one each.
    assert max(held[15:20]) == 16 and held[19] == held[15]
    assert max(held[36:]) == held[-1] == 16 + 1 + 16
    assert sizes[-1] == sizes[36] and sizes[19] == sizes[15]
    assert all(len(obj.tracked) <= 17 for obj in stream.state.objects.values())


def test_lag_budget_drops_or_reuses_late_frames(sam2_bundle):
    frames = moving_shapes(6, 48, 64, seed=6)
    timed = [StreamFrame(index, index * 0.1, frame) for index, frame in enumerate(frames)]
    ticks = iter([0.0, 0.0, 0.05, 0.5, 0.5, 0.9, 0.9, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])

    def clock():  # the feed is 0.1 s per frame; tracking "took" 0.5 s after frame 1
        return next(ticks)

    with StreamTracker(sam2_bundle, backend="onnxruntime") as stream:
        results = []
        for result in stream.track(timed, lag_budget=0.2, on_lag="reuse", clock=clock):
            if result.index == 0:
                stream.add_new_points_or_box(1, points=[[32, 24]], labels=[1])
            results.append(result)
        dropped = [r.index for r in results if r.dropped]
        assert dropped and 0 not in dropped
        for result in results:
            if result.dropped:
                assert result.mask_logits is not None  # reused: the last masks
                assert result.index not in stream.state.objects[1].non_cond  # and no memory of it
    with pytest.raises(ValueError, match="on_lag"):
        next(StreamTracker.track(stream, timed, on_lag="skip"))


def test_stream_bad_input(sam2_bundle):
    frames = moving_shapes(3, 48, 64, seed=7)
    with StreamTracker(sam2_bundle, backend="onnxruntime") as stream:
        with pytest.raises(VideoError, match="no frame yet"):
            stream.add_new_points_or_box(1, points=[[1, 1]], labels=[1])
        stream.step(frames[0])
        stream.add_new_points_or_box(1, points=[[32, 24]], labels=[1])
        with pytest.raises(VideoError, match="keeps one size"):
            stream.step(np.zeros((40, 64, 3), np.uint8))
        with pytest.raises(VideoError, match="only moves forward"):
            stream.step(frames[1], index=0)
        with pytest.raises(VideoError, match="uint8 RGB"):
            stream.step(frames[1].astype(np.float32))
        masks = stream.step(frames[1])
        assert masks.shape == (1, 1, 48, 64)
