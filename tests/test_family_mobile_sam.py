"""MobileSAM as a model family: the official checkpoint layout, pieces against mobile_sam's own
SamPredictor, Session, parity, Birkhoff, int8, and the clients that open MobileSAM (AnyLabeling,
samexporter: SAM 1's files).

The real TinyViT-5M at 256 px carries the checks (compress/families/mobile_sam.py: mobile_sam_256);
the clients' 1024-px contract runs on a narrow TinyViT at 1024 px (the same files and feeds as the
official model, in a few seconds). Seeded weights are perturbed after building: TinyViT starts its
attention biases at 0 and every MBConv as a no-op, so the comparisons are of embeddings, logits
relative to their largest and scores, not only masks.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

import compress.families.mobile_sam  # noqa: F401 (registers the family)
from compress import CheckpointError, build_sam, load_checkpoint, save_checkpoint, seeded_checkpoint
from compress.families import family_of, get_family
from compress.families.mobile_sam import MODEL_TYPES, MobileSamConfig
from compress.recipe import Birkhoff, parse_recipe
from export.build import build_bundle
from export.quantize import quantize_bundle
from runtime import Session
from runtime.bundle import ANYLABELING_CONFIG_FILE, MANIFEST, PREPROCESS_ENCODER_FILE
from runtime.parity import Thresholds, compare, run_parity

RELATIVE = 1e-4  # of the reference's largest |value|: float32 graphs differ by about 1e-6 here
# The clients' 1024-px frame on a narrow TinyViT (the last stage must be 320 wide: mobile_sam's
# TinyViT keeps the grid in the merge into a 320-wide stage, as in MobileSAM).
NARROW_1024 = MobileSamConfig("mobile_sam-narrow-1024", embed_dims=(16, 32, 32, 320), depths=(1, 1, 1, 1),
                              num_heads=(1, 1, 1, 10))
POINT = (400, 300)  # on the astronaut, in the 684 x 1024 photograph


def _relative(ours: np.ndarray, theirs) -> float:
    theirs = np.asarray(theirs)
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("mobile_sam")


@pytest.fixture(scope="module")
def checkpoint(work):
    return seeded_checkpoint("mobile_sam_256", work)


@pytest.fixture(scope="module")
def model(checkpoint):
    return load_checkpoint(checkpoint)


@pytest.fixture(scope="module")
def bundle(work, checkpoint):
    out = work / "mobile_sam_256-cpu"
    build_bundle(out, "cpu", checkpoint, run_parity=False)
    return out


@pytest.fixture(scope="module")
def photo():
    return data.astronaut()[::2, ::3].copy()  # 256 x 171: not square, so the decoder's crop is at work


@pytest.fixture(scope="module")
def session(bundle, photo):
    with Session(bundle, backend="onnxruntime") as session:
        session.set_image(photo)
        yield session


@pytest.fixture(scope="module")
def reference(model, photo):
    predictor = get_family("mobile_sam").reference(model)  # mobile_sam's SamPredictor
    predictor.set_image(photo)
    return predictor


def test_the_official_layout_is_recognised_by_its_shapes(tmp_path):
    """mobile_sam's own builder (sam_model_registry["vit_t"]) gives the official mobile_sam.pt layout,
    int64 BatchNorm counters included; loaded here, its TinyViT answers as upstream's loaded the way its
    README does (load_state_dict, then .eval() again to rebuild the attention bias tables)."""
    from mobile_sam import sam_model_registry

    upstream = sam_model_registry["vit_t"]()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in upstream.named_parameters():  # biases off 0, BatchNorms off identity
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.1)
    path = tmp_path / "mobile_sam.pt"
    torch.save(upstream.state_dict(), path)
    upstream.eval()

    loaded = load_checkpoint(path)
    assert family_of(loaded.config).name == "mobile_sam" and loaded.config == MODEL_TYPES["mobile_sam"]
    ours = loaded.state_dict()
    for name, tensor in upstream.state_dict().items():  # the BatchNorm counters as float32 [1]
        assert torch.equal(ours[name], tensor.float().reshape(ours[name].shape)), name
    tokens = torch.randn(1, 128 * 128, 128, generator=generator)  # stage 1 at 1024 px: 128 x 128, windows of 7
    with torch.no_grad():
        theirs = upstream.image_encoder.layers[1].blocks[0](tokens)
        ours = loaded.image_encoder.layers[1].blocks[0](tokens)
    torch.testing.assert_close(ours, theirs)
    # The image size is in no tensor: a model type says it.
    assert get_family("mobile_sam").detect(upstream.state_dict(), "mobile_sam_256").img_size == 256
    with pytest.raises(CheckpointError, match="holds a MobileSAM .TinyViT. model, but model type vit_b"):
        load_checkpoint(path, "vit_b")
    with pytest.raises(CheckpointError, match="holds a MobileSAM .TinyViT. model, but model type sam2.1_hiera_t"):
        load_checkpoint(path, "sam2.1_hiera_t")


def test_a_sam_vit_state_dict_stays_sams(tmp_path):
    path = tmp_path / "sam.pth"
    torch.save(build_sam("tiny", seed=0).state_dict(), path)
    assert family_of(load_checkpoint(path, "tiny").config).name == "sam"
    with pytest.raises(ValueError, match="mobile_sam"):
        load_checkpoint(path, "mobile_sam")


def test_other_tiny_vit_widths_and_hq_decoders_are_not_taken(model, tmp_path):
    state = model.state_dict()
    narrow = {name: tensor for name, tensor in state.items() if not name.startswith("image_encoder.layers.3.")}
    torch.save(narrow, tmp_path / "three_stages.pth")
    with pytest.raises(CheckpointError, match="not MobileSAM's TinyViT-5M"):
        load_checkpoint(tmp_path / "three_stages.pth")
    # Light HQ-SAM (segment_anything_hq's vit_tiny): the same TinyViT, SAM-HQ's decoder.
    assert get_family("mobile_sam").detect({**state, "mask_decoder.hf_token.weight": torch.zeros(1, 256)}) is None


def test_seeded_weights_are_perturbed_and_reproducible(model):
    encoder = model.image_encoder
    assert not torch.all(encoder.layers[0].blocks[0].conv3.bn.weight == 0)  # upstream: every MBConv a no-op
    assert not torch.all(encoder.layers[1].blocks[0].attn.attention_biases == 0)
    assert not torch.all(encoder.patch_embed.seq[0].bn.running_var == 1)
    assert not torch.all(model.mask_decoder.transformer.norm_final_attn.weight == 1)
    family = get_family("mobile_sam")
    again = family.seeded("mobile_sam_256", seed=0)  # as the fixture's checkpoint was written
    for (name, a), b in zip(again.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), name
    other = family.seeded("mobile_sam_256", seed=4)
    assert not torch.equal(other.image_encoder.neck[0].weight, again.image_encoder.neck[0].weight)


def test_the_encoder_gives_the_predictors_embedding(session, reference):
    embedding = session.image_embedding
    expected = reference.predictor.features.numpy()
    assert embedding.shape == expected.shape == (1, 256, 16, 16)
    assert _relative(embedding, expected) < RELATIVE


@pytest.mark.parametrize("prompt", [
    {"points": [[60, 100]], "labels": [1]},
    {"points": [[60, 100], [150, 200]], "labels": [1, 0], "multimask_output": False},
    {"box": [20, 40, 140, 220], "multimask_output": False},
    {"box": [20, 40, 140, 220], "points": [[80, 120]], "labels": [1]},
], ids=["point", "two points single", "box", "box + point"])
def test_session_answers_as_mobile_sams_predictor(session, reference, prompt):
    ours = session.predict(**prompt)
    masks, scores, logits = reference.predict(**prompt)
    assert ours.low_res_logits.shape == logits.shape and ours.masks.shape == masks.shape == (len(scores), 256, 171)
    assert _relative(ours.low_res_logits, logits) < RELATIVE
    np.testing.assert_allclose(ours.scores, scores, atol=1e-4)
    assert (ours.masks != masks).mean() < 1e-3  # pixels at a logit of ~0 may flip


def test_parity_passes_and_fails_on_another_attention_bias(bundle, session, model, photo):
    """The build's check against mobile_sam's SamPredictor, and the same comparison against a
    reference whose one window attention bias table differs: TinyViT caches its tables at .eval(),
    so a table read before the weights were loaded would make both sides ignore the weights, and
    this comparison pass."""
    images = {"astronaut": photo}
    report = run_parity(bundle, images=images, show_progress=False, everything=False)
    assert report["passed"], report["worst"]
    assert report["worst"]["max_relative_logit_diff"] < RELATIVE
    assert report["batch"]["passed"] and report["preprocess_encoder"]["passed"]
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.image_encoder.layers[3].blocks[1].attn.attention_biases.mul_(-1.0)
    broken = compare(session, other, images, Thresholds())
    assert not any(case.passed for case in broken)
    assert min(case.max_relative_logit_diff for case in broken) > 10 * Thresholds().max_relative_logit_error


def test_the_manifest_is_sam_1s_with_the_family(bundle):
    manifest = json.loads((bundle / MANIFEST).read_text())
    assert manifest["model"]["family"] == "mobile_sam" and manifest["model"]["architecture"]["img_size"] == 256
    assert manifest["preprocessing"]["resize_rule"] == "longest_side"
    assert manifest["decoder"]["prompt_layout"] == "sam" and manifest["decoder"]["low_res_size"] == 64
    for name in ("encoder.onnx", "decoder.onnx", "decoder_single.onnx", "decoder_batch.onnx", PREPROCESS_ENCODER_FILE):
        assert name in manifest["files"], name
    # 256 px: the clients' 1024-px frame does not fit, and the manifest says so.
    assert manifest["clients"]["anylabeling_config"] is None and "this one takes 256 px" in manifest["clients"]["note"]


def test_slimsam_is_refused_naming_what_works(checkpoint, tmp_path):
    reason = "MobileSAM's is a TinyViT; for MobileSAM use --compress birkhoff"
    with pytest.raises(ValueError, match=reason):
        build_bundle(tmp_path / "b", "cpu", checkpoint, run_parity=False,
                     recipe=parse_recipe("slimsam-50", images=[np.zeros((8, 8, 3), np.uint8)] * 3))
    assert not (tmp_path / "b").exists()
    assert reason in get_family("mobile_sam").refusal("slimsam-77+birkhoff")
    assert get_family("mobile_sam").refusal("birkhoff") is None


def test_birkhoff_compresses_tiny_vit_and_answers_as_the_decoded_model(checkpoint, session, photo, tmp_path):
    """HyperLinear in TinyViT's and the decoder's linear layers, HyperTensor for the convolutions and
    attention biases; Session against mobile_sam's SamPredictor on the decoded weights (the build's
    parity check's reference: a Birkhoff model's torch layers decode on every call, so two prompts here)."""
    out = tmp_path / "birkhoff"
    build_bundle(out, "cpu", checkpoint, recipe=parse_recipe("birkhoff"), run_parity=False, with_clients=False)
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["compression"]["ratio"] > 4 and manifest["model"]["samedge_nodes"]
    reference = get_family("mobile_sam").reference(load_checkpoint(out / Birkhoff.checkpoint_name))
    reference.set_image(photo)
    prompts = [{"points": [[60, 100]], "labels": [1]}, {"box": [20, 40, 140, 220], "multimask_output": False}]
    with Session(out, backend="onnxruntime") as compressed:
        compressed.set_image(photo)
        assert _relative(compressed.image_embedding, reference.predictor.features.numpy()) < RELATIVE
        answers = [compressed.predict(**prompt) for prompt in prompts]
    for ours, prompt in zip(answers, prompts):
        masks, scores, logits = reference.predict(**prompt)
        assert _relative(ours.low_res_logits, logits) < RELATIVE
        np.testing.assert_allclose(ours.scores, scores, atol=1e-4)
    session.set_image(photo)
    dense = session.predict(**prompts[0])
    assert 0 < _relative(answers[0].low_res_logits, dense.low_res_logits) < 0.2  # another model, close to dense


def test_int8_bundle_runs_with_its_clients_encoder(bundle, session, photo, tmp_path):
    out = quantize_bundle(bundle, tmp_path / "int8", "int8")
    weights = json.loads((out / MANIFEST).read_text())["quantization"]["weights"]
    assert 0 < weights["rel_rmse"] < 0.02 and weights["weights_quantized"] > 0
    prompt = {"points": [[60, 100]], "labels": [1]}
    with Session(out, backend="onnxruntime") as quantized:
        ours = quantized.predict(photo, **prompt)
    session.set_image(photo)
    dense = session.predict(**prompt)
    assert ours.masks.shape == dense.masks.shape and 0 < _relative(ours.low_res_logits, dense.low_res_logits) < 0.5
    with Session(out / PREPROCESS_ENCODER_FILE, backend="onnxruntime") as clients_encoder:
        theirs = clients_encoder.predict(photo, **prompt)
    np.testing.assert_array_equal(theirs.low_res_logits, ours.low_res_logits)


@pytest.fixture(scope="module")
def bundle_1024(work):
    checkpoint = work / "narrow-1024.safetensors"
    save_checkpoint(get_family("mobile_sam").build(NARROW_1024, seed=5), checkpoint)
    out = work / "narrow-1024-cpu"
    build_bundle(out, "cpu", checkpoint, run_parity=False)
    return out


@pytest.fixture(scope="module")
def photo_1024(work):
    """A 684 x 1024 photograph: AnyLabeling's letterbox frame exactly, so its warp is the identity."""
    path = work / "astronaut.png"
    Image.fromarray(data.astronaut()).resize((1024, 684), Image.BILINEAR).save(path)
    return path


def _session_masks(bundle, image) -> np.ndarray:
    """decoder.onnx's four masks at POINT, [4, H, W] (the single-mask answer first), on ONNX Runtime."""
    with Session(bundle, backend="onnxruntime") as session:
        session.set_image(image)
        return np.concatenate([session.predict(points=[POINT], labels=[1], multimask_output=multimask).masks
                               for multimask in (False, True)])


def test_anylabeling_and_samexporter_open_the_bundle(bundle_1024, photo_1024, tmp_path, monkeypatch):
    """AnyLabeling's MobileSAM is a SAM 1 model (type segment_anything): its config.yaml and the
    preprocess encoder; samexporter's SAM 1 path on encoder.onnx. Both give Session's masks."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # AnyLabeling turns it off
    pytest.importorskip("anylabeling", reason="AnyLabeling: bash scripts/setup.sh installs it")
    pytest.importorskip("samexporter.inference", reason="samexporter: bash scripts/setup.sh installs it")
    yaml = pytest.importorskip("yaml")
    from anylabeling.services.auto_labeling.segment_anything import SegmentAnything

    clients = json.loads((bundle_1024 / MANIFEST).read_text())["clients"]
    assert clients["anylabeling_config"] == ANYLABELING_CONFIG_FILE
    image = np.asarray(Image.open(photo_1024).convert("RGB"))
    expected = _session_masks(bundle_1024, image)
    assert expected[0].any() and not expected[0].all()

    config = yaml.safe_load((bundle_1024 / ANYLABELING_CONFIG_FILE).read_text())
    config["config_file"] = str(bundle_1024 / ANYLABELING_CONFIG_FILE)  # what its "Load Custom Model" adds
    assert config["encoder_model_path"] == PREPROCESS_ENCODER_FILE
    anylabeling = SegmentAnything(config, on_message=lambda message: None)
    marks = [{"type": "point", "data": list(POINT), "label": 1}]
    logits = anylabeling.model.predict_masks(anylabeling.model.encode(image), marks)
    np.testing.assert_array_equal(logits[0] > 0.0, expected)

    prompt = tmp_path / "prompt.json"
    prompt.write_text(json.dumps(marks))
    out = tmp_path / "samexporter.png"
    run = subprocess.run([sys.executable, "-m", "samexporter.inference", "--encoder_model",
                          str(bundle_1024 / "encoder.onnx"), "--decoder_model", str(bundle_1024 / "decoder.onnx"),
                          "--image", str(photo_1024), "--prompt", str(prompt), "--output", str(out),
                          "--providers", "cpu"], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    # It writes only its overlay: the union of the masks blended with blue (BGR 255, 0, 0) at 50 %.
    bgr = image[..., ::-1]
    blended = (bgr.astype(np.float32) * 0.5 + np.array([255, 0, 0], np.uint8) * 0.5).astype(np.uint8)
    drawn = np.asarray(Image.open(out))[..., ::-1]
    masked = np.all(drawn == blended, axis=-1) & np.any(blended != bgr, axis=-1)
    union = expected.any(axis=0)
    away_from_marker = np.hypot(*np.mgrid[:684, :1024][::-1] - np.array(POINT)[:, None, None]) > 12
    # samexporter upscales the low-res masks with OpenCV, Session as segment_anything: boundary pixels differ.
    iou = (masked & union & away_from_marker).sum() / ((masked | union) & away_from_marker).sum()
    assert iou > 0.98, iou
