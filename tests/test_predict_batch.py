"""Session.predict_batch: N prompt sets in one decoder call answer as N single predict calls."""

import shutil

import numpy as np
import pytest
from skimage import data

from runtime import BundleError, PromptError, Session
from runtime.masks import upscale_masks
from runtime.parity import mask_iou
from runtime.session import PROMPTS_PER_CALL

MIN_IOU = 0.999  # per prompt and mask, against the single call on the same backend
MAX_RELATIVE_LOGIT_DIFF = 1e-4


@pytest.fixture(scope="module")
def demo_session(demo_bundle):
    with Session(demo_bundle, backend="onnxruntime") as session:
        session.set_image(data.astronaut())
        yield session


def _prompts(count: int, points: int, box: bool, seed: int = 0):
    """`count` prompt sets inside the 512 x 512 astronaut: `points` points each, and a box or not."""
    rng = np.random.default_rng(seed)
    prompt = {}
    if points:
        prompt["points"] = rng.uniform(20, 490, size=(count, points, 2))
        prompt["labels"] = rng.integers(0, 2, size=(count, points))
        prompt["labels"][:, 0] = 1
    if box:
        corner = rng.uniform(10, 300, size=(count, 2))
        prompt["boxes"] = np.concatenate([corner, corner + rng.uniform(40, 200, size=(count, 2))], axis=1)
    return prompt


def _single(session, prompt: dict, n: int, **options):
    return session.predict(points=None if "points" not in prompt else prompt["points"][n],
                           labels=None if "labels" not in prompt else prompt["labels"][n],
                           box=None if "boxes" not in prompt else prompt["boxes"][n], **options)


def _assert_as_single_calls(session, prompt, batch, **options):
    for n in range(len(batch.scores)):
        mask_input = options.get("mask_input")
        one = _single(session, prompt, n, **{**options, "mask_input": None if mask_input is None else mask_input[n]})
        scale = max(float(np.abs(one.low_res_logits).max()), 1e-6)
        assert float(np.abs(batch.low_res_logits[n] - one.low_res_logits).max()) / scale <= MAX_RELATIVE_LOGIT_DIFF
        np.testing.assert_allclose(batch.scores[n], one.scores, atol=1e-5)
        if batch.masks is not None:
            assert min(mask_iou(a, b) for a, b in zip(batch.masks[n], one.masks)) >= MIN_IOU


@pytest.mark.parametrize("count", [1, 7, 64])
def test_point_sets_answer_as_single_calls(demo_session, count):
    prompt = _prompts(count, points=2, box=False, seed=count)
    batch = demo_session.predict_batch(**prompt)
    assert batch.masks.shape == (count, 3, 512, 512) and batch.masks.dtype == bool
    assert batch.scores.shape == (count, 3) and batch.low_res_logits.shape == (count, 3, 64, 64)
    _assert_as_single_calls(demo_session, prompt, batch)


@pytest.mark.parametrize("points", [0, 1])  # boxes alone; a box and a point per set
def test_boxes_answer_as_single_calls(demo_session, points):
    prompt = _prompts(7, points=points, box=True, seed=3)
    batch = demo_session.predict_batch(**prompt, multimask_output=False)
    assert batch.masks.shape == (7, 1, 512, 512)
    _assert_as_single_calls(demo_session, prompt, batch, multimask_output=False)


def test_mask_input_refines_each_set_as_alone(demo_session):
    prompt = _prompts(7, points=1, box=False, seed=4)
    first = demo_session.predict_batch(**prompt)
    best = first.low_res_logits[np.arange(7), first.scores.argmax(1)][:, None]  # [N, 1, L, L]
    batch = demo_session.predict_batch(**prompt, mask_input=best, multimask_output=False)
    _assert_as_single_calls(demo_session, prompt, batch, mask_input=best, multimask_output=False)
    assert not np.allclose(batch.low_res_logits, first.low_res_logits[:, :1])  # the mask input was used


def test_more_sets_than_one_call_takes_and_low_res_only(demo_session):
    prompt = _prompts(PROMPTS_PER_CALL + 5, points=1, box=False, seed=5)
    batch = demo_session.predict_batch(**prompt, upscale=False)
    assert batch.masks is None and batch.low_res_logits.shape[0] == PROMPTS_PER_CALL + 5
    for n in (0, PROMPTS_PER_CALL - 1, PROMPTS_PER_CALL, PROMPTS_PER_CALL + 4):  # both sides of the split
        one = _single(demo_session, prompt, n)
        np.testing.assert_allclose(batch.low_res_logits[n], one.low_res_logits, atol=1e-4)
    # Upscaled afterwards, one of them is the mask the single call gives.
    full = upscale_masks(batch.low_res_logits[:1], demo_session.img_size, (512, 512))[0] > 0
    assert min(mask_iou(a, b) for a, b in zip(full, _single(demo_session, prompt, 0).masks)) >= MIN_IOU


def test_a_backend_without_a_batch_decoder_loops_single_calls(tiny_bundle):
    """The torch reference has no batch decoder: Session calls its decode once per set."""
    image = data.astronaut()[::8, ::8]
    prompt = _prompts(3, points=1, box=True, seed=6)
    prompt = {k: (v / 8 if k != "labels" else v) for k, v in prompt.items()}
    with Session(tiny_bundle, backend="torch") as reference, Session(tiny_bundle, backend="onnxruntime") as ours:
        assert reference.abilities.batch_decoding == "loop"
        for session in (reference, ours):
            session.set_image(image)
        looped, batched = reference.predict_batch(**prompt), ours.predict_batch(**prompt)
        np.testing.assert_allclose(looped.low_res_logits, batched.low_res_logits, atol=1e-4)
        _assert_as_single_calls(reference, prompt, looped)


@pytest.mark.parametrize("arguments, message", [
    ({"points": np.zeros((0, 1, 2)), "labels": np.zeros((0, 1))}, "holds no prompt"),
    ({"boxes": np.zeros((0, 4))}, "holds no prompt"),
    ({"points": np.full((3, 1, 2), 50.0), "labels": np.ones((3, 1)), "boxes": [[0, 0, 90, 90]] * 2},
     "boxes holds 2 prompt(s) but the other arguments 3"),
    ({"points": np.full((3, 2), 50.0), "labels": np.ones(3)}, "points[:, None]"),
    ({"points": np.full((2, 2, 2), 50.0), "labels": np.ones((2, 3))}, "labels"),
    ({"points": [[[50, 50]], [[900, 50]]], "labels": [[1], [1]]}, "prompt 1: point 0 (900, 50) lies outside"),
    ({"boxes": [[0, 0, 90, 90], [10, 10, 5, 50]]}, "boxes[1]: box"),
    ({"boxes": [[0, 0, 90, 90]], "mask_input": np.zeros((2, 1, 64, 64), np.float32)}, "mask_input holds 2"),
    ({"boxes": [[0, 0, 90, 90]], "mask_input": np.zeros((64, 64), np.float32)}, "one per prompt"),
    ({}, "empty prompt"),
])
def test_bad_batches_are_refused_with_the_fix(demo_session, arguments, message):
    with pytest.raises(PromptError, match=None) as caught:
        demo_session.predict_batch(**arguments)
    assert message in str(caught.value)


def test_a_bundle_without_decoder_batch_says_to_rebuild(demo_bundle, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(demo_bundle, old)
    (old / "decoder_batch.onnx").unlink()
    with pytest.raises(BundleError, match="lacks decoder_batch.onnx"):
        Session(old)
    with Session(old, verify=False) as session:
        session.set_image(data.astronaut())
        assert session.predict(points=[[200, 200]], labels=[1]).masks.shape == (3, 512, 512)
        with pytest.raises(BundleError, match="rebuild it with python -m export.build"):
            session.predict_batch(boxes=[[0, 0, 90, 90]])
