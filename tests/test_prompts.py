"""Bad prompts fail before any inference, with a message that names the fix."""

import numpy as np
import pytest

from runtime import ImageError, PromptError, Session, open_bundle
from runtime.backends import make_backend
from runtime.prompts import prompt_inputs


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


class CountingEncodes:
    """A real backend that records the shape of every batch of pixels it encodes."""

    def __init__(self, backend):
        self.backend, self.encoded = backend, []

    def __getattr__(self, name):  # name, img_size, decode, close: the real backend's
        return getattr(self.backend, name)

    def encode(self, pixels):
        self.encoded.append(pixels.shape)
        return self.backend.encode(pixels)


def test_prompts_are_checked_before_a_new_image_is_encoded(tiny_bundle):
    backend = CountingEncodes(make_backend(open_bundle(tiny_bundle), "onnxruntime"))
    with Session(tiny_bundle, backend=backend) as session:
        with pytest.raises(PromptError, match="outside the 10x10 image"):
            session.predict(np.zeros((10, 10, 3), np.uint8), points=[[50, 5]], labels=[1])
        assert backend.encoded == []
        session.predict(np.zeros((10, 10, 3), np.uint8), points=[[5, 5]], labels=[1])
        assert backend.encoded == [(1, 3, 64, 64)]


def test_a_too_elongated_image_is_refused_before_encoding(tiny_bundle):
    with pytest.raises(ImageError, match="a 200x1 image is too elongated for the model's 64-px input"):
        Session(tiny_bundle).predict(np.zeros((1, 200, 3), np.uint8), points=[[10, 0]], labels=[1])


IMAGE_HW, IMG_SIZE, LOW_RES = (40, 60), 64, 16  # as the tiny bundle: W = 60, H = 40


def _inputs(**prompt) -> dict:
    return prompt_inputs(IMAGE_HW, IMG_SIZE, LOW_RES, **prompt)


def _refused(message: str, **prompt) -> str:
    with pytest.raises(PromptError, match=message) as refused:
        _inputs(**prompt)
    return str(refused.value)


def test_one_nan_among_200k_points_is_named_in_a_short_message():
    points = np.full((200_000, 2), 5.0)
    points[123_456, 1] = np.nan
    message = _refused("points contains NaN or infinite values \\(1 of 400000; the first is "
                       "points\\[123456, 1\\] = nan\\); pass finite XY pixel coordinates",
                       points=points.tolist(), labels=[1] * 200_000)  # lists: their repr is megabytes
    assert len(message) < 300


def test_bad_labels_and_points_among_many_are_named_in_short_messages():
    labels = np.ones(200_000)
    labels[[7, 9]] = [2, 5]
    message = _refused("labels must be 1 \\(foreground\\) or 0 \\(background\\), got labels\\[7\\] = 2 "
                       "\\(2 of 200000 are neither\\)", points=np.ones((200_000, 2)), labels=labels)
    assert len(message) < 300
    points = np.ones((200_000, 2))
    points[[50, 70], 0] = [1e308, 100]  # huge, but finite: outside the image
    message = _refused("point 50 \\(1e\\+308, 1\\) lies outside the 60x40 image \\(2 of 200000 points do\\)",
                       points=points, labels=np.ones(200_000))
    assert len(message) < 300


@pytest.mark.parametrize("points, what", [
    (["10", "20"], "text: \\['10', '20'\\]"),
    ("10,20", "text: '10,20'"),
    ({"x": 10, "y": 20}, "Python objects: \\{'x': 10, 'y': 20\\}"),
    ([[1, 2], [3]], "unevenly nested \\[\\[1, 2\\], \\[3\\]\\]"),
    ([[1 + 2j, 2]], "complex numbers"),
    ([[None, 2]], "Python objects"),
])
def test_points_that_are_not_numbers_say_what_they_are(points, what):
    _refused(f"points must be XY pixel coordinates \\[\\[x, y\\], ...\\], got {what}", points=points, labels=[1])


def test_long_text_is_cut_short_in_messages():
    message = _refused("points must be XY pixel coordinates", points=["1" * 100_000], labels=[1])
    assert len(message) < 200


def test_labels_as_text_or_of_the_wrong_count():
    _refused("labels must be numbers \\(1 foreground, 0 background\\), got text", points=[[1, 2]], labels=["1"])
    _refused("2 points but 4 labels", points=[[1, 2], [3, 4]], labels=[[1, 0], [1, 0]])


def test_labels_as_a_column_or_bools_are_the_same_labels():
    flat = _inputs(points=[[1, 2], [3, 4]], labels=[1, 0])
    for labels in ([[1], [0]], np.array([True, False])):
        assert np.array_equal(_inputs(points=[[1, 2], [3, 4]], labels=labels)["point_labels"], flat["point_labels"])


def test_a_box_given_as_its_two_corners_is_the_same_box():
    flat = _inputs(box=[1, 2, 30, 20])
    for box in ([[1, 2], [30, 20]], [[1, 2, 30, 20]]):
        assert np.array_equal(_inputs(box=box)["point_coords"], flat["point_coords"])


def test_box_mistakes_name_the_fix():
    _refused("got shape \\(2, 4\\) \\(one box per call: predict once per box\\)", box=[[0, 0, 5, 5], [1, 1, 9, 9]])
    _refused("empty or reversed.*for an \\[x, y, w, h\\] box pass \\[x, y, x \\+ w, y \\+ h\\]", box=[30, 10, 10, 10])
    _refused("box must be pixel coordinates \\[x0, y0, x1, y1\\], got text", box="0 0 10 10")
    _refused("reaches outside the 60x40 image", box=[0, 0, 1e308, 10])


def test_mask_input_mistakes_name_the_fix():
    box = [0, 0, 10, 10]
    _refused("mask_input must be float logits, got bool values; pass the third result of a previous predict "
             "\\(low_res_logits\\), not its masks", box=box, mask_input=np.zeros((1, LOW_RES, LOW_RES), bool))
    _refused("got \\(3, 16, 16\\) \\(one mask: e.g. logits\\[np.argmax\\(scores\\)\\]\\[None\\]\\)",
             box=box, mask_input=np.zeros((3, LOW_RES, LOW_RES), np.float32))
    _refused("got \\(40, 60\\)$", box=box, mask_input=np.zeros(IMAGE_HW, np.float32))
    too_big = np.zeros((1, LOW_RES, LOW_RES))
    too_big[0, 3, 4] = 1e308  # finite as float64, infinite as the decoder's float32
    _refused("NaN or infinite values \\(1 of 256; the first is mask_input\\[0, 3, 4\\] = 1e\\+308\\); pass "
             "finite float32 logits", box=box, mask_input=too_big)


def test_mask_input_in_the_decoders_own_layout_is_the_same_mask():
    logits = np.random.default_rng(0).normal(size=(1, LOW_RES, LOW_RES))
    expected = _inputs(box=[0, 0, 10, 10], mask_input=logits)["mask_input"]
    assert expected.dtype == np.float32 and np.array_equal(expected, logits[None].astype(np.float32))
    for layout in (logits[0], logits[None]):
        assert np.array_equal(_inputs(box=[0, 0, 10, 10], mask_input=layout)["mask_input"], expected)
