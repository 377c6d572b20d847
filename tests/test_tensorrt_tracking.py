"""TensorRT engines for video tracking (SAM 2's memory pieces), as far as it runs without TensorRT.

TensorRT is not installable here and there is no GPU: no engine is built or run. Checked instead:
the ONNX files the memory engines are built from (run with ONNX Runtime at the corners of the
engines' profile, zero object pointers included), the profile itself, the trtexec lines of
build_engines.sh, the engines' record, and run_piece's mapping and refusals. The last tests drive
the backend's buffer and shape handling through a stand-in for TensorRT's and cuda-python's API,
which computes nothing: they check what the backend asks of TensorRT, never what TensorRT answers.
"""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from export.build import build_bundle
from export.tensorrt_build import (MAX_CONDITIONING_FRAMES, MEMORY_ENGINES, PROFILE, build_script, decoder_shapes,
                                   memory_bounds, profile_shapes, trtexec_command)
from export.tensorrt_onnx import DECODER, ENCODER, MEMORY_ATTENTION, MEMORY_ENCODER, MemoryPieces, read_memory_pieces
from runtime.backends import engines_file, tensorrt_backend
from runtime.backends.tensorrt_backend import (TensorRTBackend, TensorRTError, check_piece_feeds, piece_engine_path,
                                               piece_engines)
from runtime.bundle import BundleError, open_bundle

REPO = Path(__file__).resolve().parent.parent
# SAM 2.1 at 1024 px: 64 x 64 grid, 64 memory channels, 4 tokens per 256-d pointer, the manifest's 7 and 16.
SAM21_1024 = MemoryPieces(tokens_per_frame=4096, memory_dim=64, pointer_tokens=4, num_maskmem=7, max_obj_ptrs=16)
TRACKING = {"memory_encoder": "memory_encoder.onnx", "memory_attention": "memory_attention.onnx", "num_maskmem": 7,
            "max_obj_ptrs": 16}


@pytest.fixture(scope="module")
def desktop_bundle(tmp_path_factory, sam2_checkpoint) -> Path:
    """A SAM 2.1 (hiera-t, 256 px) bundle built for the desktop where TensorRT is not installed: its
    tensorrt/ folder holds the ONNX files and build_engines.sh, engines pending."""
    out = tmp_path_factory.mktemp("bundles") / "sam2-desktop"
    build_bundle(out, "desktop", sam2_checkpoint, run_parity=False)
    return out


# ---- the profile --------------------------------------------------------------------------------

def test_memory_attention_profile_in_frames_and_pointers():
    (min_frames, min_pointers), opt, (max_frames, max_pointers) = memory_bounds(SAM21_1024)
    assert (min_frames, min_pointers) == (1, 0)  # a frame that reads no object pointer
    assert opt == (7, 16)  # one prompted frame, 6 tracked ones, 16 pointers: the steady state
    # Both maxima hold every prompted frame of an object with up to MAX_CONDITIONING_FRAMES of them.
    assert max_frames == SAM21_1024.num_maskmem + 8 == MAX_CONDITIONING_FRAMES + 6
    assert max_pointers == MAX_CONDITIONING_FRAMES + 15 == 24
    shapes = profile_shapes(MEMORY_ATTENTION, 256, SAM21_1024)
    assert shapes == {"spatial_mem": ((4096, 1, 64), (7 * 4096, 1, 64), (15 * 4096, 1, 64)),
                      "spatial_mem_pos": ((4096, 1, 64), (7 * 4096, 1, 64), (15 * 4096, 1, 64)),
                      "ptr_mem": ((0, 1, 64), (64, 1, 64), (96, 1, 64)),
                      "ptr_mem_pos": ((0, 1, 64), (64, 1, 64), (96, 1, 64))}
    assert profile_shapes(MEMORY_ENCODER, 256, SAM21_1024) is None  # static
    assert profile_shapes(ENCODER, 256) is None
    decoder = profile_shapes(DECODER, 256)
    assert decoder["point_coords"] == tuple(decoder_shapes(*corner, 256)["point_coords"] for corner in PROFILE)
    with pytest.raises(ValueError, match="needs its sizes"):
        profile_shapes(MEMORY_ATTENTION, 256)


def test_trtexec_lines_for_the_memory_engines():
    encoder_line = trtexec_command(MEMORY_ENCODER, "jetson", False, 256, SAM21_1024)
    assert "--saveEngine=memory_encoder.engine.partial" in encoder_line and "Shapes" not in encoder_line
    line = trtexec_command(MEMORY_ATTENTION, "jetson", True, 256, SAM21_1024)
    assert "--onnx=memory_attention.onnx --saveEngine=memory_attention.engine.partial --stronglyTyped" in line
    assert ("--minShapes=spatial_mem:4096x1x64,spatial_mem_pos:4096x1x64,ptr_mem:0x1x64,ptr_mem_pos:0x1x64 "
            "--optShapes=spatial_mem:28672x1x64,spatial_mem_pos:28672x1x64,ptr_mem:64x1x64,ptr_mem_pos:64x1x64 "
            "--maxShapes=spatial_mem:61440x1x64,spatial_mem_pos:61440x1x64,ptr_mem:96x1x64,ptr_mem_pos:96x1x64"
            ) in line
    assert "--dynamicPlugins=plugin/build/" in line  # a compressed memory piece would need the plugin too
    script = build_script("jetson", False, 256, SAM21_1024)
    assert script.count("--stronglyTyped") == 4
    assert "mv memory_attention.engine.partial memory_attention.engine" in script
    assert "--max-memory-frames 15 --max-pointers 24" in script
    sam1 = build_script("jetson", False, 256)
    assert "memory" not in sam1 and sam1.count("--stronglyTyped") == 2


# ---- the ONNX files the engines are built from ---------------------------------------------------

def test_a_tracking_bundle_gets_the_memory_pieces_and_their_build_lines(desktop_bundle):
    folder = desktop_bundle / "tensorrt"
    memory = read_memory_pieces(folder)
    assert memory == MemoryPieces(tokens_per_frame=16 * 16, memory_dim=64, pointer_tokens=4, num_maskmem=7,
                                  max_obj_ptrs=16)
    manifest = open_bundle(desktop_bundle).manifest  # sealed, and lists the new files
    assert {f"tensorrt/{MEMORY_ENCODER}", f"tensorrt/{MEMORY_ATTENTION}"} <= set(manifest["files"])
    assert manifest["tensorrt"]["status"] == "pending"
    script = folder / "build_engines.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    for onnx_name in (MEMORY_ENCODER, MEMORY_ATTENTION):
        assert f"{trtexec_command(onnx_name, 'desktop', False, 64, memory)} | tee" in text
    assert "--minShapes=spatial_mem:256x1x64,spatial_mem_pos:256x1x64,ptr_mem:0x1x64,ptr_mem_pos:0x1x64" in text
    for name in (MEMORY_ENCODER, MEMORY_ATTENTION):  # float32 in and out, no function bodies for the parser
        model = onnx.load(str(folder / name), load_external_data=False)
        assert not model.functions
        assert all(v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
                   for v in list(model.graph.input) + list(model.graph.output))


def _feeds(memory: MemoryPieces, frames: int, pointers: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    channels = memory.pointer_tokens * memory.memory_dim
    tokens = lambda length, dim: rng.standard_normal((length, 1, dim)).astype(np.float32)  # noqa: E731
    spatial, pointer = frames * memory.tokens_per_frame, pointers * memory.pointer_tokens
    return {"curr": tokens(memory.tokens_per_frame, channels), "curr_pos": tokens(memory.tokens_per_frame, channels),
            "spatial_mem": tokens(spatial, memory.memory_dim), "spatial_mem_pos": tokens(spatial, memory.memory_dim),
            "ptr_mem": tokens(pointer, memory.memory_dim), "ptr_mem_pos": tokens(pointer, memory.memory_dim)}


def test_the_memory_attention_file_answers_as_the_bundles_at_every_profile_corner(desktop_bundle):
    """tensorrt/memory_attention.onnx is the bundle's graph: the same answers at the engine profile's
    min (1 frame, 0 pointers), opt and max, and at an empty pointer set with a full memory."""
    folder = desktop_bundle / "tensorrt"
    memory = read_memory_pieces(folder)
    ours = ort.InferenceSession(str(folder / MEMORY_ATTENTION), providers=["CPUExecutionProvider"])
    bundle = ort.InferenceSession(str(desktop_bundle / "memory_attention.onnx"), providers=["CPUExecutionProvider"])
    for frames, pointers in (*memory_bounds(memory), (7, 0)):
        feeds = _feeds(memory, frames, pointers)
        (got,), (expected,) = ours.run(None, feeds), bundle.run(None, feeds)
        assert got.shape == (memory.tokens_per_frame, 1, 256) and np.isfinite(got).all()
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_empty_pointer_tokens_meet_only_layers_tensorrt_defines_for_empty_tensors(desktop_bundle):
    """The profile's minimum of 0 pointer tokens relies on this: the empty tensors only pass through
    Transpose, Add, Slice and Concat before they join the spatial tokens. A Reshape (0 is a placeholder
    in ONNX; -1 is undetermined at zero volume), MatMul or reduction on them would need a new look."""
    model = onnx.load(str(desktop_bundle / "tensorrt" / MEMORY_ATTENTION))
    names = [output for node in model.graph.node for output in node.output]
    for name in names:
        model.graph.output.append(onnx.helper.make_value_info(name, onnx.TypeProto()))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = _feeds(read_memory_pieces(desktop_bundle / "tensorrt"), 2, 0)
    shapes = {name: feeds[name].shape for name in feeds}
    shapes.update(zip(names, (value.shape for value in session.run(names, feeds))))
    empty = {name for name, shape in shapes.items() if 0 in shape}
    touching = Counter(node.op_type for node in model.graph.node
                       if any(name in empty for name in list(node.input) + list(node.output)))
    assert touching and set(touching) <= {"Transpose", "Add", "Slice", "Concat"}, touching
    assert not any(0 in shapes[output.name] for output in model.graph.output[:1])


# ---- the engines' record -------------------------------------------------------------------------

def _fake_tool(path: Path, body: str) -> Path:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


def test_build_script_records_the_memory_engines_and_their_bounds(tmp_path, desktop_bundle):
    """build_engines.sh run with a stand-in trtexec that writes placeholder files (not engines): the
    script's own steps, and the record it leaves in engines.json and the sealed manifest."""
    import shutil

    bundle = tmp_path / "b"
    shutil.copytree(desktop_bundle, bundle)
    tools = tmp_path / "bin"
    tools.mkdir()
    _fake_tool(tools / "trtexec", 'for a in "$@"; do case "$a" in --saveEngine=*) '
                                  'printf "placeholder for %s" "$a" > "${a#--saveEngine=}";; esac; done\n'
                                  'echo "[I] TensorRT version: 10.3.0"')
    result = subprocess.run(["bash", str(bundle / "tensorrt" / "build_engines.sh")], capture_output=True, text=True,
                            env={"PATH": f"{tools}:/usr/bin:/bin", "PYTHON": sys.executable, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    folder = bundle / "tensorrt"
    record = json.loads((folder / engines_file.ENGINES_INFO).read_text())
    assert set(record["files"]) == {"encoder.engine", "decoder.engine", *MEMORY_ENGINES.values()}
    assert (record["max_memory_frames"], record["max_pointers"]) == (15, 24)
    assert record["tensorrt"] == "10.3.0" and record["model_digest"] is not None
    manifest = open_bundle(bundle).manifest
    assert manifest["tensorrt"]["engines"] == record
    engines = (folder / "encoder.engine", folder / "decoder.engine")
    assert engines_file.check(folder, engines + engines_file.piece_engines(folder), manifest, verify=True) == record
    (folder / "memory_attention.engine").write_bytes(b"rebuilt by hand")
    with pytest.raises(BundleError, match="memory_attention.engine does not match its recorded size"):
        TensorRTBackend.verify_files(open_bundle(bundle))


# ---- run_piece: which engine, and what it refuses ------------------------------------------------

def test_run_piece_maps_the_bundles_files_to_engines(tmp_path):
    assert piece_engines(TRACKING) == {"decoder_batch.onnx": "decoder.engine",
                                       "memory_encoder.onnx": "memory_encoder.engine",
                                       "memory_attention.onnx": "memory_attention.engine"}
    renamed = {**TRACKING, "memory_attention": "attention_v2.onnx"}
    assert piece_engines(renamed)["attention_v2.onnx"] == "memory_attention.engine"
    for name in ("decoder.engine", "memory_encoder.engine", "memory_attention.engine"):
        (tmp_path / name).write_bytes(b"plan")
    info = {"files": {name: {} for name in ("decoder.engine", "memory_encoder.engine", "memory_attention.engine")}}
    for file, engine in piece_engines(TRACKING).items():
        assert piece_engine_path(tmp_path, file, TRACKING, info) == tmp_path / engine
    with pytest.raises(BundleError, match=r"no engine for encoder.onnx: run_piece runs decoder_batch.onnx, "
                                          r"memory_attention.onnx, memory_encoder.onnx"):
        piece_engine_path(tmp_path, "encoder.onnx", TRACKING, info)
    with pytest.raises(TensorRTError, match="memory_attention.engine is not in the engines' record"):
        piece_engine_path(tmp_path, "memory_attention.onnx", TRACKING, {"files": {}})


def test_a_bundle_without_tracking_engines_is_refused_with_the_fix(tmp_path):
    info = {"files": {"decoder.engine": {}}}
    with pytest.raises(BundleError, match=r"no memory_attention.engine.*built no tracking engines.*"
                                          r"--target desktop.*backend='onnxruntime'"):
        piece_engine_path(tmp_path, "memory_attention.onnx", TRACKING, info)
    (tmp_path / "memory_attention.onnx").write_bytes(b"graph")  # the ONNX file is there, the engine never built
    with pytest.raises(BundleError, match="has the ONNX file for memory_attention.engine but not the engine: build it "
                                          "on this machine with bash .*build_engines.sh"):
        piece_engine_path(tmp_path, "memory_attention.onnx", TRACKING, info)


class _EngineShapes:
    """What check_piece_feeds reads of an engine: inputs, shapes, profile ranges (no TensorRT)."""

    def __init__(self, memory: MemoryPieces):
        self.path = Path("memory_attention.engine")
        self.inputs = list(_feeds(memory, 1, 0))
        self.fixed = {name: value.shape for name, value in _feeds(memory, 1, 0).items() if name.startswith("curr")}
        self.ranges = {name: (corners[0], corners[2])
                       for name, corners in profile_shapes(MEMORY_ATTENTION, 0, memory).items()}

    def shape(self, name):
        return self.fixed.get(name) or (-1, *self.ranges[name][1][1:])

    def shape_range(self, name):
        return (self.fixed[name],) * 2 if name in self.fixed else self.ranges[name]


def test_memory_beyond_the_profile_is_refused_in_frames_and_pointers():
    memory = MemoryPieces(tokens_per_frame=16, memory_dim=64, pointer_tokens=4, num_maskmem=7, max_obj_ptrs=16)
    engine = _EngineShapes(memory)
    for frames, pointers in ((1, 0), (7, 16), (15, 24), (15, 0)):
        check_piece_feeds("memory_attention.onnx", engine, _feeds(memory, frames, pointers), TRACKING)
    with pytest.raises(ValueError, match=r"reads 16 memory frames \(256 tokens in spatial_mem\) but "
                                         r"memory_attention.engine takes at most 15: .* at most 9 prompted frames per "
                                         r"object. To track it: prompt this object on fewer frames"):
        check_piece_feeds("memory_attention.onnx", engine, _feeds(memory, 16, 16), TRACKING)
    with pytest.raises(ValueError, match=r"reads 25 object pointers \(100 tokens in ptr_mem\) but "
                                         r"memory_attention.engine takes at most 24"):
        check_piece_feeds("memory_attention.onnx", engine, _feeds(memory, 7, 25), TRACKING)
    feeds = _feeds(memory, 2, 1)
    feeds["spatial_mem"] = feeds["spatial_mem"][:-1]
    with pytest.raises(ValueError, match="31 tokens, not a whole number of memory frames of 16"):
        check_piece_feeds("memory_attention.onnx", engine, feeds, TRACKING)
    del feeds["ptr_mem_pos"]
    with pytest.raises(ValueError, match="memory_attention.onnx needs ptr_mem_pos"):
        check_piece_feeds("memory_attention.onnx", engine, feeds, TRACKING)


# ---- the backend's calls into TensorRT, through a stand-in ---------------------------------------

class _StandInCudart:
    """cuda-python's runtime calls the backend makes, on host bytearrays: (error, value) tuples as cuda-python's."""

    cudaMemcpyKind = SimpleNamespace(cudaMemcpyHostToDevice="H2D", cudaMemcpyDeviceToHost="D2H")

    def __init__(self):
        self.memory, self.mallocs, self.next = {}, [], 0x1000

    def cudaMalloc(self, size):
        pointer, self.next = self.next, self.next + ((size + 255) // 256 + 1) * 256
        self.memory[pointer] = bytearray(size)
        self.mallocs.append(size)
        return 0, pointer

    def cudaFree(self, pointer):
        del self.memory[pointer]
        return (0,)

    def cudaMemcpyAsync(self, destination, source, size, kind, stream):
        if kind == "H2D":
            self.memory[destination][:size] = ctypes.string_at(source, size)
        else:
            ctypes.memmove(destination, bytes(self.memory[source][:size]), size)
        return (0,)

    def cudaStreamSynchronize(self, stream):
        return (0,)

    def cudaStreamDestroy(self, stream):
        return (0,)


class _StandInEngine:
    """ICudaEngine, as far as the backend calls it (TensorRT 10 Python names)."""

    def __init__(self, io: dict):
        self.io = io  # name -> ("input" | "output", engine shape with -1, (min, opt, max) or None)
        self.num_io_tensors = len(io)
        self.context = _StandInContext(self)

    def get_tensor_name(self, index):
        return list(self.io)[index]

    def get_tensor_mode(self, name):
        return self.io[name][0]

    def get_tensor_shape(self, name):
        return self.io[name][1]

    def get_tensor_dtype(self, name):
        return "float32"

    def get_tensor_profile_shape(self, name, profile):
        return self.io[name][2]

    def create_execution_context(self):
        return self.context


class _StandInContext:
    """IExecutionContext, as far as the backend calls it. Execution records what it was given and writes
    nothing: outputs come back as the zeros they were."""

    def __init__(self, engine: _StandInEngine):
        self.io = engine.io
        self.set_shapes, self.addresses, self.executions = {}, {}, []

    def set_input_shape(self, name, shape):
        _, engine_shape, corners = self.io[name]
        smallest, _, largest = corners or (engine_shape, None, engine_shape)
        if not all(lo <= d <= hi for d, lo, hi in zip(shape, smallest, largest)):
            return False
        self.set_shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name):
        mode, shape, _ = self.io[name]
        return self.set_shapes.get(name, shape) if mode == "input" else shape

    def set_tensor_address(self, name, pointer):
        self.addresses[name] = pointer

    def execute_async_v3(self, stream):
        self.executions.append({name: (self.set_shapes.get(name), self.addresses[name]) for name in self.io})
        return True


def _stand_in_backend(folder: Path, engines: dict, cudart) -> TensorRTBackend:
    """A TensorRTBackend with its TensorRT objects replaced by stand-ins (no constructor: it needs TensorRT)."""
    trt = SimpleNamespace(TensorIOMode=SimpleNamespace(INPUT="input"), nptype=np.dtype)
    runtime = SimpleNamespace(deserialize_cuda_engine=lambda plan: engines[plan.decode()])
    backend = object.__new__(TensorRTBackend)
    backend.__dict__.update(folder=folder, tracking=TRACKING, info={"files": {n: {} for n in engines}}, _pieces={},
                            _lock=threading.Lock(), trt=trt, cudart=cudart, stream=7, runtime=runtime,
                            logger=SimpleNamespace(errors=[]), encoder=None, decoder=None)
    for name in engines:
        (folder / name).write_bytes(name.encode())
    return backend


def test_memory_attention_buffers_are_sized_once_by_the_profile_max(tmp_path):
    memory = MemoryPieces(tokens_per_frame=16, memory_dim=64, pointer_tokens=4, num_maskmem=7, max_obj_ptrs=16)
    corners = profile_shapes(MEMORY_ATTENTION, 0, memory)
    io = {name: ("input", (-1, 1, 64), corners[name]) for name in corners}
    io.update(curr=("input", (16, 1, 256), None), curr_pos=("input", (16, 1, 256), None),
              pix_feat_with_mem=("output", (16, 1, 256), None))
    engine, cudart = _StandInEngine(io), _StandInCudart()
    backend = _stand_in_backend(tmp_path, {"memory_attention.engine": engine}, cudart)
    context = engine.context
    calls = [(1, 0), (7, 16), (15, 24), (2, 0)]
    for frames, pointers in calls:
        feeds = _feeds(memory, frames, pointers, seed=frames)
        out = backend.run_piece("memory_attention.onnx", feeds)
        assert set(out) == {"pix_feat_with_mem"} and out["pix_feat_with_mem"].shape == (16, 1, 256)
        sent = context.executions[-1]
        assert {name: sent[name][0] for name in feeds} == {name: value.shape for name, value in feeds.items()}
        for name, value in feeds.items():  # each input reached its device buffer
            assert bytes(cudart.memory[sent[name][1]][:value.nbytes]) == value.tobytes()
    # One allocation per tensor, at the profile's largest shapes (float32), whatever the calls' sizes.
    largest = {name: int(np.prod(corners[name][2])) * 4 for name in corners}
    assert sorted(cudart.mallocs) == sorted([*largest.values(), 16 * 256 * 4, 16 * 256 * 4, 16 * 256 * 4])
    # Zero pointers: the engine is still handed a non-null address for the empty inputs.
    assert all(context.executions[0][name][1] for name in ("ptr_mem", "ptr_mem_pos"))
    with pytest.raises(ValueError, match="reads 16 memory frames"):
        backend.run_piece("memory_attention.onnx", _feeds(memory, 16, 0))
    assert len(context.executions) == len(calls)  # refused before TensorRT was asked
    backend.close()
    assert not cudart.memory  # every buffer freed


def test_the_batch_decoder_runs_through_run_piece_with_all_its_outputs(tmp_path):
    """decoder_batch.onnx maps to decoder.engine, opened with the backend; every output comes back by name."""
    io = {"point_coords": ("input", (-1, -1, 2), ((1, 1, 2), (1, 2, 2), (64, 16, 2))),
          "point_labels": ("input", (-1, -1), ((1, 1), (1, 2), (64, 16))),
          "iou_predictions": ("output", (1, 4), None), "low_res_masks": ("output", (1, 4, 8, 8), None),
          "object_score_logits": ("output", (1, 1), None), "obj_ptr": ("output", (1, 4, 256), None)}
    engine, cudart = _StandInEngine(io), _StandInCudart()
    backend = _stand_in_backend(tmp_path, {"decoder.engine": engine}, cudart)
    backend.decoder = tensorrt_backend._Engine(tmp_path / "decoder.engine", backend.runtime, backend.logger,
                                               backend.trt, cudart, backend.stream)
    backend.max_prompts, backend.max_points = 64, 16
    feeds = {"point_coords": np.zeros((1, 3, 2), np.float32), "point_labels": np.ones((1, 3), np.float32)}
    out = backend.run_piece("decoder_batch.onnx", feeds)
    assert {name: value.shape for name, value in out.items()} == {
        "iou_predictions": (1, 4), "low_res_masks": (1, 4, 8, 8), "object_score_logits": (1, 1), "obj_ptr": (1, 4, 256)}
    with pytest.raises(ValueError, match="17 prompt points .* at most 16"):
        backend.run_piece("decoder_batch.onnx", {"point_coords": np.zeros((1, 17, 2), np.float32),
                                                 "point_labels": np.ones((1, 17), np.float32)})
    backend.close()
    with pytest.raises(Exception, match="closed"):
        backend.run_piece("decoder_batch.onnx", feeds)
