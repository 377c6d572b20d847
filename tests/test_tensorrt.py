"""The TensorRT path, as far as it runs without TensorRT.

TensorRT itself is not installable here: the files it parses are checked for what
TensorRT requires, and run with ONNX Runtime (HyperLinear bodies kept for that run)
through the same host-side mask upscaling the TensorRT backend uses, against the
PyTorch reference. The build script is syntax-checked; the backend's refusals tested.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
import subprocess
from enum import IntEnum

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from segment_anything.utils.onnx import SamOnnxModel

from benchmarks.tensorrt_files import compare_tensorrt_files
from compress import build_sam, load_checkpoint
from compress.birkhoff.model import compress_model
from export import tensorrt_build, tensorrt_onnx
from compress.families.sam_pieces import decoder_dummy_inputs
from export.tensorrt_build import MAX_POINTS, MAX_PROMPTS, PROFILE, build_script, find_nvcc, prepare_folder
from runtime import Session
from runtime.backends import engines_file, tensorrt_backend
from runtime.backends.tensorrt_backend import TensorRTError, check_cuda, check_engine_info
from runtime.bundle import BundleError, open_bundle, sha256_file
from runtime.masks import upscale_masks
from runtime.parity import Thresholds
from runtime.signature import BATCH_DECODER_INPUTS, BATCH_DECODER_OUTPUTS
from tests.conftest import DEMO_CHECKPOINT

has_tensorrt = importlib.util.find_spec("tensorrt") is not None


@pytest.fixture(scope="module")
def demo_models():
    model = load_checkpoint(DEMO_CHECKPOINT)
    return {"fp32": model, "birkhoff": compress_model(load_checkpoint(DEMO_CHECKPOINT), show_progress=False).model}


@pytest.mark.parametrize("kind", ["fp32", "birkhoff"])
def test_tensorrt_files_answer_like_the_reference(demo_bundle, demo_models, kind):
    """fp16 encoder + low-res decoder + numpy upscaling agree with segment_anything."""
    # fp16 activations: IoU and logits within fp16 rounding, not float32's.
    results = compare_tensorrt_files(demo_models[kind], demo_bundle,
                                     Thresholds(min_mask_iou=0.97, max_relative_logit_error=0.05))
    assert len(results) >= 25
    assert min(r.mask_iou for r in results) >= 0.97
    assert max(r.max_relative_logit_diff for r in results) <= 0.05
    assert np.median([r.mask_iou for r in results]) >= 0.995


def test_fp32_tensorrt_decoder_is_the_official_one_before_upscaling(tmp_path, demo_models):
    model = demo_models["fp32"]
    paths = tensorrt_onnx.export_tensorrt_inputs(model, tmp_path, precision="fp32")
    inputs = decoder_dummy_inputs(model)
    with torch.no_grad():
        masks, scores, low_res = SamOnnxModel(model, return_single_mask=False)(*inputs.values())
    decoder = ort.InferenceSession(str(paths[tensorrt_onnx.DECODER]))
    for prompts, points in (*PROFILE, (1, 5), (3, 5)):  # the engine's profile range; 5: the example's points
        feeds = {name: inputs[name].numpy() for name in BATCH_DECODER_INPUTS}
        feeds["point_coords"] = np.resize(feeds["point_coords"], (1, points, 2)).repeat(prompts, 0)
        feeds["point_labels"] = np.resize(feeds["point_labels"], (1, points)).repeat(prompts, 0)
        feeds["mask_input"] = feeds["mask_input"].repeat(prompts, 0)
        feeds["has_mask_input"] = feeds["has_mask_input"].repeat(prompts, 0)
        got_scores, got_low_res = decoder.run(None, feeds)
        assert got_low_res.shape == (prompts, *low_res.shape[1:]) and np.isfinite(got_low_res).all()
        got_scores, got_low_res = got_scores[-1:], got_low_res[-1:]  # every prompt set is the same here
        if points == 5:
            np.testing.assert_allclose(got_low_res, low_res.numpy(), atol=1e-4, rtol=1e-4)
            np.testing.assert_allclose(got_scores, scores.numpy(), atol=1e-5)
            upscaled = upscale_masks(got_low_res, model.image_encoder.img_size, inputs["orig_im_size"].numpy())
            assert upscaled.shape == masks.shape
            np.testing.assert_allclose(upscaled, masks.numpy(), atol=1e-3, rtol=1e-4)


def test_tensorrt_files_have_what_the_parser_needs(tmp_path):
    """No function bodies, fp16 HyperLinear with fp32 norms, no OneHot, no orig_im_size."""
    model = compress_model(build_sam("tiny", seed=0), show_progress=False).model
    paths = tensorrt_onnx.export_tensorrt_inputs(model, tmp_path / "trt")
    assert not onnx.load(str(paths[tensorrt_onnx.ENCODER])).functions
    # Types are inferred through the bodies, which the TensorRT file does not carry.
    with_bodies = tensorrt_onnx.export_tensorrt_inputs(model, tmp_path / "checked", keep_functions=True)
    encoder = onnx.shape_inference.infer_shapes(onnx.load(str(with_bodies[tensorrt_onnx.ENCODER])))
    types = {v.name: v.type.tensor_type.elem_type
             for v in list(encoder.graph.value_info) + list(encoder.graph.input) + list(encoder.graph.output)}
    hyper = [n for n in encoder.graph.node if n.op_type == "HyperLinear"]
    assert hyper and all(types[n.input[0]] == onnx.TensorProto.FLOAT16 for n in hyper)
    assert all(types[n.output[0]] == onnx.TensorProto.FLOAT16 for n in hyper)
    initializers = {i.name: i.data_type for i in encoder.graph.initializer}
    # The plugin takes codes as INT32, row scales and biases as FLOAT.
    assert all(initializers[n.input[1]] == onnx.TensorProto.INT32 for n in hyper)
    assert all(initializers[n.input[2]] == onnx.TensorProto.FLOAT for n in hyper)
    norms = [n for n in encoder.graph.node if n.op_type in ("LayerNormalization", "Softmax")]
    assert norms and all(types[n.input[0]] == onnx.TensorProto.FLOAT for n in norms)
    assert encoder.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # fp32 in and out

    decoder = onnx.load(str(paths[tensorrt_onnx.DECODER]))
    assert not decoder.functions
    assert [i.name for i in decoder.graph.input] == list(BATCH_DECODER_INPUTS)
    assert [o.name for o in decoder.graph.output] == list(BATCH_DECODER_OUTPUTS)
    assert "OneHot" not in {n.op_type for n in decoder.graph.node}
    assert [d.dim_param for d in decoder.graph.input[1].type.tensor_type.shape.dim[:2]] == ["num_prompts", "num_points"]


@pytest.mark.parametrize("target, plugin", [("jetson", True), ("desktop", False)])
def test_build_script_is_valid_bash_with_the_exact_build_lines(tmp_path, target, plugin):
    script = prepare_folder(tmp_path, target, plugin, low_res_size=64)
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    assert text == build_script(target, plugin, 64)
    assert text.count("--stronglyTyped") == 2 and "--skipInference" in text
    assert (f"--maxShapes=point_coords:{MAX_PROMPTS}x{MAX_POINTS}x2,point_labels:{MAX_PROMPTS}x{MAX_POINTS},"
            f"mask_input:{MAX_PROMPTS}x1x64x64,has_mask_input:{MAX_PROMPTS}") in text
    assert "--minShapes=point_coords:1x1x2,point_labels:1x1,mask_input:1x1x64x64,has_mask_input:1" in text
    assert ("cmake -S plugin" in text) == plugin and ("export CUDACXX" in text) == plugin
    # --staticPlugins only dlopens the library; the plugin registers through loadLibrary alone.
    assert text.count("--dynamicPlugins=plugin/build/libsamedge_hyperlinear.so") == (2 if plugin else 0)
    assert "--staticPlugins" not in text
    assert ("-DCMAKE_CUDA_ARCHITECTURES=87" in text) == (target == "jetson")
    assert (tmp_path / "plugin" / "hyperlinear_plugin.cpp").is_file() == plugin
    # Engines appear under their final names only when complete.
    assert "mv encoder.engine.partial encoder.engine" in text


def _fake_tool(path, body):
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


@pytest.mark.parametrize("cudacxx", [None, "/nonexistent/nvcc"])
def test_build_script_hands_cmake_an_nvcc_or_stops_naming_cudacxx(tmp_path, cudacxx):
    """JetPack leaves nvcc off PATH: the script exports CUDACXX (given, else nvcc on PATH, else the
    toolkit's default place) for CMake, or stops before CMake with the fix."""
    script = prepare_folder(tmp_path, "jetson", plugin=True, low_res_size=64)
    tools = tmp_path / "bin"
    tools.mkdir()
    nvcc = _fake_tool(tools / "nvcc", "exit 0")
    _fake_tool(tools / "cmake", 'echo "cmake saw CUDACXX=$CUDACXX"; exit 3')
    env = {"PATH": f"{tools}:/usr/bin:/bin", **({"CUDACXX": cudacxx} if cudacxx else {})}
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env)
    if cudacxx is None:
        assert result.returncode == 3 and f"cmake saw CUDACXX={nvcc}" in result.stdout
    else:
        assert result.returncode == 1 and "cmake saw" not in result.stdout
        assert f"no CUDA compiler at {cudacxx}: set CUDACXX to nvcc's path" in result.stderr


@pytest.mark.parametrize("target", ["jetson", "desktop"])
def test_script_and_python_build_run_cmake_alike(tmp_path, monkeypatch, target):
    """Both run cmake_commands' arguments exactly: the script's quoting keeps the desktop
    architectures' ";" and a TENSORRT_ROOT with a space each in one argument."""
    folder = tmp_path / "tensorrt"
    folder.mkdir()
    script = prepare_folder(folder, target, plugin=True, low_res_size=64)
    tools = tmp_path / "bin"
    tools.mkdir()
    calls = tmp_path / "cmake-calls"
    _fake_tool(tools / "nvcc", "exit 0")
    _fake_tool(tools / "cmake", f'printf "%s\\n" "$@" "<end>" >> "{calls}"')
    _fake_tool(tools / "trtexec", "exit 3")
    root = str(tmp_path / "tensor rt")

    def recorded() -> list[list[str]]:
        runs = calls.read_text().split("<end>\n")[:-1]
        calls.unlink()
        return [run.splitlines() for run in runs]

    result = subprocess.run(["bash", str(script)], capture_output=True, text=True,
                            env={"PATH": f"{tools}:/usr/bin:/bin", "TENSORRT_ROOT": root})
    assert result.returncode == 3, result.stderr  # trtexec's status: both cmake runs went through
    assert recorded() == [c[1:] for c in tensorrt_build.cmake_commands("plugin", "plugin/build", target, root)]

    monkeypatch.setenv("PATH", f"{tools}:/usr/bin:/bin")
    monkeypatch.setenv("TENSORRT_ROOT", root)
    monkeypatch.delenv("CUDACXX", raising=False)
    tensorrt_build.build_plugin(folder, target)
    plugin = folder / "plugin"
    assert recorded() == [c[1:] for c in tensorrt_build.cmake_commands(str(plugin), str(plugin / "build"), target,
                                                                        root)]


def test_python_build_finds_nvcc_as_the_script_does(tmp_path, monkeypatch):
    nvcc = _fake_tool(tmp_path / "nvcc", "exit 0")
    monkeypatch.setenv("CUDACXX", str(nvcc))
    assert find_nvcc() == str(nvcc)
    monkeypatch.delenv("CUDACXX")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(tensorrt_build, "DEFAULT_NVCC", str(nvcc))  # JetPack: only /usr/local/cuda/bin/nvcc
    assert find_nvcc() == str(nvcc)
    monkeypatch.setattr(tensorrt_build, "DEFAULT_NVCC", str(tmp_path / "missing"))
    with pytest.raises(TensorRTError, match="no CUDA compiler at .*missing: set CUDACXX"):
        find_nvcc()


class _FakeCudaError(IntEnum):
    """cuda-python's cudaError_t, as far as check_cuda reads it (values from CUDA's driver_types.h)."""
    cudaSuccess = 0
    cudaErrorMemoryAllocation = 2
    cudaErrorInsufficientDriver = 35
    cudaErrorNoDevice = 100


def test_cuda_python_newer_than_the_driver_is_reported_with_the_pin():
    assert check_cuda((_FakeCudaError.cudaSuccess, 7)) == 7
    for error in (_FakeCudaError.cudaErrorInsufficientDriver, _FakeCudaError.cudaErrorNoDevice):
        with pytest.raises(TensorRTError, match=rf'{error.name}.*JetPack 6, pip install "cuda-python>=12.6,<13"'
                                                r'.*on a desktop, update the NVIDIA driver'):
            check_cuda((error, None))
    with pytest.raises(RuntimeError, match=r"cudaErrorMemoryAllocation \(2\)") as raised:
        check_cuda((_FakeCudaError.cudaErrorMemoryAllocation, None))
    assert not isinstance(raised.value, TensorRTError)


@pytest.mark.skipif(has_tensorrt, reason="checks the message shown where tensorrt is not installed")
def test_tensorrt_backend_without_tensorrt_says_what_to_install(tmp_path, tiny_bundle):
    with pytest.raises(BundleError, match="no TensorRT engines"):
        Session(tiny_bundle, backend="tensorrt")
    engines = tmp_path / "engines"
    engines.mkdir()
    for name in ("encoder.engine", "decoder.engine"):
        (engines / name).write_bytes(b"not a plan")
    engines_file.record(engines, {"tensorrt": "10.3.0", "compute_capability": "8.7"})
    with pytest.raises(TensorRTError, match="pip install tensorrt"):
        Session(engines / "encoder.engine")


def test_engine_paths_are_checked_before_tensorrt_is_needed(tmp_path):
    lone = tmp_path / "encoder.engine"
    lone.write_bytes(b"plan")
    with pytest.raises(BundleError, match="decoder engine beside it"):
        Session(lone)
    with pytest.raises(BundleError, match="does not exist"):
        Session(tmp_path / "missing.plan")


def test_engines_from_another_tensorrt_version_are_refused_with_the_fix(tmp_path):
    info = {"tensorrt": "10.3.0", "compute_capability": "unknown"}
    check_engine_info(tmp_path, info, "10.3.0.30")  # same version, longer build number: fine
    with pytest.raises(TensorRTError, match="built with TensorRT 10.3.0.*11.1.0.*build_engines.sh"):
        check_engine_info(tmp_path, info, "11.1.0")


def _engines_in(bundle: Path) -> Path:
    """Engine files (any bytes: these checks run before TensorRT reads them) in a bundle's tensorrt/."""
    folder = bundle / "tensorrt"
    folder.mkdir(exist_ok=True)
    for name, source in (("encoder.engine", "encoder.onnx"), ("decoder.engine", "decoder_batch.onnx")):
        (folder / name).write_bytes(b"plan of " + name.encode())
        shutil.copy(bundle / source, folder / engines_file.ENGINE_SOURCES[name])  # what they were built from
    return folder


def test_engines_without_their_record_are_refused(tmp_path, tiny_bundle):
    bundle = tmp_path / "b"
    shutil.copytree(tiny_bundle, bundle)
    folder = _engines_in(bundle)
    with pytest.raises(BundleError, match="has engines but no engines.json.*build_engines.sh"):
        Session(bundle, backend="tensorrt")
    (folder / "engines.json").write_text(json.dumps({"tensorrt": "10.3.0"}))  # an older samedge's: no hashes
    with pytest.raises(BundleError, match="records no engine hashes"):
        Session(bundle, backend="tensorrt")


def test_recording_engines_hashes_them_into_engines_json_and_the_sealed_manifest(tmp_path, tiny_bundle):
    bundle = tmp_path / "b"
    shutil.copytree(tiny_bundle, bundle)
    folder = _engines_in(bundle)
    entry = engines_file.record(folder, {"tensorrt": "10.3.0", "gpu": "Orin", "compute_capability": "8.7"})
    assert set(entry["files"]) == {"encoder.engine", "decoder.engine"}
    assert entry["files"]["encoder.engine"]["sha256"] == sha256_file(folder / "encoder.engine")
    manifest = open_bundle(bundle).manifest  # re-sealed: opens
    assert manifest["tensorrt"]["status"] == "built" and manifest["tensorrt"]["engines"] == entry
    assert entry["model_digest"] == manifest["model"]["digest"]
    assert json.loads((folder / "engines.json").read_text()) == entry
    engines = (folder / "encoder.engine", folder / "decoder.engine")
    assert engines_file.check(folder, engines, manifest, verify=True) == entry
    # An engine rebuilt by hand (or copied in) is refused when hashes are checked...
    (folder / "decoder.engine").write_bytes(b"another plan")
    with pytest.raises(BundleError, match="decoder.engine does not match its recorded size and SHA-256"):
        engines_file.check(folder, engines, manifest, verify=True)
    with pytest.raises(BundleError, match="decoder.engine does not match"):
        Session(bundle, backend="tensorrt")  # before TensorRT is needed
    # ... and engines.json edited to match it does not help: the sealed manifest's record is the one read.
    engines_file.record(folder, {"tensorrt": "10.3.0"})
    (folder / "decoder.engine").write_bytes(b"a third plan")
    (folder / "engines.json").write_text(json.dumps({**entry, "files": engines_file.file_hashes(folder)}))
    with pytest.raises(BundleError, match="decoder.engine does not match"):
        engines_file.check(folder, engines, open_bundle(bundle).manifest, verify=True)


def test_engines_built_from_another_model_are_refused(tmp_path, tiny_bundle):
    bundle = tmp_path / "b"
    shutil.copytree(tiny_bundle, bundle)
    folder = _engines_in(bundle)
    entry = engines_file.record(folder, {"tensorrt": "10.3.0"})
    manifest = {**open_bundle(bundle).manifest}
    manifest["model"] = {**manifest["model"], "digest": "0" * 64}
    with pytest.raises(BundleError, match="built from another model"):
        engines_file.check(folder, (folder / "encoder.engine", folder / "decoder.engine"), manifest, verify=False)
    assert entry["model_digest"] != "0" * 64


def test_a_second_different_plugin_library_is_refused_in_one_process(tmp_path, monkeypatch):
    monkeypatch.setattr(tensorrt_backend, "_loaded_plugin", {})
    first, same, other = tmp_path / "first.so", tmp_path / "same.so", tmp_path / "other.so"
    first.write_bytes(b"plugin build 1")
    same.write_bytes(b"plugin build 1")
    other.write_bytes(b"plugin build 2")
    assert tensorrt_backend.claim_plugin_library(first) is True  # load it
    assert tensorrt_backend.claim_plugin_library(first) is False  # already loaded
    assert tensorrt_backend.claim_plugin_library(same) is False  # the same build elsewhere: fine
    with pytest.raises(TensorRTError, match=r"already runs the HyperLinear plugin library .*first.so.*other.so is "
                                            r"another build.*Open this bundle in another process"):
        tensorrt_backend.claim_plugin_library(other)


def test_numpy_mask_upscaling_matches_torch(tmp_path):
    low_res = np.random.default_rng(0).standard_normal((1, 4, 256, 256)).astype(np.float32) * 8
    for height, width in ((480, 640), (1024, 1024), (1200, 700), (17, 23)):
        size = torch.tensor([height, width], dtype=torch.float32)
        kept = SamOnnxModel.resize_longest_image_size(size, 1024)
        expected = F.interpolate(torch.from_numpy(low_res), (1024, 1024), mode="bilinear", align_corners=False)
        expected = F.interpolate(expected[..., : kept[0], : kept[1]], (height, width), mode="bilinear",
                                 align_corners=False).numpy()
        got = upscale_masks(low_res, 1024, (height, width))
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, atol=5e-4)
        assert ((got > 0) != (expected > 0)).mean() < 1e-5
