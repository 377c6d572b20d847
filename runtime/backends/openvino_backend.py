"""OpenVINO backend (CPU): runs the bundle's ONNX files with Intel's OpenVINO.

OpenVINO reads ONNX itself. It ignores an ONNX file's local functions, so a Birkhoff bundle's
samedge nodes are converted as the file is read (ONNX frontend conversion extensions): each
HyperTensor into the constant it decodes to, each HyperLinear into MatMul + Add with its
weight decoded by plugins/hyperlinear/reference.py, one layer at a time: the same bits the
ONNX Runtime backend decodes before its session (runtime/decoded_graph.py). The compiled
model then holds the decoded weights, so a Birkhoff bundle takes dense memory here
(docs/benchmarks/openvino-cpu.md); ONNX Runtime's low_memory is the mode that keeps the codes.

Compiled in f32: on CPUs with AVX512-BF16 or AMX OpenVINO's CPU plugin computes in bfloat16
unless told otherwise (the demo encoder's embedding then differs from ONNX Runtime's by 2e-2
instead of 5e-6), and samedge's parity thresholds are float32's. `precision="bf16"` asks for
bfloat16 where it is faster and the looser answers are acceptable.

Imported only for backend="openvino" (runtime.backends.make_backend): openvino is an extra.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import queue
import threading
import warnings
from pathlib import Path

import numpy as np

from plugins.hyperlinear import reference, spec

from ..bundle import WEIGHTS_FILE, BundleError, sha256_file
from ..signature import (BATCH_DECODER_OUTPUTS, DECODER_INPUTS, DECODER_OUTPUTS, SAM_FEATURES, check_decoder,
                         check_encoder)
from .base import BackendOptions, BaseBackend, required_batch_decoder
from .ort_backend import require_onnx_files

INSTALL = 'pip install "samedge[cpu]" (or pip install openvino)'
PRECISIONS = ("f32", "bf16")
CACHE_VARIABLE = "SAMEDGE_OPENVINO_CACHE"


def default_cache_dir() -> Path | None:
    """$SAMEDGE_OPENVINO_CACHE ("off": none), else $XDG_CACHE_HOME/samedge/openvino (~/.cache/...).

    A cached model starts faster, for about the model's size on disk: vit_b 0.90 s instead of 2.83,
    its Birkhoff bundle 1.06 s instead of 5.47, the decode skipped (docs/benchmarks/openvino-cpu.md).
    OpenVINO keys an entry by the file's path, size and modification time only, so each model gets
    a folder of its own named by its content (`cache_key`)."""
    setting = os.environ.get(CACHE_VARIABLE)
    if setting is not None:
        return None if setting.strip().lower() in ("", "off", "0", "none") else Path(setting)
    try:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    except RuntimeError:  # no home directory to be found: no cache unless one is named
        return None
    return Path(base) / "samedge" / "openvino"


def cache_key(sha256: str, data_sha256: str | None = None) -> str:
    """The cache folder of one model file: its SHA-256 (the manifest's), its external data's, and
    what decodes its samedge nodes (samedge's version, the spec's) and compiles it (OpenVINO's)."""
    openvino = import_openvino()
    text = "\n".join([sha256, data_sha256 or "", package_version(), str(spec.DOMAIN_VERSION), openvino.__version__])
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def package_version() -> str:
    try:
        return importlib.metadata.version("samedge")
    except importlib.metadata.PackageNotFoundError:  # a checkout run without installing it
        return "checkout"


def import_openvino():
    try:
        import openvino
    except ImportError as err:
        raise BundleError(f"the openvino backend needs OpenVINO: {INSTALL} ({err})") from None
    return openvino


def _constant(context, op_type: str, index: int) -> np.ndarray:
    node = context.get_input(index).get_node()
    if node.get_type_name() != "Constant":
        raise BundleError(f"a samedge {op_type} node's input {index} is computed by a "
                          f"{node.get_type_name()} node, not stored: the file was not written by samedge's exporter; "
                          "rebuild the bundle with python -m export.build")
    return node.get_data()


def _attributes(context, fields) -> dict:
    return {name: context.get_attribute(name) for name, _ in fields}


def _conversion_extensions(failures: list):
    """OpenVINO's ONNX frontend extensions that decode samedge's nodes as a file is read. OpenVINO
    reports an exception raised in one as its own conversion failure, without the message: each
    is kept in `failures` too, for the error the backend raises."""
    from openvino import opset13 as ops
    from openvino.frontend.onnx import ConversionExtension

    def kept(convert):
        def converter(context):
            try:
                return convert(context)
            except Exception as err:
                failures.append(err)
                raise
        return converter

    @kept
    def hyper_linear(context):
        weight = reference.decode_linear(_constant(context, spec.OP_TYPE, 1), _constant(context, spec.OP_TYPE, 2),
                                         **_attributes(context, spec.PLUGIN_FIELDS))  # [out, in]
        product = ops.matmul(context.get_input(0), ops.constant(np.ascontiguousarray(weight.T)), False, False)
        return [ops.add(product, context.get_input(3)).output(0)]

    @kept
    def hyper_tensor(context):
        values = reference.decode_tensor(_constant(context, spec.TENSOR_OP_TYPE, 0),
                                         _constant(context, spec.TENSOR_OP_TYPE, 1),
                                         **_attributes(context, spec.TENSOR_ATTRIBUTES))
        return [ops.constant(values).output(0)]

    return [ConversionExtension(spec.OP_TYPE, spec.DOMAIN, hyper_linear),
            ConversionExtension(spec.TENSOR_OP_TYPE, spec.DOMAIN, hyper_tensor)]


def _shape(port) -> tuple:
    return tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())


def _name(port, known: frozenset) -> str:
    """The port's name in the ONNX file: OpenVINO gives a tensor every name it had in the graph
    (an Identity's output among them), and get_any_name may pick any; `known`: the names samedge uses."""
    names = port.get_names()
    return min((names & known) or names)


def _io_names(path: Path) -> frozenset:
    """The ONNX file's input and output names (its graph only: no weights read)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return frozenset(value.name for value in [*graph.input, *graph.output])


def _shapes(ports, known: frozenset) -> dict:
    return {_name(port, known): _shape(port) for port in ports}


class _Model:
    """One compiled model and a pool of inference requests: a request runs one call at a time,
    and a Session may be shared by threads."""

    def __init__(self, compiled, known: frozenset):
        self.compiled = compiled
        self.inputs = _shapes(compiled.inputs, known)
        self.outputs = _shapes(compiled.outputs, known)
        self.output_names = [_name(port, known) for port in compiled.outputs]
        self._idle = queue.SimpleQueue()

    def run(self, feeds: dict, outputs=None) -> list[np.ndarray]:
        """`outputs`: names, in the order wanted (None: the file's order)."""
        try:
            request = self._idle.get_nowait()
        except queue.Empty:
            request = self.compiled.create_infer_request()
        try:
            results = request.infer(feeds)  # copies the outputs out of the request's buffers
            return [results[name] for name in (outputs or self.output_names)]
        finally:
            self._idle.put(request)


class OpenVINOBackend(BaseBackend):
    name = "openvino"
    reads_onnx_files = True

    @classmethod
    def _open(cls, bundle, options: BackendOptions) -> "OpenVINOBackend":
        require_onnx_files(bundle, cls.name)
        return cls(bundle.encoder, bundle.decoder if bundle.official_decoder else None, bundle.img_size,
                   bundle.batch_decoder, cache_dir=default_cache_dir(), file_hashes=bundle.manifest.get("files"),
                   features=bundle.features)

    def __init__(self, encoder: Path, decoder: Path | None, img_size: int | None = None,
                 batch_decoder: Path | None = None, precision: str = "f32", threads: int | None = None,
                 cache_dir: Path | None = None, file_hashes: dict | None = None, features: tuple = SAM_FEATURES):
        """`precision`: f32 (the parity thresholds' precision) or bf16 (faster where the CPU has
        bfloat16 units, answers within bf16's rounding); `threads`: inference threads (None:
        OpenVINO's choice, the physical cores); `cache_dir`: OpenVINO's compiled-model cache
        (None: compile at every start; docs/benchmarks/openvino-cpu.md measures both), used for
        the files `file_hashes` (a manifest's "files": {name: {"sha256": ...}}) names, the others
        compiled at every start; `file_hashes` None: hash the files here (what a lone file costs);
        `decoder` None: a family without the official decoder (SAM 2) decodes with `batch_decoder` only;
        `features`: the encoder's outputs the decoders take (the bundle's)."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r}: choose one of {PRECISIONS}")
        openvino = import_openvino()
        self.core = openvino.Core()
        self._failures = []  # what the samedge conversion extensions raised
        for extension in _conversion_extensions(self._failures):
            self.core.add_extension(extension)
        self.config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision}
        if threads is not None:
            self.config["INFERENCE_NUM_THREADS"] = int(threads)
        self.cache_dir, self.file_hashes = cache_dir, file_hashes
        self.precision = precision
        self.features = tuple(features)
        self._known = frozenset(DECODER_INPUTS + DECODER_OUTPUTS + self.features)
        self.root = Path(encoder).parent
        self._pieces: dict = {}  # the bundle's other ONNX files (SAM 2's memory pieces), compiled when first run
        self._pieces_lock = threading.Lock()
        self.encoder = self._compile(encoder)
        self.decoder = None if decoder is None else self._compile(decoder)
        embedding = check_encoder(self.encoder.inputs, self.encoder.outputs, encoder, img_size, self.features)
        if self.decoder is not None:
            check_decoder(self.decoder.inputs, self.decoder.outputs, decoder, embedding)
        elif batch_decoder is None:
            raise BundleError(f"{encoder.parent} has no decoder_batch.onnx, the decoder this bundle's models answer "
                              "with; rebuild it with python -m export.build")
        self.batch_decoder = None
        self.batch_decoding = "missing" if batch_decoder is None else "native"
        if batch_decoder is not None:
            self.batch_decoder = self._compile(batch_decoder)
            check_decoder(self.batch_decoder.inputs, self.batch_decoder.outputs, batch_decoder, embedding, batch=True,
                          features=self.features)
        (image_shape,) = self.encoder.inputs.values()
        # encoder_preprocess.onnx (export/clients.py) takes the resized image: its size is the manifest's.
        self.takes_resized_image = len(image_shape) == 3
        self.img_size = img_size if self.takes_resized_image else int(image_shape[-1])
        self.embedding_size = int(embedding[-1])

    def _cache_folder(self, path: Path) -> Path | None:
        """This file's folder in the cache (see cache_key), made if need be; None: no cache for it."""
        if self.cache_dir is None:
            return None
        path = Path(path)
        # The graph's weights: its own .data file (older bundles), or the folder's shared WEIGHTS_FILE.
        data_files = (f"{path.name}.data", WEIGHTS_FILE)
        if self.file_hashes is None:
            hashes = {p.name: {"sha256": sha256_file(p)} for p in [path] + [path.with_name(n) for n in data_files]
                      if p.is_file()}
        else:
            hashes = self.file_hashes
        if path.name not in hashes:
            return None
        data = "+".join(hashes[name]["sha256"] for name in data_files if name in hashes) or None
        folder = Path(self.cache_dir) / cache_key(hashes[path.name]["sha256"], data)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:  # a read-only home, say: slower starts, the same answers
            warnings.warn(f"OpenVINO compiles {path.name} at every start: its model cache {folder} cannot be made "
                          f"({err}); set {CACHE_VARIABLE} to a writable folder, or to off", stacklevel=4)
            return None
        return folder

    def _compile(self, path: Path, names: frozenset = frozenset()) -> _Model:
        """`names`: tensor names of this file beside the decoders' (a tensor may carry several)."""
        config = dict(self.config)
        folder = self._cache_folder(path)
        if folder is not None:
            config["CACHE_DIR"] = str(folder)
        del self._failures[:]
        try:
            # From the path, not a read model: with CACHE_DIR set, a cached model skips reading the file.
            return _Model(self.core.compile_model(str(path), "CPU", config), self._known | names)
        except Exception as err:  # OpenVINO raises RuntimeError and its own types
            ours = next((failure for failure in self._failures if isinstance(failure, BundleError)), None)
            if ours is not None:
                raise ours from err
            reason = " ".join(str(err).split())[-300:]  # OpenVINO's messages span lines; the cause comes last
            raise BundleError(f"OpenVINO cannot load {path} ({reason}). A file that is corrupt or was not written by "
                              "samedge: rebuild the bundle; an operator this OpenVINO cannot convert: pip install -U "
                              "openvino, or run the bundle with backend='onnxruntime'") from err

    def encode(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        outputs = self._held(self.encoder).run({0: pixels}, self.features)  # its one input, whatever its name
        return dict(zip(self.features, outputs))

    def decode(self, inputs):
        if self.decoder is None and not self.closed:
            raise BundleError("this bundle's decoder.onnx is for the clients (not the official SAM decoder): "
                              "runtime.Session decodes with decode_batch")
        masks, iou_predictions, low_res_masks = self._held(self.decoder).run(inputs, DECODER_OUTPUTS)
        return masks, iou_predictions, low_res_masks

    def decode_batch(self, inputs):
        """The batch decoder's inputs -> iou_predictions [N, 4], low_res_masks [N, 4, L, L]."""
        model = required_batch_decoder(self._held(self.batch_decoder))
        iou_predictions, low_res_masks = model.run(inputs, BATCH_DECODER_OUTPUTS)
        return iou_predictions, low_res_masks

    def run_piece(self, file: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The bundle's ONNX file `file` (beside encoder.onnx) on `feeds` -> its outputs by name."""
        pieces = self._held(self._pieces)
        with self._pieces_lock:
            if file not in pieces:
                path = self.root / file
                if not path.is_file():
                    raise BundleError(f"{self.root} has no {file}; rebuild the bundle with python -m export.build")
                pieces[file] = self._compile(path, _io_names(path))
            model = pieces[file]
        return dict(zip(model.output_names, model.run(feeds)))

    def _release(self) -> None:
        # Runs in flight keep their own reference to the compiled model.
        self.encoder = self.decoder = self.batch_decoder = self._pieces = None
