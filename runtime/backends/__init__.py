"""Inference backends behind one small interface (`base.Backend`)."""

from __future__ import annotations

import importlib.util

from ..bundle import PREPROCESS_ENCODER_FILE, Bundle, BundleError
from .base import Backend, Closable, ClosedError
from .ort_backend import OnnxRuntimeBackend
from .tensorrt_backend import TensorRTBackend

BACKENDS = ("auto", "onnxruntime", "tensorrt", "torch")

__all__ = ["BACKENDS", "Backend", "Closable", "ClosedError", "OnnxRuntimeBackend", "TensorRTBackend",
           "make_backend"]


def _tensorrt_importable() -> bool:
    return importlib.util.find_spec("tensorrt") is not None


def make_backend(bundle: Bundle, name: str = "auto", providers=None, device: str = "cpu", low_memory: bool = False):
    """auto: TensorRT when the bundle has engines and tensorrt is installed, else ONNX Runtime."""
    if name == "auto":
        # Opened by its encoder_preprocess.onnx: the file named is the file run.
        named_onnx = bundle.encoder is not None and bundle.encoder.name == PREPROCESS_ENCODER_FILE
        name = ("tensorrt" if bundle.engines and not named_onnx and (bundle.encoder is None or _tensorrt_importable())
                else "onnxruntime")
    if name == "tensorrt":
        if not bundle.engines:
            raise BundleError(f"{bundle.root} has no TensorRT engines: build them on the device with "
                              f"bash {bundle.root}/tensorrt/build_engines.sh, or build the bundle with "
                              "python -m export.build --target jetson|desktop where tensorrt is installed")
        return TensorRTBackend(*bundle.engines, img_size=bundle.img_size)
    if name == "onnxruntime":
        if bundle.encoder is None:
            raise BundleError(f"{bundle.root} holds TensorRT engines only; ONNX Runtime needs the bundle's "
                              "encoder.onnx and decoder.onnx")
        return OnnxRuntimeBackend(bundle.encoder, bundle.decoder, providers, low_memory, bundle.img_size,
                                  bundle.samedge_nodes, batch_decoder=bundle.batch_decoder)
    if name == "torch":
        # torch is an extra: the ONNX Runtime and TensorRT paths must import without it.
        from .torch_backend import TorchBackend

        if bundle.checkpoint is None:
            raise BundleError(f"the torch backend needs the checkpoint the bundle at {bundle.root} "
                              "was built from, and the manifest names none that exists")
        return TorchBackend.from_checkpoint(bundle.checkpoint, device)
    raise ValueError(f"unknown backend {name!r}; choose one of {BACKENDS}")
