"""python -m export.build: complete bundles, truthful manifests, nothing half-written."""

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from export.build import build_bundle
from runtime import BundleError, Session, open_bundle
from runtime.atomic import OutputError
from runtime.bundle import sha256_file
from runtime.parity import run_parity

REPO = Path(__file__).resolve().parent.parent


def test_cli_builds_a_checked_bundle(tmp_path, tiny_checkpoint):
    out = tmp_path / "bundle"
    result = subprocess.run(
        [sys.executable, "-m", "export.build", "--target", "cpu", "--checkpoint", str(tiny_checkpoint),
         "--out", str(out)], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "parity PASS" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == [
        "decoder.onnx", "decoder_batch.onnx", "decoder_single.onnx", "encoder.onnx", "encoder_preprocess.onnx",
        "manifest.json", "parity.json", "weights.bin"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["target"] == "cpu" and manifest["precision"] == "fp32"
    assert manifest["model"]["name"] == "tiny"
    assert manifest["model"]["checkpoint_sha256"] == sha256_file(tiny_checkpoint)
    for name, info in manifest["files"].items():
        assert info["sha256"] == sha256_file(out / name) and info["bytes"] == (out / name).stat().st_size
    assert manifest["parity"]["passed"] is True
    assert json.loads((out / "parity.json").read_text())["bundle"] == str(out)
    open_bundle(out).verify()
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]  # no temporary leftovers


def test_gpu_targets_carry_what_the_device_needs_to_build_engines(tmp_path, tiny_checkpoint):
    build_bundle(tmp_path / "jetson", "jetson", tiny_checkpoint, run_parity=False)
    manifest = json.loads((tmp_path / "jetson" / "manifest.json").read_text())
    assert manifest["target"] == "jetson"
    entry = manifest["tensorrt"]
    assert entry["status"] == ("built" if importlib.util.find_spec("tensorrt") else "pending")
    assert "build_engines.sh" in entry.get("todo", entry["build_script"])
    for name in ("tensorrt/encoder.onnx", "tensorrt/decoder.onnx", "tensorrt/build_engines.sh"):
        assert name in manifest["files"]  # hashed like every other bundle file
    assert not entry["hyper_linear_plugin"] and not (tmp_path / "jetson" / "tensorrt" / "plugin").exists()
    cpu = tmp_path / "cpu"
    build_bundle(cpu, "cpu", tiny_checkpoint, run_parity=False)
    assert json.loads((cpu / "manifest.json").read_text())["tensorrt"] is None
    assert not (cpu / "tensorrt").exists()


def test_failed_build_leaves_nothing_behind(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    result = subprocess.run(
        [sys.executable, "-m", "export.build", "--checkpoint", str(bad), "--out", str(tmp_path / "b")],
        cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2
    assert "error:" in result.stderr and "corrupt" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.pth"]


def test_existing_bundle_is_kept_unless_overwrite(tmp_path, tiny_checkpoint):
    out = tmp_path / "b"
    build_bundle(out, "cpu", tiny_checkpoint, run_parity=False)
    with pytest.raises(FileExistsError, match="--overwrite"):
        build_bundle(out, "cpu", tiny_checkpoint, run_parity=False)
    build_bundle(out, "desktop", tiny_checkpoint, run_parity=False, overwrite=True)
    assert json.loads((out / "manifest.json").read_text())["target"] == "desktop"
    assert [p.name for p in tmp_path.iterdir()] == ["b"]


def test_tampered_or_incomplete_bundles_are_reported(tmp_path, tiny_checkpoint):
    out = tmp_path / "b"
    build_bundle(out, "cpu", tiny_checkpoint, run_parity=False)
    with open(out / "decoder.onnx", "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x00\x00\x00")
    with pytest.raises(BundleError, match="does not match the manifest"):
        open_bundle(out, verify=False).verify()
    with pytest.raises(BundleError, match="decoder.onnx does not match the manifest"):
        Session(out)  # hashes are checked when a bundle is opened
    (out / "encoder.onnx").write_bytes(b"garbage")
    for backend in ("onnxruntime", "openvino"):  # refused by reading its provenance, before any backend
        with pytest.raises(BundleError, match="encoder.onnx is not a readable ONNX file"):
            Session(out, verify=False, backend=backend)
    (out / "encoder.onnx").unlink()
    with pytest.raises(BundleError, match="encoder.onnx is missing"):
        Session(out)
    with pytest.raises(BundleError, match="no manifest.json"):
        Session(tmp_path)
    with pytest.raises(BundleError, match="model.engine does not exist"):
        Session(tmp_path / "model.engine")


def test_lone_encoder_file_opens_with_its_sibling_decoder(tiny_bundle):
    session = Session(tiny_bundle / "encoder.onnx")
    assert session.img_size == 64
    masks, _, _ = session.predict(np.zeros((10, 10, 3), np.uint8), points=[[5, 5]], labels=[1])
    assert masks.shape == (3, 10, 10)


def test_rerunning_parity_keeps_the_bundle_verifiable(tiny_bundle, tiny_checkpoint):
    run_parity(tiny_bundle, tiny_checkpoint, {"grey": np.full((30, 30, 3), 90, np.uint8)},
               out=tiny_bundle / "parity.json", show_progress=False)
    open_bundle(tiny_bundle).verify()


def test_encoder_inside_a_bundle_uses_the_bundle_manifest(tiny_bundle):
    assert open_bundle(tiny_bundle / "encoder.onnx").manifest["model"]["name"] == "tiny"


def test_no_session_plans_memory_from_its_last_run(tiny_bundle):
    """ORT's memory pattern doubles a long-lived session's peak (docs/benchmarks/ort-memory.md)."""
    for low_memory in (False, True):
        backend = Session(tiny_bundle, backend="onnxruntime", low_memory=low_memory).backend
        for session in (backend.encoder, backend.decoder):
            options = session.get_session_options()
            assert not options.enable_mem_pattern
            assert options.enable_cpu_mem_arena == (not low_memory)


def test_low_memory_sessions_answer_exactly_the_same(tiny_bundle):
    image = np.random.default_rng(1).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    usual = Session(tiny_bundle, backend="onnxruntime").predict(image, points=[[30, 20]], labels=[1])
    lean = Session(tiny_bundle, low_memory=True)
    assert not lean.backend.encoder.get_session_options().enable_cpu_mem_arena
    np.testing.assert_array_equal(lean.predict(image, points=[[30, 20]], labels=[1]).low_res_logits,
                                  usual.low_res_logits)


def test_overwrite_replaces_a_bundle_of_an_older_format(tmp_path, tiny_bundle, tiny_checkpoint):
    """A bundle an older samedge wrote (format 1, no seal) no longer opens, but --overwrite replaces it:
    its file list still shows that nothing else is in it."""
    out = tmp_path / "old"
    shutil.copytree(tiny_bundle, out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["format_version"] = 1
    del manifest["integrity"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="format version 1 is not 2"):
        open_bundle(out)
    build_bundle(out, "cpu", tiny_checkpoint, run_parity=False, overwrite=True)
    assert open_bundle(out).manifest["format_version"] == 2
    (out / "mine.txt").write_text("a user's file")  # and a user's file in it is still never deleted
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["format_version"] = 1
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(OutputError, match="files samedge did not write \\(mine.txt\\)"):
        build_bundle(out, "cpu", tiny_checkpoint, run_parity=False, overwrite=True)
