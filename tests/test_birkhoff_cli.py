"""The Birkhoff command line, its report and plot, and the quantisation baselines."""

import json

import numpy as np
import pytest

from compress import build_sam, load_checkpoint
from compress.birkhoff.__main__ import main as birkhoff_main
from compress.birkhoff.hyper_linear import HyperLinear
from compress.birkhoff.model import compress_model
from compress.birkhoff.reference_layout import write_reference
from compress.recipe import Birkhoff, parse_recipe
from export.build import build_bundle
from export.bundle_size import weights_bytes
from export.quantize import quantize_bundle
from runtime import Session
from runtime.bundle import open_bundle


def test_cli_writes_checkpoint_report_and_plot(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "tiny.birkhoff.safetensors"
    assert birkhoff_main([str(tiny_checkpoint), "--out", str(out)]) == 0
    report = json.loads((tmp_path / "tiny.birkhoff.safetensors.report.json").read_text())
    assert report["ratio"] == pytest.approx(tiny_checkpoint.stat().st_size / out.stat().st_size)
    assert report["compressed_bytes"] == out.stat().st_size and report["seconds"] > 0
    encoded = [t for t in report["tensors"] if t["role"] != "raw"]
    assert encoded and all(5.0 <= t["bits_per_weight"] <= 7.0 for t in encoded if t["numel"] > 1000)
    assert set(report["fell_back"]) == {t["name"] for t in report["tensors"] if t["fell_back"]}
    png = (tmp_path / "tiny.birkhoff.safetensors.report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert any(isinstance(m, HyperLinear) for m in load_checkpoint(out).modules())
    assert "ratio" in capsys.readouterr().out


def test_cli_imports_the_reference_tool_file(tmp_path):
    write_reference(compress_model(build_sam("tiny", seed=0), show_progress=False), tmp_path / "hyper_model.safetensors")
    out = tmp_path / "ours.safetensors"
    assert birkhoff_main([str(tmp_path / "hyper_model.safetensors"), "--model-type", "tiny", "--out", str(out),
                          "--no-plot"]) == 0
    assert load_checkpoint(out).config.name == "tiny"


@pytest.mark.parametrize("content, message", [(b"not a model at all", "neither"), (None, "does not exist")])
def test_cli_bad_input_exits_2_with_a_message(tmp_path, capsys, content, message):
    source = tmp_path / "model.bin"
    if content is not None:
        source.write_bytes(content)
    assert birkhoff_main([str(source), "--out", str(tmp_path / "o.safetensors")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o.safetensors").exists()


@pytest.mark.parametrize("method, max_rel", [("int8", 0.02), ("int4", 0.15)])
def test_quantised_bundles_run_and_report_their_error(tiny_bundle, tmp_path, method, max_rel):
    out = quantize_bundle(tiny_bundle, tmp_path / f"tiny-{method}", method)
    manifest = json.loads((out / "manifest.json").read_text())
    weights = manifest["quantization"]["weights"]
    assert 0 < weights["rel_rmse"] < max_rel and weights["weights_quantized"] > 0
    image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    # ONNX Runtime: the engine whose quantisation this is, and the clients' (bit for bit below).
    ours = Session(out, backend="onnxruntime").predict(image, points=[[20, 20]], labels=[1])
    fp32 = Session(tiny_bundle).predict(image, points=[[20, 20]], labels=[1])
    assert ours.masks.shape == fp32.masks.shape
    assert np.abs(ours.low_res_logits - fp32.low_res_logits).max() > 0  # it really is another model
    # Its weights, wherever stored (the graph, the shared weights.bin): smaller than the fp32 encoder's.
    assert weights_bytes([out / "encoder.onnx"]) < weights_bytes([tiny_bundle / "encoder.onnx"])
    # The clients' encoder is the quantised one, with the preprocessing in front.
    assert manifest["clients"]["preprocess_encoder"] == "encoder_preprocess.onnx"
    theirs = Session(out / "encoder_preprocess.onnx", backend="onnxruntime").predict(image, points=[[20, 20]],
                                                                                     labels=[1])
    np.testing.assert_array_equal(theirs.low_res_logits, ours.low_res_logits)


def test_quantising_a_compressed_bundle_keeps_its_checkpoint_reachable(tiny_checkpoint, tmp_path):
    source = tmp_path / "tiny-birkhoff"
    build_bundle(source, "cpu", tiny_checkpoint, run_parity=False, recipe=parse_recipe("birkhoff"))
    out = quantize_bundle(source, tmp_path / "tiny-birkhoff-int8", "int8")
    assert open_bundle(out).checkpoint == (source / Birkhoff.checkpoint_name).resolve()
