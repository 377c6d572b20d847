"""Inference backends behind one small interface (`base.Backend`)."""

from __future__ import annotations

from ..bundle import Bundle, BundleError
from .base import Backend, Closable, ClosedError
from .choice import Choice, choose
from .ort_backend import OnnxRuntimeBackend
from .tensorrt_backend import TensorRTBackend

BACKENDS = ("auto", "onnxruntime", "openvino", "tensorrt", "torch")

__all__ = ["BACKENDS", "Backend", "Choice", "Closable", "ClosedError", "OnnxRuntimeBackend", "TensorRTBackend",
           "choose", "make_backend"]


def make_backend(bundle: Bundle, name: str = "auto", providers=None, device: str = "cpu", low_memory: bool = False):
    """The backend `name` for `bundle`; auto: runtime.backends.choice.choose's pick."""
    if name == "auto":
        name = choose(bundle, providers, low_memory).name
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {BACKENDS}")
    if name == "openvino" and (low_memory or providers):
        raise ValueError("low_memory and providers are ONNX Runtime's settings; the openvino backend has "
                         "neither: use backend='onnxruntime' with them, or leave them out")
    if name == "tensorrt":
        if not bundle.engines:
            raise BundleError(f"{bundle.root} has no TensorRT engines: build them on the device with "
                              f"bash {bundle.root}/tensorrt/build_engines.sh, or build the bundle with "
                              "python -m export.build --target jetson|desktop where tensorrt is installed")
        return TensorRTBackend(*bundle.engines, img_size=bundle.img_size)
    if name in ("onnxruntime", "openvino") and bundle.encoder is None:
        raise BundleError(f"{bundle.root} holds TensorRT engines only; {name} needs the bundle's "
                          "encoder.onnx and decoder.onnx")
    if name == "onnxruntime":
        return OnnxRuntimeBackend(bundle.encoder, bundle.decoder, providers, low_memory, bundle.img_size,
                                  bundle.samedge_nodes, batch_decoder=bundle.batch_decoder)
    if name == "openvino":
        # openvino is an extra: imported only here.
        from .openvino_backend import OpenVINOBackend, default_cache_dir

        return OpenVINOBackend(bundle.encoder, bundle.decoder, bundle.img_size, bundle.batch_decoder,
                               cache_dir=default_cache_dir(), file_hashes=bundle.manifest.get("files"))
    if name == "torch":
        # torch is an extra: the ONNX Runtime and TensorRT paths must import without it.
        from .torch_backend import TorchBackend

        if bundle.checkpoint is None:
            raise BundleError(f"the torch backend needs the checkpoint the bundle at {bundle.root} "
                              "was built from, and the manifest names none that exists")
        return TorchBackend.from_checkpoint(bundle.checkpoint, device)
    raise ValueError(f"unknown backend {name!r}; choose one of {BACKENDS}")
