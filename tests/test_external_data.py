"""ONNX files over protobuf's 2 GiB limit (vit_h): exported with their weights in a `<file>.data`,
then, as every bundle's, gathered with the other files' into the one shared weights.bin
(export/shared_weights.py).

vit_h itself takes too long to export here, so the tiny architecture goes through the
same path with `EXTERNAL_DATA_THRESHOLD` lowered to 16 KB, and protobuf's limit
lowered with it (`_scale_down_protobuf_limit`), and is compared with the ordinary tiny
bundle, whose files keep their weights inline.
"""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx.external_data_helper import ExternalDataInfo, uses_external_data

from compress import build_sam, load_checkpoint
from compress.birkhoff.model import compress_model
from export import onnx_export, tensorrt_onnx
from export.build import build_bundle
from runtime import Session
from runtime.bundle import WEIGHTS_FILE, open_bundle, sha256_file

SMALL_THRESHOLD = 16_384  # bytes: every tiny model file (80+ KB of weights) goes over it
# protobuf's 2 GiB, scaled down like the threshold: what stays inline (tensors under 1 KB) must fit.
SMALL_LIMIT = SMALL_THRESHOLD * 2**31 // onnx_export.EXTERNAL_DATA_THRESHOLD
MODEL_FILES = ("encoder.onnx", "encoder_preprocess.onnx", "decoder.onnx", "decoder_single.onnx",
               "decoder_batch.onnx")


def _scale_down_protobuf_limit(patch) -> None:
    """Lower the threshold, and protobuf's limit with it: ByteSize and SerializeToString
    refuse a model holding more than SMALL_LIMIT bytes of weights, as they do over 2 GiB."""
    patch.setattr(onnx_export, "EXTERNAL_DATA_THRESHOLD", SMALL_THRESHOLD)
    for method in ("ByteSize", "SerializeToString"):
        patch.setattr(onnx.ModelProto, method, _refused_when_large(getattr(onnx.ModelProto, method)))


def _refused_when_large(method):
    def limited(self, *args, **kwargs):
        inline = sum(len(t.raw_data) for t in self.graph.initializer)
        if inline > SMALL_LIMIT:
            raise AssertionError(f"{method.__name__} on a model holding {inline} bytes: fails over 2 GiB")
        return method(self, *args, **kwargs)

    return limited


@pytest.fixture(scope="module")
def external_bundle(tmp_path_factory, tiny_checkpoint):
    out = tmp_path_factory.mktemp("external") / "tiny-cpu"
    with pytest.MonkeyPatch.context() as patch:
        _scale_down_protobuf_limit(patch)
        build_bundle(out, "cpu", tiny_checkpoint, run_parity=False)
    return out


def _contents(path):
    """Everything in an ONNX file but where its tensors are stored, comparable with ==."""
    model = onnx.load(str(path), load_external_data=True)
    graph = model.graph
    tensors = {t.name: (t.data_type, tuple(t.dims), t.raw_data) for t in graph.initializer}
    return (list(graph.node), list(graph.input), list(graph.output), list(graph.value_info),
            list(model.functions), list(model.opset_import), tensors)


def _predict(bundle):
    image = np.random.default_rng(3).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    return Session(bundle).predict(image, points=[[30, 20], [10, 40]], labels=[1, 0])


def test_every_file_keeps_its_weights_in_the_one_shared_file_beside_it(external_bundle):
    expected = set(MODEL_FILES) | {WEIGHTS_FILE, "manifest.json"}  # no <file>.data left over
    assert {p.name for p in external_bundle.iterdir()} == expected
    size = (external_bundle / WEIGHTS_FILE).stat().st_size
    for name in MODEL_FILES:
        graph = onnx.load(str(external_bundle / name), load_external_data=False).graph
        external = [t for t in graph.initializer if uses_external_data(t)]
        # Relative, so the bundle can move; tensors under 1 KB stay inline.
        assert {ExternalDataInfo(t).location for t in external} == {WEIGHTS_FILE}
        assert all(len(t.raw_data) < 1024 for t in graph.initializer if not uses_external_data(t))
        assert all(ExternalDataInfo(t).offset + ExternalDataInfo(t).length <= size for t in external)
        # Readable like the graph beside it.
        modes = {(external_bundle / n).stat().st_mode & 0o777 for n in (name, WEIGHTS_FILE)}
        assert len(modes) == 1, modes


def test_manifest_lists_and_hashes_the_shared_weights(external_bundle):
    files = json.loads((external_bundle / "manifest.json").read_text())["files"]
    data = external_bundle / WEIGHTS_FILE
    assert files[data.name] == {"bytes": data.stat().st_size, "sha256": sha256_file(data)}
    open_bundle(external_bundle).verify()


@pytest.mark.parametrize("name", MODEL_FILES)
def test_files_hold_the_same_model_as_inline_ones(external_bundle, tiny_bundle, name):
    onnx.checker.check_model(str(external_bundle / name), full_check=True)
    assert _contents(external_bundle / name) == _contents(tiny_bundle / name)


def test_masks_are_exactly_those_of_an_inline_bundle(external_bundle, tiny_bundle):
    ours, inline = _predict(external_bundle), _predict(tiny_bundle)
    np.testing.assert_array_equal(ours.low_res_logits, inline.low_res_logits)
    np.testing.assert_array_equal(ours.scores, inline.scores)


def test_a_moved_bundle_still_works(external_bundle, tiny_bundle, tmp_path):
    moved = tmp_path / "elsewhere" / "renamed"
    moved.parent.mkdir()
    os.replace(external_bundle, moved)  # nothing is left where the bundle was built
    try:
        onnx.checker.check_model(str(moved / "encoder.onnx"), full_check=True)
        np.testing.assert_array_equal(_predict(moved).low_res_logits, _predict(tiny_bundle).low_res_logits)
    finally:
        os.replace(moved, external_bundle)


def test_the_size_decision_counts_initializer_bytes_without_byte_size(tiny_bundle, tmp_path, monkeypatch):
    def refuse(self):
        raise AssertionError("ByteSize fails on models over 2 GiB")

    path = tiny_bundle / "encoder.onnx"
    weights = sum(onnx.numpy_helper.to_array(t).nbytes for t in onnx.load(str(path)).graph.initializer)
    monkeypatch.setattr(onnx.ModelProto, "ByteSize", refuse)
    assert onnx_export.initializer_bytes(onnx.load(str(path))) == weights
    for over, folder in ((0, tmp_path / "at"), (1, tmp_path / "over")):
        monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_THRESHOLD", weights - over)
        folder.mkdir()
        onnx_export.save_checked(onnx.load(str(path)), folder / "encoder.onnx", folder / "staged")
        assert (folder / "encoder.onnx.data").is_file() == bool(over)
        assert _contents(folder / "encoder.onnx") == _contents(path)


@pytest.mark.parametrize("large", [True, False])
def test_weights_exported_one_file_each_end_up_in_one_file(tiny_bundle, tmp_path, monkeypatch, large):
    """The TorchScript exporter writes a model over 2 GiB with a file per weight."""
    exported = tmp_path / "export" / "encoder.onnx"
    exported.parent.mkdir()
    onnx.save_model(onnx.load(str(tiny_bundle / "encoder.onnx")), str(exported), save_as_external_data=True,
                    all_tensors_to_one_file=False)
    assert len(list(exported.parent.iterdir())) > 10
    if large:
        _scale_down_protobuf_limit(monkeypatch)
    out = tmp_path / "out"
    out.mkdir()
    onnx_export.finish_export(exported, out / "encoder.onnx")
    assert {p.name for p in out.iterdir()} == {"encoder.onnx"} | ({"encoder.onnx.data"} if large else set())
    assert _contents(out / "encoder.onnx") == _contents(tiny_bundle / "encoder.onnx")


def test_hyper_linear_encoder_with_external_data_keeps_its_function(tmp_path, monkeypatch):
    model = compress_model(build_sam("tiny", seed=0), show_progress=False).model
    inline = onnx_export.export_encoder(model, tmp_path / "inline.onnx")
    _scale_down_protobuf_limit(monkeypatch)
    external = onnx_export.export_encoder(model, tmp_path / "external.onnx")
    assert (tmp_path / "external.onnx.data").is_file() and not (tmp_path / "inline.onnx.data").exists()
    functions = onnx.load(str(external), load_external_data=False).functions
    assert {(f.domain, f.name) for f in functions} == {("samedge", "HyperLinear"), ("samedge", "HyperTensor")}
    assert _contents(external) == _contents(inline)
    pixels = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    run = [ort.InferenceSession(str(p)).run(None, {"image": pixels})[0] for p in (inline, external)]
    np.testing.assert_array_equal(run[1], run[0])


def test_tensorrt_files_from_an_external_data_encoder(external_bundle, tiny_bundle, tiny_checkpoint, tmp_path,
                                                      monkeypatch):
    model = load_checkpoint(tiny_checkpoint)
    inline = tensorrt_onnx.export_tensorrt_inputs(model, tmp_path / "inline", encoder_onnx=tiny_bundle / "encoder.onnx")
    _scale_down_protobuf_limit(monkeypatch)  # the fp16 converter's own shape inference serialises the model
    external = tensorrt_onnx.export_tensorrt_inputs(model, tmp_path / "external",
                                                    encoder_onnx=external_bundle / "encoder.onnx")
    names = (tensorrt_onnx.ENCODER, tensorrt_onnx.DECODER)
    assert {p.name for p in (tmp_path / "external").iterdir()} == set(names) | {f"{n}.data" for n in names}
    for name in names:
        assert _contents(external[name]) == _contents(inline[name])
    pixels = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    run = [ort.InferenceSession(str(p[tensorrt_onnx.ENCODER])).run(None, {"image": pixels})[0]
           for p in (inline, external)]
    np.testing.assert_array_equal(run[1], run[0])
