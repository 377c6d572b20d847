"""EdgeTAM as a model family: the fork beside the real sam2, checkpoints, Session and video tracking
against edgetam-dimos 1.0.1's own SAM2ImagePredictor and SAM2VideoPredictor on the same weights.

EdgeTAM at 256 px (RepViT-M1, the spatial perceiver with 32 + 16 latents; seeded and perturbed weights,
BatchNorm statistics included); the fork runs inside compress/families/sam2_forks.py's blocks.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

pytest.importorskip("sam2")
pytest.importorskip("timm")
import compress.families.edgetam  # noqa: F401,E402 (registers the family)
from compress import CheckpointError, load_checkpoint, seeded_checkpoint  # noqa: E402
from compress.families import get_family  # noqa: E402
from compress.families.sam2_forks import EDGETAM  # noqa: E402

try:
    EDGETAM.check_installed()
except ImportError as missing:
    pytest.skip(str(missing), allow_module_level=True)

from export.build import build_bundle  # noqa: E402
from runtime import Session  # noqa: E402
from runtime import tracker as tracker_module  # noqa: E402
from runtime.video import VideoPredictor  # noqa: E402
from runtime.video_parity import (VideoThresholds, bundle_answers, compare_answers, reference_answers,  # noqa: E402
                                  short_script)

MODEL_TYPE = "edgetam_256"
RELATIVE = 1e-4  # of the reference's largest |logit|: float32 graphs differ by about 1e-6 here
FAMILY = get_family("edgetam")
MEMORY_TOKENS = 32 + 16  # the perceiver's 1D latents, then its 2D ones (4 x 4)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return seeded_checkpoint(MODEL_TYPE, tmp_path_factory.mktemp("edgetam"))


@pytest.fixture(scope="module")
def model(checkpoint):
    return load_checkpoint(checkpoint)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, checkpoint):
    out = tmp_path_factory.mktemp("bundles") / "edgetam-cpu"
    build_bundle(out, "cpu", checkpoint, run_parity=False)
    return out


@pytest.fixture(scope="module")
def photo():
    from skimage import data

    return data.astronaut()[::2, ::3].copy()  # 256 x 171: not square


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    from compress.demo.clips import moving_shapes, write_jpeg_folder

    return write_jpeg_folder(moving_shapes(3, 96, 128), tmp_path_factory.mktemp("clip"))  # 3 frames: 2 of memory


def test_the_real_sam2_stays_sam2(model):
    import sam2

    assert "upstream" not in sam2.__file__
    with EDGETAM.active() as fork:
        assert "edgetam-dimos" in fork.__file__
        from sam2.modeling.perceiver import PerceiverResampler
        assert type(model.spatial_perceiver) is PerceiverResampler
    assert sys.modules["sam2"] is sam2


def test_detects_the_official_layout(model):
    state = model.state_dict()
    assert FAMILY.detect(dict(state)).name == MODEL_TYPE  # the latents' counts tell the sizes apart
    official = {**state, "spatial_perceiver.latents": torch.zeros(256, 64),
                "spatial_perceiver.latents_2d": torch.zeros(256, 64)}
    assert FAMILY.detect(official).name == "edgetam"
    with pytest.raises(CheckpointError, match="edgetam"):
        FAMILY.detect(dict(state), "edgetam")
    # The released file holds BatchNorm's int64 step counters: dropped, and the rest loads strictly.
    released = {**state, "image_encoder.trunk.body.stem.conv1.bn.num_batches_tracked": torch.tensor(3)}
    FAMILY.detect(released)
    assert all(tensor.is_floating_point() for tensor in released.values())
    FAMILY.build(model.config).load_state_dict(released, strict=True)
    # Nobody else's: SAM 1, SAM 2's Hiera, EfficientTAM's ViT; and EdgeTAM claims none of theirs.
    import compress.families.efficient_tam  # noqa: F401

    hiera = get_family("sam2").build(get_family("sam2").model_types["sam2.1_hiera_t_256"]).state_dict()
    vit = get_family("efficient_tam").build(get_family("efficient_tam").model_types["efficienttam_ti_256"]).state_dict()
    for other in ("sam", "sam2", "efficient_tam"):
        assert get_family(other).detect(dict(state)) is None
    assert FAMILY.detect(hiera) is None and FAMILY.detect(vit) is None


def test_the_memory_is_the_perceivers_latents(bundle):
    with Session(bundle, backend="onnxruntime") as session:
        tracking = session.bundle.tracking
    assert tracking["memory_layout"] == "tokens" and tracking["memory_tokens"] == MEMORY_TOKENS
    assert tracking["pointer_time"] == "none" and not tracking["memory_takes_object_score"]


def test_the_perceiver_piece_is_upstreams_with_each_layer_run_once(model):
    """The memory encoder's perceiver computes upstream's latents, and runs each Linear once (a Birkhoff
    HyperLinear cannot be traced twice in one graph; upstream runs each twice: 1D, then 2D latents)."""
    from collections import Counter

    from compress.families.sam2_memory import MemoryEncoderPiece

    piece = MemoryEncoderPiece(model).spatial_perceiver
    generator = torch.Generator().manual_seed(1)
    memory, positions = (torch.randn(1, 64, 16, 16, generator=generator) for _ in range(2))
    calls = Counter()
    linears = [m for m in model.spatial_perceiver.modules() if isinstance(m, torch.nn.Linear)]
    hooks = [m.register_forward_hook(lambda module, *_: calls.update([id(module)])) for m in linears]
    try:
        with torch.no_grad():
            ours, ours_pos = piece(memory, positions)
            assert set(calls.values()) == {1} and len(calls) == len(linears)
            calls.clear()
            with EDGETAM.active():
                theirs, theirs_pos = model.spatial_perceiver(memory, positions)
            assert set(calls.values()) == {2}
    finally:
        for hook in hooks:
            hook.remove()
    assert ours.shape == theirs.shape == (1, MEMORY_TOKENS, 64)
    assert (ours - theirs).abs().max() < 1e-5 * theirs.abs().max()
    assert torch.equal(ours_pos, theirs_pos) and not ours_pos[0, :32].any()  # 1D latents: no positions


def test_session_answers_as_the_forks_image_predictor(bundle, model, photo):
    reference = FAMILY.reference(model)
    reference.set_image(photo)
    with Session(bundle, backend="onnxruntime") as session:
        session.set_image(photo)
        ours_embed, theirs_embed = session.image_features["image_embed"], reference.predictor._features["image_embed"]
        assert np.abs(ours_embed - theirs_embed.numpy()).max() < RELATIVE * np.abs(ours_embed).max()
        for prompt in ({"points": [[60, 100]], "labels": [1]},
                       {"box": [20, 40, 140, 220], "points": [[80, 120]], "labels": [1], "multimask_output": False}):
            ours = session.predict(**prompt)
            masks, scores, logits = reference.predict(**prompt)
            assert np.abs(ours.low_res_logits - logits).max() < RELATIVE * np.abs(logits).max()
            assert np.abs(ours.scores - scores).max() < 1e-4
            assert (ours.masks == masks).mean() > 0.999


def test_a_corrupted_encoder_statistic_fails_the_comparison(bundle, model, photo):
    """The comparison above can fail: one BatchNorm running mean of RepViT's stem changed in the reference."""
    broken = FAMILY.build(model.config)
    broken.load_state_dict(model.state_dict())
    with torch.no_grad():
        broken.image_encoder.trunk.body.stem.conv1.bn.running_mean[0] += 1.0
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
    assert report["frames_answered"] == 2 + 3 and {row["object"] for row in report["answers"]} == {1, 2}
    assert len(report["memory"]) == 2 * 3 and not any("missing" in row for row in report["memory"])
    assert report["worst"]["logit_error"] < 1e-4 and report["worst"]["pointer_error"] < 1e-5
    _, reference_memory = video_reference
    assert next(iter(reference_memory.values()))[2].shape == (1, MEMORY_TOKENS, 64)  # upstream's latents


def test_video_parity_fails_on_memory_tokens_out_of_order(bundle, clip, video_reference, monkeypatch):
    """The 1D and 2D latents swapped: positions and RoPE no longer match their tokens."""
    original = tracker_module.TrackerModel.memory_tokens

    def swapped(self, memory):
        tokens = original(self, memory)
        return np.concatenate([tokens[32:], tokens[:32]])

    monkeypatch.setattr(tracker_module.TrackerModel, "memory_tokens", swapped)
    assert not _compare(bundle, clip, video_reference)["passed"]
