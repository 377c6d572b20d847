"""ONNX Runtime backend: runs the bundle's encoder.onnx and decoder.onnx.

Birkhoff bundles hold samedge HyperLinear / HyperTensor nodes. Two ways to run them, chosen
by `low_memory` (measured in docs/benchmarks/ort-memory.md):
- default: decode every node once, at session start, in numpy (runtime/decoded_graph.py):
  the session then runs the dense graph, at dense speed and dense memory;
- low_memory: keep the codes and run the function bodies on every call (ONNX Runtime's
  constant folding off, or it would decode them all at start, with a larger peak than a
  dense model's), in priority order: ORT's default order runs every decode, which needs
  no activation, first, and holds all the decoded weights at once (vit_b: 2.52 GiB peak,
  1.96 with plain ORT; priority order 1.21). Memory for the codes instead of the weights,
  at the cost of a decode per run. Its sessions run without ORT's arena, so the C library's
  allocator decides what a run's freed tensors cost: see `return_freed_tensors`.
"""

from __future__ import annotations

import ctypes
import platform
import threading
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from ..bundle import BundleError
from ..decoded_graph import decode_all, has_samedge_nodes
from ..signature import BATCH_DECODER_OUTPUTS, SAM_FEATURES, check_decoder, check_encoder
from .base import BackendOptions, BaseBackend, required_batch_decoder


# glibc's M_MMAP_THRESHOLD (malloc.h) and the size above which a block gets its own mapping.
_M_MMAP_THRESHOLD = -3
OWN_MAPPING_BYTES = 1 << 20


def return_freed_tensors() -> bool:
    """Have glibc give every block of OWN_MAPPING_BYTES or more its own mapping, unmapped when freed.

    glibc's thresholds move: after the first large block is freed, the mapping threshold rises
    to that block's size (up to 32 MiB) and the heap's trim threshold to twice that, so a run's
    freed tensors stay resident in the heap between live ones. An arena-less vit_b encoder run,
    whose live tensors never exceed 0.26 GiB, so peaked 1.17 GiB above its session. A fixed
    threshold (mallopt) turns that adjustment off: 0.54 GiB above, at the same speed (1, 8 and
    32 MiB alike; docs/benchmarks/hyperlinear-deploy.md). The setting is the whole process's
    (there is no other), which is why only low_memory, asked for on a device where memory is
    the limit, sets it. False where the C library is not glibc."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    return bool(ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, OWN_MAPPING_BYTES))


def _session(path: Path, providers, low_memory: bool = False, coded: bool | None = None,
             cpu_arena: bool | None = None):
    """`coded`: whether the file holds samedge nodes (the manifest says); None: look.
    `cpu_arena`: None follows low_memory (off with it)."""
    options = ort.SessionOptions()
    # The memory pattern makes a session's second run allocate a fresh block beside the
    # first: a process with a long-lived vit_b session peaks at 7.4 GB instead of 4.3 GB,
    # and the pattern saves no time on the CPU (docs/benchmarks/ort-memory.md). Off always.
    options.enable_mem_pattern = False
    if low_memory if cpu_arena is None else not cpu_arena:
        # ORT keeps each session's peak activation memory in an arena for reuse; without it,
        # an idle session holds little more than its weights (vit_b: 3.9 GB peak otherwise).
        options.enable_cpu_mem_arena = False
        if low_memory:
            return_freed_tensors()
    try:
        if low_memory:
            # Folding is what decodes every layer at start; the exporter already folded the rest.
            # Priority order runs each decode where its layer needs it (see the module's docstring).
            options.execution_order = ort.ExecutionOrder.PRIORITY_BASED
            return ort.InferenceSession(str(path), options, providers=providers,
                                        disabled_optimizers=["ConstantFolding"])
        source = str(path)
        if coded is not False:
            model = onnx.load(source, load_external_data=True)
            if has_samedge_nodes(model):
                model, weights = decode_all(model)
                # Not copied: the session reads these arrays for as long as it lives.
                options.add_external_initializers(list(weights), [ort.OrtValue.ortvalue_from_numpy(w)
                                                                  for w in weights.values()])
                source = model.SerializeToString()  # the graph and the small tensors
            del model
        return ort.InferenceSession(source, options, providers=providers)
    except Exception as err:  # ORT raises its own Fail/InvalidProtobuf types
        raise BundleError(f"ONNX Runtime cannot load {path} ({str(err)[:300]}); "
                          "the file is corrupt or was not written by samedge: rebuild the bundle") from err


def require_onnx_files(bundle, name: str) -> None:
    if bundle.encoder is None:
        raise BundleError(f"{bundle.root} holds TensorRT engines only; {name} needs the bundle's "
                          "encoder.onnx and decoder.onnx")


def _shapes(arguments) -> dict:
    return {argument.name: argument.shape for argument in arguments}


class OnnxRuntimeBackend(BaseBackend):
    name = "onnxruntime"
    takes_options = frozenset({"providers", "low_memory"})
    reads_onnx_files = True

    @classmethod
    def _open(cls, bundle, options: BackendOptions) -> "OnnxRuntimeBackend":
        require_onnx_files(bundle, cls.name)
        return cls(bundle.encoder, bundle.decoder if bundle.official_decoder else None, options.providers,
                   options.low_memory, bundle.img_size, bundle.samedge_nodes, batch_decoder=bundle.batch_decoder,
                   features=bundle.features)

    def __init__(self, encoder: Path, decoder: Path | None, providers=None, low_memory: bool = False,
                 img_size: int | None = None, coded: bool | None = None, cpu_arena: bool | None = None,
                 batch_decoder: Path | None = None, features: tuple = SAM_FEATURES):
        """`batch_decoder`: decoder_batch.onnx, for decode_batch (None: decode_batch refuses);
        `img_size`: what the bundle's manifest says the encoder takes (checked); `coded`: whether
        the files hold samedge nodes (the manifest's `samedge_nodes`; None: read the files to see);
        `cpu_arena`: ORT's CPU arena on or off whatever low_memory says (the results page keeps
        eight vit_b sessions open, arenas off, each decoding as a default Session does);
        `decoder` None: a family without the official decoder (SAM 2) decodes with `batch_decoder` only;
        `features`: the encoder's outputs the decoders take (the bundle's)."""
        available = ort.get_available_providers()
        if providers is None:
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        self.providers = list(providers)
        self.features = tuple(features)
        self.root = Path(encoder).parent
        self.encoder = _session(encoder, self.providers, low_memory, coded, cpu_arena)
        self.decoder = None if decoder is None else _session(decoder, self.providers, low_memory, coded, cpu_arena)
        self.encoder_input = self.encoder.get_inputs()[0].name
        embedding = check_encoder(_shapes(self.encoder.get_inputs()), _shapes(self.encoder.get_outputs()),
                                  encoder, img_size, self.features)
        if self.decoder is not None:
            check_decoder(_shapes(self.decoder.get_inputs()), _shapes(self.decoder.get_outputs()), decoder, embedding)
        elif batch_decoder is None:
            raise BundleError(f"{encoder.parent} has no decoder_batch.onnx, the decoder this bundle's models answer "
                              "with; rebuild it with python -m export.build")
        self.batch_decoder = None
        self.batch_decoding = "missing" if batch_decoder is None else "native"
        if batch_decoder is not None:
            self.batch_decoder = _session(batch_decoder, self.providers, low_memory, coded, cpu_arena)
            check_decoder(_shapes(self.batch_decoder.get_inputs()), _shapes(self.batch_decoder.get_outputs()),
                          batch_decoder, embedding, batch=True, features=self.features)
        self._piece_options = (self.providers, low_memory, coded, cpu_arena)
        self._pieces: dict = {}  # the bundle's other ONNX files (SAM 2's memory pieces), opened when first run
        self._pieces_lock = threading.Lock()
        image_shape = self.encoder.get_inputs()[0].shape
        # encoder_preprocess.onnx (export/clients.py) takes the resized image: its size is the manifest's.
        self.takes_resized_image = len(image_shape) == 3
        self.img_size = img_size if self.takes_resized_image else int(image_shape[-1])
        self.embedding_size = int(embedding[-1])

    def encode(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        outputs = self._held(self.encoder).run(list(self.features), {self.encoder_input: pixels})
        return dict(zip(self.features, outputs))

    def decode(self, inputs):
        if self.decoder is None and not self.closed:
            raise BundleError("this bundle's decoder.onnx is for the clients (not the official SAM decoder): "
                              "runtime.Session decodes with decode_batch")
        masks, iou_predictions, low_res_masks = self._held(self.decoder).run(None, inputs)
        return masks, iou_predictions, low_res_masks

    def decode_batch(self, inputs):
        """The batch decoder's inputs -> iou_predictions [N, 4], low_res_masks [N, 4, L, L]."""
        model = required_batch_decoder(self._held(self.batch_decoder))
        iou_predictions, low_res_masks = model.run(list(BATCH_DECODER_OUTPUTS), inputs)
        return iou_predictions, low_res_masks

    def run_piece(self, file: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The bundle's ONNX file `file` (beside encoder.onnx) on `feeds` -> its outputs by name."""
        pieces = self._held(self._pieces)
        with self._pieces_lock:  # one session per file, whichever thread asks first
            if file not in pieces:
                path = self.root / file
                if not path.is_file():
                    raise BundleError(f"{self.root} has no {file}; rebuild the bundle with python -m export.build")
                pieces[file] = _session(path, *self._piece_options)
            session = pieces[file]
        names = [output.name for output in session.get_outputs()]
        return dict(zip(names, session.run(names, feeds)))

    def _release(self) -> None:
        # The InferenceSessions own the weights and arenas; runs in flight keep their own reference.
        self.encoder = self.decoder = self.batch_decoder = self._pieces = None
