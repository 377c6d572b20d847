"""The native flavour: the bundle's models as Triton onnxruntime models behind the samedge model.

The wheel's tritonserver has no onnxruntime backend, so the configs are checked against Triton's own
schema and the ONNX files, and the samedge model's business-logic path (its calls to the native models)
is served with each native model run by a Python-backend stand-in: ONNX Runtime on the very model.onnx
Triton's onnxruntime backend would load. What this cannot show: that backend accepting the configs."""

from __future__ import annotations

import importlib.util

import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from google.protobuf import text_format

from export.triton import RECORD, write_repository
from runtime import Session
from runtime.decoded_graph import has_samedge_nodes
from runtime.reference import parity_shapes
from runtime.serving.protocol import MODEL, NATIVE_SUFFIXES
from runtime.serving.server import ServerError, TritonServer

pytest.importorskip("tritonclient.grpc", reason="the serve extra (tritonclient) is not installed")
if importlib.util.find_spec("pytriton") is None:  # located, not imported (installed without its dependencies)
    pytest.skip("the wheel carrying tritonserver (nvidia-pytriton) is not installed", allow_module_level=True)
from tritonclient.grpc import model_config_pb2  # noqa: E402

STAND_IN = '''"""Test stand-in for Triton's onnxruntime backend: ONNX Runtime on this version's model.onnx."""
from pathlib import Path

import onnxruntime as ort
import triton_python_backend_utils as pb_utils

from runtime.serving.bridge import to_numpy, to_triton


class TritonPythonModel:
    def initialize(self, args):
        path = Path(args["model_repository"]) / args["model_version"] / "model.onnx"
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.outputs = [output.name for output in self.session.get_outputs()]

    def execute(self, requests):
        answers = []
        for request in requests:
            values = self.session.run(self.outputs, {t.name(): to_numpy(t) for t in request.inputs()})
            answers.append(pb_utils.InferenceResponse([to_triton(n, v) for n, v in zip(self.outputs, values)]))
        return answers
'''


def _config(folder) -> model_config_pb2.ModelConfig:
    return text_format.Parse((folder / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


@pytest.fixture(scope="module")
def repository(tmp_path_factory, demo_bundle, demo_birkhoff_bundle):
    out = tmp_path_factory.mktemp("triton-native") / "repo"
    write_repository(demo_bundle, out, version=1, flavour="onnxruntime")
    write_repository(demo_birkhoff_bundle, out, version=2, flavour="onnxruntime")
    return out


def test_native_models_match_their_onnx_files(repository, demo_birkhoff_bundle):
    front = _config(repository / MODEL)
    assert front.backend == "python" and front.parameters["engine"].string_value == "native"
    assert not (repository / MODEL / "1" / "bundle").exists()  # the front model holds no weights
    for suffix in NATIVE_SUFFIXES:
        folder = repository / (MODEL + suffix)
        config = _config(folder)
        assert config.platform == "onnxruntime_onnx" and config.max_batch_size == 0
        for version in ("1", "2"):
            model = onnx.load(folder / version / "model.onnx")  # its weights beside it, in model.onnx.data
            assert not has_samedge_nodes(model)  # Birkhoff codes decoded: Triton's onnxruntime has no samedge ops
            session = ort.InferenceSession(str(folder / version / "model.onnx"), providers=["CPUExecutionProvider"])
            declared = {t.name: list(t.dims) for t in config.input}
            assert declared == {i.name: [d if isinstance(d, int) else -1 for d in i.shape] for i in session.get_inputs()}
            assert {t.name for t in config.output} == {o.name for o in session.get_outputs()}
            assert all(i.type == "tensor(float)" for i in session.get_inputs())  # the configs say TYPE_FP32
    assert json.loads((repository / RECORD).read_text())["models"][MODEL]["2"]["flavour"] == "onnxruntime"


def _with_stand_ins(repository, served):
    """A copy of `repository` whose native models are run by the stand-in instead of Triton's onnxruntime."""
    shutil.copytree(repository, served)
    for suffix in NATIVE_SUFFIXES:
        folder = served / (MODEL + suffix)
        config = _config(folder)
        config.ClearField("platform")
        config.backend = "python"
        (folder / "config.pbtxt").write_text(text_format.MessageToString(config))
        for version in ("1", "2"):
            (folder / version / "model.py").write_text(STAND_IN)
    return served


def test_front_model_answers_through_the_native_models(repository, tmp_path, demo_bundle, demo_birkhoff_bundle):
    served = _with_stand_ins(repository, tmp_path / "served")
    images = parity_shapes(2)
    with TritonServer(served) as server:
        for version, bundle in ((1, demo_bundle), (2, demo_birkhoff_bundle)):
            with Session(bundle, backend="onnxruntime") as local, \
                    Session(f"grpc://{server.grpc_url}/{MODEL}/{version}") as remote:
                for session in (local, remote):
                    session.set_image(images["shapes-0"])
                ours, theirs = (s.predict(points=[[60, 70]], labels=[1]) for s in (local, remote))
                np.testing.assert_array_equal(theirs.low_res_logits, ours.low_res_logits)
                np.testing.assert_array_equal(theirs.masks, ours.masks)
                boxes = [[10, 10, 120, 120], [100, 60, 240, 200]]
                ours, theirs = (s.predict_batch(boxes=boxes) for s in (local, remote))
                np.testing.assert_array_equal(theirs.low_res_logits, ours.low_res_logits)
                np.testing.assert_array_equal(theirs.scores, ours.scores)
                np.testing.assert_array_equal(remote.image_embedding, local.image_embedding)


def test_front_model_refuses_edited_native_models(repository, tmp_path):
    served = _with_stand_ins(repository, tmp_path / "served")
    weights = served / f"{MODEL}_batch_decoder" / "1" / "model.onnx.data"
    data = bytearray(weights.read_bytes())
    data[100] ^= 1  # one bit of one weight
    weights.write_bytes(bytes(data))
    with pytest.raises(ServerError, match=f"model.onnx.data does not match {RECORD}"):
        TritonServer(served).start()
