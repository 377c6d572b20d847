"""SAM 2.1 as a model family: checkpoints, pieces against sam2's own code, Session, parity, compression.

Seeded weights are perturbed after building (compress/families/sam2.py: sam2's get_clones starts every
memory-attention layer equal), and a seeded SAM 2's logits are small (about 0.1): the comparisons are of
logits relative to their largest, scores and features, not only of masks.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from skimage import data

from compress import CheckpointError, load_checkpoint
from compress.families import config_for, family_of_type, get_family
from compress.families.sam2 import BatchDecoderPiece
from compress.recipe import parse_recipe
from export.build import build_bundle
from runtime import Session
from runtime.geometry import Square
from runtime.parity import Thresholds, run_parity

RELATIVE = 1e-4  # of the reference's largest |logit|: float32 graphs differ by about 1e-6 here


@pytest.fixture(scope="module")
def sam2_model(sam2_checkpoint):
    return load_checkpoint(sam2_checkpoint)


@pytest.fixture(scope="module")
def photo():
    return data.astronaut()[::2, ::3].copy()  # 256 x 171: not square, so a swapped axis shows


@pytest.fixture(scope="module")
def reference(sam2_model, photo):
    predictor = get_family("sam2").reference(sam2_model)
    predictor.set_image(photo)
    return predictor


def _relative(ours: np.ndarray, theirs: np.ndarray) -> float:
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


def test_seeded_weights_are_perturbed_apart(sam2_model):
    layers = sam2_model.memory_attention.layers
    first, second = (layer.self_attn.q_proj.weight for layer in layers[:2])
    assert not torch.equal(first, second)  # get_clones made them equal; perturb made them differ
    weight = sam2_model.image_encoder.trunk.blocks[0].norm1.weight
    assert not torch.all(weight == 1)  # LayerNorms start at 1


def test_the_encoder_gives_the_image_predictors_features(sam2_bundle, reference, photo):
    session = Session(sam2_bundle, backend="onnxruntime")
    session.set_image(photo)
    features = session.image_features
    theirs = reference.predictor._features
    for name, expected in zip(("high_res_feats_0", "high_res_feats_1", "image_embed"),
                              [*theirs["high_res_feats"], theirs["image_embed"]]):
        assert _relative(features[name], expected.numpy()) < RELATIVE, name
    assert session.image_embedding is features["image_embed"]


@pytest.mark.parametrize("prompt", [
    {"points": [[60, 100]], "labels": [1]},
    {"points": [[60, 100], [150, 200]], "labels": [1, 0], "multimask_output": False},
    {"box": [20, 40, 140, 220], "multimask_output": False},
    {"box": [20, 40, 140, 220], "points": [[80, 120]], "labels": [1]},  # sam2 puts the box first
], ids=["point", "two points single", "box", "box + point"])
def test_session_answers_as_sam2_image_predictor(sam2_bundle, reference, photo, prompt):
    with Session(sam2_bundle, backend="onnxruntime") as session:
        session.set_image(photo)
        ours = session.predict(**prompt)
    masks, scores, logits = reference.predict(**prompt)
    assert ours.low_res_logits.shape == logits.shape and ours.masks.shape == masks.shape
    assert _relative(ours.low_res_logits, logits) < RELATIVE
    np.testing.assert_allclose(ours.scores, scores, atol=1e-4)
    assert (ours.masks != masks).mean() < 1e-3  # pixels at a logit of ~0 may flip


def test_mask_input_and_batches_answer_as_the_image_predictor(sam2_bundle, reference, photo):
    _, scores, logits = reference.predict(points=[[60, 100]], labels=[1])
    previous = logits[np.argmax(scores)][None]
    with Session(sam2_bundle) as session:
        session.set_image(photo)
        refined = session.predict(points=[[60, 100]], labels=[1], mask_input=previous, multimask_output=False)
        batch = session.predict_batch(points=[[[60, 100]], [[120, 30]]], labels=[[1], [1]])
    _, _, expected = reference.predict(points=[[60, 100]], labels=[1], mask_input=previous, multimask_output=False)
    assert _relative(refined.low_res_logits, expected) < RELATIVE
    _, _, second = reference.predict(points=[[120, 30]], labels=[1])
    assert _relative(batch.low_res_logits[1], second) < RELATIVE


def test_openvino_answers_as_onnx_runtime(sam2_bundle, photo):
    pytest.importorskip("openvino")
    answers = []
    for backend in ("onnxruntime", "openvino"):
        with Session(sam2_bundle, backend=backend) as session:
            answers.append(session.predict(photo, points=[[60, 100]], labels=[1]))
    assert _relative(answers[1].low_res_logits, answers[0].low_res_logits) < 1e-3
    np.testing.assert_allclose(answers[1].scores, answers[0].scores, atol=1e-3)


def test_the_manifest_names_the_family_and_its_pieces(sam2_bundle):
    manifest = json.loads((sam2_bundle / "manifest.json").read_text())
    assert manifest["model"]["family"] == "sam2" and manifest["model"]["architecture"]["family"] == "sam2"
    assert manifest["preprocessing"]["resize_rule"] == "square"
    assert manifest["decoder"]["prompt_layout"] == "sam2" and manifest["decoder"]["official"] is False
    for name in ("encoder.onnx", "decoder.onnx", "decoder_batch.onnx", "memory_encoder.onnx",
                 "memory_attention.onnx"):
        assert name in manifest["files"], name


def test_parity_passes_and_fails_on_a_swapped_axis(sam2_bundle, photo, monkeypatch):
    """The build's check against SAM2ImagePredictor, and the same check with the prompts' x and y
    scaled alike (a square-image habit): only a non-square image shows it, and parity must."""
    images = {"astronaut": photo}
    report = run_parity(sam2_bundle, images=images, show_progress=False, everything=False)
    assert report["passed"], report["worst"]
    assert report["worst"]["max_relative_logit_diff"] < RELATIVE
    # and the build's short tracking check against SAM2VideoPredictor (runtime/video_parity.py)
    assert report["video"]["passed"] and report["video"]["frames"] == 8 and report["video"]["objects"] == [1, 2]
    square_coords = Square.coords
    width_only = staticmethod(lambda coords, hw, size: square_coords(coords, (hw[1], hw[1]), size))
    monkeypatch.setattr("runtime.geometry.Square.coords", width_only)
    broken = run_parity(sam2_bundle, images=images, show_progress=False, everything=False, video=False)
    assert not broken["passed"]


def test_parity_fails_without_sam2s_dynamic_single_mask(sam2_checkpoint, photo, tmp_path, monkeypatch):
    """A batch decoder that answers multimask_output=False with mask 0 alone, as SAM 1 does, is wrong
    for SAM 2 wherever sam2 falls back to the most stable multimask mask."""
    def mask_zero_only(self, *inputs):
        masks, scores, mask_tokens, object_scores = self.decode(*inputs)
        return scores, masks, object_scores, self.model.obj_ptr_proj(mask_tokens)

    monkeypatch.setattr(BatchDecoderPiece, "forward", mask_zero_only)
    build_bundle(tmp_path / "b", "cpu", sam2_checkpoint, run_parity=False)
    monkeypatch.undo()
    report = run_parity(tmp_path / "b", images={"astronaut": photo}, show_progress=False, everything=False,
                        thresholds=Thresholds(), video=False)
    failed = {case["prompt"] for case in report["cases"] if not case["passed"]}
    assert failed and all("single mask" in name or "box" in name or "mask input" in name for name in failed)


def test_official_checkpoints_are_recognised_by_their_shapes(tmp_path):
    model = family_of_type("sam2.1_hiera_t").build(config_for("sam2.1_hiera_t"))
    path = tmp_path / "sam2.1_hiera_tiny.pt"
    torch.save({"model": model.state_dict()}, path)  # the official files' layout
    assert load_checkpoint(path).config.name == "sam2.1_hiera_t"
    with pytest.raises(CheckpointError, match="holds a sam2.1_hiera_t model, but model type sam2.1_hiera_s"):
        load_checkpoint(path, "sam2.1_hiera_s")
    state = model.state_dict()
    del state["no_obj_embed_spatial"]  # what SAM 2.1 added: without it, a SAM 2 (2.0) file
    torch.save({"model": state}, path)
    with pytest.raises(CheckpointError, match="sam2_hiera_t"):
        load_checkpoint(path, "sam2.1_hiera_t")


def test_slimsam_recipes_are_taken_and_others_refused():
    family = get_family("sam2")
    assert family.refusal("slimsam-50") is None and family.refusal("slimsam-77") is None  # compress/slimsam/hiera.py
    assert "not available for sam2" in family.refusal("made-up")


def test_perturb_is_seeded():
    first, second = (get_family("sam2").seeded("sam2.1_hiera_t_256", seed=3) for _ in range(2))
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name
    other = get_family("sam2").build(config_for("sam2.1_hiera_t_256"), seed=4)
    assert not torch.equal(other.no_mem_embed, first.no_mem_embed)


def test_birkhoff_compresses_hiera_and_passes_parity(sam2_checkpoint, tmp_path):
    """HyperLinear in Hiera's, the memory attention's and the decoder's linear layers; parity against
    SAM2ImagePredictor on the compressed weights (the build's own check)."""
    build_bundle(tmp_path / "b", "cpu", sam2_checkpoint, recipe=parse_recipe("birkhoff"), run_parity=False)
    report = run_parity(tmp_path / "b", images={"astronaut": data.astronaut()}, show_progress=False,
                        everything=False)  # the build's check, on one photo (the rest: test_build.py's)
    assert report["passed"], report["worst"]
    assert report["video"]["passed"]  # and it tracks as SAM2VideoPredictor on the decoded weights
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["compression"]["ratio"] > 4.5 and manifest["model"]["samedge_nodes"]
    with Session(tmp_path / "b", backend="openvino") as session:  # decodes the samedge nodes itself
        answer = session.predict(data.astronaut(), points=[[200, 150]], labels=[1])
    assert answer.masks.shape == (3, 512, 512)


def test_tensorrt_inputs_answer_as_the_bundle_within_fp16(sam2_checkpoint, photo, tmp_path):
    """tensorrt/ of a jetson bundle (no TensorRT here: its ONNX files, checked with ONNX Runtime): the
    fp16 encoder within fp16 rounding of encoder.onnx, the decoder the bundle's batch decoder."""
    import onnxruntime as ort

    build_bundle(tmp_path / "j", "jetson", sam2_checkpoint, run_parity=False)
    folder = tmp_path / "j" / "tensorrt"
    assert (folder / "build_engines.sh").is_file()
    pixels = Square.pixels(photo, 256, (123.675, 116.28, 103.53), (58.395, 57.12, 57.375))
    fp32 = ort.InferenceSession(str(tmp_path / "j" / "encoder.onnx")).run(None, {"image": pixels})
    fp16 = ort.InferenceSession(str(folder / "encoder.onnx")).run(None, {"image": pixels})
    for full, half in zip(fp32, fp16):
        assert _relative(half, full) < 5e-3
    decoder = ort.InferenceSession(str(folder / "decoder.onnx"))
    assert [i.name for i in decoder.get_inputs()] == ["image_embed", "high_res_feats_0", "high_res_feats_1",
                                                     "point_coords", "point_labels", "mask_input", "has_mask_input"]
    assert [o.name for o in decoder.get_outputs()][:2] == ["iou_predictions", "low_res_masks"]


@pytest.mark.parametrize("extra", [{"use_m2m": True}, {"multimask_output": False, "mask_threshold": 0.02}],
                         ids=["m2m", "single mask, threshold"])  # the defaults: every build's parity
def test_segment_everything_gives_sam2s_records(sam2_bundle, sam2_model, extra):
    """MaskGenerator with SAM2AutomaticMaskGenerator's own parameters, against it (settings that keep
    masks of a seeded SAM 2's weak logits: runtime.parity's WEAK_LOGIT_SETTINGS)."""
    from runtime.everything import MaskGenerator
    from runtime.everything_parity import compare_records
    from runtime.parity import WEAK_LOGIT_SETTINGS
    from runtime.reference import parity_shapes, reference_records

    image = parity_shapes(1)["shapes-0"]
    settings = {**WEAK_LOGIT_SETTINGS, "points_per_side": 8, **extra}
    reference = reference_records(sam2_model, image, **settings)
    with Session(sam2_bundle) as session:
        ours = MaskGenerator(session, **settings, show_progress=False).generate(image)
    agreement = compare_records(ours, reference, settings["pred_iou_thresh"], settings["stability_score_thresh"])
    assert reference and agreement.passed, agreement
