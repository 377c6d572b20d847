"""Video tracking against sam2's SAM2VideoPredictor on the same weights, and parity's power to fail.

The model is tests/video_model.py's (its tracking depends on its memory); the clip 18 frames, enough to
fill the memory bank. The reference runs once per script; each backend and each broken tracker is
compared with it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from runtime import tracker as tracker_module
from runtime.bundle import open_bundle
from runtime.parity import main as parity_main
from runtime.reference import bundle_reference_model
from runtime.video import VideoPredictor
from runtime.video_parity import (VideoThresholds, bundle_answers, compare_answers, default_script,
                                  reference_answers)

SHORT_SCRIPT = [("points", 0, 1, [[64, 48]], [1]), ("propagate", None, None, False)]


@pytest.fixture(scope="module")
def full_script(video_clip):
    return default_script(18, 96, 128)


@pytest.fixture(scope="module")
def reference(sam2_video_bundle, video_clip, full_script):
    bundle = open_bundle(sam2_video_bundle, verify=False)
    return reference_answers(bundle_reference_model(bundle, bundle.checkpoint), video_clip, full_script)


@pytest.fixture(scope="module")
def short_reference(sam2_video_bundle, video_clip):
    bundle = open_bundle(sam2_video_bundle, verify=False)
    return reference_answers(bundle_reference_model(bundle, bundle.checkpoint), video_clip, SHORT_SCRIPT)


def _compare(bundle, clip, script, reference, backend="onnxruntime"):
    with VideoPredictor(bundle, backend=backend) as predictor:
        answers, memory = bundle_answers(predictor, clip, script)
    return compare_answers(answers, reference[0], memory, reference[1], VideoThresholds())


def test_tracks_as_sam2_video_predictor(sam2_video_bundle, video_clip, full_script, reference):
    report = _compare(sam2_video_bundle, video_clip, full_script, reference)
    assert report["passed"], report["worst"]
    # Every call answered: 3 prompts, 18 + 18 frames forward, a correction, 18 frames in reverse.
    assert report["frames_answered"] == 3 + 18 + 1 + 18 + 18
    assert {row["object"] for row in report["answers"]} == {1, 2, 3}
    # Memory compared for every frame of every object (pointers, scores, bfloat16 features).
    assert len(report["memory"]) == 3 * 18 and not any("missing" in row for row in report["memory"])
    worst = report["worst"]
    assert worst["mask_iou"] > 0.995 and worst["logit_error"] < 1e-4 and worst["pointer_error"] < 2e-5


def test_the_clip_is_not_trivial(sam2_video_bundle, video_clip, full_script, reference):
    """Masks that cover a part of the frame, change over time, and an object the model loses (-1024):
    what random weights often fail to give."""
    answers = reference[0]
    areas = [float((logits[0, 0] > 0).mean()) for _, _, _, logits in answers[3:21]]  # object 1, forward
    assert 0.005 < np.median(areas) < 0.5
    assert np.ptp(areas) > 0.01
    correction = answers[21][3][0, 0] > 0
    before = answers[3 + 9][3][0, 0] > 0
    assert (correction != before).mean() > 0.01  # the background click changed object 1's mask


BREAKAGES = {
    # the oldest tracked frame left out of the memory
    "dropped memory frame": ("conditioned", lambda original: lambda self, features, t, cond, non_cond, n, reverse:
                             original(self, features, t, cond, {k: v for k, v in non_cond.items()
                                                                 if k != (t + 6 if reverse else t - 6)}, n, reverse)),
    # memories given the temporal encoding of the next position
    "wrong temporal index": ("__init__", lambda original: lambda self, session: (
        original(self, session), self.constants.__setitem__(
            "maskmem_tpos_enc", np.roll(self.constants["maskmem_tpos_enc"], 1, axis=0)))[0]),
    # every object pointer one frame further than it is
    "pointer distance off by one": ("_pointer_positions", lambda original: lambda self, distances, n:
                                    original(self, [d + 1 for d in distances], n)),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_parity_fails_on_a_broken_tracker(sam2_video_bundle, video_clip, short_reference, monkeypatch, breakage):
    name, wrap = BREAKAGES[breakage]
    monkeypatch.setattr(tracker_module.TrackerModel, name, wrap(getattr(tracker_module.TrackerModel, name)))
    report = _compare(sam2_video_bundle, video_clip, SHORT_SCRIPT, short_reference)
    assert not report["passed"], f"{breakage} passed parity: {report['worst']}"


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_short_script_passes_unbroken(sam2_video_bundle, video_clip, short_reference, backend):
    report = _compare(sam2_video_bundle, video_clip, SHORT_SCRIPT, short_reference, backend)
    assert report["passed"], report["worst"]


def test_parity_cli_video(sam2_video_bundle, tmp_path, capsys):
    from compress.demo.clips import moving_shapes, write_jpeg_folder

    clip = write_jpeg_folder(moving_shapes(4, 64, 80, seed=3), tmp_path / "clip")
    out = tmp_path / "video_parity.json"
    assert parity_main([str(sam2_video_bundle), "--video", str(clip), "--backend", "onnxruntime",
                        "--out", str(out)]) == 0
    assert "video parity PASS: 4 frames" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["passed"] and report["frames"] == 4
