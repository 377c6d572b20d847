"""What a device receives: each weight once per bundle (export/shared_weights.py), what a target
does not need left out (--no-clients, --checkpoint-outside), and the size against the weights."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx.external_data_helper import ExternalDataInfo, uses_external_data

from compress.recipe import parse_recipe
from export.build import build_bundle, main as build_main
from export.bundle_size import size_report, weights_bytes
from export.quantize import quantize_bundle
from export.shared_weights import MIN_SHARED_BYTES
from runtime import Session
from runtime.bundle import PREPROCESS_ENCODER_FILE, WEIGHTS_FILE, BundleError, open_bundle
from runtime.parity import run_parity

IMAGE = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
ONNX_FILES = ("encoder.onnx", "encoder_preprocess.onnx", "decoder.onnx", "decoder_single.onnx", "decoder_batch.onnx")


def _external(path) -> dict:
    """{initializer name: (offset, length)} of the file's tensors in weights.bin."""
    graph = onnx.load(str(path), load_external_data=False).graph
    return {t.name: (ExternalDataInfo(t).offset, ExternalDataInfo(t).length) for t in graph.initializer
            if uses_external_data(t)}


def test_every_weight_is_stored_once(tiny_bundle):
    data = (tiny_bundle / WEIGHTS_FILE).stat().st_size
    shared = {}
    for name in ONNX_FILES:
        for tensor, place in _external(tiny_bundle / name).items():
            shared.setdefault(place, set()).add(name)
    # The weights file holds the distinct tensors back to back (none reaches 1 MiB, so no alignment gaps).
    assert sum(length for _, length in shared) == data
    # Both encoders read the same bytes, and the three decoders theirs.
    encoder, preprocess = _external(tiny_bundle / "encoder.onnx"), _external(tiny_bundle / PREPROCESS_ENCODER_FILE)
    assert encoder and set(encoder.values()) <= set(preprocess.values())
    decoders = [set(_external(tiny_bundle / n).values()) for n in ONNX_FILES[2:]]
    assert decoders[0] and decoders[0] == decoders[1]
    # Distinct tensors of MIN_SHARED_BYTES or more, by content: what weights.bin holds.
    report = size_report(tiny_bundle)
    assert report["weights_bytes"] >= data and report["total_bytes"] > report["weights_bytes"]


def test_a_compressed_device_bundle_leaves_out_the_clients_and_the_checkpoint(tmp_path, tiny_checkpoint, capsys):
    out = tmp_path / "device"
    assert build_main(["--checkpoint", str(tiny_checkpoint), "--compress", "birkhoff", "--no-clients",
                       "--checkpoint-outside", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "parity PASS" in printed and "MB of weights stored once" in printed
    beside = tmp_path / "device.model.birkhoff.safetensors"
    assert beside.is_file() and not (out / "model.birkhoff.safetensors").exists()
    assert {p.name for p in out.iterdir()} == {"encoder.onnx", "decoder.onnx", "decoder_single.onnx",
                                               "decoder_batch.onnx", WEIGHTS_FILE, "manifest.json", "parity.json"}
    bundle = open_bundle(out)
    assert bundle.checkpoint == beside and bundle.manifest["clients"] is None
    with Session(out, backend="onnxruntime") as session:
        assert session.predict(IMAGE, points=[[30, 20]], labels=[1]).masks.shape == (3, 48, 64)
    report = run_parity(out, images={"noise": IMAGE}, show_progress=False, backend="onnxruntime", everything=False)
    assert report["passed"] and "--no-clients" in report["preprocess_encoder"]["skipped"]
    quantized = quantize_bundle(out, tmp_path / "device-int8", "int8")
    assert {p.name for p in quantized.iterdir()} >= {WEIGHTS_FILE, "encoder.onnx"}
    assert not any(p.name.endswith(".onnx.data") for p in quantized.iterdir())
    with Session(quantized, backend="onnxruntime") as session:
        session.predict(IMAGE, points=[[30, 20]], labels=[1])
    # Without --overwrite the checkpoint beside is not replaced; --checkpoint-outside needs --compress.
    with pytest.raises(FileExistsError, match="device.model.birkhoff.safetensors exists"):
        build_bundle(tmp_path / "device", "cpu", tiny_checkpoint, run_parity=False, recipe=parse_recipe("birkhoff"),
                     checkpoint_outside=True)
    with pytest.raises(ValueError, match="without --compress the bundle holds no checkpoint"):
        build_bundle(tmp_path / "plain", "cpu", tiny_checkpoint, checkpoint_outside=True)


def test_a_missing_or_truncated_weights_file_is_refused(tiny_bundle, tmp_path):
    import shutil

    bundle = tmp_path / "b"
    shutil.copytree(tiny_bundle, bundle)
    data = bundle / WEIGHTS_FILE
    data.write_bytes(data.read_bytes()[:1000])
    with pytest.raises(BundleError, match="weights.bin does not match the manifest"):
        Session(bundle)
    with pytest.raises(BundleError, match="ONNX Runtime cannot load .*encoder.onnx"):
        Session(bundle, backend="onnxruntime", verify=False)
    data.unlink()
    with pytest.raises(BundleError, match="lacks weights.bin; rebuild it"):
        Session(bundle)


def test_weights_bytes_counts_shared_tensors_once(tiny_bundle):
    one = weights_bytes([tiny_bundle / "encoder.onnx"])
    assert weights_bytes([tiny_bundle / "encoder.onnx", tiny_bundle / PREPROCESS_ENCODER_FILE]) < 1.01 * one + 4096
    assert MIN_SHARED_BYTES == 1024
