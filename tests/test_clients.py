"""The tools people already use, run for real on samedge bundles: samexporter 0.5.0,
AnyLabeling 0.4.43 (scripts/clients-requirements.txt) and the official ONNX notebook's recipe.

Their 1024-px contract is exercised by a tiny architecture at 1024 px (a 64 x 64 embedding
grid, 256-px mask_input, as vit_b; 32 channels instead of 256, which the clients pass
through unread): the same files and feeds as a vit_b bundle in seconds instead of minutes,
dense and Birkhoff-coded. The full-size vit_b bundle goes through the same encoder_preprocess
code path in tests/test_parity.py's vit_b run (its parity row).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from PIL import Image

from compress import ARCHITECTURES, build_sam, save_checkpoint
from compress.recipe import parse_recipe
from export.build import build_bundle
from runtime import Session
from runtime.bundle import (ANYLABELING_CONFIG_FILE, MANIFEST, PREPROCESS_ENCODER_FILE, WEIGHTS_FILE, BundleError,
                            BundleWarning)
from runtime.transforms import preprocess, resize_longest_side


TINY_1024 = ARCHITECTURES["tiny"].replace(name="tiny-1024", img_size=1024, patch_size=16, window_size=14)
POINT = (400, 300)


@pytest.fixture(scope="module", params=["dense", "birkhoff"])
def bundle_1024(request, tmp_path_factory):
    work = tmp_path_factory.mktemp("tiny-1024")
    checkpoint = work / "tiny-1024.safetensors"
    save_checkpoint(build_sam(TINY_1024, seed=5), checkpoint)  # its mask at POINT: one region, 90 % of the photo
    recipe = parse_recipe("birkhoff") if request.param == "birkhoff" else None
    out = work / f"tiny-1024-{request.param}-cpu"
    build_bundle(out, "cpu", checkpoint, run_parity=False, recipe=recipe)
    return out


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    """A 684 x 1024 photograph: AnyLabeling's letterbox frame exactly, so its warp is the identity."""
    from skimage import data

    path = tmp_path_factory.mktemp("photo") / "astronaut.png"
    Image.fromarray(data.astronaut()).resize((1024, 684), Image.BILINEAR).save(path)
    return path


def _session_masks(source, image) -> np.ndarray:
    """All four of decoder.onnx's masks for POINT: [4, H, W] (SAM's single-mask answer first), on
    ONNX Runtime, which the clients run: the same pixels to the bit."""
    session = Session(source, backend="onnxruntime")
    session.set_image(image)
    single, multiple = (session.predict(points=[POINT], labels=[1], multimask_output=m).masks for m in (False, True))
    return np.concatenate([single, multiple])


def _assert_same_masks(theirs: np.ndarray, ours: np.ndarray, bundle) -> None:
    """Identical for a dense bundle. A Birkhoff one: the clients' plain onnxruntime decodes the
    codes in the graph's own function bodies, Session in numpy, so a logit can differ in its
    last bits; a pixel whose logit is that close to 0 may then flip."""
    if "birkhoff" not in bundle.name:
        np.testing.assert_array_equal(theirs, ours)
        return
    for a, b in zip(theirs, ours):
        assert (a & b).sum() / max((a | b).sum(), 1) > 0.9999 and (a != b).sum() <= 16


def test_the_preprocess_encoder_gives_encoder_onnx_embedding(tiny_bundle):
    size = json.loads((tiny_bundle / MANIFEST).read_text())["preprocessing"]
    rng = np.random.default_rng(0)
    for level in (ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        encoder, preprocessing = (ort.InferenceSession(str(tiny_bundle / name), options,
                                                       providers=["CPUExecutionProvider"])
                                  for name in ("encoder.onnx", PREPROCESS_ENCODER_FILE))
        for hw in ((40, 56), (64, 64), (64, 20), (7, 64)):
            image = rng.integers(0, 256, (*hw, 3), dtype=np.uint8)
            pixels = preprocess(image, size["img_size"], size["pixel_mean"], size["pixel_std"])
            resized = resize_longest_side(image, size["img_size"]).astype(np.float32)
            np.testing.assert_array_equal(encoder.run(None, {"image": pixels})[0],
                                          preprocessing.run(None, {"input_image": resized})[0])
        # Larger than the model's frame, even by less than a patch (8 px): refused, never cropped.
        for hw in ((65, 64), (64, 72)):
            with pytest.raises(Exception, match="Reshape"):
                preprocessing.run(None, {"input_image": np.zeros((*hw, 3), np.float32)})


def test_session_runs_either_encoder_alike(tiny_bundle):
    image = np.random.default_rng(1).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    # Bit for bit on ONNX Runtime (docs/formats.md); tests/test_openvino.py compares OpenVINO's.
    by_bundle = Session(tiny_bundle, backend="onnxruntime")
    by_preprocess = Session(tiny_bundle / PREPROCESS_ENCODER_FILE, backend="onnxruntime")
    assert by_bundle.bundle.encoder.name == "encoder.onnx"
    assert by_preprocess.backend.takes_resized_image and by_preprocess.img_size == 64
    for session in (by_bundle, by_preprocess):
        session.set_image(image)
    for prompt in ({"points": [[20, 15]], "labels": [1]}, {"box": [5, 4, 40, 30], "multimask_output": False}):
        ours, theirs = by_bundle.predict(**prompt), by_preprocess.predict(**prompt)
        np.testing.assert_array_equal(ours.masks, theirs.masks)
        np.testing.assert_array_equal(ours.low_res_logits, theirs.low_res_logits)


def test_a_lone_preprocess_encoder_names_what_it_lacks(tiny_bundle, tmp_path):
    """It says its size itself (runtime/provenance.py); one that does not is refused."""
    (tmp_path / "encoder.onnx").write_bytes((tiny_bundle / PREPROCESS_ENCODER_FILE).read_bytes())
    (tmp_path / "decoder.onnx").write_bytes((tiny_bundle / "decoder.onnx").read_bytes())
    (tmp_path / WEIGHTS_FILE).write_bytes((tiny_bundle / WEIGHTS_FILE).read_bytes())  # what both graphs point into
    with Session(tmp_path / "encoder.onnx", backend="onnxruntime") as lone, \
            Session(tiny_bundle, backend="onnxruntime") as bundled:
        image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
        np.testing.assert_array_equal(lone.predict(image, points=[[30, 20]], labels=[1]).low_res_logits,
                                      bundled.predict(image, points=[[30, 20]], labels=[1]).low_res_logits)
    model = onnx.load(str(tmp_path / "encoder.onnx"))
    del model.metadata_props[:]
    onnx.save(model, str(tmp_path / "encoder.onnx"))
    with pytest.warns(BundleWarning), pytest.raises(BundleError, match="resized .H, W, 3. image.*open it inside its bundle"):
        Session(tmp_path / "encoder.onnx")


def test_other_sizes_get_no_anylabeling_config_and_say_why(tiny_bundle):
    clients = json.loads((tiny_bundle / MANIFEST).read_text())["clients"]
    assert clients["preprocess_encoder"] == PREPROCESS_ENCODER_FILE and clients["anylabeling_config"] is None
    assert "assume 1024-px models with 256-px mask inputs; this one takes 64 px" in clients["note"]
    assert not (tiny_bundle / ANYLABELING_CONFIG_FILE).exists()


def test_samexporter_cli_draws_the_session_mask(bundle_1024, photo, tmp_path):
    """samexporter's own entry point, on either encoder; it writes only its overlay, so the mask
    is read back from it: pixels blended with blue (BGR 255, 0, 0) at 50 %."""
    pytest.importorskip("samexporter.inference", reason="samexporter: bash scripts/setup.sh installs it")
    prompt = tmp_path / "prompt.json"
    prompt.write_text(json.dumps([{"type": "point", "data": list(POINT), "label": 1}]))
    image = np.asarray(Image.open(photo).convert("RGB"))
    expected = _session_masks(bundle_1024, image).any(axis=0)  # samexporter draws their union
    bgr = image[..., ::-1]
    blended = (bgr.astype(np.float32) * 0.5 + np.array([255, 0, 0], np.uint8) * 0.5).astype(np.uint8)
    away_from_marker = np.hypot(*np.mgrid[:684, :1024][::-1] - np.array(POINT)[:, None, None]) > 12
    for encoder in ("encoder.onnx", PREPROCESS_ENCODER_FILE):
        out = tmp_path / f"{encoder}.png"
        run = subprocess.run([sys.executable, "-m", "samexporter.inference", "--encoder_model",
                              str(bundle_1024 / encoder), "--decoder_model", str(bundle_1024 / "decoder.onnx"),
                              "--image", str(photo), "--prompt", str(prompt), "--output", str(out),
                              "--providers", "cpu"], cwd=tmp_path, capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        drawn = np.asarray(Image.open(out))[..., ::-1]  # back to BGR
        masked = np.all(drawn == blended, axis=-1) & np.any(blended != bgr, axis=-1)
        assert expected[away_from_marker].any()
        # samexporter upscales low_res_masks with OpenCV, Session as segment_anything does:
        # the two differ on a few boundary pixels only.
        iou = (masked & expected & away_from_marker).sum() / ((masked | expected) & away_from_marker).sum()
        assert iou > 0.98, (encoder, iou)


def test_anylabeling_loads_the_bundle_config_and_returns_the_session_mask(bundle_1024, photo, monkeypatch):
    # AnyLabeling turns Pillow's decompression-bomb guard off for the whole process on import
    # (label_file.py); restored after the test, which runtime.images' own tests rely on.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)
    pytest.importorskip("anylabeling", reason="AnyLabeling: bash scripts/setup.sh installs it")
    yaml = pytest.importorskip("yaml")
    QImage = pytest.importorskip("PyQt6.QtGui", reason="Qt's libraries (libEGL, libGL)").QImage
    from anylabeling.services.auto_labeling.segment_anything import SegmentAnything

    config_path = bundle_1024 / ANYLABELING_CONFIG_FILE
    config = yaml.safe_load(config_path.read_text())
    config["config_file"] = str(config_path)  # what its "Load Custom Model" adds
    model = SegmentAnything(config, on_message=lambda message: None)
    image = np.asarray(Image.open(photo).convert("RGB"))
    marks = [{"type": "point", "data": list(POINT), "label": 1}]
    logits = model.model.predict_masks(model.model.encode(image), marks)  # errors surface here, unlike below
    _assert_same_masks(logits[0] > 0.0, _session_masks(bundle_1024, image), bundle_1024)
    assert (logits[0, 0] > 0.0).any()  # AnyLabeling draws this one
    model.set_auto_labeling_marks(marks)
    shapes = model.predict_shapes(QImage(str(photo)), str(photo)).shapes
    assert shapes and all(shape.shape_type == "polygon" and len(shape.points) >= 3 for shape in shapes)


def test_the_official_notebook_recipe_gives_the_session_mask(bundle_1024, photo):
    """segment_anything's ONNX example: its own preprocessing (ResizeLongestSide, the pixel
    statistics, zero padding) into encoder.onnx, its feeds into decoder.onnx, plain onnxruntime."""
    from segment_anything.utils.transforms import ResizeLongestSide

    image = np.asarray(Image.open(photo).convert("RGB"))
    transform = ResizeLongestSide(1024)
    resized = transform.apply_image(image).astype(np.float32)
    mean, std = np.array([123.675, 116.28, 103.53], np.float32), np.array([58.395, 57.12, 57.375], np.float32)
    pixels = np.zeros((1, 3, 1024, 1024), np.float32)
    pixels[0, :, :resized.shape[0], :resized.shape[1]] = ((resized - mean) / std).transpose(2, 0, 1)
    encoder, decoder = (ort.InferenceSession(str(bundle_1024 / name), providers=["CPUExecutionProvider"])
                        for name in ("encoder.onnx", "decoder.onnx"))
    embedding = encoder.run(None, {encoder.get_inputs()[0].name: pixels})[0]
    coords = np.array([[POINT, (0.0, 0.0)]], np.float32)
    masks, _, _ = decoder.run(None, {
        "image_embeddings": embedding,
        "point_coords": transform.apply_coords(coords, image.shape[:2]).astype(np.float32),
        "point_labels": np.array([[1, -1]], np.float32),
        "mask_input": np.zeros((1, 1, 256, 256), np.float32),
        "has_mask_input": np.zeros(1, np.float32),
        "orig_im_size": np.array(image.shape[:2], np.float32)})
    _assert_same_masks(masks[0] > 0.0, _session_masks(bundle_1024, image), bundle_1024)


def test_the_anylabeling_config_points_at_the_bundle_files(bundle_1024):
    yaml = pytest.importorskip("yaml")
    config = yaml.safe_load((bundle_1024 / ANYLABELING_CONFIG_FILE).read_text())
    assert config["type"] == "segment_anything" and config["name"] == f"samedge-{bundle_1024.name}"
    assert (config["encoder_model_path"], config["decoder_model_path"]) == (PREPROCESS_ENCODER_FILE, "decoder.onnx")
    assert {"input_size", "max_width", "max_height", "display_name"} <= set(config)
    manifest = json.loads((bundle_1024 / MANIFEST).read_text())
    assert manifest["clients"]["anylabeling_config"] == ANYLABELING_CONFIG_FILE and "note" not in manifest["clients"]
    # Hashed like every model file; config.yaml is not (AnyLabeling users edit its names).
    assert PREPROCESS_ENCODER_FILE in manifest["files"] and ANYLABELING_CONFIG_FILE not in manifest["files"]
