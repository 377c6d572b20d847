"""Issue 24's answers that are not refusals (tests/test_bad_inputs.py has those): warnings where
the values suggest a mistake, a failed parity that opens with a warning, parity's score
threshold failing on a broken score head, and segment-everything leaving the session as it was."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest
import torch

from export.provenance import stamp
from runtime import Session
from runtime.bundle import WEIGHTS_FILE, BundleWarning, open_bundle
from runtime.bundle_writer import update_manifest
from runtime.everything import MaskGenerator
from runtime.images import ImageWarning
from runtime.parity import Thresholds, compare, failed_rows
from runtime.prompts import PromptWarning
from runtime.reference import load_reference_model
from runtime.session import ParityWarning

IMAGE = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)


def caught(action) -> list[str]:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        action()
    return [f"{w.category.__name__}: {w.message}" for w in seen]


@pytest.fixture(scope="module")
def session(tiny_bundle):
    with Session(tiny_bundle, backend="onnxruntime") as opened:
        yield opened


def test_normalised_points_and_boxes_are_answered_with_a_warning(session):
    said = caught(lambda: session.predict(IMAGE, points=[[0.5, 0.4]], labels=[1]))
    assert any("PromptWarning: points [[0.5, 0.4]] all lie within [0, 1] on a 64x48 image" in s
               and "points * [64, 48]" in s for s in said), said
    said = caught(lambda: session.predict(box=[0.1, 0.2, 0.6, 0.7]))
    assert any("box" in s and "normalised coordinates?" in s for s in said), said
    # Pixel prompts and a 2x2 image (where every pixel point lies in [0, 1] or near) say nothing.
    assert not caught(lambda: session.predict(points=[[30, 20]], labels=[1]))
    assert not caught(lambda: session.predict(np.zeros((2, 2, 3), np.uint8), points=[[1, 1]], labels=[1]))
    assert issubclass(PromptWarning, UserWarning)


def test_a_near_black_uint8_image_of_zeros_and_ones_warns(session):
    said = caught(lambda: session.set_image((IMAGE > 127).astype(np.uint8)))
    assert any(s.startswith("ImageWarning: uint8 image holding only 0 and 1") for s in said), said
    assert issubclass(ImageWarning, UserWarning)


def test_a_bundle_whose_build_parity_failed_opens_with_one_warning(tiny_bundle, tmp_path):
    bundle = tmp_path / "failed"
    shutil.copytree(tiny_bundle, bundle)
    update_manifest(bundle, lambda m: m.update(parity={"passed": False, "mask_iou": 0.5,
                                                        "failed": ["astronaut / box", "batch"]}))
    said = caught(lambda: Session(bundle).close())
    assert len(said) == 1 and said[0].startswith(f"ParityWarning: {bundle} failed its parity check"), said
    assert "astronaut / box; batch" in said[0] and "parity.json" in said[0]
    assert not caught(lambda: Session(bundle).close())  # once per bundle and process
    assert issubclass(ParityWarning, UserWarning)
    assert not caught(lambda: Session(tiny_bundle).close())  # built without parity: nothing to warn of


def test_parity_fails_on_scores_alone(tiny_bundle, tiny_checkpoint):
    """A score head that is off by 0.01 leaves masks and logits as they were: only the score
    threshold sees it."""
    broken = load_reference_model(tiny_checkpoint)
    with torch.no_grad():
        broken.mask_decoder.iou_prediction_head.layers[-1].bias += 0.01
    images = {"noise": IMAGE}
    with Session(tiny_bundle, backend="onnxruntime") as session:
        good = compare(session, load_reference_model(tiny_checkpoint), images, Thresholds())
        bad = compare(session, broken, images, Thresholds())
    assert all(r.passed for r in good), good
    assert not any(r.passed for r in bad)
    assert all(r.mask_iou == 1.0 and r.max_relative_logit_diff < 1e-3 for r in bad)
    assert all(0.009 < r.max_score_diff < 0.011 for r in bad)
    report = {"cases": [vars(r) for r in bad], "batch": {"passed": False}}
    assert failed_rows(report)[0] == "noise / one point" and failed_rows(report)[-1] == "batch"
    with pytest.raises(ValueError, match="max score error -1 must be a finite number"):
        Thresholds(max_score_error=-1)


def test_segment_everything_leaves_the_session_on_its_image(tiny_bundle):
    """generate encodes each crop; afterwards predict answers on the caller's image, at its size."""
    with Session(tiny_bundle, backend="onnxruntime") as session:
        session.set_image(IMAGE)
        before = session.predict(points=[[30, 20]], labels=[1])
        MaskGenerator(session, points_per_side=4, crop_n_layers=1, pred_iou_thresh=0, stability_score_thresh=0,
                      show_progress=False).generate(np.zeros((120, 100, 3), np.uint8))
        after = session.predict(points=[[30, 20]], labels=[1])
        assert after.masks.shape == (3, 48, 64)
        np.testing.assert_array_equal(after.low_res_logits, before.low_res_logits)
    with Session(tiny_bundle, backend="onnxruntime") as session:  # no image before: none after
        MaskGenerator(session, points_per_side=4, show_progress=False).generate(IMAGE)
        with pytest.raises(RuntimeError, match="no image set in this thread"):
            session.predict(points=[[30, 20]], labels=[1])


def test_a_lone_encoder_uses_the_pixel_statistics_it_was_exported_with(tiny_bundle, tmp_path):
    folder = tmp_path / "lone"
    folder.mkdir()
    for name in ("encoder.onnx", "decoder.onnx", WEIGHTS_FILE):  # the two graphs and the weights they share
        shutil.copy(tiny_bundle / name, folder)
    bundle = open_bundle(tiny_bundle)
    lone = open_bundle(folder / "encoder.onnx")
    assert (lone.img_size, lone.pixel_mean, lone.pixel_std) == (bundle.img_size, bundle.pixel_mean, bundle.pixel_std)
    # Another model's statistics, recorded in the file, are the ones used (a demo-like model's, say).
    digest = open_bundle(tiny_bundle).manifest["model"]["digest"]
    stamp(folder / "encoder.onnx", digest, {"img_size": 64, "pixel_mean": [1.0, 2.0, 3.0], "pixel_std": [4, 5, 6]})
    assert open_bundle(folder / "encoder.onnx").pixel_mean == (1.0, 2.0, 3.0)
    with Session(folder / "encoder.onnx", backend="onnxruntime") as session:
        with Session(tiny_bundle, backend="onnxruntime") as original:
            ours = session.predict(IMAGE, points=[[30, 20]], labels=[1]).low_res_logits
            theirs = original.predict(IMAGE, points=[[30, 20]], labels=[1]).low_res_logits
    assert np.abs(ours - theirs).max() > 1e-3  # the statistics were used, not SAM's defaults


def test_a_lone_encoder_that_does_not_say_what_it_is_warns(tiny_bundle, tmp_path):
    import onnx

    folder = tmp_path / "foreign"
    folder.mkdir()
    for name in ("encoder.onnx", "decoder.onnx"):
        model = onnx.load(str(tiny_bundle / name))
        del model.metadata_props[:]
        onnx.save(model, str(folder / name))
    said = caught(lambda: open_bundle(folder / "encoder.onnx"))
    assert len(said) == 1 and said[0].startswith("BundleWarning:"), said
    assert "SAM's default pixel statistics" in said[0] and "not checked" in said[0]
    assert issubclass(BundleWarning, UserWarning)


def test_segment_everything_on_a_small_image_does_not_warn_of_its_own_grid(session):
    """Its grid on a 30 x 30 image starts below one pixel: pixels by construction, no PromptWarning."""
    image = np.random.default_rng(1).integers(0, 255, (30, 30, 3), dtype=np.uint8)
    generator = MaskGenerator(session, points_per_side=16, points_per_batch=4, pred_iou_thresh=0,
                              stability_score_thresh=0, show_progress=False)
    assert not [s for s in caught(lambda: generator.generate(image)) if s.startswith("PromptWarning")]
    said = caught(lambda: session.predict(image, points=[[0.5, 0.5]], labels=[1]))  # the user's own call still warns
    assert any(s.startswith("PromptWarning") for s in said), said
