"""TensorRT backend: the bundle's encoder.engine and decoder.engine, with cuda-python buffers;
for video tracking (`run_piece`), its memory_encoder.engine and memory_attention.engine too.

No torch: TensorRT's Python API runs the engines, cuda-python (`cuda.bindings.runtime`,
or `cuda.cudart` before 12.6) owns the device memory and the stream. The HyperLinear
plugin library is registered with TensorRT's `IPluginRegistry.load_library` before the
engines are deserialised (docs/design.md, TensorRT section); export/tensorrt_build.py
loads it the same way before parsing.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from plugins.hyperlinear.spec import PLUGIN_KEY, PLUGIN_LIBRARY

from ..bundle import BATCH_DECODER_FILE, BundleError, sha256_file
from ..geometry import geometry
from ..signature import SAM_FEATURES, check_decoder, check_encoder
from . import engines_file
from .base import BackendOptions, BaseBackend
from .engines_file import PIECE_ENGINES, REBUILD, plugin_library

# The manifest's tracking section (compress/families/sam2.py tracking_manifest): key -> its default file, engine.
_TRACKING_PIECES = {"memory_encoder": ("memory_encoder.onnx", PIECE_ENGINES[0]),
                    "memory_attention": ("memory_attention.onnx", PIECE_ENGINES[1])}
TRACKING_ENGINES_FIX = ("rebuild the bundle with python -m export.build --target desktop (or --target jetson, then "
                        "bash tensorrt/build_engines.sh on the Jetson), which builds the memory pieces' engines too; "
                        "or track with backend='onnxruntime'")
# cuda-python 13 needs driver r580+, which JetPack 6 (CUDA 12.6) does not have.
CUDA_PYTHON_PIN = "cuda-python>=12.6,<13"
CUDA_PYTHON_FIX = (f'on a Jetson with JetPack 6, pip install "{CUDA_PYTHON_PIN}" (or the cuda-python matching the '
                   "CUDA that nvcc --version reports); on a desktop, update the NVIDIA driver (cuda-python 13 needs "
                   "r580 or newer)")
# cudaError_t values (driver_types.h) that a cuda-python newer than the driver gives on its first call.
_DRIVER_ERRORS = {
    35: "cudaErrorInsufficientDriver: this NVIDIA driver is older than the CUDA that cuda-python was built for",
    100: "cudaErrorNoDevice: CUDA sees no GPU; if nvidia-smi or tegrastats does (and CUDA_VISIBLE_DEVICES hides "
         "none), cuda-python is newer than the driver",
}

_plugin_libraries: dict[Path, object] = {}  # handles from load_library, kept for the life of the process
_loaded_plugin: dict[str, str] = {}  # the library this process registered: {"path": ..., "sha256": ...}


class TensorRTError(BundleError):
    """An engine this machine cannot run, with the reason and the fix."""


def import_tensorrt():
    # tensorrt and cuda-python are extras (JetPack's apt package, a desktop wheel): imported when an
    # engine is opened, so this module (engine checks, load_plugin for export) imports without them.
    try:
        import tensorrt
    except ImportError as err:
        raise TensorRTError("the TensorRT backend needs the tensorrt Python package (JetPack: apt install "
                            "python3-libnvinfer; desktop: pip install tensorrt) and cuda-python (pip install "
                            f"\"{CUDA_PYTHON_PIN}\"); or use backend='onnxruntime' with the bundle's ONNX files") from err
    return tensorrt


def import_cudart():
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError as err:
            raise TensorRTError(f"the TensorRT backend needs cuda-python for device buffers: pip install "
                                f"\"{CUDA_PYTHON_PIN}\" (JetPack 6), or the cuda-python matching your CUDA") from err
    return cudart


def _error_name(error) -> str | None:
    """None for cudaSuccess, else the error's name and code."""
    code = int(error)
    return None if code == 0 else f"{getattr(error, 'name', error)} ({code})"


def check_cuda(result):
    """cuda-python returns (error, *values); raise on error, return the values."""
    error, *values = result
    if int(error) in _DRIVER_ERRORS:
        raise TensorRTError(f"a CUDA call failed with {_DRIVER_ERRORS[int(error)]}: {CUDA_PYTHON_FIX}")
    failure = _error_name(error)
    if failure:
        raise RuntimeError(f"CUDA call failed: {failure}")
    return values[0] if len(values) == 1 else values


def gpu_description() -> dict:
    """Name and compute capability of device 0 (what an engine is tied to)."""
    cudart = import_cudart()
    properties = check_cuda(cudart.cudaGetDeviceProperties(0))
    name = properties.name.decode(errors="replace").rstrip("\x00") if isinstance(properties.name, bytes) \
        else str(properties.name)
    return {"gpu": name, "compute_capability": f"{properties.major}.{properties.minor}"}


def claim_plugin_library(library: Path) -> bool:
    """Whether `library` must still be loaded: True the first time in this process, False when this
    very library (same content) is loaded already. Another one is refused: TensorRT's registry holds
    one creator per name for the whole process, so a second bundle's plugin would silently run with
    the first one's code."""
    digest = sha256_file(library)
    if not _loaded_plugin:
        _loaded_plugin.update(path=str(Path(library).resolve()), sha256=digest)
        return True
    if _loaded_plugin["sha256"] == digest:
        return False
    raise TensorRTError(f"this process already runs the HyperLinear plugin library {_loaded_plugin['path']} "
                        f"(SHA-256 {_loaded_plugin['sha256'][:12]}...), and {library} is another build "
                        f"({digest[:12]}...): TensorRT keeps one plugin per name for the process, so this bundle "
                        "would run the other's code. Open this bundle in another process, or build both bundles' "
                        "engines with the same plugin")


def load_plugin(trt, folder: Path, logger) -> Path | None:
    """Register the HyperLinear creator of the plugin library in `folder` (or plugin/build below it) with
    TensorRT's plugin registry, before a parse or a deserialisation needs it. None when there is no library.

    Once per process (`claim_plugin_library`): TensorRT's load_library fails when the creator is already
    registered, and a different library is refused."""
    library = plugin_library(folder)
    if library is None:
        return None
    if not claim_plugin_library(library):
        return library
    registry = trt.get_plugin_registry()
    if registry.get_creator(*PLUGIN_KEY) is None:
        logger.errors.clear()
        handle = registry.load_library(str(library))
        if handle is None:
            _loaded_plugin.clear()
            reason = "; ".join(logger.errors) or "TensorRT gave no reason"
            raise TensorRTError(f"TensorRT {trt.__version__} could not load the plugin library {library} "
                                f"({reason[:400]}): rebuild it on this machine from the bundle's plugin sources "
                                "(bash tensorrt/build_engines.sh), with libcudart and libnvinfer on the loader path")
        _plugin_libraries[library] = handle
        if registry.get_creator(*PLUGIN_KEY) is None:
            raise TensorRTError(f"{library} loaded but registered no {'/'.join(PLUGIN_KEY)} creator: it is not "
                                "samedge's HyperLinear plugin, or an old build of it; rebuild it (build_engines.sh)")
    return library


def check_engine_info(folder: Path, info: dict, tensorrt_version: str) -> None:
    """Compare the TensorRT version and GPU the engines were built for (engines_file's record) with this machine's."""
    built_with = str(info.get("tensorrt", ""))
    if built_with not in ("", "unknown") and built_with.split(".")[:3] != tensorrt_version.split(".")[:3]:
        raise TensorRTError(f"the engines in {folder} were built with TensorRT {built_with}, this machine has "
                            f"{tensorrt_version}; engines only run on the TensorRT version that built them: {REBUILD}")
    wanted = info.get("compute_capability")
    if wanted and wanted != "unknown":
        here = gpu_description()
        if here["compute_capability"] != wanted:
            raise TensorRTError(f"the engines in {folder} were built for {info.get('gpu', 'another GPU')} (compute "
                                f"capability {wanted}); this GPU is {here['gpu']} ({here['compute_capability']}): "
                                f"{REBUILD}")


def piece_engines(tracking: dict | None) -> dict[str, str]:
    """{bundle ONNX file: engine in tensorrt/} that run_piece runs: the batch decoder's engine, and the
    memory pieces' under the file names the manifest's tracking section gives (their defaults without one)."""
    engines = {BATCH_DECODER_FILE: "decoder.engine"}  # tensorrt/decoder.onnx is the bundle's decoder_batch.onnx
    for key, (default, engine) in _TRACKING_PIECES.items():
        engines[str((tracking or {}).get(key, default))] = engine
    return engines


def piece_engine_path(folder: Path, file: str, tracking: dict | None, info: dict) -> Path:
    """The engine in `folder` that runs the bundle's `file`, refused with the fix where there is none, or
    where the engines' record (engines_file) does not list it."""
    engines = piece_engines(tracking)
    if file not in engines:
        runs = ", ".join(sorted(engines))
        raise BundleError(f"the TensorRT backend has no engine for {file}: run_piece runs {runs} (the encoder runs "
                          "through encode)")
    path = Path(folder) / engines[file]
    if not path.is_file():
        if (Path(folder) / _source_of(engines[file])).is_file():
            raise BundleError(f"{folder} has the ONNX file for {path.name} but not the engine: build it on this "
                              f"machine with bash {folder}/build_engines.sh (or {TRACKING_ENGINES_FIX})")
        raise BundleError(f"{folder} has no {path.name}, which video tracking runs {file} with: these engines were "
                          f"built by a samedge that built no tracking engines. To track: {TRACKING_ENGINES_FIX}")
    if path.name not in (info.get("files") or {}):
        raise TensorRTError(f"{path} is not in the engines' record (engines.json / the manifest): it was built by "
                            f"hand or copied in, so nothing says what it was built from; {REBUILD}")
    return path


def _source_of(engine: str) -> str:
    return engines_file.ENGINE_SOURCES[engine]


def check_piece_feeds(file: str, engine, feeds: dict, tracking: dict | None) -> None:
    """Refuse what `engine` (built from `file`) cannot take, before TensorRT sees it: a missing input, or a
    shape outside the engine's profile; memory_attention's token counts are said in memory frames and
    object pointers, with the fix."""
    missing = [name for name in engine.inputs if name not in feeds]
    if missing:
        raise ValueError(f"{file} needs {', '.join(missing)} (its inputs: {', '.join(engine.inputs)})")
    for name in engine.inputs:
        shape = tuple(np.shape(feeds[name]))
        smallest, largest = engine.shape_range(name)
        if len(shape) == len(largest) and all(lo <= d <= hi for d, lo, hi in zip(shape, smallest, largest)):
            if name in ("spatial_mem", "spatial_mem_pos") and shape[0] % _memory_tokens(engine, tracking):
                raise ValueError(f"{file}: {name} has {shape[0]} tokens, not a whole number of memory frames of "
                                 f"{_memory_tokens(engine, tracking)} tokens")
            continue
        if (len(shape) == len(largest) and shape[0] > largest[0] and shape[1:] == largest[1:]
                and name in ("spatial_mem", "spatial_mem_pos", "ptr_mem", "ptr_mem_pos")):
            _refuse_memory(file, engine, name, shape[0], largest[0], tracking)
        raise ValueError(f"{file}: {name} of shape {shape} is outside what {engine.path.name} takes "
                         f"({smallest} to {largest})")


def _memory_tokens(engine, tracking: dict | None) -> int:
    """One memory frame's tokens: the image grid's (curr's), or a perceiver's latents (the manifest's
    tracking.memory_tokens: EdgeTAM)."""
    return int((tracking or {}).get("memory_tokens", engine.shape("curr")[0]))


def _refuse_memory(file: str, engine, name: str, tokens: int, most: int, tracking: dict | None) -> None:
    """memory_attention's memory too large for its engine's profile (export/tensorrt_build.py memory_bounds)."""
    tokens_per_frame, channels = _memory_tokens(engine, tracking), engine.shape("curr")[2]
    num_maskmem = int((tracking or {}).get("num_maskmem", 7))
    fix = ("prompt this object on fewer frames (clear_all_prompts_in_frame), track it with backend='onnxruntime', "
           "or rebuild the engines with a larger MAX_CONDITIONING_FRAMES (export/tensorrt_build.py)")
    if name.startswith("spatial"):
        frames, largest = tokens // tokens_per_frame, most // tokens_per_frame
        raise ValueError(f"this frame reads {frames} memory frames ({tokens} tokens in {name}) but {engine.path.name} "
                         f"takes at most {largest}: every prompted frame of the object and up to {num_maskmem - 1} "
                         f"tracked ones, so at most {largest - num_maskmem + 1} prompted frames per object. To track "
                         f"it: {fix}")
    per_pointer = channels // engine.shape(name)[2]
    raise ValueError(f"this frame reads {tokens // per_pointer} object pointers ({tokens} tokens in {name}) but "
                     f"{engine.path.name} takes at most {most // per_pointer}; the pointers of every prompted frame "
                     f"count. To track it: {fix}")


def make_logger(trt):
    """A TensorRT logger that keeps error messages, so a failed deserialisation can say why."""

    class Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors = []

        def log(self, severity, message):
            if severity <= trt.ILogger.Severity.ERROR:
                self.errors.append(str(message))

    return Logger()


class _Engine:
    """One engine, its execution context and device buffers (grown on demand)."""

    def __init__(self, path: Path, runtime, logger, trt, cudart, stream):
        self.trt, self.cudart, self.stream = trt, cudart, stream
        self.path = path
        logger.errors.clear()
        self.engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            reason = "; ".join(logger.errors) or "TensorRT gave no reason"
            hint = REBUILD
            if "plugin" in reason.lower() or "HyperLinear" in reason:
                hint = (f"the HyperLinear plugin is missing: put {PLUGIN_LIBRARY} beside the engines "
                        "(build_engines.sh builds it)")
            raise TensorRTError(f"TensorRT cannot load {path} ({reason[:400]}): {hint}")
        self.context = self.engine.create_execution_context()
        self.names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in self.names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)

    def shape(self, name: str) -> tuple:
        return tuple(self.engine.get_tensor_shape(name))

    def io_shapes(self) -> tuple[dict, dict]:
        """({input: shape}, {output: shape}), -1 for dynamic dimensions."""
        return ({n: self.shape(n) for n in self.inputs},
                {n: self.shape(n) for n in self.names if n not in self.inputs})

    def max_shape(self, name: str) -> tuple:
        return tuple(self.engine.get_tensor_profile_shape(name, 0)[2])

    def shape_range(self, name: str) -> tuple[tuple, tuple]:
        """(smallest, largest) shape an input takes: its profile's min and max, or its fixed shape."""
        shape = self.shape(name)
        if -1 not in shape:
            return shape, shape
        smallest, _, largest = self.engine.get_tensor_profile_shape(name, 0)
        return tuple(smallest), tuple(largest)

    def reserve(self) -> None:
        """Device buffers for the largest shapes the profile allows, allocated once: a memory that grows
        frame after frame then never reallocates. An output whose size depends on the data grows in run."""
        for name in self.inputs:
            if not self.context.set_input_shape(name, self.shape_range(name)[1]):
                raise TensorRTError(f"TensorRT refused {name}'s largest profile shape {self.shape_range(name)[1]}")
        for name in self.names:
            shape = tuple(self.context.get_tensor_shape(name))
            if -1 not in shape:
                itemsize = np.dtype(self.trt.nptype(self.engine.get_tensor_dtype(name))).itemsize
                self._buffer(name, int(np.prod(shape, dtype=np.int64)) * itemsize)

    def _buffer(self, name: str, nbytes: int) -> int:
        pointer, size = self.buffers.get(name, (0, 0))
        if size < nbytes:
            if pointer:
                del self.buffers[name]  # close must not free it again should the cudaMalloc below fail
                check_cuda(self.cudart.cudaFree(pointer))
            pointer, size = int(check_cuda(self.cudart.cudaMalloc(max(nbytes, 1)))), nbytes
            self.buffers[name] = (pointer, size)
        self.context.set_tensor_address(name, pointer)
        return pointer

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        kind = self.cudart.cudaMemcpyKind
        for name in self.inputs:
            array = np.ascontiguousarray(feeds[name], dtype=self.trt.nptype(self.engine.get_tensor_dtype(name)))
            if not self.context.set_input_shape(name, array.shape):
                smallest, largest = self.shape_range(name)
                raise ValueError(f"{name} of shape {array.shape} is outside what the engine takes ({smallest} to "
                                 f"{largest})")
            # An empty input (no object pointer) still gets a non-null buffer: _buffer allocates at least a byte.
            pointer = self._buffer(name, array.nbytes)
            check_cuda(self.cudart.cudaMemcpyAsync(pointer, array.ctypes.data, array.nbytes,
                                               kind.cudaMemcpyHostToDevice, self.stream))
        outputs = {}
        for name in self.names:
            if name in self.inputs:
                continue
            dtype = self.trt.nptype(self.engine.get_tensor_dtype(name))
            outputs[name] = np.empty(tuple(self.context.get_tensor_shape(name)), dtype=dtype)
            self._buffer(name, outputs[name].nbytes)
        if not self.context.execute_async_v3(self.stream):
            raise RuntimeError("TensorRT failed to run the engine (see its log above)")
        for name, array in outputs.items():
            check_cuda(self.cudart.cudaMemcpyAsync(array.ctypes.data, self.buffers[name][0], array.nbytes,
                                               kind.cudaMemcpyDeviceToHost, self.stream))
        check_cuda(self.cudart.cudaStreamSynchronize(self.stream))
        return outputs

    def close(self) -> list[str | None]:
        """Drop the execution context, free the device buffers, drop the engine; each cudaFree's error name."""
        # TensorRT 10's Python objects have no destroy(): each is freed with its last reference, the
        # context before its engine. cudaFree waits for work still queued on the buffer.
        self.context = None
        errors = [_error_name(self.cudart.cudaFree(pointer)[0]) for pointer, _ in self.buffers.values()]
        self.buffers.clear()
        self.engine = None
        return errors


class TensorRTBackend(BaseBackend):
    name = "tensorrt"
    batch_decoding = "native"  # the decoder engine is the batch decoder (export/batch_decoder.py)

    @classmethod
    def _open(cls, bundle, options: BackendOptions) -> "TensorRTBackend":
        if not bundle.engines:
            raise BundleError(f"{bundle.root} has no TensorRT engines: build them on the device with "
                              f"bash {bundle.root}/tensorrt/build_engines.sh, or build the bundle with "
                              "python -m export.build --target jetson|desktop where tensorrt is installed")
        info = engines_file.check(bundle.engines[0].parent, bundle.engines, bundle.manifest, verify=False)
        return cls(*bundle.engines, img_size=bundle.img_size, info=info, features=bundle.features,
                   tracking=bundle.tracking, resize=bundle.resize)

    @classmethod
    def verify_files(cls, bundle) -> None:
        """The bundle's files, and the engines and plugin library against their recorded hashes."""
        bundle.verify()
        if bundle.engines:
            folder = bundle.engines[0].parent
            engines_file.check(folder, bundle.engines + engines_file.piece_engines(folder), bundle.manifest,
                               verify=True)

    def __init__(self, encoder_engine: Path, decoder_engine: Path, img_size: int | None = None,
                 info: dict | None = None, features: tuple = SAM_FEATURES, tracking: dict | None = None,
                 resize: str | None = None):
        """`img_size`: what the bundle's manifest says the encoder takes (checked); `info`: the engines'
        record (engines_file.check; None: read and checked here, engines.json required); `features`: the
        encoder's outputs the decoder takes (the bundle's); `tracking`: the manifest's tracking section
        (the memory pieces' file names, for run_piece); `resize`: the bundle's resize rule (runtime/geometry.py:
        EfficientViT-SAM's L models take 512 px images but upscale masks in SAM's 1024 px frame)."""
        self.features = tuple(features)
        self.geometry = geometry(resize)
        self.tracking = tracking
        self._pieces: dict[str, _Engine] = {}  # memory pieces' engines, opened by run_piece when first asked
        folder = Path(encoder_engine).parent
        self.folder = folder
        if info is None:
            info = engines_file.check(folder, (Path(encoder_engine), Path(decoder_engine)), None, verify=False)
        trt = import_tensorrt()
        self.cudart = import_cudart()
        check_engine_info(folder, info, trt.__version__)
        self.trt, self.info = trt, info
        # One execution context, stream and set of buffers per engine: runs from several
        # threads must take turns (ONNX Runtime sessions need no such lock).
        self._lock = threading.Lock()
        self.stream = self.encoder = self.decoder = None
        self.logger = make_logger(trt)
        self.runtime = trt.Runtime(self.logger)
        self.plugin = load_plugin(trt, folder, self.logger)
        try:
            self.stream = check_cuda(self.cudart.cudaStreamCreate())
            self.encoder = _Engine(Path(encoder_engine), self.runtime, self.logger, trt, self.cudart, self.stream)
            self.decoder = _Engine(Path(decoder_engine), self.runtime, self.logger, trt, self.cudart, self.stream)
            embedding = check_encoder(*self.encoder.io_shapes(), encoder_engine, img_size, self.features)
            check_decoder(*self.decoder.io_shapes(), decoder_engine, embedding, batch=True, features=self.features)
            self.max_prompts, self.max_points = self.decoder.max_shape("point_coords")[:2]
            self.img_size = int(self.encoder.shape(self.encoder.inputs[0])[-1])
            self.embedding_size = int(embedding[-1])
        except BaseException:
            self.close()  # a refused engine pair must not keep the other engine and the stream
            raise

    def encode(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        with self._lock:
            self._ensure_open()
            outputs = self.encoder.run({self.encoder.inputs[0]: pixels})
        return {name: outputs[name].astype(np.float32) for name in self.features}

    def decode(self, inputs):
        iou_predictions, low_res = self.decode_batch({name: inputs[name] for name in self.decoder.inputs})
        image_hw = np.asarray(inputs["orig_im_size"]).astype(np.int64)
        return self.geometry.upscale(low_res, self.img_size, image_hw), iou_predictions, low_res

    def decode_batch(self, inputs):
        """The batch decoder's inputs (N prompt sets) -> iou_predictions [N, 4], low_res_masks [N, 4, L, L]."""
        self._check_prompts(inputs)
        with self._lock:
            self._ensure_open()
            outputs = self.decoder.run({name: inputs[name] for name in self.decoder.inputs})
        return outputs["iou_predictions"].astype(np.float32), outputs["low_res_masks"].astype(np.float32)

    def run_piece(self, file: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The engine built from the bundle's ONNX file `file` on `feeds` -> its outputs by name, for video
        tracking (runtime/tracker.py): decoder_batch.onnx runs decoder.engine (all its outputs, SAM 2's
        object score and pointer included); the manifest's memory_encoder and memory_attention files run
        memory_encoder.engine and memory_attention.engine, opened on first use with device buffers for
        their profile's largest shapes. Refused with the fix where the bundle has no such engine
        (built before samedge built them) or a frame's memory exceeds memory_attention.engine's
        profile (export/tensorrt_build.py: 1..15 memory frames, 0..24 object pointers for SAM 2.1).

        Precision: the memory pieces and the decoder are float32 engines, but the encoder engine is fp16
        (export/tensorrt_onnx.py), and a tracker feeds each frame's result into the next frames' memory.
        The tracker's parity thresholds (runtime/video_parity.py, VideoThresholds) are float32's; tracking through these
        engines is expected to agree less closely, by an amount not measured here (no GPU)."""
        path = piece_engine_path(self.folder, file, self.tracking, self._held(self.info))
        with self._lock:
            self._ensure_open()
            if path.name == "decoder.engine":
                engine = self.decoder
                self._check_prompts(feeds)
            else:
                engine = self._pieces.get(path.name)
                if engine is None:
                    engine = _Engine(path, self.runtime, self.logger, self.trt, self.cudart, self.stream)
                    try:
                        engine.reserve()
                    except BaseException:
                        engine.close()
                        raise
                    self._pieces[path.name] = engine
            check_piece_feeds(file, engine, feeds, self.tracking)
            return engine.run({name: feeds[name] for name in engine.inputs})

    def _check_prompts(self, inputs) -> None:
        prompts, points = inputs["point_coords"].shape[:2]
        if points > self.max_points:
            raise ValueError(f"{points} prompt points (padding included) but the decoder engine takes at most "
                             f"{self.max_points}; pass fewer points, or rebuild it with a larger profile")
        if prompts > self.max_prompts:
            raise ValueError(f"{prompts} prompts in one call but the decoder engine takes at most "
                             f"{self.max_prompts}; pass them in batches of {self.max_prompts}, or rebuild the "
                             "engine with a larger profile")

    def _release(self) -> None:
        """Engines (contexts, buffers) first, then the runtime, its logger and the stream. The plugin
        library stays registered: TensorRT's registry holds one creator per name for the process."""
        with self._lock:  # a run in another thread finishes before its buffers go
            engines = [self.encoder, self.decoder, *getattr(self, "_pieces", {}).values()]
            errors = [error for engine in engines if engine is not None for error in engine.close()]
            self._pieces = {}
            self.encoder = self.decoder = self.runtime = self.logger = None
            if self.stream is not None:
                errors.append(_error_name(self.cudart.cudaStreamDestroy(self.stream)[0]))
                self.stream = None
        errors = [error for error in errors if error]
        if errors:
            raise RuntimeError(f"releasing the TensorRT engines' CUDA memory failed: {', '.join(errors)}")
