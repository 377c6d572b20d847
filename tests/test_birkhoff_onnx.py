"""HyperLinear in ONNX: one custom node with a standard-op body, exact decode, bundles that pass parity."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from compress import CheckpointError, build_sam, save_checkpoint
from compress.birkhoff.hyper_linear import HyperLinear
from compress.birkhoff.model import CODED_TENSORS, compress_model, decoded_values, encode_tensor
from compress.recipe import Birkhoff, parse_recipe
from export.build import build_bundle
from export.hyper_linear import attach_functions, code_tensors, is_hyper_linear
from export.onnx_export import export_encoder, export_module, finish_export
from plugins.hyperlinear import spec
from runtime import Session
from runtime.backends.ort_backend import OnnxRuntimeBackend
from runtime.decoded_graph import decode_all, decode_tensors, has_samedge_nodes
from tests.conftest import DEMO_CHECKPOINT


class _Wrapped(nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        return self.layer(x)


def _export_layer(layer, path, in_features):
    staged = path.parent / "export-work"
    staged.mkdir()
    with torch.no_grad():
        export_module(_Wrapped(layer), (torch.zeros(3, in_features),), staged / "m.onnx", ["x"], ["y"],
                {"x": {0: "batch"}})
    finish_export(staged / "m.onnx", path)


@pytest.mark.parametrize("level", [ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                                   ort.GraphOptimizationLevel.ORT_ENABLE_ALL])
@pytest.mark.parametrize("variant, in_features", [("reference", 40), ("reference", 17), ("scaled", 24)])
def test_graph_decode_is_bit_identical_to_torch(tmp_path, level, variant, in_features):
    weight = np.random.default_rng(3).standard_t(4, (12, in_features)) * 0.03  # tails: outer rings in use
    encoded = encode_tensor(weight, row_pairs=True, variant=variant)
    assert encoded is not None
    layer = HyperLinear.from_encoded(encoded, bias=None)
    path = tmp_path / "layer.onnx"
    _export_layer(layer, path, in_features)
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    # x = I makes y = W^T exactly (products with 1 and sums with 0 do not round).
    (y,) = session.run(None, {"x": np.eye(in_features, dtype=np.float32)})
    np.testing.assert_array_equal(y.T, layer.decoded_weight().numpy())
    if variant == "reference" and encoded.rings:
        assert len(layer.gains) > 1


@pytest.mark.parametrize("level", [ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                                   ort.GraphOptimizationLevel.ORT_ENABLE_ALL])
@pytest.mark.parametrize("variant, shape", [("reference", (7, 5, 3)), ("scaled", (33,)), ("reference", (64,))])
def test_hyper_tensor_decode_is_bit_identical_to_the_model(tmp_path, level, variant, shape):
    """A decode-at-load tensor in the graph: the same bits as the torch model holds."""
    values = np.random.default_rng(4).standard_t(4, shape) * 0.03
    encoded = encode_tensor(values, row_pairs=False, variant=variant)
    expected = decoded_values(encoded)
    graph = onnx.helper.make_graph([], "t", [], [onnx.helper.make_tensor_value_info("t", onnx.TensorProto.FLOAT, shape)],
                                   [onnx.numpy_helper.from_array(expected, "t")])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    model.ir_version = 10
    assert code_tensors(model, {"t": encoded}) == 1 and not model.graph.initializer[0].data_type == 1
    attach_functions(model, 17)
    onnx.checker.check_model(model, full_check=True)
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    (got,) = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(None, {})
    np.testing.assert_array_equal(got.view(np.int32), expected.view(np.int32))
    decode_tensors(model)  # the numpy decode samedge's backend and the TensorRT files use
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(model.graph.initializer[0]), expected)
    assert not model.functions


def test_encoder_has_one_node_per_linear_and_passes_checks(tmp_path):
    compressed = compress_model(build_sam("tiny", seed=0), show_progress=False)
    path = tmp_path / "encoder.onnx"
    export_encoder(compressed.model, path)
    model = onnx.load(str(path))
    nodes = [n for n in model.graph.node if is_hyper_linear(n)]
    layers = [m for m in compressed.model.image_encoder.modules() if isinstance(m, HyperLinear)]
    assert len(nodes) == len(layers) > 0
    # The node the torch module writes and the function ONNX Runtime runs it with, as the spec has them.
    for node in nodes:  # (the exporter sorts a node's attributes by name)
        assert {a.name: onnx.AttributeProto.AttributeType.Name(a.type) for a in node.attribute} == dict(spec.ATTRIBUTES)
        assert len(node.input) == len(spec.INPUTS) and len(node.output) == 1
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in nodes[0].attribute}
    assert attributes["plugin_namespace"] == spec.PLUGIN_NAMESPACE.encode()
    assert attributes["plugin_version"] == spec.PLUGIN_VERSION.encode()
    functions = {(f.domain, f.name): f for f in model.functions}
    assert functions.keys() == {(spec.DOMAIN, spec.OP_TYPE), (spec.DOMAIN, spec.TENSOR_OP_TYPE)}
    function = functions[spec.DOMAIN, spec.OP_TYPE]
    assert list(function.attribute) == list(spec.ATTRIBUTE_NAMES)
    assert (list(function.input), list(function.output)) == (list(spec.INPUTS), [spec.OUTPUT])
    function = functions[spec.DOMAIN, spec.TENSOR_OP_TYPE]
    assert list(function.attribute) == list(spec.TENSOR_ATTRIBUTE_NAMES)
    assert (list(function.input), list(function.output)) == (list(spec.TENSOR_INPUTS), [spec.TENSOR_OUTPUT])
    assert (spec.DOMAIN, spec.DOMAIN_VERSION) in {(o.domain, o.version) for o in model.opset_import}
    # TensorRT has neither UINT8 nor INT16 weights: codes travel as INT32.
    types = {init.data_type for init in model.graph.initializer}
    assert onnx.TensorProto.UINT8 not in types and onnx.TensorProto.INT16 not in types
    codes = {init.name: init for init in model.graph.initializer if init.name in {n.input[1] for n in nodes}}
    assert codes and all(init.data_type == onnx.TensorProto.INT32 for init in codes.values())
    # The codes at their bit width: as many words as the torch module holds, which the checkpoint holds.
    assert sum(np.prod(c.dims) for c in codes.values()) == sum(m.codes.numel() for m in layers)
    # Every decode-at-load tensor a HyperTensor node (equal ones, as the norms of seeded weights,
    # share one): the only float32 initializers left are the nodes' scales.
    coded = [n for n in model.graph.node if n.domain == spec.DOMAIN and n.op_type == spec.TENSOR_OP_TYPE]
    assert len(coded) > 10 and getattr(compressed.model, CODED_TENSORS)
    scales = {n.input[2] for n in nodes} | {n.input[1] for n in coded}
    assert {i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT} <= scales
    onnx.checker.check_model(str(path), full_check=True)

    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = compressed.model.image_encoder(image).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"image": image.numpy()})
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_compressed_demo_bundle_passes_parity_on_photos(tmp_path):
    out = tmp_path / "demo-birkhoff-desktop"
    report = build_bundle(out, "desktop", DEMO_CHECKPOINT, recipe=parse_recipe("birkhoff"))
    assert report["passed"]
    photo_cases = [c for c in report["cases"] if c["image"] in ("astronaut", "coffee", "chelsea")]
    assert photo_cases and min(c["mask_iou"] for c in photo_cases) >= 0.99
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["checkpoint"] == Birkhoff.checkpoint_name
    assert manifest["compression"]["method"] == "birkhoff" and manifest["compression"]["ratio"] > 4.3
    assert manifest["tensorrt"]["hyper_linear_plugin"]
    assert (out / "tensorrt" / "plugin" / "hyperlinear_plugin.cpp").is_file()
    Session(out).bundle.verify()


def test_non_finite_weight_is_named_before_a_build_compresses(tmp_path):
    model = build_sam("tiny", seed=0)
    with torch.no_grad():
        model.mask_decoder.iou_prediction_head.layers[0].weight[0, 0] = float("inf")
    save_checkpoint(model, tmp_path / "bad.safetensors")
    with pytest.raises(CheckpointError, match="iou_prediction_head.layers.0.weight holds 1 NaN or infinite"):
        build_bundle(tmp_path / "out", "cpu", tmp_path / "bad.safetensors", recipe=parse_recipe("birkhoff"))
    assert not (tmp_path / "out").exists()


def test_the_three_ways_to_run_a_coded_bundle_agree(tmp_path):
    """Plain onnxruntime on the file (folds the bodies), samedge's default (numpy decode once,
    a dense graph) and low_memory (the bodies on every run): the same embedding, and the
    default's graph has no samedge node left."""
    out = tmp_path / "demo-birkhoff"
    build_bundle(out, "cpu", DEMO_CHECKPOINT, run_parity=False, recipe=parse_recipe("birkhoff"))
    assert json.loads((out / "manifest.json").read_text())["model"]["samedge_nodes"]
    pixels = np.random.default_rng(5).normal(0, 1, (1, 3, 256, 256)).astype(np.float32)
    plain = ort.InferenceSession(str(out / "encoder.onnx"), providers=["CPUExecutionProvider"])
    (expected,) = plain.run(None, {"image": pixels})
    for low_memory in (False, True):
        with Session(out, low_memory=low_memory) as session:
            # The same weights (bit for bit, tested above); ONNX Runtime fuses each graph its own way,
            # so sums are ordered differently: float32 rounding, on outputs of order 1.
            np.testing.assert_allclose(session.backend.encode(pixels)["image_embeddings"], expected, rtol=1e-4,
                                       atol=1e-4)
    # Without a manifest (files alone) the backend reads them to find the samedge nodes.
    lone = OnnxRuntimeBackend(out / "encoder.onnx", out / "decoder.onnx", ["CPUExecutionProvider"])
    np.testing.assert_allclose(lone.encode(pixels)["image_embeddings"], expected, rtol=1e-4, atol=1e-4)
    model, weights = decode_all(onnx.load(str(out / "encoder.onnx")))
    assert not has_samedge_nodes(model) and not model.functions and weights
    assert not any(init.data_type == onnx.TensorProto.INT32 for init in model.graph.initializer)
