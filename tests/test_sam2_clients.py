"""samexporter 0.5.0's SAM2 path and AnyLabeling 0.4.43's SAM 2 model (scripts/clients-requirements.txt),
run for real on samedge SAM 2.1 bundles (export/clients.py), next to samedge's Session.

Both clients read the model's size S from encoder.onnx and size mask_input from it, so they take a
bundle of any size: hiera-t at 256 px carries most checks, and the real 1024-px architecture runs
the clients' Python APIs once (marked slow: it builds in ~25 s and encodes in seconds).

What differs from Session, measured on seeded weights and a 684 x 1024 photograph:
- decoder.onnx fed Session's features gives Session's low-res logits and scores bit for bit, and
  cv2's upscaling of them matches Session's to 1e-6 (the same half-pixel bilinear rule);
- the encoders' inputs differ: the clients stretch the uint8 image to S x S with cv2 (bilinear,
  no antialiasing, rounded to uint8), Session as sam2 does (antialiased, in float). Given the image
  cv2 resized, Session gives the clients' features to 2e-6: the resize is the whole difference.
  Shrinking 1024 x 684 to 256 px it moves the low-res logits by up to 0.06 (mask IoU 0.989);
  stretching it to 1024 px (no antialiasing at play) by up to 0.004 (IoU 0.9988);
- AnyLabeling swaps red and blue before the encoder (its SAM 2 code converts BGR to RGB, written
  for samexporter's cv2.imread, but AnyLabeling hands it RGB): its masks are Session's for the
  colour-swapped photo (IoU 0.99; 0.87 against the photo's own at 256 px).
"""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from compress import seeded_checkpoint
from compress.families import config_for
from export.build import build_bundle
from export.clients import write_client_files
from runtime import Session
from runtime.bundle import ANYLABELING_CONFIG_FILE, MANIFEST, PREPROCESS_ENCODER_FILE

POINTS = ((400, 300), (800, 600))  # on the astronaut and on her suit, in the 684 x 1024 photo
# sam2's (and the clients') ImageNet statistics on 0..1 floats.
IMAGENET_MEAN, IMAGENET_STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
# Bounds a little outside what was measured (module docstring), per model size: the clients' cv2
# resize against sam2's antialiased one. At 256 px the photo shrinks 4x, where antialiasing counts.
CLOSE = {256: SimpleNamespace(iou=0.98, max_logit=0.15, mean_logit=0.01),
         1024: SimpleNamespace(iou=0.995, max_logit=0.01, mean_logit=0.001)}


def _build(tmp_path_factory, model_type: str):
    work = tmp_path_factory.mktemp(model_type)
    out = work / f"{model_type}-cpu"
    build_bundle(out, "cpu", seeded_checkpoint(model_type, work), run_parity=False)
    return out


@pytest.fixture(scope="module")
def bundle_256(sam2_bundle):
    return sam2_bundle


@pytest.fixture(scope="module")
def bundle_1024(tmp_path_factory):
    return _build(tmp_path_factory, "sam2.1_hiera_t")


@pytest.fixture(scope="module", params=[256, pytest.param(1024, marks=pytest.mark.slow)])
def bundle(request):
    """Either size; the 1024-px bundle is built only when a test asks for it."""
    return request.getfixturevalue(f"bundle_{request.param}")


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    """A 684 x 1024 photograph (not square: the clients and Session stretch it to S x S)."""
    from skimage import data

    path = tmp_path_factory.mktemp("photo") / "astronaut.png"
    Image.fromarray(data.astronaut()).resize((1024, 684), Image.BILINEAR).save(path)
    return path


@pytest.fixture(scope="module")
def rgb(photo):
    return np.asarray(Image.open(photo).convert("RGB"))


class Encodings:
    """Each (bundle, image) encoded once per module: Hiera-t at 1024 px takes seconds per image."""

    def __init__(self):
        self._done = {}

    def session(self, bundle, image: np.ndarray, key: str) -> Session:
        """A Session (ONNX Runtime, as the clients run) with `image` set; `key` names the image."""
        return self._once((bundle, "session", key), lambda: _session_with(bundle, image))

    def samexporter(self, bundle, rgb: np.ndarray):
        """samexporter's SAM2 model and its embedding of the photo, handed over as cv2.imread gives it (BGR)."""
        from samexporter.sam2_onnx import SegmentAnything2ONNX

        def encode():
            model = SegmentAnything2ONNX(str(bundle / "encoder.onnx"), str(bundle / "decoder.onnx"), providers="cpu")
            return model, model.encode(np.ascontiguousarray(rgb[..., ::-1]))
        return self._once((bundle, "samexporter"), encode)

    def _once(self, key, compute):
        if key not in self._done:
            self._done[key] = compute()
        return self._done[key]


def _session_with(bundle, image: np.ndarray) -> Session:
    session = Session(bundle, backend="onnxruntime")
    session.set_image(image)
    return session


@pytest.fixture(scope="module")
def encodings():
    return Encodings()


def _marks(point) -> list[dict]:
    """A positive point as both clients take prompts."""
    return [{"type": "point", "data": list(point), "label": 1}]


def _best(prediction) -> np.ndarray:
    """The multimask answer both clients draw: the best-scored of the three."""
    return prediction.masks[int(np.argmax(prediction.scores))]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def _samexporter_low_res(model, features: dict, point, image_hw):
    """samexporter's own decoder call for one point on `features`: raw low-res logits [3, L, L], scores [3]."""
    decoder = model.decoder
    decoder.set_image_size(image_hw)
    feeds = decoder.prepare_inputs(features["image_embed"], features["high_res_feats_0"],
                                   features["high_res_feats_1"], np.array([point], np.float32),
                                   np.array([1], np.float32))
    masks, scores = decoder.infer(feeds)
    return masks[0], scores[0]


def _samexporter_features(embedding: dict) -> dict:
    """samexporter's embedding dict under the encoder's output names."""
    return {"image_embed": embedding["image_embedding"], "high_res_feats_0": embedding["high_res_feats_0"],
            "high_res_feats_1": embedding["high_res_feats_1"]}


def test_samexporter_decoder_gives_session_logits_for_session_features(bundle_256, rgb, encodings):
    """decoder.onnx is samexporter's decoder: its prompt scaling and feeds, on Session's features,
    give Session's low-res logits and scores (0.0 apart measured); its cv2 upscaling, Session's masks."""
    pytest.importorskip("samexporter.sam2_onnx", reason="samexporter: bash scripts/setup.sh installs it")
    import cv2

    session = encodings.session(bundle_256, rgb, "rgb")
    model, _ = encodings.samexporter(bundle_256, rgb)
    for point in POINTS:
        ours = session.predict(points=[point], labels=[1])
        logits, scores = _samexporter_low_res(model, session.image_features, point, rgb.shape[:2])
        np.testing.assert_allclose(logits, ours.low_res_logits, atol=1e-5)
        np.testing.assert_allclose(scores, ours.scores, atol=1e-6)
        best = int(np.argmax(scores))
        upscaled = cv2.resize(logits[best], (rgb.shape[1], rgb.shape[0]))  # samexporter's process_output
        assert (upscaled > 0).mean() > 0.05 and _iou(upscaled > 0, _best(ours)) > 0.9999


def test_samexporter_encoder_differs_from_session_only_by_its_resize(bundle_256, rgb, encodings):
    """Session handed the image cv2 stretched (its own resize is then the identity) gives samexporter's
    features to float32 rounding: the cv2 resize is all that parts them."""
    pytest.importorskip("samexporter.sam2_onnx", reason="samexporter: bash scripts/setup.sh installs it")
    import cv2

    model, embedding = encodings.samexporter(bundle_256, rgb)
    size = model.encoder.input_width
    stretched = cv2.resize(rgb, (size, size))  # as samexporter's prepare_input, before it normalises
    features = encodings.session(bundle_256, stretched, "cv2-stretched").image_features
    for name, theirs in _samexporter_features(embedding).items():
        np.testing.assert_allclose(theirs, features[name], atol=1e-5, err_msg=name)


def test_samexporter_api_gives_session_masks(bundle, rgb, encodings):
    """SegmentAnything2ONNX end to end (its resize, normalisation, prompt scaling, decoder, cv2
    upscaling) against Session on the photo: low-res logits and the drawn mask."""
    pytest.importorskip("samexporter.sam2_onnx", reason="samexporter: bash scripts/setup.sh installs it")
    session = encodings.session(bundle, rgb, "rgb")
    model, embedding = encodings.samexporter(bundle, rgb)
    close = CLOSE[session.img_size]
    for point in POINTS:
        ours = session.predict(points=[point], labels=[1])
        logits, scores = _samexporter_low_res(model, _samexporter_features(embedding), point, rgb.shape[:2])
        difference = np.abs(logits - ours.low_res_logits)
        assert difference.max() < close.max_logit and difference.mean() < close.mean_logit, (point, difference.max())
        assert np.argmax(scores) == np.argmax(ours.scores)
        drawn = model.predict_masks(embedding, _marks(point))  # [1, 1, H, W] logits of the best mask
        assert drawn.shape == (1, 1, *rgb.shape[:2])
        assert _iou(drawn[0, 0] > 0, _best(ours)) > close.iou, point


def test_samexporter_cli_draws_the_session_mask(bundle_256, photo, rgb, encodings, tmp_path):
    """`python -m samexporter.inference --sam_variant sam2` on the bundle's two files, as its manifest
    says; it writes only its overlay, so the mask is read back from it: pixels blended 50 % with
    blue (BGR 255, 0, 0), away from its point marker (a disc of radius 10)."""
    pytest.importorskip("samexporter.inference", reason="samexporter: bash scripts/setup.sh installs it")
    point = POINTS[0]
    prompt = tmp_path / "prompt.json"
    prompt.write_text(json.dumps(_marks(point)))
    out = tmp_path / "drawn.png"
    run = subprocess.run([sys.executable, "-m", "samexporter.inference", "--sam_variant", "sam2",
                          "--encoder_model", str(bundle_256 / "encoder.onnx"),
                          "--decoder_model", str(bundle_256 / "decoder.onnx"), "--image", str(photo),
                          "--prompt", str(prompt), "--output", str(out), "--providers", "cpu"],
                         cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    bgr = rgb[..., ::-1]
    blended = (bgr.astype(np.float32) * 0.5 + np.array([255, 0, 0], np.uint8) * 0.5).astype(np.uint8)
    drawn = np.asarray(Image.open(out))[..., ::-1]  # back to BGR
    masked = np.all(drawn == blended, axis=-1) & np.any(blended != bgr, axis=-1)
    rows, columns = np.mgrid[:rgb.shape[0], :rgb.shape[1]]
    away_from_marker = np.hypot(columns - point[0], rows - point[1]) > 12
    expected = _best(encodings.session(bundle_256, rgb, "rgb").predict(points=[point], labels=[1]))
    assert expected[away_from_marker].any()
    assert _iou(masked & away_from_marker, expected & away_from_marker) > CLOSE[256].iou


def test_anylabeling_opens_the_bundle_config_on_its_sam2_path(bundle, photo, rgb, encodings, monkeypatch):
    """config.yaml loaded unchanged; AnyLabeling's image as it reads it, its SAM 2 model, its cache
    and predict_shapes. Its masks are Session's for the colour-swapped photo (module docstring)."""
    # AnyLabeling turns Pillow's decompression-bomb guard off for the whole process on import
    # (label_file.py); restored after the test, which runtime.images' own tests rely on.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)
    pytest.importorskip("anylabeling", reason="AnyLabeling: bash scripts/setup.sh installs it")
    yaml = pytest.importorskip("yaml")
    QImage = pytest.importorskip("PyQt6.QtGui", reason="Qt's libraries (libEGL, libGL)").QImage
    from anylabeling.services.auto_labeling.sam2_onnx import SegmentAnything2ONNX
    from anylabeling.services.auto_labeling.segment_anything import SegmentAnything
    from anylabeling.views.labeling.utils.opencv import qt_img_to_rgb_cv_img

    config_path = bundle / ANYLABELING_CONFIG_FILE
    config = yaml.safe_load(config_path.read_text())
    config["config_file"] = str(config_path)  # what its "Load Custom Model" adds
    model = SegmentAnything(config, on_message=lambda message: None)
    assert isinstance(model.model, SegmentAnything2ONNX)  # picked from decoder.onnx's high_res_feats_0
    image = qt_img_to_rgb_cv_img(QImage(str(photo)), str(photo))  # what predict_shapes encodes
    np.testing.assert_array_equal(image, rgb)
    _assert_fed_blue_as_red(model.model.encoder, image)
    embedding = model.model.encode(image)
    swapped = encodings.session(bundle, np.ascontiguousarray(rgb[..., ::-1]), "colour-swapped")
    own = encodings.session(bundle, rgb, "rgb")
    close = CLOSE[swapped.img_size]
    for point in POINTS:
        mask = model.model.predict_masks(embedding, _marks(point))[0, 0] > 0
        as_swapped = _iou(mask, _best(swapped.predict(points=[point], labels=[1])))
        as_photo = _iou(mask, _best(own.predict(points=[point], labels=[1])))
        assert as_swapped > close.iou and as_swapped > as_photo, (point, as_swapped, as_photo)
    # Its labelling path proper: the cached embedding (as when the user comes back to the image)
    # through predict_shapes to polygons.
    model.image_embedding_cache.put(str(photo), embedding)
    model.set_auto_labeling_marks(_marks(POINTS[0]))
    shapes = model.predict_shapes(QImage(str(photo)), str(photo)).shapes
    assert shapes and all(shape.shape_type == "polygon" and len(shape.points) >= 3 for shape in shapes)


def _assert_fed_blue_as_red(encoder, rgb: np.ndarray) -> None:
    """AnyLabeling's encoder input: channel 0 (red's statistics) holds the photo's blue channel."""
    import cv2

    tensor = encoder.prepare_input(rgb)  # [1, 3, S, S]
    stretched = cv2.resize(rgb, (encoder.input_width, encoder.input_height)) / 255.0
    np.testing.assert_allclose(tensor[0], ((stretched[..., ::-1] - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1),
                               atol=1e-5)


def test_the_manifest_describes_the_clients_files(bundle):
    yaml = pytest.importorskip("yaml")
    manifest = json.loads((bundle / MANIFEST).read_text())
    clients, size = manifest["clients"], manifest["preprocessing"]["img_size"]
    assert clients["anylabeling_config"] == ANYLABELING_CONFIG_FILE
    assert clients["encoder"].startswith("encoder.onnx: samexporter's SAM 2 encoder")
    assert f"[1, 3, {size}, {size}]" in clients["encoder"]
    assert clients["decoder"].startswith("decoder.onnx: samexporter's SAM 2 decoder")
    assert "--sam_variant sam2 --encoder_model encoder.onnx --decoder_model decoder.onnx" in clients["samexporter"]
    assert "swaps red and blue" in clients["note"] and clients["tensorrt"].startswith("none:")
    # No preprocess encoder: both clients feed encoder.onnx and normalise themselves.
    assert "preprocess_encoder" not in clients and not (bundle / PREPROCESS_ENCODER_FILE).exists()
    config = yaml.safe_load((bundle / ANYLABELING_CONFIG_FILE).read_text())
    assert config == {"type": "segment_anything", "name": f"samedge-{bundle.name}",
                      "display_name": f"samedge {bundle.name}", "encoder_model_path": "encoder.onnx",
                      "decoder_model_path": "decoder.onnx", "input_size": size, "max_width": size, "max_height": size}
    # Hashed like every model file; config.yaml is not (AnyLabeling users edit its names).
    assert ANYLABELING_CONFIG_FILE not in manifest["files"]


def test_client_formats_come_from_the_family(tmp_path, monkeypatch):
    """A family with no clients' format gets no client files; one naming a format export/clients.py
    does not write is refused with the way out."""
    from compress.architectures import SamConfig
    from compress.families.sam import SamFamily

    config = SamConfig.from_dict(config_for("tiny").to_dict())
    monkeypatch.setattr(SamFamily, "client_format", None)
    assert write_client_files(tmp_path, "x", config) is None and not any(tmp_path.iterdir())
    monkeypatch.setattr(SamFamily, "client_format", "sam3")
    with pytest.raises(ValueError, match=r"format 'sam3'.*\['sam', 'sam2'\].*--no-clients"):
        write_client_files(tmp_path, "x", config)
