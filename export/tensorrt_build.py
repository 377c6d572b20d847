"""TensorRT engines for a bundle's `tensorrt/` folder, or the script that builds them on the device.

Engines are tied to the GPU and the TensorRT version that built them, so a Jetson's
engines are best built on the Jetson. `prepare_folder` always writes what that takes
(plugin sources, `build_engines.sh` with the exact CMake and trtexec lines);
`build_engines` builds them here when the `tensorrt` package is importable.
Both build the same way: strongly typed (precision comes from the ONNX files, see
export/tensorrt_onnx.py), one decoder profile for 1..MAX_PROMPTS prompt sets of
1..MAX_POINTS points, a timing cache, the same profiles (`profile_shapes`).

A bundle that tracks video (SAM 2: tensorrt/ holds memory_encoder.onnx and memory_attention.onnx)
gets two more engines. memory_encoder.engine is static (one object, one frame). memory_attention.engine
has one profile over its two token counts (`memory_bounds`):
- spatial memory: 1 .. MAX_CONDITIONING_FRAMES + num_maskmem - 1 frames of g*g tokens (15 for SAM 2.1:
  num_maskmem + 8), tuned for num_maskmem (7: one prompted frame and the 6 latest tracked ones);
- object pointers: 0 .. MAX_CONDITIONING_FRAMES + max_obj_ptrs - 1 pointers of 4 tokens (24, 96 tokens),
  tuned for max_obj_ptrs (16, 64 tokens). SAM2Base reads the pointers of every prompted frame not
  ahead of the current one plus up to max_obj_ptrs - 1 tracked ones, so with several prompted
  frames there are more than max_obj_ptrs. Zero pointers is a real case (a frame tracked before the
  object's first prompted frame, or in reverse from the last one): TensorRT 10 takes 0 as a profile
  minimum ("0 <= minDims.d[i]", IOptimizationProfile::setDimensions in NvInferRuntime.h, 10.3 and
  11.1) and runs empty tensors; in this graph the empty pointer tokens only meet Transpose, Add,
  Slice and Concat before joining the spatial tokens (tests/test_tensorrt_tracking.py checks that),
  all of which TensorRT defines for empty tensors. No padding token stands in for "no pointer":
  any extra key changes the softmax, so it would not be exact.
An object prompted on more than MAX_CONDITIONING_FRAMES frames overflows both; the TensorRT backend
refuses such a frame with the fix (runtime/backends/tensorrt_backend.py).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

from plugins.hyperlinear import spec
from runtime.backends.engines_file import record as record_engines
from runtime.backends.tensorrt_backend import TensorRTError, gpu_description, load_plugin, make_logger

from .tensorrt_onnx import DECODER, ENCODER, MEMORY_ATTENTION, MEMORY_ENCODER, MemoryPieces, read_memory_pieces

PLUGIN_DIR = Path(spec.__file__).resolve().parent
PLUGIN_SOURCES = ("CMakeLists.txt", "hyperlinear_kernel.cuh", "hyperlinear_kernel.cu", "hyperlinear_plugin.cpp")
BUILD_SCRIPT = "build_engines.sh"
TIMING_CACHE = "timing.cache"
ENGINES = {ENCODER: "encoder.engine", DECODER: "decoder.engine"}
MEMORY_ENGINES = {MEMORY_ENCODER: "memory_encoder.engine", MEMORY_ATTENTION: "memory_attention.engine"}
# Prompted (conditioning) frames per object that memory_attention.engine always takes: with 9, the
# largest memory is 9 + 6 = 15 frames (num_maskmem + 8) and 9 + 15 = 24 pointers. Each frame is g*g
# tokens (4096 at 1024 px): the profile maximum sizes the engine's activation memory, so it stays small.
MAX_CONDITIONING_FRAMES = 9
# Points per prompt, padding point included: one click (+ padding) is the common case.
MIN_POINTS, OPT_POINTS, MAX_POINTS = 1, 2, 16
# Prompt sets per decoder call (Session.predict_batch; segment-everything sends 64 at a time).
# Tuned for one: a single click is what interactive use waits on.
MIN_PROMPTS, OPT_PROMPTS, MAX_PROMPTS = 1, 1, 64
PROFILE = ((MIN_PROMPTS, MIN_POINTS), (OPT_PROMPTS, OPT_POINTS), (MAX_PROMPTS, MAX_POINTS))  # min, opt, max
# Orin; Ampere (A100, RTX 30), Ada (RTX 40, L4), Hopper, with compute_90 PTX for newer GPUs to
# JIT (the one PTX: every listed GPU has its own SASS). Quoted in the script: ";" ends a shell command.
CUDA_ARCHITECTURES = {"jetson": "87", "desktop": "80-real;86-real;89-real;90"}
WORKSPACE_MIB = {"jetson": 1024, "desktop": 4096}
# Where the CUDA toolkit puts nvcc; JetPack installs it there without putting it on PATH.
DEFAULT_NVCC = "/usr/local/cuda/bin/nvcc"
DEFAULT_TENSORRT_ROOT = "/usr"  # JetPack's layout


def nvcc_missing(nvcc: str) -> str:
    return (f"no CUDA compiler at {nvcc}: set CUDACXX to nvcc's path, or install the CUDA toolkit (JetPack: "
            f"sudo apt install nvidia-jetpack); nvcc is looked for in CUDACXX, then on PATH, then at {DEFAULT_NVCC}")


def decoder_shapes(prompts: int, points: int, low_res_size: int) -> dict[str, tuple]:
    """The batch decoder's dynamic inputs for `prompts` sets of `points` points."""
    return {"point_coords": (prompts, points, 2), "point_labels": (prompts, points),
            "mask_input": (prompts, 1, low_res_size, low_res_size), "has_mask_input": (prompts,)}


def memory_bounds(memory: MemoryPieces) -> tuple[tuple[int, int], ...]:
    """(memory frames, object pointers) at memory_attention.engine's min, opt and max (see the module's doc)."""
    return ((1, 0), (memory.num_maskmem, memory.max_obj_ptrs),
            (MAX_CONDITIONING_FRAMES + memory.num_maskmem - 1, MAX_CONDITIONING_FRAMES + memory.max_obj_ptrs - 1))


def memory_attention_shapes(frames: int, pointers: int, memory: MemoryPieces) -> dict[str, tuple]:
    """memory_attention's dynamic inputs for `frames` memory frames and `pointers` object pointers."""
    spatial = (frames * memory.tokens_per_frame, 1, memory.memory_dim)
    tokens = (pointers * memory.pointer_tokens, 1, memory.memory_dim)
    return {"spatial_mem": spatial, "spatial_mem_pos": spatial, "ptr_mem": tokens, "ptr_mem_pos": tokens}


def engines_for(memory: MemoryPieces | None) -> dict[str, str]:
    """{ONNX file: engine} in the tensorrt/ folder: encoder and decoder, and the memory pieces where it has them."""
    return {**ENGINES, **(MEMORY_ENGINES if memory else {})}


def profile_shapes(onnx_name: str, low_res_size: int, memory: MemoryPieces | None = None) -> dict[str, tuple] | None:
    """{input: (min, opt, max) shape} of the engine's one profile; None for a static engine. The Python
    build and build_engines.sh both build from it."""
    if onnx_name == DECODER:
        corners = [decoder_shapes(*shape, low_res_size) for shape in PROFILE]
    elif onnx_name == MEMORY_ATTENTION:
        if memory is None:
            raise ValueError(f"{MEMORY_ATTENTION}'s profile needs its sizes (export.tensorrt_onnx.MemoryPieces)")
        corners = [memory_attention_shapes(*bounds, memory) for bounds in memory_bounds(memory)]
    else:
        return None  # encoder, memory encoder: every shape fixed
    return {name: tuple(corner[name] for corner in corners) for name in corners[0]}


def _shape_flags(shapes: dict[str, tuple]) -> list[str]:
    return [f"--{kind}Shapes=" + ",".join(f"{name}:{'x'.join(map(str, corners[index]))}"
                                          for name, corners in shapes.items())
            for index, kind in enumerate(("min", "opt", "max"))]


def cmake_commands(source: str, build: str, target: str, tensorrt_root: str) -> tuple[list[str], list[str]]:
    """(configure, build) argument lists for the plugin, the one recipe of build_engines.sh and build_plugin."""
    configure = ["cmake", "-S", source, "-B", build, "-DCMAKE_BUILD_TYPE=Release",
                 f"-DTENSORRT_ROOT={tensorrt_root}", f"-DCMAKE_CUDA_ARCHITECTURES={CUDA_ARCHITECTURES[target]}"]
    return configure, ["cmake", "--build", build, "-j"]


def _shell_line(command: list[str]) -> str:
    """command as one bash line. A "$NAME" in an argument is left to the shell, in double quotes so
    that its value (a path with spaces) stays one word; the rest is quoted literally."""
    def word(argument: str) -> str:
        parts = re.split(r"(\$[A-Za-z_][A-Za-z0-9_]*)", argument)
        return "".join(f'"{part}"' if part.startswith("$") else shlex.quote(part) for part in parts if part)

    return " ".join(word(argument) for argument in command)


def trtexec_command(onnx_name: str, target: str, plugin: bool, low_res_size: int,
                    memory: MemoryPieces | None = None) -> str:
    engine = engines_for(memory)[onnx_name]
    parts = ['"$TRTEXEC"', f"--onnx={onnx_name}", f"--saveEngine={engine}.partial", "--stronglyTyped",
             f"--timingCacheFile={TIMING_CACHE}", f"--memPoolSize=workspace:{WORKSPACE_MIB[target]}M",
             "--skipInference"]
    if plugin:
        # loadLibrary on the builder's registry, as the Python build and backend load it.
        parts.append(f"--dynamicPlugins=plugin/build/{spec.PLUGIN_LIBRARY}")
    shapes = profile_shapes(onnx_name, low_res_size, memory)
    if shapes:
        parts += _shape_flags(shapes)
    return " ".join(parts)


def _record_flags(memory: MemoryPieces | None) -> str:
    flags = f"--max-points {MAX_POINTS} --max-prompts {MAX_PROMPTS}"
    if memory:
        frames, pointers = memory_bounds(memory)[2]
        flags += f" --max-memory-frames {frames} --max-pointers {pointers}"
    return flags


def build_script(target: str, plugin: bool, low_res_size: int, memory: MemoryPieces | None = None) -> str:
    """The shell script that builds the plugin and the engines inside the tensorrt/ folder
    (`low_res_size`: the model's mask_input side, 4x its embedding grid; `memory`: the memory
    pieces' sizes where the bundle tracks video, which adds their two engines)."""
    lines = [
        "#!/usr/bin/env bash",
        f"# Build this bundle's TensorRT engines for {target}, on the machine that will run them:",
        "# an engine only runs on the GPU model and TensorRT version that built it.",
        "# Needs the CUDA toolkit, CMake >= 3.18 and TensorRT >= 10.3 (JetPack 6.1+). Set CUDACXX",
        "# (nvcc), TENSORRT_ROOT (default /usr, JetPack's layout) and TRTEXEC if they are elsewhere.",
        "set -euo pipefail",
        'cd "$(dirname "$0")"',
        f'TENSORRT_ROOT="${{TENSORRT_ROOT:-{DEFAULT_TENSORRT_ROOT}}}"',
        'TRTEXEC="${TRTEXEC:-$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)}"',
    ]
    if plugin:
        lines += [
            "# The HyperLinear plugin (fused decode + GEMM) that the encoder's compressed layers need.",
            "# JetPack leaves nvcc off PATH; CMake takes the compiler from CUDACXX.",
            f'CUDACXX="${{CUDACXX:-$(command -v nvcc || echo {DEFAULT_NVCC})}}"',
            f'[ -f "$CUDACXX" ] && [ -x "$CUDACXX" ] || {{ echo "{BUILD_SCRIPT}: {nvcc_missing("$CUDACXX")}" >&2; exit 1; }}',
            "export CUDACXX",
            *map(_shell_line, cmake_commands("plugin", "plugin/build", target, "$TENSORRT_ROOT")),
        ]
    if memory:
        frames, pointers = memory_bounds(memory)[2]
        lines += [f"# Video tracking: memory_attention.engine takes 1..{frames} memory frames and 0..{pointers} "
                  f"object pointers ({MAX_CONDITIONING_FRAMES} prompted frames per object at most)."]
    for onnx_name, engine in engines_for(memory).items():
        lines += [f"{trtexec_command(onnx_name, target, plugin, low_res_size, memory)} | tee {engine}.log",
                  f"mv {engine}.partial {engine}"]
    lines += [
        "# What the engines are tied to, with their hashes, into engines.json and the bundle's manifest;",
        "# runtime.Session checks them before loading the engines. Needs samedge (its runtime) installed.",
        "version=$(grep -o 'TensorRT version: [0-9.]*' encoder.engine.log | head -1 | cut -d' ' -f3 || true)",
        "capability=$(grep -o 'Compute Capability: [0-9.]*' encoder.engine.log | head -1 | cut -d' ' -f3 || true)",
        "device=$(grep -o 'Selected Device: .*' encoder.engine.log | head -1 | cut -d' ' -f3- || true)",
        '"${PYTHON:-python3}" -m runtime.backends.engines_file . --tensorrt "${version:-unknown}" '
        '--gpu "${device:-unknown}" --compute-capability "${capability:-unknown}" '
        f'{_record_flags(memory)} --built-by {BUILD_SCRIPT}',
        'echo "engines built in $(pwd); run the bundle with runtime.Session(BUNDLE, backend=\\"tensorrt\\")"',
    ]
    return "\n".join(lines) + "\n"


def prepare_folder(folder: Path, target: str, plugin: bool, low_res_size: int) -> Path:
    """Copy the plugin sources (when the model has HyperLinear nodes) and write build_engines.sh
    (with the memory pieces' engines where the folder has memory_attention.onnx and memory_encoder.onnx)."""
    if plugin:
        (folder / "plugin").mkdir(exist_ok=True)
        for name in PLUGIN_SOURCES:
            shutil.copy2(PLUGIN_DIR / name, folder / "plugin" / name)
    script = folder / BUILD_SCRIPT
    script.write_text(build_script(target, plugin, low_res_size, read_memory_pieces(folder)))
    script.chmod(0o755)
    return script


def tensorrt_version() -> str | None:
    try:
        import tensorrt  # optional: only where the tensorrt package is installed
    except ImportError:
        return None
    return tensorrt.__version__


def find_nvcc() -> str:
    """The nvcc for CMake, found as build_engines.sh finds it."""
    nvcc = os.environ.get("CUDACXX") or shutil.which("nvcc") or DEFAULT_NVCC
    if not (os.path.isfile(nvcc) and os.access(nvcc, os.X_OK)):
        raise TensorRTError(nvcc_missing(nvcc))
    return nvcc


def build_plugin(folder: Path, target: str) -> Path:
    """CMake-build the plugin library from the folder's sources (TENSORRT_ROOT from the environment)."""
    build = folder / "plugin" / "build"
    root = os.environ.get("TENSORRT_ROOT", DEFAULT_TENSORRT_ROOT)
    env = {**os.environ, "CUDACXX": find_nvcc()}
    for command in cmake_commands(str(folder / "plugin"), str(build), target, root):
        result = subprocess.run(command, capture_output=True, text=True, env=env)
        if result.returncode != 0:
            raise TensorRTError(f"building the HyperLinear plugin failed ({' '.join(command)}):\n"
                                f"{result.stderr[-1500:]}\nSet TENSORRT_ROOT to the TensorRT install "
                                "(include/NvInfer.h, lib/libnvinfer.so)")
    return build / spec.PLUGIN_LIBRARY


def build_engines(folder: Path, target: str, plugin: bool, low_res_size: int) -> dict:
    """Build encoder.engine and decoder.engine in `folder` with the tensorrt package, and the memory
    pieces' engines where the folder has them."""
    import tensorrt as trt  # optional: only where the tensorrt package is installed

    memory = read_memory_pieces(folder)
    logger = make_logger(trt)
    builder = trt.Builder(logger)
    if plugin:
        build_plugin(folder, target)
        load_plugin(trt, folder, logger)  # before parsing: the parser looks the creator up by the node's namespace
    cache_path = folder / TIMING_CACHE
    for onnx_name, engine_name in engines_for(memory).items():
        network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(folder / onnx_name)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise TensorRTError(f"TensorRT {trt.__version__} cannot parse {folder / onnx_name}: {errors[:1500]}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_MIB[target] << 20)
        cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
        shapes = profile_shapes(onnx_name, low_res_size, memory)
        if shapes:
            profile = builder.create_optimization_profile()
            for name, (smallest, tuned, largest) in shapes.items():
                profile.set_shape(name, smallest, tuned, largest)
            config.add_optimization_profile(profile)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise TensorRTError(f"TensorRT could not build {engine_name}: {'; '.join(logger.errors)[:1500]}")
        partial = folder / f"{engine_name}.partial"
        partial.write_bytes(bytes(plan))
        os.replace(partial, folder / engine_name)
        cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    # engines.json with the engines' hashes; export.build puts the record into the manifest it writes.
    info = {"tensorrt": trt.__version__, **gpu_description(), "max_points": MAX_POINTS, "max_prompts": MAX_PROMPTS,
            "built_by": "export.build"}
    if memory:
        info["max_memory_frames"], info["max_pointers"] = memory_bounds(memory)[2]
    return record_engines(folder, info)
