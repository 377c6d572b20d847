"""The OpenVINO backend: parity with the PyTorch reference, auto's choice, its model cache."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from runtime import Session
from runtime.backends import make_backend
from runtime.backends import choice
from runtime.backends.choice import bundle_kind, choose
from runtime.backends.ort_backend import OnnxRuntimeBackend
from runtime.bundle import Bundle, BundleError, BundleWarning, open_bundle
from runtime.parity import run_parity, standard_images, summary
from tests.conftest import DEMO_CHECKPOINT

pytest.importorskip("openvino", reason='the cpu extra is not installed (pip install "samedge[cpu]")')
from runtime.backends.openvino_backend import OpenVINOBackend  # noqa: E402  (after the skip)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def cpu_only(monkeypatch):
    """auto's CPU choice, also where onnxruntime-gpu has a GPU (auto would open ONNX Runtime's CUDA there)."""
    monkeypatch.setattr(choice, "onnxruntime_cuda", lambda: False)


def _assert_passes(report):
    assert report["backend"] == "openvino" and report["cases"]
    for case in report["cases"]:
        assert case["mask_iou"] >= 0.99 and case["max_relative_logit_diff"] <= 1e-3, case
    assert report["passed"], summary(report)


def test_demo_bundle_parity_on_openvino(demo_bundle):
    report = run_parity(demo_bundle, DEMO_CHECKPOINT, show_progress=False, backend="openvino", everything=False)
    _assert_passes(report)
    assert report["batch"]["passed"] and report["preprocess_encoder"]["passed"], summary(report)


def test_demo_birkhoff_bundle_parity_on_openvino_with_segment_everything(demo_birkhoff_bundle):
    """OpenVINO ignores ONNX local functions: the samedge nodes are decoded as it reads the file."""
    images = {name: image for name, image in standard_images().items() if name in ("astronaut", "shapes-0")}
    report = run_parity(demo_birkhoff_bundle, None, images, show_progress=False, backend="openvino")  # its own checkpoint
    _assert_passes(report)
    everything = report["everything"]
    assert everything["passed"] and everything["reference_masks"] > 0, summary(report)


def test_auto_picks_openvino_for_fp32_and_birkhoff_bundles_and_says_why(tiny_bundle, tiny_birkhoff_bundle):
    for bundle, kind in ((tiny_bundle, "fp32"), (tiny_birkhoff_bundle, "birkhoff")):
        with Session(bundle) as session:
            assert session.backend.name == "openvino"
            assert session.backend_choice.reason.startswith(f"{kind} bundle on the CPU")


def test_auto_picks_onnxruntime_where_it_is_the_engine_that_fits(tiny_bundle):
    with Session(tiny_bundle, low_memory=True) as session:
        assert session.backend.name == "onnxruntime" and "low_memory" in session.backend_choice.reason
    with Session(tiny_bundle, providers=["CPUExecutionProvider"]) as session:
        assert session.backend.name == "onnxruntime" and "providers" in session.backend_choice.reason
    quantized = Bundle(Path("q"), Path("q/encoder.onnx"), Path("q/decoder.onnx"),
                       manifest={"quantization": {"method": "int8"}, "model": {"samedge_nodes": False}})
    assert bundle_kind(quantized) == "int8" and choose(quantized).name == "onnxruntime"
    assert choose(quantized).reason.startswith("int8 bundle on the CPU")


def test_without_openvino_auto_opens_onnxruntime_and_asking_for_it_says_how_to_install(tiny_bundle, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # what an install without the cpu extra has
    with Session(tiny_bundle) as session:
        assert session.backend.name == "onnxruntime"
        assert "not installed" in session.backend_choice.reason
    with pytest.raises(BundleError, match=r"samedge\[cpu\]"):
        Session(tiny_bundle, backend="openvino")


def test_low_memory_is_refused_with_openvino(tiny_bundle):
    with pytest.raises(ValueError, match="low_memory: not an option of the openvino backend.*ONNX Runtime.s"):
        Session(tiny_bundle, backend="openvino", low_memory=True)


def test_openvino_answers_like_onnxruntime_on_batches_and_resized_image_encoders(demo_birkhoff_bundle):
    image = np.random.default_rng(4).integers(0, 255, (180, 240, 3), np.uint8)
    boxes = [[10, 10, 120, 100], [60, 40, 230, 170], [5, 90, 100, 175]]
    answers = []
    for source, backend in ((demo_birkhoff_bundle, "onnxruntime"), (demo_birkhoff_bundle, "openvino"),
                            (demo_birkhoff_bundle / "encoder_preprocess.onnx", "openvino")):
        with Session(source, backend=backend) as session:
            answers.append(session.predict_batch(image, boxes=boxes, multimask_output=False))
    for answer in answers[1:]:
        np.testing.assert_allclose(answer.low_res_logits, answers[0].low_res_logits, atol=2e-3)
        assert (answer.masks != answers[0].masks).mean() < 1e-3


def test_the_model_cache_follows_the_content_not_the_path(tiny_bundle, tiny_birkhoff_bundle, tmp_path):
    """OpenVINO keys a cached model by path, size and mtime only: samedge gives each content its own
    folder, so a bundle replaced in place (mtimes kept, as cp -p and rsync -a do) is compiled anew."""
    place, cache = tmp_path / "bundle", tmp_path / "cache"
    pixels = np.random.default_rng(2).random((1, 3, 64, 64), np.float32)
    mtime = (tiny_bundle / "encoder.onnx").stat().st_mtime
    for source in (tiny_bundle, tiny_birkhoff_bundle, tiny_bundle):
        shutil.rmtree(place, ignore_errors=True)
        shutil.copytree(source, place)
        for file in place.iterdir():
            os.utime(file, (mtime, mtime))
        opened = open_bundle(place)
        with OpenVINOBackend(opened.encoder, opened.decoder, cache_dir=cache,
                             file_hashes=opened.manifest["files"]) as cached, \
                OnnxRuntimeBackend(source / "encoder.onnx", source / "decoder.onnx") as reference:
            np.testing.assert_allclose(cached.encode(pixels)["image_embeddings"],
                                       reference.encode(pixels)["image_embeddings"], atol=1e-4)
    assert len(list(cache.iterdir())) == 4, "one folder per encoder and decoder content"
    assert all(any(folder.iterdir()) for folder in cache.iterdir()), "nothing was cached"


def test_a_cache_that_cannot_be_made_costs_speed_not_answers(tiny_bundle, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    opened = open_bundle(tiny_bundle)
    with pytest.warns(UserWarning, match="cannot be made"):
        backend = OpenVINOBackend(opened.encoder, opened.decoder, cache_dir=blocker / "cache",
                                  file_hashes=opened.manifest["files"])
    with backend:
        assert backend.encode(np.zeros((1, 3, 64, 64), np.float32))["image_embeddings"].shape[0] == 1


def test_a_corrupt_model_file_gets_a_clear_error(tiny_bundle, tmp_path):
    for name in ("encoder.onnx", "decoder.onnx"):
        shutil.copyfile(tiny_bundle / name, tmp_path / name)
    (tmp_path / "encoder.onnx").write_bytes(b"not a model at all")  # refused before OpenVINO reads it
    with pytest.raises(BundleError, match="encoder.onnx is not a readable ONNX file"):
        open_bundle(tmp_path / "encoder.onnx", verify=False)
    # A graph field (7) of garbage: the provenance reader skips it, OpenVINO's parser must not.
    (tmp_path / "encoder.onnx").write_bytes(b"\x3a\x05" + b"\xff" * 5)
    with pytest.warns(BundleWarning, match="does not say which model it is"):
        bundle = open_bundle(tmp_path / "encoder.onnx", verify=False)
    with pytest.raises(BundleError, match="OpenVINO cannot load .*rebuild the bundle"):
        make_backend(bundle, "openvino")


def test_predict_cli_takes_a_backend_and_prints_what_it_opened(tiny_bundle, tmp_path, photos):
    from PIL import Image

    image = tmp_path / "coffee.png"
    Image.fromarray(photos["coffee"]).save(image)
    pairs = [("onnxruntime", "onnxruntime")] + ([] if _gpu_onnxruntime() else [("auto", "openvino")])
    for asked, opened in pairs:
        result = subprocess.run([sys.executable, "-m", "runtime.predict", str(tiny_bundle), str(image), "--point",
                                 "200,150", "--backend", asked, "--out", str(tmp_path / "o.png")],
                                cwd=REPO, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"backend: {opened} ("), result.stdout


def _gpu_onnxruntime() -> bool:
    """What the CLI's own process sees (this test's patch does not reach it)."""
    return subprocess.run([sys.executable, "-c", "from runtime.backends.choice import onnxruntime_cuda as c; "
                           "raise SystemExit(c())"], cwd=REPO).returncode == 1
