"""runtime.video's calls one by one against SAM2VideoPredictor, state saved and resumed, and bad input.

Each comparison runs a short script on both sides (tests/test_video_parity.py runs the long one).
"""

from __future__ import annotations

import numpy as np
import pytest

from runtime.bundle import BundleError, open_bundle
from runtime.reference import bundle_reference_model
from runtime.video import VideoPredictor
from runtime.video_frames import VideoError
from runtime.video_parity import VideoThresholds, bundle_answers, compare_answers, reference_answers

H, W = 96, 128


@pytest.fixture(scope="module")
def model(sam2_video_bundle):
    bundle = open_bundle(sam2_video_bundle, verify=False)
    return bundle_reference_model(bundle, bundle.checkpoint)


@pytest.fixture(scope="module")
def predictor(sam2_video_bundle):
    with VideoPredictor(sam2_video_bundle, backend="onnxruntime") as opened:
        yield opened


def _agrees(predictor, model, clip, script):
    answers, memory = bundle_answers(predictor, clip, script)
    reference, reference_memory = reference_answers(model, clip, script)
    report = compare_answers(answers, reference, memory, reference_memory, VideoThresholds())
    assert report["passed"], report["worst"]
    return report


MASK = np.zeros((H, W), bool)
MASK[30:70, 20:60] = True

# What tests/test_video_parity.py's long script (clicks, a box, a mask, a correction, reverse) leaves out.
SCRIPTS = {
    # a box and a click together, on a later frame, tracked from there
    # then one more click on the same frame: decoded with the frame's last logits as the mask input
    "box with a click": [("points", 2, 5, [[50, 40]], [1], [20, 10, 90, 60]), ("points", 2, 5, [[70, 30]], [0]),
                         ("propagate", 2, 4, False)],
    # two objects first prompted on different frames, and a reverse pass from the later one
    "objects on different frames, reverse": [("points", 0, 1, [[64, 48]], [1]), ("points", 3, 2, [[30, 70]], [1]),
                                             ("propagate", 3, None, True)],
}


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_calls_agree_with_sam2_video_predictor(predictor, model, video_clip, name):
    _agrees(predictor, model, video_clip, SCRIPTS[name])


def test_save_and_resume_equals_one_run(predictor, video_clip, tmp_path):
    state = predictor.init_state(video_clip)
    predictor.add_new_points_or_box(state, 0, 1, points=[[64, 48]], labels=[1])
    predictor.add_new_points_or_box(state, 0, 2, box=[20, 10, 90, 60])
    whole = {t: masks for t, _, masks in predictor.propagate_in_video(state, max_frame_num_to_track=12)}

    state = predictor.init_state(video_clip)
    predictor.add_new_points_or_box(state, 0, 1, points=[[64, 48]], labels=[1])
    predictor.add_new_points_or_box(state, 0, 2, box=[20, 10, 90, 60])
    first = {t: masks for t, _, masks in predictor.propagate_in_video(state, max_frame_num_to_track=8)}
    predictor.save_state(state, tmp_path / "state.npz")
    assert list(tmp_path.iterdir()) == [tmp_path / "state.npz"]  # nothing half-written beside it
    resumed = predictor.load_state(tmp_path / "state.npz", video_clip)
    rest = {t: masks for t, _, masks in predictor.propagate_in_video(resumed, start_frame_idx=9,
                                                                      max_frame_num_to_track=3)}
    assert sorted({**first, **rest}) == sorted(whole)
    for t, masks in {**first, **rest}.items():
        np.testing.assert_array_equal(masks, whole[t])


def test_remove_object_and_reset(predictor, video_clip):
    state = predictor.init_state(video_clip)
    predictor.add_new_points_or_box(state, 0, 1, points=[[64, 48]], labels=[1])
    _, ids, masks = predictor.add_new_points_or_box(state, 0, "car", box=[20, 10, 90, 60])
    assert ids == [1, "car"] and masks.shape == (2, 1, H, W)
    alone = predictor.init_state(video_clip)
    _, _, only_car = predictor.add_new_points_or_box(alone, 0, "car", box=[20, 10, 90, 60])
    assert predictor.remove_object(state, 1)[0] == ["car"]
    frames = list(predictor.propagate_in_video(state, max_frame_num_to_track=3))
    assert [ids for _, ids, _ in frames] == [["car"]] * 4
    np.testing.assert_array_equal(frames[0][2], only_car)
    with pytest.raises(KeyError, match="not tracked"):
        predictor.remove_object(state, 1, strict=True)
    predictor.reset_state(state)
    with pytest.raises(ValueError, match="no object to track"):
        next(predictor.propagate_in_video(state))


def test_clear_prompts_and_mask_logits_sizes(predictor, video_clip):
    state = predictor.init_state(video_clip)
    _, _, masks = predictor.add_new_points_or_box(state, 0, 1, points=[[64, 48]], labels=[1])
    assert masks.dtype == np.float32 and masks.shape == (1, 1, H, W)
    _, _, cleared = predictor.clear_all_prompts_in_frame(state, 0, 1)
    assert (cleared == -1024).all()  # no result left on the frame for the object
    with pytest.raises(ValueError, match="no prompted frame"):
        next(predictor.propagate_in_video(state))


def test_bad_input(predictor, video_clip, tmp_path):
    state = predictor.init_state(video_clip)
    with pytest.raises(VideoError, match="outside the video .frames 0..17."):
        predictor.add_new_points_or_box(state, 18, 1, points=[[1, 1]], labels=[1])
    with pytest.raises(VideoError, match="outside the video"):
        predictor.add_new_mask(state, -1, 1, MASK)
    with pytest.raises(ValueError, match="points and labels go together"):
        predictor.add_new_points_or_box(state, 0, 1, points=[[1, 1]])
    with pytest.raises(ValueError, match="one per point"):
        predictor.add_new_points_or_box(state, 0, 1, points=[[1, 1], [2, 2]], labels=[1])
    with pytest.raises(ValueError, match="box= "[:-1]):
        predictor.add_new_points_or_box(state, 0, 1, points=[[1, 1]], labels=[2])
    with pytest.raises(ValueError, match="a box must come before"):
        predictor.add_new_points_or_box(state, 0, 1, box=[1, 1, 5, 5], clear_old_points=False)
    with pytest.raises(ValueError, match="bool"):
        predictor.add_new_mask(state, 0, 1, MASK.astype(np.float32) * 3)
    with pytest.raises(KeyError, match="not tracked"):
        predictor.clear_all_prompts_in_frame(state, 0, 42)
    with pytest.raises(VideoError):
        predictor.init_state(tmp_path)  # an empty folder
    with pytest.raises(ValueError, match="another video"):
        other = predictor.init_state(video_clip)
        predictor.add_new_points_or_box(other, 0, 1, points=[[64, 48]], labels=[1])
        list(predictor.propagate_in_video(other, max_frame_num_to_track=1))
        predictor.save_state(other, tmp_path / "s.npz")
        predictor.load_state(tmp_path / "s.npz", np.zeros((3, H, W, 3), np.uint8))


def test_a_prompt_after_propagation_corrects_the_frame(predictor, video_clip):
    """A click after tracking is a correction: the frame is decoded with memory, and the next
    propagation starts from the first prompted frame again (as upstream)."""
    state = predictor.init_state(video_clip)
    predictor.add_new_points_or_box(state, 0, 1, points=[[64, 48]], labels=[1])
    tracked = {t: m for t, _, m in predictor.propagate_in_video(state, max_frame_num_to_track=5)}
    _, _, corrected = predictor.add_new_points_or_box(state, 3, 1, points=[[100, 80]], labels=[0])
    assert not np.array_equal(corrected > 0, tracked[3] > 0)
    assert [t for t, _, _ in predictor.propagate_in_video(state, max_frame_num_to_track=5)] == list(range(6))


def test_one_frame_video(predictor, video_clip):
    frame = np.asarray(predictor.init_state(video_clip).frames[0])[None]
    state = predictor.init_state(frame)
    predictor.add_new_points_or_box(state, 0, 1, points=[[64, 48]], labels=[1])
    assert [t for t, _, _ in predictor.propagate_in_video(state)] == [0]
    assert [t for t, _, _ in predictor.propagate_in_video(state, reverse=True)] == []


def test_a_bundle_that_cannot_track(tiny_checkpoint, tmp_path):
    from export.build import build_bundle

    build_bundle(tmp_path / "tiny", "cpu", tiny_checkpoint, run_parity=False, with_clients=False)
    with pytest.raises(BundleError, match="cannot track"):
        VideoPredictor(tmp_path / "tiny", backend="onnxruntime")


def test_a_saved_state_keeps_memory_around_the_last_tracked_frame(tmp_path):
    """Reverse runs go down: the frames kept are those around the frame tracked last, not the highest."""
    from runtime.tracker import FrameOutput
    from runtime.video_state import ObjectState, VideoState
    from runtime.video_frames import open_video
    from runtime.video_state import load_state, save_state

    frames = open_video(np.zeros((41, 8, 8, 3), np.uint8))
    output = FrameOutput(np.zeros((1, 1, 4, 4), np.float32), np.zeros((1, 256), np.float32),
                         np.ones((1, 1), np.float32), np.zeros((1, 64, 1, 1), np.uint16))
    obj = ObjectState(cond={40: output}, non_cond={t: output for t in range(40)},
                      tracked={t: True for t in range(41)})
    state = VideoState(frames, last_tracked=5)
    state.objects[1] = obj
    save_state(state, tmp_path / "state.npz")
    loaded = load_state(tmp_path / "state.npz", frames, 16)
    assert sorted(loaded.objects[1].non_cond) == list(range(0, 22)) and loaded.last_tracked == 5
    assert sorted(loaded.objects[1].cond) == [40] and len(loaded.objects[1].tracked) == 41


def test_an_int8_bundle_tracks(sam2_bundle, video_clip, tmp_path):
    """export.quantize's copy keeps the tracking constants; its answers stay near the dense bundle's."""
    from export.quantize import quantize_bundle

    quantized = quantize_bundle(sam2_bundle, tmp_path / "int8", "int8")
    answers = {}
    for name, bundle in (("dense", sam2_bundle), ("int8", quantized)):
        with VideoPredictor(bundle, backend="onnxruntime") as predictor:
            state = predictor.init_state(video_clip)
            predictor.add_new_points_or_box(state, 0, 1, points=[[64, 48]], labels=[1])
            answers[name] = [masks[0, 0] > 0 for _, _, masks in predictor.propagate_in_video(
                state, max_frame_num_to_track=3)]
    ious = [(a & b).sum() / max((a | b).sum(), 1) for a, b in zip(answers["dense"], answers["int8"])]
    assert len(ious) == 4 and min(ious) > 0.8, ious
