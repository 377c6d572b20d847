"""Bad prompts fail before any inference, with a message that names the fix."""

import numpy as np
import pytest

from runtime import PromptError, Session


@pytest.fixture(scope="module")
def session(tiny_bundle):
    session = Session(tiny_bundle)
    session.set_image(np.zeros((40, 60, 3), np.uint8))  # W = 60, H = 40
    return session


@pytest.mark.parametrize("kwargs, message", [
    ({}, "empty prompt"),
    ({"mask_input": np.zeros((1, 16, 16))}, "empty prompt"),
    ({"points": [[10, 10]]}, "need labels"),
    ({"points": [[10, 10], [20, 20]], "labels": [1]}, "2 points but 1 labels"),
    ({"labels": [1]}, "empty prompt"),
    ({"points": [[61, 10]], "labels": [1]}, "outside the 60x40 image"),
    ({"points": [[10, -1]], "labels": [1]}, "outside the 60x40 image"),
    ({"points": [[10, 10]], "labels": [2]}, "labels must be 1"),
    ({"points": [[np.nan, 10]], "labels": [1]}, "NaN or infinite"),
    ({"points": [[10, 10]], "labels": [np.inf]}, "NaN or infinite"),
    ({"points": [[1, 2, 3]], "labels": [1]}, "shape \\[N, 2\\]"),
    ({"points": np.zeros((0, 2)), "labels": []}, "N >= 1"),
    ({"box": [10, 10, 5, 20]}, "empty or reversed"),
    ({"box": [0, 0, 61, 40]}, "outside the 60x40 image"),
    ({"box": [0, 0, 10]}, "x0, y0, x1, y1"),
    ({"box": [0, 0, np.inf, 10]}, "NaN or infinite"),
    ({"box": [0, 0, 10, 10], "mask_input": np.zeros((1, 16, 16))}, "mask_input must be"),
    ({"box": [0, 0, 10, 10], "mask_input": np.full((1, 32, 32), np.nan)}, "NaN or infinite"),
])
def test_bad_prompt_is_refused(session, kwargs, message):
    with pytest.raises(PromptError, match=message):
        session.predict(**kwargs)


def test_predict_before_set_image(tiny_bundle):
    with pytest.raises(RuntimeError, match="call set_image"):
        Session(tiny_bundle).predict(points=[[1, 1]], labels=[1])


def test_points_on_the_image_border_are_accepted(session):
    masks, scores, logits = session.predict(points=[[60, 40], [0, 0]], labels=[1, 0])
    assert masks.shape == (3, 40, 60) and masks.dtype == bool
    assert scores.shape == (3,) and logits.shape == (3, 32, 32)  # tiny: 8x8 grid


def test_prompts_are_checked_before_a_new_image_is_encoded(tiny_bundle):
    session = Session(tiny_bundle)
    encoded = []
    real_encode = session.backend.encode
    session.backend.encode = lambda pixels: encoded.append(pixels.shape) or real_encode(pixels)
    with pytest.raises(PromptError, match="outside the 10x10 image"):
        session.predict(np.zeros((10, 10, 3), np.uint8), points=[[50, 5]], labels=[1])
    assert encoded == []
    session.predict(np.zeros((10, 10, 3), np.uint8), points=[[5, 5]], labels=[1])
    assert encoded == [(1, 3, 64, 64)]
