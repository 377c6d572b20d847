"""The one interface every inference backend implements (after Polygraphy's runners)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Literal, NamedTuple, Protocol, runtime_checkable

import numpy as np

from ..bundle import BundleError

DecoderOutputs = tuple[np.ndarray, np.ndarray, np.ndarray]  # masks, iou_predictions, low_res_masks
BatchDecoderOutputs = tuple[np.ndarray, np.ndarray]  # iou_predictions [N, 4], low_res_masks [N, 4, L, L]


@runtime_checkable
class Backend(Protocol):
    """What `runtime.Session` runs; pass any object with these members as `Session(bundle, backend=...)`.

    Optional: `decode_batch(inputs) -> (iou_predictions [N, 4], low_res_masks [N, 4, L, L])`, the batch
    decoder (export/batch_decoder.py), for `Session.predict_batch`; a backend without it gets a loop
    of `decode` calls there. `takes_resized_image = True`: `encode` takes the image resized, not
    normalised nor padded, [h, w, 3] float32 0..255 (encoder_preprocess.onnx, export/clients.py).
    `run_piece(file, feeds) -> {output name: array}`: any other ONNX file of the bundle by its file name
    (SAM 2's memory pieces, its batch decoder's every output), for video tracking (runtime/tracker.py)."""

    name: str
    img_size: int  # side S of the encoder's square input
    embedding_size: int  # side of the image-embedding grid (S / 16 for official SAM)

    def encode(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """Normalised, padded pixels [1, 3, S, S] -> the image features the decoders take, by name
        (SAM 1: {"image_embeddings": [1, C, h, w]}; SAM 2: two high-resolution levels and image_embed)."""

    def decode(self, inputs: dict[str, np.ndarray]) -> DecoderOutputs:
        """The official SAM ONNX decoder's inputs -> its three outputs (all 4 masks). Families without the
        official decoder (SAM 2) answer through `decode_batch` only."""

    def close(self) -> None:
        """Release the models and device memory; a second close does nothing."""


def required_batch_decoder(model):
    """`model`, the backend's decoder_batch.onnx, refused with the fix where the bundle has none."""
    if model is None:
        raise BundleError("this bundle has no decoder_batch.onnx (it was built before samedge made one): "
                          "rebuild it with python -m export.build to predict many prompts per call")
    return model


class BackendOptions(NamedTuple):
    """What a Session passes to the backend it opens by name; each backend takes some (BaseBackend.takes_options)."""

    providers: tuple | None = None  # ONNX Runtime's execution providers
    device: str = "cpu"  # the torch reference's device
    low_memory: bool = False  # ONNX Runtime without arenas, Birkhoff codes kept (ort_backend.py)

    def given(self) -> set[str]:
        """The options set to anything but their defaults."""
        return {name for name, default in BackendOptions._field_defaults.items() if getattr(self, name) != default}

    def kept(self, taken) -> "BackendOptions":
        """These options with those not in `taken` back at their defaults."""
        return self._replace(**{name: BackendOptions._field_defaults[name] for name in self.given() - set(taken)})


# How a backend answers predict_batch: its own batch decoder (decode_batch), a loop of decode
# calls made by Session, or not at all (an ONNX bundle built before decoder_batch.onnx).
BatchDecoding = Literal["native", "loop", "missing"]


class Abilities(NamedTuple):
    takes_resized_image: bool  # encode takes the resized [h, w, 3] image (encoder_preprocess.onnx)
    max_prompts: int | None  # prompt sets per decode_batch call (None: Session's own bound)
    batch_decoding: BatchDecoding
    reads_onnx_files: bool  # runs the bundle's ONNX files themselves (not engines, not the checkpoint)


def abilities(backend) -> Abilities:
    """What `backend` can do: a BaseBackend declares it; another object passed to Session gets
    the defaults, and its decode_batch if it has one."""
    if isinstance(backend, BaseBackend):
        return Abilities(backend.takes_resized_image, backend.max_prompts, backend.batch_decoding,
                         backend.reads_onnx_files)
    return Abilities(False, None, "native" if callable(getattr(backend, "decode_batch", None)) else "loop", False)


class ClosedError(RuntimeError):
    """A backend or Session used after close()."""


class Closable(ABC):
    """`close()` (once), `with` support and a clear error on use after close.

    Subclasses free what they hold in `_release`, and call `_ensure_open()` (or pass what
    they are about to use through `_held`) before any work."""

    _closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        # Marked first: a release that fails half-way must still refuse further use.
        if not self._closed:
            self._closed = True
            self._release()

    @abstractmethod
    def _release(self) -> None:
        """Free what this object holds (called once, by close)."""

    def _ensure_open(self) -> None:
        if self._closed:
            raise ClosedError(f"this {type(self).__name__} was closed (close() or the end of its with block); "
                              "open a new one")

    def _held(self, value):
        """`value`, a model read from this object, unless it is closed. Read the attribute as the argument:
        `_release` empties attributes only after `close` marks the object closed, so a None read here is
        always refused, and a model read before a close in another thread stays alive for this call."""
        self._ensure_open()
        return value

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class BaseBackend(Closable):
    """What every registered backend (runtime/backends/registry.py) declares, and how it is opened."""

    name: str
    takes_options: frozenset = frozenset()  # BackendOptions fields it uses
    # Abilities (see `Abilities`); an instance may refine them once it has read its files.
    takes_resized_image = False
    max_prompts: int | None = None
    batch_decoding: BatchDecoding = "loop"
    reads_onnx_files = False

    @classmethod
    def for_bundle(cls, bundle, options: BackendOptions) -> "BaseBackend":
        """This backend for `bundle`; refuses `options` it does not take, then opens (`_open`)."""
        refused = options.given() - set(cls.takes_options)
        if refused:
            taken = ", ".join(sorted(cls.takes_options)) or "none of them"
            raise ValueError(f"{', '.join(sorted(refused))}: not an option of the {cls.name} backend (it takes "
                             f"{taken}); leave it out, or use a backend that takes it (low_memory and providers "
                             "are ONNX Runtime's, device the torch reference's)")
        return cls._open(bundle, options)

    @classmethod
    def verify_files(cls, bundle) -> None:
        """Check what this backend will read against the hashes recorded for it (Session's `verify`)."""
        bundle.verify()

    @classmethod
    @abstractmethod
    def _open(cls, bundle, options: BackendOptions) -> "BaseBackend":
        """The backend for `bundle` with `options` (already checked): each backend says what it reads."""
