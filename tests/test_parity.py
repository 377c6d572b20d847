"""ONNX Runtime bundles (tests/test_openvino.py: OpenVINO's) against segment_anything's SamPredictor on the same weights."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from compress import build_sam, save_checkpoint
from compress.demo.shapes import make_sample
from runtime import Session
from runtime.parity import Thresholds, compare_batches, run_parity, standard_images, summary
from tests.conftest import DEMO_CHECKPOINT

REPO = Path(__file__).resolve().parent.parent


def _assert_every_case_passes(report):
    assert report["cases"], "no cases ran"
    for case in report["cases"]:
        assert case["mask_iou"] >= 0.99, case
        assert case["max_relative_logit_diff"] <= 1e-3, case
    assert report["passed"], summary(report)


def test_tiny_model_parity_on_photos_and_shapes(tiny_bundle, tiny_checkpoint):
    report = run_parity(tiny_bundle, tiny_checkpoint, show_progress=False, backend="onnxruntime")
    _assert_every_case_passes(report)
    assert {c["image"] for c in report["cases"]} == {"astronaut", "coffee", "chelsea", "shapes-0", "shapes-1"}
    assert len({c["prompt"] for c in report["cases"]}) == 6


def test_demo_model_parity_on_photos_and_shapes(demo_bundle):
    images = standard_images()
    images.update({f"shapes-extra-{i}": make_sample(np.random.default_rng([11, i])).image for i in range(3)})
    _assert_every_case_passes(run_parity(demo_bundle, DEMO_CHECKPOINT, images, show_progress=False,
                                         backend="onnxruntime"))


@pytest.mark.slow
def test_vit_b_parity_on_a_photo(vit_b_bundle, vit_b_checkpoint, photos):
    """The full-size architecture (seeded random weights), one encoder run per side, on one photo: every
    prompt case, batches and encoder_preprocess.onnx. The other images (two more photos, synthetic shapes)
    are compared on the demo model (test_demo_model_parity_on_photos_and_shapes); on vit_b they took 4 of
    the suite's minutes. Segment-everything is compared on the demo model too: seeded vit_b's masks all
    score below the thresholds (0 masks either side), in 5 minutes. On OpenVINO, auto's pick on a CPU: parity
    runs ONNX Runtime without arenas (low_memory), which on vit_b takes 1.8x OpenVINO's encoder time; ONNX
    Runtime's parity is the demo model's and the tiny one's."""
    report = run_parity(vit_b_bundle, vit_b_checkpoint, {"astronaut": photos["astronaut"]}, show_progress=False,
                        everything=False, backend="openvino")
    _assert_every_case_passes(report)
    assert report["everything"] == {"skipped": "not asked for (runtime.parity --skip-everything)"}


def test_parity_cli_fails_when_a_threshold_fails(tiny_bundle, tiny_checkpoint, tmp_path, photos):
    image = tmp_path / "coffee.png"
    Image.fromarray(photos["coffee"]).save(image)
    out = tmp_path / "parity.json"
    command = [sys.executable, "-m", "runtime.parity", str(tiny_bundle), "--checkpoint", str(tiny_checkpoint),
               "--images", str(image), "--out", str(out)]
    passing = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert passing.returncode == 0, passing.stderr
    assert json.loads(out.read_text())["passed"] is True
    # An impossible logit tolerance must turn the same comparison into a failure.
    failing = subprocess.run(command + ["--max-relative-logit-error", "0"], cwd=REPO, capture_output=True, text=True)
    assert failing.returncode == 1
    assert "parity FAIL" in failing.stdout
    assert json.loads(out.read_text())["passed"] is False


def test_parity_against_other_weights_fails(tiny_bundle, tmp_path):
    other = tmp_path / "other.safetensors"
    save_checkpoint(build_sam("tiny", seed=99), other)
    images = {"shapes": make_sample(np.random.default_rng(5)).image}
    report = run_parity(tiny_bundle, other, images, Thresholds(), show_progress=False)
    assert not report["passed"]


def test_the_report_checks_the_batch_decoder_against_single_calls(tiny_bundle, tiny_checkpoint):
    images = {"shapes": make_sample(np.random.default_rng(3)).image}
    report = run_parity(tiny_bundle, tiny_checkpoint, images, show_progress=False)
    batch = report["batch"]
    assert batch["passed"] and batch["worst_mask_iou"] >= 0.999, summary(report)
    assert [c["prompt"] for c in batch["cases"]] == ["8 one-point sets", "4 boxes + a point each"]
    assert "batch vs single calls" in summary(report)


def test_a_batch_decoder_that_mixes_up_prompt_sets_fails(tiny_bundle):
    """The check can fail: answers returned in the wrong order are not the single calls' answers."""
    with Session(tiny_bundle) as session:
        decode_batch = session.backend.decode_batch
        session.backend.decode_batch = lambda inputs: tuple(out[::-1] for out in decode_batch(inputs))
        results = compare_batches(session, {"shapes": make_sample(np.random.default_rng(3)).image}, Thresholds())
    assert not any(r.passed for r in results)


def test_the_report_checks_segment_everything_against_segment_anything(demo_bundle):
    images = {"shapes-0": make_sample(np.random.default_rng(5)).image}
    report = run_parity(demo_bundle, DEMO_CHECKPOINT, images, show_progress=False, backend="onnxruntime")
    everything = report["everything"]
    assert everything["passed"] and everything["reference_masks"] > 0, summary(report)
    assert everything["median_iou"] >= 0.99 and everything["unexplained"] == 0
    assert "segment-everything vs the upstream automatic mask generator: PASS on shapes-0" in summary(report)
