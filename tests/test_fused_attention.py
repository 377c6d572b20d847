"""Attention exported fused (one com.microsoft.MultiHeadAttention node) computes what the plain graph computes,
on every installed backend (ONNX Runtime, OpenVINO), for SAM 1's ViT (relative position as the node's bias),
SAM 2's Hiera and its memory attention."""

import collections

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from compress import build_sam
from compress.families import get_family
from compress.families.fused_attention import FUSED, PLAIN, attention_form
from compress.families.sam_pieces import encoder_piece
from export.onnx_export import export_piece

ov = pytest.importorskip("openvino")


def _perturbed(model, scale=0.05):
    """Seeded weights moved off their initial values (cloned layers start identical)."""
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * scale)
    return model.eval()


def _run_ort(path, feeds):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


def _run_openvino(path, feeds):
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    result = compiled(feeds)
    return [result[output] for output in compiled.outputs]


def _op_counts(path):
    return collections.Counter(node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node)


def _both_forms(piece, folder):
    paths = {}
    for form in (PLAIN, FUSED):
        with attention_form(form):
            paths[form] = export_piece(piece, folder / f"{form}-{piece.file}")
    return paths


def _assert_close(got, expected, relative=1e-5):
    for g, e in zip(got, expected, strict=True):
        scale = max(1.0, float(np.abs(e).max()))
        np.testing.assert_allclose(g, e, rtol=0, atol=relative * scale)


@pytest.fixture(scope="module")
def sam1(tmp_path_factory):
    """SAM 1's tiny ViT (block 1 global, with relative positions), both forms of its encoder."""
    model = _perturbed(build_sam("tiny", seed=0))
    piece = encoder_piece(model)
    pixels = torch.randn(piece.example[0].shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = model.image_encoder(pixels).numpy()
    return _both_forms(piece, tmp_path_factory.mktemp("sam1")), {"image": pixels.numpy()}, expected


def test_sam1_global_attention_is_one_node_per_band_with_the_relative_position_as_bias(sam1):
    paths, _, _ = sam1
    fused, plain = _op_counts(paths[FUSED]), _op_counts(paths[PLAIN])
    assert fused["MultiHeadAttention"] == 1  # tiny's global block: 8 x 8 tokens, one band
    assert plain["MultiHeadAttention"] == 0
    assert fused["Softmax"] == plain["Softmax"] - 1  # the windowed block keeps its plain attention
    node = next(n for n in onnx.load(str(paths[FUSED])).graph.node if n.op_type == "MultiHeadAttention")
    assert node.domain == "com.microsoft" and node.input[3] == node.input[4] == "" and node.input[5]
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attributes["num_heads"] == 2 and attributes["scale"] == pytest.approx(16 ** -0.5)


@pytest.mark.parametrize("run", [_run_ort, _run_openvino], ids=["onnxruntime", "openvino"])
def test_sam1_fused_encoder_equals_the_plain_one_and_pytorch(sam1, run):
    paths, feeds, expected = sam1
    plain, fused = run(paths[PLAIN], feeds), run(paths[FUSED], feeds)
    _assert_close(fused, plain)
    _assert_close(fused, [expected])


def test_a_wrong_attention_node_is_caught(sam1, tmp_path):
    """The comparison above fails on a broken fused piece: the node's scale off by 10 %."""
    paths, feeds, expected = sam1
    model = onnx.load(str(paths[FUSED]))
    node = next(n for n in model.graph.node if n.op_type == "MultiHeadAttention")
    scale = next(a for a in node.attribute if a.name == "scale")
    scale.f *= 1.1
    onnx.save(model, str(tmp_path / "broken.onnx"))
    with pytest.raises(AssertionError):
        _assert_close(_run_ort(tmp_path / "broken.onnx", feeds), [expected])


def _openvino_layers(path):
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return collections.Counter(op.get_rt_info()["layerType"].astype(str) for op in compiled.get_runtime_model().get_ops())


@pytest.mark.parametrize("form", [PLAIN, FUSED])
def test_openvino_fuses_both_forms(sam1, form):
    """What OpenVINO's CPU plugin makes of each form: every attention ends in its snippets' Subgraph nodes,
    no MatMul or Softmax layer left on its own. (Not a given: a plain graph that adds the relative position
    as one pre-summed tensor between reshapes left tiny's global attention unfused.)"""
    paths, _, _ = sam1
    layers = _openvino_layers(paths[form])
    assert layers["Subgraph"] > 0 and layers["Softmax"] == layers["MatMul"] == 0, layers


@pytest.fixture(scope="module")
def sam2_pieces(tmp_path_factory):
    model = _perturbed(get_family("sam2").seeded("sam2.1_hiera_t_256"), scale=0.02)
    pieces = {piece.file: piece for piece in get_family("sam2").pieces(model)}
    return model, pieces, tmp_path_factory.mktemp("sam2")


def _feeds(piece, sizes: dict):
    """Random inputs for `piece`, its dynamic axes at `sizes`."""
    generator = torch.Generator().manual_seed(5)
    feeds = {}
    for name, example in zip(piece.input_names, piece.example):
        shape = list(example.shape)
        for axis, axis_name in (piece.dynamic_axes or {}).get(name, {}).items():
            shape[axis] = sizes.get(axis_name, shape[axis])
        feeds[name] = torch.randn(shape, generator=generator).numpy().astype(np.float32)
    return feeds


@pytest.mark.parametrize("file, sizes, nodes", [
    ("encoder.onnx", {}, 12),  # Hiera-t: 12 blocks, each one attention
    ("memory_attention.onnx", {"num_spatial_tokens": 3 * 256, "num_ptr_tokens": 16}, 8),  # 4 layers x (self + cross)
])
def test_sam2_fused_pieces_equal_the_plain_ones(sam2_pieces, file, sizes, nodes):
    model, pieces, folder = sam2_pieces
    piece = pieces[file]
    paths = _both_forms(piece, folder)
    assert _op_counts(paths[FUSED])["MultiHeadAttention"] == nodes and _op_counts(paths[FUSED])["Softmax"] == 0
    feeds = _feeds(piece, sizes)
    with torch.no_grad():
        expected = piece.module(*(torch.from_numpy(feeds[name]) for name in piece.input_names))
    expected = [t.numpy() for t in (expected if isinstance(expected, (tuple, list)) else (expected,))]
    for run in (_run_ort, _run_openvino):
        fused = run(paths[FUSED], feeds)
        _assert_close(fused, run(paths[PLAIN], feeds))
        _assert_close(fused, expected)


def test_decoders_stay_plain_in_a_fused_export(sam2_pieces):
    _, pieces, folder = sam2_pieces
    with attention_form(FUSED):
        path = export_piece(pieces["decoder_batch.onnx"], folder / "decoder_batch.onnx")
    assert _op_counts(path)["MultiHeadAttention"] == 0


def test_an_unknown_form_is_refused():
    with pytest.raises(ValueError, match="choose one of"):
        with attention_form("flash"):
            pass


def test_a_fused_bundle_passes_parity_and_answers_as_the_plain_one(tmp_path, tiny_checkpoint, tiny_bundle):
    """export.build --attention fused: the manifest says so, parity passes, and both CPU backends give the
    plain bundle's logits."""
    from export.build import build_bundle
    from runtime import Session

    out = tmp_path / "tiny-fused"
    report = build_bundle(out, "cpu", tiny_checkpoint, attention=FUSED)
    assert report["passed"]
    manifest = (out / "manifest.json").read_text()
    assert '"attention": "fused"' in manifest and _op_counts(out / "encoder.onnx")["MultiHeadAttention"] == 1
    image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    plain = Session(tiny_bundle, backend="onnxruntime")
    plain.set_image(image)
    expected = plain.predict(points=[[20, 30]], labels=[1])
    for backend in ("onnxruntime", "openvino"):
        session = Session(out, backend=backend)
        session.set_image(image)
        got = session.predict(points=[[20, 30]], labels=[1])
        _assert_close([got.low_res_logits, got.scores], [expected.low_res_logits, expected.scores])


def test_build_refuses_an_unknown_attention_form(tmp_path, tiny_checkpoint):
    from export.build import build_bundle

    with pytest.raises(ValueError, match="attention form"):
        build_bundle(tmp_path / "x", "cpu", tiny_checkpoint, attention="flash")
