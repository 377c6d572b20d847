"""SAM-HQ as a model family: official layouts recognised, pieces against segment_anything_hq's own
SamPredictor, Session, parity (and its failure on a wrong piece), Birkhoff, the TensorRT inputs, int8.

The model is the real architecture small (compress/families/sam_hq.py's sam_hq_test: 256 px, 4 ViT blocks),
with seeded weights perturbed after building; comparisons are of logits relative to their largest, scores
and features, not only of masks.
"""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from skimage import data

import compress.families.sam_hq  # noqa: F401 (registers the family)
from compress import CheckpointError, load_checkpoint, seeded_checkpoint
from compress.families import get_family
from compress.families.sam_hq import OFFICIAL, SAM_HQ, ImageEncoderPiece
from compress.recipe import parse_recipe
from export.build import build_bundle
from runtime import Session
from runtime.everything import MaskGenerator
from runtime.everything_parity import compare_records
from runtime.parity import WEAK_LOGIT_SETTINGS, Thresholds, compare, run_parity
from runtime.reference import parity_shapes, reference_records

MODEL_TYPE = "sam_hq_test"
RELATIVE = 1e-4  # of the reference's largest |logit| (or feature): float32 graphs differ by about 1e-6 here
SCORE = 1e-4


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return seeded_checkpoint(MODEL_TYPE, tmp_path_factory.mktemp(MODEL_TYPE))


@pytest.fixture(scope="module")
def model(checkpoint):
    return load_checkpoint(checkpoint)


@pytest.fixture(scope="module")
def bundle(checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundles") / f"{MODEL_TYPE}-cpu"
    build_bundle(out, "cpu", checkpoint, run_parity=False)
    return out


@pytest.fixture(scope="module")
def photo():
    return data.astronaut()[::2, ::3].copy()  # 256 x 171: not square, so a swapped axis shows


@pytest.fixture(scope="module")
def reference(model, photo):
    predictor = SAM_HQ.reference(model)
    predictor.set_image(photo)
    return predictor


@pytest.fixture(scope="module")
def session(bundle, photo):
    with Session(bundle, backend="onnxruntime") as session:
        session.set_image(photo)
        yield session


def _relative(ours: np.ndarray, theirs: np.ndarray) -> float:
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


def _device(model_type: str) -> torch.device:
    """Meta tensors (shapes only: vit_h's 2.5 GB are not needed to read its layout), but for TinyViT, whose
    constructor reads a tensor's value (10 M parameters: built for real)."""
    return torch.device("cpu" if model_type.endswith("tiny") else "meta")


def _upstream_state(model_type: str) -> dict:
    """The state dict layout of segment_anything_hq's own builder for `model_type` (vit_b, ..., vit_tiny)."""
    from segment_anything_hq import sam_model_registry

    with _device(model_type):
        return sam_model_registry[model_type]().state_dict()


@pytest.mark.parametrize("upstream, ours", [("vit_b", "sam_hq_vit_b"), ("vit_l", "sam_hq_vit_l"),
                                            ("vit_h", "sam_hq_vit_h"), ("vit_tiny", "sam_hq_vit_tiny")])
def test_official_layouts_are_recognised_by_their_shapes(upstream, ours):
    state = _upstream_state(upstream)
    assert SAM_HQ.detect(state) == OFFICIAL[ours]
    other = "sam_hq_vit_l" if ours != "sam_hq_vit_l" else "sam_hq_vit_b"
    with pytest.raises(CheckpointError, match=f"holds a {ours} model, but model type {other}"):
        SAM_HQ.detect(state, other)
    # Our builder gives the same tensors, so official files load strictly.
    with _device(ours):
        built = SAM_HQ.build(OFFICIAL[ours]).state_dict()
    assert {k: tuple(v.shape) for k, v in built.items()} == {k: tuple(v.shape) for k, v in state.items()}


def test_sam_1_leaves_sam_hq_files_to_their_family():
    """Families are asked in registration order, SAM 1 first: its ViT key is in an HQ file too."""
    assert get_family("sam").detect(_upstream_state("vit_b")) is None


def test_a_sam_1_state_dict_is_not_sam_hqs():
    from segment_anything import sam_model_registry

    with torch.device("meta"):
        state = sam_model_registry["vit_b"]().state_dict()
    assert SAM_HQ.detect(state) is None


def test_an_official_pth_loads_and_a_wrong_type_is_refused(model, tmp_path):
    path = tmp_path / "sam_hq_small.pth"
    torch.save(model.state_dict(), path)  # the official files' layout: a plain state dict
    loaded = load_checkpoint(path, MODEL_TYPE)
    assert loaded.config.name == MODEL_TYPE
    assert torch.equal(loaded.mask_decoder.hf_token.weight, model.mask_decoder.hf_token.weight)
    with pytest.raises(CheckpointError, match="matches none of"):
        load_checkpoint(path)  # not an official size, and the file cannot say which
    with pytest.raises(CheckpointError, match="holds a sam_hq_test model, but model type sam_hq_vit_b"):
        load_checkpoint(seeded_checkpoint(MODEL_TYPE, tmp_path), "sam_hq_vit_b")


def test_seeded_weights_are_perturbed_and_seeded(model):
    decoder = model.mask_decoder
    assert not torch.all(model.image_encoder.blocks[0].norm1.weight == 1)  # LayerNorms start at 1
    assert model.image_encoder.blocks[1].attn.rel_pos_h.abs().min() > 0  # the tables start at zero
    again = SAM_HQ.seeded(MODEL_TYPE, seed=0)
    assert torch.equal(again.mask_decoder.hf_token.weight, decoder.hf_token.weight)
    other = SAM_HQ.build(model.config, seed=1)
    assert not torch.equal(other.mask_decoder.hf_token.weight, decoder.hf_token.weight)


def test_the_encoder_gives_the_predictors_features(session, reference):
    predictor = reference.predictor
    features = session.image_features
    assert features["interm_embeddings"].shape == (1, 1, 16, 16, 192)
    assert _relative(features["image_embeddings"], predictor.features.numpy()) < RELATIVE
    # The first global block's output (block 1 of 4), which MaskDecoderHQ reads.
    assert _relative(features["interm_embeddings"][0], predictor.interm_features[0].numpy()) < RELATIVE


PROMPTS = {
    "one point": dict(points=[[60, 110]], labels=[1]),
    "one point, single mask": dict(points=[[60, 110]], labels=[1], multimask_output=False),
    "fg + bg points": dict(points=[[60, 110], [150, 30]], labels=[1, 0]),
    "box": dict(box=[30, 40, 140, 200], multimask_output=False),
    "box + point": dict(box=[30, 40, 140, 200], points=[[80, 120]], labels=[1]),
}


@pytest.mark.parametrize("prompt", PROMPTS.values(), ids=PROMPTS.keys())
def test_session_answers_as_sam_hqs_predictor(session, reference, prompt):
    masks, scores, logits = reference.predict(**prompt)
    ours = session.predict(**prompt)
    assert ours.masks.shape == masks.shape == (1, 256, 171)  # SAM-HQ answers multimask with its best mask alone
    assert _relative(ours.low_res_logits, logits) < RELATIVE
    assert np.abs(ours.scores - scores).max() < SCORE
    assert (ours.masks != masks).mean() < 1e-3  # pixels exactly at the threshold may differ


def test_mask_input_and_batches_answer_as_the_predictor(session, reference):
    _, _, previous = reference.predict(points=[[60, 110]], labels=[1])
    masks, scores, logits = reference.predict(points=[[60, 110]], labels=[1], mask_input=previous,
                                              multimask_output=False)
    ours = session.predict(points=[[60, 110]], labels=[1], mask_input=previous, multimask_output=False)
    assert _relative(ours.low_res_logits, logits) < RELATIVE and np.abs(ours.scores - scores).max() < SCORE
    points = [[[40, 50]], [[100, 200]], [[150, 120]]]
    batch = session.predict_batch(points=points, labels=[[1]] * 3)
    assert batch.scores.shape == (3, 1) and batch.masks.shape == (3, 1, 256, 171)
    for n, point in enumerate(points):
        _, scores, logits = reference.predict(points=point, labels=[1])
        assert _relative(batch.low_res_logits[n], logits) < RELATIVE
        assert np.abs(batch.scores[n] - scores).max() < SCORE


def test_the_clients_decoder_is_sam_hqs_own_onnx_decoder(bundle, session, reference, photo):
    """decoder.onnx: SAM-HQ's export (single mask, SAM's mask 0 + the HQ mask) on the encoder's features, with
    its own input names; the official prompt format (box corners labelled 2 and 3, a padding point)."""
    decoder = ort.InferenceSession(str(bundle / "decoder.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in decoder.get_inputs()][:2] == ["image_embeddings", "interm_embeddings"]
    scale = 256 / max(photo.shape[:2])
    features = session.image_features
    masks, scores, low_res = decoder.run(None, {
        "image_embeddings": features["image_embeddings"], "interm_embeddings": features["interm_embeddings"],
        "point_coords": np.array([[[60 * scale, 110 * scale], [0, 0]]], np.float32),
        "point_labels": np.array([[1, -1]], np.float32), "mask_input": np.zeros((1, 1, 64, 64), np.float32),
        "has_mask_input": np.zeros(1, np.float32), "orig_im_size": np.array(photo.shape[:2], np.float32)})
    ref_masks, ref_scores, ref_logits = reference.predict(points=[[60, 110]], labels=[1], multimask_output=False)
    assert masks.shape == (1, 1, 256, 171)
    assert _relative(low_res[0], ref_logits) < RELATIVE and np.abs(scores[0] - ref_scores).max() < SCORE
    assert ((masks[0] > 0) != ref_masks).mean() < 1e-3


def test_openvino_answers_as_onnx_runtime(bundle, session, photo):
    with Session(bundle, backend="openvino") as other:
        theirs = other.predict(photo, points=[[60, 110]], labels=[1])
    ours = session.predict(points=[[60, 110]], labels=[1])
    assert _relative(theirs.low_res_logits, ours.low_res_logits) < 1e-3


def test_the_manifest_records_the_features_and_the_output_choice(bundle):
    manifest = json.loads((bundle / "manifest.json").read_text())
    decoder = manifest["decoder"]
    assert manifest["model"]["family"] == "sam_hq"
    assert decoder["features"] == ["interm_embeddings", "image_embeddings"]
    assert decoder["hq_token_only"] is False and decoder["multimask"] == "best" and not decoder["official"]


def test_parity_passes_and_fails_on_the_wrong_encoder_feature(bundle, checkpoint, model, photo, tmp_path,
                                                              monkeypatch):
    """The build's check against SamPredictor, and the same cases on a bundle whose encoder hands the
    decoder the last global block's output instead of the first (both [g, g, D]: only the answers tell)."""
    images = {"astronaut": photo}
    report = run_parity(bundle, images=images, show_progress=False, everything=False)
    assert report["passed"], report["worst"]
    assert report["worst"]["max_relative_logit_diff"] < RELATIVE and report["batch"]["passed"]

    def last_global_block(self, image):
        embeddings, interm = self.encoder(image)
        return embeddings, interm[-1].unsqueeze(0)

    monkeypatch.setattr(ImageEncoderPiece, "forward", last_global_block)
    build_bundle(tmp_path / "broken", "cpu", checkpoint, run_parity=False)
    monkeypatch.undo()
    with Session(tmp_path / "broken", backend="onnxruntime") as broken:
        cases = compare(broken, model, images, Thresholds())
    assert not any(case.passed for case in cases)
    assert min(case.max_relative_logit_diff for case in cases) > 100 * RELATIVE


def test_segment_everything_gives_sam_hqs_records(session, model):
    """runtime.everything against SAM-HQ's SamAutomaticMaskGenerator (one mask per point: its best), on a
    small grid with thresholds that keep a seeded model's masks (runtime.parity's WEAK_LOGIT_SETTINGS)."""
    image = parity_shapes(1)["shapes-0"][::2, ::2].copy()
    settings = {**WEAK_LOGIT_SETTINGS, "points_per_side": 4}
    reference = reference_records(model, image, **settings)
    with session.keeping_image():
        ours = MaskGenerator(session, **settings, show_progress=False).generate(image)
    agreement = compare_records(ours, reference, settings["pred_iou_thresh"], settings["stability_score_thresh"])
    assert reference and agreement.passed, agreement
    assert agreement.count == agreement.reference_count


def test_birkhoff_compresses_and_passes_parity(photo, model, tmp_path, checkpoint):
    build_bundle(tmp_path / "b", "cpu", checkpoint, recipe=parse_recipe("birkhoff"), run_parity=False)
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["compression"]["method"] == "birkhoff" and manifest["model"]["samedge_nodes"]
    compressed = load_checkpoint(tmp_path / "b" / manifest["model"]["checkpoint"])  # parity's reference
    with Session(tmp_path / "b", backend="onnxruntime") as session:
        cases = compare(session, compressed, {"astronaut": photo}, Thresholds())
        dense = compare(session, model, {"astronaut": photo}, Thresholds())
    assert all(case.passed for case in cases), cases
    # The codes change the answers: against the dense model the same bundle is further off.
    assert max(case.max_relative_logit_diff for case in dense) > 10 * max(case.max_relative_logit_diff
                                                                          for case in cases)


def test_slimsam_is_refused_with_the_reason(checkpoint, tmp_path):
    with pytest.raises(ValueError, match="SlimSAM's recipes prune and distil SAM 1"):
        build_bundle(tmp_path / "b", "cpu", checkpoint, run_parity=False,
                     recipe=parse_recipe("slimsam-50", images=[np.zeros((8, 8, 3), np.uint8)] * 3))
    assert not (tmp_path / "b").exists()


def test_tensorrt_inputs_take_both_features(bundle, model, session, tmp_path):
    """tensorrt/ (no TensorRT here: its ONNX files, run with ONNX Runtime): the fp16 encoder gives both
    features within fp16 rounding, the decoder is the bundle's batch decoder with static feature inputs."""
    from export.tensorrt_build import profile_shapes
    from export.tensorrt_onnx import export_tensorrt_inputs

    paths = export_tensorrt_inputs(model, tmp_path, encoder_onnx=bundle / "encoder.onnx",
                                   decoder_onnx=bundle / "decoder_batch.onnx", keep_functions=True)
    decoder = ort.InferenceSession(str(paths["decoder.onnx"]), providers=["CPUExecutionProvider"])
    shapes = {i.name: i.shape for i in decoder.get_inputs()}
    assert shapes["interm_embeddings"] == [1, 1, 16, 16, 192] and shapes["image_embeddings"] == [1, 128, 16, 16]
    assert set(profile_shapes("decoder.onnx", 64)) == {"point_coords", "point_labels", "mask_input", "has_mask_input"}
    encoder = ort.InferenceSession(str(paths["encoder.onnx"]), providers=["CPUExecutionProvider"])
    pixels = np.random.default_rng(0).standard_normal((1, 3, 256, 256)).astype(np.float32)
    half = dict(zip([o.name for o in encoder.get_outputs()], encoder.run(None, {"image": pixels})))
    full = session.backend.encode(pixels)
    for name in ("image_embeddings", "interm_embeddings"):
        assert _relative(half[name].astype(np.float32), full[name]) < 0.02, name


def test_int8_quantised_bundle_answers_close(bundle, session, tmp_path):
    from export.quantize import quantize_bundle

    out = quantize_bundle(bundle, tmp_path / "int8", "int8")
    with Session(out, backend="onnxruntime") as quantised:
        answer = quantised.predict(data.astronaut()[::2, ::3].copy(), points=[[60, 110]], labels=[1])
    ours = session.predict(points=[[60, 110]], labels=[1])
    assert answer.masks.shape == ours.masks.shape
    assert _relative(answer.low_res_logits, ours.low_res_logits) < 0.3  # int8 weights: close, not equal
