"""EfficientTAM as a model family: the fork beside the real sam2, checkpoints, Session and video tracking
against efficient-track-anything 1.0's own SAM2ImagePredictor and SAM2VideoPredictor on the same weights.

EfficientTAM-Ti at 256 px (the real architecture, seeded and perturbed weights); the fork runs inside
compress/families/sam2_forks.py's blocks, so the real sam2 stays what `import sam2` gives everywhere else.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

pytest.importorskip("sam2")
import compress.families.efficient_tam  # noqa: F401,E402 (registers the family)
from compress import CheckpointError, load_checkpoint, seeded_checkpoint  # noqa: E402
from compress.families import get_family  # noqa: E402
from compress.families.sam2_forks import EFFICIENT_TAM  # noqa: E402

try:
    EFFICIENT_TAM.check_installed()
except ImportError as missing:
    pytest.skip(str(missing), allow_module_level=True)

from export.build import build_bundle  # noqa: E402
from runtime import Session  # noqa: E402
from runtime import tracker as tracker_module  # noqa: E402
from runtime.video import VideoPredictor  # noqa: E402
from runtime.video_parity import (VideoThresholds, bundle_answers, compare_answers, reference_answers,  # noqa: E402
                                  short_script)

MODEL_TYPE = "efficienttam_ti_256"
RELATIVE = 1e-4  # of the reference's largest |logit|: float32 graphs differ by about 1e-6 here
FAMILY = get_family("efficient_tam")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return seeded_checkpoint(MODEL_TYPE, tmp_path_factory.mktemp("efficient_tam"))


@pytest.fixture(scope="module")
def model(checkpoint):
    return load_checkpoint(checkpoint)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, checkpoint):
    out = tmp_path_factory.mktemp("bundles") / "efficienttam-cpu"
    build_bundle(out, "cpu", checkpoint, run_parity=False)
    return out


@pytest.fixture(scope="module")
def photo():
    from skimage import data

    return data.astronaut()[::2, ::3].copy()  # 256 x 171: not square


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    from compress.demo.clips import moving_shapes, write_jpeg_folder

    return write_jpeg_folder(moving_shapes(4, 96, 128), tmp_path_factory.mktemp("clip"))


def test_the_real_sam2_stays_sam2(model):
    from hydra.core.global_hydra import GlobalHydra

    import sam2
    from sam2.modeling.sam2_base import SAM2Base

    assert "upstream" not in sam2.__file__  # the fork lent its name only while building
    assert type(model) is not SAM2Base and type(model).__name__ == "SAM2Base"
    assert GlobalHydra.instance().is_initialized()  # the real sam2's Hydra state is back
    with EFFICIENT_TAM.active() as fork:
        assert "efficient-track-anything" in fork.__file__
        from sam2.modeling.sam2_base import SAM2Base as ForkBase
        assert type(model) is ForkBase  # the same classes in every block
    assert sys.modules["sam2"] is sam2


def test_detects_the_official_layout(model):
    state = model.state_dict()
    assert FAMILY.detect(state).name == "efficienttam_ti"  # 1024 px unless a type is named
    assert FAMILY.detect(state, MODEL_TYPE).name == MODEL_TYPE
    with pytest.raises(CheckpointError, match="efficienttam_s"):
        FAMILY.detect(state, "efficienttam_s")
    assert get_family("sam").detect(state) is None
    hiera = get_family("sam2").seeded("sam2.1_hiera_t_256").state_dict()
    assert FAMILY.detect(hiera) is None  # SAM 2's Hiera is not claimed


def test_session_answers_as_the_forks_image_predictor(bundle, model, photo):
    reference = FAMILY.reference(model)
    reference.set_image(photo)
    with Session(bundle, backend="onnxruntime") as session:
        session.set_image(photo)
        assert np.abs(session.image_features["image_embed"] - reference.predictor._features["image_embed"].numpy()
                      ).max() < RELATIVE * np.abs(session.image_features["image_embed"]).max()
        for prompt in ({"points": [[60, 100]], "labels": [1]},
                       {"box": [20, 40, 140, 220], "points": [[80, 120]], "labels": [1], "multimask_output": False}):
            ours = session.predict(**prompt)
            masks, scores, logits = reference.predict(**prompt)
            assert np.abs(ours.low_res_logits - logits).max() < RELATIVE * np.abs(logits).max()
            assert np.abs(ours.scores - scores).max() < 1e-4
            assert (ours.masks == masks).mean() > 0.999


def test_a_corrupted_weight_fails_the_comparison(bundle, model, photo):
    """The comparison above can fail: one decoder weight of the reference changed."""
    broken = FAMILY.build(model.config)
    broken.load_state_dict(model.state_dict())
    with torch.no_grad():
        broken.sam_prompt_encoder.point_embeddings[1].weight += 1.0  # the positive click's embedding
    reference = FAMILY.reference(broken)
    reference.set_image(photo)
    with Session(bundle, backend="onnxruntime") as session:
        session.set_image(photo)
        ours = session.predict(points=[[60, 100]], labels=[1])
    _, _, logits = reference.predict(points=[[60, 100]], labels=[1])
    assert np.abs(ours.low_res_logits - logits).max() > 20 * RELATIVE * np.abs(logits).max()


SCRIPT = short_script(96, 128)  # two objects (a click, a box) on frame 0, then forward


@pytest.fixture(scope="module")
def video_reference(model, clip):
    """The fork's SAM2VideoPredictor on the script, once for every comparison below."""
    return reference_answers(model, clip, SCRIPT)


def _compare(bundle, clip, reference):
    with VideoPredictor(bundle, backend="onnxruntime") as predictor:
        answers, memory = bundle_answers(predictor, clip, SCRIPT)
    return compare_answers(answers, reference[0], memory, reference[1], VideoThresholds())


def test_tracks_as_the_forks_video_predictor(bundle, clip, video_reference):
    report = _compare(bundle, clip, video_reference)
    assert report["passed"], report["worst"]
    assert report["frames_answered"] == 2 + 4 and {row["object"] for row in report["answers"]} == {1, 2}
    assert len(report["memory"]) == 2 * 4 and not any("missing" in row for row in report["memory"])
    assert report["worst"]["logit_error"] < 1e-4 and report["worst"]["pointer_error"] < 1e-5


def test_video_parity_fails_on_a_dropped_memory_frame(bundle, clip, video_reference, monkeypatch):
    original = tracker_module.TrackerModel.conditioned

    def forgetful(self, features, t, cond, non_cond, n, reverse):
        return original(self, features, t, cond, {k: v for k, v in non_cond.items() if k != t - 1}, n, reverse)

    monkeypatch.setattr(tracker_module.TrackerModel, "conditioned", forgetful)
    assert not _compare(bundle, clip, video_reference)["passed"]
