"""EfficientViT-SAM as a model family: official layouts, pre-processing, bundles against upstream's predictor.

The test architecture is the L backbone at a quarter of L0's widths at 256 px (compress/families/
efficientvit_sam.py); SAM's decoder stays full width, so a prompt costs what it costs vit_b's. Seeded
weights are perturbed after building, BatchNorm's running statistics included (every norm starts as
the identity), and the comparisons are of logits relative to their largest, scores and embeddings.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from skimage import data

import compress.families.efficientvit_sam  # noqa: F401 (registers the family)
from compress import CheckpointError, load_checkpoint, seeded_checkpoint
from compress.families import config_for, get_family
from compress.families.efficientvit_sam import OFFICIAL, PROMPT_FRAME, build_efficientvit_sam_model
from compress.recipe import parse_recipe
from export.build import build_bundle
from runtime import Session
from runtime.geometry import LongestSide, geometry
from runtime.parity import Thresholds, compare, mask_iou

MODEL_TYPE = "efficientvit_sam_test"
RELATIVE = 1e-4  # of the reference's largest |logit|: the float32 graphs differ by about 3e-6 here
FAMILY = get_family("efficientvit_sam")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("efficientvit_sam")


@pytest.fixture(scope="module")
def checkpoint(folder):
    return seeded_checkpoint(MODEL_TYPE, folder)


@pytest.fixture(scope="module")
def model(checkpoint):
    return load_checkpoint(checkpoint)


@pytest.fixture(scope="module")
def bundle(checkpoint, folder):
    """A jetson bundle: the ONNX Runtime files, and tensorrt/ (no TensorRT here: files and build script)."""
    build_bundle(folder / "bundle", "jetson", checkpoint, run_parity=False)
    return folder / "bundle"


@pytest.fixture(scope="module")
def photo():
    return data.astronaut()[::2, ::3].copy()  # 256 x 171: not square, so a swapped axis or a wrong crop shows


@pytest.fixture(scope="module")
def reference(model, photo):
    predictor = FAMILY.reference(model)
    predictor.set_image(photo)
    return predictor


def _relative(ours: np.ndarray, theirs: np.ndarray) -> float:
    return float(np.abs(np.asarray(ours) - np.asarray(theirs)).max() / np.abs(theirs).max())


def _upstream_state(model_type: str) -> dict:
    """Upstream's own builder's state dict for an official size, as its released files hold it (int64
    step counters included), on the meta device: shapes without the memory."""
    from efficientsam.models.efficientvit import sam as upstream

    with torch.device("meta"):
        return getattr(upstream, model_type)().state_dict()


def test_official_sizes_are_upstreams_builders():
    """Each official config builds, tensor for tensor, what efficientvit_sam_l0 ... xl1 build."""
    parameters = {}
    for model_type, config in OFFICIAL.items():
        with torch.device("meta"):
            ours = build_efficientvit_sam_model(config)
        theirs = _upstream_state(model_type)
        # BatchNorm's step counters are float32 [1] here (compress/families/batch_norm.py), 0-d int64 upstream.
        assert {k: v.shape if v.ndim else (1,) for k, v in theirs.items()} == \
            {k: v.shape for k, v in ours.state_dict().items()}
        parameters[model_type] = round(sum(p.numel() for p in ours.parameters()) / 1e6, 1)
    # the paper's table: 34.8M, 47.7M, 61.3M, 117.0M, 203.3M
    assert list(parameters.values()) == [34.8, 47.7, 61.3, 117.0, 203.3]
    assert [config.img_size for config in OFFICIAL.values()] == [512, 512, 512, 1024, 1024]


def test_official_layouts_are_recognised_by_their_shapes():
    for model_type in OFFICIAL:
        assert FAMILY.detect(_upstream_state(model_type)) == config_for(model_type)
    with pytest.raises(CheckpointError, match="holds an efficientvit_sam_l1 model, but model type "
                                              "efficientvit_sam_l0 was asked for; pass --model-type efficientvit_sam_l1"):
        FAMILY.detect(_upstream_state("efficientvit_sam_l1"), "efficientvit_sam_l0")
    state = _upstream_state("efficientvit_sam_xl0")
    for key in [key for key in state if key.startswith("image_encoder.neck.middle.op_list.5.")]:
        del state[key]  # one neck block fewer: no released size
    with pytest.raises(CheckpointError, match=r"neck 5 blocks of 256 matches none of \['efficientvit_sam_l0'"):
        FAMILY.detect(state)
    assert FAMILY.detect({"image_encoder.patch_embed.proj.weight": torch.zeros(768, 3, 16, 16)}) is None  # SAM's


def test_a_checkpoint_in_upstreams_layout_loads(model, tmp_path):
    """A torch.save'd state dict as upstream's model gives it (0-d int64 BatchNorm step counters): read
    with weights_only, architecture from the shapes and the named type, the same weights."""
    upstream_style = {key: value.reshape(()).long() if key.endswith("num_batches_tracked") else value
                      for key, value in model.state_dict().items()}
    path = tmp_path / "efficientvit_sam_test.pt"
    torch.save(upstream_style, path)
    loaded = load_checkpoint(path, MODEL_TYPE)
    assert loaded.config == model.config
    for (name, ours), theirs in zip(loaded.state_dict().items(), model.state_dict().values()):
        assert torch.equal(ours, theirs), name
    with pytest.raises(CheckpointError, match="widths \\[8, 16, 32, 64, 128\\].* matches none of"):
        load_checkpoint(path)  # no released size: the architecture must be named


def test_seeded_weights_are_perturbed_norms_and_statistics_too(model):
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(not torch.all(m.running_var == 1) and not torch.all(m.running_mean == 0)
                         and not torch.all(m.weight == 1) for m in norms)
    assert all(m.eps == 1e-6 for m in norms)  # upstream's model zoo sets it; no state dict stores it
    again = FAMILY.seeded(MODEL_TYPE, seed=0)
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name
    statistics = "image_encoder.neck.middle.op_list.0.main.point_conv.norm.running_var"
    assert not torch.equal(FAMILY.seeded(MODEL_TYPE, seed=1).state_dict()[statistics], model.state_dict()[statistics])


@pytest.mark.parametrize("hw", [(171, 256), (300, 200), (256, 97), (33, 517), (1000, 30)])
def test_the_resize_rule_is_upstreams(model, hw):
    """runtime/geometry.py's longest_side_prompts_1024 against EfficientViTSamPredictor: the pixels at
    the encoder's 256 px, the prompts and the mask crop in the 1024-px frame."""
    rule = geometry(FAMILY.manifest(model.config)["preprocessing"]["resize_rule"])
    image = np.random.default_rng(list(hw)).integers(0, 256, (*hw, 3), dtype=np.uint8)
    size, config = model.config.img_size, model.config
    pixels = rule.pixels(image, size, config.pixel_mean, config.pixel_std)
    upstream_pixels = model.transform(image).numpy()[None]  # upstream's resize, ToTensor, normalise, pad
    assert pixels.shape == upstream_pixels.shape == (1, 3, size, size)
    assert np.abs(pixels - upstream_pixels).max() < 1e-5  # Pillow's bilinear both; float rounding only

    from efficientsam.models.efficientvit.sam import EfficientViTSamPredictor

    predictor = EfficientViTSamPredictor(model)
    predictor.set_image(image)
    coords = np.array([[0.0, 0.0], [hw[1] / 3, hw[0] / 2], [hw[1], hw[0]]])
    assert np.abs(rule.coords(coords, hw, size) - predictor.apply_coords(coords)).max() < 1e-3
    assert np.abs(LongestSide.coords(coords, hw, size) - predictor.apply_coords(coords)).max() > 10  # SAM's rule
    low_res = np.random.default_rng(1).normal(size=(1, 2, 256, 256)).astype(np.float32)
    upstream_masks = model.postprocess_masks(torch.from_numpy(low_res), predictor.input_size,
                                             predictor.original_size).numpy()
    assert _relative(rule.upscale(low_res, size, hw), upstream_masks) < 1e-5


@pytest.fixture(scope="module")
def session(bundle, photo):
    with Session(bundle, backend="onnxruntime") as opened:
        opened.set_image(photo)
        yield opened


def test_the_embedding_is_upstreams(session, bundle, reference, photo):
    theirs = reference.predictor.features.numpy()
    assert session.image_embedding.shape == theirs.shape == (1, 256, 64, 64)
    assert _relative(session.image_embedding, theirs) < 1e-5
    # and the clients' encoder (export/clients.py), which takes the resized image
    with Session(bundle / "encoder_preprocess.onnx", backend="onnxruntime") as clients:
        clients.set_image(photo)
        assert _relative(clients.image_embedding, theirs) < 1e-5


PROMPTS = {  # the photo is 171 wide, 256 high
    "point": dict(points=[[80, 120]], labels=[1]),
    "fg + bg, single mask": dict(points=[[80, 120], [150, 30]], labels=[1, 0], multimask_output=False),
    "box + point": dict(box=[30, 40, 160, 200], points=[[80, 120]], labels=[1]),
}


def _assert_same(ours, theirs):
    masks, scores, low_res = theirs
    assert ours.masks.shape == masks.shape and ours.low_res_logits.shape == low_res.shape
    assert _relative(ours.low_res_logits, low_res) < RELATIVE
    assert np.abs(ours.scores - scores).max() < 1e-4
    assert min(mask_iou(a, b) for a, b in zip(ours.masks, masks)) > 0.99


@pytest.mark.parametrize("prompt", PROMPTS.values(), ids=PROMPTS.keys())
def test_session_answers_as_efficientvit_sam_predictor(session, reference, prompt):
    theirs = reference.predict(**prompt)
    _assert_same(session.predict(**prompt), theirs)
    # a previous answer as mask input, in the official decoder's 256 x 256 low-res frame
    previous = theirs[2][np.argmax(theirs[1])][None]
    _assert_same(session.predict(**prompt, mask_input=previous), reference.predict(**prompt, mask_input=previous))


def test_the_manifest_names_the_family_rule_and_pieces(bundle):
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["model"]["family"] == "efficientvit_sam"
    assert manifest["preprocessing"]["resize_rule"] == "longest_side_prompts_1024"
    assert manifest["preprocessing"]["img_size"] == 256 and PROMPT_FRAME == 1024
    assert {"encoder.onnx", "decoder.onnx", "decoder_single.onnx", "decoder_batch.onnx",
            "encoder_preprocess.onnx"} <= set(manifest["files"])
    assert "assume 1024-px models" in manifest["clients"]["note"]  # AnyLabeling's letterbox is 1024 px
    assert manifest["tensorrt"]["status"] == "pending" and (bundle / "tensorrt" / "build_engines.sh").is_file()


def test_parity_fails_on_a_broken_piece(session, model, reference, photo, monkeypatch):
    """runtime.parity's comparison against a reference with one BatchNorm's statistics off must fail,
    and so must prompts scaled to the encoder's 256 px instead of the decoder's 1024 px (SAM 1's rule)."""
    state = {name: tensor.clone() for name, tensor in model.state_dict().items()}  # the module's own otherwise
    state["image_encoder.neck.middle.op_list.0.main.point_conv.norm.running_var"] *= 1.5
    broken = FAMILY.build(model.config)
    broken.load_state_dict(state)
    assert not all(case.passed for case in compare(session, broken, {"photo": photo}, Thresholds()))
    monkeypatch.setattr("runtime.geometry.LongestSidePrompts1024.PROMPT_FRAME", model.config.img_size)
    with pytest.raises(AssertionError):
        _assert_same(session.predict(**PROMPTS["point"]), reference.predict(**PROMPTS["point"]))


def test_segment_everything_gives_upstreams_records(session, model):
    from runtime.everything import MaskGenerator
    from runtime.everything_parity import compare_records
    from runtime.parity import WEAK_LOGIT_SETTINGS
    from runtime.reference import parity_shapes, reference_records

    image = parity_shapes(1)["shapes-0"]
    settings = {**WEAK_LOGIT_SETTINGS, "points_per_side": 4}
    reference = reference_records(model, image, **settings)
    with session.keeping_image():
        ours = MaskGenerator(session, **settings, show_progress=False).generate(image)
    agreement = compare_records(ours, reference, settings["pred_iou_thresh"], settings["stability_score_thresh"])
    assert reference and agreement.passed, agreement


def test_tensorrt_inputs_take_no_dynamic_control_flow(bundle, photo, model):
    """tensorrt/ of the jetson bundle (checked with ONNX Runtime): no If / Loop nodes (TensorRT's fp16
    conversion cannot pass them), the fp16 encoder within fp16 rounding of encoder.onnx (LiteMLA's
    ReLU linear attention included), the decoder the batch decoder."""
    import onnxruntime as ort

    folder = bundle / "tensorrt"
    for name in ("encoder.onnx", "decoder.onnx"):
        graph = onnx.load(str(folder / name), load_external_data=False).graph
        assert not {node.op_type for node in graph.node} & {"If", "Loop", "OneHot", "NonZero"}, name
    config = model.config
    pixels = geometry("longest_side_prompts_1024").pixels(photo, config.img_size, config.pixel_mean, config.pixel_std)
    (full,) = ort.InferenceSession(str(bundle / "encoder.onnx")).run(None, {"image": pixels})
    (half,) = ort.InferenceSession(str(folder / "encoder.onnx")).run(None, {"image": pixels})
    assert _relative(half, full) < 1e-2
    decoder = ort.InferenceSession(str(folder / "decoder.onnx"))
    assert [o.name for o in decoder.get_outputs()] == ["iou_predictions", "low_res_masks"]


def test_birkhoff_compresses_and_answers_as_upstream_on_its_weights(checkpoint, session, photo, tmp_path):
    """HyperLinear in the decoder's linear layers, the encoder's convolutions decoded at load (HyperTensor
    nodes); the bundle against EfficientViTSamPredictor on the compressed checkpoint parity reads."""
    build_bundle(tmp_path / "b", "cpu", checkpoint, recipe=parse_recipe("birkhoff"), run_parity=False,
                 with_clients=False)
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["model"]["samedge_nodes"] and manifest["compression"]["ratio"] > 3
    reference = FAMILY.reference(load_checkpoint(tmp_path / "b" / manifest["model"]["checkpoint"]))
    reference.set_image(photo)
    with Session(tmp_path / "b", backend="onnxruntime") as compressed:
        compressed.set_image(photo)
        _assert_same(compressed.predict(**PROMPTS["box + point"]), reference.predict(**PROMPTS["box + point"]))
        # decoded weights: near the dense model's, not equal to them
        assert 1e-4 < _relative(compressed.image_embedding, session.image_embedding) < 0.5


def test_int8_quantized_bundle_runs(bundle, photo, tmp_path):
    from export.quantize import quantize_bundle

    quantized = quantize_bundle(bundle, tmp_path / "int8", "int8")
    with Session(quantized, backend="onnxruntime") as int8, Session(bundle, backend="onnxruntime") as dense:
        answer = int8.predict(photo, **PROMPTS["box + point"])
        dense.set_image(photo)
        assert _relative(int8.image_embedding, dense.image_embedding) < 0.5
    assert answer.masks.shape == (3, *photo.shape[:2]) and np.isfinite(answer.low_res_logits).all()


def test_slimsam_is_refused_with_the_reason(checkpoint, tmp_path):
    with pytest.raises(ValueError, match="SlimSAM prunes SAM 1's ViT encoder; EfficientViT-SAM's encoder"):
        build_bundle(tmp_path / "b", "cpu", checkpoint, run_parity=False,
                     recipe=parse_recipe("slimsam-50", images=[np.zeros((8, 8, 3), np.uint8)] * 3))
    assert not (tmp_path / "b").exists()
